//! The grant ledger: every door the daemon opened for an address, and how to close it.
//! Pure data: what closes a grant is a [`Close`] value, run by the engine's owners.

mod checks;

pub use crate::close::Close;
use checks::{GrantChecks, Paid, QuickLane};
pub use checks::{CHECK_BURST, LANE_BURST, LANE_PER_SEC, SHARE_BURST, SHARE_PER_SEC};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

pub type GrantId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub door: String,
    pub addr: IpAddr,
    /// What was opened, for people: `tcp/22 (INPUT)` or the start command.
    pub opened: String,
    pub opened_at: SystemTime,
    /// None: stays open until revoked or closed by another door.
    pub expires: Option<Instant>,
    pub close: Close,
    /// How many times the door was knocked open again while this grant was open.
    pub refreshes: u32,
    /// When its rules were last checked.
    pub last_check: Option<Instant>,
    /// A check queued for this time (a re-knock came when the grant's own budget and the
    /// quick lane were spent).
    pub recheck: Option<Instant>,
    /// The re-knock checks' budgets: its own and its share of the quick lane (`grants/checks.rs`).
    pub checks: GrantChecks,
    /// Set once the grant is being closed: it stays in the ledger (and the state file) until
    /// its close succeeded.
    pub closing: Option<Closing>,
    /// The SPA client whose packet opened it (None: a knock sequence).
    pub client: Option<String>,
}

/// A grant whose close has started but not yet succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closing {
    /// Failed close attempts so far.
    pub failures: u32,
    /// The last failure, for `knockctl list` and the TUI.
    pub last_error: Option<String>,
    /// When the next attempt runs (None: one is running or none is scheduled).
    pub retry_at: Option<Instant>,
}

/// When a re-knock's check of a grant's rules runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckWhen {
    /// Now (recorded as the last check).
    Now,
    /// Later: queued for this time (see [`Ledger::due_rechecks`]), or already queued.
    Later,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// In id order (ids grow): the oldest grants are listed without sorting them all.
    grants: BTreeMap<GrantId, Grant>,
    by_key: HashMap<(String, IpAddr), GrantId>,
    /// Every grant (open or closing) of an address: doors that open the same port for the
    /// same source share one nftables element (see [`Self::of_addr`]).
    by_addr: HashMap<IpAddr, Vec<GrantId>>,
    timers: BTreeSet<(Instant, GrantId)>,
    rechecks: BTreeSet<(Instant, GrantId)>,
    /// Checks beyond the grants' own budgets, for the whole ledger (see [`checks`]).
    lane: QuickLane,
    retries: BTreeSet<(Instant, GrantId)>,
    /// Grants changed since the last [`Ledger::take_dirty`] (what the state writer needs).
    dirty: std::collections::HashSet<GrantId>,
    next_id: GrantId,
    version: u64,
    /// SPA opens on their way (queued for the door's start rate): the grant that records
    /// (door, address) next names this client. Bounded: cleared when it grows past 4,096.
    spa_clients: HashMap<(String, IpAddr), String>,
}

impl Ledger {
    /// Changes on every mutation: the engine persists the ledger when it moves.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    pub fn find(&self, door: &str, addr: IpAddr) -> Option<&Grant> {
        let id = self.by_key.get(&(door.to_string(), addr))?;
        self.grants.get(id)
    }

    pub fn get(&self, id: GrantId) -> Option<&Grant> {
        self.grants.get(&id)
    }

    /// Add a new grant; returns its id.
    pub fn insert(
        &mut self,
        door: &str,
        addr: IpAddr,
        opened: String,
        opened_at: SystemTime,
        expires: Option<Instant>,
        close: Close,
    ) -> GrantId {
        if let Some(old) = self.by_key.get(&(door.to_string(), addr)).copied() {
            self.remove(old);
        }
        self.next_id += 1;
        self.version += 1;
        let id = self.next_id;
        self.dirty.insert(id);
        if let Some(t) = expires {
            self.timers.insert((t, id));
        }
        self.by_key.insert((door.to_string(), addr), id);
        self.by_addr.entry(addr).or_default().push(id);
        self.grants.insert(
            id,
            Grant {
                id,
                door: door.to_string(),
                addr,
                opened,
                opened_at,
                expires,
                close,
                refreshes: 0,
                last_check: None,
                recheck: None,
                checks: GrantChecks::default(),
                closing: None,
                client: self.spa_clients.remove(&(door.to_string(), addr)),
            },
        );
        id
    }

    /// The SPA client opening (or that opened) `door` for `addr`; empty for a knock sequence.
    pub fn spa_client_of(&self, door: &str, addr: IpAddr) -> String {
        let key = (door.to_string(), addr);
        self.spa_clients
            .get(&key)
            .cloned()
            .or_else(|| {
                self.by_key
                    .get(&key)
                    .and_then(|id| self.grants.get(id))
                    .and_then(|g| g.client.clone())
            })
            .unwrap_or_default()
    }

    /// An SPA packet of `client` opens `door` for `addr`: name it in the grant (the open one,
    /// or the next one recorded).
    pub fn spa_client(&mut self, door: &str, addr: IpAddr, client: &str) {
        let key = (door.to_string(), addr);
        if let Some(g) = self.by_key.get(&key).and_then(|id| self.grants.get_mut(id)) {
            if g.client.as_deref() != Some(client) {
                g.client = Some(client.to_string());
                self.dirty.insert(g.id);
                self.version += 1;
            }
            return;
        }
        if self.spa_clients.len() >= 4096 {
            self.spa_clients.clear();
        }
        self.spa_clients.insert(key, client.to_string());
    }

    /// The grants (open or closing) of `addr`, oldest first.
    pub fn of_addr(&self, addr: IpAddr) -> impl Iterator<Item = &Grant> {
        self.by_addr
            .get(&addr)
            .into_iter()
            .flatten()
            .filter_map(|id| self.grants.get(id))
    }

    /// Set an open grant's deadline to what the kernel says (no refresh counted).
    pub fn follow_kernel(&mut self, id: GrantId, expires: Instant) {
        if let Some(g) = self.grants.get_mut(&id) {
            if g.closing.is_some() || g.expires == Some(expires) {
                return;
            }
            self.version += 1;
            self.dirty.insert(id);
            if let Some(t) = g.expires {
                self.timers.remove(&(t, id));
            }
            self.timers.insert((expires, id));
            g.expires = Some(expires);
        }
    }

    /// The highest grant id given so far (grants opened later have higher ids).
    pub fn last_id(&self) -> GrantId {
        self.next_id
    }

    /// Move a grant's deadline (re-knock).
    pub fn refresh(&mut self, id: GrantId, expires: Option<Instant>) {
        if let Some(g) = self.grants.get_mut(&id) {
            self.version += 1;
            self.dirty.insert(id);
            if let Some(t) = g.expires {
                self.timers.remove(&(t, id));
            }
            if let Some(t) = expires {
                self.timers.insert((t, id));
            }
            g.expires = expires;
            g.refreshes += 1;
        }
    }

    /// A re-knock (or the open) wants the grant's rules checked: at once from the grant's own
    /// budget ([`CHECK_BURST`] at once, the open counting as one, then one per `interval`),
    /// else at once from the ledger's quick lane ([`LANE_PER_SEC`] a second for all grants,
    /// at most [`SHARE_PER_SEC`] of them for one), else queued for when the own budget allows
    /// one (one queued check per grant). A person who removed the rule and knocks again, even
    /// several times a second, is answered at once; only a flood of re-knocks waits.
    pub fn check_due(
        &mut self,
        id: GrantId,
        now: Instant,
        interval: std::time::Duration,
    ) -> CheckWhen {
        let Some(g) = self.grants.get_mut(&id) else {
            return CheckWhen::Later;
        };
        match self.lane.take(&mut g.checks, now, interval) {
            Some(paid) => {
                g.last_check = Some(now);
                // A queued check is answered by this one. (Only for the lane's: with none of
                // its tokens a grant decides exactly as it did before the lane.)
                if paid == Paid::Lane {
                    if let Some(t) = g.recheck.take() {
                        self.rechecks.remove(&(t, id));
                    }
                }
                CheckWhen::Now
            }
            None => {
                if g.recheck.is_none() {
                    let at = g.checks.own_allowed_at(interval).unwrap_or(now);
                    g.recheck = Some(at);
                    self.rechecks.insert((at, id));
                }
                CheckWhen::Later
            }
        }
    }

    /// Queued checks that are due: their grants (recorded as checked now).
    pub fn due_rechecks(&mut self, now: Instant, interval: std::time::Duration) -> Vec<GrantId> {
        let due: Vec<(Instant, GrantId)> = self
            .rechecks
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied()
            .collect();
        for k in &due {
            self.rechecks.remove(k);
            if let Some(g) = self.grants.get_mut(&k.1) {
                g.recheck = None;
                g.checks.spend_own(now, interval);
                g.last_check = Some(now);
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    pub fn next_recheck(&self) -> Option<Instant> {
        self.rechecks.iter().next().map(|(t, _)| *t)
    }

    /// Forget a grant (its rules are gone, or the kernel removes them).
    pub fn remove(&mut self, id: GrantId) -> Option<Grant> {
        let g = self.grants.remove(&id)?;
        self.version += 1;
        self.dirty.insert(id);
        if let Some(t) = g.expires {
            self.timers.remove(&(t, id));
        }
        if let Some(t) = g.recheck {
            self.rechecks.remove(&(t, id));
        }
        if let Some(t) = g.closing.as_ref().and_then(|c| c.retry_at) {
            self.retries.remove(&(t, id));
        }
        if self.by_key.get(&(g.door.clone(), g.addr)) == Some(&id) {
            self.by_key.remove(&(g.door.clone(), g.addr));
        }
        if let Some(ids) = self.by_addr.get_mut(&g.addr) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_addr.remove(&g.addr);
            }
        }
        Some(g)
    }

    /// Start closing an open grant: it leaves the (door, address) slot (a new knock opens a
    /// new grant) but stays listed, as closing, until [`Self::remove`] after its close
    /// succeeded. Returns a copy to close; None if unknown or already closing.
    pub fn begin_close(&mut self, id: GrantId) -> Option<Grant> {
        let g = self.grants.get_mut(&id)?;
        if g.closing.is_some() {
            return None;
        }
        self.version += 1;
        self.dirty.insert(id);
        if let Some(t) = g.expires {
            self.timers.remove(&(t, id));
        }
        if let Some(t) = g.recheck.take() {
            self.rechecks.remove(&(t, id));
        }
        g.closing = Some(Closing::default());
        let key = (g.door.clone(), g.addr);
        if self.by_key.get(&key) == Some(&id) {
            self.by_key.remove(&key);
        }
        Some(g.clone())
    }

    /// A close attempt failed: remember why, and retry at `retry_at`.
    pub fn close_failed(&mut self, id: GrantId, error: String, retry_at: Instant) -> u32 {
        let Some(c) = self.grants.get_mut(&id).and_then(|g| g.closing.as_mut()) else {
            return 0;
        };
        self.version += 1;
        self.dirty.insert(id);
        c.failures += 1;
        c.last_error = Some(error);
        if let Some(t) = c.retry_at.replace(retry_at) {
            self.retries.remove(&(t, id));
        }
        self.retries.insert((retry_at, id));
        c.failures
    }

    /// Closing grants whose retry is due (their retry time cleared: an attempt is running).
    pub fn due_retries(&mut self, now: Instant) -> Vec<Grant> {
        let due: Vec<(Instant, GrantId)> = self
            .retries
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied()
            .collect();
        let mut out = Vec::new();
        for k in due {
            self.retries.remove(&k);
            if let Some(g) = self.grants.get_mut(&k.1) {
                if let Some(c) = g.closing.as_mut() {
                    c.retry_at = None;
                }
                out.push(g.clone());
            }
        }
        out
    }

    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.iter().next().map(|(t, _)| *t)
    }

    /// Open grants whose deadline is at or before `now` (still in the ledger: the caller
    /// closes them with [`Self::begin_close`] or forgets them with [`Self::remove`]).
    pub fn expire(&mut self, now: Instant) -> Vec<GrantId> {
        let due: Vec<GrantId> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in &due {
            if let Some(t) = self.grants.get_mut(id).and_then(|g| g.expires) {
                self.timers.remove(&(t, *id));
            }
        }
        due
    }

    /// The grants changed since the last call (changed or removed).
    pub fn take_dirty(&mut self) -> Vec<GrantId> {
        self.dirty.drain().collect()
    }

    /// Grants being closed.
    pub fn closing(&self) -> usize {
        self.grants.values().filter(|g| g.closing.is_some()).count()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.iter().next().map(|(t, _)| *t)
    }

    /// Grants for `addr` whose derived closing command is exactly `words` (closeSSH-style doors).
    pub fn closed_by(&self, addr: IpAddr, words: &[String]) -> Vec<GrantId> {
        self.grants
            .values()
            .filter(|g| g.addr == addr && g.closing.is_none())
            .filter(|g| g.close.derived_delete_is(words))
            .map(|g| g.id)
            .collect()
    }

    /// All grants, oldest first.
    /// Every grant, oldest first.
    pub fn list(&self) -> Vec<&Grant> {
        self.grants.values().collect()
    }

    /// The oldest grants, in order, without touching the others (answers to operators).
    pub fn oldest(&self) -> impl Iterator<Item = &Grant> {
        self.grants.values()
    }

    pub fn ids(&self) -> Vec<GrantId> {
        self.grants.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn one_grant(l: &mut Ledger) -> GrantId {
        let close = Close::StopCommand {
            command: "x".into(),
        };
        l.insert(
            "d",
            addr("10.0.0.2"),
            "o".into(),
            SystemTime::now(),
            None,
            close,
        )
    }

    const SEC: Duration = Duration::from_secs(1);

    fn grants(l: &mut Ledger, n: u8) -> Vec<GrantId> {
        let close = Close::StopCommand {
            command: "x".into(),
        };
        (0..n)
            .map(|i| {
                let a = IpAddr::from([10, 0, 1, i]);
                l.insert("d", a, "o".into(), SystemTime::now(), None, close.clone())
            })
            .collect()
    }

    /// Re-knocks of `ids[g]` at `t0 + ms` for each `(ms, g)` in time order, each grant's open
    /// at `t0` first; queued checks that are due run before the re-knocks of each instant.
    /// Returns the checks that ran (the opens too) and each re-knock's answer.
    fn replay(
        l: &mut Ledger,
        ids: &[GrantId],
        t0: Instant,
        knocks: &[(u64, usize)],
    ) -> (usize, Vec<CheckWhen>) {
        let mut checks = 0;
        for &id in ids {
            assert_eq!(l.check_due(id, t0, SEC), CheckWhen::Now, "the open");
            checks += 1;
        }
        let mut answers = Vec::new();
        for &(ms, g) in knocks {
            let now = t0 + Duration::from_millis(ms);
            checks += l.due_rechecks(now, SEC).len();
            let answer = l.check_due(ids[g], now, SEC);
            checks += usize::from(answer == CheckWhen::Now);
            answers.push(answer);
            assert!(l.rechecks.len() <= ids.len(), "one queued check per grant");
        }
        (checks, answers)
    }

    /// `n` grants each re-knocked every `step` ms from `from` to `to` (exclusive).
    fn flood(n: usize, from: u64, to: u64, step: u64) -> Vec<(u64, usize)> {
        (from / step..to / step)
            .flat_map(|k| (0..n).map(move |g| (k * step, g)))
            .collect()
    }

    #[test]
    fn a_person_who_removed_the_rule_and_knocks_again_is_checked_at_once() {
        // 20 rounds a second apart (the open, the rule removed by hand, a knock 0.2 s later),
        // after three quick ones.
        let t0 = Instant::now();
        let mut l = Ledger::default();
        let id = one_grant(&mut l);
        assert_eq!(l.check_due(id, t0, SEC), CheckWhen::Now, "the open");
        let mut t = t0;
        for round in 0..23 {
            t += Duration::from_millis(if round < 2 { 300 } else { 1000 });
            assert_eq!(l.check_due(id, t, SEC), CheckWhen::Now, "round {round}");
        }
        assert_eq!(l.next_recheck(), None);
    }

    #[test]
    fn back_to_back_reknocks_at_a_humans_pace_are_all_checked_at_once() {
        // The rounds back to back: the rule removed by hand, a knock 0.2 s later,
        // answered at once; a round every 0.25 s, or 0.2 s (the fastest the rounds can go).
        for period in [250, 200] {
            let knocks: Vec<(u64, usize)> = (1..=20).map(|r| (r * period, 0)).collect();
            let t0 = Instant::now();
            let mut l = Ledger::default();
            let ids = grants(&mut l, 1);
            let (_, answers) = replay(&mut l, &ids, t0, &knocks);
            assert!(
                answers.iter().all(|a| *a == CheckWhen::Now),
                "every {period} ms: {answers:?}"
            );
            assert_eq!(l.next_recheck(), None);
            // Without the lane the grant's own budget (3, then one a second) made most wait.
            let mut l = Ledger {
                lane: QuickLane::none(),
                ..Ledger::default()
            };
            let ids = grants(&mut l, 1);
            let (_, answers) = replay(&mut l, &ids, t0, &knocks);
            let waited = answers.iter().filter(|a| **a == CheckWhen::Later).count();
            assert!(
                waited >= 10,
                "every {period} ms without the lane: {answers:?}"
            );
        }
    }

    #[test]
    fn a_flood_of_reknocks_on_one_grant_gets_its_budget_and_half_the_lane() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        let ids = grants(&mut l, 1);
        // 10 s of re-knocks every 10 ms: its own 3 (the open included) + 1 a second, and its
        // share of the lane, 4 + 4 a second; one queued check at a time.
        let (checks, answers) = replay(&mut l, &ids, t0, &flood(1, 10, 10_000, 10));
        let bound = (CHECK_BURST + 10 + SHARE_BURST + 10 * SHARE_PER_SEC) as usize;
        assert!(
            (bound - 3..=bound).contains(&checks),
            "{checks} checks in 10 s (bound {bound})"
        );
        assert!(
            answers[..6].iter().all(|a| *a == CheckWhen::Now),
            "{answers:?}"
        );
        // The other half of the lane is still there for another grant.
        let other = l.insert(
            "another door",
            addr("10.0.0.9"),
            "o".into(),
            SystemTime::now(),
            None,
            Close::StopCommand {
                command: "x".into(),
            },
        );
        let now = t0 + Duration::from_millis(10_000);
        for _ in 0..CHECK_BURST + LANE_BURST - SHARE_BURST {
            assert_eq!(l.check_due(other, now, SEC), CheckWhen::Now);
        }
        // Quiet for a while: the burst and the lane are back.
        let later = t0 + Duration::from_secs(30);
        for _ in 0..CHECK_BURST + SHARE_BURST {
            assert_eq!(l.check_due(ids[0], later, SEC), CheckWhen::Now);
        }
        assert_eq!(l.check_due(ids[0], later, SEC), CheckWhen::Later);
        assert_eq!(l.next_recheck(), Some(later + SEC));
    }

    #[test]
    fn a_flood_across_many_grants_costs_their_own_budgets_plus_the_lane() {
        // 50 grants, each re-knocked every 10 ms for 10 s (50,000 re-knocks).
        let t0 = Instant::now();
        let knocks = flood(50, 10, 10_000, 10);
        let mut l = Ledger::default();
        let ids = grants(&mut l, 50);
        let (checks, _) = replay(&mut l, &ids, t0, &knocks);
        let bound = 50 * (CHECK_BURST + 10) + LANE_BURST + 10 * LANE_PER_SEC;
        assert!(
            checks <= bound as usize,
            "{checks} checks in 10 s (bound {bound})"
        );
        // The lane was used, and at most its worth beyond the grants' own budgets.
        let mut own_only = Ledger {
            lane: QuickLane::none(),
            ..Ledger::default()
        };
        let ids = grants(&mut own_only, 50);
        let (without, _) = replay(&mut own_only, &ids, t0, &knocks);
        let lane = (LANE_BURST + 10 * LANE_PER_SEC) as usize;
        assert!(
            checks > without && checks <= without + lane,
            "{checks} checks, {without} without the lane"
        );
    }

    #[test]
    fn with_the_lane_drained_a_grant_is_where_it_was_without_the_lane() {
        // Ten flooded grants hold the lane (each takes the token as it comes back); a person
        // re-knocks the eleventh every 250 ms: answered exactly as without the lane (its
        // burst at once, then one a second, queued checks included).
        let t0 = Instant::now();
        let mut knocks = flood(10, 0, 6_000, 10);
        knocks.extend((1..=20).map(|r| (r * 250 + 5, 10)));
        knocks.sort();
        let victim = |l: &mut Ledger| {
            let ids = grants(l, 11);
            let (_, answers) = replay(l, &ids, t0, &knocks);
            knocks
                .iter()
                .zip(answers)
                .filter(|((_, g), _)| *g == 10)
                .map(|(_, a)| a)
                .collect::<Vec<_>>()
        };
        let with = victim(&mut Ledger::default());
        let without = victim(&mut Ledger {
            lane: QuickLane::none(),
            ..Ledger::default()
        });
        assert_eq!(with, without);
        assert_eq!(with[..2], [CheckWhen::Now, CheckWhen::Now]);
        assert!(with.contains(&CheckWhen::Later));
    }

    #[test]
    fn queued_checks_run_when_the_own_budget_allows_and_a_lane_check_answers_one() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = Ledger::default();
        let ids = grants(&mut l, 3);
        // Two grants spend their own budgets and the whole lane at t0.
        for &id in &ids[..2] {
            for _ in 0..CHECK_BURST + SHARE_BURST {
                assert_eq!(l.check_due(id, t0, SEC), CheckWhen::Now);
            }
        }
        let id = ids[2];
        for _ in 0..CHECK_BURST {
            assert_eq!(l.check_due(id, t0, SEC), CheckWhen::Now);
        }
        assert_eq!(l.check_due(id, ms(50), SEC), CheckWhen::Later);
        assert_eq!(l.check_due(id, ms(60), SEC), CheckWhen::Later);
        assert_eq!(
            l.next_recheck(),
            Some(ms(1000)),
            "one queued, at its own pace"
        );
        // The lane gets a token back (one per 125 ms): the next re-knock is answered at once
        // from it, and the queued check goes.
        assert_eq!(l.check_due(id, ms(130), SEC), CheckWhen::Now);
        assert_eq!(l.next_recheck(), None);
        assert!(l.rechecks.is_empty());
        // Queued again; it runs when the grant's own budget allows one.
        assert_eq!(l.check_due(id, ms(140), SEC), CheckWhen::Later);
        assert!(l.due_rechecks(ms(999), SEC).is_empty());
        assert_eq!(l.due_rechecks(ms(1000), SEC), vec![id]);
        assert_eq!(l.get(id).and_then(|g| g.last_check), Some(ms(1000)));
        assert_eq!(l.next_recheck(), None);
        assert!(l.rechecks.is_empty());
    }

    #[test]
    fn insert_refresh_expire() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        let close = Close::StopCommand {
            command: "x".into(),
        };
        let a = l.insert(
            "d",
            addr("10.0.0.2"),
            "o".into(),
            SystemTime::now(),
            Some(t0 + Duration::from_secs(10)),
            close.clone(),
        );
        let b = l.insert(
            "d",
            addr("10.0.0.3"),
            "o".into(),
            SystemTime::now(),
            Some(t0 + Duration::from_secs(5)),
            close,
        );
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_secs(5)));
        l.refresh(b, Some(t0 + Duration::from_secs(20)));
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_secs(10)));
        let due = l.expire(t0 + Duration::from_secs(10));
        assert_eq!(due, vec![a]);
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_secs(20)));
        l.remove(a);
        assert_eq!(l.len(), 1);
        assert_eq!(l.find("d", addr("10.0.0.3")).map(|g| g.refreshes), Some(1));
    }

    #[test]
    fn a_closing_grant_stays_listed_until_removed_and_retries_on_schedule() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        let close = Close::StopCommand {
            command: "x".into(),
        };
        let ip = addr("10.0.0.2");
        let a = l.insert(
            "d",
            ip,
            "o".into(),
            SystemTime::now(),
            Some(t0),
            close.clone(),
        );
        let g = l.begin_close(a).expect("open grant");
        assert_eq!(g.closing, Some(Closing::default()));
        assert!(l.begin_close(a).is_none(), "already closing");
        assert!(
            l.find("d", ip).is_none(),
            "the slot is free for a new grant"
        );
        assert_eq!(l.len(), 1, "still listed");
        assert_eq!(l.closing(), 1);
        assert!(l.next_deadline().is_none());
        assert_eq!(
            l.close_failed(a, "lock".into(), t0 + Duration::from_secs(1)),
            1
        );
        assert!(l.due_retries(t0).is_empty());
        let due = l.due_retries(t0 + Duration::from_secs(1));
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0]
                .closing
                .as_ref()
                .and_then(|c| c.last_error.as_deref()),
            Some("lock")
        );
        // A new knock meanwhile opens a new grant beside the closing one.
        let b = l.insert("d", ip, "o".into(), SystemTime::now(), None, close);
        assert_eq!(l.len(), 2);
        assert!(l.remove(a).is_some());
        assert_eq!(
            l.find("d", ip).map(|g| g.id),
            Some(b),
            "removing the old keeps the new"
        );
    }

    #[test]
    fn one_grant_per_door_and_address() {
        let mut l = Ledger::default();
        let c = Close::StopCommand {
            command: "x".into(),
        };
        l.insert(
            "d",
            addr("10.0.0.2"),
            "o".into(),
            SystemTime::now(),
            None,
            c.clone(),
        );
        l.insert(
            "d",
            addr("10.0.0.2"),
            "o".into(),
            SystemTime::now(),
            None,
            c,
        );
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn closed_by_matches_the_derived_inverse() {
        let mut l = Ledger::default();
        let w = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let close = Close::Derived {
            delete: w("/sbin/iptables -D INPUT -s 10.0.0.2 -j ACCEPT"),
            check: w("/sbin/iptables -C INPUT -s 10.0.0.2 -j ACCEPT"),
        };
        let id = l.insert(
            "openSSH",
            addr("10.0.0.2"),
            "o".into(),
            SystemTime::now(),
            None,
            close,
        );
        assert_eq!(
            l.closed_by(
                addr("10.0.0.2"),
                &w("iptables -D INPUT -s 10.0.0.2 -j ACCEPT")
            ),
            vec![id]
        );
        assert!(l
            .closed_by(
                addr("10.0.0.3"),
                &w("iptables -D INPUT -s 10.0.0.2 -j ACCEPT")
            )
            .is_empty());
    }
}
