//! The TOTP clock of rotating doors: at every time step boundary, each TOTP door's accepted
//! sequences (current, previous and next step) go to the matcher and the capture filter, and
//! the two steps just outside them to the skew watch ([`crate::skew`]: a client's clock skew
//! is noticed, never opened). Only those three steps' ports are ever in the filter. The replay memory (which
//! step opened for which address) survives reloads (in the matcher, for doors whose secret is
//! unchanged) and restarts (in the state file, checked entry by entry when read back).

use crate::config::totp::window;
use crate::config::{flag, Config, Proto};
use crate::matcher::Matcher;
use crate::skew::{Skew, SkewWatch};
use crate::state::SavedReplay;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wall-clock time since the Unix epoch (the TOTP clock); tests replace it.
pub type WallClock = fn() -> Duration;

pub fn system_wall_clock() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The clock of rotating doors: each door's current step and the next step boundary.
#[derive(Debug)]
pub struct TotpClock {
    wall: WallClock,
    /// Per door of the config in force: its current step (None: not a TOTP door).
    steps: Vec<Option<u64>>,
    /// The next step boundary of any door.
    next: Option<Instant>,
    /// The steps just outside each door's window, to notice clients' clock skew.
    skew: SkewWatch,
}

impl Default for TotpClock {
    fn default() -> Self {
        TotpClock {
            wall: system_wall_clock,
            steps: Vec::new(),
            next: None,
            skew: SkewWatch::default(),
        }
    }
}

impl TotpClock {
    /// Replace the wall clock (tests); call [`Self::rotate`] with `force` after.
    pub fn set_wall_clock(&mut self, clock: WallClock) {
        self.wall = clock;
    }

    /// The wall clock's reading (time since the Unix epoch).
    pub fn wall(&self) -> Duration {
        (self.wall)()
    }

    /// The next step boundary of any door.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Brings every TOTP door of `config` to the current step (all of them when `force`,
    /// e.g. after a reload: the doors may have changed), giving the matcher their accepted
    /// sequences, and schedules the next boundary. Returns whether any door changed.
    pub fn rotate(
        &mut self,
        config: &Config,
        matcher: &mut Matcher,
        now: Instant,
        force: bool,
    ) -> bool {
        let wall = (self.wall)();
        let mut changed = false;
        let mut next: Option<Instant> = None;
        if force {
            self.steps.clear();
            self.skew.clear();
        }
        self.steps.resize(config.doors.len(), None);
        for (idx, door) in config.doors.iter().enumerate() {
            let Some(spec) = &door.totp else {
                self.steps[idx] = None;
                continue;
            };
            let step = spec.step_at(wall.as_secs());
            if force || self.steps[idx] != Some(step) {
                matcher.set_variants(idx, window(spec, step));
                self.skew.set_door(idx, spec, step);
                self.steps[idx] = Some(step);
                changed = true;
            }
            let boundary = Duration::from_secs(spec.step_start(step.saturating_add(1)));
            let at = now + boundary.saturating_sub(wall);
            next = Some(next.map_or(at, |n: Instant| n.min(at)));
        }
        self.next = next;
        changed
    }

    /// A new TCP connection (SYN) from `src` to `port`: the skew it completes, if it knocks a
    /// TOTP sequence just outside a door's window. O(1) when no door rotates.
    pub fn on_knock(&mut self, src: IpAddr, proto: Proto, flags: u8, port: u16) -> Option<Skew> {
        if self.skew.is_empty()
            || proto != Proto::Tcp
            || flags & (flag::SYN | flag::ACK) != flag::SYN
        {
            return None;
        }
        self.skew.on_knock(src, port)
    }

    /// The log line for `skew` (a few, then one a minute: None when over that budget).
    pub fn skew_line(&mut self, skew: &Skew, config: &Config, now: Instant) -> Option<String> {
        if !self.skew.log.allow(now) {
            return None;
        }
        let door = config.doors.get(skew.door)?;
        let step_secs = door.totp.as_ref().map_or(0, |s| s.step_secs);
        Some(crate::skew::line(skew, &door.name, step_secs))
    }

    /// The current step of door `idx`, if it is a TOTP door.
    pub fn step(&self, idx: usize) -> Option<u64> {
        self.steps.get(idx).copied().flatten()
    }

    /// Takes in a replay memory (from the state file at start, or the one before a reload).
    /// It is data: an entry counts for every TOTP door of `config` that accepts its step
    /// now (older entries expired with their window) and whose secret derives exactly its
    /// ports for that step. The ports, not the door's name, identify the sequence: a renamed
    /// door keeps its memory, a changed secret voids it. Returns how many entries counted.
    pub fn remember_replays(
        &self,
        config: &Config,
        matcher: &mut Matcher,
        saved: Vec<SavedReplay>,
    ) -> usize {
        if saved.is_empty() {
            return 0;
        }
        // Every accepted (step, ports) of every TOTP door: 3 derivations per door.
        let mut accepted: HashMap<(u64, Vec<u16>), Vec<usize>> = HashMap::new();
        for (idx, d) in config.doors.iter().enumerate() {
            let (Some(spec), Some(step)) = (d.totp.as_ref(), self.step(idx)) else {
                continue;
            };
            for s in [Some(step), step.checked_sub(1), step.checked_add(1)]
                .into_iter()
                .flatten()
            {
                accepted.entry((s, spec.ports(s))).or_default().push(idx);
            }
        }
        let mut counted = 0;
        for r in saved {
            let Some(doors) = accepted.get(&(r.step, r.ports)) else {
                continue;
            };
            let mut took = false;
            for &idx in doors {
                took |= matcher.remember_replay(idx, r.step, r.addr);
            }
            counted += usize::from(took);
        }
        counted
    }
}

/// The replay memory as the state file holds it: door name, step, the step's ports (which
/// bind the entry to the secret) and the address it opened for.
pub fn saved_replay(config: &Config, matcher: &Matcher) -> Vec<SavedReplay> {
    matcher
        .replay_memory()
        .into_iter()
        .filter_map(|(door, step, addr)| {
            let d = config.doors.get(door)?;
            let spec = d.totp.as_ref()?;
            Some(SavedReplay {
                door: d.name.clone(),
                step,
                ports: spec.ports(step),
                addr,
            })
        })
        .collect()
}
