//! A client's replay memory: every packet it ever had accepted is refused again.
//!
//! Per client: a floor (nothing at or below it is accepted) and the last [`RING`] accepted
//! (timestamp, nonce) pairs. An accepted packet is either in the ring or at or below the
//! floor: when the ring is full, the oldest entry leaves it and the floor rises to it. The
//! floor starts at the daemon's start fence (its start time), so a packet made before this
//! run started is never accepted, whatever the state file held or lost. The floor and the
//! ring are saved in the state file (`spa_replay`) and merged back at start, so a packet made
//! after the next start (a client clock ahead of the server's, within the clock window) that
//! this run accepted is refused after a restart too, and so is anything this run accepted if
//! the clock steps back across the restart.

/// Accepted packets remembered exactly per client (two devices with skewed clocks, or quick
/// re-knocks, each get through in any order within the ring).
pub const RING: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replay {
    floor_ms: u64,
    ring: [(u64, u64); RING],
    len: u8,
}

impl Replay {
    pub fn new(fence_ms: u64) -> Replay {
        Replay {
            floor_ms: fence_ms,
            ..Replay::default()
        }
    }

    /// Would (ts, nonce) be a replay?
    pub fn seen(&self, ts_ms: u64, nonce: u64) -> bool {
        ts_ms <= self.floor_ms || self.entries().contains(&(ts_ms, nonce))
    }

    /// Record an accepted packet (call only after `seen` said no and the signature verified).
    pub fn commit(&mut self, ts_ms: u64, nonce: u64) {
        let len = usize::from(self.len);
        if len < RING {
            self.ring[len] = (ts_ms, nonce);
            self.len += 1;
            return;
        }
        // Full: the oldest leaves, and the floor rises to it.
        let (oldest, _) = self
            .ring
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.0)
            .map_or((0, (0, 0)), |(i, e)| (i, *e));
        self.floor_ms = self.floor_ms.max(self.ring[oldest].0);
        self.ring[oldest] = (ts_ms, nonce);
    }

    /// Raise the floor (a start fence).
    pub fn fence(&mut self, fence_ms: u64) {
        self.floor_ms = self.floor_ms.max(fence_ms);
    }

    pub fn entries(&self) -> &[(u64, u64)] {
        &self.ring[..usize::from(self.len)]
    }

    pub fn floor_ms(&self) -> u64 {
        self.floor_ms
    }

    /// The newest accepted timestamp, if any.
    pub fn last_ms(&self) -> Option<u64> {
        self.entries().iter().map(|e| e.0).max()
    }

    /// Rebuild from saved parts (state file): at most [`RING`] entries kept, the rest folded
    /// into the floor.
    pub fn restore(floor_ms: u64, entries: &[(u64, u64)]) -> Replay {
        let mut r = Replay::new(floor_ms);
        r.merge(floor_ms, entries);
        r
    }

    /// Take in saved parts: the floor rises to `floor_ms`, the entries are remembered (those
    /// beyond [`RING`] folded into the floor). Everything refused before still is.
    pub fn merge(&mut self, floor_ms: u64, entries: &[(u64, u64)]) {
        self.fence(floor_ms);
        let mut sorted = entries.to_vec();
        sorted.sort_unstable();
        for (ts, n) in sorted {
            if !self.seen(ts, n) {
                self.commit(ts, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_packet_stays_refused() {
        let mut r = Replay::new(1000);
        assert!(r.seen(1000, 1), "at the fence");
        assert!(r.seen(999, 1), "before the fence");
        let mut accepted = Vec::new();
        // Out of order, more than the ring holds.
        for (i, ts) in [1500u64, 1200, 1800, 1100, 1900, 1300, 2500, 2000]
            .into_iter()
            .enumerate()
        {
            let n = i as u64;
            if !r.seen(ts, n) {
                r.commit(ts, n);
                accepted.push((ts, n));
            }
            for (a, b) in &accepted {
                assert!(r.seen(*a, *b), "{a} accepted earlier and not refused");
            }
        }
        assert!(accepted.len() >= RING);
        // Same timestamp, another nonce: a different packet (two devices in one ms).
        assert!(!r.seen(2500, 99));
    }

    #[test]
    fn restore_keeps_what_was_accepted() {
        let mut r = Replay::new(0);
        for ts in [10, 20, 30, 40, 50, 60] {
            r.commit(ts, ts);
        }
        let back = Replay::restore(r.floor_ms(), r.entries());
        for ts in [10, 20, 30, 40, 50, 60] {
            assert!(back.seen(ts, ts));
        }
        let junk: Vec<(u64, u64)> = (0..100).map(|i| (i, i)).collect();
        let folded = Replay::restore(0, &junk);
        assert!(folded.entries().len() <= RING);
        assert!(junk.iter().all(|(t, n)| folded.seen(*t, *n)));
    }

    #[test]
    fn merge_keeps_both_sides() {
        // This run accepted 5000 (after its fence 1000); the file says 7000 was accepted
        // (a clock ahead) and the floor of the previous run was 900.
        let mut r = Replay::new(1000);
        r.commit(5000, 1);
        r.merge(900, &[(7000, 2), (800, 3)]);
        assert!(r.seen(5000, 1) && r.seen(7000, 2) && r.seen(800, 3) && r.seen(1000, 0));
        assert!(!r.seen(7000, 3) && !r.seen(6000, 1));
        assert_eq!(r.floor_ms(), 1000);
    }
}
