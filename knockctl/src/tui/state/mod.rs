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

/// One knockd: its link and what it said about itself. Rows (attempts, grants, log lines,
/// doors) name their host by its index in [`State::hosts`].
#[derive(Debug, Clone)]
pub struct HostView {
    /// What the HOST column and the header call it (empty with one host).
    pub name: String,
    pub link: Link,
    pub daemon_version: Option<String>,
    pub status: Option<Status>,
    /// When `status` arrived (uptime keeps counting from there).
    pub status_at_ms: i64,
    /// Attempts and grants knockd did not list (it sends the oldest `LIST_CAP` and the total).
    pub attempts_unlisted: u64,
    pub grants_unlisted: u64,
    pub doors: Vec<DoorInfo>,
    /// When `doors` arrived (TOTP doors' countdowns run from there).
    pub doors_at_ms: i64,
    /// Since when the link is down: its grants and doors on screen are what knockd said
    /// before.
    pub stale_since_ms: Option<i64>,
}

impl HostView {
    fn new(name: String) -> HostView {
        HostView {
            name,
            link: Link::Connecting,
            daemon_version: None,
            status: None,
            status_at_ms: 0,
            attempts_unlisted: 0,
            grants_unlisted: 0,
            doors: Vec::new(),
            doors_at_ms: 0,
            stale_since_ms: None,
        }
    }

    /// knockd's uptime now, counted on from the last status.
    pub fn uptime_secs(&self, now: i64) -> Option<u64> {
        let status = self.status.as_ref()?;
        let since = u64::try_from((now - self.status_at_ms).max(0) / 1000).unwrap_or(0);
        Some(status.uptime_secs + since)
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

    /// More than one host: rows carry a HOST column, the header a line per host.
    pub fn is_fleet(&self) -> bool {
        self.hosts.len() > 1
    }

    /// Host `host`'s name (empty for an unknown index).
    pub fn host_name(&self, host: usize) -> &str {
        self.hosts.get(host).map_or("", |h| h.name.as_str())
    }

    /// `name: ` before a message about one host of many; nothing with one host.
    pub fn host_prefix(&self, host: usize) -> String {
        if self.is_fleet() {
            format!("{}: ", crate::present::visible(self.host_name(host)))
        } else {
            String::new()
        }
    }

    /// Host `host`'s two connections are up and the handshake is done.
    pub fn host_connected(&mut self, host: usize, daemon_version: String, now: i64) {
        self.push_log(
            host,
            now,
            LogKind::Info,
            format!("connected to knockd {daemon_version}"),
        );
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        h.daemon_version = Some(daemon_version);
        h.link = Link::Connected;
        h.stale_since_ms = None;
    }

    /// Host `host`'s link failed (or a retry failed); the next try is at `retry_at_ms`.
    pub fn host_disconnected(&mut self, host: usize, reason: String, retry_at_ms: i64, now: i64) {
        let Some(h) = self.hosts.get(host) else {
            return;
        };
        match &h.link {
            Link::Disconnected { reason: old, .. } if *old == reason => {}
            _ => self.push_log(host, now, LogKind::Error, format!("disconnected: {reason}")),
        }
        // Attempts live in the daemon's memory: whatever comes back starts afresh.
        self.attempts.retain(|a| a.host != host);
        if let Some(h) = self.hosts.get_mut(host) {
            h.stale_since_ms.get_or_insert(now);
            h.link = Link::Disconnected {
                reason,
                retry_at_ms,
            };
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

    /// Host `host`'s answer to `request`.
    pub fn host_response(&mut self, host: usize, request: &Request, response: Response, now: i64) {
        if host >= self.hosts.len() {
            return;
        }
        let who = self.host_prefix(host);
        match response {
            Response::Status { status } => {
                let h = &mut self.hosts[host];
                h.daemon_version = Some(status.daemon_version.clone());
                h.status = Some(status);
                h.status_at_ms = now;
            }
            Response::Attempts { attempts, total } => {
                self.hosts[host].attempts_unlisted = total.saturating_sub(attempts.len() as u64);
                self.merge_attempts(host, attempts, total, now);
            }
            Response::Grants { grants, total } => {
                self.hosts[host].grants_unlisted = total.saturating_sub(grants.len() as u64);
                self.merge_grants(host, grants, total, now);
            }
            Response::Doors { doors } => {
                let h = &mut self.hosts[host];
                h.doors = doors;
                h.doors_at_ms = now;
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
                    self.set_notice(format!("{who}{text}"), true, Some(now));
                } else {
                    let names: Vec<String> = grants
                        .iter()
                        .map(|g| format!("{} ({})", g.addr, g.door))
                        .collect();
                    self.set_notice(
                        format!("{who}revoked {}", names.join(", ")),
                        false,
                        Some(now),
                    );
                    for grant in grants {
                        self.end_grant(host, grant, GrantEnd::Revoked, now);
                    }
                }
            }
            Response::Reloaded { warnings } => {
                if warnings.is_empty() {
                    self.set_notice(format!("{who}configuration reloaded"), false, Some(now));
                } else {
                    self.set_notice(
                        format!(
                            "{who}configuration reloaded with {} warning(s)",
                            warnings.len()
                        ),
                        false,
                        Some(now),
                    );
                    let mut warnings: Vec<String> =
                        warnings.into_iter().map(|w| format!("{who}{w}")).collect();
                    // Another host's warnings from the same reload stay in the popup.
                    if let Some(Overlay::ReloadWarnings { warnings: before }) = self.overlay.take()
                    {
                        warnings.splice(0..0, before);
                    }
                    self.overlay = Some(Overlay::ReloadWarnings { warnings });
                }
            }
            Response::ReloadFailed { errors } => {
                self.set_notice(
                    format!("{who}reload failed: the old configuration stays in force"),
                    true,
                    Some(now),
                );
                let mut errors: Vec<String> =
                    errors.into_iter().map(|e| format!("{who}{e}")).collect();
                if let Some(Overlay::ReloadFailed { errors: before }) = self.overlay.take() {
                    errors.splice(0..0, before);
                }
                self.overlay = Some(Overlay::ReloadFailed { errors });
            }
            Response::Error { message } => {
                self.set_notice(
                    format!("{who}knockd: {message} ({})", request.name()),
                    true,
                    Some(now),
                );
            }
            Response::Subscribed => {}
        }
        self.prune(now);
    }

    /// A command for host `host` could not be carried out (not connected, no answer).
    pub fn host_command_failed(&mut self, host: usize, request: &Request, reason: &str, now: i64) {
        let who = self.host_prefix(host);
        self.set_notice(
            format!("{who}{} failed: {reason}", request.name()),
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
