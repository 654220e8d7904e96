//! Reloads prepared off the engine task: applied as prepared when the config in force is
//! still the one they were prepared against, rebuilt on the engine when it is not.

use super::Engine;
use crate::action::RecordingExecutor;
use crate::config;
use crate::firewall::fake::RecordingFirewall;
use crate::knocklog::MemoryLog;
use crate::packet::Packet;
use crate::reload::{self, Snapshot};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const A: &str = "[keep]\n  sequence = 7000,8000,9000\n  command = /bin/true %IP%\n\
[gone]\n  sequence = 7100,8100,9100\n  command = /bin/true %IP%\n";
/// A's doors in the other order: the kept door's index changes.
const A2: &str = "[gone]\n  sequence = 7100,8100,9100\n  command = /bin/true %IP%\n\
[keep]\n  sequence = 7000,8000,9000\n  command = /bin/true %IP%\n";
const B: &str = "[new]\n  sequence = 7200,8200\n  command = /bin/true %IP%\n\
[keep]\n  sequence = 7000,8000,9000\n  command = /bin/true %IP%\n";

fn parse(text: &str) -> config::Loaded {
    config::parse(text, "knockd.conf")
}

fn engine() -> (Engine<RecordingExecutor, MemoryLog>, MemoryLog) {
    let log = MemoryLog::default();
    let e = Engine::new(
        parse(A).expect("config").config,
        PathBuf::from("/nonexistent/knockd.conf"),
        RecordingExecutor::default(),
        Arc::new(RecordingFirewall::default()),
        log.clone(),
        Box::new(|_| {}),
    );
    (e, log)
}

fn knock(e: &mut Engine<RecordingExecutor, MemoryLog>, port: u16, sport: u16) {
    let p = Packet {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
        dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        proto: config::Proto::Tcp,
        sport,
        dport: port,
        tcp_flags: config::flag::SYN,
        tcp_seq: 1,
    };
    e.on_packet(&p, super::now());
}

fn snapshot(e: &Engine<RecordingExecutor, MemoryLog>) -> Snapshot {
    Snapshot {
        config: e.config.clone(),
        local: e.filter.local().to_vec(),
    }
}

/// An attempt on a door the reload keeps (same name and sequence, another index) carries on,
/// whether the reload was prepared against the config in force or against one that another
/// reload replaced meanwhile (then the engine rebuilds what was prepared).
#[tokio::test]
async fn prepared_reloads_keep_attempts_and_survive_a_stale_snapshot() {
    for stale in [false, true] {
        let (mut e, log) = engine();
        knock(&mut e, 7000, 40_001);
        knock(&mut e, 8000, 40_002);
        let prepared = reload::prepare(parse(B), Path::new("knockd.conf"), Some(snapshot(&e)));
        assert!(prepared.work.is_some());
        if stale {
            // Another reload lands first and moves the kept door: what was prepared against
            // A would map the wrong doors.
            e.reload_with(parse(A2)).expect("reload A2");
        }
        let warnings = e.reload_prepared(prepared).expect("reload B");
        assert!(
            warnings.iter().all(|w| !w.contains("error")),
            "{warnings:?}"
        );
        assert_eq!(e.config.doors.len(), 2);
        assert_eq!(e.matcher.len(), 1, "stale = {stale}");
        knock(&mut e, 9000, 40_003);
        assert!(
            log.lines()
                .iter()
                .any(|l| l == "10.0.0.7: keep: OPEN SESAME"),
            "stale = {stale}: {:?}",
            log.lines()
        );
        // The new door works, the removed one is gone.
        knock(&mut e, 7200, 40_004);
        knock(&mut e, 8200, 40_005);
        knock(&mut e, 7100, 40_006);
        let lines = log.lines();
        assert!(lines.iter().any(|l| l == "10.0.0.7: new: OPEN SESAME"));
        assert!(
            !lines.iter().any(|l| l.contains("gone: Stage")),
            "{lines:?}"
        );
    }
}
