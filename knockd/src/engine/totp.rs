//! Rotating (TOTP) doors in the engine: at every time step boundary, each TOTP door's
//! accepted sequences (current, previous and next step) go to the matcher and the capture
//! filter. Only those three steps' ports, and those of the two steps just outside them (to
//! notice clock skew, [`crate::skew`]), are ever in the filter. The replay memory (which
//! step opened for which address) survives reloads (in the matcher, for doors whose secret is
//! unchanged) and restarts (in the state file, checked entry by entry when read back).

use super::Engine;
use crate::action::Executor;
use crate::config;
use crate::knocklog::LogSink;
use crate::state::SavedReplay;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Wall-clock time since the Unix epoch (the TOTP clock); tests replace it.
pub type WallClock = fn() -> Duration;

pub fn system_wall_clock() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The accepted steps of a TOTP door at `step`: the current one first (preferred when two
/// share a first knock), then the previous and the next (clock skew).
pub fn window(spec: &knock_ipc::totp::Spec, step: u64) -> Vec<(u64, Vec<config::Step>)> {
    [Some(step), step.checked_sub(1), step.checked_add(1)]
        .into_iter()
        .flatten()
        .map(|s| {
            let seq = spec
                .ports(s)
                .into_iter()
                .map(|port| config::Step {
                    port,
                    proto: config::Proto::Tcp,
                })
                .collect();
            (s, seq)
        })
        .collect()
}

/// The ports the capture filter needs for a TOTP door at `step`: those of its accepted steps,
/// and of the two steps just outside them (to notice a client's clock skew, see
/// [`crate::skew`]).
pub fn window_steps(spec: &knock_ipc::totp::Spec, step: u64) -> Vec<config::Step> {
    let skewed = crate::skew::OFFSETS
        .iter()
        .filter_map(|&o| step.checked_add_signed(o))
        .flat_map(|s| spec.ports(s))
        .map(|port| config::Step {
            port,
            proto: config::Proto::Tcp,
        });
    window(spec, step)
        .into_iter()
        .flat_map(|(_, seq)| seq)
        .chain(skewed)
        .collect()
}

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// Brings every TOTP door to the current step (all of them when `force`, e.g. after a
    /// reload), and schedules the next boundary. Returns whether any door changed.
    pub(super) fn rotate_totp(&mut self, now: Instant, force: bool) -> bool {
        let wall = (self.wall_clock)();
        if force {
            self.skew.clear();
        }
        let mut changed = false;
        let mut next: Option<Instant> = None;
        self.totp_steps.resize(self.config.doors.len(), None);
        for idx in 0..self.config.doors.len() {
            let Some(spec) = self.config.doors[idx].totp.clone() else {
                self.totp_steps[idx] = None;
                continue;
            };
            let step = spec.step_at(wall.as_secs());
            if force || self.totp_steps[idx] != Some(step) {
                let variants = window(&spec, step);
                self.matcher.set_variants(idx, variants);
                self.skew.set_door(idx, &spec, step);
                self.totp_steps[idx] = Some(step);
                changed = true;
            }
            let boundary = Duration::from_secs(spec.step_start(step.saturating_add(1)));
            let at = now + boundary.saturating_sub(wall);
            next = Some(next.map_or(at, |n: Instant| n.min(at)));
        }
        self.totp_next = next;
        changed
    }

    /// A client knocked a TOTP sequence just outside the window: counted, and logged (a few,
    /// then one a minute).
    pub(super) fn on_skew(&mut self, skew: crate::skew::Skew, now: Instant) {
        self.stats.totp_clock_skew += 1;
        if !self.skew.log.allow(now) {
            return;
        }
        let Some(door) = self.config.doors.get(skew.door) else {
            return;
        };
        let step_secs = door.totp.as_ref().map_or(0, |s| s.step_secs);
        let msg = crate::skew::line(&skew, &door.name, step_secs);
        self.line(&msg);
    }

    /// The current step of door `idx`, if it is a TOTP door.
    pub(super) fn totp_step(&self, idx: usize) -> Option<u64> {
        self.totp_steps.get(idx).copied().flatten()
    }

    /// Ports the capture filter needs for TOTP door `idx`: those of its accepted steps.
    pub(super) fn totp_filter_steps(&self, idx: usize) -> Vec<config::Step> {
        let (Some(spec), Some(step)) = (
            self.config.doors.get(idx).and_then(|d| d.totp.as_ref()),
            self.totp_step(idx),
        ) else {
            return Vec::new();
        };
        window_steps(spec, step)
    }
}

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// The replay memory as the state file holds it: door name, step, the step's ports (which
    /// bind the entry to the secret) and the address it opened for.
    pub(super) fn saved_replay(&self) -> Vec<SavedReplay> {
        self.matcher
            .replay_memory()
            .into_iter()
            .filter_map(|(door, step, addr)| {
                let d = self.config.doors.get(door)?;
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

    /// Takes in a replay memory (from the state file at start, or the one before a reload).
    /// It is data: an entry counts for every TOTP door of this config that accepts its step
    /// now (older entries expired with their window) and whose secret derives exactly its
    /// ports for that step. The ports, not the door's name, identify the sequence: a renamed
    /// door keeps its memory, a changed secret voids it. Returns how many entries counted.
    pub(super) fn remember_replays(&mut self, saved: Vec<SavedReplay>) -> usize {
        if saved.is_empty() {
            return 0;
        }
        // Every accepted (step, ports) of every TOTP door: 3 derivations per door.
        let mut accepted: HashMap<(u64, Vec<u16>), Vec<usize>> = HashMap::new();
        for (idx, d) in self.config.doors.iter().enumerate() {
            let (Some(spec), Some(step)) = (d.totp.as_ref(), self.totp_step(idx)) else {
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
                took |= self.matcher.remember_replay(idx, r.step, r.addr);
            }
            counted += usize::from(took);
        }
        counted
    }
}
