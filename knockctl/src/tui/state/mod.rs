//! Everything the dashboard shows, and the pure functions that change it.
//!
//! One file per pane (`attempts`, `grants`, `events`, `doors`): its rows and how events and
//! lists change them; `hosts`: each host's link and status (one host, or many with `-H`:
//! rows carry their host's index); `answers`: what replies change. This file
//! holds what they share: the [`State`], the event dispatch, panes, selection, filter,
//! notices and overlays.
//!
//! Time is an input: every function that needs it takes `now` in Unix milliseconds, and
//! event times come from the events themselves. Nothing here reads the clock or does I/O.

use std::collections::VecDeque;
use std::net::IpAddr;

use chrono::FixedOffset;
use knock_ipc::{Event, EventKind, Request};

mod answers;
mod attempts;
mod doors;
mod events;
mod grants;
mod hosts;

pub use attempts::{Attempt, AttemptEnd};
pub use events::{LogEntry, LogKind};
pub use grants::{Grant, GrantEnd};
pub use hosts::HostView;

use crate::present::{format_duration_secs, format_remaining};

/// How long a finished attempt or a closed grant stays on screen, marked.
pub const LINGER_MS: i64 = 2_000;
/// A row touched by an event this recently is newer than a list the daemon sent: a list
/// that lacks it does not end it (events and answers travel on different connections).
pub const GRACE_MS: i64 = 500;
/// Window over which knocks/s is averaged.
pub const RATE_WINDOW_MS: i64 = 5_000;
/// Event log length kept in memory.
pub const LOG_CAP: usize = 1_000;
/// How long a notice (revoke result, reload result) stays in the footer.
pub const NOTICE_MS: i64 = 8_000;

/// The four panes, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Attempts,
    Grants,
    Log,
    Doors,
}

impl Pane {
    pub const ALL: [Pane; 4] = [Pane::Attempts, Pane::Grants, Pane::Log, Pane::Doors];

    pub fn index(self) -> usize {
        match self {
            Pane::Attempts => 0,
            Pane::Grants => 1,
            Pane::Log => 2,
            Pane::Doors => 3,
        }
    }

    pub fn next(self) -> Pane {
        Pane::ALL[(self.index() + 1) % Pane::ALL.len()]
    }

    pub fn prev(self) -> Pane {
        Pane::ALL[(self.index() + Pane::ALL.len() - 1) % Pane::ALL.len()]
    }

    pub fn title(self) -> &'static str {
        match self {
            Pane::Attempts => "Attempts",
            Pane::Grants => "Grants",
            Pane::Log => "Events",
            Pane::Doors => "Doors",
        }
    }
}

/// The link to knockd.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Connecting,
    Connected,
    /// Lost (or never had); the next try is at `retry_at_ms`.
    Disconnected {
        reason: String,
        retry_at_ms: i64,
    },
}

/// A popup over the panes.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    Help,
    /// `r`: revoke `addr`'s grant of `door` on host `host` (y/n).
    ConfirmRevoke {
        host: usize,
        addr: IpAddr,
        door: String,
    },
    /// `R` with many hosts: which to reload. `cursor` 0 is every host, `i + 1` host `i`.
    ChooseReload {
        cursor: usize,
    },
    /// `R` failed: the errors, each naming its file:line.
    ReloadFailed {
        errors: Vec<String>,
    },
    /// `R` worked but the configuration has warnings.
    ReloadWarnings {
        warnings: Vec<String>,
    },
}

/// A one-line message in the footer.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
    /// Set when the notice first meets a clock (a key press has none).
    pub at_ms: Option<i64>,
}

/// Which lists to ask knockd for again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refresh {
    pub status: bool,
    pub attempts: bool,
    pub grants: bool,
    pub doors: bool,
}

impl Refresh {
    pub const ALL: Refresh = Refresh {
        status: true,
        attempts: true,
        grants: true,
        doors: true,
    };
    /// What the 1 s tick asks for: counters, and the lists whose rows can end without an
    /// event reaching us.
    pub const TICK: Refresh = Refresh {
        status: true,
        attempts: true,
        grants: true,
        doors: false,
    };

    pub fn union(self, other: Refresh) -> Refresh {
        Refresh {
            status: self.status || other.status,
            attempts: self.attempts || other.attempts,
            grants: self.grants || other.grants,
            doors: self.doors || other.doors,
        }
    }

    pub fn is_empty(self) -> bool {
        self == Refresh::default()
    }

    /// The requests, in a fixed order (doors first: attempts need their timeouts).
    pub fn requests(self) -> Vec<Request> {
        let mut out = Vec::new();
        if self.doors {
            out.push(Request::Doors);
        }
        if self.status {
            out.push(Request::Status);
        }
        if self.attempts {
            out.push(Request::Attempts);
        }
        if self.grants {
            out.push(Request::Grants);
        }
        out
    }
}

/// Which lists an event makes stale.
pub fn refresh_for(kind: &EventKind) -> Refresh {
    let none = Refresh::default();
    match kind {
        EventKind::Stage { .. }
        | EventKind::Reset { .. }
        | EventKind::Timeout { .. }
        | EventKind::Open { .. } => Refresh {
            status: true,
            attempts: true,
            ..none
        },
        EventKind::GrantAdded { .. }
        | EventKind::GrantRefreshed { .. }
        | EventKind::GrantRevoked { .. }
        | EventKind::GrantExpired { .. }
        | EventKind::GrantClosed { .. } => Refresh {
            status: true,
            grants: true,
            ..none
        },
        EventKind::CommandFailed { .. } => Refresh {
            status: true,
            ..none
        },
        EventKind::ReloadOk { .. } | EventKind::ReloadFailed { .. } | EventKind::Lagged { .. } => {
            Refresh::ALL
        }
    }
}

/// The whole dashboard.
#[derive(Debug, Clone)]
pub struct State {
    /// Every knockd shown; one for `knockctl tui`, more with `-H`/`--hosts`. Never empty.
    pub hosts: Vec<HostView>,
    pub attempts: Vec<Attempt>,
    pub grants: Vec<Grant>,
    /// Newest first.
    pub log: VecDeque<LogEntry>,
    /// Entries that arrived while the log was paused, newest first.
    pub held: VecDeque<LogEntry>,
    pub paused: bool,
    /// Times of recent stage events, for knocks/s.
    pub stage_times: VecDeque<i64>,
    pub focus: Pane,
    /// Log or Doors: which one the bottom pane shows when there is room for only three.
    pub bottom: Pane,
    /// Selected row per pane, by [`Pane::index`].
    pub selected: [usize; 4],
    pub filter: String,
    pub editing_filter: bool,
    pub overlay: Option<Overlay>,
    pub notice: Option<Notice>,
    /// False when NO_COLOR is set: styles keep bold/reverse, lose colours.
    pub color: bool,
    /// Time zone for clock times.
    pub tz: FixedOffset,
}

impl State {
    /// One knockd: the dashboard as `knockctl tui` shows it (no HOST column).
    pub fn new(color: bool, tz: FixedOffset) -> State {
        State::fleet(vec![String::new()], color, tz)
    }

    /// Many knockd, by name (a HOST column, a line per host in the header). With one name,
    /// the same as [`State::new`].
    pub fn fleet(names: Vec<String>, color: bool, tz: FixedOffset) -> State {
        let mut hosts: Vec<HostView> = names.into_iter().map(HostView::new).collect();
        if hosts.is_empty() {
            hosts.push(HostView::new(String::new()));
        }
        State {
            hosts,
            attempts: Vec::new(),
            grants: Vec::new(),
            log: VecDeque::new(),
            held: VecDeque::new(),
            paused: false,
            stage_times: VecDeque::new(),
            focus: Pane::Attempts,
            bottom: Pane::Log,
            selected: [0; 4],
            filter: String::new(),
            editing_filter: false,
            overlay: None,
            notice: None,
            color,
            tz,
        }
    }

    /// A live event from host `host`'s subscription.
    pub fn host_event(&mut self, host: usize, event: Event, now: i64) {
        if host >= self.hosts.len() {
            return;
        }
        let at = event.at_unix_ms;
        match event.kind {
            EventKind::Stage {
                addr,
                door,
                stage,
                of,
            } => {
                self.stage_times.push_back(at);
                self.push_log(
                    host,
                    at,
                    LogKind::Stage,
                    format!("{addr} {door} stage {stage}/{of}"),
                );
                self.on_stage(host, addr, door, stage, of, at);
            }
            EventKind::Reset { addr, door, stage } => {
                self.push_log(
                    host,
                    at,
                    LogKind::Reset,
                    format!("{addr} {door} reset at stage {stage} (wrong knock)"),
                );
                self.end_attempt(host, addr, &door, Some(stage), AttemptEnd::Reset, at);
            }
            EventKind::Timeout { addr, door, stage } => {
                self.push_log(
                    host,
                    at,
                    LogKind::Timeout,
                    format!("{addr} {door} timed out at stage {stage}"),
                );
                self.end_attempt(host, addr, &door, Some(stage), AttemptEnd::Timeout, at);
            }
            EventKind::Open { addr, door } => {
                self.push_log(host, at, LogKind::Open, format!("{addr} {door} OPEN"));
                self.end_attempt(host, addr, &door, None, AttemptEnd::Open, at);
            }
            EventKind::GrantAdded { grant } => {
                let text = match grant.expires_in_ms {
                    Some(ms) => format!(
                        "{} {} granted, expires in {}",
                        grant.addr,
                        grant.door,
                        format_duration_secs(ms.div_ceil(1000))
                    ),
                    None => format!("{} {} granted until revoked", grant.addr, grant.door),
                };
                self.push_log(host, at, LogKind::Grant, text);
                self.upsert_grant(host, grant, at, at);
            }
            EventKind::GrantRefreshed { grant } => {
                self.push_log(
                    host,
                    at,
                    LogKind::Refresh,
                    format!(
                        "{} {} grant refreshed, expires in {}",
                        grant.addr,
                        grant.door,
                        format_remaining(grant.expires_in_ms.map(|ms| ms.div_ceil(1000) * 1000))
                    ),
                );
                self.upsert_grant(host, grant, at, at);
            }
            EventKind::GrantRevoked { grant } => {
                self.push_log(
                    host,
                    at,
                    LogKind::Revoke,
                    format!("{} {} grant revoked", grant.addr, grant.door),
                );
                self.end_grant(host, grant, GrantEnd::Revoked, at);
            }
            EventKind::GrantExpired { grant } => {
                self.push_log(
                    host,
                    at,
                    LogKind::Expire,
                    format!("{} {} grant expired", grant.addr, grant.door),
                );
                self.end_grant(host, grant, GrantEnd::Expired, at);
            }
            EventKind::GrantClosed { grant, by_door } => {
                self.push_log(
                    host,
                    at,
                    LogKind::Close,
                    format!(
                        "{} {} grant closed by door {by_door}",
                        grant.addr, grant.door
                    ),
                );
                self.end_grant(host, grant, GrantEnd::Closed, at);
            }
            EventKind::CommandFailed { door, message } => {
                self.push_log(
                    host,
                    at,
                    LogKind::Error,
                    format!("{door} command failed: {message}"),
                );
            }
            EventKind::ReloadOk { doors, warnings } => {
                let mut text = format!("configuration reloaded: {doors} doors");
                if !warnings.is_empty() {
                    text.push_str(&format!(", warnings: {}", warnings.join("; ")));
                }
                self.push_log(host, at, LogKind::Reload, text);
            }
            EventKind::ReloadFailed { errors } => {
                self.push_log(
                    host,
                    at,
                    LogKind::Error,
                    format!("reload failed: {}", errors.join("; ")),
                );
            }
            EventKind::Lagged { missed } => {
                self.push_log(
                    host,
                    now,
                    LogKind::Error,
                    format!("missed {missed} events (the dashboard fell behind)"),
                );
            }
        }
        self.prune(now);
    }

    /// The 1 s tick: drop rows that have lingered long enough, age out notices.
    pub fn on_tick(&mut self, now: i64) {
        self.prune(now);
        if let Some(notice) = &mut self.notice {
            match notice.at_ms {
                None => notice.at_ms = Some(now),
                Some(at) if now - at >= NOTICE_MS => self.notice = None,
                Some(_) => {}
            }
        }
    }

    /// Knocks per second over the last [`RATE_WINDOW_MS`].
    pub fn knock_rate(&self, now: i64) -> f64 {
        let n = self
            .stage_times
            .iter()
            .filter(|&&t| t > now - RATE_WINDOW_MS && t <= now)
            .count();
        n as f64 * 1000.0 / RATE_WINDOW_MS as f64
    }

    pub fn set_notice(&mut self, text: String, error: bool, at_ms: Option<i64>) {
        self.notice = Some(Notice { text, error, at_ms });
    }

    // --- visible rows (after the filter), shared by render and the keys ---

    fn matches(&self, host: usize, addr: &IpAddr, door: &str) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        addr.to_string().contains(&needle)
            || door.to_lowercase().contains(&needle)
            || (self.is_fleet() && self.host_name(host).to_lowercase().contains(&needle))
    }

    /// Rows in a pane, after the filter.
    pub fn pane_len(&self, pane: Pane) -> usize {
        match pane {
            Pane::Attempts => self.visible_attempts().len(),
            Pane::Grants => self.visible_grants().len(),
            Pane::Log => self.visible_log().len(),
            Pane::Doors => self.visible_doors().len(),
        }
    }

    /// The selected row of a pane, clamped to its length (None when empty).
    pub fn selection(&self, pane: Pane) -> Option<usize> {
        let len = self.pane_len(pane);
        (len > 0).then(|| self.selected[pane.index()].min(len - 1))
    }

    // --- internals ---

    fn prune(&mut self, now: i64) {
        self.attempts
            .retain(|a| a.ended.is_none_or(|(_, at)| now - at < LINGER_MS));
        self.grants
            .retain(|g| g.ended.is_none_or(|(_, at)| now - at < LINGER_MS));
        while self
            .stage_times
            .front()
            .is_some_and(|&t| t <= now - RATE_WINDOW_MS)
        {
            self.stage_times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
