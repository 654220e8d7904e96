//! Direct applies of a [`super::FirewallQueue`]: when the caller may apply a small batch
//! itself, on its own thread, instead of handing it to the queue's task.
//!
//! On a quiet machine a hand-off costs a thread wake-up (tens of microseconds, more when the
//! cores sleep), as much as the nftables transaction itself; a lone knock pays it twice (the
//! queue's task, then the backend's thread). So a batch of at most [`MAX_OPS`] ops that finds
//! the queue empty is applied at once ([`super::Firewall::apply_now`]). Under load this stops
//! by itself: at most [`BURST`] at once and [`RATE`] a second, so that a flood of opens
//! is batched by the queue (one transaction for many grants) instead of costing the engine one
//! transaction per grant.

use crate::ratelimit::Gcra;
use std::time::{Duration, Instant};

/// Most ops in a batch applied directly.
pub const MAX_OPS: usize = 8;
/// Batches per second applied directly, on average.
pub const RATE: u32 = 50;
/// Batches applied directly at once after a quiet moment.
pub const BURST: u32 = 10;

/// The budget of direct applies (a GCRA: [`BURST`] at once, then [`RATE`] a second).
#[derive(Debug, Default)]
pub struct Budget(Gcra);

impl Budget {
    const INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / RATE as u64);

    /// May a batch of `ops` ops be applied directly at `now`? (Counts it when yes.)
    pub fn take(&mut self, ops: usize, now: Instant) -> bool {
        if ops == 0 || ops > MAX_OPS || !self.0.allows(now, BURST, Self::INTERVAL) {
            return false;
        }
        self.0.spend(now, Self::INTERVAL);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut budget = Budget::default();
        for i in 0..BURST {
            assert!(budget.take(1, t0), "batch {i} of the burst");
        }
        assert!(!budget.take(1, t0), "the burst is spent");
        assert!(!budget.take(1, t0 + Budget::INTERVAL / 2));
        assert!(
            budget.take(1, t0 + Budget::INTERVAL),
            "one more an interval later"
        );
        assert!(!budget.take(1, t0 + Budget::INTERVAL));
        // A second of flood gets RATE batches at most.
        let start = t0 + Duration::from_secs(10);
        let mut budget = Budget::default();
        let taken = (0..10_000u32)
            .filter(|i| budget.take(1, start + Duration::from_micros(u64::from(*i) * 100)))
            .count();
        assert!(taken <= (BURST + RATE) as usize, "{taken}");
        // Quiet again: the whole burst is back.
        let later = start + Duration::from_secs(5);
        assert!((0..BURST).all(|_| budget.take(1, later)));
    }

    #[test]
    fn large_batches_are_never_applied_directly() {
        let mut budget = Budget::default();
        let now = Instant::now();
        assert!(!budget.take(MAX_OPS + 1, now));
        assert!(!budget.take(0, now));
        assert!(budget.take(MAX_OPS, now));
    }
}
