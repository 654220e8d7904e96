//! The matcher against a model: README's matching semantics as a deliberately naive,
//! obviously correct reference (a list of attempts scanned linearly, nothing clever), driven
//! together with the real `Matcher` on random doors and random packet streams from a few
//! sources over random times. Both must produce exactly the same events (stages, opens,
//! resets, timeouts, evictions) in the same order, and list the same attempts.
//!
//! When the matching semantics change, change [`Model`] in the same commit: it is the
//! executable statement of README's "Matching" rules.

use knockd::config::{flag, Proto, Step, TcpFlags};
use knockd::matcher::{DoorRule, MatchEvent, Matcher};
use knockd::packet::Packet;
use proptest::prelude::*;
use std::net::IpAddr;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The model

/// One knock attempt of one source on one door.
#[derive(Debug, Clone)]
struct ModelAttempt {
    src: IpAddr,
    door: usize,
    /// Good knocks so far.
    stage: usize,
    started: Instant,
    /// Creation order, to break ties between attempts started at the same instant.
    id: u64,
    /// (source port, destination port) of every knock that counted, oldest first.
    flows: Vec<(u16, u16)>,
}

struct Model {
    doors: Vec<DoorRule>,
    local: Vec<IpAddr>,
    cap: usize,
    attempts: Vec<ModelAttempt>,
    next_id: u64,
}

/// How many of the last counted flows an attempt remembers (rule 2: their retransmissions
/// are ignored; older ones are forgotten).
const REMEMBERED_FLOWS: usize = 4;

impl Model {
    fn deadline(&self, a: &ModelAttempt) -> Instant {
        a.started + self.doors[a.door].seq_timeout
    }

    fn find(&self, src: IpAddr, door: usize) -> Option<usize> {
        self.attempts
            .iter()
            .position(|a| a.src == src && a.door == door)
    }

    fn on_packet(&mut self, p: &Packet, now: Instant, out: &mut Vec<MatchEvent>) {
        let step = Step {
            port: p.dport,
            proto: p.proto,
        };
        for door in 0..self.doors.len() {
            let rule = self.doors[door].clone();
            // Rule 1: only doors that use this knock anywhere in their sequence look at it.
            if !rule.enabled || !rule.sequence.contains(&step) {
                continue;
            }
            let to_us = match rule.target {
                Some(t) => t == p.dst,
                None => self.local.is_empty() || self.local.contains(&p.dst),
            };
            // TCP packets with other flags are ignored, as knockd does.
            let flags_ok = p.proto == Proto::Udp || rule.tcp_flags.matches(p.tcp_flags);
            if !to_us || !flags_ok {
                continue;
            }
            let (src, of) = (p.src, rule.sequence.len());
            if let Some(i) = self.find(src, door) {
                let stage = self.attempts[i].stage;
                let flows = &self.attempts[i].flows;
                let recent = &flows[flows.len().saturating_sub(REMEMBERED_FLOWS)..];
                if now >= self.deadline(&self.attempts[i]) {
                    // Rule 4: a packet after the deadline finds the attempt timed out.
                    self.attempts.remove(i);
                    out.push(MatchEvent::Timeout { src, door, stage });
                } else if recent.contains(&(p.sport, p.dport)) {
                    // Rule 2: a flow that already counted is ignored.
                    continue;
                } else if rule.sequence[stage] == step {
                    let a = &mut self.attempts[i];
                    a.stage += 1;
                    a.flows.push((p.sport, p.dport));
                    out.push(MatchEvent::Stage {
                        src,
                        door,
                        stage: stage + 1,
                        of,
                    });
                    if stage + 1 == of {
                        self.attempts.remove(i);
                        out.push(MatchEvent::Open { src, door });
                    }
                    continue;
                } else {
                    // Rule 3: a wrong knock resets, then counts as a first knock below.
                    self.attempts.remove(i);
                    out.push(MatchEvent::Reset {
                        src,
                        door,
                        stage,
                        got: step,
                    });
                }
            }
            if rule.sequence[0] != step {
                continue;
            }
            out.push(MatchEvent::Stage {
                src,
                door,
                stage: 1,
                of,
            });
            if of == 1 {
                out.push(MatchEvent::Open { src, door });
                continue;
            }
            // Rule 5: at the cap, the attempt that started first goes (ties: lower door index,
            // then the one created first).
            if self.attempts.len() >= self.cap {
                let oldest = (0..self.attempts.len()).min_by_key(|&i| {
                    let a = &self.attempts[i];
                    (a.started, a.door, a.id)
                });
                if let Some(i) = oldest {
                    let a = self.attempts.remove(i);
                    out.push(MatchEvent::Evicted {
                        src: a.src,
                        door: a.door,
                        stage: a.stage,
                    });
                }
            }
            self.attempts.push(ModelAttempt {
                src,
                door,
                stage: 1,
                started: now,
                id: self.next_id,
                flows: vec![(p.sport, p.dport)],
            });
            self.next_id += 1;
        }
    }

    /// Rule 4: at its deadline an attempt times out (door by door, earliest deadline first).
    fn expire(&mut self, now: Instant, out: &mut Vec<MatchEvent>) {
        for door in 0..self.doors.len() {
            let mut due: Vec<ModelAttempt> = self
                .attempts
                .iter()
                .filter(|a| a.door == door && self.deadline(a) <= now)
                .cloned()
                .collect();
            due.sort_by_key(|a| (a.started, a.id));
            for a in due {
                self.attempts.retain(|b| b.id != a.id);
                out.push(MatchEvent::Timeout {
                    src: a.src,
                    door,
                    stage: a.stage,
                });
            }
        }
    }

    fn listing(&self) -> Vec<(IpAddr, usize, usize)> {
        let mut v: Vec<_> = self
            .attempts
            .iter()
            .map(|a| (a.src, a.door, a.stage))
            .collect();
        v.sort();
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Random doors and streams: few ports, few sources, so that doors share knocks and sources
// collide with each other, with the cap and with timeouts.

const PORTS: [u16; 4] = [1, 2, 3, 4];
const UNUSED_PORT: u16 = 9;

fn ip(i: u8) -> IpAddr {
    match i % 3 {
        0 => "10.0.0.1".parse().expect("ip"),
        1 => "10.0.0.2".parse().expect("ip"),
        _ => "fd00::3".parse().expect("ip"),
    }
}

fn dst(i: u8) -> IpAddr {
    if i % 2 == 0 {
        "192.0.2.1".parse().expect("ip")
    } else {
        "192.0.2.2".parse().expect("ip")
    }
}

fn proto(udp: bool) -> Proto {
    if udp {
        Proto::Udp
    } else {
        Proto::Tcp
    }
}

fn step() -> impl Strategy<Value = Step> {
    (prop::sample::select(&PORTS[..]), any::<bool>()).prop_map(|(port, udp)| Step {
        port,
        proto: proto(udp),
    })
}

fn tcp_flags() -> impl Strategy<Value = TcpFlags> {
    prop::sample::select(vec![
        TcpFlags::default(),
        TcpFlags {
            set: flag::SYN,
            unset: 0,
        },
        TcpFlags {
            set: flag::SYN,
            unset: flag::ACK,
        },
    ])
}

fn door() -> impl Strategy<Value = DoorRule> {
    (
        prop::collection::vec(step(), 1..8),
        1u64..60,
        tcp_flags(),
        prop::option::weighted(0.2, 0u8..2),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(sequence, ms, tcp_flags, target, enabled)| DoorRule {
            sequence,
            seq_timeout: Duration::from_millis(ms),
            tcp_flags,
            target: target.map(dst),
            enabled,
        })
}

#[derive(Debug, Clone)]
enum Op {
    /// A random packet `after` ms after the previous op.
    Packet {
        after: u64,
        src: u8,
        dst: u8,
        sport: u16,
        port: u16,
        udp: bool,
        flags: u8,
    },
    /// `count` knocks of a door's sequence from position `from` on (wrapping), `gap` ms
    /// apart, each from its own source port (a client playing the sequence).
    Play {
        door: usize,
        src: u8,
        dst: u8,
        from: usize,
        count: usize,
        sport: u16,
        gap: u64,
        flags: u8,
    },
    /// The packet sent `back` packets ago again (a retransmission), `after` ms later.
    Repeat { back: usize, after: u64 },
    /// The engine's timer fires `after` ms after the previous op.
    Expire { after: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let port = prop_oneof![9 => prop::sample::select(&PORTS[..]), 1 => Just(UNUSED_PORT)];
    let flags = || {
        prop::sample::select(vec![
            flag::SYN,
            flag::SYN,
            flag::SYN | flag::ACK,
            flag::ACK,
            flag::RST,
        ])
    };
    prop_oneof![
        4 => (0u64..8, 0u8..3, 0u8..2, 1000u16..1003, port, any::<bool>(), flags()).prop_map(
            |(after, src, dst, sport, port, udp, flags)| Op::Packet {
                after, src, dst, sport, port, udp, flags
            }
        ),
        4 => (0usize..4, 0u8..3, 0u8..2, 0usize..8, 1usize..9, 1000u16..1010, 0u64..10, flags())
            .prop_map(|(door, src, dst, from, count, sport, gap, flags)| Op::Play {
                door, src, dst, from, count, sport, gap, flags
            }),
        2 => (1usize..10, 0u64..5).prop_map(|(back, after)| Op::Repeat { back, after }),
        1 => (0u64..30).prop_map(|after| Op::Expire { after }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    doors: Vec<DoorRule>,
    cap: usize,
    local: bool,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(door(), 1..4),
        1usize..6,
        any::<bool>(),
        prop::collection::vec(op(), 1..60),
    )
        .prop_map(|(doors, cap, local, ops)| Case {
            doors,
            cap,
            local,
            ops,
        })
}

fn packet(src: u8, dst_: u8, sport: u16, step: Step, flags: u8) -> Packet {
    Packet {
        src: ip(src),
        dst: dst(dst_),
        proto: step.proto,
        sport,
        dport: step.port,
        tcp_flags: if step.proto == Proto::Udp { 0 } else { flags },
        tcp_seq: 0,
    }
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let mut real = Matcher::new(case.doors.clone(), case.cap);
    let mut model = Model {
        doors: case.doors.clone(),
        local: Vec::new(),
        cap: case.cap,
        attempts: Vec::new(),
        next_id: 0,
    };
    if case.local {
        real.set_local_addrs([dst(0)]);
        model.local = vec![dst(0)];
    }
    let mut now = Instant::now();
    // Expand the ops into timed packets and timer firings.
    let mut steps: Vec<(u64, Option<Packet>)> = Vec::new();
    let mut sent: Vec<Packet> = Vec::new();
    for op in &case.ops {
        match *op {
            Op::Packet {
                after,
                src,
                dst: d,
                sport,
                port,
                udp,
                flags,
            } => {
                let p = packet(
                    src,
                    d,
                    sport,
                    Step {
                        port,
                        proto: proto(udp),
                    },
                    flags,
                );
                sent.push(p);
                steps.push((after, Some(p)));
            }
            Op::Play {
                door,
                src,
                dst: d,
                from,
                count,
                sport,
                gap,
                flags,
            } => {
                let seq = &case.doors[door % case.doors.len()].sequence;
                for k in 0..count {
                    let step = seq[(from + k) % seq.len()];
                    let p = packet(src, d, sport.wrapping_add(k as u16), step, flags);
                    sent.push(p);
                    steps.push((gap, Some(p)));
                }
            }
            Op::Repeat { back, after } => {
                if let Some(p) = sent.len().checked_sub(back).map(|i| sent[i]) {
                    sent.push(p);
                    steps.push((after, Some(p)));
                }
            }
            Op::Expire { after } => steps.push((after, None)),
        }
    }
    for (i, (after, pkt)) in steps.iter().enumerate() {
        now += Duration::from_millis(*after);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        match pkt {
            Some(p) => {
                real.on_packet(p, now, &mut got);
                model.on_packet(p, now, &mut want);
            }
            None => {
                real.expire(now, &mut got);
                model.expire(now, &mut want);
            }
        }
        prop_assert_eq!(&got, &want, "events differ at step {} ({:?})", i, pkt);
        let mut listed: Vec<_> = real
            .attempts()
            .iter()
            .map(|a| (a.src, a.door, a.stage))
            .collect();
        listed.sort();
        prop_assert_eq!(listed, model.listing(), "attempts differ after step {}", i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MATCHER_MODEL_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn matcher_agrees_with_the_model(case in case()) {
        run(&case)?;
    }
}
