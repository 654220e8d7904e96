//! The door tables (sequences, step index, the ports that knock at all) and what changes
//! them: reloads, one-time sequences moving on, rotating doors' windows, and the replay
//! memory of rotating doors.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::table::DoorState;
use super::{DoorId, DoorRule, Hasher, Matcher, Settings, SweepGuard};
use crate::config::Step;
use steps::StepIndex;

mod steps;

/// Which doors have a given step in any of their variants, each list in door order. Linear:
/// ids arrive in order, so a door already listed is the last one (100,000 doors sharing a
/// port cost no more than 100,000 that do not).
fn step_index(variants: &[Vec<(u64, Vec<Step>)>]) -> StepIndex {
    let mut by_step = StepIndex::default();
    for (id, variants) in variants.iter().enumerate() {
        for step in variants.iter().flat_map(|(_, seq)| seq) {
            let ids = by_step.entry(*step);
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
    }
    by_step
}

/// Replay keys that several replay-guarded doors share, each with those doors.
fn shared_keys(doors: &[DoorRule]) -> HashMap<u64, Vec<DoorId>> {
    let mut by_key: HashMap<u64, Vec<DoorId>> = HashMap::new();
    for (id, d) in doors.iter().enumerate().filter(|(_, d)| d.replay_guard) {
        by_key.entry(d.replay_key).or_default().push(id);
    }
    by_key.retain(|_, ids| ids.len() > 1);
    by_key
}

fn static_variants(doors: &[DoorRule]) -> Vec<Vec<(u64, Vec<Step>)>> {
    doors
        .iter()
        .map(|d| {
            if d.sequence.is_empty() {
                Vec::new()
            } else {
                vec![(0, d.sequence.clone())]
            }
        })
        .collect()
}

/// A door set's tables, built from its rules alone, so that a reload builds them off the
/// engine task (100,000 doors: most of a reload's cost) and [`Matcher::reconfigure_prepared`]
/// only swaps them in and carries the attempts over.
#[derive(Debug)]
pub struct Prepared {
    pub(super) doors: Vec<DoorRule>,
    /// Per door, its accepted sequences: `(variant, sequence)`, the preferred one first.
    variants: Vec<Vec<(u64, Vec<Step>)>>,
    by_step: StepIndex,
    /// Door `Target`s: also "this host" for the sweep guard.
    pub(super) targets: HashSet<IpAddr, Hasher>,
    /// Replay keys shared by several replay-guarded doors, with those doors.
    shared: HashMap<u64, Vec<DoorId>>,
    pub(super) per_door: Vec<DoorState>,
}

impl Prepared {
    pub fn new(doors: Vec<DoorRule>) -> Prepared {
        let variants = static_variants(&doors);
        let by_step = step_index(&variants);
        Prepared {
            by_step,
            targets: doors.iter().filter_map(|d| d.target).collect(),
            shared: shared_keys(&doors),
            variants,
            per_door: vec![DoorState::default(); doors.len()],
            doors,
        }
    }

    /// Doors with `step` in any of their sequences.
    pub(super) fn doors_of(&self, step: Step) -> Option<&[DoorId]> {
        self.by_step.get(step)
    }

    /// `door`'s sequence for `variant`.
    pub(super) fn sequence(&self, door: DoorId, variant: u64) -> Option<&[Step]> {
        self.variants[door]
            .iter()
            .find(|(v, _)| *v == variant)
            .map(|(_, s)| s.as_slice())
    }

    /// The variant of `door` that `step` starts (the preferred one first), and its length.
    pub(super) fn first_knock(&self, door: DoorId, step: Step) -> Option<(u64, usize)> {
        self.variants[door]
            .iter()
            .find(|(_, s)| s.first() == Some(&step))
            .map(|(v, s)| (*v, s.len()))
    }

    /// Replaces `door`'s variants, keeping the step index in door order.
    fn set_variants(&mut self, door: DoorId, variants: Vec<(u64, Vec<Step>)>) {
        let old = std::mem::replace(&mut self.variants[door], variants);
        for step in old.iter().flat_map(|(_, seq)| seq) {
            if let Some(ids) = self.by_step.get_mut(*step) {
                ids.retain(|&d| d != door);
                if ids.is_empty() {
                    self.by_step.remove(*step);
                }
            }
        }
        for step in self.variants[door].iter().flat_map(|(_, seq)| seq) {
            let ids = self.by_step.entry(*step);
            if let Err(pos) = ids.binary_search(&door) {
                ids.insert(pos, door);
            }
        }
    }
}

/// What a reconfiguration replaced: dropping 100,000 doors' tables takes a while, so the
/// caller may drop it elsewhere.
#[derive(Debug)]
pub struct Retired(#[allow(dead_code)] Prepared);

impl Matcher {
    /// Replace the doors (reload). `keep[old] = Some(new)` carries the old door's attempts over
    /// to the new index; attempts of other doors are dropped. A kept rotating door (no static
    /// sequence, replay guard on) also keeps its accepted sequences and its replay memory, so
    /// attempts in progress and what each step opened for survive the reload.
    pub fn reconfigure(&mut self, doors: Vec<DoorRule>, keep: &[Option<DoorId>]) {
        self.reconfigure_with(doors, keep, self.settings);
    }

    /// [`Matcher::reconfigure`] with new settings. A smaller table keeps the attempts it has
    /// until they end.
    pub fn reconfigure_with(
        &mut self,
        doors: Vec<DoorRule>,
        keep: &[Option<DoorId>],
        settings: Settings,
    ) {
        drop(self.reconfigure_prepared(Prepared::new(doors), keep, settings));
    }

    /// [`Matcher::reconfigure_with`] with tables built beforehand ([`Prepared::new`], off the
    /// engine task): the work left is O(attempts + kept doors), and what it replaced is
    /// returned for the caller to drop where it costs nothing.
    pub fn reconfigure_prepared(
        &mut self,
        mut prepared: Prepared,
        keep: &[Option<DoorId>],
        settings: Settings,
    ) -> Retired {
        if settings != self.settings {
            self.settings = settings;
            self.cap = settings.max_attempts.max(1);
            self.guard =
                SweepGuard::new(settings.sweep_threshold, settings.sweep_penalty, self.cap);
        }
        let n = prepared.doors.len();
        let new_doors = std::mem::take(&mut prepared.doors);
        let per_door = std::mem::take(&mut prepared.per_door);
        let rotating = |new: DoorId| {
            new_doors
                .get(new)
                .is_some_and(|d| d.replay_guard && d.sequence.is_empty())
        };
        for (old, new) in keep.iter().enumerate() {
            if let Some(new) = *new {
                if rotating(new) && old < self.tables.variants.len() && new < n {
                    let vs = std::mem::take(&mut self.tables.variants[old]);
                    prepared.set_variants(new, vs);
                }
            }
        }
        let old_used = std::mem::take(&mut self.used);
        for ((old, variant), addr) in old_used {
            if let Some(Some(new)) = keep.get(old) {
                if rotating(*new) {
                    self.used.insert((*new, variant), addr);
                }
            }
        }
        self.used_generation += 1;
        let mut retired = std::mem::replace(&mut self.tables, prepared);
        retired.doors = std::mem::replace(&mut self.doors, new_doors);
        let (old_attempts, old_per_door) = self.attempts.reset(per_door);
        retired.per_door = old_per_door;
        for mut a in old_attempts {
            let Some(Some(new)) = keep.get(a.door as usize) else {
                continue;
            };
            let fits = *new < n
                && self
                    .tables
                    .sequence(*new, a.variant)
                    .is_some_and(|s| usize::from(a.stage) < s.len());
            if fits {
                a.door = *new as u32;
                a.guarded = self.guarded(*new);
                let net = self.net(a.src);
                self.attempts.insert(a, net);
            }
        }
        let attempts = &self.attempts;
        self.guard.retain(|src| attempts.watched(src));
        Retired(retired)
    }

    /// Change one door's sequence (one-time sequences) or disable it (`None`). Its attempts are
    /// dropped: their stage numbers refer to the old sequence.
    pub fn set_sequence(&mut self, door: DoorId, sequence: Option<Vec<Step>>) {
        if door >= self.doors.len() {
            return;
        }
        for i in self.attempts.of_door(door as u32) {
            self.remove(i);
        }
        match sequence {
            Some(seq) if !seq.is_empty() => {
                self.tables.set_variants(door, vec![(0, seq.clone())]);
                self.doors[door].sequence = seq;
                self.doors[door].enabled = true;
            }
            _ => {
                self.tables.set_variants(door, Vec::new());
                self.doors[door].enabled = false;
            }
        }
    }

    /// A rotating door's accepted sequences (TOTP: the current step first, then the previous
    /// and the next), each with its variant id (the time step). Attempts following a variant
    /// that is still accepted carry on; the others end without an event. What a variant
    /// opened for is forgotten when it leaves the window.
    pub fn set_variants(&mut self, door: DoorId, variants: Vec<(u64, Vec<Step>)>) {
        if door >= self.doors.len() {
            return;
        }
        let ids: Vec<u64> = variants.iter().map(|(v, _)| *v).collect();
        for i in self.attempts.of_door(door as u32) {
            if !ids.contains(&self.attempts.get(i).variant) {
                self.remove(i);
            }
        }
        let before = self.used.len();
        self.used.retain(|&(d, v), _| d != door || ids.contains(&v));
        if self.used.len() != before {
            self.used_generation += 1;
        }
        self.doors[door].enabled = !variants.is_empty();
        if let Some((_, current)) = variants.first() {
            self.doors[door].sequence = current.clone();
        }
        self.tables.set_variants(door, variants);
    }

    /// Replay memory: which address each accepted step (variant) of a replay-guarded door
    /// opened for, sorted.
    pub fn replay_memory(&self) -> Vec<(DoorId, u64, IpAddr)> {
        let mut v: Vec<_> = self.used.iter().map(|(&(d, s), &a)| (d, s, a)).collect();
        v.sort();
        v
    }

    /// The address `variant` of `door` opened for, on this door or on any door sharing its
    /// replay key (secret).
    pub(super) fn replay_owner(&self, door: DoorId, variant: u64) -> Option<IpAddr> {
        match self.tables.shared.get(&self.doors[door].replay_key) {
            Some(doors) => doors
                .iter()
                .find_map(|&d| self.used.get(&(d, variant)).copied()),
            None => self.used.get(&(door, variant)).copied(),
        }
    }

    /// Changes whenever [`Matcher::replay_memory`] does.
    pub fn replay_generation(&self) -> u64 {
        self.used_generation
    }

    /// Remember that `variant` of door `door` opened for `addr` (from the state file): only
    /// for a replay-guarded door, a variant it accepts now, and a variant not already taken.
    /// Returns whether it was taken in.
    pub fn remember_replay(&mut self, door: DoorId, variant: u64, addr: IpAddr) -> bool {
        let accepted = self.doors.get(door).is_some_and(|d| d.replay_guard)
            && self.tables.sequence(door, variant).is_some();
        if !accepted || self.used.contains_key(&(door, variant)) {
            return false;
        }
        self.used.insert((door, variant), addr);
        self.used_generation += 1;
        true
    }
}
