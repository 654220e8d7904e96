//! The engine task: the one owner of knock state (attempts, grants, config).
//!
//! Inputs arrive on channels (captured packets, control messages, action completions) and
//! timers; outputs are log lines, firewall actions (spawned, never awaited inline) and filter
//! updates for the capture thread. Capture is therefore never blocked by a command.

use crate::action::{self, Action, Executor, FwRule, Outcome};
use crate::config::{self, Command6, Config, Door};
use crate::grants::{Close, Grant, GrantId, Ledger};
use crate::knocklog::LogSink;
use crate::matcher::{DoorRule, MatchEvent, Matcher};
use crate::packet::Packet;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// From the capture thread.
#[derive(Debug)]
pub enum CaptureMsg {
    Packet(Packet, Instant),
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
}

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
        };
        e.update_filter();
        e
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
                    Some(CaptureMsg::Packet(p, at)) => {
                        self.on_packet(&p, at);
                        // Drain what is already queued before looking at timers again.
                        for _ in 0..256 {
                            match packets.try_recv() {
                                Ok(CaptureMsg::Packet(p, at)) => self.on_packet(&p, at),
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
                src, door, stage, ..
            } => {
                self.stats.stages += 1;
                let msg = format!("{src}: {}: Stage {stage}", self.door_name(door));
                self.line(&msg);
            }
            MatchEvent::Open { src, door } => {
                self.stats.opens += 1;
                let msg = format!("{src}: {}: OPEN SESAME", self.door_name(door));
                self.line(&msg);
                self.open(door, src, now);
            }
            MatchEvent::Reset {
                src,
                door,
                stage,
                got,
            } => {
                self.stats.resets += 1;
                let msg = format!(
                    "{src}: {}: sequence reset at stage {stage} (unexpected knock on {got})",
                    self.door_name(door)
                );
                self.line(&msg);
            }
            MatchEvent::Timeout { src, door, stage } => {
                self.stats.timeouts += 1;
                let msg = format!(
                    "{src}: {}: sequence timeout (stage {stage})",
                    self.door_name(door)
                );
                self.line(&msg);
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
            Close::Rules(rules),
        );
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
                if action::plain_words(c)
                    .or_else(|| Some(c.split_whitespace().map(String::from).collect()))
                    .and_then(|w| w.first().cloned())
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
                    return;
                }
                let id = self.ledger.insert(
                    &door.name,
                    src,
                    start.clone(),
                    SystemTime::now(),
                    expires,
                    Close::StopCommand(stop),
                );
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
                if !stderr.is_empty() {
                    tracing::warn!(door = %d.door, "command stderr: {stderr}");
                }
            }
            Outcome::SpawnError(e) => {
                self.stats.commands_failed += 1;
                let msg = format!("{}: command failed to start: {e}", d.door);
                self.line(&msg);
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
                return Err(problems);
            }
        };
        let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
        for w in &warnings {
            let msg = w.clone();
            self.line(&msg);
        }
        let new = parsed.config;
        if new.options.interface != self.config.options.interface {
            self.line("warning: Interface changed in the config: restart knockd to capture on the new interface");
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
        Ok(warnings)
    }

    /// Close every grant that has a deadline, and wait (bounded) for running commands.
    async fn shutdown(&mut self) {
        for id in self.ledger.ids() {
            let has_deadline = self.ledger.get(id).is_some_and(|g| g.expires.is_some());
            if has_deadline {
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
        self.line("shutting down");
    }
}

#[cfg(test)]
mod tests;
