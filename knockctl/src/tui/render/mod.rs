//! Drawing: a pure function of the state and the time. Every colour has a text twin (a
//! marker, a label, a border weight), so the screen reads the same with NO_COLOR.
//!
//! One file per pane (`attempts`, `grants`, `events`, `doors`); this file lays them out and
//! draws what they share: header, footer, pane frames, popups, the theme; tables that fit
//! their pane are built in `table`.

use chrono::{DateTime, FixedOffset};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::present::fit::FitColumn;
use crate::present::{format_duration_secs, format_time_of_day, visible};

mod attempts;
mod doors;
mod events;
mod grants;
mod hosts;
mod table;

use attempts::render_attempts;
use doors::render_doors;
use events::render_log;
use grants::render_grants;
use hosts::{fleet_header_height, render_choose_reload, render_fleet_header};
use table::{fitted_table, table_room, window, FitRow};

use super::input::KEYS;
use super::state::{AttemptEnd, GrantEnd, Link, LogKind, Overlay, Pane, State};

/// Draws the whole dashboard for the moment `now` (Unix ms).
pub fn render(state: &State, frame: &mut Frame, now: i64) {
    let theme = Theme { color: state.color };
    let header_height = if state.is_fleet() {
        fleet_header_height(state, frame.area())
    } else {
        2
    };
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(header_height),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    if state.is_fleet() {
        render_fleet_header(state, frame, header, now, &theme);
    } else {
        render_header(state, frame, header, now, &theme);
    }
    let (panes, shared) = body_layout(state, body);
    for (pane, area) in panes {
        match pane {
            Pane::Attempts => render_attempts(state, frame, area, now, &theme),
            Pane::Grants => render_grants(state, frame, area, now, &theme),
            Pane::Log => render_log(state, frame, area, shared, &theme),
            Pane::Doors => render_doors(state, frame, area, shared, now, &theme),
        }
    }
    render_footer(state, frame, footer, &theme);
    if let Some(overlay) = &state.overlay {
        render_overlay(state, overlay, frame, body, &theme);
    }
}

/// With many hosts, a HOST column before `columns`.
fn with_host(state: &State, columns: &[FitColumn]) -> Vec<FitColumn> {
    let mut out = Vec::with_capacity(columns.len() + 1);
    if state.is_fleet() {
        out.push(FitColumn::new("HOST", 6));
    }
    out.extend_from_slice(columns);
    out
}

/// With many hosts, the host's name before the row's cells.
fn host_cell(state: &State, host: usize, row: &mut FitRow) {
    if state.is_fleet() {
        row.cells
            .insert(0, (visible(state.host_name(host)).into_owned(), None));
    }
}

/// Whether host `host`'s rows are what knockd said before its link went down.
fn is_stale(state: &State, host: usize) -> bool {
    state
        .hosts
        .get(host)
        .is_some_and(|h| h.stale_since_ms.is_some())
}

/// Where each pane goes. Small screens stack attempts, grants and one of log/doors; tall
/// ones stack all four; wide ones put the log in a column of its own. The flag tells
/// whether log and doors share one place.
pub fn body_layout(state: &State, body: Rect) -> (Vec<(Pane, Rect)>, bool) {
    if body.width >= 150 && body.height >= 20 {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)])
                .areas(body);
        // Doors get the rows they need (header, borders), up to a third.
        let doors = u16::try_from(state.visible_doors().len().max(1))
            .unwrap_or(u16::MAX)
            .saturating_add(3)
            .min(left.height / 3);
        let [a, g, d] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(doors),
        ])
        .areas(left);
        let panes = vec![
            (Pane::Attempts, a),
            (Pane::Grants, g),
            (Pane::Doors, d),
            (Pane::Log, right),
        ];
        (panes, false)
    } else if body.height >= 36 {
        let [a, g, l, d] = Layout::vertical([Constraint::Fill(1); 4]).areas(body);
        let panes = vec![
            (Pane::Attempts, a),
            (Pane::Grants, g),
            (Pane::Log, l),
            (Pane::Doors, d),
        ];
        (panes, false)
    } else {
        let [a, g, b] = Layout::vertical([Constraint::Fill(1); 3]).areas(body);
        let panes = vec![(Pane::Attempts, a), (Pane::Grants, g), (state.bottom, b)];
        (panes, true)
    }
}

struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    fn log(&self, kind: LogKind) -> Style {
        let color = match kind {
            LogKind::Stage => Color::Cyan,
            LogKind::Open => Color::Green,
            LogKind::Reset => Color::Yellow,
            LogKind::Timeout => Color::Magenta,
            LogKind::Grant | LogKind::Refresh => Color::LightGreen,
            LogKind::Revoke => Color::LightRed,
            LogKind::Expire | LogKind::Close => Color::Blue,
            LogKind::Reload => Color::LightBlue,
            LogKind::Error => Color::Red,
            LogKind::Info => Color::Gray,
        };
        let style = self.fg(color);
        match kind {
            LogKind::Open | LogKind::Error => style.add_modifier(Modifier::BOLD),
            _ => style,
        }
    }

    fn attempt_end(&self, end: AttemptEnd) -> Style {
        let color = match end {
            AttemptEnd::Open => Color::Green,
            AttemptEnd::Reset => Color::Yellow,
            AttemptEnd::Timeout => Color::Magenta,
        };
        self.fg(color).add_modifier(Modifier::BOLD)
    }

    fn grant_end(&self, end: GrantEnd) -> Style {
        let color = match end {
            GrantEnd::Revoked => Color::LightRed,
            GrantEnd::Expired | GrantEnd::Closed => Color::Blue,
        };
        self.fg(color).add_modifier(Modifier::BOLD)
    }

    fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
}

fn now_dt(state: &State, now: i64) -> DateTime<FixedOffset> {
    DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .with_timezone(&state.tz)
}

/// Seconds left, rounded up so a 30 s grant starts at `30s`.
fn secs_left(deadline_ms: i64, now: i64) -> u64 {
    u64::try_from((deadline_ms - now).max(0)).map_or(0, |ms| ms.div_ceil(1000))
}

/// `disconnected, retrying in 4s` (or `retrying now`), for the header of one host or many.
fn disconnected_text(retry_at_ms: i64, now: i64) -> String {
    match secs_left(retry_at_ms, now) {
        0 => "disconnected, retrying now".to_string(),
        secs => format!("disconnected, retrying in {secs}s"),
    }
}

fn ms_between(from: i64, to: i64) -> u64 {
    u64::try_from((to - from).max(0)).unwrap_or(0)
}

fn render_header(state: &State, frame: &mut Frame, area: Rect, now: i64, theme: &Theme) {
    let [top, bottom] = Layout::vertical([Constraint::Length(1); 2]).areas(area);
    let host = &state.hosts[0];
    let version = host.daemon_version.as_deref().unwrap_or("?");
    let mut left = vec![Span::styled(
        format!("knockd {version}"),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if let Some(status) = &host.status {
        let interfaces = if status.interfaces.is_empty() {
            "no interface".to_string()
        } else {
            status.interfaces.join(",")
        };
        left.push(Span::raw(format!(" on {interfaces}")));
        let up = match host.link {
            Link::Connected => host.uptime_secs(now),
            _ => None,
        };
        if let Some(up) = up {
            left.push(Span::raw(format!("  up {}", format_duration_secs(up))));
        }
        left.push(Span::raw(format!("  doors {}", status.doors)));
        // The default backend (iptables) goes unsaid; nftables grants close in the kernel.
        if !status.firewall.is_empty() && status.firewall != "iptables" {
            left.push(Span::raw(format!("  {}", status.firewall)));
        }
        // Another program removed knockd's table (nft flush ruleset) and knockd re-created it.
        let recreated = status.counters.nft_tables_recreated;
        if recreated > 0 {
            left.push(Span::styled(
                format!("  table re-created {recreated}x"),
                theme.fg(Color::Yellow),
            ));
        }
    }
    let link = match &host.link {
        Link::Connected => Span::styled("[connected]", theme.fg(Color::Green)),
        Link::Connecting => Span::styled("[connecting...]", theme.fg(Color::Yellow)),
        Link::Disconnected { .. } => Span::styled("[DISCONNECTED]", theme.error()),
    };
    let link_width = u16::try_from(link.content.chars().count()).unwrap_or(0);
    let [top_left, top_right] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(link_width)]).areas(top);
    frame.render_widget(Paragraph::new(Line::from(left)), top_left);
    frame.render_widget(
        Paragraph::new(Line::from(link)).alignment(Alignment::Right),
        top_right,
    );

    let line = match &host.link {
        Link::Disconnected {
            reason,
            retry_at_ms,
        } => Line::from(vec![
            Span::styled(disconnected_text(*retry_at_ms, now), theme.error()),
            Span::raw(format!(": {reason}")),
        ]),
        // Opens are refused while the state file cannot be written: that outranks counters.
        _ if host
            .status
            .as_ref()
            .is_some_and(|s| s.state_error.is_some()) =>
        {
            let health = host
                .status
                .as_ref()
                .map(crate::present::state_file_health)
                .unwrap_or_default();
            Line::from(Span::styled(format!("state file {health}"), theme.error()))
        }
        _ => {
            let (packets, opens, resets, timeouts) = host.status.as_ref().map_or(
                ("-".to_string(), "-".into(), "-".into(), "-".into()),
                |s| {
                    let c = &s.counters;
                    (
                        c.packets.to_string(),
                        c.opens.to_string(),
                        c.resets.to_string(),
                        c.timeouts.to_string(),
                    )
                },
            );
            let label = theme.dim();
            let mut spans = Vec::new();
            for (name, value) in [
                ("packets", packets),
                ("knocks/s", format!("{:.1}", state.knock_rate(now))),
                ("opens", opens),
                ("resets", resets),
                ("timeouts", timeouts),
            ] {
                if !spans.is_empty() {
                    spans.push(Span::raw("  "));
                }
                spans.push(Span::styled(format!("{name} "), label));
                spans.push(Span::styled(
                    value,
                    Style::new().add_modifier(Modifier::BOLD),
                ));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), bottom);
}

/// ` 1 Attempts (12) `, or with rows knockd did not list (it sends the oldest `LIST_CAP`):
/// ` 1 Attempts (5000, 95000 more not listed) `.
fn counted_title(pane: &str, rows: usize, unlisted: u64) -> String {
    if unlisted > 0 {
        format!(" {pane} ({rows}, {unlisted} more not listed) ")
    } else {
        format!(" {pane} ({rows}) ")
    }
}

fn pane_block<'a>(state: &State, pane: Pane, title: String, theme: &Theme) -> Block<'a> {
    let focused = state.focus == pane;
    let block = Block::default().borders(Borders::ALL).title(Span::styled(
        title,
        if focused {
            theme.fg(Color::Yellow).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        },
    ));
    if focused {
        block
            .border_type(BorderType::Thick)
            .border_style(theme.fg(Color::Yellow))
    } else {
        block.border_style(theme.dim())
    }
}

fn empty_text<'a>(state: &State, what: &'a str, theme: &Theme) -> Paragraph<'a> {
    let connected = state.hosts.iter().any(|h| h.link == Link::Connected);
    let text = if connected {
        what
    } else {
        "waiting for knockd"
    };
    Paragraph::new(Span::styled(format!("  {text}"), theme.dim()))
}

fn selection_state(state: &State, pane: Pane) -> Option<usize> {
    if state.focus == pane {
        state.selection(pane)
    } else {
        None
    }
}

fn highlight() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// A pane title's note that its rows are what knockd said before the link went down; with
/// many hosts, which hosts' rows.
fn stale_note(state: &State) -> String {
    if state.is_fleet() {
        let stale: Vec<String> = state
            .hosts
            .iter()
            .filter(|h| h.stale_since_ms.is_some())
            .map(|h| visible(&h.name).into_owned())
            .collect();
        return match stale.len() {
            0 => String::new(),
            1..=3 => format!("STALE: {} ", stale.join(", ")),
            n => format!("STALE: {n} hosts "),
        };
    }
    match state.hosts[0].stale_since_ms {
        Some(at) => format!("STALE since {} ", format_time_of_day(at, &state.tz)),
        None => String::new(),
    }
}

/// The bottom pane's title names the other pane when only one of them fits.
fn bottom_title(state: &State, pane: Pane, area_is_shared: bool) -> String {
    let base = match pane {
        Pane::Log => {
            let mut t = " 3 Events".to_string();
            if state.paused {
                t.push_str(&format!(" PAUSED ({} new, p resumes)", state.held.len()));
            }
            t
        }
        // Doors stay on screen while disconnected: say so before naming the other pane.
        _ => format!(
            " 4 Doors ({}) {}",
            state.visible_doors().len(),
            stale_note(state)
        )
        .trim_end()
        .to_string(),
    };
    if !area_is_shared {
        return format!("{base} ");
    }
    let other = match pane {
        Pane::Log => "4 Doors",
        _ => "3 Events",
    };
    format!("{base} | {other} ")
}

/// Key hints, shortest last: the first that fits is shown.
const HINTS: &[&str] = &[
    "Tab pane  j/k select  r revoke  R reload  / filter  p pause  ? help  q quit",
    "Tab pane  r revoke  R reload  / filter  ? help  q quit",
    "? help  q quit",
];

fn render_footer(state: &State, frame: &mut Frame, area: Rect, theme: &Theme) {
    let width = usize::from(area.width);
    let line = if state.editing_filter {
        Line::from(vec![
            Span::styled("filter: ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{}_", state.filter)),
            Span::styled("   Enter keeps it, Esc clears", theme.dim()),
        ])
    } else if let Some(notice) = &state.notice {
        if notice.error {
            Line::from(Span::styled(format!("! {}", notice.text), theme.error()))
        } else {
            Line::from(Span::styled(notice.text.clone(), theme.fg(Color::Green)))
        }
    } else {
        let mut spans = Vec::new();
        let mut used = 0;
        if !state.filter.is_empty() {
            let f = format!("filter \"{}\" (Esc clears) | ", state.filter);
            used = f.chars().count();
            spans.push(Span::styled(f, theme.fg(Color::Yellow)));
        }
        let room = width.saturating_sub(used);
        let hint = HINTS
            .iter()
            .find(|h| h.chars().count() <= room)
            .copied()
            .unwrap_or("");
        spans.push(Span::styled(hint, theme.dim()));
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A rectangle of at most `width` x `height`, centred in `area`.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn popup<'a>(title: &'a str, style: Style) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .border_style(style)
        .title(Span::styled(title, style.add_modifier(Modifier::BOLD)))
}

fn text_height(lines: &[String], inner_width: u16) -> u16 {
    let w = usize::from(inner_width.max(1));
    let rows: usize = lines
        .iter()
        .map(|l| l.chars().count().max(1).div_ceil(w))
        .sum();
    u16::try_from(rows).unwrap_or(u16::MAX)
}

fn render_overlay(state: &State, overlay: &Overlay, frame: &mut Frame, area: Rect, theme: &Theme) {
    match overlay {
        Overlay::ChooseReload { cursor } => {
            render_choose_reload(state, *cursor, frame, area, theme);
        }
        Overlay::Help => {
            let mut lines: Vec<Line> = KEYS
                .iter()
                .map(|(keys, what)| {
                    Line::from(vec![
                        Span::styled(
                            format!(" {keys:<16}"),
                            Style::new().add_modifier(Modifier::BOLD),
                        ),
                        Span::raw(format!(" {what}")),
                    ])
                })
                .collect();
            lines.push(Line::raw(""));
            lines.push(Line::styled(" Esc or ? closes this help", theme.dim()));
            let height = u16::try_from(lines.len()).unwrap_or(u16::MAX) + 2;
            let rect = centered(area, 60, height);
            frame.render_widget(Clear, rect);
            frame.render_widget(
                Paragraph::new(Text::from(lines))
                    .block(popup(" Help: keys ", theme.fg(Color::Cyan))),
                rect,
            );
        }
        Overlay::ConfirmRevoke { host, addr, door } => {
            let on = if state.is_fleet() {
                format!(" on {}", visible(state.host_name(*host)))
            } else {
                String::new()
            };
            let question = format!("Revoke {addr} ({door}){on}? y/n");
            let hint = "y revokes, n or Esc cancels";
            let width =
                u16::try_from(question.chars().count().max(hint.len()) + 4).unwrap_or(u16::MAX);
            let rect = centered(area, width, 4);
            frame.render_widget(Clear, rect);
            frame.render_widget(
                Paragraph::new(vec![
                    Line::styled(
                        format!(" {question}"),
                        Style::new().add_modifier(Modifier::BOLD),
                    ),
                    Line::styled(format!(" {hint}"), theme.dim()),
                ])
                .block(popup(" Revoke ", theme.fg(Color::LightRed))),
                rect,
            );
        }
        Overlay::ReloadFailed { errors } => {
            let mut lines = errors.clone();
            lines.push(String::new());
            lines.push("The old configuration stays in force. Esc closes.".to_string());
            message_popup(" Reload failed ", &lines, theme.error(), frame, area);
        }
        Overlay::ReloadWarnings { warnings } => {
            let mut lines = warnings.clone();
            lines.push(String::new());
            lines.push("The new configuration is in force. Esc closes.".to_string());
            message_popup(
                " Reloaded, with warnings ",
                &lines,
                theme.fg(Color::Yellow),
                frame,
                area,
            );
        }
    }
}

fn message_popup(title: &str, lines: &[String], style: Style, frame: &mut Frame, area: Rect) {
    let width = area.width.saturating_sub(4).min(76);
    let height = text_height(lines, width.saturating_sub(2)) + 2;
    let rect = centered(area, width, height);
    let text: Vec<Line> = lines.iter().map(|l| Line::raw(l.clone())).collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(popup(title, style)),
        rect,
    );
}

#[cfg(test)]
mod tests;
