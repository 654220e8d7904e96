//! Many hosts: the header (a summary line, then a line per host: `connected`,
//! `disconnected, retrying in 4s: <ssh's or knockd's words>`, `connecting...`) and the
//! popup that asks which host `R` reloads.

use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::{centered, disconnected_text, popup, Theme};
use crate::present::fit::ellipsize;
use crate::present::{format_duration_secs, text_width, visible};
use crate::tui::state::{HostView, Link, State};

/// Lines the header takes: the summary, and a line per host up to an eighth of the screen
/// (at least one); hosts beyond it are counted on the last line.
pub(super) fn fleet_header_height(state: &State, area: Rect) -> u16 {
    let room = usize::from((area.height / 8).max(1));
    let lines = state.hosts.len().min(room);
    u16::try_from(lines + 1).unwrap_or(2)
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// Spans cut to `width` columns: the span that crosses the edge ends with `…`, later ones go.
fn fit_spans(spans: Vec<Span<'static>>, width: usize) -> Line<'static> {
    let total: usize = spans.iter().map(|s| text_width(&s.content)).sum();
    if total <= width {
        return Line::from(spans);
    }
    let mut out = Vec::new();
    let mut used = 0;
    for span in spans {
        let w = text_width(&span.content);
        if used + w < width {
            used += w;
            out.push(span);
            continue;
        }
        let cut = ellipsize(&span.content, width - used);
        out.push(Span::styled(cut, span.style));
        break;
    }
    Line::from(out)
}

pub(super) fn render_fleet_header(
    state: &State,
    frame: &mut Frame,
    area: Rect,
    now: i64,
    theme: &Theme,
) {
    let width = usize::from(area.width);
    let rows = Layout::vertical(vec![Constraint::Length(1); usize::from(area.height)]).split(area);
    let Some((&top, host_rows)) = rows.split_first() else {
        return;
    };
    let n = state.hosts.len();
    let connected = state
        .hosts
        .iter()
        .filter(|h| h.link == Link::Connected)
        .count();
    let down = state
        .hosts
        .iter()
        .filter(|h| matches!(h.link, Link::Disconnected { .. }))
        .count();

    // Summary: hosts, then the fleet's counters (summed over the hosts that answered),
    // each counter whole or not at all.
    let sum = |f: fn(&knock_ipc::Counters) -> u64| -> u64 {
        state
            .hosts
            .iter()
            .filter_map(|h| h.status.as_ref())
            .map(|s| f(&s.counters))
            .sum()
    };
    let badge = format!("[{connected}/{n} connected]");
    let room = width.saturating_sub(badge.chars().count() + 1);
    let title = format!("knockd on {n} hosts");
    let mut used = text_width(&title);
    let mut summary = vec![Span::styled(title, bold())];
    for (name, value) in [
        ("packets", sum(|c| c.packets).to_string()),
        ("knocks/s", format!("{:.1}", state.knock_rate(now))),
        ("opens", sum(|c| c.opens).to_string()),
        ("resets", sum(|c| c.resets).to_string()),
        ("timeouts", sum(|c| c.timeouts).to_string()),
    ] {
        let w = 2 + name.len() + 1 + value.len();
        if used + w > room {
            break;
        }
        used += w;
        summary.push(Span::raw("  "));
        summary.push(Span::styled(format!("{name} "), theme.dim()));
        summary.push(Span::styled(value, bold()));
    }
    let badge_style = if connected == n {
        theme.fg(Color::Green)
    } else if down > 0 {
        theme.error()
    } else {
        theme.fg(Color::Yellow)
    };
    let badge_width = u16::try_from(badge.chars().count() + 1).unwrap_or(0);
    let [left, right] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(badge_width)]).areas(top);
    frame.render_widget(
        Paragraph::new(fit_spans(summary, usize::from(left.width))),
        left,
    );
    frame.render_widget(
        Paragraph::new(Span::styled(badge, badge_style)).alignment(Alignment::Right),
        right,
    );

    // A line per host: in their order when all fit, else the ones in trouble first and the
    // rest counted on the last line.
    let room = host_rows.len();
    let mut order: Vec<usize> = (0..n).collect();
    if n > room {
        order.sort_by_key(|&i| state.hosts[i].link == Link::Connected);
    }
    let name_width = state
        .hosts
        .iter()
        .map(|h| text_width(&visible(&h.name)))
        .max()
        .unwrap_or(0);
    for (slot, area) in host_rows.iter().enumerate() {
        let line = if n > room && slot == room - 1 {
            let rest = &order[slot..];
            let up = rest
                .iter()
                .filter(|&&i| state.hosts[i].link == Link::Connected)
                .count();
            let text = if up == rest.len() {
                format!("and {} more hosts, connected", rest.len())
            } else {
                format!(
                    "and {} more hosts: {up} connected, {} not",
                    rest.len(),
                    rest.len() - up
                )
            };
            fit_spans(vec![Span::styled(text, theme.dim())], width)
        } else {
            let Some(&i) = order.get(slot) else {
                break;
            };
            fit_spans(host_line(&state.hosts[i], name_width, now, theme), width)
        };
        frame.render_widget(Paragraph::new(line), *area);
    }
}

/// `h1  connected  knockd 0.1.0  up 3m  doors 2  opens 5`, or why it is not.
fn host_line(host: &HostView, name_width: usize, now: i64, theme: &Theme) -> Vec<Span<'static>> {
    let name = visible(&host.name).into_owned();
    let pad = name_width.saturating_sub(text_width(&name));
    let mut spans = vec![Span::styled(format!("{name}{}  ", " ".repeat(pad)), bold())];
    match &host.link {
        Link::Connecting => spans.push(Span::styled("connecting...", theme.fg(Color::Yellow))),
        Link::Disconnected {
            reason,
            retry_at_ms,
        } => {
            spans.push(Span::styled(
                disconnected_text(*retry_at_ms, now),
                theme.error(),
            ));
            spans.push(Span::raw(format!(": {}", visible(reason))));
        }
        Link::Connected => {
            spans.push(Span::styled("connected", theme.fg(Color::Green)));
            let version = host.daemon_version.as_deref().unwrap_or("?");
            spans.push(Span::raw(format!("  knockd {}", visible(version))));
            if let Some(status) = &host.status {
                if let Some(up) = host.uptime_secs(now) {
                    spans.push(Span::raw(format!("  up {}", format_duration_secs(up))));
                }
                spans.push(Span::raw(format!(
                    "  doors {}  opens {}",
                    status.doors, status.counters.opens
                )));
                if !status.firewall.is_empty() && status.firewall != "iptables" {
                    spans.push(Span::raw(format!("  {}", visible(&status.firewall))));
                }
                if status.state_error.is_some() {
                    let health = crate::present::state_file_health(status);
                    spans.push(Span::styled(
                        format!("  state file {health}"),
                        theme.error(),
                    ));
                }
            }
        }
    }
    spans
}

/// `R` with many hosts: every host, or one; the cursor's line is marked.
pub(super) fn render_choose_reload(
    state: &State,
    cursor: usize,
    frame: &mut Frame,
    area: Rect,
    theme: &Theme,
) {
    let mut items = vec![format!("every host ({})", state.hosts.len())];
    items.extend(state.hosts.iter().map(|h| visible(&h.name).into_owned()));
    let hint = "j/k choose, Enter reloads, a every host, Esc cancels";
    let inner = area.height.saturating_sub(2 + 2);
    let shown = usize::from(inner.max(1)).min(items.len());
    // Keep the cursor in view.
    let first = cursor.saturating_sub(shown.saturating_sub(1));
    let width = items
        .iter()
        .map(|i| text_width(i) + 4)
        .chain([hint.len() + 2])
        .max()
        .unwrap_or(20);
    let mut lines: Vec<Line> = items
        .iter()
        .enumerate()
        .skip(first)
        .take(shown)
        .map(|(i, item)| {
            if i == cursor {
                Line::styled(format!("> {item}"), bold().add_modifier(Modifier::REVERSED))
            } else {
                Line::raw(format!("  {item}"))
            }
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(format!(" {hint}"), theme.dim()));
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
    let rect = centered(area, u16::try_from(width + 2).unwrap_or(u16::MAX), height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(popup(" Reload which? ", theme.fg(Color::Cyan))),
        rect,
    );
}
