//! The attempt table: every live attempt in one slab, reached through its source (one hash
//! lookup per packet finds the source's attempts and how many of them the sweep guard
//! watches) and threaded on intrusive lists, so that no ordering structure keeps entries of
//! attempts that ended:
//! - per door, in creation order (= deadline order: one timeout per door): expiry and the
//!   oldest-first listing;
//! - while at stage 1, per source network and table-wide, in creation order: eviction
//!   ([`super::tiers`] decides where from).
//!
//! Pure bookkeeping; the matcher decides what a knock means.

use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use super::tiers::{NetId, Victim};

/// No slot: the end of a list.
pub const NONE: u32 = u32::MAX;

/// Flows remembered per attempt (rule 2).
pub const RECENT: usize = 4;

type Hasher = ahash::RandomState;

#[derive(Debug, Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links {
    prev: NONE,
    next: NONE,
};

/// The ends of a list.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    head: u32,
    tail: u32,
}

const EMPTY: Ends = Ends {
    head: NONE,
    tail: NONE,
};

impl Default for Ends {
    fn default() -> Self {
        EMPTY
    }
}

/// One door's share of the table.
#[derive(Debug, Clone, Copy)]
pub struct DoorState {
    list: Ends,
    pub live: u32,
    /// Attempts past stage 1.
    pub advanced: u32,
}

impl Default for DoorState {
    fn default() -> Self {
        DoorState {
            list: EMPTY,
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
    by_door: Links,
    stage1_net: Links,
    stage1_all: Links,
}

impl Attempt {
    pub fn new(src: IpAddr, door: u32, variant: u64, deadline: Instant) -> Attempt {
        Attempt {
            src,
            door,
            stage: 1,
            guarded: false,
            variant,
            deadline,
            recent: [0; RECENT],
            id: 0,
            net: NONE,
            next_of_source: NONE,
            by_door: UNLINKED,
            stage1_net: UNLINKED,
            stage1_all: UNLINKED,
        }
    }

    pub fn remember(&mut self, flow: u32) {
        self.recent[usize::from(self.stage) % RECENT] = flow;
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
    list: Ends,
}

#[derive(Clone, Copy)]
enum List {
    Door,
    Net,
    All,
}

#[derive(Debug, Default)]
pub struct Table {
    slots: Vec<Attempt>,
    free: Vec<u32>,
    len: usize,
    sources: HashMap<IpAddr, Source, Hasher>,
    nets: Vec<Net>,
    free_nets: Vec<u32>,
    net_index: HashMap<NetId, u32, Hasher>,
    /// (stage-1 count, network, slot) pushed at every change of a count: the greatest entry
    /// that still matches its network's count is the heaviest network. Stale entries are
    /// dropped when met on top, or all at once when they outnumber the networks.
    heavy: BinaryHeap<(u32, NetId, u32)>,
    stage1: Ends,
    pub doors: Vec<DoorState>,
    advanced_total: usize,
    next_id: u64,
}

impl Table {
    pub fn with_capacity(cap: usize, doors: Vec<DoorState>) -> Table {
        let cap = cap.min(1 << 20);
        Table {
            slots: Vec::with_capacity(cap),
            sources: HashMap::with_capacity_and_hasher(cap, Hasher::new()),
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

    /// The slot of `src`'s attempt on `door`.
    pub fn find(&self, src: IpAddr, door: u32) -> Option<u32> {
        let mut i = self.sources.get(&src)?.head;
        while i != NONE {
            let a = &self.slots[i as usize];
            if a.door == door {
                return Some(i);
            }
            i = a.next_of_source;
        }
        None
    }

    /// Whether `src` has an attempt the sweep guard watches.
    pub fn watched(&self, src: IpAddr) -> bool {
        self.sources.get(&src).is_some_and(|s| s.guarded > 0)
    }

    /// Slots of `src`'s attempts.
    pub fn of_source(&self, src: IpAddr) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = self.sources.get(&src).map_or(NONE, |s| s.head);
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
        let mut i = self.doors[door as usize].list.head;
        while i != NONE {
            out.push(i);
            i = self.slots[i as usize].by_door.next;
        }
        out
    }

    /// The oldest attempt of `door`.
    pub fn door_front(&self, door: usize) -> Option<u32> {
        Some(self.doors[door].list.head).filter(|&i| i != NONE)
    }

    /// The attempt after `i` on its door's list.
    pub fn door_next(&self, i: u32) -> Option<u32> {
        Some(self.slots[i as usize].by_door.next).filter(|&n| n != NONE)
    }

    #[cfg(test)]
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn advanced_total(&self) -> usize {
        self.advanced_total
    }

    /// Adds `a` (at any stage: reloads carry advanced attempts over) for network `net`.
    pub fn insert(&mut self, mut a: Attempt, net: NetId) -> u32 {
        if a.id == 0 {
            self.next_id += 1;
            a.id = self.next_id;
        } else {
            self.next_id = self.next_id.max(a.id);
        }
        let src = a.src;
        let door = a.door as usize;
        let guarded = a.guarded;
        let stage1 = a.stage == 1;
        a.net = self.net_slot(net);
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
        let s = self.sources.entry(src).or_insert(Source {
            head: NONE,
            guarded: 0,
        });
        self.slots[i as usize].next_of_source = s.head;
        s.head = i;
        s.guarded += u32::from(guarded);
        self.push_back(List::Door, i);
        let d = &mut self.doors[door];
        d.live += 1;
        let n = self.slots[i as usize].net as usize;
        self.nets[n].total += 1;
        if stage1 {
            self.push_back(List::Net, i);
            self.push_back(List::All, i);
            self.change_stage1(n, true);
        } else {
            self.doors[door].advanced += 1;
            self.advanced_total += 1;
        }
        i
    }

    /// An attempt went from stage 1 to 2 (the caller counted the knock).
    pub fn advanced(&mut self, i: u32) {
        self.unlink(List::Net, i);
        self.unlink(List::All, i);
        let a = &self.slots[i as usize];
        let (n, door) = (a.net as usize, a.door as usize);
        self.change_stage1(n, false);
        self.doors[door].advanced += 1;
        self.advanced_total += 1;
    }

    /// Removes attempt `i`; returns its source's remaining count of watched attempts when
    /// the removed one was watched.
    pub fn remove(&mut self, i: u32) -> (Attempt, Option<u32>) {
        let (src, door, stage, n) = {
            let a = &self.slots[i as usize];
            (a.src, a.door as usize, a.stage, a.net as usize)
        };
        self.unlink(List::Door, i);
        self.doors[door].live -= 1;
        if stage == 1 {
            self.unlink(List::Net, i);
            self.unlink(List::All, i);
            self.change_stage1(n, false);
        } else {
            self.doors[door].advanced -= 1;
            self.advanced_total -= 1;
        }
        self.nets[n].total -= 1;
        if self.nets[n].total == 0 {
            let id = self.nets[n].id;
            self.net_index.remove(&id);
            self.free_nets.push(n as u32);
        }
        let next = self.slots[i as usize].next_of_source;
        let guarded = self.slots[i as usize].guarded;
        let mut left = None;
        // One hash of the source for the update and the removal.
        if let Entry::Occupied(mut e) = self.sources.entry(src) {
            let s = e.get_mut();
            if s.head == i {
                s.head = next;
            } else {
                let mut j = s.head;
                while j != NONE {
                    let nx = self.slots[j as usize].next_of_source;
                    if nx == i {
                        self.slots[j as usize].next_of_source = next;
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
        let a = self.slots[i as usize].clone();
        self.slots[i as usize].door = NONE;
        self.free.push(i);
        self.len -= 1;
        (a, left)
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
        self.heavy.clear();
        self.stage1 = EMPTY;
        self.advanced_total = 0;
        (all, std::mem::replace(&mut self.doors, doors))
    }

    /// Attempts of network `net`.
    pub fn net_total(&self, net: NetId) -> usize {
        self.net_index
            .get(&net)
            .map_or(0, |&n| self.nets[n as usize].total as usize)
    }

    fn net_stage1(&self, net: NetId) -> u32 {
        self.net_index
            .get(&net)
            .map_or(0, |&n| self.nets[n as usize].stage1)
    }

    /// Where a first knock from `own` that needs room in a full table takes it from (see
    /// [`super::tiers`]); None when no attempt is at stage 1.
    pub fn victim(&mut self, own: NetId) -> Option<Victim> {
        let (most, net) = loop {
            let &(count, net, slot) = self.heavy.peek()?;
            let n = &self.nets[slot as usize];
            if n.id == net && n.stage1 == count && n.total > 0 {
                break (count, net);
            }
            self.heavy.pop();
        };
        Some(super::tiers::victim(self.net_stage1(own), most, own, net))
    }

    /// The oldest stage-1 attempt of network `net`.
    pub fn oldest_stage1_of(&self, net: NetId) -> Option<u32> {
        let &n = self.net_index.get(&net)?;
        Some(self.nets[n as usize].list.head).filter(|&i| i != NONE)
    }

    /// The oldest stage-1 attempt of the table.
    pub fn oldest_stage1(&self) -> Option<u32> {
        Some(self.stage1.head).filter(|&i| i != NONE)
    }

    fn net_slot(&mut self, net: NetId) -> u32 {
        if let Some(&n) = self.net_index.get(&net) {
            return n;
        }
        let fresh = Net {
            id: net,
            total: 0,
            stage1: 0,
            list: EMPTY,
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
        if net.stage1 > 0 {
            self.heavy.push((net.stage1, net.id, n as u32));
        }
        if self.heavy.len() > 2 * self.net_index.len() + 64 {
            let nets = &self.nets;
            self.heavy = self
                .net_index
                .values()
                .filter_map(|&n| {
                    let net = &nets[n as usize];
                    (net.stage1 > 0).then_some((net.stage1, net.id, n))
                })
                .collect();
        }
    }

    fn links(&mut self, list: List, i: u32) -> &mut Links {
        let a = &mut self.slots[i as usize];
        match list {
            List::Door => &mut a.by_door,
            List::Net => &mut a.stage1_net,
            List::All => &mut a.stage1_all,
        }
    }

    fn ends(&mut self, list: List, i: u32) -> &mut Ends {
        let (door, net) = {
            let a = &self.slots[i as usize];
            (a.door as usize, a.net as usize)
        };
        match list {
            List::Door => &mut self.doors[door].list,
            List::Net => &mut self.nets[net].list,
            List::All => &mut self.stage1,
        }
    }

    fn push_back(&mut self, list: List, i: u32) {
        let tail = self.ends(list, i).tail;
        *self.links(list, i) = Links {
            prev: tail,
            next: NONE,
        };
        if tail == NONE {
            self.ends(list, i).head = i;
        } else {
            self.links(list, tail).next = i;
        }
        self.ends(list, i).tail = i;
    }

    fn unlink(&mut self, list: List, i: u32) {
        let Links { prev, next } = *self.links(list, i);
        if prev == NONE {
            self.ends(list, i).head = next;
        } else {
            self.links(list, prev).next = next;
        }
        if next == NONE {
            self.ends(list, i).tail = prev;
        } else {
            self.links(list, next).prev = prev;
        }
        *self.links(list, i) = UNLINKED;
    }
}
