//! When a re-knock's check of a grant's rules runs (pure): the grant's own budget first, then
//! one quick lane shared by the whole ledger.
//!
//! A check on the iptables backend is a process (`iptables -C`, milliseconds of CPU; tens with
//! thousands of rules), so a forger who completes the sequence with an open grant's address
//! must not buy one per packet. Both budgets are GCRAs (a burst, then one per interval):
//!
//! - **Own** (per grant, the floor): [`CHECK_BURST`] checks at once (the open counts as one),
//!   then one per `interval` (the engine's one second). A re-knock that finds it spent and gets
//!   no lane token is queued for when it allows one, one queued check per grant.
//! - **Quick lane** (one for the whole ledger): when the grant's own budget is spent, its check
//!   still runs at once if the lane has a token ([`LANE_BURST`] deep, [`LANE_PER_SEC`] a
//!   second) and the grant has not used up its share of the lane ([`SHARE_BURST`] deep,
//!   [`SHARE_PER_SEC`] a second: half the lane).
//!
//! So a person who removes the rule by hand and knocks again a few times a second is answered
//! at once each time (one a second from its own budget, up to four more from the lane), and
//! whatever a flood of re-knocks does, the checks it causes over `T` seconds are at most
//! grants × (3 + T) from the grants' own budgets plus 8 + 8·T from the lane: the lane costs the
//! daemon as much as eight more flooded grants, however many grants there are.
//!
//! A lane check spends nothing of the grant's own budget, and a grant that gets no lane token
//! decides exactly as it would without the lane, so a flood that drains the lane leaves every
//! grant where it was before the lane existed: answered at once within its burst, otherwise
//! within one `interval`. One grant takes at most half the lane, so a client looping knocks
//! from its own address (a sequence shared by a team) cannot take it from the others; a forger
//! with the addresses of two or more open grants can drain it, and then every grant is back to
//! its own budget. The lane is not shared fairly beyond that: first come, first served.

use crate::ratelimit::Gcra;
use std::time::{Duration, Instant};

/// Re-knock checks a grant may have at once from its own budget (the open counts as one)
/// before they are paced at one per interval.
pub const CHECK_BURST: u32 = 3;
/// The quick lane's depth: checks the whole ledger may run at once beyond the grants' own
/// budgets.
pub const LANE_BURST: u32 = 8;
/// The quick lane's rate: checks a second beyond the grants' own budgets, for the whole daemon.
pub const LANE_PER_SEC: u32 = 8;
/// How much of the lane one grant may take at once...
pub const SHARE_BURST: u32 = 4;
/// ...and per second: half the lane.
pub const SHARE_PER_SEC: u32 = 4;

fn per_sec(n: u32) -> Duration {
    Duration::from_secs(1) / n.max(1)
}

/// One grant's side: its own budget and what it has taken of the lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantChecks {
    own: Gcra,
    share: Gcra,
}

impl GrantChecks {
    /// A check paid by the grant's own budget ran at `now` (the open, a queued check).
    pub fn spend_own(&mut self, now: Instant, interval: Duration) {
        self.own.spend(now, interval);
    }

    /// When the own budget allows the next check (None: now).
    pub fn own_allowed_at(&self, interval: Duration) -> Option<Instant> {
        self.own.allowed_at(CHECK_BURST, interval)
    }
}

/// Which budget paid for a check that runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paid {
    /// The grant's own budget.
    Own,
    /// The quick lane (and the grant's share of it).
    Lane,
}

/// The ledger-wide quick lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuickLane {
    budget: Gcra,
    /// 0: no lane (every check beyond a grant's own budget is queued).
    burst: u32,
}

impl Default for QuickLane {
    fn default() -> Self {
        QuickLane {
            budget: Gcra::default(),
            burst: LANE_BURST,
        }
    }
}

impl QuickLane {
    /// No lane at all: the grants' own budgets only (what the tests compare against).
    #[cfg(test)]
    pub fn none() -> Self {
        QuickLane {
            budget: Gcra::default(),
            burst: 0,
        }
    }

    /// A re-knock wants grant `g` checked at `now`: who pays for running it now, or None when
    /// its own budget and the lane (or its share of it) are spent.
    pub fn take(&mut self, g: &mut GrantChecks, now: Instant, interval: Duration) -> Option<Paid> {
        if g.own.allows(now, CHECK_BURST, interval) {
            g.own.spend(now, interval);
            return Some(Paid::Own);
        }
        let (lane, share) = (per_sec(LANE_PER_SEC), per_sec(SHARE_PER_SEC));
        if g.share.allows(now, SHARE_BURST, share) && self.budget.allows(now, self.burst, lane) {
            g.share.spend(now, share);
            self.budget.spend(now, lane);
            return Some(Paid::Lane);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn own_budget_first_then_the_lane_then_nothing() {
        let t0 = Instant::now();
        let mut lane = QuickLane::default();
        let mut g = GrantChecks::default();
        g.spend_own(t0, SEC); // the open
        assert_eq!(lane.take(&mut g, t0, SEC), Some(Paid::Own));
        assert_eq!(lane.take(&mut g, t0, SEC), Some(Paid::Own));
        for _ in 0..SHARE_BURST {
            assert_eq!(lane.take(&mut g, t0, SEC), Some(Paid::Lane));
        }
        assert_eq!(
            lane.take(&mut g, t0, SEC),
            None,
            "its share of the lane is spent"
        );
        assert_eq!(g.own_allowed_at(SEC), Some(ms(t0, 1000)));
        // The lane's checks did not touch the grant's own budget.
        let mut alone = GrantChecks::default();
        for _ in 0..CHECK_BURST {
            alone.spend_own(t0, SEC);
        }
        assert_eq!(g.own, alone.own);
    }

    #[test]
    fn one_grant_takes_at_most_half_the_lane_and_the_others_get_the_rest() {
        let t0 = Instant::now();
        let mut lane = QuickLane::default();
        let spent = |lane: &mut QuickLane| {
            let mut g = GrantChecks::default();
            for _ in 0..CHECK_BURST {
                g.spend_own(t0, SEC);
            }
            (0..100)
                .filter(|_| lane.take(&mut g, t0, SEC) == Some(Paid::Lane))
                .count()
        };
        assert_eq!(spent(&mut lane), SHARE_BURST as usize);
        assert_eq!(spent(&mut lane), (LANE_BURST - SHARE_BURST) as usize);
        assert_eq!(spent(&mut lane), 0, "the lane is drained");
        // It refills at LANE_PER_SEC: one token per 125 ms.
        let mut g = GrantChecks::default();
        for _ in 0..CHECK_BURST {
            g.spend_own(t0, SEC);
        }
        assert_eq!(lane.take(&mut g, ms(t0, 124), SEC), None);
        assert_eq!(lane.take(&mut g, ms(t0, 125), SEC), Some(Paid::Lane));
        assert_eq!(lane.take(&mut g, ms(t0, 125), SEC), None);
    }

    #[test]
    fn without_a_lane_only_the_own_budget_pays() {
        let t0 = Instant::now();
        let mut lane = QuickLane::none();
        let mut g = GrantChecks::default();
        let paid: Vec<_> = (0..5).map(|_| lane.take(&mut g, t0, SEC)).collect();
        assert_eq!(
            paid,
            [
                Some(Paid::Own),
                Some(Paid::Own),
                Some(Paid::Own),
                None,
                None
            ]
        );
    }
}
