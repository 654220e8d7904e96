//! Matcher throughput on one core: knocks per second with 1 and with 100,000 live attempts.
//!
//!     cargo bench -p knockd --bench matcher
//!
//! Three workloads, each against a table holding `live` attempts (the default MaxAttempts is
//! 100,000):
//! - `restart`: a first knock from a source that already has an attempt (a new flow, so it
//!   resets the attempt and starts it again): the spoofed door flood once every source has
//!   been seen;
//! - `new_source`: a first knock from a source never seen before, so the table is full and the
//!   oldest attempt is evicted: the spoofed door flood with fresh sources;
//! - `sequence`: one source knocks the whole sequence (7000, 8000, 9000 → Open) among the
//!   `live` others: the legitimate client.
//!
//! Every defence of the daemon's defaults is on: the sweep guard, eviction tiers, network
//! shares, door shares, and a rotating (TOTP) door beside the static one (its window set as
//! the engine sets it). Time is an input: every knock uses the same `Instant`, so nothing
//! expires.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use knockd::config::{flag, Proto, Step, TcpFlags};
use knockd::matcher::{DoorRule, MatchEvent, Matcher};
use knockd::packet::Packet;

const SEQUENCE: [u16; 3] = [7000, 8000, 9000];
const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 77, 1));
const LIVE: [usize; 2] = [1, 100_000];

/// A rotating door whose window holds the steps around `STEP` (ports 10000-59999).
fn totp_door() -> DoorRule {
    DoorRule {
        sequence: Vec::new(),
        seq_timeout: Duration::from_secs(5),
        tcp_flags: TcpFlags::default(),
        target: None,
        enabled: true,
        sweep_guard: true,
        replay_guard: true,
        replay_key: 1,
    }
}

const STEP: u64 = 59_000_000;

fn window() -> Vec<(u64, Vec<Step>)> {
    let spec = knock_ipc::totp::Spec {
        secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        step_secs: 30,
        knocks: 4,
        lo: 10000,
        hi: 59999,
        exclude: Vec::new(),
    };
    [STEP, STEP - 1, STEP + 1]
        .into_iter()
        .map(|step| {
            let seq = spec
                .ports(step)
                .into_iter()
                .map(|port| Step {
                    port,
                    proto: Proto::Tcp,
                })
                .collect();
            (step, seq)
        })
        .collect()
}

fn door() -> DoorRule {
    DoorRule {
        sequence: SEQUENCE
            .iter()
            .map(|&port| Step {
                port,
                proto: Proto::Tcp,
            })
            .collect(),
        seq_timeout: Duration::from_secs(5),
        tcp_flags: TcpFlags {
            set: flag::SYN,
            unset: 0,
        },
        target: None,
        enabled: true,
        sweep_guard: true,
        replay_guard: false,
        replay_key: 0,
    }
}

/// Source number `n` as an address in 10.0.0.0/8 (distinct for n < 2^24).
fn source(n: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n as u32 & 0x00ff_ffff)))
}

fn syn(src: IpAddr, sport: u16, dport: u16) -> Packet {
    Packet {
        src,
        dst: DST,
        proto: Proto::Tcp,
        sport,
        dport,
        tcp_flags: flag::SYN,
        tcp_seq: u32::from(sport),
    }
}

/// A matcher with `live` attempts (sources 0..live, one first knock each) and room for
/// `cap` attempts.
fn filled(live: usize, cap: usize, now: Instant) -> Matcher {
    let mut m = Matcher::new(vec![door(), totp_door()], cap);
    m.set_variants(1, window());
    let mut out = Vec::new();
    for n in 0..live as u64 {
        m.on_packet(&syn(source(n), 1024, SEQUENCE[0]), now, &mut out);
        out.clear();
    }
    assert_eq!(m.len(), live, "the table holds every first knock");
    m
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("matcher");
    group.throughput(Throughput::Elements(1));
    for live in LIVE {
        group.bench_function(BenchmarkId::new("restart", live), |b| {
            let mut m = filled(live, 100_000.max(live), now);
            let mut out: Vec<MatchEvent> = Vec::with_capacity(8);
            let mut k = 0u64;
            b.iter(|| {
                let n = k % live as u64;
                // A new source port each round, so no knock looks like a retransmission.
                let sport = 2048 + (k / live as u64) as u16;
                m.on_packet(
                    black_box(&syn(source(n), sport, SEQUENCE[0])),
                    now,
                    &mut out,
                );
                out.clear();
                k += 1;
            });
            assert_eq!(m.len(), live);
        });

        group.bench_function(BenchmarkId::new("new_source", live), |b| {
            let mut m = filled(live, live, now);
            let mut out: Vec<MatchEvent> = Vec::with_capacity(8);
            let mut n = live as u64;
            b.iter(|| {
                m.on_packet(black_box(&syn(source(n), 1024, SEQUENCE[0])), now, &mut out);
                out.clear();
                n += 1;
            });
            assert_eq!(m.len(), live);
        });

        group.bench_function(BenchmarkId::new("sequence", live), |b| {
            let mut m = filled(live, 100_000.max(live + 1), now);
            let mut out: Vec<MatchEvent> = Vec::with_capacity(8);
            let mut k = 0u64;
            let mut opens = 0u64;
            b.iter(|| {
                let src = source(live as u64 + k / 3);
                let port = SEQUENCE[(k % 3) as usize];
                m.on_packet(
                    black_box(&syn(src, 3000 + (k % 3) as u16, port)),
                    now,
                    &mut out,
                );
                opens += out
                    .iter()
                    .filter(|e| matches!(e, MatchEvent::Open { .. }))
                    .count() as u64;
                out.clear();
                k += 1;
            });
            assert_eq!(opens, k / 3, "every third knock opens the door");
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
