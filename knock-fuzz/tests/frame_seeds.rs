//! Writes the frame seed corpus (fuzz/seeds/frame/): one length-prefixed frame per sample
//! message of each direction, and a stream of several. Run after a protocol change:
//!
//!   cargo test -p knock-fuzz --test frame_seeds -- --ignored

use knock_ipc::codec::encode;
use knock_ipc::protocol::*;
use std::path::Path;

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(payload);
    out
}

fn grant() -> GrantInfo {
    GrantInfo {
        door: "openSSH".into(),
        addr: "10.0.0.12".parse().expect("ip"),
        opened: "22/tcp (INPUT)".into(),
        opened_at_unix_ms: 1_790_000_000_000,
        expires_in_ms: Some(30_000),
        closes: "native rule delete".into(),
        refreshes: 1,
        kernel_expires_in_ms: Some(29_000),
        closing: true,
        close_error: Some("iptables: exit status 1".into()),
        client: None,
    }
}

fn client_msgs() -> Vec<ClientMsg> {
    let mut v = vec![ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        client: "knockctl 0.1.0".into(),
    }];
    for request in [
        Request::Status,
        Request::Grants,
        Request::Attempts,
        Request::Doors,
        Request::Revoke {
            addr: "fd99:77::2".parse().expect("ip"),
            door: Some("vault".into()),
        },
        Request::Reload,
        Request::Subscribe,
    ] {
        v.push(ClientMsg::Request { request });
    }
    v
}

fn server_msgs() -> Vec<ServerMsg> {
    let event = |kind| ServerMsg::Event {
        event: Event {
            at_unix_ms: 1_790_000_000_000,
            kind,
        },
    };
    let addr: std::net::IpAddr = "192.0.2.7".parse().expect("ip");
    vec![
        ServerMsg::Hello {
            version: PROTOCOL_VERSION,
            daemon_version: "0.1.0".into(),
        },
        ServerMsg::Rejected {
            reason: "protocol version 0 is not 1".into(),
        },
        ServerMsg::Response {
            response: Response::Status {
                status: Status {
                    daemon_version: "0.1.0".into(),
                    interfaces: vec!["eth0".into()],
                    doors: 3,
                    ..Status::default()
                },
            },
        },
        ServerMsg::Response {
            response: Response::Grants {
                grants: vec![grant(), grant()],
                total: 2,
            },
        },
        ServerMsg::Response {
            response: Response::Attempts {
                attempts: vec![AttemptInfo {
                    addr,
                    door: "openSSH".into(),
                    stage: 1,
                    of: 3,
                    age_ms: 100,
                    remaining_ms: 24_900,
                }],
                total: 1,
            },
        },
        ServerMsg::Response {
            response: Response::Doors {
                doors: vec![DoorInfo {
                    name: "openSSH".into(),
                    sequence: vec!["7000:tcp".into(), "8000:udp".into()],
                    seq_timeout_ms: 25_000,
                    cmd_timeout_ms: 10_000,
                    tcp_flags: "syn".into(),
                    action: "open 22/tcp (INPUT)".into(),
                    one_time: false,
                    enabled: true,
                    target: None,
                    kind: "static".into(),
                    step: None,
                    knocks: 2,
                    sequence_hidden: false,
                    step_secs: None,
                    next_step_in_ms: None,
                }],
            },
        },
        ServerMsg::Response {
            response: Response::ReloadFailed {
                errors: vec!["knockd.conf:3: unknown key".into()],
            },
        },
        event(EventKind::Stage {
            addr,
            door: "openSSH".into(),
            stage: 2,
            of: 3,
        }),
        event(EventKind::GrantClosed {
            grant: grant(),
            by_door: "closeSSH".into(),
        }),
        event(EventKind::Lagged { missed: 12 }),
    ]
}

#[test]
#[ignore = "writes fuzz/seeds/frame; run by hand after a protocol change"]
fn write_frame_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/frame");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut stream = Vec::new();
    for (i, m) in client_msgs().iter().enumerate() {
        let f = framed(&encode(m).expect("encode"));
        stream.extend_from_slice(&f);
        std::fs::write(dir.join(format!("client-{i:02}")), f).expect("write");
    }
    for (i, m) in server_msgs().iter().enumerate() {
        let f = framed(&encode(m).expect("encode"));
        std::fs::write(dir.join(format!("server-{i:02}")), f).expect("write");
    }
    std::fs::write(dir.join("client-stream"), stream).expect("write");
    // A header announcing more than MAX_FRAME: refused before any buffer.
    std::fs::write(dir.join("oversize-header"), [0x7f, 0xff, 0xff, 0xff, 0, 0]).expect("write");
}
