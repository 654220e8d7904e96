//! The table's source networks: their slots (looked up once per first knock), counts, and
//! stage-1 lists, and where a first knock that needs room takes it from.

use super::lists::{self, Ends, Link};
use super::{Net, Table, Victim};
use crate::matcher::tiers::NetId;

impl Table {
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
    pub fn victim(&self, own: Option<u32>) -> Option<Victim<Option<u32>>> {
        let slot = self.heaviest()?;
        let most = self.nets[slot as usize].stage1;
        let own_stage1 = own.map_or(0, |n| self.nets[n as usize].stage1);
        Some(crate::matcher::tiers::victim(
            own_stage1,
            most,
            own,
            Some(slot),
        ))
    }

    /// The oldest stage-1 attempt of the network in slot `n`.
    pub fn oldest_stage1_of(&self, n: Option<u32>) -> Option<u32> {
        lists::some(self.nets[n? as usize].list.head)
    }

    /// The slot of network `net` (`known`: from [`Table::net_of`]), created if needed.
    pub(super) fn net_slot(&mut self, net: NetId, known: Option<u32>) -> u32 {
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
            total: 0,
            stage1: 0,
            bucket: Link::NONE,
            list: Ends::EMPTY,
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

    #[inline]
    pub(super) fn change_stage1(&mut self, n: usize, up: bool) {
        let net = &mut self.nets[n];
        let old = net.stage1;
        if up {
            net.stage1 += 1;
        } else {
            net.stage1 -= 1;
        }
        let new = net.stage1;
        self.heavy_changed(n as u32, old, new);
    }
}
