//! Doors pane: each door's sequence, protocols, timeouts and action.

use super::{
    bottom_title, empty_text, fitted_table, highlight, host_cell, is_stale, ms_between, pane_block,
    selection_state, window, with_host, FitRow, Theme,
};
use crate::present::fit::FitColumn;
use crate::present::{door_sequence_short, format_duration_secs, protocols, visible};
use crate::tui::state::{Pane, State};
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::{HighlightSpacing, TableState};
use ratatui::Frame;

/// Narrow panes drop the protocols first (the sequence names them too), then CLOSE, ONCE
/// and WITHIN, before name, sequence or action are cut.
const COLUMNS: [FitColumn; 7] = [
    FitColumn::new("DOOR", 7),
    FitColumn::new("SEQUENCE", 14),
    FitColumn::optional("PROTO", 5, 1),
    FitColumn::optional("WITHIN", 6, 4),
    FitColumn::optional("CLOSE", 5, 2),
    FitColumn::optional("ONCE", 4, 3),
    FitColumn::new("ACTION", 11),
];

pub(super) fn render_doors(
    state: &State,
    frame: &mut Frame,
    area: Rect,
    shared: bool,
    now: i64,
    theme: &Theme,
) {
    let title = bottom_title(state, Pane::Doors, shared);
    let block = pane_block(state, Pane::Doors, title, theme);
    let doors = state.visible_doors();
    if doors.is_empty() {
        frame.render_widget(
            empty_text(state, "no doors configured", theme).block(block),
            area,
        );
        return;
    }
    let selected = selection_state(state, Pane::Doors);
    let (first, count) = window(doors.len(), selected, area, 3);
    let rows = doors[first..first + count]
        .iter()
        .map(|&(host, d)| {
            let stale = is_stale(state, host);
            let doors_at_ms = state.hosts[host].doors_at_ms;
            let protos = if d.kind == "totp" {
                "tcp".to_string()
            } else {
                protocols(&d.sequence)
            };
            let once = match (d.one_time, d.knocks == 0) {
                (false, _) => "no",
                (true, false) => "yes",
                (true, true) => "used",
            };
            let mut name = visible(&d.name).into_owned();
            if !d.enabled {
                name.push_str(" (off)");
            }
            let close = if d.cmd_timeout_ms == 0 {
                "-".to_string()
            } else {
                format_duration_secs(d.cmd_timeout_ms / 1000)
            };
            let style = if d.enabled && !stale {
                Style::new()
            } else {
                theme.dim()
            };
            let mut row = FitRow::new(
                vec![
                    name,
                    visible(&door_sequence_short(d, ms_between(doors_at_ms, now))).into_owned(),
                    protos,
                    format_duration_secs(d.seq_timeout_ms / 1000),
                    close,
                    once.to_string(),
                    visible(&d.action).into_owned(),
                ],
                style,
            );
            host_cell(state, host, &mut row);
            row
        })
        .collect();
    let table = fitted_table(&with_host(state, &COLUMNS), rows, area)
        .block(block)
        .row_highlight_style(highlight())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut table_state = TableState::default().with_selected(selected.map(|s| s - first));
    frame.render_stateful_widget(table, area, &mut table_state);
}
