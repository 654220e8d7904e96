//! The attempt table: every live attempt in one slab, reached through its source (one hash
//! lookup per packet finds the source's attempts and how many of them the sweep guard
//! watches). Orders are kept in queues of small entries (slot, id), appended in creation
//! order and never searched: an entry whose slot now holds another attempt (or one past
//! stage 1, for the stage-1 queues) is stale and skipped when met at the front, and a queue
//! is compacted when stale entries outnumber live ones. So a packet touches the source's
//! entry, its attempt, and the tails of a few queues; never a neighbour's attempt.
//! - per door, in creation order (= deadline order: one timeout per door): expiry and the
//!   oldest-first listing. Its front is always live (trimmed when its attempt ends), so the
//!   next deadline is read from the attempt itself;
//! - while at stage 1, per source network and table-wide: eviction ([`super::tiers`] decides
//!   where from).
//!
//! Pure bookkeeping; the matcher decides what a knock means.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use hashbrown::{hash_table, HashTable};

use super::tiers::{NetId, Victim};

/// No slot: the end of a source's chain; a free slot's door.
const NONE: u32 = u32::MAX;

/// Flows remembered per attempt (rule 2).
const RECENT: usize = 4;

type Hasher = ahash::RandomState;

mod footprint;
mod heavy;
pub use footprint::map_bytes;

/// A queue entry: the attempt's slot and the low bits of its id (a reused slot has another).
#[derive(Debug, Clone, Copy)]
struct Ref {
    slot: u32,
    id: u32,
}

/// One door's part of the table.
#[derive(Debug, Clone, Default)]
pub struct DoorState {
    /// Front always live (or empty).
    queue: VecDeque<Ref>,
    pub live: u32,
    /// Attempts past stage 1.
    pub advanced: u32,
}

/// A live attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub src: IpAddr,
    pub door: u32,
    pub stage: u8,
    /// Whether the sweep guard watches it.
    pub guarded: bool,
    /// Which of the door's sequences it follows (0 for static doors, the TOTP step).
    pub variant: u64,
    pub deadline: Instant,
    /// Flows of the last knocks that counted, to ignore their retransmissions.
    pub recent: [u32; RECENT],
    /// Creation order.
    pub id: u64,
    net: u32,
    next_of_source: u32,
}

impl Attempt {
    /// A first knock's attempt, at stage 1, that counted flow `flow`.
    pub fn new(src: IpAddr, door: u32, variant: u64, deadline: Instant, flow: u32) -> Attempt {
        Attempt {
            src,
            door,
            stage: 1,
            guarded: false,
            variant,
            deadline,
            recent: [flow, 0, 0, 0],
            id: 0,
            net: NONE,
            next_of_source: NONE,
        }
    }

    pub fn remember(&mut self, flow: u32) {
        self.recent[usize::from(self.stage) % RECENT] = flow;
    }

    fn at(&self, slot: u32) -> Ref {
        Ref {
            slot,
            id: self.id as u32,
        }
    }
}

/// Hash of a source address: one word, keyed per process (sources are attacker-chosen).
fn src_hash(keys: &Hasher, src: IpAddr) -> u64 {
    match src {
        IpAddr::V4(a) => keys.hash_one(u32::from(a)),
        IpAddr::V6(a) => keys.hash_one(u128::from(a)),
    }
}

/// A source with attempts: the first of them, and how many the sweep guard watches.
#[derive(Debug, Clone, Copy)]
struct Source {
    head: u32,
    guarded: u32,
}

#[derive(Debug)]
struct Net {
    id: NetId,
    total: u32,
    stage1: u32,
    /// Its place in `heavy` (NONE: no stage-1 attempt).
    pos: u32,
    queue: VecDeque<Ref>,
}

#[derive(Debug, Default)]
pub struct Table {
    slots: Vec<Attempt>,
    free: Vec<u32>,
    len: usize,
    /// Keyed by the source address of the head attempt (8-byte entries: the address lives in
    /// the slab), hashed with `keys`.
    sources: HashTable<Source>,
    keys: Hasher,
    nets: Vec<Net>,
    free_nets: Vec<u32>,
    net_index: HashMap<NetId, u32, Hasher>,
    /// Networks in the index without attempts: forgotten in bulk, not one by one (a network
    /// emptied by an eviction is usually refilled by the next first knock).
    empty_nets: usize,
    /// Slots of the networks holding stage-1 attempts, a max-heap by (count, network)
    /// ([`heavy`]).
    heavy: Vec<u32>,
    stage1: VecDeque<Ref>,
    stage1_total: usize,
    pub doors: Vec<DoorState>,
    advanced_total: usize,
    next_id: u64,
}

impl Table {
    pub fn with_capacity(cap: usize, doors: Vec<DoorState>) -> Table {
        let cap = cap.min(1 << 20);
        Table {
            slots: Vec::with_capacity(cap),
            // Twice the cap: churn leaves tombstones, and a table more than half full of live
            // entries then doubles (both copies alive) instead of cleaning in place.
            sources: HashTable::with_capacity(2 * cap),
            doors,
            ..Table::default()
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, i: u32) -> &Attempt {
        &self.slots[i as usize]
    }

    pub fn get_mut(&mut self, i: u32) -> &mut Attempt {
        &mut self.slots[i as usize]
    }

    fn is_live(&self, r: Ref) -> bool {
        let a = &self.slots[r.slot as usize];
        a.door != NONE && a.id as u32 == r.id
    }

    fn is_stage1(&self, r: Ref) -> bool {
        self.is_live(r) && self.slots[r.slot as usize].stage == 1
    }

    /// `src`'s entry.
    fn source(&self, src: IpAddr) -> Option<&Source> {
        let slots = &self.slots;
        self.sources.find(src_hash(&self.keys, src), |s| {
            slots[s.head as usize].src == src
        })
    }

    /// The slot of `src`'s attempt on `door`.
    pub fn find(&self, src: IpAddr, door: u32) -> Option<u32> {
        let mut i = self.source(src)?.head;
        while i != NONE {
            let a = &self.slots[i as usize];
            if a.door == door {
                return Some(i);
            }
            i = a.next_of_source;
        }
        None
    }

    /// How many of `src`'s attempts the sweep guard watches.
    pub fn watched_count(&self, src: IpAddr) -> u32 {
        self.source(src).map_or(0, |s| s.guarded)
    }

    /// Whether `src` has an attempt the sweep guard watches.
    pub fn watched(&self, src: IpAddr) -> bool {
        self.watched_count(src) > 0
    }

    /// Slots of `src`'s attempts.
    pub fn of_source(&self, src: IpAddr) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = self.source(src).map_or(NONE, |s| s.head);
        while i != NONE {
            out.push(i);
            i = self.slots[i as usize].next_of_source;
        }
        out
    }

    /// Live slots, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Attempt)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, a)| a.door != NONE)
            .map(|(i, a)| (i as u32, a))
    }

    /// Slots of `door`'s attempts, oldest first.
    pub fn of_door(&self, door: u32) -> Vec<u32> {
        self.doors[door as usize]
            .queue
            .iter()
            .filter(|r| self.is_live(**r))
            .map(|r| r.slot)
            .collect()
    }

    /// `door`'s queue entry at `pos` and on: the first live attempt's slot and position.
    pub fn door_at(&self, door: usize, mut pos: usize) -> Option<(u32, usize)> {
        let q = &self.doors[door].queue;
        while let Some(r) = q.get(pos) {
            if self.is_live(*r) {
                return Some((r.slot, pos));
            }
            pos += 1;
        }
        None
    }

    /// The deadline of `door`'s oldest attempt (its queue's front is always live).
    pub fn door_deadline(&self, door: usize) -> Option<Instant> {
        let r = self.doors[door].queue.front()?;
        Some(self.slots[r.slot as usize].deadline)
    }

    /// Pops `door`'s oldest attempt if its deadline is at or before `now`.
    pub fn pop_due(&mut self, door: usize, now: Instant) -> Option<u32> {
        let slot = self.doors[door].queue.front()?.slot;
        if self.slots[slot as usize].deadline > now {
            return None;
        }
        self.doors[door].queue.pop_front();
        self.trim_door(door);
        Some(slot)
    }

    /// Drops the entries of ended attempts from the front of `door`'s queue.
    fn trim_door(&mut self, door: usize) {
        while let Some(&r) = self.doors[door].queue.front() {
            if self.is_live(r) {
                return;
            }
            self.doors[door].queue.pop_front();
        }
    }

    /// Attempt `i` of `door` ended or started over (its entry `at` is stale now): keeps the
    /// front of the door's queue live. Only `at` can be a stale front: the front was live.
    fn trim_door_after(&mut self, door: usize, at: Ref) {
        if self.doors[door]
            .queue
            .front()
            .is_some_and(|r| r.slot == at.slot && r.id == at.id)
        {
            self.doors[door].queue.pop_front();
            self.trim_door(door);
        }
    }

    #[cfg(test)]
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn advanced_total(&self) -> usize {
        self.advanced_total
    }

    /// Adds `a` (at any stage: reloads carry advanced attempts over) for network `net`.
    pub fn insert(&mut self, a: Attempt, net: NetId) -> u32 {
        let known = self.net_of(net);
        self.insert_at(a, net, known)
    }

    /// [`Table::insert`] with the network's slot looked up beforehand ([`Table::net_of`];
    /// removals since then keep it valid: networks are forgotten only when one is created).
    pub fn insert_at(&mut self, mut a: Attempt, net: NetId, known: Option<u32>) -> u32 {
        if a.id == 0 {
            self.next_id += 1;
            a.id = self.next_id;
        } else {
            self.next_id = self.next_id.max(a.id);
        }
        let (src, guarded, stage1) = (a.src, a.guarded, a.stage == 1);
        let n = self.net_slot(net, known);
        a.net = n;
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = a;
                i
            }
            None => {
                self.slots.push(a);
                (self.slots.len() - 1) as u32
            }
        };
        self.len += 1;
        let (keys, slots) = (&self.keys, &self.slots);
        let entry = self.sources.entry(
            src_hash(keys, src),
            |s| slots[s.head as usize].src == src,
            |s| src_hash(keys, slots[s.head as usize].src),
        );
        let next = match entry {
            hash_table::Entry::Occupied(mut e) => {
                let s = e.get_mut();
                s.guarded += u32::from(guarded);
                std::mem::replace(&mut s.head, i)
            }
            hash_table::Entry::Vacant(e) => {
                e.insert(Source {
                    head: i,
                    guarded: u32::from(guarded),
                });
                NONE
            }
        };
        self.slots[i as usize].next_of_source = next;
        self.nets[n as usize].total += 1;
        self.queued(i, stage1);
        i
    }

    /// Attempt `i` starts over at stage 1 (a first knock right after a wrong one), in place:
    /// as if removed and inserted again, without touching its source or its network.
    pub fn restart(&mut self, i: u32, variant: u64, deadline: Instant, flow: u32) {
        self.next_id += 1;
        let a = &mut self.slots[i as usize];
        let old = a.at(i);
        let was_stage1 = a.stage == 1;
        a.stage = 1;
        a.variant = variant;
        a.deadline = deadline;
        a.recent = [flow, 0, 0, 0];
        a.id = self.next_id;
        let door = a.door as usize;
        if !was_stage1 {
            self.doors[door].live -= 1;
            self.doors[door].advanced -= 1;
            self.advanced_total -= 1;
            self.queued(i, true);
        } else {
            self.doors[door].live -= 1;
            self.queued_stage1_again(i);
        }
        self.trim_door_after(door, old);
    }

    /// Queue entries and counts for attempt `i`, just created (or started over).
    fn queued(&mut self, i: u32, stage1: bool) {
        let (door, n, at) = self.push_door_entry(i);
        if stage1 {
            self.stage1_total += 1;
            self.push_stage1(n, at);
            self.change_stage1(n, true);
        } else {
            self.doors[door].advanced += 1;
            self.advanced_total += 1;
        }
    }

    /// A stage-1 attempt started over: new entries, same counts.
    fn queued_stage1_again(&mut self, i: u32) {
        let (_, n, at) = self.push_door_entry(i);
        self.push_stage1(n, at);
    }

    /// Attempt `i` joins its door's expiry queue (compacted when dead entries pile up);
    /// returns its door, network and queue key.
    fn push_door_entry(&mut self, i: u32) -> (usize, usize, Ref) {
        let a = &self.slots[i as usize];
        let (door, n, at) = (a.door as usize, a.net as usize, a.at(i));
        let d = &mut self.doors[door];
        d.live += 1;
        d.queue.push_back(at);
        if d.queue.len() > 2 * d.live as usize + 64 {
            let mut q = std::mem::take(&mut self.doors[door].queue);
            q.retain(|r| self.is_live(*r));
            self.doors[door].queue = q;
        }
        (door, n, at)
    }

    fn push_stage1(&mut self, n: usize, at: Ref) {
        self.nets[n].queue.push_back(at);
        self.stage1.push_back(at);
        if self.nets[n].queue.len() > 2 * self.nets[n].stage1 as usize + 16 {
            let mut q = std::mem::take(&mut self.nets[n].queue);
            q.retain(|r| self.is_stage1(*r));
            self.nets[n].queue = q;
        }
        if self.stage1.len() > 2 * self.stage1_total + 64 {
            let mut q = std::mem::take(&mut self.stage1);
            q.retain(|r| self.is_stage1(*r));
            self.stage1 = q;
        }
    }

    /// An attempt went from stage 1 to 2 (the caller counted the knock).
    pub fn advanced(&mut self, i: u32) {
        let a = &self.slots[i as usize];
        let (n, door) = (a.net as usize, a.door as usize);
        self.stage1_total -= 1;
        self.change_stage1(n, false);
        self.doors[door].advanced += 1;
        self.advanced_total += 1;
    }

    /// Removes attempt `i`; returns it and, when it was watched, how many watched attempts
    /// its source has left.
    pub fn remove(&mut self, i: u32) -> (Attempt, Option<u32>) {
        let a = self.slots[i as usize].clone();
        let (door, n) = (a.door as usize, a.net as usize);
        self.slots[i as usize].door = NONE;
        self.trim_door_after(door, a.at(i));
        self.free.push(i);
        self.len -= 1;
        self.doors[door].live -= 1;
        if a.stage == 1 {
            self.stage1_total -= 1;
            self.change_stage1(n, false);
        } else {
            self.doors[door].advanced -= 1;
            self.advanced_total -= 1;
        }
        self.nets[n].total -= 1;
        if self.nets[n].total == 0 {
            self.nets[n].queue.clear();
            self.empty_nets += 1;
        }
        let mut left = None;
        // One hash of the source for the update and the removal.
        let slots = &self.slots;
        let hash = src_hash(&self.keys, a.src);
        if let Ok(mut e) = self
            .sources
            .find_entry(hash, |s| slots[s.head as usize].src == a.src)
        {
            let s = e.get_mut();
            if s.head == i {
                s.head = a.next_of_source;
            } else {
                let mut j = s.head;
                while j != NONE {
                    let nx = self.slots[j as usize].next_of_source;
                    if nx == i {
                        self.slots[j as usize].next_of_source = a.next_of_source;
                        break;
                    }
                    j = nx;
                }
            }
            if a.guarded {
                s.guarded -= 1;
                left = Some(s.guarded);
            }
            if s.head == NONE {
                e.remove();
            }
        }
        (a, left)
    }

    fn forget_empty_nets(&mut self) {
        let nets = &self.nets;
        let free = &mut self.free_nets;
        self.net_index.retain(|_, &mut n| {
            let keep = nets[n as usize].total > 0;
            if !keep {
                free.push(n);
            }
            keep
        });
        self.empty_nets = 0;
    }

    /// Empties the table for a new door set of `doors` (keeping its allocations): returns the
    /// attempts it held, oldest first, and the old doors' states.
    pub fn reset(&mut self, doors: Vec<DoorState>) -> (Vec<Attempt>, Vec<DoorState>) {
        let mut all: Vec<Attempt> = self.iter().map(|(_, a)| a.clone()).collect();
        all.sort_unstable_by_key(|a| a.id);
        self.slots.clear();
        self.free.clear();
        self.len = 0;
        self.sources.clear();
        self.nets.clear();
        self.free_nets.clear();
        self.net_index.clear();
        self.empty_nets = 0;
        self.heavy.clear();
        self.stage1.clear();
        self.stage1_total = 0;
        self.advanced_total = 0;
        (all, std::mem::replace(&mut self.doors, doors))
    }

    /// The slot of network `net`, if it is known (one lookup per first knock: the slot
    /// answers the questions below).
    pub fn net_of(&self, net: NetId) -> Option<u32> {
        self.net_index.get(&net).copied()
    }

    /// Attempts of the network in slot `n` ([`Table::net_of`]).
    pub fn net_total(&self, n: Option<u32>) -> usize {
        n.map_or(0, |n| self.nets[n as usize].total as usize)
    }

    /// Attempts of attempt `i`'s network.
    pub fn net_total_of(&self, i: u32) -> usize {
        self.nets[self.slots[i as usize].net as usize].total as usize
    }

    /// Where a first knock from the network in slot `own` that needs room in a full table
    /// takes it from (see [`super::tiers`]), as a network slot; None when no attempt is at
    /// stage 1.
    pub fn victim(&mut self, own: Option<u32>) -> Option<Victim<Option<u32>>> {
        let slot = self.heaviest()?;
        let most = self.nets[slot as usize].stage1;
        let own_stage1 = own.map_or(0, |n| self.nets[n as usize].stage1);
        Some(super::tiers::victim(own_stage1, most, own, Some(slot)))
    }

    /// The oldest stage-1 attempt of the network in slot `n`.
    pub fn oldest_stage1_of(&mut self, n: Option<u32>) -> Option<u32> {
        let n = n? as usize;
        while let Some(r) = self.nets[n].queue.front().copied() {
            if self.is_stage1(r) {
                return Some(r.slot);
            }
            self.nets[n].queue.pop_front();
        }
        None
    }

    /// The oldest stage-1 attempt of the table.
    pub fn oldest_stage1(&mut self) -> Option<u32> {
        while let Some(r) = self.stage1.front().copied() {
            if self.is_stage1(r) {
                return Some(r.slot);
            }
            self.stage1.pop_front();
        }
        None
    }

    /// The slot of network `net` (`known`: from [`Table::net_of`]), created if needed.
    fn net_slot(&mut self, net: NetId, known: Option<u32>) -> u32 {
        if let Some(n) = known {
            if self.nets[n as usize].total == 0 {
                self.empty_nets -= 1;
            }
            return n;
        }
        // Only here, so that a slot looked up before removals stays valid.
        if self.empty_nets > 64 + self.net_index.len() / 2 {
            self.forget_empty_nets();
        }
        let fresh = Net {
            id: net,
            total: 0,
            stage1: 0,
            pos: NONE,
            queue: VecDeque::new(),
        };
        let n = match self.free_nets.pop() {
            Some(n) => {
                self.nets[n as usize] = fresh;
                n
            }
            None => {
                self.nets.push(fresh);
                (self.nets.len() - 1) as u32
            }
        };
        self.net_index.insert(net, n);
        n
    }

    fn change_stage1(&mut self, n: usize, up: bool) {
        let net = &mut self.nets[n];
        if up {
            net.stage1 += 1;
        } else {
            net.stage1 -= 1;
        }
        self.heavy_changed(n as u32, up);
    }
}
