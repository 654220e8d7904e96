//! The engine task: the one owner of knock state (attempts, grants, config).
//!
//! Inputs arrive on channels (captured packets, control messages, action completions) and
//! timers; outputs are log lines, firewall actions (spawned, never awaited inline) and filter
//! updates for the capture thread. Capture is therefore never blocked by a command.

use crate::action::{self, Action, Executor, FwRule, Outcome};
use crate::capture::CaptureStats;
use crate::config::{self, Command6, Config, Door, ShutdownPolicy};
use crate::grants::{Close, Grant, GrantId, Ledger};
use crate::knocklog::LogSink;
use crate::matcher::{DoorRule, MatchEvent, Matcher};
use crate::packet::Packet;
use crate::state::{self, SavedGrant};
use knock_ipc as ipc;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// From the capture thread.
#[derive(Debug)]
pub enum CaptureMsg {
    Packet(Packet, Instant),
    /// Packets read together (one ring block), all received by `Instant`.
    Batch(Vec<Packet>, Instant),
    /// Capture failed (interface gone...). The engine shuts down with this error.
    Error(String),
}

/// Result of a reload: warnings on success, every problem on failure.
pub type ReloadResult = Result<Vec<String>, Vec<String>>;

/// Requests to the engine from signals, the address watcher and the control socket.
#[derive(Debug)]
pub enum Control {
    Reload(Option<oneshot::Sender<ReloadResult>>),
    LocalAddrs(Vec<IpAddr>),
    /// A control-socket request (everything but Subscribe, which the socket server handles).
    Request(ipc::Request, oneshot::Sender<ipc::Response>),
}

/// Capacity of the live event channel; a subscriber further behind skips ahead (`Lagged`).
pub const EVENT_BUFFER: usize = 4096;

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub stages: u64,
    pub opens: u64,
    pub resets: u64,
    pub timeouts: u64,
    pub evictions: u64,
    pub commands_failed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskKind {
    /// Opening a new grant: on failure the grant is dropped.
    Start,
    /// Closing (expiry, revoke, shutdown, closing door).
    Close,
    /// Re-knock: put the rule back if someone removed it.
    Ensure,
    /// A command with no grant (fire and forget, like knockd).
    Free,
}

#[derive(Debug)]
struct Done {
    grant: Option<GrantId>,
    door: String,
    addr: IpAddr,
    kind: TaskKind,
    /// For Ensure: whether the rule had to be re-inserted.
    reinserted: bool,
    outcome: Outcome,
}

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("packet capture stopped: {0}")]
    Capture(String),
}

pub struct Engine<E: Executor, L: LogSink> {
    config: Config,
    config_path: PathBuf,
    matcher: Matcher,
    ledger: Ledger,
    exec: E,
    log: L,
    set_filter: Box<dyn FnMut(String) + Send>,
    filter: String,
    local: Vec<IpAddr>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    inflight: usize,
    chains: HashMap<GrantId, watch::Receiver<bool>>,
    stats: Stats,
    events: Vec<MatchEvent>,
    evictions_logged: u64,
    last_evict_log: Option<Instant>,
    log_budget: crate::ratelimit::LogBudget,
    overrides: config::Overrides,
    events_tx: broadcast::Sender<ipc::Event>,
    state_file: Option<PathBuf>,
    saved_version: u64,
    started: Instant,
    interfaces: Vec<String>,
    capture_stats: Option<Arc<CaptureStats>>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn door_info(d: &Door) -> ipc::DoorInfo {
    let mut flags: Vec<String> = Vec::new();
    for (name, bit) in config::flag::NAMES {
        if d.tcp_flags.set & bit != 0 {
            flags.push(name.to_string());
        }
        if d.tcp_flags.unset & bit != 0 {
            flags.push(format!("!{name}"));
        }
    }
    let action = if !d.open.is_empty() {
        let ports: Vec<String> = d
            .open
            .iter()
            .map(|o| format!("{}/{}", o.port, o.proto))
            .collect();
        format!("open {} ({})", ports.join(","), d.open_chain)
    } else {
        match (&d.start_command, &d.stop_command) {
            (Some(_), Some(_)) => "command + stop_command".to_string(),
            (Some(_), None) => "command".to_string(),
            (None, Some(_)) => "stop_command".to_string(),
            (None, None) => "none".to_string(),
        }
    };
    ipc::DoorInfo {
        name: d.name.clone(),
        sequence: d.sequence.iter().map(|s| s.to_string()).collect(),
        seq_timeout_ms: ms(d.seq_timeout),
        cmd_timeout_ms: ms(d.cmd_timeout),
        tcp_flags: flags.join(","),
        action,
        one_time: d.one_time_sequences.is_some(),
        enabled: !d.sequence.is_empty(),
        target: d.target,
    }
}

fn rules_of(door: &Door) -> Vec<DoorRule> {
    vec![DoorRule::from(door)]
}

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// `set_filter` receives every new BPF expression (at start, on reload, on address change).
    pub fn new(
        config: Config,
        config_path: PathBuf,
        exec: E,
        log: L,
        set_filter: Box<dyn FnMut(String) + Send>,
    ) -> Self {
        let rules: Vec<DoorRule> = config.doors.iter().flat_map(rules_of).collect();
        let matcher = Matcher::new(rules, config.max_attempts());
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (events_tx, _) = broadcast::channel(EVENT_BUFFER);
        let mut e = Engine {
            config,
            config_path,
            matcher,
            ledger: Ledger::default(),
            exec,
            log,
            set_filter,
            filter: String::new(),
            local: Vec::new(),
            done_tx,
            done_rx,
            inflight: 0,
            chains: HashMap::new(),
            stats: Stats::default(),
            events: Vec::new(),
            evictions_logged: 0,
            last_evict_log: None,
            log_budget: Default::default(),
            overrides: config::Overrides::default(),
            events_tx,
            state_file: None,
            saved_version: 0,
            started: Instant::now(),
            interfaces: Vec::new(),
            capture_stats: None,
        };
        e.update_filter();
        e
    }

    /// Command-line settings re-applied over the config file on every reload.
    pub fn with_overrides(mut self, overrides: config::Overrides) -> Self {
        self.overrides = overrides;
        self
    }

    /// Persist the grant ledger to this file after every change.
    pub fn with_state_file(mut self, path: PathBuf) -> Self {
        self.state_file = Some(path);
        self
    }

    /// Interfaces and kernel counters, for `status`.
    pub fn with_capture(mut self, interfaces: Vec<String>, stats: Arc<CaptureStats>) -> Self {
        self.interfaces = interfaces;
        self.capture_stats = Some(stats);
        self
    }

    /// The live event stream (subscribe for `knockctl tail` and the TUI).
    pub fn events(&self) -> broadcast::Sender<ipc::Event> {
        self.events_tx.clone()
    }

    fn emit(&self, kind: impl FnOnce() -> ipc::EventKind) {
        if self.events_tx.receiver_count() > 0 {
            let _ = self.events_tx.send(ipc::Event {
                at_unix_ms: state::unix_ms(SystemTime::now()),
                kind: kind(),
            });
        }
    }

    fn grant_info(g: &Grant, now: Instant) -> ipc::GrantInfo {
        ipc::GrantInfo {
            door: g.door.clone(),
            addr: g.addr,
            opened: g.opened.clone(),
            opened_at_unix_ms: state::unix_ms(g.opened_at),
            expires_in_ms: g.expires.map(|t| {
                u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
            }),
            closes: g.close.describe(),
            refreshes: g.refreshes,
        }
    }

    fn emit_grant(&self, id: GrantId, kind: fn(ipc::GrantInfo) -> ipc::EventKind) {
        if let Some(g) = self.ledger.get(id) {
            let info = Self::grant_info(g, Instant::now());
            self.emit(|| kind(info));
        }
    }

    /// Write the ledger if it changed since the last save.
    pub fn persist(&mut self) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        if self.ledger.version() == self.saved_version {
            return;
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let saved: Vec<SavedGrant> = self
            .ledger
            .list()
            .into_iter()
            .map(|g| SavedGrant {
                door: g.door.clone(),
                addr: g.addr,
                opened: g.opened.clone(),
                opened_at_unix_ms: state::unix_ms(g.opened_at),
                expires_at_unix_ms: g
                    .expires
                    .map(|t| state::unix_ms(wall + t.saturating_duration_since(now))),
                close: g.close.clone(),
                refreshes: g.refreshes,
            })
            .collect();
        match state::save(&path, saved) {
            Ok(()) => self.saved_version = self.ledger.version(),
            Err(e) => {
                let msg = format!("error: {e}");
                self.line(&msg);
                // Do not retry on every packet; the next ledger change tries again.
                self.saved_version = self.ledger.version();
            }
        }
    }

    /// Take over the grants of a previous run: close those past their deadline, forget those
    /// whose rule is gone from the firewall (never re-open them), re-arm the rest.
    pub async fn restore(&mut self, saved: Vec<SavedGrant>) {
        let wall = SystemTime::now();
        let now = Instant::now();
        for g in saved {
            let remaining = g.expires_at_unix_ms.map(|ms| {
                state::from_unix_ms(ms)
                    .duration_since(wall)
                    .unwrap_or(Duration::ZERO)
            });
            if remaining == Some(Duration::ZERO) {
                let msg = format!(
                    "{}: {}: grant expired while knockd was down, closing it",
                    g.addr, g.door
                );
                self.line(&msg);
                for a in g.close.actions() {
                    let msg = format!("{}: running command: {a}", g.door);
                    self.line(&msg);
                    let o = self.exec.run(a).await;
                    if !o.is_ok() {
                        let msg = format!("{}: command failed: {o:?}", g.door);
                        self.line(&msg);
                    }
                }
                continue;
            }
            let checks: Vec<Action> = match &g.close {
                Close::Rules { rules } => rules.iter().map(|r| Action::Exec(r.check())).collect(),
                Close::Derived { check, .. } => vec![Action::Exec(check.clone())],
                Close::StopCommand { .. } => Vec::new(),
            };
            let mut present = true;
            for c in checks {
                present &= self.exec.run(c).await.is_ok();
            }
            if !present {
                let msg = format!(
                    "{}: {}: rule no longer in the firewall, grant dropped",
                    g.addr, g.door
                );
                self.line(&msg);
                continue;
            }
            let expires = remaining.map(|r| now + r);
            self.ledger.insert(
                &g.door,
                g.addr,
                g.opened,
                state::from_unix_ms(g.opened_at_unix_ms),
                expires,
                g.close,
            );
            let msg = match remaining {
                Some(r) => format!(
                    "{}: {}: grant restored (closes in {}s)",
                    g.addr,
                    g.door,
                    r.as_secs()
                ),
                None => format!("{}: {}: grant restored (no deadline)", g.addr, g.door),
            };
            self.line(&msg);
        }
        // Force a write: the file now reflects what this run owns.
        self.saved_version = self.ledger.version().wrapping_add(1);
        self.persist();
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn line(&mut self, msg: &str) {
        self.log.line(msg);
    }

    /// A per-knock line (Stage, reset, timeout): subject to the log rate limit, and only
    /// formatted when it will be written.
    fn knock_line(&mut self, now: Instant, msg: impl FnOnce() -> String) {
        if self.log_budget.allow(now) {
            self.log.line(&msg());
        }
        if let Some(summary) = self.log_budget.report(now) {
            self.log.line(&summary);
        }
    }

    /// Write one knockd-format log line.
    pub fn log_line(&mut self, msg: &str) {
        self.log.line(msg);
    }

    fn update_filter(&mut self) {
        let active: Vec<Door> = self
            .config
            .doors
            .iter()
            .filter(|d| !d.sequence.is_empty())
            .cloned()
            .collect();
        let f = crate::filter::build(&active, &self.local);
        if f != self.filter {
            tracing::debug!(filter = %f, "new capture filter");
            self.filter = f.clone();
            (self.set_filter)(f);
        }
    }

    /// Run until `shutdown` resolves or capture fails. Grants with a deadline are closed
    /// before returning (they would otherwise outlive the daemon).
    pub async fn run(
        mut self,
        mut packets: mpsc::Receiver<CaptureMsg>,
        mut control: mpsc::Receiver<Control>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), EngineError> {
        tokio::pin!(shutdown);
        let mut result = Ok(());
        loop {
            let deadline = self.next_deadline();
            let sleep = tokio::time::sleep_until(
                deadline
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(c) = control.recv() => self.on_control(c),
                Some(d) = self.done_rx.recv() => self.on_done(d),
                msg = packets.recv() => match msg {
                    Some(CaptureMsg::Batch(batch, at)) => {
                        for p in &batch {
                            self.on_packet(p, at);
                        }
                    }
                    Some(CaptureMsg::Packet(p, at)) => {
                        self.on_packet(&p, at);
                        // Drain what is already queued before looking at timers again.
                        for _ in 0..256 {
                            match packets.try_recv() {
                                Ok(CaptureMsg::Packet(p, at)) => self.on_packet(&p, at),
                                Ok(CaptureMsg::Batch(batch, at)) => {
                                    for p in &batch {
                                        self.on_packet(p, at);
                                    }
                                }
                                Ok(CaptureMsg::Error(e)) => {
                                    result = Err(EngineError::Capture(e));
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if result.is_err() {
                            break;
                        }
                    }
                    Some(CaptureMsg::Error(e)) => {
                        result = Err(EngineError::Capture(e));
                        break;
                    }
                    None => {
                        result = Err(EngineError::Capture("capture thread ended".into()));
                        break;
                    }
                },
                () = sleep => self.on_timer(tokio::time::Instant::now().into_std()),
            }
            self.persist();
        }
        if let Err(e) = &result {
            let msg = format!("error: {e}");
            self.line(&msg);
        }
        self.shutdown().await;
        result
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.matcher.next_deadline(), self.ledger.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_control(&mut self, c: Control) {
        match c {
            Control::Reload(reply) => {
                let r = self.reload();
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Control::Request(req, reply) => {
                let r = self.on_request(req);
                let _ = reply.send(r);
            }
            Control::LocalAddrs(mut addrs) => {
                addrs.sort();
                addrs.dedup();
                if addrs != self.local {
                    tracing::info!(?addrs, "local addresses changed");
                    self.matcher.set_local_addrs(addrs.iter().copied());
                    self.local = addrs;
                    self.update_filter();
                }
            }
        }
    }

    pub fn on_packet(&mut self, p: &Packet, at: Instant) {
        self.stats.packets += 1;
        let mut events = std::mem::take(&mut self.events);
        self.matcher.on_packet(p, at, &mut events);
        for ev in events.drain(..) {
            self.on_match(ev, at);
        }
        self.events = events;
    }

    pub fn on_timer(&mut self, now: Instant) {
        let mut events = std::mem::take(&mut self.events);
        self.matcher.expire(now, &mut events);
        for ev in events.drain(..) {
            self.on_match(ev, now);
        }
        self.events = events;
        for g in self.ledger.expire(now) {
            let msg = format!("{}: {}: command timeout", g.addr, g.door);
            self.line(&msg);
            let info = Self::grant_info(&g, now);
            self.emit(|| ipc::EventKind::GrantExpired { grant: info });
            self.close_grant(g);
        }
    }

    fn door_name(&self, door: usize) -> String {
        self.config
            .doors
            .get(door)
            .map(|d| d.name.clone())
            .unwrap_or_default()
    }

    fn on_match(&mut self, ev: MatchEvent, now: Instant) {
        match ev {
            MatchEvent::Stage {
                src,
                door,
                stage,
                of,
            } => {
                self.stats.stages += 1;
                let name = self.door_name(door);
                self.knock_line(now, || format!("{src}: {name}: Stage {stage}"));
                self.emit(|| ipc::EventKind::Stage {
                    addr: src,
                    door: name,
                    stage: stage as u32,
                    of: of as u32,
                });
            }
            MatchEvent::Open { src, door } => {
                self.stats.opens += 1;
                let name = self.door_name(door);
                let msg = format!("{src}: {name}: OPEN SESAME");
                self.line(&msg);
                self.emit(|| ipc::EventKind::Open {
                    addr: src,
                    door: name,
                });
                self.open(door, src, now);
            }
            MatchEvent::Reset {
                src,
                door,
                stage,
                got,
            } => {
                self.stats.resets += 1;
                let name = self.door_name(door);
                self.knock_line(now, || {
                    format!("{src}: {name}: sequence reset at stage {stage} (unexpected knock on {got})")
                });
                self.emit(|| ipc::EventKind::Reset {
                    addr: src,
                    door: name,
                    stage: stage as u32,
                });
            }
            MatchEvent::Timeout { src, door, stage } => {
                self.stats.timeouts += 1;
                let name = self.door_name(door);
                self.knock_line(now, || {
                    format!("{src}: {name}: sequence timeout (stage {stage})")
                });
                self.emit(|| ipc::EventKind::Timeout {
                    addr: src,
                    door: name,
                    stage: stage as u32,
                });
            }
            MatchEvent::Evicted { src, door, stage } => {
                self.stats.evictions += 1;
                tracing::debug!(%src, door, stage, "attempt evicted");
                // One summary line every 10 s at most: a flood must not flood the log.
                if self
                    .last_evict_log
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                {
                    let n = self.stats.evictions - self.evictions_logged;
                    self.evictions_logged = self.stats.evictions;
                    self.last_evict_log = Some(now);
                    let msg = format!(
                        "attempt table full (MaxAttempts = {}): dropped {n} oldest attempt(s)",
                        self.matcher.cap()
                    );
                    self.line(&msg);
                }
            }
        }
    }

    /// A door opened for `src`: run or refresh its action and record the grant.
    fn open(&mut self, door_idx: usize, src: IpAddr, now: Instant) {
        let Some(door) = self.config.doors.get(door_idx).cloned() else {
            return;
        };
        if door.open.is_empty() {
            self.open_command(&door, src, now);
        } else {
            self.open_native(&door, src, now);
        }
        if door.one_time_sequences.is_some() {
            self.next_one_time_sequence(door_idx);
        }
    }

    fn open_native(&mut self, door: &Door, src: IpAddr, now: Instant) {
        let rules: Vec<FwRule> = door
            .open
            .iter()
            .map(|o| FwRule {
                chain: door.open_chain.clone(),
                src,
                proto: o.proto,
                port: o.port,
                door: door.name.clone(),
            })
            .collect();
        let expires = Some(now + door.cmd_timeout);
        if let Some(id) = self.ledger.find(&door.name, src).map(|g| g.id) {
            self.ledger.refresh(id, expires);
            let msg = format!(
                "{src}: {}: grant refreshed (closes in {}s)",
                door.name,
                door.cmd_timeout.as_secs()
            );
            self.line(&msg);
            self.emit_grant(id, |grant| ipc::EventKind::GrantRefreshed { grant });
            for r in rules {
                self.spawn(
                    Some(id),
                    &door.name,
                    src,
                    TaskKind::Ensure,
                    vec![Action::Exec(r.check()), Action::Exec(r.insert())],
                );
            }
            return;
        }
        let opened = door
            .open
            .iter()
            .map(|o| format!("{}/{}", o.port, o.proto))
            .collect::<Vec<_>>()
            .join(",");
        let actions: Vec<Action> = rules.iter().map(|r| Action::Exec(r.insert())).collect();
        let id = self.ledger.insert(
            &door.name,
            src,
            format!("{opened} ({})", door.open_chain),
            SystemTime::now(),
            expires,
            Close::Rules { rules },
        );
        self.emit_grant(id, |grant| ipc::EventKind::GrantAdded { grant });
        for a in actions {
            let msg = format!("{}: running command: {a}", door.name);
            self.line(&msg);
            self.spawn(Some(id), &door.name, src, TaskKind::Start, vec![a]);
        }
    }

    fn pick<'a>(
        &mut self,
        door: &'a Door,
        v4: Option<&'a String>,
        v6: &'a Command6,
        src: IpAddr,
    ) -> Option<&'a str> {
        if !src.is_ipv6() {
            return v4.map(String::as_str);
        }
        match v6 {
            Command6::Command(c) => Some(c.as_str()),
            Command6::Disabled => None,
            Command6::Fallback => {
                let c = v4?;
                if c.split_whitespace()
                    .next()
                    .is_some_and(|p| p.rsplit('/').next() == Some("iptables"))
                {
                    let msg = format!(
                        "{}: warning: IPv6 knock from {src} runs the IPv4 command (set Start_Command_6/Stop_Command_6, or leave them empty to disable IPv6)",
                        door.name
                    );
                    self.line(&msg);
                }
                Some(c.as_str())
            }
        }
    }

    fn open_command(&mut self, door: &Door, src: IpAddr, now: Instant) {
        let start = self
            .pick(
                door,
                door.start_command.as_ref(),
                &door.start_command_6,
                src,
            )
            .map(|c| action::expand(c, src));
        let stop = self
            .pick(door, door.stop_command.as_ref(), &door.stop_command_6, src)
            .map(|c| action::expand(c, src));
        let Some(start) = start else {
            return;
        };
        // A door whose command is exactly the inverse of an open grant (the seed's closeSSH)
        // closes that grant.
        let mut after = None;
        if let Some(words) = action::plain_words(&start) {
            for id in self.ledger.closed_by(src, &words) {
                if let Some(g) = self.ledger.remove(id) {
                    let msg = format!("{src}: {}: closes the grant of door {}", door.name, g.door);
                    self.line(&msg);
                    let info = Self::grant_info(&g, now);
                    let by_door = door.name.clone();
                    self.emit(|| ipc::EventKind::GrantClosed {
                        grant: info,
                        by_door,
                    });
                    after = self.chains.remove(&id);
                }
            }
        }
        let existing = self.ledger.find(&door.name, src).map(|g| g.id);
        let derived = action::derive_inverse(&start);
        match (stop, derived) {
            (Some(stop), _) => {
                let expires = Some(now + door.cmd_timeout);
                if let Some(id) = existing {
                    self.ledger.refresh(id, expires);
                    let msg = format!(
                        "{src}: {}: grant refreshed (stop command in {}s)",
                        door.name,
                        door.cmd_timeout.as_secs()
                    );
                    self.line(&msg);
                    self.emit_grant(id, |grant| ipc::EventKind::GrantRefreshed { grant });
                    return;
                }
                let id = self.ledger.insert(
                    &door.name,
                    src,
                    start.clone(),
                    SystemTime::now(),
                    expires,
                    Close::StopCommand { command: stop },
                );
                self.emit_grant(id, |grant| ipc::EventKind::GrantAdded { grant });
                let msg = format!("{}: running command: {start}", door.name);
                self.line(&msg);
                self.spawn(
                    Some(id),
                    &door.name,
                    src,
                    TaskKind::Start,
                    vec![Action::Shell(start)],
                );
            }
            (None, Some(d)) => {
                if let Some(id) = existing {
                    self.ledger.refresh(id, None);
                    self.emit_grant(id, |grant| ipc::EventKind::GrantRefreshed { grant });
                    self.spawn(
                        Some(id),
                        &door.name,
                        src,
                        TaskKind::Ensure,
                        vec![Action::Exec(d.check.clone()), Action::Shell(start)],
                    );
                    return;
                }
                let id = self.ledger.insert(
                    &door.name,
                    src,
                    start.clone(),
                    SystemTime::now(),
                    None,
                    Close::Derived {
                        delete: d.delete,
                        check: d.check,
                    },
                );
                self.emit_grant(id, |grant| ipc::EventKind::GrantAdded { grant });
                let msg = format!("{}: running command: {start}", door.name);
                self.line(&msg);
                self.spawn(
                    Some(id),
                    &door.name,
                    src,
                    TaskKind::Start,
                    vec![Action::Shell(start)],
                );
            }
            (None, None) => {
                let msg = format!("{}: running command: {start}", door.name);
                self.line(&msg);
                self.spawn_after(
                    after,
                    None,
                    &door.name,
                    src,
                    TaskKind::Free,
                    vec![Action::Shell(start)],
                );
            }
        }
    }

    fn next_one_time_sequence(&mut self, door_idx: usize) {
        let Some(door) = self.config.doors.get(door_idx).cloned() else {
            return;
        };
        let Some(path) = door.one_time_sequences.as_ref() else {
            return;
        };
        let next = match config::otp::consume(path, &door.sequence) {
            Ok(Some(seq)) => Some(seq),
            Ok(None) => {
                let msg = format!(
                    "no more sequences left in the one time sequences file for door {} --> disabling the door",
                    door.name
                );
                self.line(&msg);
                None
            }
            Err(e) => {
                let msg = format!(
                    "error while disabling used one time sequence for door {} --> disabling the door ({e})",
                    door.name
                );
                self.line(&msg);
                None
            }
        };
        if let Some(d) = self.config.doors.get_mut(door_idx) {
            d.sequence = next.clone().unwrap_or_default();
        }
        self.matcher.set_sequence(door_idx, next);
        self.update_filter();
    }

    fn close_grant(&mut self, g: Grant) {
        let after = self.chains.remove(&g.id);
        for a in g.close.actions() {
            let msg = format!("{}: running command: {a}", g.door);
            self.line(&msg);
        }
        self.spawn_after(
            after,
            None,
            &g.door,
            g.addr,
            TaskKind::Close,
            g.close.actions(),
        );
    }

    /// Spawn `actions` for a grant, after the grant's previous actions finished (so a close
    /// never overtakes the insert it undoes).
    fn spawn(
        &mut self,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        actions: Vec<Action>,
    ) {
        let after = grant.and_then(|id| self.chains.get(&id).cloned());
        let done = self.spawn_after(after, grant, door, addr, kind, actions);
        if let (Some(id), Some(rx)) = (grant, done) {
            self.chains.insert(id, rx);
        }
    }

    fn spawn_after(
        &mut self,
        after: Option<watch::Receiver<bool>>,
        grant: Option<GrantId>,
        door: &str,
        addr: IpAddr,
        kind: TaskKind,
        actions: Vec<Action>,
    ) -> Option<watch::Receiver<bool>> {
        let (tx, rx) = watch::channel(false);
        let exec = self.exec.clone();
        let done_tx = self.done_tx.clone();
        let door = door.to_string();
        self.inflight += 1;
        tokio::spawn(async move {
            if let Some(mut prev) = after {
                let _ = prev.wait_for(|d| *d).await;
            }
            let mut reinserted = false;
            let mut outcome = Outcome::Ok;
            if kind == TaskKind::Ensure {
                // [check, insert]: insert only when the check fails.
                let mut it = actions.into_iter();
                if let (Some(check), Some(insert)) = (it.next(), it.next()) {
                    if !exec.run(check).await.is_ok() {
                        reinserted = true;
                        outcome = exec.run(insert).await;
                    }
                }
            } else {
                for a in actions {
                    let o = exec.run(a).await;
                    if !o.is_ok() {
                        outcome = o;
                    }
                }
            }
            let _ = tx.send(true);
            let _ = done_tx.send(Done {
                grant,
                door,
                addr,
                kind,
                reinserted,
                outcome,
            });
        });
        Some(rx)
    }

    fn on_done(&mut self, d: Done) {
        self.inflight = self.inflight.saturating_sub(1);
        if d.reinserted && d.outcome.is_ok() {
            let msg = format!("{}: {}: rule was missing, re-inserted", d.addr, d.door);
            self.line(&msg);
        }
        match &d.outcome {
            Outcome::Ok => {}
            Outcome::Failed { code, stderr } => {
                self.stats.commands_failed += 1;
                let msg = match code {
                    Some(c) => format!("{}: command returned non-zero status code ({c})", d.door),
                    None => format!("{}: command killed by a signal", d.door),
                };
                self.line(&msg);
                let door = d.door.clone();
                let message = if stderr.is_empty() {
                    msg.clone()
                } else {
                    format!("{msg}: {stderr}")
                };
                self.emit(|| ipc::EventKind::CommandFailed { door, message });
                if !stderr.is_empty() {
                    tracing::warn!(door = %d.door, "command stderr: {stderr}");
                }
            }
            Outcome::SpawnError(e) => {
                self.stats.commands_failed += 1;
                let msg = format!("{}: command failed to start: {e}", d.door);
                self.line(&msg);
                let door = d.door.clone();
                self.emit(|| ipc::EventKind::CommandFailed { door, message: msg });
            }
        }
        if d.kind == TaskKind::Start && !d.outcome.is_ok() {
            if let Some(g) = d.grant.and_then(|id| self.ledger.remove(id)) {
                let msg = format!(
                    "{}: {}: grant dropped: the start command failed",
                    g.addr, g.door
                );
                self.line(&msg);
            }
        }
        if let Some(id) = d.grant {
            if self.ledger.get(id).is_none() {
                self.chains.remove(&id);
            }
        }
    }

    /// Answer a control-socket request.
    pub fn on_request(&mut self, req: ipc::Request) -> ipc::Response {
        use ipc::{Request, Response};
        let now = Instant::now();
        match req {
            Request::Status => Response::Status {
                status: self.status(now),
            },
            Request::Grants => Response::Grants {
                grants: self
                    .ledger
                    .list()
                    .into_iter()
                    .map(|g| Self::grant_info(g, now))
                    .collect(),
            },
            Request::Attempts => Response::Attempts {
                attempts: self
                    .matcher
                    .attempts()
                    .into_iter()
                    .map(|a| ipc::AttemptInfo {
                        addr: a.src,
                        door: self.door_name(a.door),
                        stage: a.stage as u32,
                        of: a.of as u32,
                        age_ms: ms(now.saturating_duration_since(a.started)),
                        remaining_ms: ms(a.deadline.saturating_duration_since(now)),
                    })
                    .collect(),
            },
            Request::Doors => Response::Doors {
                doors: self.config.doors.iter().map(door_info).collect(),
            },
            Request::Revoke { addr, door } => self.revoke(addr, door.as_deref(), now),
            Request::Reload => match self.reload() {
                Ok(warnings) => Response::Reloaded { warnings },
                Err(errors) => Response::ReloadFailed { errors },
            },
            Request::Subscribe => Response::Error {
                message: "subscribe must be the socket server's job".into(),
            },
        }
    }

    fn status(&self, now: Instant) -> ipc::Status {
        let drops = self.capture_stats.as_ref().map_or(0, |s| {
            s.dropped.load(Ordering::Relaxed) + s.if_dropped.load(Ordering::Relaxed)
        });
        ipc::Status {
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            interfaces: self.interfaces.clone(),
            config_file: self.config_path.display().to_string(),
            doors: self.config.doors.len() as u32,
            attempts: self.matcher.len() as u64,
            max_attempts: self.matcher.cap() as u64,
            grants: self.ledger.len() as u64,
            counters: ipc::Counters {
                packets: self.stats.packets,
                stages: self.stats.stages,
                opens: self.stats.opens,
                resets: self.stats.resets,
                timeouts: self.stats.timeouts,
                evictions: self.stats.evictions,
                commands_failed: self.stats.commands_failed,
                kernel_drops: drops,
            },
        }
    }

    /// Close the grants of `addr` (of one door if given) now.
    fn revoke(&mut self, addr: IpAddr, door: Option<&str>, now: Instant) -> ipc::Response {
        let ids: Vec<GrantId> = self
            .ledger
            .list()
            .into_iter()
            .filter(|g| g.addr == addr && door.is_none_or(|d| d == g.door))
            .map(|g| g.id)
            .collect();
        if ids.is_empty() {
            let message = match door {
                Some(d) => format!("no open grant for {addr} on door {d}"),
                None => format!("no open grant for {addr}"),
            };
            return ipc::Response::Error { message };
        }
        let mut revoked = Vec::new();
        for id in ids {
            if let Some(g) = self.ledger.remove(id) {
                let msg = format!("{}: {}: grant revoked", g.addr, g.door);
                self.line(&msg);
                let info = Self::grant_info(&g, now);
                let ev = info.clone();
                self.emit(|| ipc::EventKind::GrantRevoked { grant: ev });
                revoked.push(info);
                self.close_grant(g);
            }
        }
        ipc::Response::Revoked { grants: revoked }
    }

    /// Validate and apply the config file again. On any error, keep running on the old one.
    pub fn reload(&mut self) -> ReloadResult {
        let msg = format!("re-reading config file: {}", self.config_path.display());
        self.line(&msg);
        let parsed = match config::load(&self.config_path) {
            Ok(p) => p,
            Err(errs) => {
                let problems: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
                for p in &problems {
                    let msg = format!("config error: {p}");
                    self.line(&msg);
                }
                self.line("reload failed: keeping the running configuration");
                let errors = problems.clone();
                self.emit(|| ipc::EventKind::ReloadFailed { errors });
                return Err(problems);
            }
        };
        let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
        for w in &warnings {
            let msg = w.clone();
            self.line(&msg);
        }
        let mut new = parsed.config;
        self.overrides.apply(&mut new.options);
        if new.options.interface != self.config.options.interface {
            self.line("warning: Interface changed in the config: restart knockd to capture on the new interface");
        }
        // Reopen the log (logrotate moves it away, then sends SIGHUP). On failure keep the old one.
        let (log_file, syslog) = (new.options.log_file.clone(), new.options.use_syslog);
        if let Err(e) = self.log.reopen(log_file.as_deref(), syslog) {
            let msg = format!("error: {e}; still logging to the previous log file");
            self.line(&msg);
        }
        let keep: Vec<Option<usize>> = self
            .config
            .doors
            .iter()
            .map(|old| {
                new.doors.iter().position(|n| {
                    n.name == old.name && n.sequence == old.sequence && !old.sequence.is_empty()
                })
            })
            .collect();
        let rules: Vec<DoorRule> = new.doors.iter().flat_map(rules_of).collect();
        self.matcher.reconfigure(rules, &keep);
        self.config = new;
        self.update_filter();
        let msg = format!(
            "configuration reloaded: {} door(s)",
            self.config.doors.len()
        );
        self.line(&msg);
        let doors = self.config.doors.len() as u32;
        let w = warnings.clone();
        self.emit(|| ipc::EventKind::ReloadOk { doors, warnings: w });
        Ok(warnings)
    }

    /// Close every grant that has a deadline, and wait (bounded) for running commands.
    async fn shutdown(&mut self) {
        let policy = self.config.options.on_shutdown;
        if policy == ShutdownPolicy::Keep && !self.ledger.is_empty() {
            let msg = format!(
                "keeping {} grant(s) open (OnShutdown = keep): the next start closes them on schedule",
                self.ledger.len()
            );
            self.line(&msg);
        }
        for id in self.ledger.ids() {
            let close = match policy {
                ShutdownPolicy::Keep => false,
                ShutdownPolicy::CloseAll => true,
                ShutdownPolicy::Close => self.ledger.get(id).is_some_and(|g| g.expires.is_some()),
            };
            if close {
                if let Some(g) = self.ledger.remove(id) {
                    let msg = format!("{}: {}: closing grant at shutdown", g.addr, g.door);
                    self.line(&msg);
                    self.close_grant(g);
                }
            }
        }
        let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.inflight > 0 {
            match tokio::time::timeout_at(give_up, self.done_rx.recv()).await {
                Ok(Some(d)) => self.on_done(d),
                _ => break,
            }
        }
        self.persist();
        self.line("shutting down");
    }
}

#[cfg(test)]
mod tests;
