//! Events pane: the daemon's event log, newest first.

use super::{
    bottom_title, empty_text, highlight, pane_block, selection_state, table_room, window, Theme,
};
use crate::present::fit::ellipsize;
use crate::present::{format_time_of_day, text_width, visible};
use crate::tui::state::{Pane, State};
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{HighlightSpacing, List, ListItem, ListState};
use ratatui::Frame;

pub(super) fn render_log(
    state: &State,
    frame: &mut Frame,
    area: Rect,
    shared: bool,
    theme: &Theme,
) {
    let block = pane_block(
        state,
        Pane::Log,
        bottom_title(state, Pane::Log, shared),
        theme,
    );
    let entries = state.visible_log();
    if entries.is_empty() {
        frame.render_widget(empty_text(state, "no events yet", theme).block(block), area);
        return;
    }
    // With many hosts, each line names its host after the clock.
    let names: Vec<String> = if state.is_fleet() {
        state
            .hosts
            .iter()
            .map(|h| visible(&h.name).into_owned())
            .collect()
    } else {
        Vec::new()
    };
    let name_width = names.iter().map(|n| text_width(n)).max().unwrap_or(0);
    let host_room = if names.is_empty() { 0 } else { name_width + 1 };
    // Clock (8), host, tag (7) and two spaces before the text.
    let room = table_room(area).saturating_sub(8 + 1 + host_room + 7 + 1);
    let selected = selection_state(state, Pane::Log);
    let (first, count) = window(entries.len(), selected, area, 2);
    let items: Vec<ListItem> = entries[first..first + count]
        .iter()
        .map(|e| {
            let style = theme.log(e.kind);
            let host = names.get(e.host).map_or(String::new(), |n| {
                let pad = name_width.saturating_sub(text_width(n));
                format!("{n}{} ", " ".repeat(pad))
            });
            ListItem::new(Line::from(vec![
                Span::styled(format_time_of_day(e.at_ms, &state.tz), theme.dim()),
                Span::raw(" "),
                Span::styled(host, Style::new().add_modifier(Modifier::BOLD)),
                Span::styled(
                    format!("{:<7}", e.kind.tag()),
                    style.add_modifier(Modifier::BOLD),
                ),
                Span::raw(" "),
                Span::styled(ellipsize(&visible(&e.text), room), style),
            ]))
        })
        .collect();
    let list = List::new(items)
        .block(block)
        .highlight_style(highlight())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut list_state = ListState::default().with_selected(selected.map(|s| s - first));
    frame.render_stateful_widget(list, area, &mut list_state);
}
