//! What applying a reload of 100,000 doors costs the engine task (ignored: meaningful in
//! release only). Run:
//! `cargo test --release -p knockd --lib reload_cost -- --ignored --nocapture`

use super::Engine;
use crate::action::RecordingExecutor;
use crate::config;
use crate::firewall::fake::RecordingFirewall;
use crate::knocklog::MemoryLog;
use crate::reload;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `n` doors of three knocks; `shift` moves every port (a reload that changes every door).
fn conf(n: u32, shift: u32) -> String {
    let mut s = String::from("[options]\n  MaxAttempts = 1000\n");
    for i in 0..n {
        let p = |k: u32| 1 + (i * 3 + k + shift) % 65_000;
        s.push_str(&format!(
            "[d{i}]\n  sequence = {},{},{}\n  command = /bin/true %IP%\n",
            p(0),
            p(1),
            p(2)
        ));
    }
    s
}

/// CPU time of this thread (what the engine task spends, whatever else the machine runs):
/// the first field of /proc/thread-self/schedstat, in nanoseconds.
fn cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn engine(config: config::Config) -> Engine<RecordingExecutor, MemoryLog> {
    Engine::new(
        config,
        PathBuf::from("/nonexistent/knockd.conf"),
        RecordingExecutor::default(),
        Arc::new(RecordingFirewall::default()),
        MemoryLog::default(),
        Box::new(|_| {}),
    )
}

fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

#[tokio::test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
async fn reload_cost() {
    let first = config::parse(&conf(100_000, 0), "a.conf").expect("config");
    let mut e = engine(first.config);
    let path = std::path::Path::new("b.conf");
    let (mut before, mut before_cpu, mut after, mut after_cpu, mut off) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Alternately the same doors and every door changed.
    for round in 0..8 {
        let shift = if round % 2 == 0 { 7 } else { 0 };
        // As the engine applied it before (only the parse off the task; warnings bounded).
        let parsed = config::parse(&conf(100_000, shift), "b.conf");
        let unprepared = reload::prepare(parsed, path, None);
        let (t, c) = (Instant::now(), cpu());
        let r = e.reload_prepared(unprepared);
        before.push(t.elapsed());
        before_cpu.push(cpu() - c);
        assert!(r.is_ok(), "{r:?}");
        // Let the retired tables be freed before measuring again.
        std::thread::sleep(Duration::from_millis(1500));
        // Prepared off the engine task, against the config in force.
        let parsed = config::parse(&conf(100_000, shift + 1), "b.conf");
        let snapshot = reload::Snapshot {
            config: e.config.clone(),
            local: e.filter.local().to_vec(),
        };
        let t = Instant::now();
        let prepared = reload::prepare(parsed, path, Some(snapshot));
        off.push(t.elapsed());
        let (t, c) = (Instant::now(), cpu());
        let r = e.reload_prepared(prepared);
        after.push(t.elapsed());
        after_cpu.push(cpu() - c);
        assert!(r.is_ok(), "{r:?}");
        std::thread::sleep(Duration::from_millis(1500));
    }
    println!(
        "reload of 100000 doors, engine time, median/worst of 8: applied on the engine: wall {:?}, cpu {:?}; \
         prepared off it: wall {:?}, cpu {:?} (preparing: {:?} on the reload thread)",
        median_max(before),
        median_max(before_cpu),
        median_max(after),
        median_max(after_cpu),
        median_max(off)
    );
}
