//! Single-packet knocks on one core, and what an enrolled client costs in memory.
//!
//!     cargo bench -p knockd --bench spa
//!
//! Against a gate with 10,000 enrolled clients (their hints for the five 30 s epochs around
//! now: 50,000 entries):
//! - `forged/random`: a random packet of the right length (what a flood of forged packets
//!   to the SPA port is): refused by the hint lookup, no AEAD, no public-key operation;
//! - `forged/short`: a datagram of the wrong length;
//! - `replayed`: a real client's packet seen again (passes the hint and the AEAD, refused by
//!   the replay memory: the costliest refusal without a signature check).
//!
//! Before the benchmarks it prints the memory an enrolled client costs: the growth of the
//! process's resident set (`VmRSS` of `/proc/self/status`) while a gate enrolls 10,000 and then 100,000
//! clients, divided by the count, beside the gate's own estimate (`bytes_per_client`).

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use knock_ipc::spa::{Body, ClientKey, ClientRecord, DoorId, Op, ServerKey, PACKET_LEN};
use knockd::config::Config;
use knockd::spa::{Gate, Verdict};

const NOW: u64 = 1_800_000_000_000;
const CLIENTS: u32 = 10_000;

fn config() -> Config {
    knockd::config::parse(
        "[ssh]\n SPA = client0, client1\n Open = 22/tcp\n",
        "bench.conf",
    )
    .expect("config")
    .config
}

fn server() -> ServerKey {
    ServerKey::from_bytes([1; 32])
}

fn client(i: u32, server: &ServerKey) -> ClientKey {
    let mut x = [7u8; 32];
    x[..4].copy_from_slice(&i.to_be_bytes());
    let mut s = [9u8; 32];
    s[..4].copy_from_slice(&i.to_be_bytes());
    ClientKey::from_bytes(&format!("client{i}"), x, s, server.public())
}

fn records(n: u32) -> Vec<ClientRecord> {
    let server = server();
    (0..n).map(|i| client(i, &server).record()).collect()
}

/// xorshift64*: random-looking bytes without a dependency.
fn random_packets(n: usize, len: usize) -> Vec<Vec<u8>> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| {
                    s ^= s >> 12;
                    s ^= s << 25;
                    s ^= s >> 27;
                    (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
                })
                .collect()
        })
        .collect()
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or(0)
        * 1024
}

/// Resident-set growth per enrolled client (the records, made beforehand, are not counted).
fn memory() {
    for n in [10_000u32, 100_000] {
        let recs = records(n);
        let before = rss_bytes();
        let gate = Gate::from_parts(&config(), server(), &recs, NOW);
        let after = rss_bytes();
        let per = after.saturating_sub(before) as f64 / f64::from(n);
        eprintln!(
            "spa memory: {n} clients enrolled: RSS +{:.1} MiB = {per:.0} bytes per client (the gate's estimate: {} bytes)",
            after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
            gate.bytes_per_client()
        );
        black_box(&gate);
    }
}

fn refusals(c: &mut Criterion) {
    let src: IpAddr = "192.0.2.7".parse().expect("addr");
    let forged = random_packets(4096, PACKET_LEN);
    let short = random_packets(4096, 60);
    let mut g = c.benchmark_group("spa");
    g.throughput(Throughput::Elements(1));
    for (name, set) in [("forged/random", &forged), ("forged/short", &short)] {
        let mut gate_copy = gate();
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new(name, CLIENTS), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                let v = gate_copy.on_packet(src, black_box(&set[i]), NOW);
                debug_assert!(matches!(v, Verdict::Refused { .. }));
                black_box(v)
            })
        });
    }
    // A real packet, accepted once, then seen again and again.
    let server = server();
    let alice = client(0, &server);
    let body = Body {
        ts_ms: NOW,
        op: Op::Open,
        addr: None,
        timeout_secs: 0,
        door: DoorId::ANY,
    };
    let p = alice.packet(&body, &[5; 24]).expect("packet");
    let mut replays = gate();
    assert!(matches!(
        replays.on_packet(src, &p, NOW),
        Verdict::Open { .. }
    ));
    g.bench_function(BenchmarkId::new("replayed", CLIENTS), |b| {
        b.iter(|| black_box(replays.on_packet(src, black_box(&p), NOW)))
    });
    g.finish();
}

/// A gate with `CLIENTS` enrolled, fenced a second before `NOW`.
fn gate() -> Gate {
    Gate::from_parts(&config(), server(), &records(CLIENTS), NOW - 1000)
}

criterion_group!(benches, refusals);

fn main() {
    memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
