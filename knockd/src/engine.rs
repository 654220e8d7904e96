//! The engine task: the one owner of knock state (attempts, grants, config).
//!
//! Inputs arrive on channels (captured packets, control messages, action completions) and
//! timers; outputs are log lines, firewall actions (spawned, never awaited inline) and filter
//! updates for the capture thread. Capture is therefore never blocked by a command.

use crate::action::{Executor, Outcome};
use crate::capture::{CaptureMsg, CaptureStats};
use crate::config::{self, Config, Door, ShutdownPolicy};
use crate::firewall::nftables::side::{self as nft_side, NftSide};
use crate::firewall::{Firewall, FirewallQueue};
use crate::grants::{Grant, GrantId, Ledger};
use crate::knocklog::LogSink;
use crate::matcher::{DoorRule, MatchEvent, Matcher, Refusal, Settings};
use crate::packet::Packet;
use crate::state;
use knock_ipc as ipc;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Semaphore};

/// The engine's clock: tokio's, so that tests with paused time see timers, deadlines and
/// retries move together (the same as `Instant::now()` when time is not paused).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
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
    /// A reload whose config file was already read, parsed and made ready off the engine task
    /// (a large config takes a while to parse and to index; the engine only swaps it in).
    ReloadLoaded(
        Box<crate::reload::Prepared>,
        Option<oneshot::Sender<ReloadResult>>,
    ),
    /// The config in force and the local addresses (O(1)): what a reload prepares against.
    Snapshot(oneshot::Sender<crate::reload::Snapshot>),
}

/// Commands (door commands, derived checks) running at once.
pub const POOL_SIZE: usize = 4;
/// Close commands running at once, besides the pool: a flood of starts never delays a close.
pub const CLOSE_POOL_SIZE: usize = 2;
/// Command tasks admitted at once (running or waiting for the pool); more are refused.
pub const POOL_QUEUE: usize = 64;
/// A failed close is retried after this, doubling up to [`CLOSE_RETRY_MAX`].
pub const CLOSE_RETRY_FIRST: Duration = Duration::from_secs(1);
pub const CLOSE_RETRY_MAX: Duration = Duration::from_secs(60);
/// A re-knock checks an open grant's rules at most this often.
pub const REFRESH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Capacity of the live event channel; a subscriber further behind skips ahead (`Lagged`).
pub const EVENT_BUFFER: usize = 4096;

/// Counters since start (the wire type; `kernel_drops` is filled in from pcap at status time).
pub type Stats = ipc::Counters;

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
    /// At start: are a restored grant's rules still there?
    Verify,
}

/// Actions on one (door, source) run in order, across grant ids.
type Key = (String, IpAddr);

#[derive(Debug)]
struct Done {
    grant: Option<GrantId>,
    door: String,
    addr: IpAddr,
    kind: TaskKind,
    /// Ran through the command pool (counted against its queue), not the firewall queue.
    pooled: bool,
    /// For Ensure: whether the rule had to be re-inserted.
    reinserted: bool,
    /// Firewall ops: how many, and how many found their rule absent.
    total: usize,
    absent: usize,
    outcome: Outcome,
}

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("packet capture stopped: {0}")]
    Capture(String),
}

pub struct Engine<E: Executor, L: LogSink> {
    /// Shared with reloads being prepared off this task (see [`Control::Snapshot`]).
    config: Arc<Config>,
    config_path: PathBuf,
    matcher: Matcher,
    ledger: Ledger,
    exec: E,
    firewall: Arc<dyn Firewall>,
    fw_queue: Option<FirewallQueue>,
    /// The nftables side: the backend of native doors with `Firewall = nftables`, its queue,
    /// and what its tasks send back (kernel listings, table updates).
    nft: NftSide,
    /// Commands running at once, for starts and for closes (closes never wait behind starts).
    pool: Arc<Semaphore>,
    close_pool: Arc<Semaphore>,
    /// Command tasks admitted and not finished (starts, checks, free commands).
    pooled: usize,
    /// New grants waiting for their door's start rate, per door name.
    starts: HashMap<String, starts::DoorStarts>,
    refusals_logged: u64,
    last_refusal_log: Option<Instant>,
    log: L,
    set_filter: Box<dyn FnMut(String) + Send>,
    filter: String,
    local: Vec<IpAddr>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    inflight: usize,
    chains: HashMap<Key, watch::Receiver<bool>>,
    chains_gc_at: usize,
    stats: Stats,
    events: Vec<MatchEvent>,
    evictions_logged: u64,
    last_evict_log: Option<Instant>,
    log_budget: crate::ratelimit::LogBudget,
    overrides: config::Overrides,
    events_tx: broadcast::Sender<ipc::Event>,
    state_file: Option<PathBuf>,
    state_writer: Option<crate::statewriter::StateWriter>,
    state_errors_tx: mpsc::UnboundedSender<String>,
    state_errors_rx: mpsc::UnboundedReceiver<String>,
    started: Instant,
    interfaces: Vec<String>,
    capture_stats: Option<Arc<CaptureStats>>,
    /// One-time sequences used but not yet recorded in their file (the rewrite failed): never
    /// accepted again, recorded at the next reload that can.
    used_otp: Vec<(PathBuf, Vec<config::Step>)>,
    /// What the state file was last sent of the replay memory (the matcher's generation) and
    /// whether `used_otp` changed since.
    replay_sent: u64,
    otp_dirty: bool,
    /// TOTP doors: the clock, each door's current step, and the next step boundary.
    wall_clock: totp::WallClock,
    totp_steps: Vec<Option<u64>>,
    totp_next: Option<Instant>,
    /// TOTP doors: the steps just outside the window, to notice clients' clock skew.
    skew: crate::skew::SkewWatch,
}

fn rules_of(door: &Door) -> Vec<DoorRule> {
    vec![DoorRule::from(door)]
}

/// The matcher's rules of a door set.
pub(crate) fn door_rules(doors: &[Door]) -> Vec<DoorRule> {
    doors.iter().flat_map(rules_of).collect()
}

/// For each door of `old`, the door of `new` that carries its attempts over: same name and
/// the same sequence (static doors) or the same secret and settings (rotating doors). Door
/// names are unique: a map keeps this linear (100,000 doors).
pub(crate) fn keep_map(old: &Config, new: &Config) -> Vec<Option<usize>> {
    let by_name: HashMap<&str, usize> = new
        .doors
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    old.doors
        .iter()
        .map(|old| {
            by_name.get(old.name.as_str()).copied().filter(|&i| {
                let d = &new.doors[i];
                (d.sequence == old.sequence && !old.sequence.is_empty())
                    || (d.totp.is_some() && d.totp == old.totp)
            })
        })
        .collect()
}

/// The capture filter of `config` for `local`; None when a door rotates (TOTP: its ports
/// depend on the clock, the engine builds that filter).
pub(crate) fn filter_for(config: &Config, local: &[IpAddr]) -> Option<String> {
    if config.doors.iter().any(|d| d.totp.is_some()) {
        return None;
    }
    Some(crate::bpf::expression(&config.doors, local))
}

/// Drop `t` on a thread of its own: freeing 100,000 doors' tables (a million small blocks) is
/// not the engine's work. The thread waits [`RETIRE_DELAY`] first: freeing while the engine
/// finishes the reload (and allocates) made both contend for the allocator, which cost the
/// engine about as much as the freeing itself.
fn retire<T: Send + 'static>(t: T) {
    // If no thread can be started, `t` is dropped here, which is merely slower.
    let _ = std::thread::Builder::new()
        .name("knockd-drop".into())
        .spawn(move || {
            std::thread::sleep(RETIRE_DELAY);
            drop(t);
        });
}

/// See [`retire`].
const RETIRE_DELAY: Duration = Duration::from_millis(100);

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// `firewall` applies native doors' rules (`IptablesRestore` in the daemon, a
    /// `RecordingFirewall` in tests); `exec` runs door commands. `set_filter` receives every
    /// new BPF expression (at start, on reload, on address change).
    pub fn new(
        config: Config,
        config_path: PathBuf,
        exec: E,
        firewall: Arc<dyn Firewall>,
        log: L,
        set_filter: Box<dyn FnMut(String) + Send>,
    ) -> Self {
        let rules = door_rules(&config.doors);
        let config = Arc::new(config);
        let matcher = Matcher::with_settings(rules, Settings::from(&*config));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (events_tx, _) = broadcast::channel(EVENT_BUFFER);
        let (state_errors_tx, state_errors_rx) = mpsc::unbounded_channel();
        let mut e = Engine {
            config,
            config_path,
            matcher,
            ledger: Ledger::default(),
            exec,
            firewall,
            fw_queue: None,
            nft: NftSide::default(),
            pool: Arc::new(Semaphore::new(POOL_SIZE)),
            close_pool: Arc::new(Semaphore::new(CLOSE_POOL_SIZE)),
            pooled: 0,
            starts: HashMap::new(),
            refusals_logged: 0,
            last_refusal_log: None,
            log,
            set_filter,
            filter: String::new(),
            local: Vec::new(),
            done_tx,
            done_rx,
            inflight: 0,
            chains: HashMap::new(),
            chains_gc_at: 64,
            stats: Stats::default(),
            events: Vec::new(),
            evictions_logged: 0,
            last_evict_log: None,
            log_budget: Default::default(),
            overrides: config::Overrides::default(),
            events_tx,
            state_file: None,
            state_writer: None,
            state_errors_tx,
            state_errors_rx,
            started: now(),
            interfaces: Vec::new(),
            capture_stats: None,
            used_otp: Vec::new(),
            replay_sent: 0,
            otp_dirty: false,
            wall_clock: totp::system_wall_clock,
            totp_steps: Vec::new(),
            totp_next: None,
            skew: crate::skew::SkewWatch::default(),
        };
        e.rotate_totp(tokio::time::Instant::now().into_std(), true);
        e.update_filter();
        e
    }

    /// Replace the wall clock of TOTP doors (tests).
    pub fn set_wall_clock(&mut self, clock: totp::WallClock) {
        self.wall_clock = clock;
        self.rotate_totp(tokio::time::Instant::now().into_std(), true);
        self.update_filter();
    }

    /// The backend for `Firewall = nftables` (default: [`crate::firewall::nftables::NftFirewall`];
    /// a `RecordingFirewall` in tests).
    pub fn with_nft_firewall(mut self, fw: Arc<dyn Firewall>) -> Self {
        self.nft = NftSide::new(fw);
        self
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
            expires_in_ms: g.expires.filter(|_| g.closing.is_none()).map(|t| {
                u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
            }),
            closes: g.close.describe(),
            refreshes: g.refreshes,
            kernel_expires_in_ms: if g.close.kernel_expires() {
                g.expires.map(|t| {
                    u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
                })
            } else {
                None
            },
            closing: g.closing.is_some(),
            close_error: g.closing.as_ref().and_then(|c| c.last_error.clone()),
        }
    }

    fn emit_grant(&self, id: GrantId, kind: fn(ipc::GrantInfo) -> ipc::EventKind) {
        if let Some(g) = self.ledger.get(id) {
            let info = Self::grant_info(g, now());
            self.emit(|| kind(info));
        }
    }

    /// The firewall queue (started on first use, on the engine's runtime).
    fn fw(&mut self) -> FirewallQueue {
        let fw = &self.firewall;
        self.fw_queue
            .get_or_insert_with(|| FirewallQueue::start(fw.clone()))
            .clone()
    }

    /// `MaxGrants`: open grants at most.
    pub fn max_grants(&self) -> usize {
        self.config.max_grants()
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

    /// [`Engine::knock_line`] for a line naming `door`: the name is borrowed, not copied, so a
    /// flood of knocks past the log budget costs no allocation.
    fn door_knock_line(&mut self, now: Instant, door: usize, msg: impl FnOnce(&str) -> String) {
        if self.log_budget.allow(now) {
            let name = self.config.doors.get(door).map_or("", |d| d.name.as_str());
            self.log.line(&msg(name));
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
        // Exact for small configs, the union of knock ports for large ones (cheap to build).
        // Doors without a sequence contribute nothing, so no filtered copy of 100,000 doors;
        // TOTP doors (rare) get a copy carrying their accepted steps' ports.
        let f = if self.config.doors.iter().any(|d| d.totp.is_some()) {
            let doors: Vec<Door> = self
                .config
                .doors
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let mut d = d.clone();
                    if d.totp.is_some() {
                        d.sequence = self.totp_filter_steps(i);
                    }
                    d
                })
                .collect();
            crate::bpf::expression(&doors, &self.local)
        } else {
            crate::bpf::expression(&self.config.doors, &self.local)
        };
        self.set_filter_expr(f);
    }

    /// The capture filter for the doors in force (built by [`filter_for`] here or off the
    /// engine task for a reload).
    fn set_filter_expr(&mut self, f: String) {
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
            // Not biased: packets, timers, completions and control requests all get their
            // turn, whatever the packet rate (a batch is at most capture::MAX_BATCH packets).
            tokio::select! {
                () = &mut shutdown => break,
                Some(c) = control.recv() => self.on_control(c),
                Some(d) = self.done_rx.recv() => self.on_done(d),
                Some(ev) = self.nft.recv() => self.on_nft(ev),
                msg = packets.recv() => match msg {
                    Some(CaptureMsg::Batch(batch, at)) => {
                        for p in &batch {
                            self.on_packet(p, at);
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
        [
            self.matcher.next_deadline(),
            self.ledger.next_deadline(),
            self.totp_next,
            self.ledger.next_recheck(),
            self.ledger.next_retry(),
            self.starts_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn on_control(&mut self, c: Control) {
        match c {
            Control::Reload(reply) => {
                let r = self.reload();
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Control::ReloadLoaded(prepared, reply) => {
                let r = self.reload_prepared(*prepared);
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Control::Snapshot(reply) => {
                let _ = reply.send(crate::reload::Snapshot {
                    config: self.config.clone(),
                    local: self.local.clone(),
                });
            }
            // nftables: the list follows the kernel (read off this task, answered when it is in).
            Control::Request(ipc::Request::Grants, reply)
                if nft_side::lists_kernel(&self.config, &self.ledger) =>
            {
                self.list_from_kernel(reply);
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
        if !self.skew.is_empty()
            && p.proto == crate::config::Proto::Tcp
            && p.tcp_flags & (crate::config::flag::SYN | crate::config::flag::ACK)
                == crate::config::flag::SYN
        {
            if let Some(skew) = self.skew.on_knock(p.src, p.dport) {
                self.on_skew(skew, at);
            }
        }
    }

    pub fn on_timer(&mut self, now: Instant) {
        if self.totp_next.is_some_and(|t| now >= t) && self.rotate_totp(now, false) {
            self.update_filter();
        }
        let mut events = std::mem::take(&mut self.events);
        self.matcher.expire(now, &mut events);
        for ev in events.drain(..) {
            self.on_match(ev, now);
        }
        self.events = events;
        for id in self.ledger.expire(now) {
            let Some(g) = self.ledger.get(id) else {
                continue;
            };
            let info = Self::grant_info(g, now);
            let (addr, door) = (g.addr, g.door.clone());
            if g.close.kernel_expires() {
                // The kernel removed the elements at this deadline: the ledger only follows.
                self.ledger.remove(id);
                let msg = format!("{addr}: {door}: grant expired (removed by the kernel)");
                self.line(&msg);
                self.emit(|| ipc::EventKind::GrantExpired { grant: info });
                continue;
            }
            let msg = format!("{addr}: {door}: command timeout");
            self.line(&msg);
            self.emit(|| ipc::EventKind::GrantExpired { grant: info });
            self.close_id(id);
        }
        for g in self.ledger.due_retries(now) {
            let failures = g.closing.as_ref().map_or(0, |c| c.failures);
            let msg = format!(
                "{}: {}: closing again (attempt {})",
                g.addr,
                g.door,
                failures + 1
            );
            self.line(&msg);
            self.close_grant(g);
        }
        for id in self.ledger.due_rechecks(now) {
            self.check_grant(id, now);
        }
        self.serve_starts(now);
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
                self.door_knock_line(now, door, |name| format!("{src}: {name}: Stage {stage}"));
                self.emit(|| ipc::EventKind::Stage {
                    addr: src,
                    door: self.door_name(door),
                    stage: stage as u32,
                    of: of as u32,
                });
            }
            MatchEvent::Open { src, door } => {
                self.stats.opens += 1;
                // Logs OPEN SESAME unless the door's StartRate queue refuses it (a flood of
                // completions is counted and summarised instead of logged line by line).
                self.open(door, src, now);
            }
            MatchEvent::Reset {
                src,
                door,
                stage,
                got,
            } => {
                self.stats.resets += 1;
                self.door_knock_line(now, door, |name| {
                    format!("{src}: {name}: sequence reset at stage {stage} (unexpected knock on {got})")
                });
                self.emit(|| ipc::EventKind::Reset {
                    addr: src,
                    door: self.door_name(door),
                    stage: stage as u32,
                });
            }
            MatchEvent::Timeout { src, door, stage } => {
                self.stats.timeouts += 1;
                self.door_knock_line(now, door, |name| {
                    format!("{src}: {name}: sequence timeout (stage {stage})")
                });
                self.emit(|| ipc::EventKind::Timeout {
                    addr: src,
                    door: self.door_name(door),
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
                        "attempt table full (MaxAttempts = {}, MaxAttemptsPerNetwork = {}): evicted {n} attempt(s) at stage 1",
                        self.matcher.cap(),
                        self.matcher.settings().per_network
                    );
                    self.line(&msg);
                }
            }
            MatchEvent::Scanner { src, strays } => {
                self.stats.scanners += 1;
                let penalty = self.matcher.settings().sweep_penalty.as_secs_f64();
                self.knock_line(now, || {
                    format!("{src}: sweep guard: {strays} non-knock ports during a knock: treated as a scanner, attempts ended, no new attempt on fixed-sequence doors for {penalty}s")
                });
            }
            MatchEvent::Swept { src, door, stage } => {
                self.stats.resets += 1;
                let name = self.door_name(door);
                self.emit(|| ipc::EventKind::Reset {
                    addr: src,
                    door: name,
                    stage: stage as u32,
                });
            }
            MatchEvent::Refused {
                src,
                door,
                reason: Refusal::Replay,
            } => {
                self.stats.refused_replay += 1;
                let name = self.door_name(door);
                let step = self.totp_step(door).unwrap_or_default();
                let msg = format!(
                    "{src}: {name}: sequence refused: {} (current step {step})",
                    Refusal::Replay.as_str()
                );
                self.line(&msg);
            }
            MatchEvent::Refused { src, door, reason } => {
                self.stats.refused += 1;
                let name = self.door_name(door);
                tracing::debug!(%src, door = %name, reason = reason.as_str(), "first knock refused");
                self.knock_line(now, || {
                    format!("{src}: {name}: first knock refused: {}", reason.as_str())
                });
            }
        }
    }

    /// Validate and apply the config file again. On any error, keep running on the old one.
    pub fn reload(&mut self) -> ReloadResult {
        let loaded = config::load(&self.config_path);
        self.reload_with(loaded)
    }

    /// Apply a config file read and parsed elsewhere (everything else done here).
    pub fn reload_with(&mut self, loaded: config::Loaded) -> ReloadResult {
        self.reload_prepared(crate::reload::Prepared { loaded, work: None })
    }

    /// Apply a reload made ready off this task ([`crate::reload::prepare`]): when it was
    /// prepared against the config still in force, only the swap and the attempts' move are
    /// left here; otherwise (another reload, a one-time sequence used in between) the tables
    /// are built here, as without preparation.
    pub fn reload_prepared(&mut self, prepared: crate::reload::Prepared) -> ReloadResult {
        let crate::reload::Prepared { loaded, work } = prepared;
        let work = work.filter(|w| Arc::ptr_eq(&w.base, &self.config));
        let msg = format!("re-reading config file: {}", self.config_path.display());
        self.line(&msg);
        let parsed = match loaded {
            Ok(p) => p,
            Err(errs) => {
                // logrotate moved the file away and sent SIGHUP: reopen it all the same, before
                // logging why the reload failed.
                let (log_file, syslog) = (
                    self.config.options.log_file.clone(),
                    self.config.options.use_syslog,
                );
                if let Err(e) = self.log.reopen(log_file.as_deref(), syslog) {
                    let msg = format!("error: {e}; still logging to the previous log file");
                    self.line(&msg);
                }
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
        // A config of 100,000 doors can have 200,000 warnings: log a bounded number (writing
        // them all took seconds on this task, holding grants open past their deadline).
        for w in warnings.iter().take(config::MAX_LOGGED_WARNINGS) {
            let msg = w.clone();
            self.line(&msg);
        }
        if warnings.len() > config::MAX_LOGGED_WARNINGS {
            let msg = format!(
                "warning: {} more warning(s) not logged (knockd -t lists them all)",
                warnings.len() - config::MAX_LOGGED_WARNINGS
            );
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
        // Switching backends moves every grant between two firewalls while knocks keep
        // coming: only a restart does it (no grant can race the switch then).
        let (old_fw, new_fw) = (self.config.options.firewall, new.options.firewall);
        if let Err(problem) = nft_side::switch_refused(old_fw, new_fw, &self.config_path) {
            let msg = format!("config error: {problem}");
            self.line(&msg);
            self.line("reload failed: keeping the running configuration");
            let errors = vec![problem];
            let e = errors.clone();
            self.emit(|| ipc::EventKind::ReloadFailed { errors: e });
            return Err(errors);
        }
        let otp_pending = !self.used_otp.is_empty();
        let (keep, tables, filter, base) = match work {
            Some(w) => {
                let filter = w.filter.filter(|_| w.local == self.local);
                (w.keep, Some(w.matcher), filter, Some(w.base))
            }
            None => (keep_map(&self.config, &new), None, None, None),
        };
        self.record_used_otp(&mut new);
        // The replay memory as it stands: taken in again below by the doors that derive the
        // same sequences (kept doors keep it anyway; this also covers a renamed door).
        let replay = self.saved_replay();
        // A one-time sequence recorded just now changed a door: its tables are built here.
        let tables = match tables {
            Some(t) if !otp_pending => t,
            _ => crate::matcher::Prepared::new(door_rules(&new.doors)),
        };
        let settings = Settings::from(&new);
        let retired = self.matcher.reconfigure_prepared(tables, &keep, settings);
        self.totp_steps.clear();
        let old = std::mem::replace(&mut self.config, Arc::new(new));
        retire((retired, old, base, keep));
        self.sync_nft_table();
        self.rotate_totp(tokio::time::Instant::now().into_std(), true);
        self.remember_replays(replay);
        match filter {
            Some(f) => self.set_filter_expr(f),
            None => self.update_filter(),
        }
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

    /// After a reload with nftables: the grants of doors that are gone or whose ports changed
    /// are closed, their elements put again where other grants hold them, and the table
    /// updated in one transaction ([`nft_side::reload`]).
    fn sync_nft_table(&mut self) {
        if self.config.options.firewall != config::FirewallKind::Nftables {
            return;
        }
        let now = now();
        let r = nft_side::reload(&mut self.ledger, &self.config, now);
        for g in r.gone {
            let msg = format!(
                "{}: {}: grant closed: the door's ports changed at reload",
                g.addr, g.door
            );
            self.line(&msg);
            let info = Self::grant_info(&g, now);
            self.emit(|| ipc::EventKind::GrantRevoked { grant: info });
        }
        for (door, addr, ops) in r.keep {
            self.submit_nft(None, &door, addr, TaskKind::Free, ops);
        }
        self.nft.update_table(r.script);
    }

    /// What the nftables side's tasks send back.
    fn on_nft(&mut self, ev: nft_side::NftEvent) {
        match ev {
            nft_side::NftEvent::Listed(v) => self.on_kernel_view(v),
            nft_side::NftEvent::TableUpdated(Ok(())) => {}
            nft_side::NftEvent::TableUpdated(Err(e)) => {
                self.stats.commands_failed += 1;
                let msg = format!("error: cannot update table inet knockd: {e}");
                self.line(&msg);
            }
        }
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
        let kernel = self
            .ledger
            .list()
            .iter()
            .filter(|g| g.close.kernel_expires() && g.closing.is_none())
            .count();
        if kernel > 0 {
            let msg = format!(
                "leaving {kernel} nftables grant(s) to the kernel: they close at their deadline, and table inet knockd keeps the doors' ports closed"
            );
            self.line(&msg);
        }
        for id in self.ledger.ids() {
            if self
                .ledger
                .get(id)
                .is_some_and(|g| g.close.kernel_expires())
            {
                continue;
            }
            let close = match policy {
                ShutdownPolicy::Keep => false,
                ShutdownPolicy::CloseAll => true,
                ShutdownPolicy::Close => self.ledger.get(id).is_some_and(|g| g.expires.is_some()),
            };
            if close {
                if let Some(g) = self.ledger.begin_close(id) {
                    let msg = format!("{}: {}: closing grant at shutdown", g.addr, g.door);
                    self.line(&msg);
                    self.close_grant(g);
                }
            }
        }
        // Closes waiting for a retry get one more try now.
        let far = now() + Duration::from_secs(365 * 86_400);
        for g in self.ledger.due_retries(far) {
            self.close_grant(g);
        }
        let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.inflight > 0 {
            match tokio::time::timeout_at(give_up, self.done_rx.recv()).await {
                Ok(Some(d)) => self.on_done(d),
                _ => break,
            }
        }
        let left = self.ledger.closing();
        if left > 0 {
            let msg = format!(
                "error: {left} grant(s) could not be closed: kept in the state file as closing, the next start closes them (see knockctl list)"
            );
            self.line(&msg);
        }
        self.flush_state().await;
        self.line("shutting down");
    }
}

mod open;
mod persist;
mod requests;
mod starts;
mod tasks;
pub mod totp;

#[cfg(test)]
mod nft_tests;
#[cfg(test)]
mod reload_cost;
#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod reply_cost;
#[cfg(test)]
mod tests;
