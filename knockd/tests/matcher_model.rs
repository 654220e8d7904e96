//! The matcher against a model: README's matching semantics as a deliberately naive,
//! obviously correct reference (a list of attempts scanned linearly, nothing clever), driven
//! together with the real `Matcher` on random doors and random packet streams from a few
//! sources over random times. Both must produce exactly the same events (stages, opens,
//! resets, timeouts, evictions by network share and table size, refusals (door shares of
//! advanced attempts included), the sweep guard's
//! scanners and swept attempts, rotating (TOTP) doors' variants and replay refusals) in the
//! same order, and list the same attempts.
//!
//! When the matching semantics change, change [`Model`] in the same commit: it is the
//! executable statement of README's "Matching" rules.

use knockd::config::{flag, Proto, Step, TcpFlags};
use knockd::matcher::tiers::network;
use knockd::matcher::{DoorRule, MatchEvent, Matcher, Refusal, Settings};
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
    /// Creation order: the oldest stage-1 attempt of a network is evicted first.
    id: u64,
    /// (source port, destination port) of every knock that counted, oldest first.
    flows: Vec<(u16, u16)>,
    /// The door variant (sequence) it follows: 0 for static doors, the step for TOTP doors.
    variant: u64,
}

struct Model {
    doors: Vec<DoorRule>,
    settings: Settings,
    local: Vec<IpAddr>,
    attempts: Vec<ModelAttempt>,
    next_id: u64,
    /// Per network, when (a count of changes) its number of stage-1 attempts last changed:
    /// of the networks holding the most, the one that has held that many longest goes first.
    changed: Vec<(u128, u64)>,
    changes: u64,
    /// Sweep guard: distinct stray (protocol, port)s per source, while it has a guarded attempt.
    strays: Vec<(IpAddr, Vec<(Proto, u16)>)>,
    /// Sweep guard: penalised sources, until when, in the order penalised.
    penalised: Vec<(IpAddr, Instant)>,
    /// Per door, its accepted sequences `(variant, sequence)`, the preferred first.
    variants: Vec<Vec<(u64, Vec<Step>)>>,
    /// Replay-guarded doors: the source each (door, variant) opened for.
    used: Vec<((usize, u64), IpAddr)>,
}

/// How many of the last counted flows an attempt remembers (rule 2: their retransmissions
/// are ignored; older ones are forgotten).
const REMEMBERED_FLOWS: usize = 4;

/// What one door made of a packet.
#[derive(PartialEq)]
enum Outcome {
    Nothing,
    Counted,
    Repeat,
}

impl Model {
    fn deadline(&self, a: &ModelAttempt) -> Instant {
        a.started + self.doors[a.door].seq_timeout
    }

    fn find(&self, src: IpAddr, door: usize) -> Option<usize> {
        self.attempts
            .iter()
            .position(|a| a.src == src && a.door == door)
    }

    fn net(&self, src: IpAddr) -> u128 {
        network(src, self.settings.prefix_v4, self.settings.prefix_v6)
    }

    fn guarded(&self, door: usize) -> bool {
        self.settings.sweep_threshold > 0 && self.doors[door].sweep_guard
    }

    /// Rule 6: strays count while the source has an attempt on a guarded door.
    fn watching(&self, src: IpAddr) -> bool {
        self.attempts
            .iter()
            .any(|a| a.src == src && self.guarded(a.door))
    }

    /// The number of stage-1 attempts of `src`'s network changed.
    fn changed(&mut self, src: IpAddr) {
        let net = self.net(src);
        self.changes += 1;
        self.changed.retain(|(n, _)| *n != net);
        self.changed.push((net, self.changes));
    }

    /// When the number of stage-1 attempts of `net` last changed.
    fn changed_at(&self, net: u128) -> u64 {
        self.changed
            .iter()
            .find(|(n, _)| *n == net)
            .map_or(0, |(_, at)| *at)
    }

    fn remove(&mut self, i: usize) -> ModelAttempt {
        let a = self.attempts.remove(i);
        if a.stage == 1 {
            self.changed(a.src);
        }
        if !self.watching(a.src) {
            self.strays.retain(|(s, _)| *s != a.src);
        }
        a
    }

    fn seq(&self, door: usize, variant: u64) -> Option<&Vec<Step>> {
        self.variants[door]
            .iter()
            .find(|(v, _)| *v == variant)
            .map(|(_, s)| s)
    }

    /// A rotating door's window moves: attempts of variants that left end silently, what a
    /// departed variant opened for is forgotten.
    fn set_variants(&mut self, door: usize, variants: Vec<(u64, Vec<Step>)>) {
        let ids: Vec<u64> = variants.iter().map(|(v, _)| *v).collect();
        while let Some(i) = self
            .attempts
            .iter()
            .position(|a| a.door == door && !ids.contains(&a.variant))
        {
            self.remove(i);
        }
        self.used
            .retain(|((d, v), _)| *d != door || ids.contains(v));
        self.doors[door].enabled = !variants.is_empty();
        if let Some((_, first)) = variants.first() {
            self.doors[door].sequence = first.clone();
        }
        self.variants[door] = variants;
    }

    fn is_penalised(&self, src: IpAddr, now: Instant) -> bool {
        self.penalised
            .iter()
            .any(|&(s, until)| s == src && now < until)
    }

    fn on_packet(&mut self, p: &Packet, now: Instant, out: &mut Vec<MatchEvent>) {
        let step = Step {
            port: p.dport,
            proto: p.proto,
        };
        let mut matched = false;
        for door in 0..self.doors.len() {
            let rule = &self.doors[door];
            // Rule 1: only doors that use this knock anywhere in their sequences look at it.
            if !rule.enabled || !self.variants[door].iter().any(|(_, s)| s.contains(&step)) {
                continue;
            }
            let to_us = match rule.target {
                Some(t) => t == p.dst,
                None => self.local.is_empty() || self.local.contains(&p.dst),
            };
            // TCP packets with other flags are ignored, as knockd does; rule 7: on a guarded
            // door only a connection attempt (SYN without ACK) is a TCP knock.
            let connection_attempt = p.tcp_flags & (flag::SYN | flag::ACK) == flag::SYN;
            let flags_ok = p.proto == Proto::Udp
                || (rule.tcp_flags.matches(p.tcp_flags)
                    && (!self.guarded(door) || connection_attempt));
            if to_us && flags_ok && self.knock(door, step, p, now, out) != Outcome::Nothing {
                matched = true;
            }
        }
        // Rule 6: a new connection to this host that was no knock is a stray.
        let new_connection =
            p.proto == Proto::Udp || p.tcp_flags & (flag::SYN | flag::ACK) == flag::SYN;
        let this_host = self.local.is_empty()
            || self.local.contains(&p.dst)
            || self.doors.iter().any(|d| d.target == Some(p.dst));
        if matched || !new_connection || !this_host || !self.watching(p.src) {
            return;
        }
        let strays = match self.strays.iter_mut().find(|(s, _)| *s == p.src) {
            Some((_, ports)) => ports,
            None => {
                self.strays.push((p.src, Vec::new()));
                &mut self.strays.last_mut().expect("just pushed").1
            }
        };
        if !strays.contains(&(p.proto, p.dport)) {
            strays.push((p.proto, p.dport));
        }
        let n = strays.len();
        if n < self.settings.sweep_threshold {
            return;
        }
        // A scanner: its guarded attempts end, and it is penalised (at most max_attempts
        // sources are remembered; the oldest penalty goes first).
        out.push(MatchEvent::Scanner {
            src: p.src,
            strays: n,
        });
        for door in 0..self.doors.len() {
            if !self.guarded(door) {
                continue;
            }
            if let Some(i) = self.find(p.src, door) {
                let a = self.remove(i);
                out.push(MatchEvent::Swept {
                    src: p.src,
                    door,
                    stage: a.stage,
                });
            }
        }
        self.strays.retain(|(s, _)| *s != p.src);
        let known = self.penalised.iter().any(|(s, _)| *s == p.src);
        if self.penalised.len() >= self.settings.max_attempts.max(1) && !known {
            self.penalised.remove(0);
        }
        self.penalised.retain(|(s, _)| *s != p.src);
        self.penalised
            .push((p.src, now + self.settings.sweep_penalty));
    }

    /// One door's view of a packet that is one of its knocks.
    fn knock(
        &mut self,
        door: usize,
        step: Step,
        p: &Packet,
        now: Instant,
        out: &mut Vec<MatchEvent>,
    ) -> Outcome {
        let rule = self.doors[door].clone();
        let src = p.src;
        if let Some(i) = self.find(src, door) {
            let stage = self.attempts[i].stage;
            let variant = self.attempts[i].variant;
            let seq = self.seq(door, variant).cloned().unwrap_or_default();
            let of = seq.len();
            let flows = &self.attempts[i].flows;
            let recent = &flows[flows.len().saturating_sub(REMEMBERED_FLOWS)..];
            if now >= self.deadline(&self.attempts[i]) {
                // Rule 4: a packet after the deadline finds the attempt timed out.
                self.remove(i);
                out.push(MatchEvent::Timeout { src, door, stage });
            } else if recent.contains(&(p.sport, p.dport)) {
                // Rule 2: a flow that already counted is ignored.
                return Outcome::Repeat;
            } else if seq[stage] == step {
                // Rule 5: a door holds at most half of what the other doors' advanced
                // attempts leave of the table; a knock that would advance one more is refused
                // and ends the attempt.
                if stage + 1 == 2 && stage + 1 < of && !self.room_to_advance(door) {
                    self.remove(i);
                    out.push(MatchEvent::Refused {
                        src,
                        door,
                        reason: Refusal::DoorShare,
                    });
                    return Outcome::Counted;
                }
                let a = &mut self.attempts[i];
                a.stage += 1;
                a.flows.push((p.sport, p.dport));
                if stage == 1 {
                    self.changed(src);
                }
                out.push(MatchEvent::Stage {
                    src,
                    door,
                    stage: stage + 1,
                    of,
                });
                if stage + 1 == of {
                    self.remove(i);
                    self.complete(&rule, door, variant, src, out);
                }
                return Outcome::Counted;
            } else {
                // Rule 3: a wrong knock resets, then counts as a first knock below.
                self.remove(i);
                out.push(MatchEvent::Reset {
                    src,
                    door,
                    stage,
                    got: step,
                });
            }
        }
        self.first_knock(&rule, door, step, p, now, out)
    }

    fn room_to_advance(&self, door: usize) -> bool {
        let advanced = |mine: bool| {
            self.attempts
                .iter()
                .filter(|a| a.stage >= 2 && (a.door == door) == mine)
                .count()
        };
        let cap = self.settings.max_attempts.max(1);
        advanced(true) < (cap.saturating_sub(advanced(false)) / 2).max(1)
    }

    /// A sequence completed: it opens, unless a rotating door's variant already opened for
    /// another source (on any door sharing the secret, the replay key).
    fn complete(
        &mut self,
        rule: &DoorRule,
        door: usize,
        variant: u64,
        src: IpAddr,
        out: &mut Vec<MatchEvent>,
    ) {
        let doors = &self.doors;
        let first = self
            .used
            .iter()
            .find(|((d, v), _)| {
                *v == variant && doors[*d].replay_guard && doors[*d].replay_key == rule.replay_key
            })
            .map(|(_, s)| *s);
        if rule.replay_guard && first.is_some_and(|f| f != src) {
            out.push(MatchEvent::Refused {
                src,
                door,
                reason: Refusal::Replay,
            });
            return;
        }
        let recorded = self.used.iter().any(|(k, _)| *k == (door, variant));
        if rule.replay_guard && !recorded {
            self.used.push(((door, variant), src));
        }
        out.push(MatchEvent::Open { src, door });
    }

    fn first_knock(
        &mut self,
        rule: &DoorRule,
        door: usize,
        step: Step,
        p: &Packet,
        now: Instant,
        out: &mut Vec<MatchEvent>,
    ) -> Outcome {
        let src = p.src;
        // A first knock of the first (preferred) variant that starts with it.
        let Some((variant, of)) = self.variants[door]
            .iter()
            .find(|(_, s)| s.first() == Some(&step))
            .map(|(v, s)| (*v, s.len()))
        else {
            return Outcome::Nothing;
        };
        // Rule 6: the penalty keeps a scanner off guarded doors with a fixed sequence only;
        // rotating doors' knocks prove a secret.
        if self.guarded(door) && !rule.replay_guard && self.is_penalised(src, now) {
            out.push(MatchEvent::Refused {
                src,
                door,
                reason: Refusal::Scanner,
            });
            return Outcome::Nothing;
        }
        if of == 1 {
            out.push(MatchEvent::Stage {
                src,
                door,
                stage: 1,
                of,
            });
            self.complete(rule, door, variant, src, out);
            return Outcome::Counted;
        }
        if let Err(reason) = self.make_room(self.net(src), out) {
            out.push(MatchEvent::Refused { src, door, reason });
            return Outcome::Nothing;
        }
        out.push(MatchEvent::Stage {
            src,
            door,
            stage: 1,
            of,
        });
        self.attempts.push(ModelAttempt {
            src,
            door,
            stage: 1,
            started: now,
            id: self.next_id,
            flows: vec![(p.sport, p.dport)],
            variant,
        });
        self.next_id += 1;
        self.changed(src);
        Outcome::Counted
    }

    /// Rule 5: a network holds at most `per_network` attempts and the table `max_attempts`;
    /// to make room, only a stage-1 attempt may go: the oldest of the own network when it is
    /// full, else of the network with the most stage-1 attempts (the own one on a tie, the
    /// one that has held that many longest between others), or the oldest of the table when no network holds
    /// more than one (and the own network none).
    fn make_room(&mut self, own: u128, out: &mut Vec<MatchEvent>) -> Result<(), Refusal> {
        let in_net = |m: &Model, net: u128, stage1: bool| {
            m.attempts
                .iter()
                .filter(|a| m.net(a.src) == net && (!stage1 || a.stage == 1))
                .count()
        };
        let (victim_net, refusal) = if in_net(self, own, false) >= self.settings.per_network.max(1)
        {
            (Some(own), Refusal::NetworkFull)
        } else if self.attempts.len() >= self.settings.max_attempts.max(1) {
            let mut nets: Vec<u128> = self.attempts.iter().map(|a| self.net(a.src)).collect();
            nets.sort();
            let heaviest = nets
                .iter()
                .map(|&n| {
                    (
                        in_net(self, n, true),
                        std::cmp::Reverse(self.changed_at(n)),
                        n,
                    )
                })
                .filter(|&(c, _, _)| c > 0)
                .max();
            let victim = match heaviest {
                Some((1, _, _)) if in_net(self, own, true) < 1 => None,
                Some((most, _, net)) if in_net(self, own, true) < most => Some(net),
                _ => Some(own),
            };
            (victim, Refusal::TableFull)
        } else {
            return Ok(());
        };
        let oldest = (0..self.attempts.len())
            .filter(|&i| {
                self.attempts[i].stage == 1
                    && victim_net.is_none_or(|v| self.net(self.attempts[i].src) == v)
            })
            .min_by_key(|&i| self.attempts[i].id);
        let Some(i) = oldest else {
            return Err(refusal);
        };
        let a = self.remove(i);
        out.push(MatchEvent::Evicted {
            src: a.src,
            door: a.door,
            stage: a.stage,
        });
        Ok(())
    }

    /// Rule 4: at its deadline an attempt times out (door by door, earliest deadline first);
    /// penalties end at theirs.
    fn expire(&mut self, now: Instant, out: &mut Vec<MatchEvent>) {
        self.penalised.retain(|&(_, until)| until > now);
        for door in 0..self.doors.len() {
            let mut due: Vec<(Instant, u64)> = self
                .attempts
                .iter()
                .filter(|a| a.door == door && self.deadline(a) <= now)
                .map(|a| (a.started, a.id))
                .collect();
            due.sort();
            for (_, id) in due {
                if let Some(i) = self.attempts.iter().position(|a| a.id == id) {
                    let a = self.remove(i);
                    out.push(MatchEvent::Timeout {
                        src: a.src,
                        door,
                        stage: a.stage,
                    });
                }
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

/// Sources: two in one IPv4 /24, one in another, two in one IPv6 /64.
fn ip(i: u8) -> IpAddr {
    const SOURCES: [&str; 5] = ["10.0.0.1", "10.0.0.2", "10.0.1.1", "fd00::3", "fd00::4"];
    SOURCES[usize::from(i) % SOURCES.len()].parse().expect("ip")
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
        TcpFlags {
            set: flag::ACK,
            unset: 0,
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
        prop::bool::weighted(0.7),
    )
        .prop_map(
            |(sequence, ms, tcp_flags, target, enabled, sweep_guard)| DoorRule {
                sequence,
                seq_timeout: Duration::from_millis(ms),
                tcp_flags,
                target: target.map(dst),
                enabled,
                sweep_guard,
                replay_guard: false,
                replay_key: 0,
            },
        )
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
    /// A rotating door's window moves to the variants `ids` (each id always stands for the
    /// same sequence of the case's pool, like a TOTP step), `after` ms later.
    Rotate {
        after: u64,
        door: usize,
        ids: Vec<u8>,
    },
    /// `count` knocks of pool sequence `id` (a rotating door's step), `gap` ms apart.
    PlayPool {
        id: u8,
        src: u8,
        dst: u8,
        count: usize,
        sport: u16,
        gap: u64,
    },
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
            flag::FIN,
            0,
            flag::FIN | flag::PSH | flag::URG,
            flag::SYN | flag::FIN,
            flag::SYN | flag::RST,
        ])
    };
    prop_oneof![
        4 => (0u64..8, 0u8..5, 0u8..2, 1000u16..1003, port, any::<bool>(), flags()).prop_map(
            |(after, src, dst, sport, port, udp, flags)| Op::Packet {
                after, src, dst, sport, port, udp, flags
            }
        ),
        4 => (0usize..4, 0u8..5, 0u8..2, 0usize..8, 1usize..9, 1000u16..1010, 0u64..10, flags())
            .prop_map(|(door, src, dst, from, count, sport, gap, flags)| Op::Play {
                door, src, dst, from, count, sport, gap, flags
            }),
        2 => (1usize..10, 0u64..5).prop_map(|(back, after)| Op::Repeat { back, after }),
        1 => (0u64..30).prop_map(|after| Op::Expire { after }),
        1 => (0u64..20, 0usize..4, prop::collection::vec(0u8..5, 0..4))
            .prop_map(|(after, door, ids)| Op::Rotate { after, door, ids }),
        2 => (0u8..5, 0u8..5, 0u8..2, 1usize..9, 1000u16..1010, 0u64..10)
            .prop_map(|(id, src, dst, count, sport, gap)| Op::PlayPool {
                id, src, dst, count, sport, gap
            }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    doors: Vec<DoorRule>,
    settings: Settings,
    local: bool,
    ops: Vec<Op>,
    /// Sequences of rotating doors' variants: id `i` is `pool[i % len]`.
    pool: Vec<Vec<Step>>,
}

fn case() -> impl Strategy<Value = Case> {
    let settings = (
        1usize..7,
        1usize..7,
        prop::sample::select(vec![24u8, 32]),
        prop::sample::select(vec![0usize, 1, 2, 3]),
        1u64..80,
    )
        .prop_map(
            |(max_attempts, per_network, prefix_v4, sweep_threshold, penalty)| Settings {
                max_attempts,
                per_network,
                prefix_v4,
                prefix_v6: 64,
                sweep_threshold,
                sweep_penalty: Duration::from_millis(penalty),
            },
        );
    (
        prop::collection::vec((door(), prop::bool::weighted(0.3), 1u64..3), 1..4),
        settings,
        any::<bool>(),
        prop::collection::vec(op(), 1..60),
        prop::collection::vec(prop::collection::vec(step(), 2..5), 1..4),
    )
        .prop_map(|(doors, settings, local, ops, pool)| Case {
            // Some doors are rotating: their sequences come from Rotate ops.
            doors: doors
                .into_iter()
                .map(|(mut d, rotating, key)| {
                    d.replay_guard = rotating;
                    d.replay_key = key;
                    d
                })
                .collect(),
            settings,
            local,
            ops,
            pool,
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

#[derive(Debug)]
enum Action {
    Packet(Packet),
    Expire,
    Rotate(usize, Vec<(u64, Vec<Step>)>),
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let mut real = Matcher::with_settings(case.doors.clone(), case.settings);
    let mut model = Model {
        doors: case.doors.clone(),
        settings: case.settings,
        local: Vec::new(),
        attempts: Vec::new(),
        next_id: 0,
        changed: Vec::new(),
        changes: 0,
        strays: Vec::new(),
        penalised: Vec::new(),
        variants: case
            .doors
            .iter()
            .map(|d| {
                if d.sequence.is_empty() {
                    Vec::new()
                } else {
                    vec![(0, d.sequence.clone())]
                }
            })
            .collect(),
        used: Vec::new(),
    };
    if case.local {
        real.set_local_addrs([dst(0)]);
        model.local = vec![dst(0)];
    }
    let mut now = Instant::now();
    // Expand the ops into timed packets and timer firings.
    let mut steps: Vec<(u64, Action)> = Vec::new();
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
                steps.push((after, Action::Packet(p)));
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
                    steps.push((gap, Action::Packet(p)));
                }
            }
            Op::Repeat { back, after } => {
                if let Some(p) = sent.len().checked_sub(back).map(|i| sent[i]) {
                    sent.push(p);
                    steps.push((after, Action::Packet(p)));
                }
            }
            Op::Expire { after } => steps.push((after, Action::Expire)),
            Op::Rotate {
                after,
                door,
                ref ids,
            } => {
                let door = door % case.doors.len();
                if case.doors[door].replay_guard {
                    let mut seen = Vec::new();
                    let variants: Vec<(u64, Vec<Step>)> = ids
                        .iter()
                        .filter(|id| {
                            let new = !seen.contains(*id);
                            seen.push(**id);
                            new
                        })
                        // Variant 0 is the door's initial static sequence: rotating ids start at 1.
                        .map(|&id| {
                            (
                                u64::from(id) + 1,
                                case.pool[usize::from(id) % case.pool.len()].clone(),
                            )
                        })
                        .collect();
                    steps.push((after, Action::Rotate(door, variants)));
                }
            }
            Op::PlayPool {
                id,
                src,
                dst: d,
                count,
                sport,
                gap,
            } => {
                let seq = &case.pool[usize::from(id) % case.pool.len()];
                for k in 0..count {
                    let step = seq[k % seq.len()];
                    let p = packet(src, d, sport.wrapping_add(k as u16), step, flag::SYN);
                    sent.push(p);
                    steps.push((gap, Action::Packet(p)));
                }
            }
        }
    }
    for (i, (after, pkt)) in steps.iter().enumerate() {
        now += Duration::from_millis(*after);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        match pkt {
            Action::Packet(p) => {
                real.on_packet(p, now, &mut got);
                model.on_packet(p, now, &mut want);
            }
            Action::Expire => {
                real.expire(now, &mut got);
                model.expire(now, &mut want);
            }
            Action::Rotate(door, variants) => {
                real.set_variants(*door, variants.clone());
                model.set_variants(*door, variants.clone());
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
