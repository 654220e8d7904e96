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
//!    knock is refused. A door may hold at most half of what the other doors' advanced
//!    attempts leave of the table in advanced attempts ([`tiers::door_share`]): a knock that
//!    would advance one more is refused and ends the attempt, so one door's advanced
//!    attempts never starve another door's first knocks. Work per packet is O(doors sharing
//!    the port), independent of the number of attempts: one lookup of the source finds its
//!    attempts and whether the sweep guard watches it (`table`).
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
use std::collections::{HashMap, HashSet};
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
    /// Started or advanced an attempt (or was refused as one).
    Counted,
    /// A retransmission of a counted knock.
    Repeat,
}

/// Identity of a flow: source and destination port (never 0: port 0 is not a knock port).
/// The protocol is left out to keep attempts small; a UDP packet with exactly the ports of a
/// counted TCP knock is then ignored rather than treated as a wrong knock.
fn flow_id(p: &Packet) -> u32 {
    (u32::from(p.sport) << 16) | u32::from(p.dport)
}

/// Keyed with random keys per process, so attacker-chosen source addresses cannot force
/// collisions, and several times faster than SipHash on this hot path.
type Hasher = ahash::RandomState;

#[derive(Debug)]
pub struct Matcher {
    doors: Vec<DoorRule>,
    /// The door tables: sequences, step index, ports that knock at all.
    tables: Prepared,
    attempts: Table,
    local: HashSet<IpAddr, Hasher>,
    settings: Settings,
    cap: usize,
    guard: SweepGuard,
    /// Replay-guarded doors: which address each variant opened for.
    used: HashMap<(DoorId, u64), IpAddr>,
    /// Bumped whenever `used` changes (the engine persists it when this moves).
    used_generation: u64,
}

impl Matcher {
    /// A matcher with the default [`Settings`] for a table of `cap` attempts.
    pub fn new(doors: Vec<DoorRule>, cap: usize) -> Matcher {
        Matcher::with_settings(doors, Settings::new(cap))
    }

    pub fn with_settings(doors: Vec<DoorRule>, settings: Settings) -> Matcher {
        let cap = settings.max_attempts.max(1);
        let mut tables = Prepared::new(doors);
        let doors = std::mem::take(&mut tables.doors);
        let per_door = std::mem::take(&mut tables.per_door);
        Matcher {
            doors,
            tables,
            // Sized for the cap up front: no rehash (and its memory peak) under a flood.
            attempts: Table::with_capacity(cap, per_door),
            local: HashSet::default(),
            settings,
            cap,
            guard: SweepGuard::new(settings.sweep_threshold, settings.sweep_penalty, cap),
            used: HashMap::new(),
            used_generation: 0,
        }
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
        self.attempts.len() == 0
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
        self.local.is_empty() || self.local.contains(&dst) || self.tables.targets.contains(&dst)
    }

    /// Feed one captured packet. Events are appended to `out`.
    pub fn on_packet(&mut self, pkt: &Packet, now: Instant, out: &mut Vec<MatchEvent>) {
        let step = Step {
            port: pkt.dport,
            proto: pkt.proto,
        };
        let mut matched = false;
        if let Some(ids) = self.tables.doors_of(step) {
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
            && self.guard.enabled()
            && is_new_connection(pkt)
            && self.is_this_host(pkt.dst)
            && self.attempts.watched(pkt.src)
        {
            let port_key = (u32::from(pkt.proto == Proto::Udp) << 16) | u32::from(pkt.dport);
            if let Some(strays) = self.guard.stray(pkt.src, port_key) {
                self.scanner(pkt.src, strays, now, out);
            }
        }
    }

    /// `src` is a scanner: end its guarded attempts (in door order) and penalise it.
    fn scanner(&mut self, src: IpAddr, strays: usize, now: Instant, out: &mut Vec<MatchEvent>) {
        out.push(MatchEvent::Scanner { src, strays });
        let mut guarded: Vec<(u32, u32)> = self
            .attempts
            .of_source(src)
            .into_iter()
            .map(|i| (self.attempts.get(i).door, i))
            .filter(|&(door, i)| self.attempts.get(i).guarded && self.guarded(door as DoorId))
            .collect();
        guarded.sort_unstable();
        for (door, i) in guarded {
            let a = self.remove(i);
            out.push(MatchEvent::Swept {
                src,
                door: door as DoorId,
                stage: usize::from(a.stage),
            });
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
        let (found, probe) = self.attempts.find(src, door as u32);
        if let Some(i) = found {
            let a = self.attempts.get(i);
            let stage = usize::from(a.stage);
            let variant = a.variant;
            let seq = self.tables.sequence(door, variant);
            let len = seq.map_or(0, <[Step]>::len);
            let expected = seq.and_then(|s| s.get(stage)).copied();
            if now >= a.deadline || expected.is_none() {
                self.remove(i);
                out.push(MatchEvent::Timeout { src, door, stage });
            } else if a.recent.contains(&flow) {
                return Outcome::Repeat;
            } else if expected == Some(step) {
                let stage = stage + 1;
                if stage == 2 && stage < len && !self.room_to_advance(door) {
                    self.remove(i);
                    out.push(MatchEvent::Refused {
                        src,
                        door,
                        reason: Refusal::DoorShare,
                    });
                    return Outcome::Counted;
                }
                let a = self.attempts.get_mut(i);
                a.remember(flow);
                a.stage += 1;
                if stage == 2 {
                    self.attempts.advanced(i);
                }
                out.push(MatchEvent::Stage {
                    src,
                    door,
                    stage,
                    of: len,
                });
                if stage == len {
                    self.remove(i);
                    self.complete(src, door, variant, out);
                }
                return Outcome::Counted;
            } else {
                out.push(MatchEvent::Reset {
                    src,
                    door,
                    stage,
                    got: step,
                });
                if self.restart(i, door, step, flow, now, out) {
                    return Outcome::Counted;
                }
                self.remove(i);
            }
        }
        // No live attempt (or it just ended): is this a first knock (of the preferred
        // variant that starts with it)?
        let Some((variant, len)) = self.tables.first_knock(door, step) else {
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
            self.complete(src, door, variant, out);
            return Outcome::Counted;
        }
        let net = self.net(src);
        let known = self.attempts.net_of(net);
        if let Err(reason) = self.make_room(known, out) {
            out.push(MatchEvent::Refused { src, door, reason });
            return Outcome::Nothing;
        }
        out.push(MatchEvent::Stage {
            src,
            door,
            stage: 1,
            of: len,
        });
        let deadline = now + self.doors[door].seq_timeout;
        let mut a = Attempt::new(src, door as u32, variant, deadline, flow);
        a.guarded = self.guarded(door);
        self.attempts.insert_at(a, net, known, Some(probe));
        Outcome::Counted
    }

    /// A wrong knock that is the door's first knock starts attempt `i` over in place, when
    /// that is what ending it and starting a new one would do (no penalty, no eviction
    /// needed): the spoofed flood's common case costs no removal and insertion. Returns
    /// whether it did.
    fn restart(
        &mut self,
        i: u32,
        door: DoorId,
        step: Step,
        flow: u32,
        now: Instant,
        out: &mut Vec<MatchEvent>,
    ) -> bool {
        let Some((variant, len)) = self.tables.first_knock(door, step) else {
            return false;
        };
        let src = self.attempts.get(i).src;
        if len == 1
            || self.attempts.len() > self.cap
            || self.attempts.net_total_of(i) > self.settings.per_network.max(1)
            || (self.guarded(door)
                && !self.doors[door].replay_guard
                && self.guard.is_penalised(src, now))
        {
            return false;
        }
        // Ending the source's last watched attempt forgets its strays.
        if self.attempts.get(i).guarded
            && self.guard.has_strays()
            && self.attempts.watched_count(src) == 1
        {
            self.guard.forget(src);
        }
        out.push(MatchEvent::Stage {
            src,
            door,
            stage: 1,
            of: len,
        });
        let deadline = now + self.doors[door].seq_timeout;
        self.attempts.restart(i, variant, deadline, flow);
        true
    }

    /// A sequence of `door` completed: open, unless it replays a variant that opened for
    /// another address.
    fn complete(&mut self, src: IpAddr, door: DoorId, variant: u64, out: &mut Vec<MatchEvent>) {
        if self.doors[door].replay_guard {
            match self.replay_owner(door, variant) {
                Some(first) if first != src => {
                    out.push(MatchEvent::Refused {
                        src,
                        door,
                        reason: Refusal::Replay,
                    });
                    return;
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

    /// Whether `door` may hold one more advanced attempt (rule 5).
    fn room_to_advance(&self, door: DoorId) -> bool {
        let own = self.attempts.doors[door].advanced as usize;
        let others = self.attempts.advanced_total() - own;
        own < door_share(self.cap, others)
    }

    /// Room for one more attempt from the network in slot `net` ([`table::Table::net_of`]):
    /// within its share and the table, evicting a stage-1 attempt if needed.
    fn make_room(&mut self, net: Option<u32>, out: &mut Vec<MatchEvent>) -> Result<(), Refusal> {
        let (victim, refusal) = if self.attempts.net_total(net) >= self.settings.per_network.max(1)
        {
            (Victim::Net(net), Refusal::NetworkFull)
        } else if self.attempts.len() >= self.cap {
            let victim = self.attempts.victim(net).unwrap_or(Victim::Net(net));
            (victim, Refusal::TableFull)
        } else {
            return Ok(());
        };
        let victim = match victim {
            Victim::Net(n) => self.attempts.oldest_stage1_of(n),
            Victim::Oldest => self.attempts.oldest_stage1(),
        };
        let Some(i) = victim else {
            return Err(refusal);
        };
        let a = self.remove(i);
        out.push(MatchEvent::Evicted {
            src: a.src,
            door: a.door as DoorId,
            stage: usize::from(a.stage),
        });
        Ok(())
    }

    /// Ends attempt `i`; the sweep guard forgets the strays of a source left unwatched.
    fn remove(&mut self, i: u32) -> Ended {
        let (a, watched_left) = self.attempts.remove(i);
        if watched_left == Some(0) && self.guard.has_strays() {
            self.guard.forget(a.src);
        }
        a
    }

    /// Drop every attempt whose deadline is at or before `now`, emitting `Timeout`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<MatchEvent>) {
        self.guard.expire(now);
        for door in 0..self.doors.len() {
            while let Some(i) = self.attempts.due(door, now) {
                let a = self.remove(i);
                out.push(MatchEvent::Timeout {
                    src: a.src,
                    door,
                    stage: usize::from(a.stage),
                });
            }
        }
    }

    /// When `expire` next has work (may be early, never late).
    pub fn next_deadline(&self) -> Option<Instant> {
        (0..self.doors.len())
            .filter_map(|door| self.attempts.door_deadline(door))
            .min()
    }
}

/// TCP SYN without ACK, or any UDP datagram: what opens a connection.
fn is_new_connection(p: &Packet) -> bool {
    match p.proto {
        Proto::Tcp => p.tcp_flags & (flag::SYN | flag::ACK) == flag::SYN,
        Proto::Udp => true,
    }
}

mod doors;
mod events;
mod listing;
pub mod sweep;
mod table;
pub mod tiers;

pub use doors::{Prepared, Retired};
pub use events::{MatchEvent, Refusal};
pub use listing::AttemptInfo;
use sweep::SweepGuard;
use table::{Attempt, Ended, Table};
use tiers::{door_share, network, NetId, Victim};

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
