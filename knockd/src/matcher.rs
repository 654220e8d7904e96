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
//! 5. The number of attempts is capped; at the cap the oldest attempt is evicted. Work per
//!    packet is O(doors sharing the port), independent of the number of attempts.

use crate::config::{Proto, Step, TcpFlags};
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
}

impl From<&crate::config::Door> for DoorRule {
    fn from(d: &crate::config::Door) -> Self {
        DoorRule {
            sequence: d.sequence.clone(),
            seq_timeout: d.seq_timeout,
            tcp_flags: d.tcp_flags,
            target: d.target,
            enabled: !d.sequence.is_empty(),
        }
    }
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
    /// The attempt table was full; this, the oldest attempt, made room.
    Evicted {
        src: IpAddr,
        door: DoorId,
        stage: usize,
    },
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
    by_step: HashMap<Step, Vec<DoorId>>,
    attempts: HashMap<Key, Attempt, Hasher>,
    queues: Vec<VecDeque<QueueEntry>>,
    live: Vec<usize>,
    local: HashSet<IpAddr>,
    cap: usize,
    next_id: u64,
}

impl Matcher {
    pub fn new(doors: Vec<DoorRule>, cap: usize) -> Matcher {
        let n = doors.len();
        let mut m = Matcher {
            doors,
            by_step: HashMap::new(),
            // Sized for the cap up front: no rehash (and its memory peak) under a flood.
            attempts: HashMap::with_capacity_and_hasher(cap.clamp(1, 1 << 20), Hasher::new()),
            queues: vec![VecDeque::new(); n],
            live: vec![0; n],
            local: HashSet::new(),
            cap: cap.max(1),
            next_id: 0,
        };
        m.reindex();
        m
    }

    fn reindex(&mut self) {
        self.by_step.clear();
        for (id, door) in self.doors.iter().enumerate() {
            for step in &door.sequence {
                let ids = self.by_step.entry(*step).or_default();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
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

    /// Feed one captured packet. Events are appended to `out`.
    pub fn on_packet(&mut self, pkt: &Packet, now: Instant, out: &mut Vec<MatchEvent>) {
        let step = Step {
            port: pkt.dport,
            proto: pkt.proto,
        };
        let Some(ids) = self.by_step.get(&step) else {
            return;
        };
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
            // knockd ignores (does not reset on) TCP packets whose flags do not match.
            if pkt.proto == Proto::Tcp && !rule.tcp_flags.matches(pkt.tcp_flags) {
                continue;
            }
            self.step_door(door, step, pkt, now, out);
        }
    }

    fn step_door(
        &mut self,
        door: DoorId,
        step: Step,
        pkt: &Packet,
        now: Instant,
        out: &mut Vec<MatchEvent>,
    ) {
        let src = pkt.src;
        let flow = flow_id(pkt);
        let len = self.doors[door].sequence.len();
        if let Some(a) = self.attempts.get_mut(&key(src, door)) {
            let stage = usize::from(a.stage);
            if now >= a.deadline {
                self.remove(src, door);
                out.push(MatchEvent::Timeout { src, door, stage });
            } else if a.recent.contains(&flow) {
                return;
            } else if self.doors[door].sequence[stage] == step {
                a.remember(flow);
                a.stage += 1;
                let stage = stage + 1;
                out.push(MatchEvent::Stage {
                    src,
                    door,
                    stage,
                    of: len,
                });
                if stage == len {
                    self.remove(src, door);
                    out.push(MatchEvent::Open { src, door });
                }
                return;
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
        // No live attempt (or it just ended): is this a first knock?
        if self.doors[door].sequence[0] != step {
            return;
        }
        out.push(MatchEvent::Stage {
            src,
            door,
            stage: 1,
            of: len,
        });
        if len == 1 {
            out.push(MatchEvent::Open { src, door });
            return;
        }
        if self.attempts.len() >= self.cap {
            self.evict_oldest(out);
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline = now + self.doors[door].seq_timeout;
        let mut a = Attempt {
            stage: 0,
            id,
            deadline,
            recent: [0; RECENT],
        };
        a.remember(flow);
        a.stage = 1;
        self.attempts.insert(key(src, door), a);
        self.live[door] += 1;
        self.queues[door].push_back(QueueEntry { deadline, src, id });
        self.maybe_compact(door);
    }

    fn remove(&mut self, src: IpAddr, door: DoorId) -> Option<Attempt> {
        let a = self.attempts.remove(&key(src, door))?;
        self.live[door] -= 1;
        Some(a)
    }

    fn is_live(&self, door: DoorId, e: &QueueEntry) -> bool {
        self.attempts
            .get(&key(e.src, door))
            .is_some_and(|a| a.id == e.id)
    }

    /// Drop stale entries at the head of a door's queue.
    fn trim_head(&mut self, door: DoorId) {
        while let Some(e) = self.queues[door].front().copied() {
            if self.is_live(door, &e) {
                break;
            }
            self.queues[door].pop_front();
        }
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

    fn evict_oldest(&mut self, out: &mut Vec<MatchEvent>) {
        let mut oldest: Option<(Instant, DoorId)> = None;
        for door in 0..self.queues.len() {
            self.trim_head(door);
            if let Some(e) = self.queues[door].front() {
                let started = e.deadline - self.doors[door].seq_timeout;
                if oldest.is_none_or(|(t, _)| started < t) {
                    oldest = Some((started, door));
                }
            }
        }
        if let Some((_, door)) = oldest {
            if let Some(e) = self.queues[door].pop_front() {
                if let Some(a) = self.remove(e.src, door) {
                    out.push(MatchEvent::Evicted {
                        src: e.src,
                        door,
                        stage: usize::from(a.stage),
                    });
                }
            }
        }
    }

    /// Drop every attempt whose deadline is at or before `now`, emitting `Timeout`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<MatchEvent>) {
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

    /// Live attempts, for status and listings.
    pub fn attempts(&self) -> Vec<AttemptInfo> {
        let mut v: Vec<AttemptInfo> = self
            .attempts
            .iter()
            .map(|(&(src, door), a)| (src, door as DoorId, a))
            .map(|(src, door, a)| AttemptInfo {
                src,
                door,
                stage: usize::from(a.stage),
                of: self.doors[door].sequence.len(),
                started: a.deadline - self.doors[door].seq_timeout,
                deadline: a.deadline,
            })
            .collect();
        v.sort_by_key(|a| (a.started, a.src, a.door));
        v
    }

    /// Replace the doors (reload). `keep[old] = Some(new)` carries the old door's attempts over
    /// to the new index; attempts of other doors are dropped.
    pub fn reconfigure(&mut self, doors: Vec<DoorRule>, keep: &[Option<DoorId>]) {
        let n = doors.len();
        let old_attempts = std::mem::take(&mut self.attempts);
        let mut old_queues = std::mem::take(&mut self.queues);
        self.doors = doors;
        self.queues = vec![VecDeque::new(); n];
        self.live = vec![0; n];
        for ((src, old), a) in old_attempts {
            let old = old as DoorId;
            if let Some(Some(new)) = keep.get(old) {
                if *new < n && usize::from(a.stage) < self.doors[*new].sequence.len() {
                    self.attempts.insert(key(src, *new), a);
                    self.live[*new] += 1;
                }
            }
        }
        for (old, q) in old_queues.iter_mut().enumerate() {
            if let Some(Some(new)) = keep.get(old) {
                if *new < n {
                    self.queues[*new] = std::mem::take(q);
                }
            }
        }
        for door in 0..n {
            let mut q = std::mem::take(&mut self.queues[door]);
            q.retain(|e| self.is_live(door, e));
            self.queues[door] = q;
        }
        self.reindex();
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
                self.doors[door].sequence = seq;
                self.doors[door].enabled = true;
            }
            _ => self.doors[door].enabled = false,
        }
        self.reindex();
    }
}

#[cfg(test)]
mod tests;
