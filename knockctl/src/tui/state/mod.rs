//! Everything the dashboard shows, and the pure functions that change it.
//!
//! One file per pane ([`attempts`], [`grants`], [`events`], [`doors`]): its rows and how
//! events and lists change them. This file holds what they share: the [`State`], the event
//! and response dispatch, panes, selection, filter, notices and overlays.
//!
//! Time is an input: every function that needs it takes `now` in Unix milliseconds, and
//! event times come from the events themselves. Nothing here reads the clock or does I/O.

use std::collections::VecDeque;
use std::net::IpAddr;

use chrono::FixedOffset;
use knock_ipc::{DoorInfo, Event, EventKind, Request, Response, Status};

mod attempts;
mod doors;
mod events;
mod grants;

pub use attempts::{Attempt, AttemptEnd};
pub use events::{LogEntry, LogKind};
pub use grants::{Grant, GrantEnd};

use crate::present::{format_duration_secs, format_remaining, no_grant_message};

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
    ConfirmRevoke {
        addr: IpAddr,
        door: String,
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
    pub link: Link,
    pub daemon_version: Option<String>,
    pub status: Option<Status>,
    /// When `status` arrived (uptime keeps counting from there).
    pub status_at_ms: i64,
    pub attempts: Vec<Attempt>,
    pub grants: Vec<Grant>,
    /// Attempts and grants knockd did not list (it sends the oldest `LIST_CAP` and the total).
    pub attempts_unlisted: u64,
    pub grants_unlisted: u64,
    pub doors: Vec<DoorInfo>,
    /// When `doors` arrived (TOTP doors' countdowns run from there).
    pub doors_at_ms: i64,
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
    /// Since when the link is down: grants and doors on screen are what knockd said before.
    pub stale_since_ms: Option<i64>,
}

impl State {
    pub fn new(color: bool, tz: FixedOffset) -> State {
        State {
            link: Link::Connecting,
            daemon_version: None,
            status: None,
            status_at_ms: 0,
            attempts: Vec::new(),
            grants: Vec::new(),
            attempts_unlisted: 0,
            grants_unlisted: 0,
            doors: Vec::new(),
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
            stale_since_ms: None,
            doors_at_ms: 0,
        }
    }

    /// Both connections are up and the handshake is done.
    pub fn on_connected(&mut self, daemon_version: String, now: i64) {
        self.push_log(
            now,
            LogKind::Info,
            format!("connected to knockd {daemon_version}"),
        );
        self.daemon_version = Some(daemon_version);
        self.link = Link::Connected;
        self.stale_since_ms = None;
    }

    /// The link failed (or a retry failed); the next try is at `retry_at_ms`.
    pub fn on_disconnected(&mut self, reason: String, retry_at_ms: i64, now: i64) {
        let was = self.link.clone();
        match was {
            Link::Disconnected {
                reason: ref old, ..
            } if *old == reason => {}
            _ => self.push_log(now, LogKind::Error, format!("disconnected: {reason}")),
        }
        // Attempts live in the daemon's memory: whatever comes back starts afresh.
        self.attempts.clear();
        self.stale_since_ms.get_or_insert(now);
        self.link = Link::Disconnected {
            reason,
            retry_at_ms,
        };
    }

    /// A live event from the subscription.
    pub fn on_event(&mut self, event: Event, now: i64) {
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
                    at,
                    LogKind::Stage,
                    format!("{addr} {door} stage {stage}/{of}"),
                );
                self.on_stage(addr, door, stage, of, at);
            }
            EventKind::Reset { addr, door, stage } => {
                self.push_log(
                    at,
                    LogKind::Reset,
                    format!("{addr} {door} reset at stage {stage} (wrong knock)"),
                );
                self.end_attempt(addr, &door, Some(stage), AttemptEnd::Reset, at);
            }
            EventKind::Timeout { addr, door, stage } => {
                self.push_log(
                    at,
                    LogKind::Timeout,
                    format!("{addr} {door} timed out at stage {stage}"),
                );
                self.end_attempt(addr, &door, Some(stage), AttemptEnd::Timeout, at);
            }
            EventKind::Open { addr, door } => {
                self.push_log(at, LogKind::Open, format!("{addr} {door} OPEN"));
                self.end_attempt(addr, &door, None, AttemptEnd::Open, at);
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
                self.push_log(at, LogKind::Grant, text);
                self.upsert_grant(grant, at, at);
            }
            EventKind::GrantRefreshed { grant } => {
                self.push_log(
                    at,
                    LogKind::Refresh,
                    format!(
                        "{} {} grant refreshed, expires in {}",
                        grant.addr,
                        grant.door,
                        format_remaining(grant.expires_in_ms.map(|ms| ms.div_ceil(1000) * 1000))
                    ),
                );
                self.upsert_grant(grant, at, at);
            }
            EventKind::GrantRevoked { grant } => {
                self.push_log(
                    at,
                    LogKind::Revoke,
                    format!("{} {} grant revoked", grant.addr, grant.door),
                );
                self.end_grant(grant, GrantEnd::Revoked, at);
            }
            EventKind::GrantExpired { grant } => {
                self.push_log(
                    at,
                    LogKind::Expire,
                    format!("{} {} grant expired", grant.addr, grant.door),
                );
                self.end_grant(grant, GrantEnd::Expired, at);
            }
            EventKind::GrantClosed { grant, by_door } => {
                self.push_log(
                    at,
                    LogKind::Close,
                    format!(
                        "{} {} grant closed by door {by_door}",
                        grant.addr, grant.door
                    ),
                );
                self.end_grant(grant, GrantEnd::Closed, at);
            }
            EventKind::CommandFailed { door, message } => {
                self.push_log(
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
                self.push_log(at, LogKind::Reload, text);
            }
            EventKind::ReloadFailed { errors } => {
                self.push_log(
                    at,
                    LogKind::Error,
                    format!("reload failed: {}", errors.join("; ")),
                );
            }
            EventKind::Lagged { missed } => {
                self.push_log(
                    now,
                    LogKind::Error,
                    format!("missed {missed} events (the dashboard fell behind)"),
                );
            }
        }
        self.prune(now);
    }

    /// knockd's answer to `request`.
    pub fn on_response(&mut self, request: &Request, response: Response, now: i64) {
        match response {
            Response::Status { status } => {
                self.daemon_version = Some(status.daemon_version.clone());
                self.status = Some(status);
                self.status_at_ms = now;
            }
            Response::Attempts { attempts, total } => {
                self.attempts_unlisted = total.saturating_sub(attempts.len() as u64);
                self.merge_attempts(attempts, total, now);
            }
            Response::Grants { grants, total } => {
                self.grants_unlisted = total.saturating_sub(grants.len() as u64);
                self.merge_grants(grants, total, now);
            }
            Response::Doors { doors } => {
                self.doors = doors;
                self.doors_at_ms = now;
            }
            Response::Clients { .. } | Response::ClientRevoked { .. } => {}
            Response::Revoked { grants } => {
                if grants.is_empty() {
                    let (addr, door) = match request {
                        Request::Revoke { addr, door } => (Some(*addr), door.as_deref()),
                        _ => (None, None),
                    };
                    let text = match addr {
                        Some(addr) => no_grant_message(addr, door),
                        None => "nothing revoked".to_string(),
                    };
                    self.set_notice(text, true, Some(now));
                } else {
                    let names: Vec<String> = grants
                        .iter()
                        .map(|g| format!("{} ({})", g.addr, g.door))
                        .collect();
                    self.set_notice(format!("revoked {}", names.join(", ")), false, Some(now));
                    for grant in grants {
                        self.end_grant(grant, GrantEnd::Revoked, now);
                    }
                }
            }
            Response::Reloaded { warnings } => {
                if warnings.is_empty() {
                    self.set_notice("configuration reloaded".into(), false, Some(now));
                } else {
                    self.set_notice(
                        format!("configuration reloaded with {} warning(s)", warnings.len()),
                        false,
                        Some(now),
                    );
                    self.overlay = Some(Overlay::ReloadWarnings { warnings });
                }
            }
            Response::ReloadFailed { errors } => {
                self.set_notice(
                    "reload failed: the old configuration stays in force".into(),
                    true,
                    Some(now),
                );
                self.overlay = Some(Overlay::ReloadFailed { errors });
            }
            Response::Error { message } => {
                self.set_notice(
                    format!("knockd: {message} ({})", request.name()),
                    true,
                    Some(now),
                );
            }
            Response::Subscribed => {}
        }
        self.prune(now);
    }

    /// A command could not be carried out (not connected, no answer).
    pub fn on_command_failed(&mut self, request: &Request, reason: &str, now: i64) {
        self.set_notice(
            format!("{} failed: {reason}", request.name()),
            true,
            Some(now),
        );
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

    /// knockd's uptime now, counted on from the last status.
    pub fn uptime_secs(&self, now: i64) -> Option<u64> {
        let status = self.status.as_ref()?;
        let since = u64::try_from((now - self.status_at_ms).max(0) / 1000).unwrap_or(0);
        Some(status.uptime_secs + since)
    }

    pub fn set_notice(&mut self, text: String, error: bool, at_ms: Option<i64>) {
        self.notice = Some(Notice { text, error, at_ms });
    }

    // --- visible rows (after the filter), shared by render and the keys ---

    fn matches(&self, addr: &IpAddr, door: &str) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        addr.to_string().contains(&needle) || door.to_lowercase().contains(&needle)
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
