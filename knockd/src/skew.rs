//! Clock skew on rotating (TOTP) doors. knockd accepts the previous, current and next step's
//! sequence; a client whose clock is off by more than a step knocks a sequence it does not
//! accept, and nothing would say why. This watches the two steps just outside the window
//! (current - 2 and current + 2) and reports a source that knocks one of them through, in
//! order: a probable clock skew of that many steps. Pure: steps and ports in, findings out;
//! bounded whatever the traffic.

use crate::matcher::DoorId;
use std::collections::HashMap;
use std::net::IpAddr;

/// Progress entries kept at most (a flood of first knocks on watched ports clears them).
pub const MAX_PROGRESS: usize = 4096;

/// Steps from the current one that are watched (just outside the accepted window).
pub const OFFSETS: [i64; 2] = [-2, 2];

/// A source knocked the whole sequence of a step outside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    pub src: IpAddr,
    pub door: DoorId,
    /// The step it knocked, relative to the current one (-2: the client's clock is behind).
    pub offset: i64,
}

#[derive(Debug)]
pub struct SkewWatch {
    /// Skew lines are rate-limited: a few, then one a minute (all are counted).
    pub log: crate::ratelimit::LogBudget,
    /// Per door, the watched steps' sequences (offset, ports).
    doors: HashMap<DoorId, Vec<(i64, Vec<u16>)>>,
    /// Which watched sequences a port starts or continues: (door, index in its list).
    by_port: HashMap<u16, Vec<(DoorId, usize)>>,
    /// Knocks of a watched sequence done so far, per (source, door, sequence).
    progress: HashMap<(IpAddr, DoorId, usize), usize>,
}

impl Default for SkewWatch {
    fn default() -> Self {
        SkewWatch {
            log: crate::ratelimit::LogBudget::new(1.0 / 60.0, 5.0),
            doors: HashMap::new(),
            by_port: HashMap::new(),
            progress: HashMap::new(),
        }
    }
}

impl SkewWatch {
    /// Whether any door is watched (no TOTP door: nothing to do per packet).
    pub fn is_empty(&self) -> bool {
        self.by_port.is_empty()
    }

    /// Watch `door`'s steps just outside the window around `step` (replacing what it had).
    pub fn set_door(&mut self, door: DoorId, spec: &knock_ipc::totp::Spec, step: u64) {
        let seqs = OFFSETS
            .iter()
            .filter_map(|&o| {
                let s = step.checked_add_signed(o)?;
                Some((o, spec.ports(s)))
            })
            .collect();
        self.doors.insert(door, seqs);
        self.reindex();
    }

    /// Stop watching every door (reload: the engine sets the TOTP doors again).
    pub fn clear(&mut self) {
        self.doors.clear();
        self.reindex();
    }

    fn reindex(&mut self) {
        self.by_port.clear();
        self.progress.clear();
        for (&door, seqs) in &self.doors {
            for (i, (_, ports)) in seqs.iter().enumerate() {
                for &p in ports {
                    let list = self.by_port.entry(p).or_default();
                    if !list.contains(&(door, i)) {
                        list.push((door, i));
                    }
                }
            }
        }
    }

    /// The watched ports (for the capture filter).
    pub fn ports(&self, door: DoorId) -> Vec<u16> {
        self.doors
            .get(&door)
            .map(|seqs| seqs.iter().flat_map(|(_, p)| p.iter().copied()).collect())
            .unwrap_or_default()
    }

    /// A TCP knock from `src` on `port`: a [`Skew`] when it completes a watched sequence.
    pub fn on_knock(&mut self, src: IpAddr, port: u16) -> Option<Skew> {
        let entries = self.by_port.get(&port)?;
        let mut found = None;
        for &(door, i) in entries {
            let Some((offset, ports)) = self.doors.get(&door).and_then(|s| s.get(i)) else {
                continue;
            };
            let key = (src, door, i);
            let done = self.progress.get(&key).copied().unwrap_or(0);
            let next = if ports.get(done) == Some(&port) {
                done + 1
            } else if ports.first() == Some(&port) {
                1
            } else {
                0
            };
            if next == ports.len() {
                self.progress.remove(&key);
                found = Some(Skew {
                    src,
                    door,
                    offset: *offset,
                });
            } else if next == 0 {
                self.progress.remove(&key);
            } else {
                if self.progress.len() >= MAX_PROGRESS && !self.progress.contains_key(&key) {
                    self.progress.clear();
                }
                self.progress.insert(key, next);
            }
        }
        found
    }
}

/// The log line for a skew on door `name` with `step_secs`-second steps.
pub fn line(s: &Skew, name: &str, step_secs: u64) -> String {
    let secs = s.offset.unsigned_abs() * step_secs;
    let (way, or_replay) = if s.offset < 0 {
        (
            "behind",
            format!(", or a replay of a sequence knocked {secs} s ago"),
        )
    } else {
        ("ahead of", String::new())
    };
    format!(
        "{}: {name}: probable clock skew: knocked the sequence of the step {} steps {}: the client's clock is about {secs} s {way} this host's (one step, {step_secs} s, is accepted either way){or_replay}; sync its clock (NTP)",
        s.src,
        s.offset.unsigned_abs(),
        if s.offset < 0 { "back" } else { "ahead" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> knock_ipc::totp::Spec {
        knock_ipc::totp::Spec {
            secret: b"12345678901234567890123456789012".to_vec(),
            step_secs: 30,
            knocks: 4,
            lo: 10000,
            hi: 59999,
            exclude: vec![],
        }
    }

    #[test]
    fn a_sequence_two_steps_off_is_a_skew_and_nothing_else_is() {
        let spec = spec();
        let mut w = SkewWatch::default();
        w.set_door(3, &spec, 1000);
        let src: IpAddr = "192.0.2.7".parse().expect("addr");
        let other: IpAddr = "192.0.2.8".parse().expect("addr");
        // The accepted steps are not watched: the matcher has them.
        for s in [999, 1000, 1001] {
            for p in spec.ports(s) {
                assert_eq!(w.on_knock(src, p), None);
            }
        }
        // Two steps behind, knocked in order: a skew of -2; interleaved with another source.
        let behind = spec.ports(998);
        for (i, &p) in behind.iter().enumerate() {
            let got = w.on_knock(src, p);
            assert_eq!(w.on_knock(other, behind[0]), None);
            if i + 1 < behind.len() {
                assert_eq!(got, None);
            } else {
                assert_eq!(
                    got,
                    Some(Skew {
                        src,
                        door: 3,
                        offset: -2
                    })
                );
            }
        }
        // Out of order: nothing.
        let ahead = spec.ports(1002);
        for &p in ahead.iter().rev() {
            assert_eq!(w.on_knock(src, p), None);
        }
        for (i, &p) in ahead.iter().enumerate() {
            let got = w.on_knock(src, p);
            assert_eq!(got.is_some(), i + 1 == ahead.len());
            if let Some(s) = got {
                assert_eq!(s.offset, 2);
            }
        }
        assert_eq!(w.ports(3).len(), 8);
        w.clear();
        assert_eq!(w.on_knock(src, behind[0]), None);
        assert!(w.ports(3).is_empty());
    }

    #[test]
    fn progress_stays_bounded_under_a_flood() {
        let spec = spec();
        let mut w = SkewWatch::default();
        w.set_door(0, &spec, 1000);
        let first = spec.ports(998)[0];
        for i in 0..20_000u32 {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(w.on_knock(src, first), None);
            assert!(w.progress.len() <= MAX_PROGRESS);
        }
    }

    #[test]
    fn the_line_says_the_size_and_the_way() {
        let s = Skew {
            src: "192.0.2.7".parse().expect("addr"),
            door: 0,
            offset: -2,
        };
        assert_eq!(
            line(&s, "ssh", 30),
            "192.0.2.7: ssh: probable clock skew: knocked the sequence of the step 2 steps back: the client's clock is about 60 s behind this host's (one step, 30 s, is accepted either way), or a replay of a sequence knocked 60 s ago; sync its clock (NTP)"
        );
    }
}
