//! The sweep guard's bookkeeping: per source, the distinct ports it sent new connections to
//! that were no knock of any of its attempts ("strays"), and the sources being penalised as
//! scanners. Pure; the matcher decides what a stray is and what ending an attempt means, and
//! counts each source's watched attempts in its attempt table (one lookup per packet).

use std::collections::{HashMap, VecDeque};
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
    /// Distinct stray (protocol, port) keys per watched source that sent any; at most
    /// `threshold` each. The matcher forgets a source when its last watched attempt ends.
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

    /// Whether any source has strays.
    #[inline]
    pub fn has_strays(&self) -> bool {
        !self.strays.is_empty()
    }

    /// `src` has no watched attempt left: its strays are forgotten.
    pub fn forget(&mut self, src: IpAddr) {
        if !self.strays.is_empty() {
            self.strays.remove(&src);
        }
    }

    /// Keeps the strays of the sources `watched` says still have a watched attempt (after a
    /// reload).
    pub fn retain(&mut self, watched: impl Fn(IpAddr) -> bool) {
        self.strays.retain(|src, _| watched(*src));
    }

    /// Records a stray new connection of `src` (which has a watched attempt) to `port_key`.
    /// Returns the number of distinct stray ports when that reaches the threshold (the source
    /// is a scanner), else `None`.
    pub fn stray(&mut self, src: IpAddr, port_key: u32) -> Option<usize> {
        if !self.enabled() {
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
        self.forget(src);
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

    /// Heap bytes held (by capacity).
    pub fn heap_bytes(&self) -> usize {
        use super::table::map_bytes;
        use std::mem::size_of;
        map_bytes(self.strays.capacity(), size_of::<(IpAddr, Vec<u32>)>())
            + self
                .strays
                .values()
                .map(|v| v.capacity() * 4)
                .sum::<usize>()
            + map_bytes(self.penalised.capacity(), size_of::<(IpAddr, Instant)>())
            + self.queue.capacity() * size_of::<(IpAddr, Instant)>()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn strays_count_distinct_ports_until_forgotten() {
        let mut g = SweepGuard::new(3, Duration::from_secs(60), 10);
        assert_eq!(g.stray(A, 80), None);
        assert_eq!(g.stray(A, 80), None);
        assert_eq!(g.stray(A, 443), None);
        assert_eq!(g.stray(A, 22), Some(3));
        g.forget(A);
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
        for p in 0..100 {
            assert_eq!(g.stray(A, p), None);
        }
    }
}
