//! Tables in panes: columns as wide as their content ([`crate::present::fit`]), cut text
//! ending with `…`, a margin before the right border.

use crate::present::fit::{ellipsize, fit_widths, FitColumn};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Cell, Row, Table};

/// Columns a table row may use inside a pane of `area`: the borders, the highlight mark
/// (`> `) and one column of margin on the right, so no text touches the border.
pub(super) fn table_room(area: Rect) -> usize {
    usize::from(area.width).saturating_sub(2 + 2 + 1)
}

/// One row of a fitted table: each cell's text with its own style (if not the row's), and
/// the row's style.
pub(super) struct FitRow {
    pub(super) cells: Vec<(String, Option<Style>)>,
    pub(super) style: Style,
}

impl FitRow {
    pub(super) fn new(cells: Vec<String>, style: Style) -> FitRow {
        FitRow {
            cells: cells.into_iter().map(|c| (c, None)).collect(),
            style,
        }
    }
}

/// A table whose columns are as wide as their content within `area` ([`fit_widths`]):
/// optional columns go when there is no room, and every cut text ends with `…`.
pub(super) fn fitted_table<'a>(columns: &[FitColumn], rows: Vec<FitRow>, area: Rect) -> Table<'a> {
    let texts: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.cells.iter().map(|(t, _)| t.clone()).collect())
        .collect();
    // Two spaces between columns when everything fits whole that way, else one.
    let room = table_room(area);
    let roomy = fit_widths(columns, &texts, usize::MAX, 2);
    let (widths, gap) = if fit_widths(columns, &texts, room, 2) == roomy {
        (roomy, 2)
    } else {
        (fit_widths(columns, &texts, room, 1), 1)
    };
    let header = Row::new(
        columns
            .iter()
            .zip(&widths)
            .filter_map(|(c, w)| w.map(|w| Cell::from(ellipsize(c.header, w)))),
    )
    .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let body: Vec<Row> = rows
        .into_iter()
        .map(|r| {
            let cells = r
                .cells
                .into_iter()
                .zip(&widths)
                .filter_map(|((text, style), w)| {
                    w.map(|w| {
                        let cell = Cell::from(ellipsize(&text, w));
                        match style {
                            Some(style) => cell.style(style),
                            None => cell,
                        }
                    })
                });
            Row::new(cells.collect::<Vec<_>>()).style(r.style)
        })
        .collect();
    let constraints: Vec<Constraint> = widths
        .iter()
        .flatten()
        .map(|&w| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)))
        .collect();
    Table::new(body, constraints)
        .header(header)
        .column_spacing(u16::from(gap == 2) + 1)
}

/// Which of `len` rows a pane of `area` shows: `(first, count)`. A pane shows as many rows
/// as fit under its `chrome` (borders, a table's header), scrolled just far enough for the
/// selected row to be the last one, as ratatui scrolls a fresh table. Only these rows are
/// built and measured: a pane over thousands of rows costs what its screenful costs.
pub(super) fn window(
    len: usize,
    selected: Option<usize>,
    area: Rect,
    chrome: u16,
) -> (usize, usize) {
    let fits = usize::from(area.height.saturating_sub(chrome)).max(1);
    let first = selected.map_or(0, |s| s.saturating_sub(fits - 1)).min(len);
    (first, fits.min(len - first))
}
