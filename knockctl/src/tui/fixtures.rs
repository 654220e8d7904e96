//! Test data: a small daemon's worth of doors, events and lists, at a fixed time.

use chrono::FixedOffset;
use knock_ipc::{
    AttemptInfo, Counters, DoorInfo, Event, EventKind, GrantInfo, Request, Response, Status,
};

use super::state::State;

/// 2026-09-22 14:59:16 UTC.
pub const T0: i64 = 1_790_089_156_000;

pub fn ip(s: &str) -> std::net::IpAddr {
    s.parse().expect("test address")
}

pub fn state() -> State {
    State::new(true, FixedOffset::east_opt(0).expect("utc"))
}

pub fn ev(at: i64, kind: EventKind) -> Event {
    Event {
        at_unix_ms: at,
        kind,
    }
}

pub fn stage(at: i64, addr: &str, door: &str, stage: u32, of: u32) -> Event {
    ev(
        at,
        EventKind::Stage {
            addr: ip(addr),
            door: door.into(),
            stage,
            of,
        },
    )
}

pub fn grant(addr: &str, door: &str, opened_at: i64, expires_in_ms: Option<u64>) -> GrantInfo {
    GrantInfo {
        door: door.into(),
        addr: ip(addr),
        opened: "22/tcp (INPUT)".into(),
        opened_at_unix_ms: opened_at,
        expires_in_ms,
        closes: "native rule delete".into(),
        refreshes: 0,
        kernel_expires_in_ms: None,
        closing: false,
        close_error: None,
        client: None,
    }
}

pub fn doors() -> Vec<DoorInfo> {
    let door = |name: &str, sequence: &[&str], seq_s: u64, cmd_s: u64, one_time: bool| DoorInfo {
        name: name.into(),
        sequence: sequence.iter().map(|s| s.to_string()).collect(),
        seq_timeout_ms: seq_s * 1000,
        cmd_timeout_ms: cmd_s * 1000,
        tcp_flags: "syn".into(),
        action: "open 22/tcp (INPUT)".into(),
        one_time,
        enabled: true,
        target: None,
        kind: if one_time { "one-time" } else { "static" }.into(),
        step: None,
        knocks: sequence.len() as u32,
        sequence_hidden: false,
        step_secs: None,
        next_step_in_ms: None,
    };
    vec![
        door(
            "openSSH",
            &["7000:tcp", "8000:tcp", "9000:tcp"],
            5,
            30,
            false,
        ),
        door("vault", &["1111:udp", "2222:tcp"], 10, 0, false),
        door("backup", &[], 5, 10, true),
    ]
}

pub fn status() -> Status {
    Status {
        daemon_version: "0.1.0".into(),
        pid: 4242,
        uptime_secs: 7_530,
        interfaces: vec!["eth0".into()],
        config_file: "/etc/knockd.conf".into(),
        doors: 3,
        attempts: 2,
        max_attempts: 10_000,
        grants: 2,
        counters: Counters {
            packets: 1_234,
            stages: 57,
            opens: 12,
            resets: 3,
            timeouts: 1,
            ..Counters::default()
        },
        firewall: "iptables".into(),
        spa: Default::default(),
        state_error: None,
        state_error_since_unix_ms: None,
    }
}

/// Connected, with status and doors, nothing going on.
pub fn connected() -> State {
    let mut s = state();
    s.on_connected("0.1.0".into(), T0 - 10_000);
    s.on_response(
        &Request::Doors,
        Response::Doors { doors: doors() },
        T0 - 10_000,
    );
    s.on_response(
        &Request::Status,
        Response::Status { status: status() },
        T0 - 10_000,
    );
    s
}

/// Two attempts in progress, one just reset, one just opened; two grants.
pub fn busy() -> State {
    let mut s = connected();
    s.on_event(stage(T0 - 1_500, "10.0.0.12", "openSSH", 1, 3), T0 - 1_500);
    s.on_event(stage(T0 - 800, "10.0.0.12", "openSSH", 2, 3), T0 - 800);
    s.on_event(stage(T0 - 600, "fd99:77::2", "vault", 1, 2), T0 - 600);
    s.on_event(stage(T0 - 3_000, "192.0.2.7", "openSSH", 1, 3), T0 - 3_000);
    s.on_event(
        ev(
            T0 - 400,
            EventKind::Reset {
                addr: ip("192.0.2.7"),
                door: "openSSH".into(),
                stage: 1,
            },
        ),
        T0 - 400,
    );
    s.on_event(stage(T0 - 20_000, "10.0.0.7", "vault", 1, 2), T0 - 20_000);
    s.on_event(stage(T0 - 19_000, "10.0.0.7", "vault", 2, 2), T0 - 19_000);
    s.on_event(
        ev(
            T0 - 19_000,
            EventKind::Open {
                addr: ip("10.0.0.7"),
                door: "vault".into(),
            },
        ),
        T0 - 19_000,
    );
    s.on_event(
        ev(
            T0 - 19_000,
            EventKind::GrantAdded {
                grant: grant("10.0.0.7", "vault", T0 - 19_000, None),
            },
        ),
        T0 - 19_000,
    );
    s.on_event(stage(T0 - 1_200, "10.0.0.99", "openSSH", 1, 3), T0 - 1_200);
    s.on_event(stage(T0 - 700, "10.0.0.99", "openSSH", 2, 3), T0 - 700);
    s.on_event(stage(T0 - 300, "10.0.0.99", "openSSH", 3, 3), T0 - 300);
    s.on_event(
        ev(
            T0 - 300,
            EventKind::Open {
                addr: ip("10.0.0.99"),
                door: "openSSH".into(),
            },
        ),
        T0 - 300,
    );
    s.on_event(
        ev(
            T0 - 300,
            EventKind::GrantAdded {
                grant: grant("10.0.0.99", "openSSH", T0 - 300, Some(30_000)),
            },
        ),
        T0 - 300,
    );
    s
}

pub fn attempt_info(
    addr: &str,
    door: &str,
    stage: u32,
    of: u32,
    age: u64,
    left: u64,
) -> AttemptInfo {
    AttemptInfo {
        addr: ip(addr),
        door: door.into(),
        stage,
        of,
        age_ms: age,
        remaining_ms: left,
    }
}

/// One host's calls, for the tests written before the fleet: host 0.
impl State {
    pub fn on_connected(&mut self, daemon_version: String, now: i64) {
        self.host_connected(0, daemon_version, now);
    }

    pub fn on_disconnected(&mut self, reason: String, retry_at_ms: i64, now: i64) {
        self.host_disconnected(0, reason, retry_at_ms, now);
    }

    pub fn on_event(&mut self, event: Event, now: i64) {
        self.host_event(0, event, now);
    }

    pub fn on_response(&mut self, request: &Request, response: Response, now: i64) {
        self.host_response(0, request, response, now);
    }

    pub fn uptime_secs(&self, now: i64) -> Option<u64> {
        self.hosts[0].uptime_secs(now)
    }
}

/// Three hosts: bastion1 (an attempt, a grant), node7 (a grant for the same address and
/// door as bastion1's, an attempt), vps-fra down with ssh's words; their events
/// interleaved.
pub fn fleet() -> State {
    let names = ["bastion1", "node7", "vps-fra"];
    let mut s = State::fleet(
        names.iter().map(|n| n.to_string()).collect(),
        true,
        FixedOffset::east_opt(0).expect("utc"),
    );
    for host in 0..3 {
        s.host_connected(host, "0.1.0".into(), T0 - 60_000);
        s.host_response(
            host,
            &Request::Doors,
            Response::Doors { doors: doors() },
            T0 - 60_000,
        );
        s.host_response(
            host,
            &Request::Status,
            Response::Status { status: status() },
            T0 - 10_000,
        );
    }
    s.host_disconnected(
        2,
        "ssh: connect to host vps-fra.example.net port 22: Connection refused".into(),
        T0 + 4_000,
        T0 - 5_000,
    );
    // Arrival order is not time order: node7's events come a little late.
    s.host_event(
        0,
        stage(T0 - 3_000, "203.0.113.7", "openSSH", 1, 3),
        T0 - 3_000,
    );
    s.host_event(
        0,
        stage(T0 - 2_000, "203.0.113.7", "openSSH", 2, 3),
        T0 - 2_000,
    );
    s.host_event(
        1,
        stage(T0 - 2_500, "198.51.100.4", "vault", 1, 2),
        T0 - 1_900,
    );
    s.host_event(
        0,
        ev(
            T0 - 1_000,
            EventKind::GrantAdded {
                grant: grant("10.0.0.7", "openSSH", T0 - 1_000, Some(30_000)),
            },
        ),
        T0 - 1_000,
    );
    s.host_event(
        1,
        ev(
            T0 - 1_500,
            EventKind::GrantAdded {
                grant: grant("10.0.0.7", "openSSH", T0 - 1_500, None),
            },
        ),
        T0 - 900,
    );
    s
}
