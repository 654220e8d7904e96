//! A measurement, hand-run (see BENCHMARKS.md, "knockctl over many hosts"):
//! `cargo test -p knockctl --release --lib frame_time -- --ignored --nocapture`.
//!
//! One frame of the dashboard over 50 hosts that stream events: what the loop does between
//! two draws (apply the reports that arrived in one 33 ms frame: every host's events, and
//! the lists a few hosts' 1 s refresh brought) plus the draw itself, to ratatui's
//! `TestBackend` at 200x50. The dashboard draws at most one frame per 33 ms; a frame must
//! cost under 50 ms.

use std::time::{Duration, Instant};

use super::*;
use knock_ipc::{AttemptInfo, Event, GrantInfo};

const HOSTS: usize = 50;
/// Open grants and attempts in progress per host.
const GRANTS: usize = 40;
const ATTEMPTS: usize = 20;
/// Events per host per second (knocks, opens, grants).
const EVENTS_PER_SEC: usize = 100;
const FRAME_MS: i64 = 33;
const FRAMES: usize = 300;

/// This thread's CPU time (user + system) so far, counted in scheduler ticks: over all
/// frames it says what a frame costs whatever else the machine runs (wall time under load
/// also counts waiting for a core).
fn cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::from_secs(tv.tv_sec().unsigned_abs())
                + Duration::from_micros(tv.tv_usec().unsigned_abs())
        };
        t(u.user_time()) + t(u.system_time())
    })
}

fn addr(host: usize, n: usize) -> std::net::IpAddr {
    std::net::IpAddr::from([10, host as u8, (n / 250) as u8, (n % 250 + 1) as u8])
}

fn grants_of(host: usize, now: i64) -> Vec<GrantInfo> {
    (0..GRANTS)
        .map(|n| {
            let mut g = grant(
                "10.0.0.1",
                "openSSH",
                now - 60_000 + n as i64,
                Some(600_000),
            );
            g.addr = addr(host, n);
            g
        })
        .collect()
}

fn attempts_of(host: usize) -> Vec<AttemptInfo> {
    (0..ATTEMPTS)
        .map(|n| {
            let mut a = attempt_info("10.0.0.1", "openSSH", 1, 3, 1_000, 4_000);
            a.addr = addr(host, 100 + n);
            a
        })
        .collect()
}

/// Host `host`'s `k`-th event at `at`: mostly knocks, some opens with their grant.
fn event(host: usize, k: usize, at: i64) -> Event {
    let a = addr(host, 200 + k % 40);
    match k % 10 {
        0..=6 => stage(at, &a.to_string(), "openSSH", (k % 3) as u32 + 1, 3),
        7 => ev(
            at,
            EventKind::Open {
                addr: a,
                door: "openSSH".into(),
            },
        ),
        8 => {
            let mut g = grant("10.0.0.1", "openSSH", at, Some(30_000));
            g.addr = a;
            ev(at, EventKind::GrantAdded { grant: g })
        }
        _ => {
            let mut g = grant("10.0.0.1", "openSSH", at, Some(30_000));
            g.addr = a;
            ev(at, EventKind::GrantExpired { grant: g })
        }
    }
}

#[test]
#[ignore = "a measurement: run by hand with --release"]
fn frame_time_with_fifty_hosts_streaming() {
    let names: Vec<String> = (0..HOSTS).map(|i| format!("node{i:02}")).collect();
    let mut s = State::fleet(names, true, chrono::FixedOffset::east_opt(0).expect("utc"));
    let mut now = T0;
    for host in 0..HOSTS {
        s.host_connected(host, "0.1.0".into(), now);
        let doors = Response::Doors { doors: doors() };
        s.host_response(host, &Request::Doors, doors, now);
        let status = Response::Status { status: status() };
        s.host_response(host, &Request::Status, status, now);
        let grants = grants_of(host, now);
        let total = grants.len() as u64;
        s.host_response(
            host,
            &Request::Grants,
            Response::Grants { grants, total },
            now,
        );
        let attempts = attempts_of(host);
        let total = attempts.len() as u64;
        let list = Response::Attempts { attempts, total };
        s.host_response(host, &Request::Attempts, list, now);
    }
    s.host_disconnected(
        7,
        "ssh: connect to host node07 port 22: No route to host".into(),
        now + 4_000,
        now,
    );
    let mut terminal = Terminal::new(TestBackend::new(200, 50)).expect("backend");
    let per_frame = HOSTS * EVENTS_PER_SEC * FRAME_MS as usize / 1000;
    let mut times = Vec::with_capacity(FRAMES);
    let mut draws = Vec::with_capacity(FRAMES);
    let cpu_started = cpu();
    let mut k = 0;
    for frame in 0..FRAMES {
        let started = Instant::now();
        // The frame's events, round robin over the hosts, a little out of time order.
        for e in 0..per_frame {
            let host = e % HOSTS;
            let at = now + (e as i64 * FRAME_MS) / per_frame as i64 - (host as i64 % 3) * 5;
            s.host_event(host, event(host, k, at), now);
            k += 1;
        }
        // The 1 s refresh: each host's status, attempts and grants once a second.
        for host in (0..HOSTS).filter(|h| (h + frame) % 30 == 0) {
            let status = Response::Status { status: status() };
            s.host_response(host, &Request::Status, status, now);
            let attempts = attempts_of(host);
            let total = attempts.len() as u64;
            let list = Response::Attempts { attempts, total };
            s.host_response(host, &Request::Attempts, list, now);
            let grants = grants_of(host, T0);
            let total = grants.len() as u64;
            s.host_response(
                host,
                &Request::Grants,
                Response::Grants { grants, total },
                now,
            );
        }
        if frame % 30 == 0 {
            s.on_tick(now);
        }
        let drawn = Instant::now();
        terminal.draw(|f| render(&s, f, now)).expect("draw");
        times.push(started.elapsed());
        draws.push(drawn.elapsed());
        now += FRAME_MS;
    }
    times.sort();
    draws.sort();
    let cpu_per_frame = cpu().saturating_sub(cpu_started) / FRAMES as u32;
    let pct = |p: usize| times[(times.len() - 1) * p / 100];
    let rows = (s.grants.len(), s.attempts.len(), s.log.len());
    eprintln!(
        "frame over {HOSTS} hosts at 200x50, {per_frame} events/frame, (grants, attempts, log) = {rows:?}: \
         wall p50 {:?}  p99 {:?}  max {:?} (of which drawing: p50 {:?}); \
         CPU {:?} a frame on average",
        pct(50),
        pct(99),
        times[times.len() - 1],
        draws[draws.len() / 2],
        cpu_per_frame,
    );
    assert!(pct(99) < Duration::from_millis(50), "p99 {:?}", pct(99));
}
