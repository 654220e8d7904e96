//! Everything the dashboard shows, and the pure functions that change it.
//!
//! Time is an input: every function that needs it takes `now` in Unix milliseconds, and
//! event times come from the events themselves. Nothing here reads the clock or does I/O.

use std::collections::VecDeque;
use std::net::IpAddr;

use chrono::FixedOffset;
use knock_ipc::{DoorInfo, Event, EventKind, GrantInfo, Request, Response, Status};

use crate::ctl::output::{format_duration_secs, format_remaining, no_grant_message};

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

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    Open,
    Reset,
    Timeout,
}

impl AttemptEnd {
    pub fn label(self) -> &'static str {
        match self {
            AttemptEnd::Open => "OPEN",
            AttemptEnd::Reset => "RESET",
            AttemptEnd::Timeout => "TIMEOUT",
        }
    }
}

/// A knock sequence in progress (or just ended, for [`LINGER_MS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub addr: IpAddr,
    pub door: String,
    pub stage: u32,
    pub of: u32,
    pub started_ms: i64,
    /// When the sequence times out; unknown until the door list or an attempt list says.
    pub deadline_ms: Option<i64>,
    /// Last event about this attempt (see [`GRACE_MS`]).
    pub updated_ms: i64,
    pub ended: Option<(AttemptEnd, i64)>,
}

/// How a grant closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantEnd {
    Revoked,
    Expired,
    Closed,
}

impl GrantEnd {
    pub fn label(self) -> &'static str {
        match self {
            GrantEnd::Revoked => "REVOKED",
            GrantEnd::Expired => "EXPIRED",
            GrantEnd::Closed => "CLOSED",
        }
    }
}

/// An open grant (or just closed, for [`LINGER_MS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub info: GrantInfo,
    /// None: open until revoked.
    pub expires_at_ms: Option<i64>,
    pub updated_ms: i64,
    pub ended: Option<(GrantEnd, i64)>,
}

/// What an event log line is about; picks its tag and colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Stage,
    Open,
    Reset,
    Timeout,
    Grant,
    Refresh,
    Revoke,
    Expire,
    Close,
    Reload,
    Error,
    Info,
}

impl LogKind {
    /// Text marker, so the log reads without colour.
    pub fn tag(self) -> &'static str {
        match self {
            LogKind::Stage => "STAGE",
            LogKind::Open => "OPEN",
            LogKind::Reset => "RESET",
            LogKind::Timeout => "TIMEOUT",
            LogKind::Grant => "GRANT",
            LogKind::Refresh => "REFRESH",
            LogKind::Revoke => "REVOKE",
            LogKind::Expire => "EXPIRE",
            LogKind::Close => "CLOSE",
            LogKind::Reload => "RELOAD",
            LogKind::Error => "ERROR",
            LogKind::Info => "INFO",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub at_ms: i64,
    pub kind: LogKind,
    pub text: String,
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
    pub doors: Vec<DoorInfo>,
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
    pub fn new(color: bool, tz: FixedOffset) -> State {
        State {
            link: Link::Connecting,
            daemon_version: None,
            status: None,
            status_at_ms: 0,
            attempts: Vec::new(),
            grants: Vec::new(),
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
            Response::Attempts { attempts } => self.merge_attempts(attempts, now),
            Response::Grants { grants } => self.merge_grants(grants, now),
            Response::Doors { doors } => self.doors = doors,
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

    pub fn visible_attempts(&self) -> Vec<&Attempt> {
        let mut rows: Vec<&Attempt> = self
            .attempts
            .iter()
            .filter(|a| self.matches(&a.addr, &a.door))
            .collect();
        rows.sort_by(|a, b| (a.started_ms, a.addr, &a.door).cmp(&(b.started_ms, b.addr, &b.door)));
        rows
    }

    pub fn visible_grants(&self) -> Vec<&Grant> {
        let mut rows: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|g| self.matches(&g.info.addr, &g.info.door))
            .collect();
        rows.sort_by(|a, b| {
            (a.info.opened_at_unix_ms, a.info.addr, &a.info.door).cmp(&(
                b.info.opened_at_unix_ms,
                b.info.addr,
                &b.info.door,
            ))
        });
        rows
    }

    pub fn visible_log(&self) -> Vec<&LogEntry> {
        let needle = self.filter.to_lowercase();
        self.log
            .iter()
            .filter(|e| needle.is_empty() || e.text.to_lowercase().contains(&needle))
            .collect()
    }

    pub fn visible_doors(&self) -> Vec<&DoorInfo> {
        let needle = self.filter.to_lowercase();
        self.doors
            .iter()
            .filter(|d| needle.is_empty() || d.name.to_lowercase().contains(&needle))
            .collect()
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

    fn push_log(&mut self, at_ms: i64, kind: LogKind, text: String) {
        let entry = LogEntry { at_ms, kind, text };
        let target = if self.paused {
            &mut self.held
        } else {
            &mut self.log
        };
        target.push_front(entry);
        target.truncate(LOG_CAP);
    }

    /// Moves entries held during a pause into the log.
    pub fn release_held(&mut self) {
        while let Some(entry) = self.held.pop_back() {
            self.log.push_front(entry);
        }
        self.log.truncate(LOG_CAP);
    }

    fn seq_timeout_ms(&self, door: &str) -> Option<i64> {
        self.doors
            .iter()
            .find(|d| d.name == door)
            .and_then(|d| i64::try_from(d.seq_timeout_ms).ok())
    }

    fn live_attempt(&mut self, addr: IpAddr, door: &str) -> Option<&mut Attempt> {
        self.attempts
            .iter_mut()
            .find(|a| a.addr == addr && a.door == door && a.ended.is_none())
    }

    fn on_stage(&mut self, addr: IpAddr, door: String, stage: u32, of: u32, at: i64) {
        if stage > 1 {
            if let Some(a) = self.live_attempt(addr, &door) {
                a.stage = stage;
                a.of = of;
                a.updated_ms = at;
                return;
            }
        }
        // A first knock (or one we missed the start of) starts a new attempt.
        let deadline_ms = if stage <= 1 {
            self.seq_timeout_ms(&door).map(|t| at + t)
        } else {
            None
        };
        self.attempts
            .retain(|a| !(a.addr == addr && a.door == door));
        self.attempts.push(Attempt {
            addr,
            door,
            stage,
            of,
            started_ms: at,
            deadline_ms,
            updated_ms: at,
            ended: None,
        });
    }

    fn end_attempt(
        &mut self,
        addr: IpAddr,
        door: &str,
        stage: Option<u32>,
        how: AttemptEnd,
        at: i64,
    ) {
        if let Some(a) = self.live_attempt(addr, door) {
            if how == AttemptEnd::Open {
                a.stage = a.of;
            } else if let Some(stage) = stage {
                a.stage = stage;
            }
            a.updated_ms = at;
            a.ended = Some((how, at));
        } else if how == AttemptEnd::Open {
            // A one-knock door, or a start we did not see: still worth a flash.
            let of = self
                .doors
                .iter()
                .find(|d| d.name == door)
                .map_or(1, |d| d.sequence.len().max(1));
            let of = u32::try_from(of).unwrap_or(u32::MAX);
            self.attempts
                .retain(|a| !(a.addr == addr && a.door == door && a.ended.is_some()));
            self.attempts.push(Attempt {
                addr,
                door: door.to_string(),
                stage: of,
                of,
                started_ms: at,
                deadline_ms: None,
                updated_ms: at,
                ended: Some((how, at)),
            });
        }
    }

    fn merge_attempts(&mut self, list: Vec<knock_ipc::AttemptInfo>, now: i64) {
        for info in &list {
            let started = now - i64::try_from(info.age_ms).unwrap_or(0);
            let deadline = now + i64::try_from(info.remaining_ms).unwrap_or(0);
            let row = self
                .attempts
                .iter_mut()
                .find(|a| a.addr == info.addr && a.door == info.door);
            match row {
                Some(a) if a.ended.is_none() => {
                    let fresh = now - a.updated_ms < GRACE_MS;
                    if !(fresh && info.stage < a.stage) {
                        a.stage = info.stage;
                        a.started_ms = started;
                    }
                    a.of = info.of;
                    a.deadline_ms = Some(deadline);
                }
                // Ended a moment ago: this list predates the end.
                Some(a) if now - a.updated_ms < GRACE_MS => {}
                Some(a) => {
                    *a = Attempt {
                        addr: info.addr,
                        door: info.door.clone(),
                        stage: info.stage,
                        of: info.of,
                        started_ms: started,
                        deadline_ms: Some(deadline),
                        updated_ms: now,
                        ended: None,
                    };
                }
                None => self.attempts.push(Attempt {
                    addr: info.addr,
                    door: info.door.clone(),
                    stage: info.stage,
                    of: info.of,
                    started_ms: started,
                    deadline_ms: Some(deadline),
                    updated_ms: now,
                    ended: None,
                }),
            }
        }
        // Live rows the daemon no longer has ended without an event reaching us: past the
        // deadline it timed out, before it a wrong knock reset it.
        for a in &mut self.attempts {
            let listed = list.iter().any(|i| i.addr == a.addr && i.door == a.door);
            if a.ended.is_none() && !listed && now - a.updated_ms >= GRACE_MS {
                let how = match a.deadline_ms {
                    Some(d) if d <= now + GRACE_MS => AttemptEnd::Timeout,
                    _ => AttemptEnd::Reset,
                };
                a.ended = Some((how, now));
                a.updated_ms = now;
            }
        }
    }

    fn upsert_grant(&mut self, info: GrantInfo, base_ms: i64, updated_ms: i64) {
        let expires_at_ms = info
            .expires_in_ms
            .map(|ms| base_ms + i64::try_from(ms).unwrap_or(i64::MAX / 2));
        let row = Grant {
            info,
            expires_at_ms,
            updated_ms,
            ended: None,
        };
        match self
            .grants
            .iter_mut()
            .find(|g| g.info.addr == row.info.addr && g.info.door == row.info.door)
        {
            Some(g) => *g = row,
            None => self.grants.push(row),
        }
    }

    fn end_grant(&mut self, info: GrantInfo, how: GrantEnd, at: i64) {
        match self
            .grants
            .iter_mut()
            .find(|g| g.info.addr == info.addr && g.info.door == info.door)
        {
            Some(g) => {
                if g.ended.is_none() {
                    g.ended = Some((how, at));
                    g.updated_ms = at;
                }
            }
            None => self.grants.push(Grant {
                info,
                expires_at_ms: None,
                updated_ms: at,
                ended: Some((how, at)),
            }),
        }
    }

    fn merge_grants(&mut self, list: Vec<GrantInfo>, now: i64) {
        let mut listed = Vec::with_capacity(list.len());
        for info in list {
            listed.push((info.addr, info.door.clone()));
            let recent_end = self.grants.iter().any(|g| {
                g.info.addr == info.addr
                    && g.info.door == info.door
                    && g.ended.is_some()
                    && now - g.updated_ms < GRACE_MS
            });
            if recent_end {
                continue;
            }
            let updated = self
                .grants
                .iter()
                .find(|g| g.info.addr == info.addr && g.info.door == info.door)
                .map_or(now, |g| g.updated_ms);
            self.upsert_grant(info, now, updated);
        }
        for g in &mut self.grants {
            let is_listed = listed
                .iter()
                .any(|(addr, door)| *addr == g.info.addr && *door == g.info.door);
            if g.ended.is_none() && !is_listed && now - g.updated_ms >= GRACE_MS {
                let how = match g.expires_at_ms {
                    Some(t) if t <= now + GRACE_MS => GrantEnd::Expired,
                    _ => GrantEnd::Closed,
                };
                g.ended = Some((how, now));
                g.updated_ms = now;
            }
        }
    }

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

/// The word for a request in messages.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures::*;

    fn row<'a>(s: &'a State, addr: &str, door: &str) -> &'a Attempt {
        s.attempts
            .iter()
            .find(|a| a.addr == ip(addr) && a.door == door)
            .expect("attempt row")
    }

    fn grant_row<'a>(s: &'a State, addr: &str, door: &str) -> &'a Grant {
        s.grants
            .iter()
            .find(|g| g.info.addr == ip(addr) && g.info.door == door)
            .expect("grant row")
    }

    #[test]
    fn stages_start_and_advance_an_attempt_with_the_doors_timeout() {
        let mut s = connected();
        s.on_event(stage(T0, "10.0.0.12", "openSSH", 1, 3), T0);
        s.on_event(stage(T0 + 400, "10.0.0.12", "openSSH", 2, 3), T0 + 400);
        let a = row(&s, "10.0.0.12", "openSSH");
        assert_eq!((a.stage, a.of), (2, 3));
        assert_eq!(a.started_ms, T0);
        assert_eq!(
            a.deadline_ms,
            Some(T0 + 5_000),
            "seq_timeout from the first knock"
        );
        assert_eq!(a.ended, None);
        assert_eq!(s.attempts.len(), 1);
    }

    #[test]
    fn a_first_knock_again_restarts_the_attempt() {
        let mut s = connected();
        s.on_event(stage(T0, "10.0.0.12", "openSSH", 1, 3), T0);
        s.on_event(stage(T0 + 400, "10.0.0.12", "openSSH", 2, 3), T0 + 400);
        s.on_event(stage(T0 + 900, "10.0.0.12", "openSSH", 1, 3), T0 + 900);
        let a = row(&s, "10.0.0.12", "openSSH");
        assert_eq!((a.stage, a.started_ms), (1, T0 + 900));
        assert_eq!(s.attempts.len(), 1);
    }

    #[test]
    fn ended_attempts_are_marked_then_dropped_after_the_linger() {
        let table = [
            (
                EventKind::Open {
                    addr: ip("10.0.0.12"),
                    door: "openSSH".into(),
                },
                AttemptEnd::Open,
                3,
            ),
            (
                EventKind::Reset {
                    addr: ip("10.0.0.12"),
                    door: "openSSH".into(),
                    stage: 2,
                },
                AttemptEnd::Reset,
                2,
            ),
            (
                EventKind::Timeout {
                    addr: ip("10.0.0.12"),
                    door: "openSSH".into(),
                    stage: 2,
                },
                AttemptEnd::Timeout,
                2,
            ),
        ];
        for (kind, how, stage_after) in table {
            let mut s = connected();
            s.on_event(stage(T0, "10.0.0.12", "openSSH", 1, 3), T0);
            s.on_event(stage(T0 + 100, "10.0.0.12", "openSSH", 2, 3), T0 + 100);
            s.on_event(ev(T0 + 200, kind), T0 + 200);
            let a = row(&s, "10.0.0.12", "openSSH");
            assert_eq!(a.ended, Some((how, T0 + 200)), "{how:?}");
            assert_eq!(a.stage, stage_after, "{how:?}");
            s.on_tick(T0 + 200 + LINGER_MS - 1);
            assert_eq!(s.attempts.len(), 1, "{how:?} still shown");
            s.on_tick(T0 + 200 + LINGER_MS);
            assert!(s.attempts.is_empty(), "{how:?} gone");
        }
    }

    #[test]
    fn open_without_a_seen_start_still_flashes() {
        let mut s = connected();
        s.on_event(
            ev(
                T0,
                EventKind::Open {
                    addr: ip("10.0.0.5"),
                    door: "openSSH".into(),
                },
            ),
            T0,
        );
        let a = row(&s, "10.0.0.5", "openSSH");
        assert_eq!((a.stage, a.of), (3, 3));
        assert_eq!(a.ended, Some((AttemptEnd::Open, T0)));
    }

    #[test]
    fn the_attempt_list_is_authoritative_except_for_fresh_rows() {
        let mut s = connected();
        // Known from a list only.
        s.on_response(
            &Request::Attempts,
            Response::Attempts {
                attempts: vec![
                    attempt_info("10.0.0.1", "openSSH", 1, 3, 1_000, 4_000),
                    attempt_info("10.0.0.2", "openSSH", 2, 3, 4_900, 100),
                ],
            },
            T0,
        );
        let a = row(&s, "10.0.0.1", "openSSH");
        assert_eq!(a.started_ms, T0 - 1_000);
        assert_eq!(a.deadline_ms, Some(T0 + 4_000));
        // A stage event just now, then a list that predates it.
        s.on_event(stage(T0 + 900, "10.0.0.3", "vault", 1, 2), T0 + 900);
        s.on_response(
            &Request::Attempts,
            Response::Attempts {
                attempts: vec![attempt_info("10.0.0.1", "openSSH", 1, 3, 2_000, 3_000)],
            },
            T0 + 1_000,
        );
        assert_eq!(row(&s, "10.0.0.3", "vault").ended, None, "fresh: kept");
        // 10.0.0.2 was past its deadline: timed out. Nothing said so: inferred.
        assert_eq!(
            row(&s, "10.0.0.2", "openSSH").ended,
            Some((AttemptEnd::Timeout, T0 + 1_000))
        );
        // Gone well before its deadline: reset.
        s.on_response(
            &Request::Attempts,
            Response::Attempts { attempts: vec![] },
            T0 + 2_000,
        );
        assert_eq!(
            row(&s, "10.0.0.1", "openSSH").ended,
            Some((AttemptEnd::Reset, T0 + 2_000))
        );
        assert_eq!(
            row(&s, "10.0.0.3", "vault").ended,
            Some((AttemptEnd::Reset, T0 + 2_000))
        );
    }

    #[test]
    fn a_list_older_than_an_open_does_not_revive_the_attempt() {
        let mut s = connected();
        s.on_event(stage(T0, "10.0.0.12", "openSSH", 1, 3), T0);
        s.on_event(
            ev(
                T0 + 10,
                EventKind::Open {
                    addr: ip("10.0.0.12"),
                    door: "openSSH".into(),
                },
            ),
            T0 + 10,
        );
        s.on_response(
            &Request::Attempts,
            Response::Attempts {
                attempts: vec![attempt_info("10.0.0.12", "openSSH", 2, 3, 10, 4_990)],
            },
            T0 + 20,
        );
        assert_eq!(
            row(&s, "10.0.0.12", "openSSH").ended,
            Some((AttemptEnd::Open, T0 + 10))
        );
    }

    #[test]
    fn grants_count_down_and_linger_when_closed() {
        let mut s = connected();
        s.on_event(
            ev(
                T0,
                EventKind::GrantAdded {
                    grant: grant("10.0.0.12", "openSSH", T0, Some(30_000)),
                },
            ),
            T0,
        );
        assert_eq!(
            grant_row(&s, "10.0.0.12", "openSSH").expires_at_ms,
            Some(T0 + 30_000)
        );
        // A later list re-bases the deadline on its own clock reading.
        s.on_response(
            &Request::Grants,
            Response::Grants {
                grants: vec![grant("10.0.0.12", "openSSH", T0, Some(20_000))],
            },
            T0 + 10_000,
        );
        assert_eq!(
            grant_row(&s, "10.0.0.12", "openSSH").expires_at_ms,
            Some(T0 + 30_000)
        );
        s.on_event(
            ev(
                T0 + 11_000,
                EventKind::GrantRevoked {
                    grant: grant("10.0.0.12", "openSSH", T0, Some(19_000)),
                },
            ),
            T0 + 11_000,
        );
        assert_eq!(
            grant_row(&s, "10.0.0.12", "openSSH").ended,
            Some((GrantEnd::Revoked, T0 + 11_000))
        );
        // A list from before the revoke does not bring it back.
        s.on_response(
            &Request::Grants,
            Response::Grants {
                grants: vec![grant("10.0.0.12", "openSSH", T0, Some(19_000))],
            },
            T0 + 11_100,
        );
        assert!(grant_row(&s, "10.0.0.12", "openSSH").ended.is_some());
        s.on_tick(T0 + 11_000 + LINGER_MS);
        assert!(s.grants.is_empty());
    }

    #[test]
    fn grants_missing_from_a_list_close_as_expired_or_closed() {
        let mut s = connected();
        s.on_response(
            &Request::Grants,
            Response::Grants {
                grants: vec![
                    grant("10.0.0.1", "openSSH", T0, Some(1_000)),
                    grant("10.0.0.2", "vault", T0, None),
                ],
            },
            T0,
        );
        s.on_response(
            &Request::Grants,
            Response::Grants { grants: vec![] },
            T0 + 1_000,
        );
        assert_eq!(
            grant_row(&s, "10.0.0.1", "openSSH").ended,
            Some((GrantEnd::Expired, T0 + 1_000))
        );
        assert_eq!(
            grant_row(&s, "10.0.0.2", "vault").ended,
            Some((GrantEnd::Closed, T0 + 1_000))
        );
    }

    #[test]
    fn knock_rate_counts_stage_events_in_the_window() {
        let mut s = connected();
        for i in 0..10 {
            s.on_event(
                stage(T0 + i * 100, "10.0.0.1", "openSSH", 1, 3),
                T0 + i * 100,
            );
        }
        assert_eq!(s.knock_rate(T0 + 1_000), 2.0);
        assert_eq!(s.knock_rate(T0 + RATE_WINDOW_MS + 450), 1.0);
        s.on_tick(T0 + RATE_WINDOW_MS + 2_000);
        assert_eq!(s.knock_rate(T0 + RATE_WINDOW_MS + 2_000), 0.0);
        assert!(s.stage_times.is_empty());
    }

    #[test]
    fn log_is_newest_first_and_pause_holds_new_lines() {
        let mut s = connected();
        s.on_event(stage(T0, "10.0.0.1", "openSSH", 1, 3), T0);
        s.on_event(stage(T0 + 1, "10.0.0.1", "openSSH", 2, 3), T0 + 1);
        assert_eq!(s.log[0].text, "10.0.0.1 openSSH stage 2/3");
        assert_eq!(s.log[0].kind, LogKind::Stage);
        let before = s.log.len();
        s.paused = true;
        s.on_event(stage(T0 + 2, "10.0.0.1", "openSSH", 3, 3), T0 + 2);
        s.on_event(
            ev(
                T0 + 2,
                EventKind::Open {
                    addr: ip("10.0.0.1"),
                    door: "openSSH".into(),
                },
            ),
            T0 + 2,
        );
        assert_eq!(s.log.len(), before, "frozen while paused");
        assert_eq!(s.held.len(), 2);
        s.paused = false;
        s.release_held();
        assert_eq!(s.log[0].text, "10.0.0.1 openSSH OPEN");
        assert_eq!(s.log[1].text, "10.0.0.1 openSSH stage 3/3");
        assert!(s.held.is_empty());
    }

    #[test]
    fn log_is_bounded() {
        let mut s = connected();
        for i in 0..(LOG_CAP as i64 + 50) {
            s.on_event(stage(T0 + i, "10.0.0.1", "openSSH", 1, 3), T0 + i);
        }
        assert_eq!(s.log.len(), LOG_CAP);
    }

    #[test]
    fn every_event_kind_has_a_log_line() {
        let g = grant("10.0.0.12", "openSSH", T0, Some(30_000));
        let table: Vec<(EventKind, LogKind, &str)> = vec![
            (
                EventKind::GrantAdded { grant: g.clone() },
                LogKind::Grant,
                "10.0.0.12 openSSH granted, expires in 30s",
            ),
            (
                EventKind::GrantRefreshed { grant: g.clone() },
                LogKind::Refresh,
                "10.0.0.12 openSSH grant refreshed, expires in 30s",
            ),
            (
                EventKind::GrantExpired { grant: g.clone() },
                LogKind::Expire,
                "10.0.0.12 openSSH grant expired",
            ),
            (
                EventKind::GrantClosed {
                    grant: g.clone(),
                    by_door: "closeSSH".into(),
                },
                LogKind::Close,
                "10.0.0.12 openSSH grant closed by door closeSSH",
            ),
            (
                EventKind::CommandFailed {
                    door: "vault".into(),
                    message: "exit status 1".into(),
                },
                LogKind::Error,
                "vault command failed: exit status 1",
            ),
            (
                EventKind::ReloadOk {
                    doors: 3,
                    warnings: vec![],
                },
                LogKind::Reload,
                "configuration reloaded: 3 doors",
            ),
            (
                EventKind::ReloadFailed {
                    errors: vec!["/etc/knockd.conf:12: unknown protocol 'icmp'".into()],
                },
                LogKind::Error,
                "reload failed: /etc/knockd.conf:12: unknown protocol 'icmp'",
            ),
            (
                EventKind::Lagged { missed: 7 },
                LogKind::Error,
                "missed 7 events (the dashboard fell behind)",
            ),
        ];
        for (kind, log_kind, text) in table {
            let mut s = connected();
            s.on_event(ev(T0, kind), T0);
            assert_eq!((s.log[0].kind, s.log[0].text.as_str()), (log_kind, text));
        }
    }

    #[test]
    fn disconnect_clears_attempts_and_logs_each_new_reason_once() {
        let mut s = busy();
        let lines = s.log.len();
        s.on_disconnected("connection closed".into(), T0 + 1_000, T0);
        s.on_disconnected("connection closed".into(), T0 + 3_000, T0 + 1_000);
        assert!(s.attempts.is_empty());
        assert_eq!(s.grants.len(), 2, "grants outlive the link");
        assert_eq!(s.log.len(), lines + 1);
        assert_eq!(
            s.link,
            Link::Disconnected {
                reason: "connection closed".into(),
                retry_at_ms: T0 + 3_000
            }
        );
        s.on_connected("0.1.1".into(), T0 + 3_000);
        assert_eq!(s.link, Link::Connected);
        assert_eq!(s.daemon_version.as_deref(), Some("0.1.1"));
    }

    #[test]
    fn command_answers_become_notices_and_popups() {
        let revoke = Request::Revoke {
            addr: ip("10.0.0.99"),
            door: Some("openSSH".into()),
        };
        let mut s = busy();
        s.on_response(
            &revoke,
            Response::Revoked {
                grants: vec![grant("10.0.0.99", "openSSH", T0, Some(29_000))],
            },
            T0,
        );
        let notice = s.notice.clone().expect("notice");
        assert_eq!(notice.text, "revoked 10.0.0.99 (openSSH)");
        assert!(!notice.error);
        assert_eq!(
            grant_row(&s, "10.0.0.99", "openSSH").ended,
            Some((GrantEnd::Revoked, T0))
        );

        s.on_response(&revoke, Response::Revoked { grants: vec![] }, T0);
        let notice = s.notice.clone().expect("notice");
        assert!(notice.error);
        assert!(notice.text.contains("10.0.0.99"), "{}", notice.text);

        let errors = vec!["/etc/knockd.conf:12: unknown protocol 'icmp' (use tcp or udp)".into()];
        s.on_response(
            &Request::Reload,
            Response::ReloadFailed {
                errors: errors.clone(),
            },
            T0,
        );
        assert_eq!(s.overlay, Some(Overlay::ReloadFailed { errors }));

        s.overlay = None;
        s.on_response(
            &Request::Reload,
            Response::Reloaded { warnings: vec![] },
            T0,
        );
        assert_eq!(s.overlay, None);
        assert_eq!(
            s.notice.as_ref().map(|n| n.text.as_str()),
            Some("configuration reloaded")
        );

        s.on_response(
            &Request::Status,
            Response::Error {
                message: "busy".into(),
            },
            T0,
        );
        assert_eq!(
            s.notice.as_ref().map(|n| n.text.as_str()),
            Some("knockd: busy (status)")
        );
    }

    #[test]
    fn notices_age_out() {
        let mut s = connected();
        s.set_notice("hello".into(), false, None);
        s.on_tick(T0);
        assert_eq!(s.notice.as_ref().and_then(|n| n.at_ms), Some(T0));
        s.on_tick(T0 + NOTICE_MS - 1);
        assert!(s.notice.is_some());
        s.on_tick(T0 + NOTICE_MS);
        assert!(s.notice.is_none());
    }

    #[test]
    fn uptime_keeps_counting_from_the_last_status() {
        let s = connected();
        assert_eq!(s.uptime_secs(T0 - 10_000), Some(7_530));
        assert_eq!(s.uptime_secs(T0), Some(7_540));
    }

    #[test]
    fn filter_matches_address_or_door() {
        let mut s = busy();
        s.filter = "vault".into();
        assert!(s.visible_attempts().iter().all(|a| a.door == "vault"));
        assert_eq!(s.visible_grants().len(), 1);
        s.filter = "10.0.0.1".into();
        let addrs: Vec<String> = s
            .visible_attempts()
            .iter()
            .map(|a| a.addr.to_string())
            .collect();
        assert_eq!(addrs, ["10.0.0.12"]);
        s.filter = "FD99".into();
        assert_eq!(s.visible_attempts().len(), 1, "case-insensitive");
        assert!(s.visible_log().iter().all(|e| e.text.contains("fd99")));
        s.filter = "nothing".into();
        assert_eq!(s.selection(Pane::Attempts), None);
    }

    #[test]
    fn events_name_the_lists_to_refresh() {
        let stage_kind = EventKind::Stage {
            addr: ip("10.0.0.1"),
            door: "d".into(),
            stage: 1,
            of: 2,
        };
        let r = refresh_for(&stage_kind);
        assert!(r.attempts && r.status && !r.grants && !r.doors);
        let r = refresh_for(&EventKind::GrantAdded {
            grant: grant("10.0.0.1", "d", T0, None),
        });
        assert!(r.grants && !r.attempts);
        assert_eq!(
            refresh_for(&EventKind::ReloadOk {
                doors: 1,
                warnings: vec![]
            }),
            Refresh::ALL
        );
        assert_eq!(
            Refresh::ALL.requests(),
            [
                Request::Doors,
                Request::Status,
                Request::Attempts,
                Request::Grants
            ]
        );
        assert!(Refresh::default().is_empty());
        assert_eq!(Refresh::default().union(Refresh::TICK), Refresh::TICK);
    }
}
