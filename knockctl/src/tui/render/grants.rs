//! Grants pane: address, door, what was opened, when (wide screens), time left, how it closes.

use super::{
    empty_text, header_row, highlight, now_dt, pane_block, secs_left, selection_state, Theme,
};
use crate::present::{format_clock, format_duration_secs, format_remaining, visible};
use crate::tui::state::{Pane, State};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::widgets::{Cell, HighlightSpacing, Row, Table, TableState};
use ratatui::Frame;

/// Grants show when they opened from this width on.
const WIDE_GRANTS: u16 = 100;

pub(super) fn render_grants(state: &State, frame: &mut Frame, area: Rect, now: i64, theme: &Theme) {
    let rows = state.visible_grants();
    let title = super::counted_title("2 Grants", rows.len(), state.grants_unlisted);
    let block = pane_block(state, Pane::Grants, title, theme);
    if rows.is_empty() {
        frame.render_widget(
            empty_text(state, "no open grants", theme).block(block),
            area,
        );
        return;
    }
    let wide = area.width >= WIDE_GRANTS;
    let now_dt = now_dt(state, now);
    let table_rows = rows.iter().map(|g| {
        let (left, style) = match g.ended {
            Some((how, _)) => (how.label().to_string(), theme.grant_end(how)),
            None => (
                g.expires_at_ms.map_or("never".to_string(), |t| {
                    format_duration_secs(secs_left(t, now))
                }),
                Style::new(),
            ),
        };
        let mut cells = vec![
            Cell::from(g.info.addr.to_string()),
            Cell::from(visible(&g.info.door).into_owned()),
            Cell::from(g.info.opened.clone()),
        ];
        if wide {
            cells.push(Cell::from(format_clock(g.info.opened_at_unix_ms, &now_dt)));
        }
        cells.push(Cell::from(left));
        cells.push(Cell::from(match g.info.kernel_expires_in_ms {
            // nftables: the kernel closes it; its own time left.
            Some(ms) => format!("kernel, {} left", format_remaining(Some(ms))),
            None => g.info.closes.clone(),
        }));
        Row::new(cells).style(style)
    });
    let (widths, headers): (Vec<Constraint>, &[&'static str]) = if wide {
        (
            vec![
                Constraint::Fill(1),
                Constraint::Length(14),
                Constraint::Fill(1),
                Constraint::Length(12),
                Constraint::Length(7),
                Constraint::Fill(1),
            ],
            &["ADDRESS", "DOOR", "WHAT", "OPENED", "LEFT", "CLOSES"],
        )
    } else {
        (
            vec![
                Constraint::Fill(1),
                Constraint::Length(12),
                Constraint::Length(15),
                Constraint::Length(7),
                Constraint::Fill(1),
            ],
            &["ADDRESS", "DOOR", "WHAT", "LEFT", "CLOSES"],
        )
    };
    let table = Table::new(table_rows, widths)
        .header(header_row(headers))
        .block(block)
        .row_highlight_style(highlight())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut table_state = TableState::default().with_selected(selection_state(state, Pane::Grants));
    frame.render_stateful_widget(table, area, &mut table_state);
}
