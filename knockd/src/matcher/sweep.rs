//! The sweep guard's bookkeeping: per source, the distinct ports it sent new connections to
//! that were no knock of any of its attempts ("strays"), and the sources being penalised as
//! scanners. Pure; the matcher decides what a stray is and what ending an attempt means.

use std::collections::{hash_map, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Largest accepted threshold (distinct stray ports remembered per source).
pub const MAX_THRESHOLD: usize = 1024;

#[derive(Debug)]
pub struct SweepGuard {
    threshold: usize,
    penalty: Duration,
    /// Bound on penalised sources remembered (the oldest penalty is forgotten first).
    max_penalised: usize,
    /// Per source with a guarded attempt: how many it has. Kept small (no stray list inline):
    /// a flood of first knocks from distinct sources fills this with up to `MaxAttempts`
    /// entries, and most sources never send a stray.
    sources: HashMap<IpAddr, u32, ahash::RandomState>,
    /// Distinct stray (protocol, port) keys per watched source that sent any; at most
    /// `threshold` each. Only sources in `sources`.
    strays: HashMap<IpAddr, Vec<u32>, ahash::RandomState>,
    penalised: HashMap<IpAddr, Instant, ahash::RandomState>,
    /// Penalties in the order given: all have the same length, so this is sorted by end.
    queue: VecDeque<(IpAddr, Instant)>,
}

impl SweepGuard {
    /// `threshold` = 0 turns the guard off everywhere.
    pub fn new(threshold: usize, penalty: Duration, max_penalised: usize) -> SweepGuard {
        SweepGuard {
            threshold: threshold.min(MAX_THRESHOLD),
            penalty,
            max_penalised: max_penalised.max(1),
            sources: HashMap::default(),
            strays: HashMap::default(),
            penalised: HashMap::default(),
            queue: VecDeque::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.threshold > 0
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    pub fn penalty(&self) -> Duration {
        self.penalty
    }

    /// A guarded attempt of `src` started.
    pub fn attempt_started(&mut self, src: IpAddr) {
        *self.sources.entry(src).or_default() += 1;
    }

    /// A guarded attempt of `src` ended (any reason). With none left its strays are forgotten.
    pub fn attempt_ended(&mut self, src: IpAddr) {
        if let hash_map::Entry::Occupied(mut e) = self.sources.entry(src) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
                self.forget_strays(src);
            }
        }
    }

    fn forget_strays(&mut self, src: IpAddr) {
        if !self.strays.is_empty() {
            self.strays.remove(&src);
        }
    }

    /// Whether `src` has a guarded attempt in progress (only then do strays count).
    pub fn watching(&self, src: IpAddr) -> bool {
        self.sources.contains_key(&src)
    }

    /// Records a stray new connection of `src` to `port_key`. Returns the number of distinct
    /// stray ports when that reaches the threshold (the source is a scanner), else `None`.
    pub fn stray(&mut self, src: IpAddr, port_key: u32) -> Option<usize> {
        if !self.enabled() {
            return None;
        }
        if !self.sources.contains_key(&src) {
            return None;
        }
        let strays = self.strays.entry(src).or_default();
        if !strays.contains(&port_key) {
            strays.push(port_key);
        }
        (strays.len() >= self.threshold).then_some(strays.len())
    }

    /// Penalise `src` from `now` for the configured penalty.
    pub fn penalise(&mut self, src: IpAddr, now: Instant) {
        let until = now + self.penalty;
        if self.penalised.len() >= self.max_penalised && !self.penalised.contains_key(&src) {
            while let Some((old, end)) = self.queue.pop_front() {
                if self.penalised.get(&old) == Some(&end) {
                    self.penalised.remove(&old);
                    break;
                }
            }
        }
        self.penalised.insert(src, until);
        self.queue.push_back((src, until));
        self.sources.remove(&src);
        self.forget_strays(src);
    }

    pub fn is_penalised(&self, src: IpAddr, now: Instant) -> bool {
        self.penalised.get(&src).is_some_and(|&until| now < until)
    }

    /// Forget penalties that ended at or before `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(src, until)) = self.queue.front() {
            if until > now {
                break;
            }
            self.queue.pop_front();
            if self.penalised.get(&src) == Some(&until) {
                self.penalised.remove(&src);
            }
        }
    }

    pub fn penalised_len(&self) -> usize {
        self.penalised.len()
    }

    /// Forget how many attempts each source has (the matcher counts them again after a
    /// reload or a door change), keeping the strays of sources that still have one:
    /// call [`SweepGuard::prune`] after counting.
    pub fn reset_counts(&mut self) {
        for n in self.sources.values_mut() {
            *n = 0;
        }
    }

    /// Drop sources left without a guarded attempt after [`SweepGuard::reset_counts`].
    pub fn prune(&mut self) {
        self.sources.retain(|_, n| *n > 0);
        let sources = &self.sources;
        self.strays.retain(|src, _| sources.contains_key(src));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn strays_count_only_while_watching_and_distinct() {
        let mut g = SweepGuard::new(3, Duration::from_secs(60), 10);
        assert_eq!(g.stray(A, 80), None);
        g.attempt_started(A);
        assert_eq!(g.stray(A, 80), None);
        assert_eq!(g.stray(A, 80), None);
        assert_eq!(g.stray(A, 443), None);
        assert_eq!(g.stray(A, 22), Some(3));
        g.attempt_ended(A);
        assert!(!g.watching(A));
        g.attempt_started(A);
        assert_eq!(
            g.stray(A, 1),
            None,
            "strays are forgotten with the attempts"
        );
    }

    #[test]
    fn penalties_end_and_are_bounded() {
        let t = Instant::now();
        let mut g = SweepGuard::new(3, Duration::from_secs(60), 2);
        g.penalise(A, t);
        assert!(g.is_penalised(A, t + Duration::from_secs(59)));
        assert!(!g.is_penalised(A, t + Duration::from_secs(60)));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let c = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));
        g.penalise(b, t);
        g.penalise(c, t);
        assert_eq!(g.penalised_len(), 2);
        assert!(!g.is_penalised(A, t), "the oldest penalty made room");
        g.expire(t + Duration::from_secs(60));
        assert_eq!(g.penalised_len(), 0);
    }

    #[test]
    fn threshold_zero_is_off() {
        let mut g = SweepGuard::new(0, Duration::from_secs(60), 2);
        g.attempt_started(A);
        for p in 0..100 {
            assert_eq!(g.stray(A, p), None);
        }
    }
}
