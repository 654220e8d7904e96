//! When the capture thread should let packets pile up before its next read.
//!
//! Capture runs in immediate mode so that a lone knock reaches the engine at once. Under a
//! flood that means one wake-up of the capture thread, and one of the engine, per packet or
//! two: most of the daemon's CPU at 20,000 packets/s goes to context switches. So once the
//! rate over the last window is above [`BUSY_PPS`] (far above any real knocking), the thread
//! pauses [`BUSY_PAUSE`] after each batch, and the next read takes what arrived meanwhile in one
//! go: tens of packets per wake-up. A quiet host never pauses; during a flood a knock waits at
//! most one pause more. Pure: time is an input.

use std::time::{Duration, Instant};

/// Packets per second above which the capture thread batches.
pub const BUSY_PPS: u64 = 2_000;
/// The pause after each batch while busy.
pub const BUSY_PAUSE: Duration = Duration::from_millis(1);
/// The rate is measured over windows this long.
const WINDOW: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct Pacer {
    window_start: Option<Instant>,
    in_window: u64,
    busy: bool,
    last: Option<Instant>,
}

impl Pacer {
    /// A batch of `n` packets was read at `now`: how long to pause before the next read.
    pub fn after_batch(&mut self, n: usize, now: Instant) -> Option<Duration> {
        if self
            .last
            .replace(now)
            .is_some_and(|t| now.saturating_duration_since(t) >= WINDOW)
        {
            // A whole window without a packet: the flood is over.
            self.busy = false;
            self.window_start = None;
            self.in_window = 0;
        }
        let start = *self.window_start.get_or_insert(now);
        self.in_window += n as u64;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            let per_s = self.in_window as f64 / elapsed.as_secs_f64();
            self.busy = per_s >= BUSY_PPS as f64;
            self.window_start = Some(now);
            self.in_window = 0;
        } else if self.in_window as f64 >= BUSY_PPS as f64 * WINDOW.as_secs_f64() {
            // Busy before the window ends: no need to wait for it.
            self.busy = true;
        }
        self.busy.then_some(BUSY_PAUSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_host_never_pauses() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // A knock of 4 packets every 10 ms for 2 s (400 packets/s): never busy.
        for i in 0..200u32 {
            assert_eq!(p.after_batch(4, t0 + Duration::from_millis(10) * i), None);
        }
    }

    #[test]
    fn a_flood_pauses_and_the_pause_ends_with_it() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // 20,000 packets/s, read two at a time.
        let mut now = t0;
        let mut paused = 0;
        for _ in 0..2_000 {
            now += Duration::from_micros(100);
            if p.after_batch(2, now) == Some(BUSY_PAUSE) {
                paused += 1;
            }
        }
        assert!(
            paused > 1_500,
            "busy soon after the flood starts ({paused})"
        );
        // The flood stops: a knock a while later is read without a pause (the first window
        // after the flood is quiet).
        now += Duration::from_millis(150);
        assert_eq!(p.after_batch(1, now), None);
        assert_eq!(p.after_batch(3, now + Duration::from_millis(1)), None);
    }
}
