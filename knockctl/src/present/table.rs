//! Column layout for the CLI tables: columns two spaces apart, each as wide as its widest
//! cell; when the table is wider than the screen, the wrapping columns give way and their
//! text continues on the next lines. Without a screen width (a pipe), nothing wraps.

use super::text::{push_line, text_width, visible, wrap};

/// Space between table columns.
pub const GAP: usize = 2;

/// A table column: fixed columns keep their natural width, wrapping ones give way when the
/// table is wider than the screen.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub wraps: bool,
}

impl Column {
    pub fn fixed(header: &'static str) -> Column {
        Column {
            header,
            wraps: false,
        }
    }

    pub fn wrap(header: &'static str) -> Column {
        Column {
            header,
            wraps: true,
        }
    }
}

/// Narrowest a wrapping column may get: its header, at least 10, and wide enough not to
/// split words of up to 16 characters.
fn min_width(column: &Column, longest_word: usize) -> usize {
    text_width(column.header).max(10).max(longest_word.min(16))
}

/// Lays `rows` out under `columns`, two spaces apart, within `width` if the wrapping
/// columns can give enough way; with no `width`, one line per row. Cells are escaped with
/// [`visible`]; lines carry no trailing spaces.
pub fn render_table(columns: &[Column], rows: &[Vec<String>], width: Option<usize>) -> String {
    let width = width.unwrap_or(usize::MAX);
    let mut widths: Vec<usize> = columns.iter().map(|c| text_width(c.header)).collect();
    let mut words = vec![0; columns.len()];
    for row in rows {
        for ((w, longest), cell) in widths.iter_mut().zip(&mut words).zip(row) {
            let cell = visible(cell);
            *w = (*w).max(text_width(&cell));
            let word = cell.split_whitespace().map(text_width).max().unwrap_or(0);
            *longest = (*longest).max(word);
        }
    }
    let mins: Vec<usize> = columns
        .iter()
        .zip(&words)
        .map(|(c, longest)| min_width(c, *longest))
        .collect();
    let total =
        |widths: &[usize]| widths.iter().sum::<usize>() + GAP * widths.len().saturating_sub(1);
    while total(&widths) > width {
        // Shrink the widest wrapping column that still can.
        let candidate = (0..columns.len())
            .filter(|&i| columns[i].wraps && widths[i] > mins[i])
            .max_by_key(|&i| widths[i]);
        match candidate {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }

    let header: Vec<String> = columns.iter().map(|c| c.header.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<Vec<String>> = widths
            .iter()
            .zip(row)
            .map(|(w, cell)| wrap(&visible(cell), *w))
            .collect();
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for line in 0..height {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str(&" ".repeat(GAP));
                }
                let part = cell.get(line).map(String::as_str).unwrap_or("");
                text.push_str(part);
                text.push_str(&" ".repeat(w.saturating_sub(text_width(part))));
            }
            push_line(&mut out, &text);
        }
    }
    out
}
