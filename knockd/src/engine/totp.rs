//! Rotating (TOTP) doors in the engine: at every time step boundary, each TOTP door's
//! accepted sequences (current, previous and next step) go to the matcher and the capture
//! filter. Only those three steps' ports are ever in the filter.

use super::*;

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

impl<E: Executor, L: LogSink> Engine<E, L> {
    /// Brings every TOTP door to the current step (all of them when `force`, e.g. after a
    /// reload), and schedules the next boundary. Returns whether any door changed.
    pub(super) fn rotate_totp(&mut self, now: Instant, force: bool) -> bool {
        let wall = (self.wall_clock)();
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
        window(spec, step)
            .into_iter()
            .flat_map(|(_, seq)| seq)
            .collect()
    }
}
