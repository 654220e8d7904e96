//! Live attempts as operators see them (`knockctl attempts`, the TUI).

use std::net::IpAddr;
use std::time::Instant;

use super::table::Attempt;
use super::{DoorId, Matcher};

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

impl Matcher {
    fn info(&self, a: &Attempt) -> AttemptInfo {
        let door = a.door as DoorId;
        AttemptInfo {
            src: a.src,
            door,
            stage: usize::from(a.stage),
            of: self.tables.sequence(door, a.variant).map_or(0, <[_]>::len),
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
        let mut v: Vec<AttemptInfo> = self.attempts.iter().map(|(_, a)| self.info(a)).collect();
        v.sort_by_key(|a| (a.started, a.src, a.door));
        v
    }

    /// The `limit` oldest live attempts, oldest first, without looking at the others: a merge
    /// of the per-door lists (each in start order), so the cost is O(limit · log doors).
    /// 100,000 attempts never cost the engine more than the page it sends.
    pub fn oldest(&self, limit: usize) -> Vec<AttemptInfo> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // (start of the attempt, door, its slot)
        let mut heap: BinaryHeap<Reverse<(Instant, DoorId, u32)>> = (0..self.doors.len())
            .filter(|&door| self.attempts.doors[door].live > 0)
            .filter_map(|door| {
                let i = self.attempts.door_first(door)?;
                let deadline = self.attempts.get(i).deadline;
                Some(Reverse((self.started(door, deadline), door, i)))
            })
            .collect();
        let mut out = Vec::with_capacity(limit.min(self.attempts.len()));
        while out.len() < limit {
            let Some(Reverse((_, door, i))) = heap.pop() else {
                break;
            };
            out.push(self.info(self.attempts.get(i)));
            if let Some(next) = self.attempts.door_next(i) {
                let deadline = self.attempts.get(next).deadline;
                heap.push(Reverse((self.started(door, deadline), door, next)));
            }
        }
        out
    }
}
