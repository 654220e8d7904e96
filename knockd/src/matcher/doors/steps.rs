//! The step index: which doors knock at a step (protocol, port). Every packet asks it, so it
//! answers with two array reads and no hashing: a slot per possible step (2 × 65,536, 512 KiB)
//! naming the step's list of doors, or none.

use crate::config::{Proto, Step};
use crate::matcher::DoorId;

/// No list.
const NONE: u32 = u32::MAX;

/// A step as an index: protocol bit and port.
fn key(step: Step) -> usize {
    (usize::from(step.proto == Proto::Udp) << 16) | usize::from(step.port)
}

#[derive(Debug, Clone)]
pub struct StepIndex {
    /// Per step, its list in `lists` (NONE: no door knocks there).
    slot: Vec<u32>,
    lists: Vec<Vec<DoorId>>,
    /// Lists of steps no door uses any more, empty, for reuse.
    free: Vec<u32>,
}

impl Default for StepIndex {
    fn default() -> Self {
        StepIndex {
            slot: vec![NONE; 2 << 16],
            lists: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl StepIndex {
    /// The doors that knock at `step`, if any.
    #[inline]
    pub fn get(&self, step: Step) -> Option<&[DoorId]> {
        let s = self.slot[key(step)];
        (s != NONE).then(|| self.lists[s as usize].as_slice())
    }

    /// The doors that knock at `step`, to change (an empty list when none did).
    pub fn entry(&mut self, step: Step) -> &mut Vec<DoorId> {
        let k = key(step);
        if self.slot[k] == NONE {
            self.slot[k] = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.lists.push(Vec::new());
                    (self.lists.len() - 1) as u32
                }
            };
        }
        &mut self.lists[self.slot[k] as usize]
    }

    /// `step`'s list, if any, to change; emptied lists are to be [`StepIndex::remove`]d.
    pub fn get_mut(&mut self, step: Step) -> Option<&mut Vec<DoorId>> {
        let s = self.slot[key(step)];
        (s != NONE).then(|| &mut self.lists[s as usize])
    }

    /// No door knocks at `step` any more.
    pub fn remove(&mut self, step: Step) {
        let k = key(step);
        let s = std::mem::replace(&mut self.slot[k], NONE);
        if s != NONE {
            self.lists[s as usize].clear();
            self.free.push(s);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn step(proto: Proto, port: u16) -> Step {
        Step { port, proto }
    }

    #[test]
    fn steps_map_to_their_doors_and_forget_them() {
        let mut ix = StepIndex::default();
        ix.entry(step(Proto::Tcp, 7000)).push(0);
        ix.entry(step(Proto::Tcp, 7000)).push(2);
        ix.entry(step(Proto::Udp, 7000)).push(1);
        assert_eq!(ix.get(step(Proto::Tcp, 7000)), Some(&[0, 2][..]));
        assert_eq!(ix.get(step(Proto::Udp, 7000)), Some(&[1][..]));
        assert_eq!(ix.get(step(Proto::Tcp, 7001)), None);
        assert_eq!(ix.get(step(Proto::Udp, 65535)), None);
        ix.remove(step(Proto::Tcp, 7000));
        assert_eq!(ix.get(step(Proto::Tcp, 7000)), None);
        ix.entry(step(Proto::Tcp, 65535)).push(3);
        assert_eq!(ix.get(step(Proto::Tcp, 65535)), Some(&[3][..]));
        assert_eq!(ix.lists.len(), 2, "the removed step's list was reused");
    }
}
