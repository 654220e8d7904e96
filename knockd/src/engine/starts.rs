//! Starts: new grants wait for their door's turn. Each door starts at most `StartRate` new
//! grants per second, shared fairly between source networks (the queue discipline is
//! [`crate::fairstart`]; this owner keeps one queue per door). A re-knock of an open grant is
//! not a start and never waits here. Command doors also wait for room in the command pool, so
//! a full pool holds starts in the fair queue instead of refusing them.

use crate::config::model::{DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6};
use crate::config::Config;
use crate::fairstart::{FairConfig, FairStarts, Offer};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// One door's fair queue, and whether its starts run through the command pool.
#[derive(Debug)]
struct DoorStarts {
    queue: FairStarts,
    pooled: bool,
}

/// The fair start queues, per door name.
#[derive(Debug, Default)]
pub(crate) struct Starts {
    doors: HashMap<String, DoorStarts>,
}

/// The queue settings of `config`.
fn fair_config(config: &Config) -> FairConfig {
    let o = &config.options;
    FairConfig::new(
        config.start_rate(),
        o.network_prefix_v4.unwrap_or(DEFAULT_PREFIX_V4),
        o.network_prefix_v6.unwrap_or(DEFAULT_PREFIX_V6),
    )
}

impl Starts {
    /// A new grant of door `door` (a command door when `pooled`) for `src` wants to start:
    /// it waits in the door's fair queue ([`Self::pop`] hands it out when a token is there).
    pub fn offer(
        &mut self,
        config: &Config,
        door: &str,
        pooled: bool,
        src: IpAddr,
        now: Instant,
    ) -> Offer {
        let cfg = fair_config(config);
        let entry = self
            .doors
            .entry(door.to_string())
            .or_insert_with(|| DoorStarts {
                queue: FairStarts::new(cfg),
                pooled,
            });
        entry.pooled = pooled;
        if entry.queue.config() != &cfg {
            entry.queue.set_config(cfg);
        }
        entry.queue.offer(src, now)
    }

    /// `src` broke an attempt on door `door` with a wrong knock at `now`: counted against its
    /// network, whose starts are refused while it floods the door
    /// ([`crate::fairstart::FLOOD_NOISE`]).
    pub fn wrong_knock(&mut self, config: &Config, door: &str, src: IpAddr, now: Instant) {
        if let Some(d) = self.doors.get_mut(door) {
            d.queue.wrong_knock(src, now);
            return;
        }
        let mut queue = FairStarts::new(fair_config(config));
        queue.wrong_knock(src, now);
        // Whether it runs through the pool is set by its first start.
        self.doors.insert(
            door.to_string(),
            DoorStarts {
                queue,
                pooled: false,
            },
        );
    }

    /// The doors with starts waiting.
    pub fn waiting_doors(&self) -> Vec<String> {
        self.doors
            .iter()
            .filter(|(_, d)| d.queue.waiting() > 0)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The next start of `door` its rate allows at `now`.
    pub fn pop(&mut self, door: &str, now: Instant) -> Option<IpAddr> {
        self.doors.get_mut(door).and_then(|d| d.queue.pop(now))
    }

    /// The door went away (a reload): so do its waiting starts.
    pub fn forget(&mut self, door: &str) {
        self.doors.remove(door);
    }

    /// When the next waiting start can go (command doors only when the pool has `room`: a
    /// finished command serves them).
    pub fn deadline(&self, room: bool) -> Option<Instant> {
        self.doors
            .values()
            .filter(|d| room || !d.pooled)
            .filter_map(|d| d.queue.ready_at())
            .min()
    }

    /// Starts waiting for their door's turn, all doors.
    pub fn waiting(&self) -> usize {
        self.doors.values().map(|d| d.queue.waiting()).sum()
    }
}
