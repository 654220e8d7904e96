//! The attempt table: every live attempt in one slab, reached through its source (one hash
//! lookup per packet finds the source's attempts and how many of them the sweep guard
//! watches). The orders are intrusive doubly linked lists threaded through the slab (two
//! slot numbers per list in each attempt), appended in creation order and unlinked in O(1)
//! when an attempt ends, advances or starts over: no stale entries, no compaction, no second
//! allocation per attempt ([`lists`]):
//! - per door, in creation order (= deadline order: one timeout per door): expiry and the
//!   oldest-first listing; the next deadline is its head's;
//! - while at stage 1, per source network and table-wide: eviction ([`super::tiers`] decides
//!   where from).
//!
//! Pure bookkeeping; the matcher decides what a knock means.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use hashbrown::{hash_table, HashTable};

use super::tiers::{NetId, Victim};

/// No slot: the end of a list or of a source's chain; a free slot's door.
const NONE: u32 = u32::MAX;

/// Flows remembered per attempt (rule 2).
const RECENT: usize = 4;

type Hasher = ahash::RandomState;

mod footprint;
mod heavy;
mod lists;
mod nets;
pub use footprint::map_bytes;
use lists::{Ends, Link, BY_AGE, BY_DOOR, BY_NET};

/// One door's part of the table.
#[derive(Debug, Clone)]
pub struct DoorState {
    /// Its attempts, oldest first.
    list: Ends,
    pub live: u32,
    /// Attempts past stage 1.
    pub advanced: u32,
}

impl Default for DoorState {
    fn default() -> Self {
        DoorState {
            list: Ends::EMPTY,
            live: 0,
            advanced: 0,
        }
    }
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
    /// Its places in its door's list and, at stage 1, in its network's and the table's
    /// stage-1 lists.
    links: [Link; 3],
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
            links: [Link::NONE; 3],
        }
    }

    pub fn remember(&mut self, flow: u32) {
        self.recent[usize::from(self.stage) % RECENT] = flow;
    }
}

/// What [`Table::find`] learnt of a source: its hash, and whether it had no attempt.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    hash: u64,
    absent: bool,
}

/// What is left of an attempt that ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub src: IpAddr,
    pub door: u32,
    pub stage: u8,
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
    total: u32,
    stage1: u32,
    /// Its neighbours in the list of networks with as many stage-1 attempts ([`heavy`]).
    bucket: Link,
    /// Its stage-1 attempts, oldest first.
    list: Ends,
}

#[derive(Debug)]
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
    /// Per stage-1 count, the networks holding that many, in the order they reached it
    /// ([`heavy`]); `top`: the highest count with a network (0: none).
    buckets: Vec<Ends>,
    top: u32,
    /// The table's stage-1 attempts, oldest first.
    stage1: Ends,
    stage1_total: usize,
    pub doors: Vec<DoorState>,
    advanced_total: usize,
    next_id: u64,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            sources: HashTable::new(),
            keys: Hasher::default(),
            nets: Vec::new(),
            free_nets: Vec::new(),
            net_index: HashMap::default(),
            empty_nets: 0,
            buckets: Vec::new(),
            top: 0,
            stage1: Ends::EMPTY,
            stage1_total: 0,
            doors: Vec::new(),
            advanced_total: 0,
            next_id: 0,
        }
    }
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

    /// `src`'s entry.
    fn source(&self, src: IpAddr) -> Option<&Source> {
        let slots = &self.slots;
        self.sources.find(src_hash(&self.keys, src), |s| {
            slots[s.head as usize].src == src
        })
    }

    /// The slot of `src`'s attempt on `door`, and what an insertion for `src` right after
    /// may skip.
    pub fn find(&self, src: IpAddr, door: u32) -> (Option<u32>, Probe) {
        let hash = src_hash(&self.keys, src);
        let slots = &self.slots;
        let Some(s) = self
            .sources
            .find(hash, |s| slots[s.head as usize].src == src)
        else {
            return (None, Probe { hash, absent: true });
        };
        let probe = Probe {
            hash,
            absent: false,
        };
        let mut i = s.head;
        while i != NONE {
            let a = &self.slots[i as usize];
            if a.door == door {
                return (Some(i), probe);
            }
            i = a.next_of_source;
        }
        (None, probe)
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
        let mut out = Vec::new();
        let mut i = self.door_first(door as usize);
        while let Some(j) = i {
            out.push(j);
            i = self.door_next(j);
        }
        out
    }

    /// `door`'s oldest attempt.
    pub fn door_first(&self, door: usize) -> Option<u32> {
        lists::some(self.doors[door].list.head)
    }

    /// The attempt after attempt `i` in its door's list.
    pub fn door_next(&self, i: u32) -> Option<u32> {
        lists::some(self.slots[i as usize].links[BY_DOOR].next)
    }

    /// The deadline of `door`'s oldest attempt.
    pub fn door_deadline(&self, door: usize) -> Option<Instant> {
        let i = self.door_first(door)?;
        Some(self.slots[i as usize].deadline)
    }

    /// `door`'s oldest attempt if its deadline is at or before `now` (the caller removes it).
    pub fn due(&self, door: usize, now: Instant) -> Option<u32> {
        let i = self.door_first(door)?;
        (self.slots[i as usize].deadline <= now).then_some(i)
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
        self.insert_at(a, net, known, None)
    }

    /// [`Table::insert`] with the network's slot looked up beforehand ([`Table::net_of`];
    /// removals since then keep it valid: networks are forgotten only when one is created)
    /// and, when given, the [`Probe`] of a [`Table::find`] of the source since which nothing
    /// was added (removals keep it valid: a source without attempts has none to remove).
    pub fn insert_at(
        &mut self,
        mut a: Attempt,
        net: NetId,
        known: Option<u32>,
        probe: Option<Probe>,
    ) -> u32 {
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
        let rehash = |s: &Source| src_hash(keys, slots[s.head as usize].src);
        let source = Source {
            head: i,
            guarded: u32::from(guarded),
        };
        if let Some(Probe { hash, absent: true }) = probe {
            // A new source: no second probe for it.
            self.sources.insert_unique(hash, source, rehash);
            self.link_new(i, n, stage1, NONE);
            return i;
        }
        let hash = probe.map_or_else(|| src_hash(keys, src), |p| p.hash);
        let entry = self
            .sources
            .entry(hash, |s| slots[s.head as usize].src == src, rehash);
        let next = match entry {
            hash_table::Entry::Occupied(mut e) => {
                let s = e.get_mut();
                s.guarded += u32::from(guarded);
                std::mem::replace(&mut s.head, i)
            }
            hash_table::Entry::Vacant(e) => {
                e.insert(source);
                NONE
            }
        };
        self.link_new(i, n, stage1, next);
        i
    }

    /// Attempt `i` of network slot `n`, just placed, joins its source's chain (before
    /// `next`), its network's count and its lists.
    fn link_new(&mut self, i: u32, n: u32, stage1: bool, next: u32) {
        self.slots[i as usize].next_of_source = next;
        self.nets[n as usize].total += 1;
        let door = self.slots[i as usize].door as usize;
        let d = &mut self.doors[door];
        d.live += 1;
        lists::push_back(&mut self.slots, &mut d.list, i, BY_DOOR);
        if !stage1 {
            d.advanced += 1;
            self.advanced_total += 1;
        } else {
            self.enter_stage1(i, n as usize);
        }
    }

    /// Attempt `i` (just counted at stage 1, in network slot `n`) joins the stage-1 lists.
    #[inline]
    fn enter_stage1(&mut self, i: u32, n: usize) {
        self.stage1_total += 1;
        lists::push_back(&mut self.slots, &mut self.nets[n].list, i, BY_NET);
        lists::push_back(&mut self.slots, &mut self.stage1, i, BY_AGE);
        self.change_stage1(n, true);
    }

    /// Attempt `i` (at stage 1, in network slot `n`) leaves the stage-1 lists.
    #[inline]
    fn leave_stage1(&mut self, i: u32, n: usize) {
        self.stage1_total -= 1;
        lists::unlink(&mut self.slots, &mut self.nets[n].list, i, BY_NET);
        lists::unlink(&mut self.slots, &mut self.stage1, i, BY_AGE);
        self.change_stage1(n, false);
    }

    /// Attempt `i` starts over at stage 1 (a first knock right after a wrong one), in place:
    /// as if removed and inserted again (the newest of every list it is in), without
    /// touching its source or its network.
    pub fn restart(&mut self, i: u32, variant: u64, deadline: Instant, flow: u32) {
        self.next_id += 1;
        let a = &mut self.slots[i as usize];
        let was_stage1 = a.stage == 1;
        a.stage = 1;
        a.variant = variant;
        a.deadline = deadline;
        a.recent = [flow, 0, 0, 0];
        a.id = self.next_id;
        let (door, n) = (a.door as usize, a.net as usize);
        lists::to_back(&mut self.slots, &mut self.doors[door].list, i, BY_DOOR);
        if was_stage1 {
            lists::to_back(&mut self.slots, &mut self.nets[n].list, i, BY_NET);
            lists::to_back(&mut self.slots, &mut self.stage1, i, BY_AGE);
            // Its network's count went one down and up again: the newest at that count.
            let count = self.nets[n].stage1;
            self.heavy_changed(n as u32, count, count);
        } else {
            self.doors[door].advanced -= 1;
            self.advanced_total -= 1;
            self.enter_stage1(i, n);
        }
    }

    /// An attempt went from stage 1 to 2 (the caller counted the knock).
    pub fn advanced(&mut self, i: u32) {
        let a = &self.slots[i as usize];
        let (n, door) = (a.net as usize, a.door as usize);
        self.leave_stage1(i, n);
        self.doors[door].advanced += 1;
        self.advanced_total += 1;
    }

    /// Removes attempt `i`; returns what it was and, when it was watched, how many watched
    /// attempts its source has left.
    pub fn remove(&mut self, i: u32) -> (Ended, Option<u32>) {
        let a = &self.slots[i as usize];
        let (door, n, next_of_source, guarded) =
            (a.door as usize, a.net as usize, a.next_of_source, a.guarded);
        let ended = Ended {
            src: a.src,
            door: a.door,
            stage: a.stage,
        };
        lists::unlink(&mut self.slots, &mut self.doors[door].list, i, BY_DOOR);
        self.doors[door].live -= 1;
        if ended.stage == 1 {
            self.leave_stage1(i, n);
        } else {
            self.doors[door].advanced -= 1;
            self.advanced_total -= 1;
        }
        self.slots[i as usize].door = NONE;
        self.free.push(i);
        self.len -= 1;
        self.nets[n].total -= 1;
        if self.nets[n].total == 0 {
            self.empty_nets += 1;
        }
        let mut left = None;
        // One hash of the source for the update and the removal.
        let slots = &self.slots;
        let src = ended.src;
        let hash = src_hash(&self.keys, src);
        if let Ok(mut e) = self
            .sources
            .find_entry(hash, |s| slots[s.head as usize].src == src)
        {
            let s = e.get_mut();
            if s.head == i {
                s.head = next_of_source;
            } else {
                let mut j = s.head;
                while j != NONE {
                    let nx = self.slots[j as usize].next_of_source;
                    if nx == i {
                        self.slots[j as usize].next_of_source = next_of_source;
                        break;
                    }
                    j = nx;
                }
            }
            if guarded {
                s.guarded -= 1;
                left = Some(s.guarded);
            }
            if s.head == NONE {
                e.remove();
            }
        }
        (ended, left)
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
        self.buckets.clear();
        self.top = 0;
        self.stage1 = Ends::EMPTY;
        self.stage1_total = 0;
        self.advanced_total = 0;
        for a in &mut all {
            a.links = [Link::NONE; 3];
            a.next_of_source = NONE;
            a.net = NONE;
        }
        (all, std::mem::replace(&mut self.doors, doors))
    }

    /// The oldest stage-1 attempt of the table.
    pub fn oldest_stage1(&self) -> Option<u32> {
        lists::some(self.stage1.head)
    }
}
