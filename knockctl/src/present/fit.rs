//! Fitting a table into a fixed width (the TUI's panes): every column is as wide as its
//! content. When that does not fit, free-text columns (what was opened, actions) give way
//! first, down to their minimum; then optional columns go (lowest number first); then the
//! columns that name things (addresses, doors) give way too. Any text cut ends with `…`.

use super::text::{char_width, text_width};

/// The mark that ends cut text.
pub const ELLIPSIS: char = '…';

/// A column to fit.
#[derive(Debug, Clone, Copy)]
pub struct FitColumn {
    pub header: &'static str,
    /// Narrowest this column gets before the next step (text cut to it ends with `…`). A
    /// column whose content is narrower keeps its content's width.
    pub min: usize,
    /// Optional columns are dropped before a column that names something is cut: the
    /// lowest number first.
    pub drop: Option<u8>,
    /// Free text, cut before anything else.
    pub text: bool,
}

impl FitColumn {
    /// A column that names something: cut last.
    pub const fn new(header: &'static str, min: usize) -> FitColumn {
        FitColumn {
            header,
            min,
            drop: None,
            text: false,
        }
    }

    pub const fn optional(header: &'static str, min: usize, priority: u8) -> FitColumn {
        FitColumn {
            header,
            min,
            drop: Some(priority),
            text: false,
        }
    }

    /// This column holds free text: it gives way first.
    pub const fn text(self) -> FitColumn {
        FitColumn { text: true, ..self }
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
    let ones = vec![1; columns.len()];
    let total = |w: &[Option<usize>]| {
        let kept: Vec<usize> = w.iter().flatten().copied().collect();
        kept.iter().sum::<usize>() + gap * kept.len().saturating_sub(1)
    };
    // Shrinks the widest of the columns `which` allows that is above its floor.
    let shrink =
        |widths: &mut Vec<Option<usize>>, which: &dyn Fn(usize) -> bool, floor: &[usize]| {
            while total(widths) > width {
                let widest = (0..columns.len())
                    .filter(|&i| which(i) && widths[i].is_some_and(|w| w > floor[i]))
                    .max_by_key(|&i| widths[i]);
                match widest {
                    Some(i) => widths[i] = widths[i].map(|w| w - 1),
                    None => break,
                }
            }
        };
    let mut optional: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].drop.is_some())
        .collect();
    optional.sort_by_key(|&i| columns[i].drop);
    let mut widths: Vec<Option<usize>> = natural.iter().copied().map(Some).collect();
    let text = |i: usize| columns[i].text;
    shrink(&mut widths, &text, &mins);
    for &i in &optional {
        if total(&widths) <= width {
            break;
        }
        // Without column i, the free text may take back what it gave.
        widths = widths
            .iter()
            .zip(&natural)
            .map(|(w, n)| w.map(|_| *n))
            .collect();
        widths[i] = None;
        shrink(&mut widths, &text, &mins);
    }
    shrink(&mut widths, &|_| true, &mins);
    shrink(&mut widths, &|_| true, &ones);
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
    fn text_gives_way_then_optional_columns_go_then_names() {
        let cols = [
            FitColumn::new("ADDR", 4),
            FitColumn::new("WHAT", 6).text(),
            FitColumn::optional("WHEN", 5, 1),
        ];
        let r = rows(&[&["aaaaaaaaaa", "bbbbbbbbbb", "ccccc"]]);
        // 10 + 10 + 5 + 2 = 27: the free text gives way first.
        assert_eq!(fit_widths(&cols, &r, 25, 1), [Some(10), Some(8), Some(5)]);
        assert_eq!(fit_widths(&cols, &r, 23, 1), [Some(10), Some(6), Some(5)]);
        // Then WHEN goes, and the text takes back what it can.
        assert_eq!(fit_widths(&cols, &r, 22, 1), [Some(10), Some(10), None]);
        assert_eq!(fit_widths(&cols, &r, 18, 1), [Some(10), Some(7), None]);
        // Then the names give way too.
        assert_eq!(fit_widths(&cols, &r, 15, 1), [Some(8), Some(6), None]);
        // Below every minimum: still within the width.
        assert_eq!(fit_widths(&cols, &r, 5, 1), [Some(2), Some(2), None]);
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
