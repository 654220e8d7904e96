//! The knock matcher: packets and `Instant`s in, events out. Pure; no I/O, no clock.
//!
//! Semantics (each differs from knockd 0.8 on purpose, see README "Differences"):
//! 1. Progress is tracked per (source, door). A knock that belongs only to another door never
//!    touches this door's attempt.
//! 2. A packet of a flow (source port, destination port, protocol) that already counted as a
//!    knock of this attempt is ignored: TCP retransmissions and the rest of a handshake never
//!    break a sequence.
//! 3. A wrong knock resets the attempt, and the same packet is then tried as a first knock, so
//!    an immediate retry works.
//! 4. `seq_timeout` runs from the first knock with full `Instant` precision; `expire` drops
//!    attempts at their deadline, whether or not more packets arrive.
//! 5. The number of attempts is capped, and so is each source network's share ([`tiers`]).
//!    A first knock that needs room may only evict an attempt still at stage 1 (the oldest of
//!    the network holding the most stage-1 attempts, or of the whole table when no network
//!    holds more than one); advanced attempts end only by
//!    completing, a wrong knock or their timeout. With no stage-1 attempt to evict, the first
//!    knock is refused. Work per packet is O(doors sharing the port), independent of the
//!    number of attempts.
//! 6. Sweep guard ([`sweep`]): a new connection (TCP SYN without ACK, or UDP) from a source
//!    with an attempt in progress on a guarded door, to this host, that neither counts as a
//!    knock nor is a retransmission of one, is a stray. At `threshold` distinct stray ports
//!    the source is a scanner: its guarded attempts end and for `penalty` it cannot start an
//!    attempt on a guarded door with a fixed sequence. Rotating (TOTP) doors ignore the
//!    penalty: their knocks prove a secret, so a burst forged from a client's address must not
//!    lock the client out of them (ending the sweeping source's attempts already keeps a sweep
//!    from opening one: its knocks are a few ports of tens of thousands).
//! 7. On a guarded door a TCP knock counts only as a connection attempt (SYN without ACK,
//!    what `knock` sends), whatever the door's `TCPFlags`; other TCP packets neither knock nor
//!    advance. So every packet that can knock is one the sweep guard counts as a stray when it
//!    is no knock: a sweep of SYN|ACK, ACK, FIN, RST, NULL or XMAS packets is not seen at all.

use crate::config::{flag, Proto, Step, TcpFlags};
use crate::packet::Packet;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What the matcher needs to know about a door.
#[derive(Debug, Clone, PartialEq)]
pub struct DoorRule {
    pub sequence: Vec<Step>,
    pub seq_timeout: Duration,
    pub tcp_flags: TcpFlags,
    pub target: Option<IpAddr>,
    /// A disabled door (one-time sequences exhausted) matches nothing.
    pub enabled: bool,
    /// Whether the sweep guard watches this door's attempts (`SweepGuard = off` for knockd
    /// 0.8 behaviour).
    pub sweep_guard: bool,
    /// TOTP doors: a sequence (variant) that opened the door for one address is refused for
    /// any other address while it is in the window.
    pub replay_guard: bool,
    /// Replay-guarded doors with the same key share their replay memory (TOTP doors: derived
    /// from the secret and the step length, so two doors sharing a secret cannot be replayed
    /// into each other).
    pub replay_key: u64,
}

impl From<&crate::config::Door> for DoorRule {
    fn from(d: &crate::config::Door) -> Self {
        DoorRule {
            sequence: d.sequence.clone(),
            seq_timeout: d.seq_timeout,
            tcp_flags: d.tcp_flags,
            target: d.target,
            enabled: !d.sequence.is_empty() || d.totp.is_some(),
            sweep_guard: d.sweep_guard,
            replay_guard: d.totp.is_some(),
            replay_key: d.totp.as_ref().map_or(0, replay_key),
        }
    }
}

/// The replay key of a TOTP secret: doors sharing the secret and the step length derive the
/// same sequences for the same steps (a door with fewer knocks, a prefix of them).
fn replay_key(spec: &knock_ipc::totp::Spec) -> u64 {
    use std::hash::{Hash, Hasher as _};
    let mut h = std::hash::DefaultHasher::new();
    (&spec.secret, spec.step_secs).hash(&mut h);
    h.finish()
}

/// Index of a door in the slice the matcher was built from.
pub type DoorId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchEvent {
    /// `stage` knocks of `of` done (1-based, like knockd's "Stage N").
    Stage {
        src: IpAddr,
        door: DoorId,
        stage: usize,
        of: usize,
    },
    /// The sequence is complete.
    Open { src: IpAddr, door: DoorId },
    /// A knock out of sequence ended the attempt after `stage` good knocks.
    Reset {
        src: IpAddr,
        door: DoorId,
        stage: usize,
        got: Step,
    },
    /// seq_timeout passed after `stage` good knocks.
    Timeout {
        src: IpAddr,
        door: DoorId,
        stage: usize,
    },
    /// A first knock needed room; this stage-1 attempt made it.
    Evicted {
        src: IpAddr,
        door: DoorId,
        stage: usize,
    },
    /// The sweep guard found `strays` distinct non-knock ports: `src` is a scanner. Followed
    /// by a `Swept` for each attempt this ends.
    Scanner { src: IpAddr, strays: usize },
    /// An attempt ended because its source is a scanner.
    Swept {
        src: IpAddr,
        door: DoorId,
        stage: usize,
    },
    /// A first knock that did not start an attempt.
    Refused {
        src: IpAddr,
        door: DoorId,
        reason: Refusal,
    },
}

/// Why a first knock was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source is penalised by the sweep guard.
    Scanner,
    /// Its network holds its whole share and none of it is at stage 1.
    NetworkFull,
    /// The table is full and no attempt is at stage 1.
    TableFull,
    /// A TOTP sequence completed by an address other than the one it already opened for.
    Replay,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Scanner => "source is penalised as a scanner",
            Refusal::NetworkFull => "its network holds its whole share of attempts",
            Refusal::TableFull => "attempt table full of advanced attempts",
            Refusal::Replay => {
                "replay: this time step's sequence already opened the door for another address"
            }
        }
    }
}

/// Limits and the sweep guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Attempts tracked at once.
    pub max_attempts: usize,
    /// Attempts one source network may hold.
    pub per_network: usize,
    /// Prefix lengths that make a network.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// Distinct stray ports that make a scanner; 0 turns the guard off.
    pub sweep_threshold: usize,
    pub sweep_penalty: Duration,
}

pub use crate::config::model::{
    DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6, DEFAULT_SWEEP_PENALTY, DEFAULT_SWEEP_THRESHOLD,
};

/// Default share of one network: a tenth of the table (at least 1).
pub fn default_per_network(max_attempts: usize) -> usize {
    (max_attempts / 10).max(1)
}

impl From<&crate::config::Config> for Settings {
    fn from(c: &crate::config::Config) -> Self {
        Settings {
            max_attempts: c.max_attempts(),
            per_network: c.max_attempts_per_network(),
            prefix_v4: c.options.network_prefix_v4.unwrap_or(DEFAULT_PREFIX_V4),
            prefix_v6: c.options.network_prefix_v6.unwrap_or(DEFAULT_PREFIX_V6),
            sweep_threshold: c.sweep_threshold(),
            sweep_penalty: c.sweep_penalty(),
        }
    }
}

impl Settings {
    /// The defaults for a table of `max_attempts`.
    pub fn new(max_attempts: usize) -> Settings {
        Settings {
            max_attempts,
            per_network: default_per_network(max_attempts),
            prefix_v4: DEFAULT_PREFIX_V4,
            prefix_v6: DEFAULT_PREFIX_V6,
            sweep_threshold: DEFAULT_SWEEP_THRESHOLD,
            sweep_penalty: DEFAULT_SWEEP_PENALTY,
        }
    }
}

/// What one door made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Not a knock of this door (or a wrong one).
    Nothing,
    /// Started or advanced an attempt.
    Counted,
    /// A retransmission of a counted knock.
    Repeat,
}

/// Identity of a flow: source and destination port (never 0: port 0 is not a knock port).
/// The protocol is left out to keep attempts small; a UDP packet with exactly the ports of a
/// counted TCP knock is then ignored rather than treated as a wrong knock.
type FlowId = u32;
const RECENT: usize = 4;

fn flow_id(p: &Packet) -> FlowId {
    (u32::from(p.sport) << 16) | u32::from(p.dport)
}

#[derive(Debug, Clone)]
struct Attempt {
    stage: u8,
    id: u64,
    /// Which of the door's sequences (variants) this attempt follows: 0 for static doors,
    /// the time step for TOTP doors.
    variant: u64,
    deadline: Instant,
    /// Flows of the last knocks that counted, to ignore their retransmissions.
    recent: [FlowId; RECENT],
}

impl Attempt {
    fn remember(&mut self, flow: FlowId) {
        self.recent[usize::from(self.stage) % RECENT] = flow;
    }
}

/// A live attempt, as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptInfo {
    pub src: IpAddr,
    pub door: DoorId,
    pub stage: usize,
    pub of: usize,
    pub started: Instant,
    pub deadline: Instant,
}

/// (source, door). The door index is stored as u32 to keep the table small.
type Key = (IpAddr, u32);

fn key(src: IpAddr, door: DoorId) -> Key {
    (src, door as u32)
}

/// Keyed with random keys per process, so attacker-chosen source addresses cannot force
/// collisions, and several times faster than SipHash on this hot path.
type Hasher = ahash::RandomState;

/// Expiry queue entry. Per door, deadlines are in insertion order (one timeout per door), so a
/// FIFO is a priority queue. Entries of attempts that ended early stay until popped or compacted.
#[derive(Debug, Clone, Copy)]
struct QueueEntry {
    deadline: Instant,
    src: IpAddr,
    id: u64,
}

#[derive(Debug)]
pub struct Matcher {
    doors: Vec<DoorRule>,
    /// Which doors have a given step anywhere in their sequence.
    by_step: HashMap<Step, Vec<DoorId>, Hasher>,
    attempts: HashMap<Key, Attempt, Hasher>,
    queues: Vec<VecDeque<QueueEntry>>,
    live: Vec<usize>,
    local: HashSet<IpAddr, Hasher>,
    /// Door `Target`s: also "this host" for the sweep guard.
    targets: HashSet<IpAddr, Hasher>,
    settings: Settings,
    cap: usize,
    nets: Networks,
    guard: SweepGuard,
    /// Per door, its accepted sequences: `(variant, sequence)`, the preferred one first.
    variants: Vec<Vec<(u64, Vec<Step>)>>,
    /// Replay-guarded doors: which address each variant opened for.
    used: HashMap<(DoorId, u64), IpAddr>,
    /// Replay keys shared by several replay-guarded doors, with those doors.
    shared: HashMap<u64, Vec<DoorId>>,
    /// Bumped whenever `used` changes (the engine persists it when this moves).
    used_generation: u64,
    next_id: u64,
}

/// Which doors have a given step in any of their variants, each list in door order. Linear:
/// ids arrive in order, so a door already listed is the last one (100,000 doors sharing a
/// port cost no more than 100,000 that do not).
fn step_index(variants: &[Vec<(u64, Vec<Step>)>]) -> HashMap<Step, Vec<DoorId>, Hasher> {
    let mut by_step: HashMap<Step, Vec<DoorId>, Hasher> = HashMap::default();
    for (id, variants) in variants.iter().enumerate() {
        for step in variants.iter().flat_map(|(_, seq)| seq) {
            let ids = by_step.entry(*step).or_default();
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
    }
    by_step
}

/// Add `id` to the index for `steps`, keeping each list in door order.
fn index_door(
    by_step: &mut HashMap<Step, Vec<DoorId>, Hasher>,
    id: DoorId,
    steps: &[(u64, Vec<Step>)],
) {
    for step in steps.iter().flat_map(|(_, seq)| seq) {
        let ids = by_step.entry(*step).or_default();
        if let Err(pos) = ids.binary_search(&id) {
            ids.insert(pos, id);
        }
    }
}

/// Replay keys that several replay-guarded doors share, each with those doors.
fn shared_keys(doors: &[DoorRule]) -> HashMap<u64, Vec<DoorId>> {
    let mut by_key: HashMap<u64, Vec<DoorId>> = HashMap::new();
    for (id, d) in doors.iter().enumerate().filter(|(_, d)| d.replay_guard) {
        by_key.entry(d.replay_key).or_default().push(id);
    }
    by_key.retain(|_, ids| ids.len() > 1);
    by_key
}

/// A door set's tables, built from its rules alone, so that a reload builds them off the
/// engine task (100,000 doors: most of a reload's cost) and [`Matcher::reconfigure_prepared`]
/// only swaps them in and carries the attempts over.
#[derive(Debug)]
pub struct Prepared {
    doors: Vec<DoorRule>,
    variants: Vec<Vec<(u64, Vec<Step>)>>,
    by_step: HashMap<Step, Vec<DoorId>, Hasher>,
    targets: HashSet<IpAddr, Hasher>,
    shared: HashMap<u64, Vec<DoorId>>,
    queues: Vec<VecDeque<QueueEntry>>,
    live: Vec<usize>,
}

impl Prepared {
    pub fn new(doors: Vec<DoorRule>) -> Prepared {
        let variants = static_variants(&doors);
        let n = doors.len();
        Prepared {
            by_step: step_index(&variants),
            targets: doors.iter().filter_map(|d| d.target).collect(),
            shared: shared_keys(&doors),
            variants,
            doors,
            queues: vec![VecDeque::new(); n],
            live: vec![0; n],
        }
    }
}

/// What a reconfiguration replaced: dropping 100,000 doors' tables takes a while, so the
/// caller may drop it elsewhere.
#[derive(Debug)]
pub struct Retired(#[allow(dead_code)] Prepared);

fn static_variants(doors: &[DoorRule]) -> Vec<Vec<(u64, Vec<Step>)>> {
    doors
        .iter()
        .map(|d| {
            if d.sequence.is_empty() {
                Vec::new()
            } else {
                vec![(0, d.sequence.clone())]
            }
        })
        .collect()
}

impl Matcher {
    /// A matcher with the default [`Settings`] for a table of `cap` attempts.
    pub fn new(doors: Vec<DoorRule>, cap: usize) -> Matcher {
        Matcher::with_settings(doors, Settings::new(cap))
    }

    pub fn with_settings(doors: Vec<DoorRule>, settings: Settings) -> Matcher {
        let n = doors.len();
        let cap = settings.max_attempts.max(1);
        let mut m = Matcher {
            variants: static_variants(&doors),
            used: HashMap::new(),
            shared: shared_keys(&doors),
            used_generation: 0,
            doors,
            by_step: HashMap::default(),
            // Sized for the cap up front: no rehash (and its memory peak) under a flood.
            attempts: HashMap::with_capacity_and_hasher(cap.clamp(1, 1 << 20), Hasher::new()),
            queues: vec![VecDeque::new(); n],
            live: vec![0; n],
            local: HashSet::default(),
            targets: HashSet::default(),
            settings,
            cap,
            nets: Networks::default(),
            guard: SweepGuard::new(settings.sweep_threshold, settings.sweep_penalty, cap),
            next_id: 0,
        };
        m.reindex();
        m
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Whether the sweep guard watches any door (the capture filter must then see new
    /// connections to every port of this host).
    pub fn wants_new_connections(&self) -> bool {
        self.guard.enabled() && self.doors.iter().any(|d| d.enabled && d.sweep_guard)
    }

    fn guarded(&self, door: DoorId) -> bool {
        self.guard.enabled() && self.doors[door].sweep_guard
    }

    fn net(&self, src: IpAddr) -> NetId {
        network(src, self.settings.prefix_v4, self.settings.prefix_v6)
    }

    fn reindex(&mut self) {
        self.targets = self.doors.iter().filter_map(|d| d.target).collect();
        self.by_step = step_index(&self.variants);
    }

    pub fn doors(&self) -> &[DoorRule] {
        &self.doors
    }

    /// Addresses that count as "this host" for doors without `Target`. Empty = accept any.
    pub fn set_local_addrs(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        self.local = addrs.into_iter().collect();
    }

    pub fn len(&self) -> usize {
        self.attempts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    fn dst_ok(&self, door: &DoorRule, dst: IpAddr) -> bool {
        match door.target {
            Some(t) => t == dst,
            None => self.local.is_empty() || self.local.contains(&dst),
        }
    }

    fn is_this_host(&self, dst: IpAddr) -> bool {
        self.local.is_empty() || self.local.contains(&dst) || self.targets.contains(&dst)
    }

    /// Feed one captured packet. Events are appended to `out`.
    pub fn on_packet(&mut self, pkt: &Packet, now: Instant, out: &mut Vec<MatchEvent>) {
        let step = Step {
            port: pkt.dport,
            proto: pkt.proto,
        };
        let mut matched = false;
        if let Some(ids) = self.by_step.get(&step) {
            // Few doors share a port; copy the ids to release the borrow on self.
            let mut buf = [0usize; 8];
            let mut more = Vec::new();
            let ids: &[DoorId] = if ids.len() <= buf.len() {
                buf[..ids.len()].copy_from_slice(ids);
                &buf[..ids.len()]
            } else {
                more.extend_from_slice(ids);
                &more
            };
            for &door in ids {
                let rule = &self.doors[door];
                if !rule.enabled || !self.dst_ok(rule, pkt.dst) {
                    continue;
                }
                // knockd ignores (does not reset on) TCP packets whose flags do not match;
                // on a guarded door a TCP knock is a connection attempt (rule 7).
                if pkt.proto == Proto::Tcp
                    && (!rule.tcp_flags.matches(pkt.tcp_flags)
                        || (self.guarded(door) && !is_new_connection(pkt)))
                {
                    continue;
                }
                if self.step_door(door, step, pkt, now, out) != Outcome::Nothing {
                    matched = true;
                }
            }
        }
        if !matched
            && is_new_connection(pkt)
            && self.guard.watching(pkt.src)
            && self.is_this_host(pkt.dst)
        {
            let port_key = (u32::from(pkt.proto == Proto::Udp) << 16) | u32::from(pkt.dport);
            if let Some(strays) = self.guard.stray(pkt.src, port_key) {
                self.scanner(pkt.src, strays, now, out);
            }
        }
    }

    /// `src` is a scanner: end its guarded attempts and penalise it.
    fn scanner(&mut self, src: IpAddr, strays: usize, now: Instant, out: &mut Vec<MatchEvent>) {
        out.push(MatchEvent::Scanner { src, strays });
        for door in 0..self.doors.len() {
            if self.guarded(door) {
                if let Some(a) = self.remove(src, door) {
                    out.push(MatchEvent::Swept {
                        src,
                        door,
                        stage: usize::from(a.stage),
                    });
                }
            }
        }
        self.guard.penalise(src, now);
    }

    fn step_door(
        &mut self,
        door: DoorId,
        step: Step,
        pkt: &Packet,
        now: Instant,
        out: &mut Vec<MatchEvent>,
    ) -> Outcome {
        let src = pkt.src;
        let flow = flow_id(pkt);
        if let Some(a) = self.attempts.get_mut(&key(src, door)) {
            let stage = usize::from(a.stage);
            let variant = a.variant;
            let seq = self.variants[door]
                .iter()
                .find(|(v, _)| *v == variant)
                .map(|(_, s)| s);
            let len = seq.map_or(0, Vec::len);
            let expected = seq.and_then(|s| s.get(stage)).copied();
            if now >= a.deadline || expected.is_none() {
                self.remove(src, door);
                out.push(MatchEvent::Timeout { src, door, stage });
            } else if a.recent.contains(&flow) {
                return Outcome::Repeat;
            } else if expected == Some(step) {
                a.remember(flow);
                a.stage += 1;
                let stage = stage + 1;
                if stage == 2 {
                    let net = self.net(src);
                    self.nets.advanced(net);
                }
                out.push(MatchEvent::Stage {
                    src,
                    door,
                    stage,
                    of: len,
                });
                if stage == len {
                    self.remove(src, door);
                    if self.doors[door].replay_guard {
                        match self.replay_owner(door, variant) {
                            Some(first) if first != src => {
                                out.push(MatchEvent::Refused {
                                    src,
                                    door,
                                    reason: Refusal::Replay,
                                });
                                return Outcome::Counted;
                            }
                            _ => {
                                if self.used.insert((door, variant), src).is_none() {
                                    self.used_generation += 1;
                                }
                            }
                        }
                    }
                    out.push(MatchEvent::Open { src, door });
                }
                return Outcome::Counted;
            } else {
                self.remove(src, door);
                out.push(MatchEvent::Reset {
                    src,
                    door,
                    stage,
                    got: step,
                });
            }
        }
        // No live attempt (or it just ended): is this a first knock (of the preferred
        // variant that starts with it)?
        let Some((variant, len)) = self.variants[door]
            .iter()
            .find(|(_, s)| s.first() == Some(&step))
            .map(|(v, s)| (*v, s.len()))
        else {
            return Outcome::Nothing;
        };
        if self.guarded(door) && !self.doors[door].replay_guard && self.guard.is_penalised(src, now)
        {
            out.push(MatchEvent::Refused {
                src,
                door,
                reason: Refusal::Scanner,
            });
            return Outcome::Nothing;
        }
        if len == 1 {
            out.push(MatchEvent::Stage {
                src,
                door,
                stage: 1,
                of: len,
            });
            out.push(MatchEvent::Open { src, door });
            return Outcome::Counted;
        }
        let net = self.net(src);
        if let Err(reason) = self.make_room(net, out) {
            out.push(MatchEvent::Refused { src, door, reason });
            return Outcome::Nothing;
        }
        out.push(MatchEvent::Stage {
            src,
            door,
            stage: 1,
            of: len,
        });
        let id = self.next_id;
        self.next_id += 1;
        let deadline = now + self.doors[door].seq_timeout;
        let mut a = Attempt {
            stage: 0,
            id,
            variant,
            deadline,
            recent: [0; RECENT],
        };
        a.remember(flow);
        a.stage = 1;
        self.insert(src, door, a);
        self.queues[door].push_back(QueueEntry { deadline, src, id });
        self.maybe_compact(door);
        Outcome::Counted
    }

    /// Room for one more attempt from `net`: within its share and the table, evicting a
    /// stage-1 attempt if needed.
    fn make_room(&mut self, net: NetId, out: &mut Vec<MatchEvent>) -> Result<(), Refusal> {
        let victim = if self.nets.total(net) >= self.settings.per_network.max(1) {
            Some((Victim::Net(net), Refusal::NetworkFull))
        } else if self.attempts.len() >= self.cap {
            Some((
                self.nets.victim(net).unwrap_or(Victim::Net(net)),
                Refusal::TableFull,
            ))
        } else {
            None
        };
        let Some((victim, refusal)) = victim else {
            return Ok(());
        };
        let attempts = &self.attempts;
        let live = |e: &tiers::Stage1| {
            attempts
                .get(&(e.0, e.1))
                .is_some_and(|a| a.id == e.2 && a.stage == 1)
        };
        let victim = match victim {
            Victim::Net(victim_net) => self.nets.pop_stage1(victim_net, live),
            Victim::Oldest => self.nets.pop_oldest_stage1(live),
        };
        let Some((src, door, _)) = victim else {
            return Err(refusal);
        };
        let door = door as DoorId;
        if let Some(a) = self.remove(src, door) {
            out.push(MatchEvent::Evicted {
                src,
                door,
                stage: usize::from(a.stage),
            });
        }
        Ok(())
    }

    fn insert(&mut self, src: IpAddr, door: DoorId, a: Attempt) {
        let net = self.net(src);
        self.nets.added(net, (src, door as u32, a.id), a.stage);
        if self.guarded(door) {
            self.guard.attempt_started(src);
        }
        self.attempts.insert(key(src, door), a);
        self.live[door] += 1;
        // After the insert: compaction keeps only entries of live stage-1 attempts.
        let attempts = &self.attempts;
        self.nets.maybe_compact(net, |e| {
            attempts
                .get(&(e.0, e.1))
                .is_some_and(|a| a.id == e.2 && a.stage == 1)
        });
    }

    fn remove(&mut self, src: IpAddr, door: DoorId) -> Option<Attempt> {
        let a = self.attempts.remove(&key(src, door))?;
        self.live[door] -= 1;
        let net = self.net(src);
        self.nets.removed(net, a.stage);
        if self.guarded(door) {
            self.guard.attempt_ended(src);
        }
        Some(a)
    }

    /// Rebuild the per-network and per-source accounting from the attempts (after a reload).
    fn rebuild_accounting(&mut self) {
        self.nets.clear();
        self.guard.reset_counts();
        let mut all: Vec<(IpAddr, u32, u64, u8)> = self
            .attempts
            .iter()
            .map(|(&(src, door), a)| (src, door, a.id, a.stage))
            .collect();
        all.sort_by_key(|e| e.2);
        for (src, door, id, stage) in all {
            let net = self.net(src);
            self.nets.added(net, (src, door, id), stage);
            if self.guarded(door as DoorId) {
                self.guard.attempt_started(src);
            }
        }
        self.guard.prune();
    }

    fn is_live(&self, door: DoorId, e: &QueueEntry) -> bool {
        self.attempts
            .get(&key(e.src, door))
            .is_some_and(|a| a.id == e.id)
    }

    /// Queues keep entries of attempts that ended early; keep them within 2x the live count.
    fn maybe_compact(&mut self, door: DoorId) {
        if self.queues[door].len() <= 2 * self.live[door] + 64 {
            return;
        }
        let mut q = std::mem::take(&mut self.queues[door]);
        q.retain(|e| self.is_live(door, e));
        self.queues[door] = q;
    }

    /// Drop every attempt whose deadline is at or before `now`, emitting `Timeout`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<MatchEvent>) {
        self.guard.expire(now);
        for door in 0..self.queues.len() {
            while let Some(e) = self.queues[door].front().copied() {
                if e.deadline > now {
                    break;
                }
                self.queues[door].pop_front();
                if self.is_live(door, &e) {
                    if let Some(a) = self.remove(e.src, door) {
                        out.push(MatchEvent::Timeout {
                            src: e.src,
                            door,
                            stage: usize::from(a.stage),
                        });
                    }
                }
            }
        }
    }

    /// When `expire` next has work (may be early, never late).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|q| q.front().map(|e| e.deadline))
            .min()
    }

    fn info(&self, src: IpAddr, door: DoorId, a: &Attempt) -> AttemptInfo {
        AttemptInfo {
            src,
            door,
            stage: usize::from(a.stage),
            of: self.variants[door]
                .iter()
                .find(|(v, _)| *v == a.variant)
                .map_or(0, |(_, s)| s.len()),
            started: self.started(door, a.deadline),
            deadline: a.deadline,
        }
    }

    fn started(&self, door: DoorId, deadline: Instant) -> Instant {
        deadline
            .checked_sub(self.doors[door].seq_timeout)
            .unwrap_or(deadline)
    }

    /// Every live attempt, oldest first (O(attempts log attempts): tests and small tables;
    /// answers to operators use [`Matcher::oldest`]).
    pub fn attempts(&self) -> Vec<AttemptInfo> {
        let mut v: Vec<AttemptInfo> = self
            .attempts
            .iter()
            .map(|(&(src, door), a)| self.info(src, door as DoorId, a))
            .collect();
        v.sort_by_key(|a| (a.started, a.src, a.door));
        v
    }

    /// The `limit` oldest live attempts, oldest first, without looking at the others: a merge
    /// of the per-door expiry queues (each in start order), so the cost is O(limit · log doors)
    /// plus the queue entries of attempts that already ended met on the way (at most about as
    /// many as live ones: see `maybe_compact`). 100,000 attempts never cost the engine more
    /// than the page it sends.
    pub fn oldest(&self, limit: usize) -> Vec<AttemptInfo> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // (start of the queue entry's attempt, door, position in the door's queue)
        let mut heap: BinaryHeap<Reverse<(Instant, DoorId, usize)>> = self
            .queues
            .iter()
            .enumerate()
            .filter(|&(door, _)| self.live[door] > 0)
            .filter_map(|(door, q)| {
                q.front()
                    .map(|e| Reverse((self.started(door, e.deadline), door, 0)))
            })
            .collect();
        let mut out = Vec::with_capacity(limit.min(self.attempts.len()));
        while out.len() < limit {
            let Some(Reverse((_, door, pos))) = heap.pop() else {
                break;
            };
            let q = &self.queues[door];
            let Some(e) = q.get(pos) else {
                continue;
            };
            if let Some(a) = self
                .attempts
                .get(&key(e.src, door))
                .filter(|a| a.id == e.id)
            {
                out.push(self.info(e.src, door, a));
            }
            if let Some(next) = q.get(pos + 1) {
                heap.push(Reverse((self.started(door, next.deadline), door, pos + 1)));
            }
        }
        out
    }

    /// Replace the doors (reload). `keep[old] = Some(new)` carries the old door's attempts over
    /// to the new index; attempts of other doors are dropped. A kept rotating door (no static
    /// sequence, replay guard on) also keeps its accepted sequences and its replay memory, so
    /// attempts in progress and what each step opened for survive the reload.
    pub fn reconfigure(&mut self, doors: Vec<DoorRule>, keep: &[Option<DoorId>]) {
        self.reconfigure_with(doors, keep, self.settings);
    }

    /// [`Matcher::reconfigure`] with new settings. A smaller table keeps the attempts it has
    /// until they end.
    pub fn reconfigure_with(
        &mut self,
        doors: Vec<DoorRule>,
        keep: &[Option<DoorId>],
        settings: Settings,
    ) {
        drop(self.reconfigure_prepared(Prepared::new(doors), keep, settings));
    }

    /// [`Matcher::reconfigure_with`] with tables built beforehand ([`Prepared::new`], off the
    /// engine task): the work left is O(attempts + kept doors), and what it replaced is
    /// returned for the caller to drop where it costs nothing.
    pub fn reconfigure_prepared(
        &mut self,
        prepared: Prepared,
        keep: &[Option<DoorId>],
        settings: Settings,
    ) -> Retired {
        if settings != self.settings {
            self.settings = settings;
            self.cap = settings.max_attempts.max(1);
            let guard = SweepGuard::new(settings.sweep_threshold, settings.sweep_penalty, self.cap);
            self.guard = guard;
        }
        let Prepared {
            doors,
            variants,
            by_step,
            targets,
            shared,
            queues,
            live,
        } = prepared;
        let n = doors.len();
        let old_attempts = std::mem::take(&mut self.attempts);
        let mut old_queues = std::mem::replace(&mut self.queues, queues);
        let mut old_variants = std::mem::replace(&mut self.variants, variants);
        let old_by_step = std::mem::replace(&mut self.by_step, by_step);
        let old_targets = std::mem::replace(&mut self.targets, targets);
        let old_shared = std::mem::replace(&mut self.shared, shared);
        let old_live = std::mem::replace(&mut self.live, live);
        let old_used = std::mem::take(&mut self.used);
        let rotating = |new: DoorId| {
            doors
                .get(new)
                .is_some_and(|d| d.replay_guard && d.sequence.is_empty())
        };
        for (old, new) in keep.iter().enumerate() {
            if let Some(new) = *new {
                if rotating(new) && old < old_variants.len() && new < n {
                    self.variants[new] = std::mem::take(&mut old_variants[old]);
                    index_door(&mut self.by_step, new, &self.variants[new]);
                }
            }
        }
        for ((old, variant), addr) in old_used {
            if let Some(Some(new)) = keep.get(old) {
                if rotating(*new) {
                    self.used.insert((*new, variant), addr);
                }
            }
        }
        self.used_generation += 1;
        let old_doors = std::mem::replace(&mut self.doors, doors);
        for ((src, old), a) in old_attempts {
            let old = old as DoorId;
            if let Some(Some(new)) = keep.get(old) {
                let fits = self
                    .variants
                    .get(*new)
                    .and_then(|vs| vs.iter().find(|(v, _)| *v == a.variant))
                    .is_some_and(|(_, s)| usize::from(a.stage) < s.len());
                if *new < n && fits {
                    self.attempts.insert(key(src, *new), a);
                    self.live[*new] += 1;
                }
            }
        }
        // Only kept doors have queue entries to carry (and to clean).
        for (old, new) in keep.iter().enumerate() {
            let (Some(new), Some(q)) = (*new, old_queues.get_mut(old)) else {
                continue;
            };
            if new < n && !q.is_empty() {
                let mut q = std::mem::take(q);
                q.retain(|e| self.is_live(new, e));
                self.queues[new] = q;
            }
        }
        self.rebuild_accounting();
        Retired(Prepared {
            doors: old_doors,
            variants: old_variants,
            by_step: old_by_step,
            targets: old_targets,
            shared: old_shared,
            queues: old_queues,
            live: old_live,
        })
    }

    /// Change one door's sequence (one-time sequences) or disable it (`None`). Its attempts are
    /// dropped: their stage numbers refer to the old sequence.
    pub fn set_sequence(&mut self, door: DoorId, sequence: Option<Vec<Step>>) {
        if door >= self.doors.len() {
            return;
        }
        self.attempts.retain(|&(_, d), _| d as DoorId != door);
        self.queues[door].clear();
        self.live[door] = 0;
        match sequence {
            Some(seq) if !seq.is_empty() => {
                self.variants[door] = vec![(0, seq.clone())];
                self.doors[door].sequence = seq;
                self.doors[door].enabled = true;
            }
            _ => {
                self.variants[door].clear();
                self.doors[door].enabled = false;
            }
        }
        self.reindex();
        self.rebuild_accounting();
    }

    /// A rotating door's accepted sequences (TOTP: the current step first, then the previous
    /// and the next), each with its variant id (the time step). Attempts following a variant
    /// that is still accepted carry on; the others end without an event. What a variant
    /// opened for is forgotten when it leaves the window.
    pub fn set_variants(&mut self, door: DoorId, variants: Vec<(u64, Vec<Step>)>) {
        if door >= self.doors.len() {
            return;
        }
        let ids: Vec<u64> = variants.iter().map(|(v, _)| *v).collect();
        self.attempts
            .retain(|&(_, d), a| d as DoorId != door || ids.contains(&a.variant));
        self.live[door] = self
            .attempts
            .keys()
            .filter(|&&(_, d)| d as DoorId == door)
            .count();
        let mut q = std::mem::take(&mut self.queues[door]);
        q.retain(|e| self.is_live(door, e));
        self.queues[door] = q;
        let before = self.used.len();
        self.used.retain(|&(d, v), _| d != door || ids.contains(&v));
        if self.used.len() != before {
            self.used_generation += 1;
        }
        self.doors[door].enabled = !variants.is_empty();
        if let Some((_, current)) = variants.first() {
            self.doors[door].sequence = current.clone();
        }
        self.variants[door] = variants;
        self.reindex();
        self.rebuild_accounting();
    }
}

impl Matcher {
    /// Replay memory: which address each accepted step (variant) of a replay-guarded door
    /// opened for, sorted.
    pub fn replay_memory(&self) -> Vec<(DoorId, u64, IpAddr)> {
        let mut v: Vec<_> = self.used.iter().map(|(&(d, s), &a)| (d, s, a)).collect();
        v.sort();
        v
    }

    /// The address `variant` of `door` opened for, on this door or on any door sharing its
    /// replay key (secret).
    fn replay_owner(&self, door: DoorId, variant: u64) -> Option<IpAddr> {
        match self.shared.get(&self.doors[door].replay_key) {
            Some(doors) => doors
                .iter()
                .find_map(|&d| self.used.get(&(d, variant)).copied()),
            None => self.used.get(&(door, variant)).copied(),
        }
    }

    /// Changes whenever [`Matcher::replay_memory`] does.
    pub fn replay_generation(&self) -> u64 {
        self.used_generation
    }

    /// Remember that `variant` of door `door` opened for `addr` (from the state file): only
    /// for a replay-guarded door, a variant it accepts now, and a variant not already taken.
    /// Returns whether it was taken in.
    pub fn remember_replay(&mut self, door: DoorId, variant: u64, addr: IpAddr) -> bool {
        let accepted = self.doors.get(door).is_some_and(|d| d.replay_guard)
            && self
                .variants
                .get(door)
                .is_some_and(|vs| vs.iter().any(|(v, _)| *v == variant));
        if !accepted || self.used.contains_key(&(door, variant)) {
            return false;
        }
        self.used.insert((door, variant), addr);
        self.used_generation += 1;
        true
    }
}

/// TCP SYN without ACK, or any UDP datagram: what opens a connection.
fn is_new_connection(p: &Packet) -> bool {
    match p.proto {
        Proto::Tcp => p.tcp_flags & (flag::SYN | flag::ACK) == flag::SYN,
        Proto::Udp => true,
    }
}

pub mod sweep;
pub mod tiers;

use sweep::SweepGuard;
use tiers::{network, NetId, Networks, Victim};

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod listing_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod totp_tests;
