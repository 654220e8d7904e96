//! The heaviest network: the networks holding stage-1 attempts, in one list per stage-1
//! count (each list in the order its networks reached that count), and the highest count
//! with a network. A count changes by one at a time, so an update moves one network from
//! one list's middle to the end of the next: O(1), no search, no allocation once the lists
//! reach the largest count. On a tie the network that has held the count longest is the
//! heaviest: time decides, not addresses (a forger picks those).

use super::lists::{self, Ends, Linked};
use super::{Net, Table, NONE};

impl Linked for Net {
    #[inline]
    fn link(&mut self, _: usize) -> &mut lists::Link {
        &mut self.bucket
    }
}

impl Table {
    /// The network slot with the most stage-1 attempts (on a tie, the one that reached that
    /// count first).
    #[inline]
    pub(super) fn heaviest(&self) -> Option<u32> {
        let top = *self.buckets.get(self.top as usize)?;
        lists::some(top.head)
    }

    /// Network slot `n`'s stage-1 count went from `old` to `new` (one up or down, or the
    /// same: a stage-1 attempt started over counts as leaving and coming back).
    #[inline]
    pub(super) fn heavy_changed(&mut self, n: u32, old: u32, new: u32) {
        if old == new {
            lists::to_back(&mut self.nets, &mut self.buckets[old as usize], n, 0);
        } else if new > old {
            if old > 0 {
                lists::unlink(&mut self.nets, &mut self.buckets[old as usize], n, 0);
            }
            if self.buckets.len() <= new as usize {
                self.buckets.resize(new as usize + 1, Ends::EMPTY);
            }
            lists::push_back(&mut self.nets, &mut self.buckets[new as usize], n, 0);
            self.top = self.top.max(new);
        } else {
            let from = &mut self.buckets[old as usize];
            lists::unlink(&mut self.nets, from, n, 0);
            if old == self.top && from.head == NONE {
                // The count below holds this network (or, at 0, no network has any).
                self.top = new;
            }
            if new > 0 {
                lists::push_back(&mut self.nets, &mut self.buckets[new as usize], n, 0);
            }
        }
    }

    /// Checks the lists (tests): every network with stage-1 attempts once, in the list of
    /// its count; the top count is the highest.
    #[cfg(test)]
    pub(super) fn heavy_ok(&self) -> bool {
        let mut listed = 0;
        for (count, list) in self.buckets.iter().enumerate() {
            let mut n = list.head;
            while n != NONE {
                let net = &self.nets[n as usize];
                if net.stage1 as usize != count || net.total == 0 {
                    return false;
                }
                listed += 1;
                n = net.bucket.next;
            }
        }
        let with_stage1 = self
            .nets
            .iter()
            .filter(|n| n.total > 0 && n.stage1 > 0)
            .count();
        let top = self.nets.iter().map(|n| n.stage1).max().unwrap_or(0);
        listed == with_stage1 && top == self.top
    }
}
