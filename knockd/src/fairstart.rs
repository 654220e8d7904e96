//! Fair start scheduling: how fast one door opens new grants, and for whom first.
//!
//! A knock sequence travels in clear text, so an attacker who saw it can complete it from
//! thousands of spoofed sources. Every new grant of a command door is a process, and every new
//! grant of a native door a rule, so each door starts at most `rate` new grants per second
//! (a token bucket, `burst` deep). What does not start at once waits in this queue, and the
//! queue decides who goes next. Pure: time is an input, the engine runs what comes out.
//!
//! Like fq_codel's flows, sources are grouped by network (IPv4 /24, IPv6 /64 by default,
//! `NetworkPrefixV4/V6`), and each network has a small queue of its own:
//!
//! - **Sparse networks first.** Each network has a score: the opens it asked for (admitted,
//!   refused or duplicate alike), decaying by half every `half_life`, and a noise meter: the
//!   wrong knocks it made on the door, decaying alike. The next start goes to the waiting
//!   network with the lowest sum of the two (oldest first on a tie). A client knocking from
//!   its own network scores a few points and makes no wrong knocks; a network a flood
//!   completes the sequence from scores hundreds, and one whose flood knocks the ports in
//!   random order breaks attempts many times a second before its first chance completions
//!   (so in a flood's first second, when its networks have asked no more opens than the
//!   client, their wrong knocks already put them behind it). So a legitimate network with
//!   one waiting start is served at the next token however many flooding networks wait
//!   (tested below, with proptest).
//! - **Bounded.** At most `net_cap` starts wait per network (more are refused) and
//!   `queue_cap` per door. When the door's queue is full, the newest start of the
//!   highest-ranking network is dropped for a newcomer from a lower-ranking network; a
//!   newcomer that would itself be served last is refused.
//! - **One per source.** A source already waiting is not queued twice.
//! - **Floods are refused, not queued.** A network that asks for the door's opens faster than
//!   any client behind it does (score above [`FLOOD_SCORE`]: about 17 opens a second,
//!   sustained), or that breaks the door's attempts with wrong knocks at a rate no client's
//!   lost packet explains ([`FLOOD_NOISE`] wrong knocks, decaying like the score: about 14 a
//!   second), gets no start until its meters decay below the limits: each start is a process
//!   or a rule, and a spoofed flood completing the sequence (in order, or by chance over its
//!   ports in random order) would otherwise keep the door's whole start rate busy. A client's
//!   own network scores a few points and makes no wrong knocks, so it is served as before.
//!
//! What it cannot tell apart: a flood's first instant. When a flood from new networks
//! begins, each of them has asked once; a client that knocked a moment before ranks above
//! them (its earlier open still counts), so if its start arrives with the flood's first
//! completions and the queue fills, its start is the one dropped. Within a fraction of a
//! second the flood's networks outrank it (an in-order flood asks about 50 times a second per
//! network) and the client's next knock is served first.
//!
//! What it does not stop: an attacker who spoofs the legitimate client's own network shares
//! its queue and its meters (a flood from it refuses the client's starts too while it lasts,
//! as the network cap already did); one who completes the sequence from more quiet networks
//! than the rate can serve (each network sending as little as a real client) is
//! indistinguishable from that many real clients, and they share the rate first come, first
//! served.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::matcher::tiers::{network, NetId};

/// The scheduler's knobs (one scheduler per door).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FairConfig {
    /// New grants started per second, on average.
    pub rate: f64,
    /// Starts allowed back to back after a quiet spell (the bucket holds at least one).
    pub burst: f64,
    /// Starts waiting in this door's queue at most.
    pub queue_cap: usize,
    /// Starts waiting per source network at most.
    pub net_cap: usize,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// A network's score halves in this time.
    pub half_life: Duration,
    /// Networks remembered (with their scores) at most.
    pub max_nets: usize,
}

/// Starts waiting per door, per network, and how long a score lasts.
pub const QUEUE_CAP: usize = 32;
pub const NET_CAP: usize = 4;
pub const HALF_LIFE: Duration = Duration::from_secs(1);
pub const MAX_NETS: usize = 4096;
/// A network whose score (opens asked, halving every [`HALF_LIFE`]) passes this, or the
/// door's whole rate if that is higher, is flooding: with the default rate about 17 opens a
/// second of one door, sustained, or 24 at once.
pub const FLOOD_SCORE: f64 = 24.0;
/// A network whose wrong knocks on the door (attempts broken, halving every [`HALF_LIFE`])
/// pass this, or the door's rate if that is higher, is flooding: with the default rate about
/// 14 a second, sustained (a client's lost packet is one).
pub const FLOOD_NOISE: f64 = 20.0;

impl FairConfig {
    /// `rate` starts per second (burst: one second's worth), the default bounds.
    pub fn new(rate: u32, prefix_v4: u8, prefix_v6: u8) -> FairConfig {
        let rate = f64::from(rate.max(1));
        FairConfig {
            rate,
            burst: rate,
            queue_cap: QUEUE_CAP,
            net_cap: NET_CAP,
            prefix_v4,
            prefix_v6,
            half_life: HALF_LIFE,
            max_nets: MAX_NETS,
        }
    }
}

/// Why a start was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRefusal {
    /// Its network already has `net_cap` starts waiting.
    NetworkBusy,
    /// The queue is full of starts from networks at least as busy as its own.
    QueueFull,
}

/// What [`FairStarts::offer`] did with a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Waiting for its turn (call [`FairStarts::pop`]).
    Queued,
    /// Queued, and this waiting start of a busier network was dropped to make room.
    Displaced(IpAddr),
    /// The source was already waiting: nothing changed.
    AlreadyWaiting,
    Refused(StartRefusal),
    /// Refused: its network floods the door (see [`FLOOD_SCORE`], [`FLOOD_NOISE`]); the
    /// starts of that network that were waiting are dropped too (listed).
    Flooding(Vec<IpAddr>),
}

#[derive(Debug)]
struct Net {
    /// Waiting sources, oldest first, with their arrival number.
    waiting: VecDeque<(IpAddr, u64)>,
    /// Opens asked, and wrong knocks, both as of `scored_at`.
    score: f64,
    noise: f64,
    scored_at: Instant,
}

impl Net {
    fn new(now: Instant) -> Net {
        Net {
            waiting: VecDeque::new(),
            score: 0.0,
            noise: 0.0,
            scored_at: now,
        }
    }

    /// What a value as of `scored_at` has decayed to at `now`.
    fn decay(&self, now: Instant, half_life: Duration) -> f64 {
        let dt = now.saturating_duration_since(self.scored_at).as_secs_f64();
        if dt == 0.0 {
            return 1.0;
        }
        0.5f64.powf(dt / half_life.as_secs_f64().max(1e-3))
    }

    /// Its place in line at `now`: opens asked plus wrong knocks made, both decayed (lower
    /// goes first, higher is dropped first).
    fn rank_at(&self, now: Instant, half_life: Duration) -> f64 {
        (self.score + self.noise) * self.decay(now, half_life)
    }

    /// Bring both meters to `now`.
    fn touch(&mut self, now: Instant, half_life: Duration) {
        let f = self.decay(now, half_life);
        self.score *= f;
        self.noise *= f;
        self.scored_at = now;
    }

    /// See [`FLOOD_SCORE`] and [`FLOOD_NOISE`] (meters brought to now).
    fn flooding(&self, cfg: &FairConfig) -> bool {
        self.score > FLOOD_SCORE.max(cfg.rate) || self.noise > FLOOD_NOISE.max(cfg.rate)
    }
}

/// One door's start queue and token bucket.
#[derive(Debug)]
pub struct FairStarts {
    cfg: FairConfig,
    tokens: f64,
    refilled: Option<Instant>,
    nets: HashMap<NetId, Net>,
    /// Networks with starts waiting (at most `queue_cap`).
    active: Vec<NetId>,
    waiting: usize,
    arrivals: u64,
}

impl FairStarts {
    pub fn new(cfg: FairConfig) -> FairStarts {
        FairStarts {
            cfg,
            tokens: cfg.burst,
            refilled: None,
            nets: HashMap::new(),
            active: Vec::new(),
            waiting: 0,
            arrivals: 0,
        }
    }

    pub fn config(&self) -> &FairConfig {
        &self.cfg
    }

    /// New knobs (a reload): waiting starts stay; the bucket keeps its tokens up to the new
    /// burst. Network prefixes changing regroups only new arrivals.
    pub fn set_config(&mut self, cfg: FairConfig) {
        self.tokens = self.tokens.min(cfg.burst);
        self.cfg = cfg;
    }

    /// Starts waiting.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// A new grant for `src` wants to start at `now`.
    pub fn offer(&mut self, src: IpAddr, now: Instant) -> Offer {
        let id = network(src, self.cfg.prefix_v4, self.cfg.prefix_v6);
        if !self.nets.contains_key(&id) && self.nets.len() >= self.cfg.max_nets {
            self.forget_idle(now);
        }
        self.refill(now);
        let half_life = self.cfg.half_life;
        let net = self.nets.entry(id).or_insert_with(|| Net::new(now));
        net.touch(now, half_life);
        net.score += 1.0;
        if net.waiting.iter().any(|&(a, _)| a == src) {
            return Offer::AlreadyWaiting;
        }
        if net.flooding(&self.cfg) {
            return Offer::Flooding(self.drop_all(id));
        }
        if net.waiting.len() >= self.cfg.net_cap {
            return Offer::Refused(StartRefusal::NetworkBusy);
        }
        let own_rank = net.score + net.noise;
        let mut displaced = None;
        if self.waiting >= self.cfg.queue_cap {
            // Drop what would be served last: the busiest network's newest start.
            let Some(victim) = self.last_in_line(now) else {
                return Offer::Refused(StartRefusal::QueueFull);
            };
            let victim_rank = self
                .nets
                .get(&victim)
                .map_or(0.0, |n| n.rank_at(now, half_life));
            if victim == id || victim_rank <= own_rank {
                return Offer::Refused(StartRefusal::QueueFull);
            }
            displaced = self.drop_newest(victim);
        }
        let seq = self.arrivals;
        self.arrivals += 1;
        if let Some(net) = self.nets.get_mut(&id) {
            net.waiting.push_back((src, seq));
            if net.waiting.len() == 1 {
                self.active.push(id);
            }
        }
        self.waiting += 1;
        match displaced {
            Some(a) => Offer::Displaced(a),
            None => Offer::Queued,
        }
    }

    /// `src` broke an attempt on the door with a wrong knock at `now`: one more against its
    /// network (see [`FLOOD_NOISE`]).
    pub fn wrong_knock(&mut self, src: IpAddr, now: Instant) {
        let id = network(src, self.cfg.prefix_v4, self.cfg.prefix_v6);
        if !self.nets.contains_key(&id) && self.nets.len() >= self.cfg.max_nets {
            self.forget_idle(now);
        }
        let half_life = self.cfg.half_life;
        let net = self.nets.entry(id).or_insert_with(|| Net::new(now));
        net.touch(now, half_life);
        net.noise += 1.0;
    }

    /// The next start to run at `now`, if a token is there: the waiting network with the
    /// lowest score (oldest first on a tie), its oldest start.
    pub fn pop(&mut self, now: Instant) -> Option<IpAddr> {
        self.refill(now);
        if self.waiting == 0 || self.tokens < 1.0 {
            return None;
        }
        let half_life = self.cfg.half_life;
        let (pos, id) = self
            .active
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                let n = self.nets.get(id)?;
                Some((i, *id, n.rank_at(now, half_life), n.waiting.front()?.1))
            })
            .min_by(|a, b| a.2.total_cmp(&b.2).then(a.3.cmp(&b.3)))
            .map(|(i, id, _, _)| (i, id))?;
        let net = self.nets.get_mut(&id)?;
        let (src, _) = net.waiting.pop_front()?;
        if net.waiting.is_empty() {
            self.active.swap_remove(pos);
        }
        self.waiting -= 1;
        self.tokens -= 1.0;
        Some(src)
    }

    /// When [`Self::pop`] will have a start to give: None when nothing waits, a past instant
    /// when a token is there already.
    pub fn ready_at(&self) -> Option<Instant> {
        if self.waiting == 0 {
            return None;
        }
        let base = self.refilled?;
        let missing = (1.0 - self.tokens).max(0.0);
        Some(base + Duration::from_secs_f64(missing / self.cfg.rate))
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.refilled {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.cfg.rate).min(self.cfg.burst.max(1.0));
        }
        self.refilled = Some(now);
    }

    /// The waiting network served last: the highest score, the newest start on a tie.
    fn last_in_line(&self, now: Instant) -> Option<NetId> {
        let half_life = self.cfg.half_life;
        self.active
            .iter()
            .filter_map(|id| {
                let n = self.nets.get(id)?;
                Some((*id, n.rank_at(now, half_life), n.waiting.back()?.1))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
            .map(|(id, _, _)| id)
    }

    /// Drop every start network `id` has waiting.
    fn drop_all(&mut self, id: NetId) -> Vec<IpAddr> {
        let Some(net) = self.nets.get_mut(&id) else {
            return Vec::new();
        };
        let gone: Vec<IpAddr> = net.waiting.drain(..).map(|(a, _)| a).collect();
        if !gone.is_empty() {
            self.active.retain(|n| *n != id);
            self.waiting -= gone.len();
        }
        gone
    }

    fn drop_newest(&mut self, id: NetId) -> Option<IpAddr> {
        let net = self.nets.get_mut(&id)?;
        let (src, _) = net.waiting.pop_back()?;
        if net.waiting.is_empty() {
            self.active.retain(|n| *n != id);
        }
        self.waiting -= 1;
        Some(src)
    }

    /// Forget networks with nothing waiting, quietest first: those whose meters decayed
    /// below one, then (if still three quarters full) every idle one.
    fn forget_idle(&mut self, now: Instant) {
        let half_life = self.cfg.half_life;
        self.nets.retain(|_, n| {
            let f = n.decay(now, half_life);
            !n.waiting.is_empty() || n.score * f >= 1.0 || n.noise * f >= 1.0
        });
        if self.nets.len() >= self.cfg.max_nets * 3 / 4 {
            self.nets.retain(|_, n| !n.waiting.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cfg(rate: u32) -> FairConfig {
        FairConfig::new(rate, 24, 64)
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// Spoofed source `n` of the bench's flood: 10.192.0.0 + 1 + n (256 per /24).
    fn flood(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 192, 0, 0)) + 1 + n,
        ))
    }

    const LEGIT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 77, 2));

    #[test]
    fn a_lone_start_goes_at_once_and_the_rate_holds_after_the_burst() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(cfg(10));
        assert_eq!(q.ready_at(), None, "nothing waits");
        assert_eq!(q.offer(LEGIT, t0), Offer::Queued);
        assert_eq!(q.ready_at(), Some(t0), "a token is there");
        assert_eq!(q.pop(t0), Some(LEGIT));
        assert_eq!(q.pop(t0), None);
        // 20 more from different networks at once: 9 tokens left of the burst.
        for i in 0..20u8 {
            assert_eq!(q.offer(v4(10, i, 0, 1), t0), Offer::Queued);
        }
        let mut served = 0;
        while q.pop(t0).is_some() {
            served += 1;
        }
        assert_eq!(served, 9);
        assert_eq!(q.ready_at(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(q.pop(t0 + Duration::from_millis(99)), None);
        assert!(q.pop(t0 + Duration::from_millis(100)).is_some());
        assert_eq!(q.waiting(), 10);
    }

    #[test]
    fn one_source_waits_once_and_a_network_at_most_net_cap() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(FairConfig {
            burst: 0.0,
            ..cfg(1)
        });
        assert_eq!(q.offer(flood(0), t0), Offer::Queued);
        assert_eq!(q.offer(flood(0), t0), Offer::AlreadyWaiting);
        for n in 1..NET_CAP as u32 {
            assert_eq!(q.offer(flood(n), t0), Offer::Queued);
        }
        assert_eq!(
            q.offer(flood(99), t0),
            Offer::Refused(StartRefusal::NetworkBusy)
        );
        assert_eq!(q.waiting(), NET_CAP);
        // The same /24, not the next one.
        assert_eq!(q.offer(flood(300), t0), Offer::Queued);
    }

    #[test]
    fn the_quietest_network_goes_first_oldest_first_on_a_tie() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(FairConfig {
            burst: 0.0,
            ..cfg(1)
        });
        // A busy /24: 20 completions (below a flood), 4 of them waiting.
        for n in 0..20 {
            q.offer(flood(n), t0);
        }
        // Two quiet networks, one start each.
        assert_eq!(q.offer(v4(192, 0, 2, 7), t0), Offer::Queued);
        assert_eq!(q.offer(LEGIT, t0), Offer::Queued);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(q.pop(t1), Some(v4(192, 0, 2, 7)));
        assert_eq!(q.pop(t1), None, "one token a second");
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(q.pop(t2), Some(LEGIT));
        assert_eq!(q.pop(t2 + Duration::from_secs(1)), Some(flood(0)));
    }

    #[test]
    fn a_full_queue_drops_the_busiest_networks_newest_start_for_a_quieter_one() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(FairConfig {
            burst: 0.0,
            ..cfg(1)
        });
        // Fill the queue: 8 busy /24s with 4 waiting each (and 20 asked each).
        for n in 0..(8 * 256) {
            if n % 256 < 20 {
                q.offer(flood(n), t0);
            }
        }
        assert_eq!(q.waiting(), QUEUE_CAP);
        // Another flooding network's first completion: quieter than any waiting one.
        let newcomer = flood(9 * 256);
        let Offer::Displaced(gone) = q.offer(newcomer, t0) else {
            panic!("expected a displacement");
        };
        assert_eq!(
            gone,
            flood(7 * 256 + 3),
            "the newest of the busiest (tie: newest)"
        );
        // Its next completions displace until its own network is the busiest waiting one or
        // holds net_cap starts; then they are refused.
        let mut refused = 0;
        for n in 1..20 {
            if let Offer::Refused(_) = q.offer(flood(9 * 256 + n), t0) {
                refused += 1;
            }
        }
        assert_eq!(refused, 19 - (NET_CAP - 1));
        let id = network(newcomer, 24, 64);
        assert_eq!(q.nets.get(&id).map(|n| n.waiting.len()), Some(NET_CAP));
        assert_eq!(q.waiting(), QUEUE_CAP);
        // The legitimate client is never refused while a busier network waits.
        assert!(matches!(q.offer(LEGIT, t0), Offer::Displaced(_)));
        assert_eq!(q.pop(t0 + Duration::from_secs(1)), Some(LEGIT));
    }

    /// The bench's shuffled flood one second in (as knockd's own queue showed it): 118 /24s
    /// have asked an open or two each and broken 5 to 19 attempts each (below the flood
    /// limit); the client, knocking every half second, scores 2.6. Its start must not be the
    /// one dropped, and must go first.
    #[test]
    fn wrong_knocks_rank_a_random_order_flood_behind_the_client() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(cfg(20));
        let ms = Duration::from_millis;
        for t in [t0, t0 + ms(500)] {
            assert_eq!(q.offer(LEGIT, t), Offer::Queued);
            assert_eq!(q.pop(t), Some(LEGIT));
        }
        let t1 = t0 + ms(1000);
        // The door's burst went to the flood's first chance completions.
        for net in 0..20 {
            q.offer(flood(net * 256), t1);
        }
        while q.pop(t1).is_some() {}
        let noisy = |q: &mut FairStarts, net: u32| {
            for k in 0..10 {
                q.wrong_knock(flood(net * 256 + 100 + k), t1);
            }
            q.offer(flood(net * 256 + 1), t1)
        };
        for net in 20..51 {
            assert_eq!(noisy(&mut q, net), Offer::Queued);
        }
        assert_eq!(q.offer(LEGIT, t1), Offer::Queued);
        assert_eq!(q.waiting(), QUEUE_CAP);
        for net in 51..118 {
            let offer = noisy(&mut q, net);
            assert_ne!(offer, Offer::Displaced(LEGIT), "network {net}");
        }
        assert_eq!(q.pop(t1 + ms(50)), Some(LEGIT), "the client goes first");
    }

    /// The bench's in-order flood over 127 /24s at its first instant: each network has asked
    /// once, and the client, which knocked 0.34 s before, ranks above them (1.8): its start
    /// is the one dropped when the queue fills (what the queue cannot tell apart). Its next
    /// knock half a second later, when the flood's networks have asked about 25 times each,
    /// is served first.
    #[test]
    fn at_a_floods_first_instant_the_client_can_lose_its_start_and_its_next_knock_goes_first() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(cfg(20));
        let ms = Duration::from_millis;
        assert_eq!(q.offer(LEGIT, t0), Offer::Queued);
        assert_eq!(q.pop(t0), Some(LEGIT));
        let t1 = t0 + ms(340);
        for net in 0..20 {
            q.offer(flood(net * 256), t1);
        }
        while q.pop(t1).is_some() {}
        for net in 20..38 {
            assert_eq!(q.offer(flood(net * 256), t1), Offer::Queued);
        }
        assert_eq!(q.offer(LEGIT, t1), Offer::Queued);
        let dropped: Vec<Offer> = (38..127).map(|net| q.offer(flood(net * 256), t1)).collect();
        assert!(dropped.contains(&Offer::Displaced(LEGIT)), "{dropped:?}");
        // 52 completions a second per network for half a second (the queue serves 20).
        let mut t = t1;
        for step in 1..=25u32 {
            t = t1 + ms(20) * step;
            for net in 0..127 {
                q.offer(flood(net * 256 + step), t);
            }
            while q.pop(t).is_some() {}
        }
        assert_eq!(q.offer(LEGIT, t), Offer::Queued);
        assert_eq!(q.pop(t + ms(50)), Some(LEGIT));
    }

    #[test]
    fn scores_decay_so_a_flood_long_over_is_forgiven() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(FairConfig {
            burst: 0.0,
            ..cfg(1)
        });
        for n in 0..256 {
            q.offer(flood(n), t0);
        }
        let mut t = t0;
        while q.waiting() > 0 {
            t += Duration::from_secs(1);
            q.pop(t);
        }
        // 20 half-lives later the flooding /24's score is far below one.
        let later = t0 + Duration::from_secs(120);
        assert_eq!(q.offer(flood(1), later), Offer::Queued);
        assert_eq!(q.offer(LEGIT, later), Offer::Queued);
        assert_eq!(
            q.pop(later + Duration::from_secs(1)),
            Some(flood(1)),
            "oldest first"
        );
    }

    #[test]
    fn networks_are_remembered_up_to_max_nets() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(FairConfig {
            max_nets: 64,
            ..cfg(1_000_000)
        });
        for n in 0..10_000u32 {
            let src = flood(n * 256);
            q.offer(src, t0);
            assert_eq!(q.pop(t0), Some(src));
            assert!(q.nets.len() <= 64);
        }
    }

    #[test]
    fn ipv6_networks_are_slash_64s() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(FairConfig {
            burst: 0.0,
            ..cfg(1)
        });
        let a = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        for i in 0..NET_CAP as u16 {
            assert_eq!(q.offer(a(i), t0), Offer::Queued);
        }
        assert_eq!(
            q.offer(a(100), t0),
            Offer::Refused(StartRefusal::NetworkBusy)
        );
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert_eq!(q.offer(other, t0), Offer::Queued);
    }

    #[test]
    fn reload_keeps_the_waiting_and_caps_the_tokens() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(cfg(100));
        q.offer(LEGIT, t0);
        q.set_config(FairConfig {
            burst: 0.0,
            ..cfg(1)
        });
        assert_eq!(q.waiting(), 1);
        assert_eq!(q.pop(t0), None);
        assert_eq!(q.pop(t0 + Duration::from_secs(1)), Some(LEGIT));
    }

    /// The bench's completing flood, in miniature time: every spoofed source completes the
    /// sequence (66,667 sources over 261 /24s at 6,667 completions/s) while the legitimate
    /// client knocks every 0.5 s. Each of its knocks is served at the next token.
    #[test]
    fn the_completing_flood_cannot_starve_the_legit_network() {
        let t0 = Instant::now();
        let rate = 20;
        let mut q = FairStarts::new(cfg(rate));
        let step = Duration::from_micros(150); // one completion
        let mut legit_at = None;
        let mut waits = Vec::new();
        let mut served = 0u32;
        // The flood, then a second more for the last knock.
        for i in 0..(66_667 + 6_667) {
            let now = t0 + step * i;
            if i < 66_667 {
                q.offer(flood(i), now);
            }
            if i % 3_333 == 0 && i < 66_667 {
                assert_ne!(q.offer(LEGIT, now), Offer::Refused(StartRefusal::QueueFull));
                legit_at.get_or_insert(now);
            }
            while let Some(src) = q.pop(now) {
                served += 1;
                if src == LEGIT {
                    let at = legit_at.take().expect("legit was waiting");
                    waits.push(now - at);
                }
            }
        }
        assert_eq!(waits.len(), 21, "every legit knock served");
        let limit = Duration::from_secs_f64(1.0 / f64::from(rate)) + step;
        for w in &waits {
            assert!(*w <= limit, "legit waited {w:?} (limit {limit:?})");
        }
        // 11 s at 20/s plus the burst: the door's start rate holds.
        assert!(served <= 11 * rate + rate + 1, "served {served}");
    }

    #[test]
    fn a_flooding_network_gets_no_start_until_it_calms_down() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(FairConfig {
            burst: 1000.0,
            ..cfg(20)
        });
        let mut served = 0;
        for n in 0..100 {
            match q.offer(flood(n), t0) {
                Offer::Queued => served += usize::from(q.pop(t0).is_some()),
                Offer::Flooding(dropped) => assert!(dropped.is_empty()),
                other => panic!("{n}: {other:?}"),
            }
        }
        assert_eq!(served, FLOOD_SCORE as usize);
        assert_eq!(q.waiting(), 0, "refused, not queued");
        // Another network is served meanwhile.
        assert_eq!(q.offer(LEGIT, t0), Offer::Queued);
        assert_eq!(q.pop(t0), Some(LEGIT));
        // Five half-lives later the flood's score (100 asked) is down to about 3.
        let later = t0 + HALF_LIFE * 5;
        assert_eq!(q.offer(flood(200), later), Offer::Queued);
    }

    /// A door whose StartRate is raised past the flood limits lets one network ask for that
    /// many (a big NAT's clients, a test's burst).
    #[test]
    fn the_flood_limits_grow_with_the_door_rate() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(cfg(1000));
        for n in 0..250 {
            q.wrong_knock(flood(n), t0);
            q.wrong_knock(flood(n), t0);
        }
        for n in 0..250 {
            assert_eq!(q.offer(flood(n), t0), Offer::Queued, "{n}");
            assert_eq!(q.pop(t0), Some(flood(n)));
        }
    }

    /// The starts a network had waiting when it turned to flooding are dropped with it.
    #[test]
    fn a_network_turning_to_flooding_loses_its_waiting_starts() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(FairConfig {
            burst: 0.0,
            ..cfg(1)
        });
        assert_eq!(q.offer(LEGIT, t0), Offer::Queued);
        let mut dropped = Vec::new();
        for n in 0..30 {
            if let Offer::Flooding(d) = q.offer(flood(n), t0) {
                dropped.extend(d);
            }
        }
        assert_eq!(dropped, (0..NET_CAP as u32).map(flood).collect::<Vec<_>>());
        assert_eq!(q.waiting(), 1);
        assert_eq!(q.pop(t0 + Duration::from_secs(1)), Some(LEGIT));
        assert_eq!(q.pop(t0 + Duration::from_secs(9)), None);
    }

    #[test]
    fn a_network_breaking_attempts_gets_no_start_until_it_calms_down() {
        let t0 = Instant::now();
        let mut q = FairStarts::new(cfg(20));
        for n in 0..FLOOD_NOISE as u32 {
            q.wrong_knock(flood(n), t0);
        }
        assert_eq!(
            q.offer(flood(1), t0),
            Offer::Queued,
            "at the limit, not past it"
        );
        assert_eq!(q.pop(t0), Some(flood(1)));
        q.wrong_knock(flood(7), t0);
        assert_eq!(q.offer(flood(2), t0), Offer::Flooding(Vec::new()));
        // Wrong knocks of another network, or of the next /24, change nothing for LEGIT.
        assert_eq!(q.offer(LEGIT, t0), Offer::Queued);
        assert_eq!(q.offer(flood(256), t0), Offer::Queued);
        // A client's lost packet is a wrong knock or two: nowhere near.
        q.wrong_knock(LEGIT, t0);
        assert_eq!(q.offer(v4(10, 99, 77, 3), t0), Offer::Queued);
        let later = t0 + HALF_LIFE * 2;
        assert_eq!(q.offer(flood(3), later), Offer::Queued);
    }

    /// A flood from `nets` /24s, each asking `opens` opens and making `wrong` wrong knocks a
    /// second, for 10 s while the legitimate client knocks every 0.5 s (as the bench does):
    /// the flood's starts served, and the legit client's waits.
    fn flood_against_legit(nets: u32, opens: u32, wrong: u32) -> (u32, Vec<Duration>) {
        let t0 = Instant::now();
        let rate = 20;
        let mut q = FairStarts::new(cfg(rate));
        let tick = Duration::from_millis(1);
        let (mut flood_served, mut waits, mut legit_at) = (0u32, Vec::new(), None);
        let mut k = 0u32;
        for ms in 0..10_000u32 {
            let now = t0 + tick * ms;
            for net in 0..nets {
                // Spread each network's events over the second.
                let phase = (ms + net * 7) % 1000;
                if phase * opens / 1000 != (phase + 1) * opens / 1000 {
                    k = (k + 1) % 250;
                    q.offer(flood(net * 256 + k), now);
                }
                if phase * wrong / 1000 != (phase + 1) * wrong / 1000 {
                    q.wrong_knock(flood(net * 256 + k), now);
                }
            }
            if ms % 500 == 0 {
                let offer = q.offer(LEGIT, now);
                assert!(
                    matches!(offer, Offer::Queued | Offer::Displaced(_)),
                    "{offer:?}"
                );
                legit_at = Some(now);
            }
            while let Some(src) = q.pop(now) {
                if src == LEGIT {
                    waits.push(now - legit_at.take().expect("legit was waiting"));
                } else {
                    flood_served += 1;
                }
            }
        }
        (flood_served, waits)
    }

    /// The bench's floods on the seed's doors: 30,000 sources over 127 /24s completing in
    /// order (52 opens a second per network), and over 118 /24s knocking the three ports in
    /// random order (about 4 completions and 100 wrong knocks a second per network and door).
    /// The flood gets a handful of starts in its first second and none after; every legit
    /// knock is served within a few tokens (in the first second the flood's networks score
    /// no more than the client's).
    #[test]
    fn floods_from_a_few_hundred_networks_get_no_starts_and_the_client_all() {
        for (nets, opens, wrong) in [(127, 52, 0), (118, 4, 100)] {
            let (flood_served, waits) = flood_against_legit(nets, opens, wrong);
            assert_eq!(waits.len(), 20, "{nets} nets: every legit knock served");
            assert!(
                waits.iter().all(|w| *w <= Duration::from_millis(250)),
                "{nets} nets: {waits:?}"
            );
            assert!(
                flood_served <= 40,
                "{nets} nets: the flood got {flood_served} starts in 10 s"
            );
        }
        // Without the wrong knocks, a few completions per network and second are what many
        // real networks would ask together: served at the door's rate.
        let (flood_served, waits) = flood_against_legit(118, 4, 0);
        assert_eq!(waits.len(), 20);
        assert!(flood_served > 150, "{flood_served}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A network with one waiting start is served within one token interval, however
        /// many networks flood (each asking at least twice a half-life, as any flood does).
        #[test]
        fn a_sparse_network_is_served_within_one_token_despite_n_flooding_networks(
            n_nets in 1u32..200,
            per_net_gap_ms in 1u64..400,
            rate in 2u32..50,
            legit_at_ms in 0u64..2_000,
        ) {
            let t0 = Instant::now();
            let mut q = FairStarts::new(cfg(rate));
            let gap = Duration::from_millis(per_net_gap_ms);
            // Each flooding network asks every `gap`, from new sources, staggered.
            let tick = Duration::from_millis(1);
            let mut next_source = vec![0u32; n_nets as usize];
            // After every flooding network asked twice (its first ask is within one gap).
            let legit_t = t0 + 2 * gap + Duration::from_millis(legit_at_ms);
            let mut legit_offered = false;
            let mut served_at = None;
            let horizon = legit_t + Duration::from_secs_f64(2.0 / f64::from(rate)) + gap;
            let mut now = t0;
            while now <= horizon && served_at.is_none() {
                let ms = (now - t0).as_millis() as u64;
                for net in 0..n_nets {
                    if (ms + u64::from(net)) % per_net_gap_ms == 0 {
                        let k = next_source[net as usize];
                        next_source[net as usize] = (k + 1) % 250;
                        q.offer(flood(net * 256 + k), now);
                    }
                }
                if !legit_offered && now >= legit_t {
                    legit_offered = true;
                    prop_assert_ne!(q.offer(LEGIT, now), Offer::Refused(StartRefusal::QueueFull));
                }
                while let Some(src) = q.pop(now) {
                    if src == LEGIT {
                        served_at = Some(now);
                    }
                }
                now += tick;
            }
            let served_at = served_at.expect("the legit start was served");
            let waited = served_at - legit_t;
            let limit = Duration::from_secs_f64(1.0 / f64::from(rate)) + 2 * tick;
            prop_assert!(waited <= limit, "waited {:?}, limit {:?}", waited, limit);
        }
    }
}
