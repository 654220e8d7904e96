//! Events: what the engine tells the world. Match results become knockd-format log lines,
//! counters and live events (`knockctl tail`, the TUI); per-knock lines go through the log-rate
//! [`Throttles`]. The log sink and the event channel live here.

use super::throttle::Throttles;
use super::totp::TotpClock;
use crate::config::{Config, Door};
use crate::grants::Grant;
use crate::knocklog::LogSink;
use crate::matcher::{MatchEvent, Matcher, Refusal};
use crate::state;
use knock_ipc as ipc;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Instant, SystemTime};
use tokio::sync::broadcast;

/// Capacity of the live event channel; a subscriber further behind skips ahead (`Lagged`).
pub const EVENT_BUFFER: usize = 4096;

/// Counters since start (the wire type; `kernel_drops` is filled in from pcap at status time).
pub type Stats = ipc::Counters;

/// Why an open did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenRefusal {
    PoolFull,
    MaxGrants,
    /// Its network already has starts waiting for the door's rate (`fairstart::NET_CAP`).
    NetworkBusy,
    /// Its network floods the door (`fairstart::FLOOD_SCORE`, `FLOOD_NOISE`); counted with
    /// `NetworkBusy`.
    NetworkFlooding,
    /// The door's start queue is full of networks at least as busy as its own.
    StartQueueFull,
    /// It was waiting, and a start from a quieter network took its place.
    Displaced,
}

pub(crate) struct Events<L: LogSink> {
    log: L,
    tx: broadcast::Sender<ipc::Event>,
    pub stats: Stats,
    throttles: Throttles,
}

/// A grant as `knockctl list` and the events show it.
pub(crate) fn grant_info(g: &Grant, now: Instant) -> ipc::GrantInfo {
    let left = |t: Instant| {
        u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
    };
    ipc::GrantInfo {
        door: g.door.clone(),
        addr: g.addr,
        opened: g.opened.clone(),
        opened_at_unix_ms: state::unix_ms(g.opened_at),
        expires_in_ms: g.expires.filter(|_| g.closing.is_none()).map(left),
        closes: g.close.describe(),
        refreshes: g.refreshes,
        kernel_expires_in_ms: if g.close.kernel_expires() {
            g.expires.map(left)
        } else {
            None
        },
        closing: g.closing.is_some(),
        close_error: g.closing.as_ref().and_then(|c| c.last_error.clone()),
        client: g.client.clone(),
    }
}

fn door_name(doors: &[Door], door: usize) -> String {
    doors.get(door).map(|d| d.name.clone()).unwrap_or_default()
}

impl<L: LogSink> Events<L> {
    pub fn new(log: L) -> Self {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        Events {
            log,
            tx,
            stats: Stats::default(),
            throttles: Throttles::default(),
        }
    }

    /// The live event stream (subscribe for `knockctl tail` and the TUI).
    pub fn sender(&self) -> broadcast::Sender<ipc::Event> {
        self.tx.clone()
    }

    /// Send live events on `tx` instead.
    pub fn set_sender(&mut self, tx: broadcast::Sender<ipc::Event>) {
        self.tx = tx;
    }

    /// Write one knockd-format log line.
    pub fn line(&mut self, msg: &str) {
        self.log.line(msg);
    }

    /// Lines the log writer had to drop.
    pub fn dropped(&self) -> u64 {
        self.log.dropped()
    }

    /// Reopen the log (logrotate moved it away, or the config names another one).
    pub fn reopen(&mut self, log_file: Option<&Path>, syslog: bool) -> std::io::Result<()> {
        self.log.reopen(log_file, syslog)
    }

    /// Send a live event; `kind` is only built when someone listens.
    pub fn emit(&self, kind: impl FnOnce() -> ipc::EventKind) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(ipc::Event {
                at_unix_ms: state::unix_ms(SystemTime::now()),
                kind: kind(),
            });
        }
    }

    /// A live event about grant `g`.
    pub fn emit_grant(
        &self,
        g: Option<&Grant>,
        now: Instant,
        kind: fn(ipc::GrantInfo) -> ipc::EventKind,
    ) {
        if let Some(g) = g {
            self.emit(|| kind(grant_info(g, now)));
        }
    }

    /// A per-knock line (Stage, reset, timeout): subject to the log rate limit, and only
    /// formatted when it will be written.
    pub fn knock_line(&mut self, now: Instant, msg: impl FnOnce() -> String) {
        if self.throttles.knock(now) {
            self.log.line(&msg());
        }
        if let Some(summary) = self.throttles.knocks_left_out(now) {
            self.log.line(&summary);
        }
    }

    /// [`Self::knock_line`] for a line naming `door`: the name is borrowed, not copied, so a
    /// flood of knocks past the log budget costs no allocation.
    fn door_knock_line(
        &mut self,
        now: Instant,
        doors: &[Door],
        door: usize,
        msg: impl FnOnce(&str) -> String,
    ) {
        if self.throttles.knock(now) {
            let name = doors.get(door).map_or("", |d| d.name.as_str());
            self.log.line(&msg(name));
        }
        if let Some(summary) = self.throttles.knocks_left_out(now) {
            self.log.line(&summary);
        }
    }

    /// A command or firewall batch failed: counted, logged, sent.
    pub fn command_failed(&mut self, line: &str, door: &str, message: String) {
        self.stats.commands_failed += 1;
        self.line(line);
        self.emit(|| ipc::EventKind::CommandFailed {
            door: door.to_string(),
            message,
        });
    }

    /// Log, count and send what the matcher reported. `Open` is counted and handed back: the
    /// engine opens the door (OPEN SESAME is logged there, unless the start is refused).
    pub fn on_match(
        &mut self,
        ev: MatchEvent,
        now: Instant,
        doors: &[Door],
        matcher: &Matcher,
        totp: &TotpClock,
    ) -> Option<(usize, IpAddr)> {
        match ev {
            MatchEvent::Stage {
                src,
                door,
                stage,
                of,
            } => {
                self.stats.stages += 1;
                self.door_knock_line(now, doors, door, |name| {
                    format!("{src}: {name}: Stage {stage}")
                });
                self.emit(|| ipc::EventKind::Stage {
                    addr: src,
                    door: door_name(doors, door),
                    stage: stage as u32,
                    of: of as u32,
                });
            }
            MatchEvent::Open { src, door } => {
                self.stats.opens += 1;
                return Some((door, src));
            }
            MatchEvent::Reset {
                src,
                door,
                stage,
                got,
            } => {
                self.stats.resets += 1;
                self.door_knock_line(now, doors, door, |name| {
                    format!("{src}: {name}: sequence reset at stage {stage} (unexpected knock on {got})")
                });
                self.emit(|| ipc::EventKind::Reset {
                    addr: src,
                    door: door_name(doors, door),
                    stage: stage as u32,
                });
            }
            MatchEvent::Timeout { src, door, stage } => {
                self.stats.timeouts += 1;
                self.door_knock_line(now, doors, door, |name| {
                    format!("{src}: {name}: sequence timeout (stage {stage})")
                });
                self.emit(|| ipc::EventKind::Timeout {
                    addr: src,
                    door: door_name(doors, door),
                    stage: stage as u32,
                });
            }
            MatchEvent::Evicted { src, door, stage } => {
                self.stats.evictions += 1;
                tracing::debug!(%src, door, stage, "attempt evicted");
                // One summary line every 10 s at most: a flood must not flood the log.
                if let Some(n) = self.throttles.evictions(now, self.stats.evictions) {
                    let msg = format!(
                        "attempt table full (MaxAttempts = {}, MaxAttemptsPerNetwork = {}): evicted {n} attempt(s) at stage 1",
                        matcher.cap(),
                        matcher.settings().per_network
                    );
                    self.line(&msg);
                }
            }
            MatchEvent::Scanner { src, strays } => {
                self.stats.scanners += 1;
                let penalty = matcher.settings().sweep_penalty.as_secs_f64();
                self.knock_line(now, || {
                    format!("{src}: sweep guard: {strays} non-knock ports during a knock: treated as a scanner, attempts ended, no new attempt on fixed-sequence doors for {penalty}s")
                });
            }
            MatchEvent::Swept { src, door, stage } => {
                self.stats.resets += 1;
                let name = door_name(doors, door);
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
                let name = door_name(doors, door);
                let step = totp.step(door).unwrap_or_default();
                let msg = format!(
                    "{src}: {name}: sequence refused: {} (current step {step})",
                    Refusal::Replay.as_str()
                );
                self.line(&msg);
            }
            MatchEvent::Refused { src, door, reason } => {
                self.stats.refused += 1;
                let name = door_name(doors, door);
                // A knock that could not advance its attempt, or a first knock.
                let what = if reason == Refusal::DoorShare {
                    "knock"
                } else {
                    "first knock"
                };
                tracing::debug!(%src, door = %name, reason = reason.as_str(), "{what} refused");
                self.knock_line(now, || {
                    format!("{src}: {name}: {what} refused: {}", reason.as_str())
                });
            }
        }
        None
    }

    /// Count a refused open and log it, at most one summary line every 10 s.
    pub fn refuse(
        &mut self,
        why: OpenRefusal,
        door: &str,
        src: IpAddr,
        now: Instant,
        config: &Config,
    ) {
        use super::runner::{POOL_QUEUE, POOL_SIZE};
        match why {
            OpenRefusal::PoolFull => self.stats.refused_pool_full += 1,
            OpenRefusal::MaxGrants => self.stats.refused_max_grants += 1,
            OpenRefusal::NetworkBusy | OpenRefusal::NetworkFlooding => {
                self.stats.refused_start_network += 1
            }
            OpenRefusal::StartQueueFull => self.stats.refused_start_queue += 1,
            OpenRefusal::Displaced => self.stats.refused_start_displaced += 1,
        }
        tracing::debug!(%src, door, ?why, "open refused");
        let s = &self.stats;
        let total = s.refused_pool_full
            + s.refused_max_grants
            + s.refused_start_network
            + s.refused_start_queue
            + s.refused_start_displaced;
        let Some(n) = self.throttles.refusals(now, total) else {
            return;
        };
        let rate = config.start_rate();
        let msg = format!(
            "warning: {n} open(s) refused (latest: {src} on door {door}: {}); totals: command pool full {}, MaxGrants {}, busy network {}, start queue full {}, displaced {}",
            match why {
                OpenRefusal::PoolFull => format!(
                    "{POOL_QUEUE} commands already waiting for the pool of {POOL_SIZE}"
                ),
                OpenRefusal::MaxGrants => format!("{} grants open (MaxGrants)", config.max_grants()),
                OpenRefusal::NetworkBusy => format!(
                    "its network already has {} opens waiting for the door's StartRate ({rate}/s)",
                    crate::fairstart::NET_CAP
                ),
                OpenRefusal::NetworkFlooding => format!(
                    "its network floods the door: more than {} opens asked or {} wrong knocks within about a second",
                    crate::fairstart::FLOOD_SCORE.max(f64::from(rate)),
                    crate::fairstart::FLOOD_NOISE.max(f64::from(rate))
                ),
                OpenRefusal::StartQueueFull => format!(
                    "{} opens from busier networks already waiting for the door's StartRate ({rate}/s)",
                    crate::fairstart::QUEUE_CAP
                ),
                OpenRefusal::Displaced => "a waiting open dropped for one from a quieter network".to_string(),
            },
            self.stats.refused_pool_full,
            self.stats.refused_max_grants,
            self.stats.refused_start_network,
            self.stats.refused_start_queue,
            self.stats.refused_start_displaced
        );
        self.line(&msg);
    }
}
