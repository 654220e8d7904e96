//! Doors pane: each door's sequence, protocols, timeouts and action.

use super::{bottom_title, empty_text, header_row, highlight, pane_block, selection_state, Theme};
use crate::present::{door_sequence, format_duration_secs, protocols, visible};
use crate::tui::state::{Pane, State};
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Cell, HighlightSpacing, Row, Table, TableState};
use ratatui::Frame;

/// Doors show their action from this width on.
const WIDE_DOORS: u16 = 110;

pub(super) fn render_doors(
    state: &State,
    frame: &mut Frame,
    area: Rect,
    shared: bool,
    theme: &Theme,
) {
    let block = pane_block(
        state,
        Pane::Doors,
        bottom_title(state, Pane::Doors, shared),
        theme,
    );
    let doors = state.visible_doors();
    let wide = area.width >= WIDE_DOORS;
    if doors.is_empty() {
        frame.render_widget(
            empty_text(state, "no doors configured", theme).block(block),
            area,
        );
        return;
    }
    let rows = doors.iter().map(|d| {
        let rotating = d.kind == "totp";
        let sequence = door_sequence(d);
        let protos = if rotating {
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
        let cmd = if d.cmd_timeout_ms == 0 {
            "-".to_string()
        } else {
            format_duration_secs(d.cmd_timeout_ms / 1000)
        };
        let mut cells = vec![
            Cell::from(name),
            Cell::from(sequence),
            Cell::from(protos),
            Cell::from(format_duration_secs(d.seq_timeout_ms / 1000)),
            Cell::from(cmd),
            Cell::from(once),
        ];
        if wide {
            cells.push(Cell::from(d.action.clone()));
        }
        let row = Row::new(cells);
        if d.enabled {
            row
        } else {
            row.style(theme.dim())
        }
    });
    let mut widths = vec![
        Constraint::Length(14),
        Constraint::Fill(2),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    let mut headers = vec!["DOOR", "SEQUENCE", "PROTO", "WITHIN", "CLOSE", "ONE-TIME"];
    if wide {
        widths.push(Constraint::Fill(1));
        headers.push("ACTION");
    }
    let table = Table::new(rows, widths)
        .header(header_row(&headers))
        .block(block)
        .row_highlight_style(highlight())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut table_state = TableState::default().with_selected(selection_state(state, Pane::Doors));
    frame.render_stateful_widget(table, area, &mut table_state);
}
