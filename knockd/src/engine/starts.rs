//! New grants wait for their door's turn: each door starts at most `StartRate` new grants per
//! second, shared fairly between source networks (the queue discipline is
//! [`crate::fairstart`]; this file only feeds it and runs what comes out). A re-knock of an
//! open grant is not a start and never waits here. Command doors also wait for room in the
//! command pool, so a full pool holds starts in the fair queue instead of refusing them.

use super::tasks::Refusal;
use super::Engine;
use crate::action::Executor;
use crate::config::model::{DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6};
use crate::fairstart::{FairConfig, FairStarts, Offer, StartRefusal};
use crate::knocklog::LogSink;
use std::net::IpAddr;
use std::time::Instant;

/// One door's fair queue, and whether its starts run through the command pool.
#[derive(Debug)]
pub(super) struct DoorStarts {
    queue: FairStarts,
    pooled: bool,
}

impl<E: Executor, L: LogSink> Engine<E, L> {
    fn fair_config(&self) -> FairConfig {
        let o = &self.config.options;
        FairConfig::new(
            self.config.start_rate(),
            o.network_prefix_v4.unwrap_or(DEFAULT_PREFIX_V4),
            o.network_prefix_v6.unwrap_or(DEFAULT_PREFIX_V6),
        )
    }

    /// A new grant of door `door` (a command door when `pooled`) for `src` wants to start:
    /// it waits in the door's fair queue ([`Self::serve_starts`] starts it when a token, and
    /// for a command door room in the pool, is there). False when refused (counted).
    pub(super) fn offer_start(
        &mut self,
        door: &str,
        pooled: bool,
        src: IpAddr,
        now: Instant,
    ) -> bool {
        let cfg = self.fair_config();
        let entry = self
            .starts
            .entry(door.to_string())
            .or_insert_with(|| DoorStarts {
                queue: FairStarts::new(cfg),
                pooled,
            });
        entry.pooled = pooled;
        if entry.queue.config() != &cfg {
            entry.queue.set_config(cfg);
        }
        match entry.queue.offer(src, now) {
            Offer::Queued | Offer::AlreadyWaiting => true,
            Offer::Displaced(gone) => {
                self.refuse(Refusal::Displaced, door, gone, now);
                true
            }
            Offer::Refused(StartRefusal::NetworkBusy) => {
                self.refuse(Refusal::NetworkBusy, door, src, now);
                false
            }
            Offer::Refused(StartRefusal::QueueFull) => {
                self.refuse(Refusal::StartQueueFull, door, src, now);
                false
            }
        }
    }

    /// Start whatever the doors' rates (and the command pool) allow at `now`.
    pub(super) fn serve_starts(&mut self, now: Instant) {
        let waiting: Vec<String> = self
            .starts
            .iter()
            .filter(|(_, d)| d.queue.waiting() > 0)
            .map(|(name, _)| name.clone())
            .collect();
        for name in waiting {
            let Some(idx) = self.config.doors.iter().position(|d| d.name == name) else {
                // The door went away in a reload: so do its waiting starts.
                self.starts.remove(&name);
                continue;
            };
            let pooled = self.config.doors[idx].open.is_empty();
            loop {
                if pooled && !self.pool_has_room() {
                    break;
                }
                let Some(src) = self.starts.get_mut(&name).and_then(|d| d.queue.pop(now)) else {
                    break;
                };
                self.open_now(idx, src, now);
            }
        }
    }

    /// When the next waiting start can go (command doors only while the pool has room: a
    /// finished command serves them).
    pub(super) fn starts_deadline(&self) -> Option<Instant> {
        let room = self.pool_has_room();
        self.starts
            .values()
            .filter(|d| room || !d.pooled)
            .filter_map(|d| d.queue.ready_at())
            .min()
    }

    /// Starts waiting for their door's turn, all doors.
    pub fn starts_waiting(&self) -> usize {
        self.starts.values().map(|d| d.queue.waiting()).sum()
    }
}
