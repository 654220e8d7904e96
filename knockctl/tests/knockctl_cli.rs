//! End-to-end tests of the `knockctl` binary against an in-process fake knockd: a Unix
//! socket in a temporary directory that answers the handshake, then canned responses or a
//! few events. No root needed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use knock_ipc::codec::Connection;
use knock_ipc::{
    ClientMsg, Counters, Event, EventKind, GrantInfo, Request, Response, ServerMsg, Status,
    PROTOCOL_VERSION,
};
use tempfile::TempDir;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// 2026-09-22 14:59:16.201 UTC.
const T0: i64 = 1_790_089_156_201;

/// What the fake daemon does on its one connection.
struct Script {
    hello: ServerMsg,
    responses: Vec<Response>,
    events: Vec<Event>,
}

impl Script {
    fn respond(responses: Vec<Response>) -> Script {
        Script {
            hello: ServerMsg::Hello {
                version: PROTOCOL_VERSION,
                daemon_version: "0.1.0".into(),
            },
            responses,
            events: vec![],
        }
    }
}

/// A fake knockd serving one connection. The socket's directory goes away on drop.
struct FakeDaemon {
    _dir: TempDir,
    socket: PathBuf,
    served: JoinHandle<Vec<Request>>,
}

impl FakeDaemon {
    fn start(script: Script) -> FakeDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("knockd.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake knockd socket");
        let served = tokio::spawn(serve(listener, script));
        FakeDaemon {
            _dir: dir,
            socket,
            served,
        }
    }

    /// The requests the client sent, once the connection is over.
    async fn requests(self) -> Vec<Request> {
        tokio::time::timeout(Duration::from_secs(10), self.served)
            .await
            .expect("fake daemon finished")
            .expect("fake daemon did not panic")
    }
}

async fn serve(listener: UnixListener, script: Script) -> Vec<Request> {
    let (stream, _) = listener.accept().await.expect("accept");
    let mut conn = Connection::new(stream);
    let mut requests = Vec::new();
    match conn.recv::<ClientMsg>().await.expect("hello") {
        ClientMsg::Hello { version, .. } => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("expected Hello, got {other:?}"),
    }
    conn.send(&script.hello).await.expect("send hello");
    if !matches!(
        script.hello,
        ServerMsg::Hello { version, .. } if version == PROTOCOL_VERSION
    ) {
        return requests;
    }
    let mut responses = script.responses.into_iter();
    while let Ok(msg) = conn.recv::<ClientMsg>().await {
        let ClientMsg::Request { request } = msg else {
            panic!("second Hello");
        };
        requests.push(request.clone());
        if request == Request::Subscribe {
            let subscribed = ServerMsg::Response {
                response: Response::Subscribed,
            };
            conn.send(&subscribed).await.expect("send subscribed");
            for event in &script.events {
                let msg = ServerMsg::Event {
                    event: event.clone(),
                };
                conn.send(&msg).await.expect("send event");
            }
            // Dropping the connection ends the stream.
            return requests;
        }
        let response = responses.next().expect("a canned response left");
        conn.send(&ServerMsg::Response { response })
            .await
            .expect("send response");
    }
    requests
}

/// Runs knockctl with `args` against `socket`, in UTC so clock times are predictable.
async fn knockctl(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_knockctl"));
    cmd.arg("--socket")
        .arg(socket)
        .args(args)
        .env("TZ", "UTC")
        .env_remove("KNOCKCTL_SOCKET")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("knockctl finished in time")
        .expect("run knockctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn grant(door: &str, address: &str, expires_in_ms: Option<u64>) -> GrantInfo {
    GrantInfo {
        door: door.into(),
        addr: addr(address),
        opened: "22/tcp (INPUT)".into(),
        opened_at_unix_ms: T0,
        expires_in_ms,
        closes: "native rule delete".into(),
        refreshes: 0,
        kernel_expires_in_ms: None,
        closing: false,
        close_error: None,
        client: None,
    }
}

#[tokio::test]
async fn status_shows_daemon_facts() {
    let status = Status {
        daemon_version: "0.1.0".into(),
        pid: 4242,
        uptime_secs: 3723,
        interfaces: vec!["eth0".into(), "wg0".into()],
        config_file: "/etc/knockd.conf".into(),
        doors: 3,
        attempts: 2,
        max_attempts: 1000,
        grants: 1,
        counters: Counters {
            packets: 99,
            opens: 1,
            ..Counters::default()
        },
        firewall: "iptables".into(),
        spa: Default::default(),
        state_error: None,
        state_error_since_unix_ms: None,
    };
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Status { status }]));
    let out = knockctl(&daemon.socket, &["status"]).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    for line in [
        "version     knockd 0.1.0\n",
        "pid         4242\n",
        "uptime      1h02m\n",
        "interfaces  eth0, wg0\n",
        "config      /etc/knockd.conf\n",
        "doors       3\n",
        "attempts    2/1000\n",
        "grants      1\n",
        "counters    packets 99  stages 0  opens 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert_eq!(daemon.requests().await, vec![Request::Status]);
}

#[tokio::test]
async fn metrics_prints_prometheus_text() {
    let status = Status {
        daemon_version: "0.1.0".into(),
        grants: 2,
        attempts: 5,
        counters: Counters {
            packets: 99,
            opens: 1,
            ..Counters::default()
        },
        firewall: "iptables".into(),
        ..Status::default()
    };
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Status { status }]));
    let out = knockctl(&daemon.socket, &["metrics"]).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    for line in [
        "# TYPE knockd_packets_total counter\n",
        "knockd_packets_total 99\n",
        "knockd_opens_total 1\n",
        "knockd_grants_open 2\n",
        "knockd_attempts_tracked 5\n",
        "knockd_up 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert_eq!(daemon.requests().await, vec![Request::Status]);
}

/// Noon UTC today: knockctl shows a time of the current day without its date.
fn today_noon_utc_ms() -> i64 {
    let noon = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .expect("valid time");
    noon.and_utc().timestamp_millis()
}

#[tokio::test]
async fn list_prints_an_aligned_table() {
    let mut grants = vec![
        grant("openSSH", "10.0.0.12", Some(29_500)),
        grant("openSSH", "fd99:77::2", None),
    ];
    grants[0].opened_at_unix_ms = today_noon_utc_ms();
    grants[1].opened_at_unix_ms = 1_000_000_000_000; // 2001-09-09 01:46:40 UTC
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Grants { grants, total: 2 }]));
    let out = knockctl(&daemon.socket, &["list"]).await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "\
LEFT   OPENED        DOOR     ADDRESS     WHAT            CLOSES BY
29s    12:00:00      openSSH  10.0.0.12   22/tcp (INPUT)  native rule delete
never  Sep 09 01:46  openSSH  fd99:77::2  22/tcp (INPUT)  native rule delete
"
    );
    assert_eq!(daemon.requests().await, vec![Request::Grants]);
}

#[tokio::test]
async fn list_without_grants_says_so() {
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Grants {
        grants: vec![],
        total: 0,
    }]));
    let out = knockctl(&daemon.socket, &["list"]).await;
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "no open grants\n");
}

#[tokio::test]
async fn list_json_is_one_document() {
    let grants = vec![grant("openSSH", "10.0.0.12", Some(30_000))];
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Grants {
        grants: grants.clone(),
        total: 1,
    }]));
    let out = knockctl(&daemon.socket, &["--json", "list"]).await;
    assert_exit(&out, 0);
    let parsed: Vec<GrantInfo> = serde_json::from_str(&stdout(&out)).expect("a JSON array");
    assert_eq!(parsed, grants);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(value[0]["addr"], "10.0.0.12");
}

/// knockd lists the oldest LIST_CAP and says how many there are: knockctl tells the user,
/// after the table, or on stderr with `--json` (stdout stays one JSON array).
#[tokio::test]
async fn a_truncated_list_says_how_many_are_left_out() {
    let grants = vec![grant("openSSH", "10.0.0.12", Some(30_000))];
    for json in [false, true] {
        let daemon = FakeDaemon::start(Script::respond(vec![Response::Grants {
            grants: grants.clone(),
            total: 20_000,
        }]));
        let args: &[&str] = if json { &["--json", "list"] } else { &["list"] };
        let out = knockctl(&daemon.socket, args).await;
        assert_exit(&out, 0);
        let note = "showing the oldest 1 of 20000 grants";
        if json {
            let parsed: Vec<GrantInfo> = serde_json::from_str(&stdout(&out)).expect("a JSON array");
            assert_eq!(parsed, grants);
            assert!(String::from_utf8_lossy(&out.stderr).contains(note));
        } else {
            assert!(stdout(&out).contains(note), "{}", stdout(&out));
        }
    }
}

#[tokio::test]
async fn revoke_closes_grants_of_one_door() {
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Revoked {
        grants: vec![grant("openSSH", "10.0.0.12", Some(12_000))],
    }]));
    let out = knockctl(
        &daemon.socket,
        &["revoke", "10.0.0.12", "--door", "openSSH"],
    )
    .await;
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "revoked openSSH 10.0.0.12 (22/tcp (INPUT))\n");
    assert_eq!(
        daemon.requests().await,
        vec![Request::Revoke {
            addr: addr("10.0.0.12"),
            door: Some("openSSH".into())
        }]
    );
}

#[tokio::test]
async fn revoke_without_grants_fails() {
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Revoked { grants: vec![] }]));
    let out = knockctl(&daemon.socket, &["revoke", "10.0.0.12"]).await;
    assert_exit(&out, 1);
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "knockctl: no open grant for 10.0.0.12\n");

    let daemon = FakeDaemon::start(Script::respond(vec![Response::Revoked { grants: vec![] }]));
    let out = knockctl(&daemon.socket, &["revoke", "fd99::1", "--door", "web"]).await;
    assert_exit(&out, 1);
    assert_eq!(
        stderr(&out),
        "knockctl: no open grant for fd99::1 on door web\n"
    );

    // A door that exists, without a grant for the address; then a door that does not exist.
    let doors = || Response::Doors {
        doors: ["web", "ssh"]
            .iter()
            .map(|n| knock_ipc::DoorInfo {
                name: n.to_string(),
                sequence: vec!["7000:tcp".into()],
                seq_timeout_ms: 5_000,
                cmd_timeout_ms: 30_000,
                tcp_flags: "syn".into(),
                action: "open 22/tcp (INPUT)".into(),
                one_time: false,
                enabled: true,
                target: None,
                kind: "static".into(),
                step: None,
                knocks: 1,
                sequence_hidden: false,
                step_secs: None,
                next_step_in_ms: None,
            })
            .collect(),
    };
    let daemon = FakeDaemon::start(Script::respond(vec![
        Response::Revoked { grants: vec![] },
        doors(),
    ]));
    let out = knockctl(&daemon.socket, &["revoke", "fd99::1", "--door", "web"]).await;
    assert_exit(&out, 1);
    assert_eq!(
        stderr(&out),
        "knockctl: no open grant for fd99::1 on door web\n"
    );
    let daemon = FakeDaemon::start(Script::respond(vec![
        Response::Revoked { grants: vec![] },
        doors(),
    ]));
    let out = knockctl(&daemon.socket, &["revoke", "fd99::1", "--door", "nosuch"]).await;
    assert_exit(&out, 1);
    assert_eq!(
        stderr(&out),
        "knockctl: no door named 'nosuch' (knockd has: web, ssh; see knockctl doors)\n"
    );
}

#[tokio::test]
async fn reload_failure_prints_each_error() {
    let errors = vec![
        "/etc/knockd.conf:12: unknown protocol 'icmp' in sequence (use tcp or udp)".to_string(),
        "/etc/knockd.conf:30: door [web] has no sequence".to_string(),
    ];
    let daemon = FakeDaemon::start(Script::respond(vec![Response::ReloadFailed {
        errors: errors.clone(),
    }]));
    let out = knockctl(&daemon.socket, &["reload"]).await;
    assert_exit(&out, 1);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "knockctl: reload failed:\n  \
         /etc/knockd.conf:12: unknown protocol 'icmp' in sequence (use tcp or udp)\n  \
         /etc/knockd.conf:30: door [web] has no sequence\n"
    );

    let daemon = FakeDaemon::start(Script::respond(vec![Response::ReloadFailed {
        errors: errors.clone(),
    }]));
    let out = knockctl(&daemon.socket, &["reload", "--json"]).await;
    assert_exit(&out, 1);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(value["reloaded"], false);
    assert_eq!(value["errors"][1], errors[1].as_str());
}

#[tokio::test]
async fn reload_success_prints_warnings() {
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Reloaded {
        warnings: vec!["/etc/knockd.conf:4: UseSyslog is ignored".into()],
    }]));
    let out = knockctl(&daemon.socket, &["reload"]).await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "configuration reloaded\nwarning: /etc/knockd.conf:4: UseSyslog is ignored\n"
    );
}

#[tokio::test]
async fn daemon_error_exits_1() {
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Error {
        message: "shutting down".into(),
    }]));
    let out = knockctl(&daemon.socket, &["doors"]).await;
    assert_exit(&out, 1);
    assert_eq!(stderr(&out), "knockctl: knockd: shutting down\n");
}

fn events() -> Vec<Event> {
    let at = |ms: i64, kind| Event {
        at_unix_ms: T0 + ms,
        kind,
    };
    let a = addr("10.0.0.12");
    vec![
        at(
            0,
            EventKind::Stage {
                addr: a,
                door: "openSSH".into(),
                stage: 2,
                of: 3,
            },
        ),
        at(
            104,
            EventKind::Open {
                addr: a,
                door: "openSSH".into(),
            },
        ),
        at(
            105,
            EventKind::GrantAdded {
                grant: grant("openSSH", "10.0.0.12", Some(30_000)),
            },
        ),
    ]
}

#[tokio::test]
async fn tail_prints_events_until_the_daemon_closes() {
    let daemon = FakeDaemon::start(Script {
        events: events(),
        ..Script::respond(vec![])
    });
    let out = knockctl(&daemon.socket, &["tail"]).await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "\
14:59:16.201 10.0.0.12 openSSH stage 2/3
14:59:16.305 10.0.0.12 openSSH OPEN
14:59:16.306 10.0.0.12 openSSH grant expires in 30s
"
    );
    assert_eq!(stderr(&out), "knockd closed the connection\n");
    assert_eq!(daemon.requests().await, vec![Request::Subscribe]);
}

#[tokio::test]
async fn tail_json_is_one_object_per_line() {
    let daemon = FakeDaemon::start(Script {
        events: events(),
        ..Script::respond(vec![])
    });
    let out = knockctl(&daemon.socket, &["tail", "--json"]).await;
    assert_exit(&out, 0);
    let parsed: Vec<Event> = stdout(&out)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    assert_eq!(parsed, events());
}

#[tokio::test]
async fn not_running_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("knockd.sock");
    let out = knockctl(&socket, &["status"]).await;
    assert_exit(&out, 3);
    assert!(
        stderr(&out).starts_with(&format!(
            "knockctl: knockd is not running: no socket at {}",
            socket.display()
        )),
        "{}",
        stderr(&out)
    );

    // A socket file nobody listens on (knockd was killed).
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let out = knockctl(&socket, &["list"]).await;
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains("knockd is not running"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn version_mismatch_says_which_side_to_upgrade() {
    let daemon = FakeDaemon::start(Script {
        hello: ServerMsg::Hello {
            version: 999,
            daemon_version: "9.9.9".into(),
        },
        ..Script::respond(vec![])
    });
    let out = knockctl(&daemon.socket, &["status"]).await;
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("knockd 9.9.9 speaks protocol 999"), "{err}");
    assert!(err.contains("upgrade knockctl"), "{err}");
}

#[tokio::test]
async fn rejection_is_reported() {
    let daemon = FakeDaemon::start(Script {
        hello: ServerMsg::Rejected {
            reason: "uid 1000 is not root and not in group knockd".into(),
        },
        ..Script::respond(vec![])
    });
    let out = knockctl(&daemon.socket, &["status"]).await;
    assert_exit(&out, 1);
    assert_eq!(
        stderr(&out),
        "knockctl: knockd refused the connection: uid 1000 is not root and not in group knockd\n"
    );
}

#[tokio::test]
async fn socket_from_environment() {
    let daemon = FakeDaemon::start(Script::respond(vec![Response::Attempts {
        attempts: vec![],
        total: 0,
    }]));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_knockctl"))
        .arg("attempts")
        .env("KNOCKCTL_SOCKET", &daemon.socket)
        .output()
        .await
        .expect("run knockctl");
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "no knock sequences in progress\n");
}

#[tokio::test]
async fn usage_errors_exit_2_and_help_has_examples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("none.sock");
    for args in [&["revoke", "not-an-address"][..], &["frobnicate"], &[]] {
        let out = knockctl(&socket, args).await;
        assert_exit(&out, 2);
    }
    let out = knockctl(&socket, &["--help"]).await;
    assert_exit(&out, 0);
    let help = stdout(&out);
    for needle in [
        "Usage: knockctl [OPTIONS] <COMMAND>",
        "KNOCKCTL_SOCKET",
        "/run/knockd/knockd.sock",
        "knockctl revoke 10.0.0.12 --door openSSH",
        "3  knockd is not running",
    ] {
        assert!(help.contains(needle), "missing {needle:?} in:\n{help}");
    }
}

/// `-H` before and after the command all count, in order (clap alone kept only the last
/// level's).
#[tokio::test]
async fn every_h_counts_before_and_after_the_command() {
    let a = FakeDaemon::start(Script::respond(vec![Response::Grants {
        grants: vec![grant("openSSH", "10.0.0.12", Some(29_500))],
        total: 1,
    }]));
    let b = FakeDaemon::start(Script::respond(vec![Response::Grants {
        grants: vec![grant("web", "10.0.0.13", Some(29_500))],
        total: 1,
    }]));
    let url = |d: &FakeDaemon| format!("unix://{}", d.socket.display());
    let out = knockctl(
        Path::new("/nonexistent/knockd.sock"),
        &["-H", &url(&a), "list", "-H", &url(&b)],
    )
    .await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("HOST"), "{text}");
    let row = |d: &FakeDaemon, addr: &str| {
        text.lines()
            .any(|l| l.starts_with(&d.socket.display().to_string()) && l.contains(addr))
    };
    assert!(row(&a, "10.0.0.12") && row(&b, "10.0.0.13"), "{text}");
    assert_eq!(a.requests().await, vec![Request::Grants]);
    assert_eq!(b.requests().await, vec![Request::Grants]);
}

/// A remote knockctl's error comes back through ssh as `knockctl: ...`: shown once, after
/// the host's name, not `knockctl: h: knockctl: ...`.
#[tokio::test]
async fn a_remote_knockctl_error_is_not_prefixed_twice() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let ssh = dir.path().join("ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\necho 'knockctl: knockd refused the connection: permission denied: run as \
         root or join group knockd' >&2\nexit 1\n",
    )
    .expect("write fake ssh");
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for args in [
        &["-H", "ssh://h0", "list"][..],
        &["-H", "ssh://h0", "-H", "ssh://h1", "list"],
    ] {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_knockctl"));
        cmd.args(args).env("KNOCKCTL_SSH", &ssh).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
            .await
            .expect("knockctl finished in time")
            .expect("run knockctl");
        assert_exit(&out, if args.len() == 3 { 1 } else { 3 });
        let err = stderr(&out);
        assert!(
            err.contains(
                "knockctl: h0: knockd refused the connection: permission denied: run as root \
                 or join group knockd\n"
            ),
            "{err}"
        );
        assert!(!err.contains("knockctl: h0: knockctl:"), "{err}");
    }
}
