//! The engine behind a real control socket, with a fake capture (a channel) and a recording
//! firewall: list, revoke, reload, tail, expiry, refresh, restore, and bad clients. No root.

use knock_ipc::codec::Connection;
use knock_ipc::{Client, ClientMsg, EventKind, Request, Response, ServerMsg, PROTOCOL_VERSION};
use knockd::action::RecordingExecutor;
use knockd::capture::CaptureMsg;
use knockd::config::{flag, Proto};
use knockd::control::ControlSocket;
use knockd::engine::Control;
use knockd::firewall::fake::RecordingFirewall;
use knockd::knocklog::MemoryLog;
use knockd::packet::Packet;
use knockd::serve::{Deps, Packets, Parts};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const CONF: &str = "\
[ssh]
  sequence = 2222,1111,3333
  seq_timeout = 5
  open = 22/tcp
  cmd_timeout = 1
  tcpflags = syn

[openSSH]
  sequence = 7000,8000,9000
  command = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
  tcpflags = syn
";

struct Daemon {
    _dir: tempfile::TempDir,
    conf: PathBuf,
    socket: PathBuf,
    state: PathBuf,
    exec: RecordingExecutor,
    fw: RecordingFirewall,
    log: MemoryLog,
    pkts: mpsc::Sender<CaptureMsg>,
    ctl: mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
    /// Dropping it stops the engine (a clean shutdown).
    _stop: tokio::sync::oneshot::Sender<()>,
    /// The engine's event channel (to count subscribers).
    events: tokio::sync::broadcast::Sender<knock_ipc::Event>,
    sport: u16,
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

async fn start_in(
    dir: tempfile::TempDir,
    exec: RecordingExecutor,
    fw: RecordingFirewall,
) -> Daemon {
    let conf = dir.path().join("knockd.conf");
    if !conf.exists() {
        std::fs::write(&conf, CONF).expect("write conf");
    }
    let socket = dir.path().join("knockd.sock");
    let state = dir.path().join("state.json");
    let config = knockd::config::load(&conf).expect("config").config;
    let log = MemoryLog::default();
    let sock = ControlSocket::bind(&socket, 8).expect("bind");
    let (pkts, pkt_rx) = mpsc::channel(64);
    let control = knockd::serve::control_channel();
    let ctl = control.0.clone();
    let events = knockd::serve::event_channel();
    let parts = Parts {
        config,
        config_path: conf.clone(),
        overrides: Default::default(),
        state_file: Some(state.clone()),
        saved: knockd::state::load_all(&state).expect("state"),
        kernel: None,
        socket: sock,
        packets: Packets::Channel(pkt_rx),
        control,
        events: events.clone(),
        advice: Vec::new(),
    };
    let deps = Deps {
        exec: exec.clone(),
        firewall: std::sync::Arc::new(fw.clone()),
        nft_firewall: std::sync::Arc::new(RecordingFirewall::default()),
        log: log.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = knockd::serve::serve(parts, deps, async {
            let _ = stop_rx.await;
        })
        .await;
    });
    Daemon {
        _dir: dir,
        conf,
        socket,
        state,
        exec,
        fw,
        log,
        pkts,
        ctl,
        task,
        _stop: stop_tx,
        events,
        sport: 30000,
    }
}

async fn start() -> Daemon {
    start_in(
        tempfile::tempdir().expect("tempdir"),
        RecordingExecutor::default(),
        RecordingFirewall::default(),
    )
    .await
}

impl Daemon {
    async fn knock(&mut self, src: &str, ports: &[u16]) {
        for &dport in ports {
            self.sport += 1;
            let p = Packet {
                src: addr(src),
                dst: addr("10.99.77.1"),
                proto: Proto::Tcp,
                sport: self.sport,
                dport,
                tcp_flags: flag::SYN,
                tcp_seq: 7,
            };
            self.pkts
                .send(CaptureMsg::Batch(vec![p], Instant::now()))
                .await
                .expect("send");
        }
    }
    async fn client(&self) -> Client {
        Client::connect(&self.socket).await.expect("connect")
    }
    async fn grants(&self) -> Vec<knock_ipc::GrantInfo> {
        match self
            .client()
            .await
            .request(Request::Grants)
            .await
            .expect("grants")
        {
            Response::Grants { grants, .. } => grants,
            other => panic!("unexpected {other:?}"),
        }
    }
    async fn wait_grants(&self, n: usize) -> Vec<knock_ipc::GrantInfo> {
        for _ in 0..200 {
            let g = self.grants().await;
            if g.len() == n {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never got {n} grants; log: {:?}", self.log.lines());
    }
    async fn wait_ran(&self, needle: &str) {
        for _ in 0..200 {
            if self.exec.ran().iter().any(|c| c.contains(needle)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never ran {needle}: {:?}", self.exec.ran());
    }
    async fn wait_state(&self, needles: &[&str]) {
        for _ in 0..200 {
            let text = std::fs::read_to_string(&self.state).unwrap_or_default();
            if needles.iter().all(|n| text.contains(n)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the state file never listed {needles:?}");
    }
    async fn wait_fw(&self, needle: &str) {
        for _ in 0..200 {
            if self.fw.ops().iter().any(|c| c.contains(needle)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("firewall never did {needle}: {:?}", self.fw.ops());
    }
}

#[tokio::test]
async fn list_attempts_doors_status_and_revoke() {
    let mut d = start().await;
    d.knock("10.0.0.12", &[2222, 1111]).await;
    d.knock("10.0.0.13", &[7000, 8000, 9000]).await;
    let grants = d.wait_grants(1).await;
    assert_eq!(grants[0].door, "openSSH");
    assert_eq!(grants[0].expires_in_ms, None);
    let mut c = d.client().await;
    match c.request(Request::Attempts).await.expect("attempts") {
        Response::Attempts { attempts, total } => {
            assert_eq!(attempts.len(), 1, "{attempts:?}");
            assert_eq!(total, 1);
            assert_eq!(
                (attempts[0].door.as_str(), attempts[0].stage, attempts[0].of),
                ("ssh", 2, 3)
            );
            assert!(attempts[0].remaining_ms <= 5000);
        }
        other => panic!("{other:?}"),
    }
    match c.request(Request::Doors).await.expect("doors") {
        Response::Doors { doors } => {
            assert_eq!(doors.len(), 2);
            assert_eq!(doors[0].sequence, vec!["2222:tcp", "1111:tcp", "3333:tcp"]);
            assert_eq!(doors[0].action, "open 22/tcp (INPUT)");
        }
        other => panic!("{other:?}"),
    }
    match c.request(Request::Status).await.expect("status") {
        Response::Status { status } => {
            assert_eq!(status.counters.packets, 5);
            assert_eq!(status.grants, 1);
            assert_eq!(status.attempts, 1);
        }
        other => panic!("{other:?}"),
    }
    // Revoke runs the derived inverse and empties the ledger.
    match c
        .request(Request::Revoke {
            addr: addr("10.0.0.13"),
            door: None,
        })
        .await
        .expect("revoke")
    {
        Response::Revoked { grants } => assert_eq!(grants.len(), 1),
        other => panic!("{other:?}"),
    }
    d.wait_ran("/sbin/iptables -D INPUT -s 10.0.0.13 -p tcp --dport 22 -j ACCEPT")
        .await;
    assert!(d.grants().await.is_empty());
    match c
        .request(Request::Revoke {
            addr: addr("10.0.0.13"),
            door: None,
        })
        .await
        .expect("revoke")
    {
        Response::Error { message } => assert_eq!(message, "no open grant for 10.0.0.13"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tail_sees_stages_open_grant_and_expiry_and_refresh_keeps_one_grant() {
    let mut d = start().await;
    let mut sub = d.client().await.subscribe().await.expect("subscribe");
    d.knock("10.0.0.12", &[2222, 1111, 3333]).await;
    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("event")
            .expect("ok");
        kinds.push(e.kind);
    }
    assert!(
        matches!(
            &kinds[0],
            EventKind::Stage {
                stage: 1,
                of: 3,
                ..
            }
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(
            &kinds[2],
            EventKind::Stage {
                stage: 3,
                of: 3,
                ..
            }
        ),
        "{kinds:?}"
    );
    assert!(matches!(&kinds[3], EventKind::Open { .. }), "{kinds:?}");
    assert!(
        matches!(&kinds[4], EventKind::GrantAdded { grant } if grant.expires_in_ms.is_some()),
        "{kinds:?}"
    );
    // Knock again before expiry: one grant, refreshed.
    d.knock("10.0.0.12", &[2222, 1111, 3333]).await;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("event")
            .expect("ok");
        if let EventKind::GrantRefreshed { grant } = e.kind {
            assert_eq!(grant.refreshes, 1);
            break;
        }
    }
    assert_eq!(d.grants().await.len(), 1);
    // cmd_timeout = 1: expiry event, and the rule is deleted.
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("event")
            .expect("ok");
        if matches!(e.kind, EventKind::GrantExpired { .. }) {
            break;
        }
    }
    d.wait_fw("delete INPUT 22/tcp from 10.0.0.12 ").await;
    assert!(d.grants().await.is_empty());
}

#[tokio::test]
async fn reload_reports_errors_keeps_config_and_applies_good_changes() {
    let mut d = start().await;
    std::fs::write(&d.conf, "[ssh]\n  sequence = 2222,abc\n").expect("write");
    let mut c = d.client().await;
    match c.request(Request::Reload).await.expect("reload") {
        Response::ReloadFailed { errors } => {
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(":2:") && e.contains("abc")),
                "{errors:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    d.knock("10.0.0.12", &[7000, 8000, 9000]).await;
    d.wait_grants(1).await;
    std::fs::write(&d.conf, CONF.replace("7000,8000,9000", "4000,5000,6000")).expect("write");
    assert!(matches!(
        c.request(Request::Reload).await.expect("reload"),
        Response::Reloaded { .. }
    ));
    d.knock("10.0.0.99", &[7000, 8000, 9000]).await;
    d.knock("10.0.0.98", &[4000, 5000, 6000]).await;
    let g = d.wait_grants(2).await;
    assert!(
        g.iter().any(|g| g.addr == addr("10.0.0.98"))
            && !g.iter().any(|g| g.addr == addr("10.0.0.99"))
    );
    // SIGHUP goes through the same path.
    let (tx, rx) = tokio::sync::oneshot::channel();
    assert!(knockd::engine::request_reload(&d.ctl, d.conf.clone(), Some(tx)).await);
    assert!(rx.await.expect("reply").is_ok());
}

#[tokio::test]
async fn bad_clients_only_close_their_own_connection() {
    let d = start().await;
    // A huge length header.
    let mut s = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connect");
    s.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
    // Garbage after a valid-length header.
    let mut g = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connect");
    g.write_all(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef])
        .await
        .expect("write");
    // Vanish mid-frame.
    let mut v = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connect");
    v.write_all(&[0, 0, 1, 0, 1, 2]).await.expect("write");
    drop(v);
    // Connect and say nothing.
    let _silent = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connect");
    // Wrong protocol version: rejected with a hint.
    let raw = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connect");
    let mut conn = Connection::new(raw);
    conn.send(&ClientMsg::Hello {
        version: PROTOCOL_VERSION + 1,
        client: "future".into(),
    })
    .await
    .expect("send");
    match conn.recv::<ServerMsg>().await.expect("reply") {
        ServerMsg::Rejected { reason } => assert!(reason.contains("restart knockd"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The daemon still serves everyone else.
    assert!(d.grants().await.is_empty());
    drop((s, g));
}

#[tokio::test]
async fn second_daemon_on_the_same_socket_is_refused_and_stale_socket_replaced() {
    let d = start().await;
    let err = ControlSocket::bind(&d.socket, 8)
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("already running"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    assert!(stale.exists());
    ControlSocket::bind(&stale, 8).expect("stale socket replaced");
    let file = dir.path().join("file");
    std::fs::write(&file, "x").expect("write");
    assert!(ControlSocket::bind(&file, 8)
        .err()
        .expect("refuse")
        .to_string()
        .contains("not a socket"));
}

#[tokio::test]
async fn ledger_survives_a_crash_and_is_reconciled_at_start() {
    let mut d = start().await;
    d.knock("10.0.0.12", &[2222, 1111, 3333]).await; // native, 1 s deadline
    d.knock("10.0.0.13", &[7000, 8000, 9000]).await; // derived, no deadline
    d.wait_grants(2).await;
    // State writes are coalesced (at most every 100 ms): wait for this one.
    d.wait_state(&["10.0.0.12", "10.0.0.13"]).await;
    d.wait_fw("add INPUT 22/tcp from 10.0.0.12 ").await;
    // "SIGKILL": abort the engine without its shutdown; the state file stays behind.
    d.task.abort();
    let _ = d.task.await;
    let state = std::fs::read_to_string(&d.state).expect("state");
    assert!(
        state.contains("10.0.0.12") && state.contains("10.0.0.13"),
        "{state}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Restart: the native grant is past its deadline (closed at once); the derived grant's rule
    // was removed by hand meanwhile (check fails), so it is dropped, never re-opened.
    let dir = d._dir;
    std::fs::remove_file(&d.socket).ok();
    let exec = RecordingExecutor::default();
    exec.fail_on(" -C ");
    let d2 = start_in(dir, exec, d.fw.clone()).await;
    // Restore closes and checks in the background, while the engine already serves.
    d2.wait_fw("delete INPUT 22/tcp from 10.0.0.12 ").await;
    d2.wait_grants(0).await;
    let ran = d2.exec.ran();
    let ops = d2.fw.ops();
    assert!(
        ops.iter()
            .any(|c| c.starts_with("delete INPUT 22/tcp from 10.0.0.12 ")),
        "{ops:?}"
    );
    assert_eq!(
        ops.iter().filter(|c| c.starts_with("add")).count(),
        1,
        "never re-open: {ops:?}"
    );
    assert!(
        !ran.iter().any(|c| c.contains(" -I ")),
        "never re-open: {ran:?}"
    );
    assert!(d2.grants().await.is_empty());
    let lines = d2.log.lines();
    assert!(
        lines
            .iter()
            .any(|l| l == "10.0.0.12: ssh: grant expired while knockd was down, closing it"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "10.0.0.13: openSSH: rule no longer in the firewall, grant dropped"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn restored_grant_closes_on_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("knockd.conf"),
        CONF.replace("cmd_timeout = 1", "cmd_timeout = 2"),
    )
    .expect("w");
    let mut d = start_in(
        dir,
        RecordingExecutor::default(),
        RecordingFirewall::default(),
    )
    .await;
    d.knock("10.0.0.12", &[2222, 1111, 3333]).await;
    d.wait_grants(1).await;
    d.wait_state(&["10.0.0.12"]).await;
    // Write-ahead: the rule goes in after the state file recorded the grant.
    d.wait_fw("add INPUT 22/tcp from 10.0.0.12 ").await;
    d.task.abort();
    let _ = d.task.await;
    std::fs::remove_file(&d.socket).ok();
    let d2 = start_in(d._dir, RecordingExecutor::default(), d.fw.clone()).await;
    let g = d2.wait_grants(1).await;
    assert!(g[0].expires_in_ms.is_some_and(|ms| ms <= 2000));
    assert!(d2
        .log
        .lines()
        .iter()
        .any(|l| l.starts_with("10.0.0.12: ssh: grant restored (closes in")));
    d2.wait_fw("delete INPUT 22/tcp from 10.0.0.12 ").await;
    assert!(d2.grants().await.is_empty());
    let _: &Path = &d2.state;
}

#[tokio::test]
async fn a_slow_subscriber_skips_ahead_and_never_stalls_the_daemon() {
    let mut d = start().await;
    let mut sub = d.client().await.subscribe().await.expect("subscribe");
    // 20,000 first knocks from distinct sources while the subscriber reads nothing: far more
    // events than the broadcast buffer plus the socket buffers hold.
    for i in 0..20_000u32 {
        let src = std::net::Ipv4Addr::from(0x0a64_0000 + i).to_string();
        d.knock(&src, &[2222]).await;
    }
    // The daemon kept up: every packet was processed and it still answers at once.
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Response::Status { status }) = d.client().await.request(Request::Status).await
            {
                if status.counters.packets == 20_000 {
                    return status;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("daemon stalled behind a slow subscriber");
    assert_eq!(status.attempts, 20_000);
    // The subscriber is told it missed events, then continues.
    let mut lagged = false;
    for _ in 0..30_000 {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Ok(e)) => {
                if matches!(e.kind, EventKind::Lagged { missed } if missed > 0) {
                    lagged = true;
                    break;
                }
            }
            other => panic!("stream ended early: {other:?}"),
        }
    }
    assert!(lagged, "no Lagged event");
}

/// The socket cannot be used to exhaust knockd: past `MaxClients` (8 here, plus the slots
/// reserved for root, since tests may run as root) a client is told the cap; a slot freed is
/// usable again; a client that stalls mid-frame is closed after `FRAME_TIMEOUT`, and a frame
/// longer than a request can be is refused before it is buffered.
#[tokio::test]
async fn connection_cap_names_the_cap_and_stalled_frames_are_closed() {
    use knockd::control::{FRAME_TIMEOUT, ROOT_RESERVE};
    let d = start().await;
    let root = nix::unistd::Uid::effective().is_root();
    let slots = 8 + if root { ROOT_RESERVE } else { 0 };
    let mut held = Vec::new();
    for _ in 0..slots {
        held.push(Client::connect(&d.socket).await.expect("connect"));
    }
    let err = Client::connect(&d.socket)
        .await
        .err()
        .expect("over the cap");
    assert!(err.to_string().contains("MaxClients = 8"), "{err}");
    // Everyone held still answers.
    let mut first = held.remove(0);
    assert!(matches!(
        first.request(Request::Status).await.expect("status"),
        Response::Status { .. }
    ));
    drop(first);
    let mut c = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(x) = Client::connect(&d.socket).await {
            c = Some(x);
            break;
        }
    }
    let mut c = c.expect("a freed slot is usable again");
    assert!(c.request(Request::Status).await.is_ok());
    drop(c);
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Three bytes of a frame, then nothing: closed after FRAME_TIMEOUT.
    let mut s = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connect");
    s.write_all(&[0, 0, 0]).await.expect("write");
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        FRAME_TIMEOUT + Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut s, &mut buf),
    )
    .await
    .expect("closed in time")
    .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(t.elapsed() >= FRAME_TIMEOUT - Duration::from_millis(500));

    // A header announcing more than a request can be: closed at once, nothing buffered.
    let mut big = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connect");
    big.write_all(&((knock_ipc::codec::MAX_REQUEST_FRAME as u32) + 1).to_be_bytes())
        .await
        .expect("write");
    let n = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut big, &mut buf),
    )
    .await
    .expect("closed at once")
    .unwrap_or(0);
    assert_eq!(n, 0);
}

/// A `tail` subscriber that hangs up is noticed at once (its descriptor and receiver freed),
/// not when the next event happens to be sent.
#[tokio::test]
async fn a_subscriber_that_hangs_up_is_dropped_without_waiting_for_an_event() {
    let d = start().await;
    let sub = d.client().await.subscribe().await.expect("subscribe");
    assert!(
        wait_for(|| d.events.receiver_count() == 1).await,
        "subscribed"
    );
    drop(sub);
    assert!(
        wait_for(|| d.events.receiver_count() == 0).await,
        "the hung-up subscriber is still registered"
    );
}

/// One connection cannot flood the engine: past a burst of 50, requests are served at 50 per
/// second.
#[tokio::test]
async fn requests_on_one_connection_are_rate_limited() {
    let d = start().await;
    let mut c = d.client().await;
    let t = Instant::now();
    for _ in 0..100 {
        assert!(c.request(Request::Status).await.is_ok());
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "100 requests in {took:?}: not rate limited"
    );
}

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// 6,000 grants: `list` answers (capped at LIST_CAP, within one frame) and fast, while
/// status counts them all.
#[tokio::test]
async fn list_with_thousands_of_grants_answers_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("knockd.conf"),
        // StartRate: 6,000 new grants from one burst of knocks, not 20 a second.
        format!(
            "[options]\n  StartRate = 100000\n{}",
            CONF.replace("cmd_timeout = 1", "cmd_timeout = 600")
        ),
    )
    .expect("w");
    let mut d = start_in(
        dir,
        RecordingExecutor::default(),
        RecordingFirewall::default(),
    )
    .await;
    for i in 0..6_000u32 {
        let src = std::net::Ipv4Addr::from(0x0a50_0000 + i).to_string();
        d.knock(&src, &[2222, 1111, 3333]).await;
    }
    let mut total = 0;
    for _ in 0..500 {
        if let Response::Status { status } = d
            .client()
            .await
            .request(Request::Status)
            .await
            .expect("status")
        {
            total = status.grants;
        }
        if total >= 6_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        total >= 5_000,
        "grants: {total}; log: {:?}",
        d.log.lines().iter().rev().take(5).collect::<Vec<_>>()
    );
    let t0 = std::time::Instant::now();
    let reply = d
        .client()
        .await
        .request(Request::Grants)
        .await
        .expect("grants");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let Response::Grants { grants, total } = reply else {
        panic!("unexpected {reply:?}");
    };
    assert_eq!(grants.len(), knock_ipc::LIST_CAP);
    // The total of the same moment: every grant, not the page.
    assert!(
        total >= 5_000 && total > grants.len() as u64,
        "total {total}"
    );
    // Oldest first.
    assert!(grants
        .windows(2)
        .all(|w| w[0].opened_at_unix_ms <= w[1].opened_at_unix_ms));
}
