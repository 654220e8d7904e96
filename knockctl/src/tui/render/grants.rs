//! Grants pane: address, door, what was opened, when, time left, how it closes.

use super::{
    empty_text, fitted_table, highlight, host_cell, is_stale, now_dt, pane_block, secs_left,
    selection_state, stale_note, window, with_host, FitRow, Theme,
};
use crate::present::fit::FitColumn;
use crate::present::{format_clock, format_duration_secs, visible};
use crate::tui::state::{Pane, State};
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::{HighlightSpacing, TableState};
use ratatui::Frame;

/// Narrow panes drop when a grant opened first.
const COLUMNS: [FitColumn; 6] = [
    FitColumn::new("ADDRESS", 15),
    FitColumn::new("DOOR", 7),
    FitColumn::new("WHAT", 11).text(),
    FitColumn::optional("OPENED", 8, 1),
    FitColumn::new("LEFT", 7),
    FitColumn::new("CLOSES", 10).text(),
];

/// With single-packet grants on screen: which client's packet opened each (after DOOR; it
/// goes after OPENED on a narrow pane).
const CLIENT: FitColumn = FitColumn::optional("CLIENT", 6, 2);

pub(super) fn render_grants(state: &State, frame: &mut Frame, area: Rect, now: i64, theme: &Theme) {
    let rows = state.visible_grants();
    let unlisted = state.hosts.iter().map(|h| h.grants_unlisted).sum();
    let mut title = super::counted_title("2 Grants", rows.len(), unlisted);
    title.push_str(&stale_note(state));
    let block = pane_block(state, Pane::Grants, title, theme);
    if rows.is_empty() {
        frame.render_widget(
            empty_text(state, "no open grants", theme).block(block),
            area,
        );
        return;
    }
    let now_dt = now_dt(state, now);
    // The CLIENT column only when a grant came from a single-packet knock.
    let clients = rows.iter().any(|g| g.info.client.is_some());
    let selected = selection_state(state, Pane::Grants);
    let (first, count) = window(rows.len(), selected, area, 3);
    let table_rows = rows[first..first + count]
        .iter()
        .map(|g| {
            let stale = is_stale(state, g.host);
            let (left, style) = match g.ended {
                Some((how, _)) => (how.label().to_string(), theme.grant_end(how)),
                None => (
                    g.expires_at_ms.map_or("never".to_string(), |t| {
                        format_duration_secs(secs_left(t, now))
                    }),
                    if stale { theme.dim() } else { Style::new() },
                ),
            };
            let closes = match (g.ended, g.kernel_expires_at_ms) {
                // Closed: how it would have closed no longer matters.
                (Some(_), _) => "-".to_string(),
                // nftables: the kernel closes it; its own time left, unless it is the
                // grant's (LEFT says it).
                (None, Some(at)) if g.expires_at_ms.is_some_and(|t| (t - at).abs() < 1_000) => {
                    "kernel".to_string()
                }
                (None, Some(at)) => {
                    format!("kernel, {} left", format_duration_secs(secs_left(at, now)))
                }
                (None, None) => g.info.closes.clone(),
            };
            let mut row = FitRow::new(
                vec![
                    g.info.addr.to_string(),
                    visible(&g.info.door).into_owned(),
                    visible(&g.info.opened).into_owned(),
                    format_clock(g.info.opened_at_unix_ms, &now_dt),
                    left,
                    visible(&closes).into_owned(),
                ],
                style,
            );
            if clients {
                let client = g.info.client.as_deref().map_or("-".into(), visible);
                row.cells.insert(2, (client.into_owned(), None));
            }
            host_cell(state, g.host, &mut row);
            row
        })
        .collect();
    let mut columns = COLUMNS.to_vec();
    if clients {
        columns.insert(2, CLIENT);
    }
    let table = fitted_table(&with_host(state, &columns), table_rows, area)
        .block(block)
        .row_highlight_style(highlight())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut table_state = TableState::default().with_selected(selected.map(|s| s - first));
    frame.render_stateful_widget(table, area, &mut table_state);
}
