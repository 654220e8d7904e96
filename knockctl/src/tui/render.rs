//! Drawing: a pure function of the state and the time. Every colour has a text twin (a
//! marker, a label, a border weight), so the screen reads the same with NO_COLOR.

use chrono::{DateTime, FixedOffset};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, BorderType, Borders, Cell, Clear, HighlightSpacing, List, ListItem, ListState,
    Paragraph, Row, Table, TableState, Wrap,
};
use ratatui::Frame;

use crate::ctl::output::{format_clock, format_duration_ms, format_duration_secs, visible};

use super::input::KEYS;
use super::state::{AttemptEnd, GrantEnd, Link, LogKind, Overlay, Pane, State};

/// Cells of the text progress bar.
const BAR: usize = 10;
/// Grants show when they opened from this width on.
const WIDE_GRANTS: u16 = 100;
/// Doors show their action from this width on.
const WIDE_DOORS: u16 = 110;

/// Draws the whole dashboard for the moment `now` (Unix ms).
pub fn render(state: &State, frame: &mut Frame, now: i64) {
    let theme = Theme { color: state.color };
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_header(state, frame, header, now, &theme);
    let (panes, shared) = body_layout(state, body);
    for (pane, area) in panes {
        match pane {
            Pane::Attempts => render_attempts(state, frame, area, now, &theme),
            Pane::Grants => render_grants(state, frame, area, now, &theme),
            Pane::Log => render_log(state, frame, area, shared, &theme),
            Pane::Doors => render_doors(state, frame, area, shared, &theme),
        }
    }
    render_footer(state, frame, footer, &theme);
    if let Some(overlay) = &state.overlay {
        render_overlay(overlay, frame, body, &theme);
    }
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

fn clock(state: &State, at_ms: i64) -> String {
    DateTime::from_timestamp_millis(at_ms).map_or_else(
        || "??:??:??".to_string(),
        |t| t.with_timezone(&state.tz).format("%H:%M:%S").to_string(),
    )
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

fn ms_between(from: i64, to: i64) -> u64 {
    u64::try_from((to - from).max(0)).unwrap_or(0)
}

fn render_header(state: &State, frame: &mut Frame, area: Rect, now: i64, theme: &Theme) {
    let [top, bottom] = Layout::vertical([Constraint::Length(1); 2]).areas(area);
    let version = state.daemon_version.as_deref().unwrap_or("?");
    let mut left = vec![Span::styled(
        format!("knockd {version}"),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if let Some(status) = &state.status {
        let interfaces = if status.interfaces.is_empty() {
            "no interface".to_string()
        } else {
            status.interfaces.join(",")
        };
        left.push(Span::raw(format!(" on {interfaces}")));
        let up = match state.link {
            Link::Connected => state.uptime_secs(now),
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
    }
    let link = match &state.link {
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

    let line = match &state.link {
        Link::Disconnected {
            reason,
            retry_at_ms,
        } => {
            let secs = secs_left(*retry_at_ms, now);
            let when = if secs == 0 {
                "retrying now".to_string()
            } else {
                format!("retrying in {secs}s")
            };
            Line::from(vec![
                Span::styled(format!("disconnected, {when}"), theme.error()),
                Span::raw(format!(": {reason}")),
            ])
        }
        _ => {
            let (packets, opens, resets, timeouts) = state.status.as_ref().map_or(
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
    let text = match state.link {
        Link::Connected => what,
        _ => "waiting for knockd",
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

fn header_row(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.iter().copied().map(Cell::from))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
}

fn bar(stage: u32, of: u32) -> String {
    let filled = if of == 0 {
        0
    } else {
        (stage.min(of) as usize * BAR) / of as usize
    };
    format!("{}{}", "█".repeat(filled), "░".repeat(BAR - filled))
}

fn render_attempts(state: &State, frame: &mut Frame, area: Rect, now: i64, theme: &Theme) {
    let rows = state.visible_attempts();
    let title = format!(" 1 Attempts ({}) ", rows.len());
    let block = pane_block(state, Pane::Attempts, title, theme);
    if rows.is_empty() {
        frame.render_widget(
            empty_text(state, "no knock sequences in progress", theme).block(block),
            area,
        );
        return;
    }
    let table_rows = rows.iter().map(|a| {
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
        Row::new(vec![
            Cell::from(a.addr.to_string()),
            Cell::from(visible(&a.door).into_owned()),
            Cell::from(format!("{}/{}", a.stage, a.of)),
            Cell::from(bar(a.stage, a.of)).style(if a.ended.is_some() {
                style
            } else {
                theme.fg(Color::Cyan)
            }),
            Cell::from(age),
            Cell::from(left),
        ])
        .style(style)
    });
    let table = Table::new(
        table_rows,
        [
            Constraint::Min(15),
            Constraint::Length(14),
            Constraint::Length(5),
            Constraint::Length(BAR as u16),
            Constraint::Length(6),
            Constraint::Length(7),
        ],
    )
    .header(header_row(&[
        "SOURCE", "DOOR", "STAGE", "PROGRESS", "AGE", "LEFT",
    ]))
    .block(block)
    .row_highlight_style(highlight())
    .highlight_symbol("> ")
    .highlight_spacing(HighlightSpacing::Always);
    let mut table_state =
        TableState::default().with_selected(selection_state(state, Pane::Attempts));
    frame.render_stateful_widget(table, area, &mut table_state);
}

fn render_grants(state: &State, frame: &mut Frame, area: Rect, now: i64, theme: &Theme) {
    let rows = state.visible_grants();
    let title = format!(" 2 Grants ({}) ", rows.len());
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
            Some(ms) => format!(
                "kernel, {} left",
                crate::ctl::output::format_remaining(Some(ms))
            ),
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
            &["ADDRESS", "DOOR", "OPENED", "AT", "LEFT", "CLOSES"],
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
            &["ADDRESS", "DOOR", "OPENED", "LEFT", "CLOSES"],
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
        _ => format!(" 4 Doors ({})", state.visible_doors().len()),
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

fn render_log(state: &State, frame: &mut Frame, area: Rect, shared: bool, theme: &Theme) {
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
    let items: Vec<ListItem> = entries
        .iter()
        .map(|e| {
            let style = theme.log(e.kind);
            ListItem::new(Line::from(vec![
                Span::styled(clock(state, e.at_ms), theme.dim()),
                Span::raw(" "),
                Span::styled(
                    format!("{:<7}", e.kind.tag()),
                    style.add_modifier(Modifier::BOLD),
                ),
                Span::raw(" "),
                Span::styled(visible(&e.text).into_owned(), style),
            ]))
        })
        .collect();
    let list = List::new(items)
        .block(block)
        .highlight_style(highlight())
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut list_state = ListState::default().with_selected(selection_state(state, Pane::Log));
    frame.render_stateful_widget(list, area, &mut list_state);
}

fn protocols(sequence: &[String]) -> String {
    let mut protos: Vec<&str> = Vec::new();
    for step in sequence {
        let proto = step.rsplit_once(':').map_or("tcp", |(_, p)| p);
        if !protos.contains(&proto) {
            protos.push(proto);
        }
    }
    if protos.is_empty() {
        "-".to_string()
    } else {
        protos.join(",")
    }
}

fn render_doors(state: &State, frame: &mut Frame, area: Rect, shared: bool, theme: &Theme) {
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
        let sequence = if d.sequence.is_empty() {
            "(used up)".to_string()
        } else {
            d.sequence.join(" ")
        };
        let once = match (d.one_time, d.sequence.is_empty()) {
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
            Cell::from(protocols(&d.sequence)),
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

fn render_overlay(overlay: &Overlay, frame: &mut Frame, area: Rect, theme: &Theme) {
    match overlay {
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
        Overlay::ConfirmRevoke { addr, door } => {
            let question = format!("Revoke {addr} ({door})? y/n");
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
mod tests {
    use super::*;
    use crate::tui::fixtures::*;
    use knock_ipc::{Request, Response};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn draw(state: &State, width: u16, height: u16, now: i64) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("backend");
        terminal
            .draw(|frame| render(state, frame, now))
            .expect("draw");
        terminal
    }

    fn lines(terminal: &Terminal<TestBackend>) -> Vec<String> {
        let buffer = terminal.backend().buffer();
        let width = usize::from(buffer.area.width);
        buffer
            .content()
            .chunks(width)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
            .collect()
    }

    fn screen(terminal: &Terminal<TestBackend>) -> String {
        lines(terminal)
            .iter()
            .map(|l| l.trim_end())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The lines of the pane whose top border carries `title`.
    fn pane<'a>(lines: &'a [String], title: &str) -> &'a [String] {
        let start = lines
            .iter()
            .position(|l| l.contains(title))
            .unwrap_or_else(|| panic!("no pane {title:?}"));
        let len = lines[start + 1..]
            .iter()
            .position(|l| l.starts_with('└') || l.starts_with('┗'))
            .unwrap_or(lines.len() - start - 1);
        &lines[start..start + len + 2]
    }

    fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no line with {needle:?}"))
    }

    #[test]
    fn nftables_backend_in_the_header_and_kernel_time_in_grants() {
        let mut s = connected();
        let mut status = status();
        status.firewall = "nftables".into();
        s.on_response(&Request::Status, Response::Status { status }, T0);
        let mut g = grant("10.0.0.12", "openSSH", T0 - 2_000, Some(28_000));
        g.closes = "kernel timeout (nftables)".into();
        g.kernel_expires_in_ms = Some(28_000);
        s.on_response(&Request::Grants, Response::Grants { grants: vec![g] }, T0);
        let t = draw(&s, 120, 24, T0);
        let l = lines(&t);
        assert!(l[0].contains("doors 3  nftables"), "{}", l[0]);
        let row = line_with(pane(&l, "2 Grants"), "10.0.0.12");
        assert!(row.contains("kernel, 28s left"), "{row}");
        // The default backend goes unsaid.
        let plain = lines(&draw(&connected(), 120, 24, T0));
        assert!(!plain[0].contains("iptables"), "{}", plain[0]);
    }

    #[test]
    fn empty_daemon() {
        let t = draw(&connected(), 80, 24, T0);
        insta::assert_snapshot!(screen(&t));
    }

    #[test]
    fn attempts_in_progress_80x24() {
        let t = draw(&busy(), 80, 24, T0);
        let l = lines(&t);
        // What the end-to-end test greps for: door and n/N on the source's row.
        let attempts = pane(&l, "1 Attempts");
        let row = line_with(attempts, "10.0.0.12");
        assert!(row.contains("openSSH") && row.contains("2/3"), "{row}");
        assert!(line_with(attempts, "192.0.2.7").contains("RESET"));
        assert!(line_with(attempts, "10.0.0.99 ").contains("OPEN"));
        let grants = pane(&l, "2 Grants");
        assert!(line_with(grants, "10.0.0.99 ").contains("openSSH"));
        assert!(line_with(grants, "10.0.0.7 ").contains("vault"));
        insta::assert_snapshot!(screen(&t));
    }

    #[test]
    fn countdowns_move_with_now() {
        let s = busy();
        let a = lines(&draw(&s, 80, 24, T0));
        let b = lines(&draw(&s, 80, 24, T0 + 1_000));
        let grant = |l: &[String]| line_with(pane(l, "2 Grants"), "10.0.0.99 ").to_string();
        assert!(grant(&a).contains(" 30s "), "{}", grant(&a));
        assert!(grant(&b).contains(" 29s "), "{}", grant(&b));
        assert!(line_with(pane(&b, "2 Grants"), "10.0.0.7 ").contains(" never "));
        let attempt = |l: &[String]| line_with(pane(l, "1 Attempts"), "10.0.0.12").to_string();
        assert!(attempt(&a).contains("1.5s   3.5s"), "{}", attempt(&a));
        assert!(attempt(&b).contains("2.5s   2.5s"), "{}", attempt(&b));
    }

    #[test]
    fn grants_focused_with_selection() {
        let mut s = busy();
        s.focus = Pane::Grants;
        s.selected[Pane::Grants.index()] = 1;
        let t = draw(&s, 80, 24, T0 + 5_000);
        let l = lines(&t);
        let row = line_with(&l, "> 10.0.0.99");
        assert!(row.contains("openSSH") && row.contains("25s"), "{row}");
        assert!(line_with(&l, "10.0.0.7 ").contains("vault"));
        insta::assert_snapshot!(screen(&t));
    }

    #[test]
    fn help_overlay() {
        let mut s = busy();
        s.overlay = Some(Overlay::Help);
        let t = draw(&s, 80, 24, T0);
        let text = screen(&t);
        for (keys, what) in KEYS {
            assert!(text.contains(keys) && text.contains(what), "{keys}");
        }
        insta::assert_snapshot!(text);
    }

    #[test]
    fn revoke_confirmation() {
        let mut s = busy();
        s.focus = Pane::Grants;
        s.overlay = Some(Overlay::ConfirmRevoke {
            addr: ip("10.0.0.12"),
            door: "openSSH".into(),
        });
        let t = draw(&s, 80, 24, T0);
        let text = screen(&t);
        assert!(text.contains("Revoke 10.0.0.12 (openSSH)? y/n"));
        insta::assert_snapshot!(text);
    }

    #[test]
    fn revoke_result_in_the_status_line() {
        let mut s = busy();
        s.on_response(
            &Request::Revoke {
                addr: ip("10.0.0.99"),
                door: Some("openSSH".into()),
            },
            Response::Revoked {
                grants: vec![grant("10.0.0.99", "openSSH", T0, Some(20_000))],
            },
            T0,
        );
        let l = lines(&draw(&s, 80, 24, T0));
        assert!(
            l[23].starts_with("revoked 10.0.0.99 (openSSH)"),
            "{}",
            l[23]
        );
        assert!(line_with(&l, "REVOKED").contains("10.0.0.99"));
    }

    #[test]
    fn reload_errors_popup() {
        let mut s = busy();
        s.on_response(
            &Request::Reload,
            Response::ReloadFailed {
                errors: vec![
                    "/etc/knockd.conf:12: unknown protocol 'icmp' in sequence (use tcp or udp)"
                        .into(),
                    "/etc/knockd.conf:20: door [vault]: seq_timeout missing a number".into(),
                ],
            },
            T0,
        );
        let t = draw(&s, 80, 24, T0);
        let text = screen(&t);
        assert!(text.contains("/etc/knockd.conf:12"));
        assert!(text.contains("/etc/knockd.conf:20"));
        insta::assert_snapshot!(text);
    }

    #[test]
    fn disconnected() {
        let mut s = busy();
        s.on_disconnected(
            "connection to knockd failed: connection closed".into(),
            T0 + 3_000,
            T0,
        );
        let t = draw(&s, 80, 24, T0);
        let text = screen(&t);
        assert!(text.contains("disconnected, retrying in 3s"));
        assert!(text.contains("[DISCONNECTED]"));
        insta::assert_snapshot!(text);
    }

    #[test]
    fn filter_being_typed() {
        let mut s = busy();
        s.filter = "vault".into();
        s.editing_filter = true;
        let t = draw(&s, 80, 24, T0);
        let l = lines(&t);
        assert!(l[23].starts_with("filter: vault_"), "{}", l[23]);
        assert!(!l.iter().any(|row| row.contains("10.0.0.12")));
    }

    #[test]
    fn doors_in_the_bottom_pane() {
        let mut s = busy();
        s.focus = Pane::Doors;
        s.bottom = Pane::Doors;
        let t = draw(&s, 80, 24, T0);
        let l = lines(&t);
        let doors = pane(&l, "4 Doors");
        let row = line_with(doors, "openSSH ");
        assert!(row.contains("7000:tcp 8000:tcp 9000:tcp"), "{row}");
        assert!(line_with(doors, "backup").contains("used"));
        insta::assert_snapshot!(screen(&t));
    }

    #[test]
    fn tall_screen_shows_all_four_panes() {
        let t = draw(&busy(), 100, 40, T0);
        let text = screen(&t);
        for title in ["1 Attempts", "2 Grants", "3 Events", "4 Doors"] {
            assert!(text.contains(title), "{title}");
        }
        insta::assert_snapshot!(text);
    }

    #[test]
    fn wide_screen_puts_the_log_beside() {
        let t = draw(&busy(), 160, 30, T0);
        let text = screen(&t);
        for title in ["1 Attempts", "2 Grants", "3 Events", "4 Doors"] {
            assert!(text.contains(title), "{title}");
        }
        insta::assert_snapshot!(text);
    }

    #[test]
    fn tiny_screens_do_not_panic() {
        let mut s = busy();
        for overlay in [
            None,
            Some(Overlay::Help),
            Some(Overlay::ConfirmRevoke {
                addr: ip("fd99:77::2"),
                door: "vault".into(),
            }),
            Some(Overlay::ReloadFailed {
                errors: vec!["x".repeat(300)],
            }),
        ] {
            s.overlay = overlay;
            for (w, h) in [(1, 1), (10, 5), (40, 10), (80, 3), (20, 60)] {
                draw(&s, w, h, T0);
            }
        }
    }

    #[test]
    fn no_color_uses_no_colours_but_keeps_the_markers() {
        let mut s = busy();
        s.color = false;
        s.notice = Some(crate::tui::state::Notice {
            text: "boom".into(),
            error: true,
            at_ms: None,
        });
        let t = draw(&s, 80, 24, T0);
        for cell in t.backend().buffer().content() {
            assert_eq!(cell.fg, Color::Reset, "{:?}", cell.symbol());
            assert_eq!(cell.bg, Color::Reset);
        }
        let l = lines(&t);
        assert!(line_with(&l, "192.0.2.7").contains("RESET"));
        assert!(l[23].starts_with("! boom"));
        assert!(line_with(&l, "stage 3/3").contains("STAGE"));
    }
}
