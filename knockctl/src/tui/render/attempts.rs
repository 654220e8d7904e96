//! Attempts pane: source, door, stage with a progress bar, age, time left or how it ended.

use super::{
    empty_text, fitted_table, highlight, host_cell, ms_between, pane_block, selection_state,
    window, with_host, FitRow, Theme,
};
use crate::present::fit::FitColumn;
use crate::present::{format_duration_ms, visible};
use crate::tui::state::{Pane, State};
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::widgets::{HighlightSpacing, TableState};
use ratatui::Frame;

/// Cells of the text progress bar.
const BAR: usize = 10;

/// Narrow panes drop the bar first, then the age.
const COLUMNS: [FitColumn; 6] = [
    FitColumn::new("SOURCE", 15),
    FitColumn::new("DOOR", 7),
    FitColumn::new("STAGE", 5),
    FitColumn::optional("PROGRESS", BAR, 1),
    FitColumn::optional("AGE", 4, 2),
    FitColumn::new("LEFT", 7),
];

fn bar(stage: u32, of: u32) -> String {
    let filled = if of == 0 {
        0
    } else {
        (stage.min(of) as usize * BAR) / of as usize
    };
    format!("{}{}", "█".repeat(filled), "░".repeat(BAR - filled))
}

pub(super) fn render_attempts(
    state: &State,
    frame: &mut Frame,
    area: Rect,
    now: i64,
    theme: &Theme,
) {
    let rows = state.visible_attempts();
    let unlisted = state.hosts.iter().map(|h| h.attempts_unlisted).sum();
    let title = super::counted_title("1 Attempts", rows.len(), unlisted);
    let block = pane_block(state, Pane::Attempts, title, theme);
    if rows.is_empty() {
        frame.render_widget(
            empty_text(state, "no knock sequences in progress", theme).block(block),
            area,
        );
        return;
    }
    let selected = selection_state(state, Pane::Attempts);
    let (first, count) = window(rows.len(), selected, area, 3);
    let table_rows = rows[first..first + count]
        .iter()
        .map(|a| {
            let end_at = a.ended.map_or(now, |(_, at)| at);
            let age = format_duration_ms(ms_between(a.started_ms, end_at));
            let (left, style) = match a.ended {
                Some((how, _)) => (how.label().to_string(), theme.attempt_end(how)),
                None => (
                    a.deadline_ms
                        .map_or("?".to_string(), |d| format_duration_ms(ms_between(now, d))),
                    Style::new(),
                ),
            };
            let bar_style = if a.ended.is_some() {
                style
            } else {
                theme.fg(Color::Cyan)
            };
            let mut row = FitRow {
                cells: vec![
                    (a.addr.to_string(), None),
                    (visible(&a.door).into_owned(), None),
                    (format!("{}/{}", a.stage, a.of), None),
                    (bar(a.stage, a.of), Some(bar_style)),
                    (age, None),
                    (left, None),
                ],
                style,
            };
            host_cell(state, a.host, &mut row);
            row
        })
        .collect();
    let table = fitted_table(&with_host(state, &COLUMNS), table_rows, area)
        .block(block)
        .row_highlight_style(highlight())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut table_state = TableState::default().with_selected(selected.map(|s| s - first));
    frame.render_stateful_widget(table, area, &mut table_state);
}
