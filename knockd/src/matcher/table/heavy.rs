//! The heaviest network: a binary max-heap of the networks holding stage-1 attempts, ordered
//! by (stage-1 count, network), each network once, its position kept in the network. Counts
//! change by one at a time, so an update is a few swaps: no stale entries, no rebuilds, no
//! allocation once the heap has grown to the number of networks.

use super::{Table, NONE};

impl Table {
    fn heavy_key(&self, n: u32) -> (u32, u128) {
        let net = &self.nets[n as usize];
        (net.stage1, net.id)
    }

    /// The network slot with the most stage-1 attempts (the highest network on a tie).
    pub(super) fn heaviest(&self) -> Option<u32> {
        self.heavy.first().copied()
    }

    /// Network slot `n`'s stage-1 count went one up (`up`) or down: its place follows.
    pub(super) fn heavy_changed(&mut self, n: u32, up: bool) {
        let pos = self.nets[n as usize].pos;
        if up {
            if pos == NONE {
                self.heavy.push(n);
                self.sift_up(self.heavy.len() - 1);
            } else {
                self.sift_up(pos as usize);
            }
        } else if self.nets[n as usize].stage1 == 0 {
            self.heavy_remove(pos as usize);
        } else {
            self.sift_down(pos as usize);
        }
    }

    fn heavy_remove(&mut self, pos: usize) {
        let n = self.heavy[pos];
        self.nets[n as usize].pos = NONE;
        let Some(last) = self.heavy.pop() else {
            return;
        };
        if pos < self.heavy.len() {
            self.heavy[pos] = last;
            self.sift_up(pos);
            let pos = self.nets[last as usize].pos as usize;
            self.sift_down(pos);
        }
    }

    fn sift_up(&mut self, mut pos: usize) {
        let n = self.heavy[pos];
        let key = self.heavy_key(n);
        while pos > 0 {
            let parent = (pos - 1) / 2;
            let p = self.heavy[parent];
            if self.heavy_key(p) >= key {
                break;
            }
            self.heavy[pos] = p;
            self.nets[p as usize].pos = pos as u32;
            pos = parent;
        }
        self.heavy[pos] = n;
        self.nets[n as usize].pos = pos as u32;
    }

    fn sift_down(&mut self, mut pos: usize) {
        let n = self.heavy[pos];
        let key = self.heavy_key(n);
        let len = self.heavy.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let mut child = left;
            if right < len && self.heavy_key(self.heavy[right]) > self.heavy_key(self.heavy[left]) {
                child = right;
            }
            let c = self.heavy[child];
            if self.heavy_key(c) <= key {
                break;
            }
            self.heavy[pos] = c;
            self.nets[c as usize].pos = pos as u32;
            pos = child;
        }
        self.heavy[pos] = n;
        self.nets[n as usize].pos = pos as u32;
    }

    /// Checks the heap (tests): every network with stage-1 attempts once, in heap order.
    #[cfg(test)]
    pub(super) fn heavy_ok(&self) -> bool {
        let listed = self
            .nets
            .iter()
            .filter(|n| n.total > 0 && n.stage1 > 0)
            .count();
        listed == self.heavy.len()
            && self.heavy.iter().enumerate().all(|(pos, &n)| {
                self.nets[n as usize].pos as usize == pos
                    && (pos == 0 || self.heavy_key(self.heavy[(pos - 1) / 2]) > self.heavy_key(n))
            })
    }
}
