//! Log-rate throttles: what keeps a flood from turning into a flood of log lines. Per-knock
//! lines (Stage, reset, timeout, refused first knocks) share a token bucket
//! ([`crate::ratelimit::LogBudget`]); evictions and refused opens are summed up, one line every
//! [`SUMMARY_EVERY`] at most.

use crate::ratelimit::LogBudget;
use std::time::{Duration, Instant};

/// A summary line (evictions, refused opens) is written at most this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// One summary: how many were counted when it was last written, and when.
#[derive(Debug, Default)]
struct Summary {
    logged: u64,
    last: Option<Instant>,
}

impl Summary {
    /// With `total` counted so far: how many to report now (None: not yet).
    fn due(&mut self, now: Instant, total: u64) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < SUMMARY_EVERY)
        {
            return None;
        }
        let n = total - self.logged;
        self.logged = total;
        self.last = Some(now);
        Some(n)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Throttles {
    knocks: LogBudget,
    evictions: Summary,
    refusals: Summary,
}

impl Throttles {
    /// May one more per-knock line be written at `now`?
    pub fn knock(&mut self, now: Instant) -> bool {
        self.knocks.allow(now)
    }

    /// The line saying how many per-knock lines were left out, when one is due.
    pub fn knocks_left_out(&mut self, now: Instant) -> Option<String> {
        self.knocks.report(now)
    }

    /// With `total` evictions so far: how many to report now, if a summary is due.
    pub fn evictions(&mut self, now: Instant, total: u64) -> Option<u64> {
        self.evictions.due(now, total)
    }

    /// With `total` refused opens so far: how many to report now, if a summary is due.
    pub fn refusals(&mut self, now: Instant, total: u64) -> Option<u64> {
        self.refusals.due(now, total)
    }
}
