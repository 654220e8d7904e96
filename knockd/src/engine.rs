//! The engine task: the one owner of knock state, and the loop that routes between its owners.
//!
//! Inputs arrive on channels (captured packets, control messages, the results of commands and
//! firewall ops) and timers; outputs are log lines, live events, firewall actions (handed to
//! the command runner, never awaited inline) and filter updates for the capture thread.
//! Capture is therefore never blocked by a command.
//!
//! The state is split into owners, each a type with its own fields in its own file:
//! - the [`Matcher`] (attempts) and the grant [`Ledger`], pure;
//! - `runner`: the command runner (pools, in-flight tasks, the order per (door, source));
//! - `persistence`: the state file's writer, unrecorded one-time sequences, the replay memory
//!   sent;
//! - `totp`: the TOTP clock of rotating doors;
//! - `events`: log lines, counters and live events (with `throttle`, the log-rate limits);
//! - `starts`: the fair start queues per door;
//! - `filter_feed`: the capture filter last sent and the local addresses;
//! - `spa_drop`: the SPA port's DROP rule with `Firewall = iptables`.
//!
//! The files named for what the engine does route between them: `open` (a door opens),
//! `tasks` (handing tasks to the runner, their results, closes), `timer`, `apply` (applying a
//! reload), `restore` (taking over a previous run's state), `requests` (control requests).
//! The nftables side is an owner of its own ([`NftSide`], in the nftables wing). The messages
//! in and out are in `messages`.

use crate::action::Executor;
use crate::capture::{CaptureMsg, CaptureStats};
use crate::config::{self, Config, ShutdownPolicy};
use crate::firewall::nftables::side::{self as nft_side, NftSide};
use crate::firewall::Firewall;
use crate::grants::Ledger;
use crate::knocklog::LogSink;
use crate::matcher::{MatchEvent, Matcher, Settings};
use crate::packet::Packet;
use events::Events;
use filter_feed::FilterFeed;
use knock_ipc as ipc;
use persistence::Persistence;
use runner::Runner;
use starts::Starts;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use totp::TotpClock;

pub use events::{Stats, EVENT_BUFFER};
pub use messages::{request_reload, Control, EngineError};
pub use runner::{CLOSE_POOL_SIZE, POOL_QUEUE, POOL_SIZE};

/// The engine's clock: tokio's, so that tests with paused time see timers, deadlines and
/// retries move together (the same as `Instant::now()` when time is not paused).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A failed close is retried after this, doubling up to [`CLOSE_RETRY_MAX`].
pub const CLOSE_RETRY_FIRST: Duration = Duration::from_secs(1);
pub const CLOSE_RETRY_MAX: Duration = Duration::from_secs(60);
/// A grant's own budget of re-knock checks: one per this, after a burst of
/// [`crate::grants::CHECK_BURST`]; beyond it only the ledger's quick lane
/// ([`crate::grants::LANE_PER_SEC`] a second for all grants) runs one at once.
pub const REFRESH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub struct Engine<E: Executor, L: LogSink> {
    /// The config in force; shared with reloads being prepared off this task (see
    /// [`Control::Snapshot`]).
    config: Arc<Config>,
    /// The file a reload re-reads, and the command-line settings applied over it.
    config_path: PathBuf,
    overrides: config::Overrides,
    matcher: Matcher,
    ledger: Ledger,
    runner: Runner<E>,
    events: Events<L>,
    persistence: Persistence,
    totp: TotpClock,
    starts: Starts,
    filter: FilterFeed,
    /// The nftables side: the backend of native doors with `Firewall = nftables`, its queue,
    /// and what its tasks send back (kernel listings, table updates).
    nft: NftSide,
    /// The SPA port's DROP rule with `Firewall = iptables`.
    spa_drop: spa_drop::SpaDropSide,
    /// For `status`.
    started: Instant,
    interfaces: Vec<String>,
    capture_stats: Option<Arc<CaptureStats>>,
    /// What the matcher reported for one batch or timer (reused: no allocation per packet).
    matched: Vec<MatchEvent>,
    /// Single-packet knocks: the gate, and UDP packets to the SPA port seen by the engine /
    /// handed over as datagrams of the right length (their difference: refused by length).
    spa: crate::spa::Gate,
    spa_udp: u64,
    spa_seen: u64,
}

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
        let rules = crate::reload::door_rules(&config.doors);
        let config = Arc::new(config);
        let matcher = Matcher::with_settings(rules, Settings::from(&*config));
        let (spa, spa_lines) = crate::spa::Gate::new(&config, spa::wall_ms());
        let mut e = Engine {
            config,
            config_path,
            overrides: config::Overrides::default(),
            matcher,
            ledger: Ledger::default(),
            runner: Runner::new(exec, firewall),
            events: Events::new(log),
            persistence: Persistence::default(),
            totp: TotpClock::default(),
            starts: Starts::default(),
            filter: FilterFeed::new(set_filter),
            nft: NftSide::default(),
            spa_drop: spa_drop::SpaDropSide::default(),
            started: now(),
            interfaces: Vec::new(),
            capture_stats: None,
            matched: Vec::new(),
            spa,
            spa_udp: 0,
            spa_seen: 0,
        };
        for l in spa_lines {
            e.line(&l);
        }
        e.nft.set_spec(&e.config);
        e.rotate_totp(now(), true);
        e.update_filter();
        e
    }

    /// Replace the wall clock of TOTP doors (tests).
    pub fn set_wall_clock(&mut self, clock: totp::WallClock) {
        self.totp.set_wall_clock(clock);
        self.rotate_totp(now(), true);
        self.update_filter();
    }

    /// The backend for `Firewall = nftables` (default: [`crate::firewall::nftables::NftFirewall`];
    /// a `RecordingFirewall` in tests).
    pub fn with_nft_firewall(mut self, fw: Arc<dyn Firewall>) -> Self {
        self.nft.set_firewall(fw);
        self
    }

    /// `Firewall = nftables`: notice at once when another program deletes something of the
    /// table (`nft flush ruleset`), and re-create it. Without this, a failed element change
    /// still has the table checked.
    pub fn watch_nft_table(&self) {
        if self.config.options.firewall == config::FirewallKind::Nftables {
            if let Err(e) = self.nft.watch() {
                tracing::warn!(
                    "nftables: {e}: a removed table is noticed at the next element change only"
                );
            }
        }
    }

    /// Command-line settings re-applied over the config file on every reload.
    pub fn with_overrides(mut self, overrides: config::Overrides) -> Self {
        self.overrides = overrides;
        self
    }

    /// Persist the grant ledger and the memories to this file (see `persistence`).
    pub fn with_state_file(mut self, path: PathBuf) -> Self {
        self.persistence.set_path(path);
        self
    }

    /// Send live events on `tx` (made before the engine: [`crate::serve::event_channel`]).
    pub fn with_events(mut self, tx: broadcast::Sender<ipc::Event>) -> Self {
        self.events.set_sender(tx);
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
        self.events.sender()
    }

    pub fn stats(&self) -> &Stats {
        &self.events.stats
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

    /// Starts waiting for their door's turn, all doors.
    pub fn starts_waiting(&self) -> usize {
        self.starts.waiting()
    }

    /// Write one knockd-format log line.
    pub fn log_line(&mut self, msg: &str) {
        self.events.line(msg);
    }

    fn line(&mut self, msg: &str) {
        self.events.line(msg);
    }

    fn emit(&self, kind: impl FnOnce() -> ipc::EventKind) {
        self.events.emit(kind);
    }

    /// Bring the TOTP doors to the current step (see [`TotpClock::rotate`]).
    fn rotate_totp(&mut self, now: Instant, force: bool) -> bool {
        self.totp
            .rotate(&self.config, &mut self.matcher, now, force)
    }

    /// Send the capture filter of the doors in force, if it changed.
    fn update_filter(&mut self) {
        self.filter.update(&self.config, &self.totp);
    }

    /// Hand what changed to the state writer (see `Persistence::persist`).
    pub fn persist(&mut self) {
        self.persistence.persist(
            &mut self.ledger,
            &self.config,
            &self.matcher,
            &mut self.spa,
            &mut self.events,
        );
    }

    /// Persist and wait until the state file is written (clean shutdown).
    pub async fn flush_state(&mut self) {
        self.persist();
        self.persistence.flush(&mut self.events).await;
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
        // Under a flood (a large batch just came) the next batch is a few ms away: deadlines
        // until then are handled with it, not by a wake-up of their own (see below).
        let mut busy_until: Option<Instant> = None;
        let mut alarm = timer::Alarm::default();
        loop {
            alarm.want(match (self.next_deadline(), busy_until) {
                (Some(d), Some(b)) => Some(d.max(b)),
                (d, _) => d,
            });
            // Not biased: packets, timers, completions and control requests all get their
            // turn, whatever the packet rate (a batch is at most capture::MAX_BATCH packets).
            tokio::select! {
                () = &mut shutdown => break,
                Some(c) = control.recv() => self.on_control(c),
                Some(d) = self.runner.recv() => self.on_done(d),
                Some(ev) = self.nft.recv() => self.on_nft(ev),
                Some(lines) = self.spa_drop.recv() => self.spa_drop_lines(lines),
                msg = packets.recv() => match msg {
                    Some(CaptureMsg::Batch(batch, at)) => {
                        for p in &batch {
                            self.on_packet(p, at);
                        }
                        let t = now();
                        if self.next_deadline().is_some_and(|d| d <= t) {
                            self.on_timer(t);
                        }
                        busy_until = (batch.len() >= crate::capture::pacer::BUSY_BATCH)
                            .then(|| t + crate::capture::pacer::COALESCE);
                    }
                    Some(CaptureMsg::Spa(datagrams, at)) => self.on_spa(&datagrams, at),
                    Some(CaptureMsg::Error(e)) => {
                        result = Err(EngineError::Capture(e));
                        break;
                    }
                    None => {
                        result = Err(EngineError::Capture("capture thread ended".into()));
                        break;
                    }
                },
                () = alarm.ring(), if alarm.is_armed() => self.on_timer(now()),
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
            self.totp.next_deadline(),
            self.ledger.next_recheck(),
            self.ledger.next_retry(),
            self.starts.deadline(self.runner.has_room()),
            self.spa_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn on_control(&mut self, c: Control) {
        match c {
            Control::ReloadLoaded(prepared, reply) => {
                let r = self.reload_prepared(*prepared);
                self.answer_reload(r, reply);
            }
            Control::Snapshot(reply) => {
                let _ = reply.send(crate::reload::Snapshot {
                    config: self.config.clone(),
                    local: self.filter.local().to_vec(),
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
            Control::LocalAddrs(addrs) => {
                if self.filter.set_local(addrs) {
                    let addrs = self.filter.local();
                    tracing::info!(?addrs, "local addresses changed");
                    self.matcher.set_local_addrs(addrs.iter().copied());
                    self.update_filter();
                }
            }
        }
    }

    pub fn on_packet(&mut self, p: &Packet, at: Instant) {
        self.events.stats.packets += 1;
        self.spa_udp_seen(p.proto, p.dport);
        let mut matched = std::mem::take(&mut self.matched);
        self.matcher.on_packet(p, at, &mut matched);
        for ev in matched.drain(..) {
            self.on_match(ev, at);
        }
        self.matched = matched;
        if let Some(skew) = self.totp.on_knock(p.src, p.proto, p.tcp_flags, p.dport) {
            self.events.stats.totp_clock_skew += 1;
            if let Some(msg) = self.totp.skew_line(&skew, &self.config, at) {
                self.line(&msg);
            }
        }
    }

    /// What the nftables side's tasks send back.
    fn on_nft(&mut self, ev: nft_side::NftEvent) {
        use nft_side::NftEvent;
        let table = crate::firewall::nftables::table();
        match ev {
            NftEvent::Listed(v) => self.on_kernel_view(v),
            NftEvent::TableUpdated(r) => {
                let failed = r.err().map(|e| {
                    format!("table inet {table} could not be updated (the configuration is in force, the table is not): {e}")
                });
                if let Some(msg) = &failed {
                    self.events.stats.commands_failed += 1;
                    let line = format!("error: {msg}");
                    self.line(&line);
                }
                for (reply, warnings) in self.nft.updated() {
                    let _ = reply.send(match &failed {
                        None => Ok(warnings),
                        Some(msg) => Err(vec![msg.clone()]),
                    });
                }
            }
            NftEvent::Touched => self.nft.check(),
            NftEvent::Checked(r) => {
                self.nft.checked();
                match r {
                    Ok(true) => self.nft_recreated(),
                    Ok(false) => tracing::debug!("nftables: table inet {table} is whole"),
                    Err(e) => {
                        let msg = format!("error: cannot check table inet {table}: {e}");
                        self.line(&msg);
                    }
                }
            }
            NftEvent::Recreated => self.nft_recreated(),
        }
    }

    /// Another program removed the table (or part of it) and the nftables side re-created it:
    /// put back every open grant's elements with the time it has left, say so once, count it.
    fn nft_recreated(&mut self) {
        self.events.stats.nft_tables_recreated += 1;
        let now = now();
        let back = nft_side::put_back(&self.ledger, now);
        let n = back.len();
        for (door, addr, ops) in back {
            self.submit_nft(None, &door, addr, messages::TaskKind::Free, ops);
        }
        let msg = format!(
            "warning: table inet {} was removed or changed by another program (nft flush ruleset, systemctl reload nftables?): re-created it, the doors' ports are protected again, and the elements of {n} open grant(s) are back with the time they have left",
            crate::firewall::nftables::table()
        );
        self.line(&msg);
    }

    /// Log and count what the matcher reported; open the door it opened.
    fn on_match(&mut self, ev: MatchEvent, now: Instant) {
        if let MatchEvent::Reset { src, door, .. } = &ev {
            // A wrong knock counts against its network's starts (a flood breaks attempts).
            if let Some(d) = self.config.doors.get(*door) {
                self.starts.wrong_knock(&self.config, &d.name, *src, now);
            }
        }
        let opened = self
            .events
            .on_match(ev, now, &self.config.doors, &self.matcher, &self.totp);
        if let Some((door, src)) = opened {
            // Logs OPEN SESAME unless the door's StartRate queue refuses it (a flood of
            // completions is counted and summarised instead of logged line by line).
            self.open(door, src, now);
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
        if kernel > 0 && policy == ShutdownPolicy::Keep {
            let msg = format!(
                "leaving {kernel} nftables grant(s) to the kernel: they close at their deadline, and table inet {} keeps the doors' ports closed",
                crate::firewall::nftables::table()
            );
            self.line(&msg);
        }
        // The same for both backends: nftables grants (which always have a deadline) are
        // closed by `close` and `close-all`, left to the kernel by `keep`.
        for id in self.ledger.ids() {
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
        while self.runner.inflight() > 0 {
            match tokio::time::timeout_at(give_up, self.runner.recv()).await {
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
        self.stop_spa_drop().await;
        self.flush_state().await;
        self.line("shutting down");
    }
}

mod apply;
mod events;
mod filter_feed;
mod messages;
mod open;
mod persistence;
mod requests;
mod restore;
mod runner;
mod spa;
mod spa_drop;
mod starts;
mod tasks;
mod throttle;
mod timer;
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
mod spa_drop_tests;
#[cfg(test)]
mod tests;
