//! Eviction that protects progress: attempts are grouped by source network (an IPv4 /24 and
//! an IPv6 /64 by default). One network holds at most a bounded share of the table; when the
//! table or a network's share is full, a first knock may only displace an attempt still at
//! stage 1, taken from the network holding the most stage-1 attempts (its oldest one). When
//! no network holds more than one, the oldest stage-1 attempt of the whole table goes: a
//! flood from many networks (one forged first knock each) then turns the table over oldest
//! first, whatever the addresses (not the highest network first, which let a slow flood of
//! low forged addresses evict every client with a higher one at once).
//! Attempts that advanced are never evicted: they end by completing, a wrong knock, or their
//! own timeout.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

/// A source network: the masked address, IPv4 tagged apart from IPv6.
pub type NetId = u128;

const V4_TAG: u128 = 1 << 127;

/// The network of `ip` with `/v4` and `/v6` prefix lengths.
pub fn network(ip: IpAddr, v4: u8, v6: u8) -> NetId {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let masked = match v4 {
                0 => 0,
                n if n >= 32 => bits,
                n => bits & (u32::MAX << (32 - n)),
            };
            V4_TAG | u128::from(masked)
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let masked = match v6 {
                0 => 0,
                n if n >= 128 => bits,
                n => bits & (u128::MAX << (128 - n)),
            };
            // Clear the tag bit so that no IPv6 network can collide with an IPv4 one
            // (only a /128 of 8000::/1 would need it; it then shares with its neighbour).
            masked & !V4_TAG
        }
    }
}

/// A stage-1 attempt, as remembered in its network's queue: (source, door, attempt id).
pub type Stage1 = (IpAddr, u32, u64);

/// Where a first knock that needs room takes it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    /// The oldest stage-1 attempt of this network.
    Net(NetId),
    /// The oldest stage-1 attempt of the table (no network holds more than one).
    Oldest,
}

#[derive(Debug, Default)]
struct Net {
    total: u32,
    stage1: u32,
    /// Stage-1 attempts oldest first; entries of attempts that advanced or ended stay until
    /// popped or compacted.
    queue: VecDeque<Stage1>,
}

#[derive(Debug, Default)]
pub struct Networks {
    nets: HashMap<NetId, Net, ahash::RandomState>,
    /// (stage-1 count, network) for every network with a stage-1 attempt: the last is the
    /// heaviest.
    heavy: BTreeSet<(u32, NetId)>,
    /// Every stage-1 attempt, oldest first (entries of attempts that advanced or ended stay
    /// until popped or compacted), and how many stage-1 attempts there are.
    all: VecDeque<Stage1>,
    stage1_total: usize,
}

impl Networks {
    pub fn clear(&mut self) {
        self.nets.clear();
        self.heavy.clear();
        self.all.clear();
        self.stage1_total = 0;
    }

    pub fn total(&self, net: NetId) -> usize {
        self.nets.get(&net).map_or(0, |n| n.total as usize)
    }

    pub fn stage1(&self, net: NetId) -> usize {
        self.nets.get(&net).map_or(0, |n| n.stage1 as usize)
    }

    fn set_stage1(&mut self, net: NetId, f: impl FnOnce(u32) -> u32) {
        if let Some(n) = self.nets.get_mut(&net) {
            if n.stage1 > 0 {
                self.heavy.remove(&(n.stage1, net));
            }
            self.stage1_total -= n.stage1 as usize;
            n.stage1 = f(n.stage1);
            self.stage1_total += n.stage1 as usize;
            if n.stage1 > 0 {
                self.heavy.insert((n.stage1, net));
            }
        }
    }

    /// An attempt started (at stage 1; or, after a reload, at `stage`).
    pub fn added(&mut self, net: NetId, entry: Stage1, stage: u8) {
        let n = self.nets.entry(net).or_default();
        n.total += 1;
        if stage == 1 {
            n.queue.push_back(entry);
            self.all.push_back(entry);
            self.set_stage1(net, |c| c + 1);
        }
    }

    /// An attempt went from stage 1 to stage 2.
    pub fn advanced(&mut self, net: NetId) {
        self.set_stage1(net, |c| c.saturating_sub(1));
    }

    /// An attempt ended; `stage` is the stage it had.
    pub fn removed(&mut self, net: NetId, stage: u8) {
        if stage == 1 {
            self.set_stage1(net, |c| c.saturating_sub(1));
        }
        if let Some(n) = self.nets.get_mut(&net) {
            n.total = n.total.saturating_sub(1);
            if n.total == 0 {
                self.nets.remove(&net);
            }
        }
    }

    /// Where to take a stage-1 attempt from when `own` needs room in a full table: the
    /// network with the most stage-1 attempts, `own` on a tie; the whole table (its oldest
    /// stage-1 attempt) when no network holds more than one and `own` holds none. None when
    /// no network has one.
    pub fn victim(&self, own: NetId) -> Option<Victim> {
        let &(most, net) = self.heavy.last()?;
        Some(if self.stage1(own) as u32 >= most {
            Victim::Net(own)
        } else if most == 1 {
            Victim::Oldest
        } else {
            Victim::Net(net)
        })
    }

    /// Pops the table's oldest queued entry for which `live` says it is still a stage-1
    /// attempt.
    pub fn pop_oldest_stage1(&mut self, live: impl Fn(&Stage1) -> bool) -> Option<Stage1> {
        while let Some(e) = self.all.pop_front() {
            if live(&e) {
                return Some(e);
            }
        }
        None
    }

    /// Pops `net`'s oldest queued entry for which `live` says it is still a stage-1 attempt.
    pub fn pop_stage1(&mut self, net: NetId, live: impl Fn(&Stage1) -> bool) -> Option<Stage1> {
        let n = self.nets.get_mut(&net)?;
        while let Some(e) = n.queue.pop_front() {
            if live(&e) {
                return Some(e);
            }
        }
        None
    }

    /// Keeps `net`'s queue within twice its stage-1 count, and the table's queue within
    /// twice the table's.
    pub fn maybe_compact(&mut self, net: NetId, live: impl Fn(&Stage1) -> bool) {
        if let Some(n) = self.nets.get_mut(&net) {
            if n.queue.len() > 2 * n.stage1 as usize + 16 {
                n.queue.retain(|e| live(e));
            }
        }
        if self.all.len() > 2 * self.stage1_total + 64 {
            self.all.retain(|e| live(e));
        }
    }

    #[cfg(test)]
    pub fn queue_len(&self, net: NetId) -> usize {
        self.nets.get(&net).map_or(0, |n| n.queue.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn networks_by_prefix() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.200".parse().unwrap();
        let c: IpAddr = "192.0.3.1".parse().unwrap();
        assert_eq!(network(a, 24, 64), network(b, 24, 64));
        assert_ne!(network(a, 24, 64), network(c, 24, 64));
        assert_eq!(network(a, 16, 64), network(c, 16, 64));
        assert_ne!(network(a, 32, 64), network(b, 32, 64));
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network(x, 24, 64), network(y, 24, 64));
        assert_ne!(network(x, 24, 64), network(z, 24, 64));
        assert_eq!(network(x, 24, 48), network(z, 24, 48));
        // IPv4 and IPv6 never share a network.
        let v6_zero: IpAddr = "::".parse().unwrap();
        let v4_zero: IpAddr = "0.0.0.0".parse().unwrap();
        assert_ne!(network(v6_zero, 0, 0), network(v4_zero, 0, 0));
    }

    #[test]
    fn victim_is_the_heaviest_network_or_own_on_tie() {
        let mut n = Networks::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..3 {
            n.added(1, (ip, 0, i), 1);
        }
        n.added(2, (ip, 0, 9), 1);
        assert_eq!(n.victim(2), Some(Victim::Net(1)));
        assert_eq!(n.victim(3), Some(Victim::Net(1)));
        n.advanced(1);
        n.advanced(1);
        assert_eq!(n.victim(2), Some(Victim::Net(2)), "tie: own network");
        assert_eq!(
            n.victim(3),
            Some(Victim::Oldest),
            "one each: the table's oldest, not the highest network"
        );
        n.advanced(1);
        n.advanced(2);
        assert_eq!(n.victim(2), None, "nothing at stage 1");
        assert_eq!(n.total(1), 3);
        n.removed(1, 2);
        assert_eq!(n.total(1), 2);
    }
}
