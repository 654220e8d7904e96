//! Fitting a table into a fixed width (the TUI's panes): every column is as wide as its
//! content; when the content does not fit, the widest columns give way down to their
//! minimum, then optional columns go (lowest priority first), and any text cut ends with `…`.

use super::text::{char_width, text_width};

/// The mark that ends cut text.
pub const ELLIPSIS: char = '…';

/// A column to fit.
#[derive(Debug, Clone, Copy)]
pub struct FitColumn {
    pub header: &'static str,
    /// Narrowest this column gets before optional columns are dropped (text cut to it ends
    /// with `…`). A column whose content is narrower keeps its content's width.
    pub min: usize,
    /// Optional columns are dropped when the table does not fit with every column at its
    /// minimum: the lowest number first.
    pub drop: Option<u8>,
}

impl FitColumn {
    pub const fn new(header: &'static str, min: usize) -> FitColumn {
        FitColumn {
            header,
            min,
            drop: None,
        }
    }

    pub const fn optional(header: &'static str, min: usize, priority: u8) -> FitColumn {
        FitColumn {
            header,
            min,
            drop: Some(priority),
        }
    }
}

/// The width of each column (`None`: dropped) so that the table, with `gap` columns between
/// neighbours, fits in `width`.
pub fn fit_widths(
    columns: &[FitColumn],
    rows: &[Vec<String>],
    width: usize,
    gap: usize,
) -> Vec<Option<usize>> {
    let natural: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|cell| text_width(cell))
                .fold(text_width(c.header), usize::max)
        })
        .collect();
    let mins: Vec<usize> = columns
        .iter()
        .zip(&natural)
        .map(|(c, n)| c.min.min(*n))
        .collect();
    let mut optional: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].drop.is_some())
        .collect();
    optional.sort_by_key(|&i| columns[i].drop);
    let total = |w: &[Option<usize>]| {
        let kept: Vec<usize> = w.iter().flatten().copied().collect();
        kept.iter().sum::<usize>() + gap * kept.len().saturating_sub(1)
    };
    let mut widths: Vec<Option<usize>> = natural.iter().copied().map(Some).collect();
    let mut dropped = 0;
    loop {
        let at_min: Vec<Option<usize>> = widths
            .iter()
            .zip(&mins)
            .map(|(w, m)| w.map(|_| *m))
            .collect();
        if total(&at_min) <= width || dropped == optional.len() {
            break;
        }
        widths[optional[dropped]] = None;
        dropped += 1;
    }
    // Shrink the widest column that is above its minimum, then (if even the minimums do
    // not fit) the widest above one column.
    for floor in [&mins, &vec![1; columns.len()]] {
        while total(&widths) > width {
            let widest = (0..columns.len())
                .filter(|&i| widths[i].is_some_and(|w| w > floor[i]))
                .max_by_key(|&i| widths[i]);
            match widest {
                Some(i) => widths[i] = widths[i].map(|w| w - 1),
                None => break,
            }
        }
    }
    widths
}

/// `text` cut to `width` columns, ending with `…` when cut.
pub fn ellipsize(text: &str, width: usize) -> String {
    if text_width(text) <= width {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = char_width(c);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    if width > 0 {
        out.push(ELLIPSIS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(cells: &[&[&str]]) -> Vec<Vec<String>> {
        cells
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn columns_are_as_wide_as_their_content() {
        let cols = [FitColumn::new("SOURCE", 7), FitColumn::new("DOOR", 4)];
        let r = rows(&[&["10.0.0.12", "openSSH"]]);
        assert_eq!(fit_widths(&cols, &r, 200, 1), [Some(9), Some(7)]);
    }

    #[test]
    fn the_widest_give_way_then_optional_columns_go() {
        let cols = [
            FitColumn::new("A", 4),
            FitColumn::new("B", 6),
            FitColumn::optional("C", 5, 1),
        ];
        let r = rows(&[&["aaaaaaaaaa", "bbbbbbbbbb", "ccccc"]]);
        // 10 + 10 + 5 + 2 = 27: shrink the widest first.
        assert_eq!(fit_widths(&cols, &r, 25, 1), [Some(9), Some(9), Some(5)]);
        // Minimums (4 + 6 + 5 + 2 = 17) fit in 17.
        assert_eq!(fit_widths(&cols, &r, 17, 1), [Some(4), Some(6), Some(5)]);
        // Not in 16: C goes and A, B share the room.
        assert_eq!(fit_widths(&cols, &r, 16, 1), [Some(8), Some(7), None]);
        // Below every minimum: still within the width.
        let w = fit_widths(&cols, &r, 5, 1);
        assert_eq!(w, [Some(2), Some(2), None]);
    }

    #[test]
    fn cut_text_ends_with_an_ellipsis() {
        assert_eq!(ellipsize("22/tcp (nftables)", 17), "22/tcp (nftables)");
        assert_eq!(ellipsize("22/tcp (nftables)", 15), "22/tcp (nftabl…");
        assert_eq!(ellipsize("門番門番", 5), "門番…");
        assert_eq!(ellipsize("abc", 1), "…");
        assert_eq!(ellipsize("abc", 0), "");
    }
}
