//! What answering `attempts` and `list` costs the engine task with large tables (ignored:
//! meaningful in release only). Run:
//! `cargo test --release -p knockd --lib reply_cost -- --ignored --nocapture`

use super::Engine;
use crate::action::RecordingExecutor;
use crate::config;
use crate::firewall::fake::RecordingFirewall;
use crate::grants::Close;
use crate::knocklog::MemoryLog;
use crate::packet::Packet;
use knock_ipc as ipc;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const CONF: &str =
    "[options]\n  MaxAttempts = 200000\n  MaxAttemptsPerNetwork = 200000\n  MaxGrants = 50000\n\
[door]\n  sequence = 7000,8000,9000\n  seq_timeout = 600\n  command = /bin/true %IP%\n";

fn engine() -> Engine<RecordingExecutor, MemoryLog> {
    let parsed = config::parse(CONF, "reply_cost.conf").expect("config");
    Engine::new(
        parsed.config,
        PathBuf::from("/nonexistent/knockd.conf"),
        RecordingExecutor::default(),
        Arc::new(RecordingFirewall::default()),
        MemoryLog::default(),
        Box::new(|_| {}),
    )
}

fn src(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// Median and worst of `runs` calls of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    (v[runs / 2], v[runs - 1])
}

#[tokio::test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
async fn reply_cost() {
    let mut e = engine();
    let at = super::now();
    for i in 0..100_000u32 {
        let p = Packet {
            src: src(i),
            dst: IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)),
            proto: config::Proto::Tcp,
            sport: 40_000,
            dport: 7000,
            tcp_flags: config::flag::SYN,
            tcp_seq: 1,
        };
        e.on_packet(&p, at);
    }
    assert_eq!(e.matcher.len(), 100_000);
    let (med, max) = time(20, || {
        let r = e.on_request(ipc::Request::Attempts);
        assert!(matches!(r, ipc::Response::Attempts { .. }));
    });
    println!("attempts with 100000 attempts: median {med:?}, worst {max:?}");

    let wall = SystemTime::now();
    for i in 0..20_000u32 {
        e.ledger.insert(
            "door",
            src(i),
            "/bin/true".into(),
            wall,
            Some(at + Duration::from_secs(3600)),
            Close::StopCommand {
                command: format!("/bin/true {}", src(i)),
            },
        );
    }
    let (med, max) = time(20, || {
        let r = e.on_request(ipc::Request::Grants);
        assert!(matches!(r, ipc::Response::Grants { .. }));
    });
    println!("list with 20000 grants: median {med:?}, worst {max:?}");
}
