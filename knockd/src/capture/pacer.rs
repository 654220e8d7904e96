//! When the capture thread should let packets pile up before its next read.
//!
//! Capture runs in immediate mode so that a lone knock reaches the engine at once. Under a
//! flood that means one wake-up of the capture thread, and one of the engine, per packet or
//! two: most of the daemon's CPU at 20,000 packets/s goes to context switches. So once the
//! rate over the last window is above [`BUSY_PPS`] (far above any real knocking), the thread
//! pauses after each batch, long enough for about [`BATCH_GOAL`] packets to arrive at the
//! measured rate, from [`MIN_PAUSE`] to [`MAX_PAUSE`]; the next read takes them in one go. A
//! quiet host never pauses; during a flood a knock waits at most one pause more. Pure: time
//! is an input.

use std::time::{Duration, Instant};

/// Packets per second above which the capture thread batches.
pub const BUSY_PPS: u64 = 2_000;
/// Packets a read should find while busy...
pub const BATCH_GOAL: f64 = 64.0;
/// ...within these pauses.
pub const MIN_PAUSE: Duration = Duration::from_millis(1);
pub const MAX_PAUSE: Duration = Duration::from_millis(4);
/// A batch this large means the capture is pausing (a flood): the engine then handles
/// deadlines with the batches rather than waking for them, and wakes for one at most
/// [`COALESCE`] after the last such batch (when the flood stops). While the flood lasts its
/// timer rings once per [`COALESCE`] (see `engine::timer::Alarm`): 10 wake-ups a second
/// (with 20 ms, 50 of the engine and as many of a tokio worker).
pub const BUSY_BATCH: usize = 16;
pub const COALESCE: Duration = Duration::from_millis(100);
/// The rate is measured over windows this long.
const WINDOW: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct Pacer {
    window_start: Option<Instant>,
    in_window: u64,
    busy: bool,
    /// Packets per second over the last whole window (or the current one, while busy
    /// before it ends).
    rate: f64,
    last: Option<Instant>,
}

/// The pause that lets about [`BATCH_GOAL`] packets arrive at `rate` packets per second.
pub fn pause_for(rate: f64) -> Duration {
    if rate.is_nan() || rate <= 0.0 {
        return MAX_PAUSE;
    }
    Duration::from_secs_f64((BATCH_GOAL / rate).min(MAX_PAUSE.as_secs_f64())).max(MIN_PAUSE)
}

impl Pacer {
    /// A batch of `n` packets was read at `now`: how long to pause before the next read.
    pub fn after_batch(&mut self, n: usize, now: Instant) -> Option<Duration> {
        if self
            .last
            .replace(now)
            .is_some_and(|t| now.saturating_duration_since(t) >= WINDOW + MAX_PAUSE)
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
            self.rate = self.in_window as f64 / elapsed.as_secs_f64();
            self.busy = self.rate >= BUSY_PPS as f64;
            self.window_start = Some(now);
            self.in_window = 0;
        } else if self.in_window as f64 >= BUSY_PPS as f64 * WINDOW.as_secs_f64() {
            // Busy before the window ends: no need to wait for it.
            self.busy = true;
            self.rate = self.in_window as f64 / elapsed.as_secs_f64().max(1e-3);
        }
        self.busy.then(|| pause_for(self.rate))
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

    /// The pause lets about 64 packets arrive: 3.2 ms at 20,000 packets/s, the shortest
    /// pause from 64,000 up, the longest below 16,000.
    #[test]
    fn the_pause_gathers_a_batch_at_the_measured_rate() {
        assert_eq!(pause_for(20_000.0), Duration::from_micros(3_200));
        assert_eq!(pause_for(200_000.0), MIN_PAUSE);
        assert_eq!(pause_for(5_000.0), MAX_PAUSE);
        assert_eq!(pause_for(0.0), MAX_PAUSE);
        // A steady 20,000 packets/s read at each pause: the pause settles at 3.2 ms.
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let mut now = t0;
        let mut pause = Duration::from_micros(100);
        for _ in 0..400 {
            let n = (pause.as_secs_f64() * 20_000.0).round().max(1.0) as usize;
            now += pause;
            pause = p.after_batch(n, now).unwrap_or(Duration::from_micros(100));
        }
        let us = pause.as_micros();
        assert!((3_000..=3_400).contains(&us), "{us} us");
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
            if let Some(pause) = p.after_batch(2, now) {
                assert!((MIN_PAUSE..=MAX_PAUSE).contains(&pause), "{pause:?}");
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
