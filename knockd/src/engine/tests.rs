use super::{Engine, EngineError};
use crate::capture::CaptureMsg;
use crate::config::{flag, Command6, Config, Door, OpenPort, Proto, Step, TcpFlags};
use crate::firewall::fake::RecordingFirewall;
use crate::grants::{Close, SHARE_BURST};
use crate::knocklog::MemoryLog;
use crate::packet::Packet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const SRV: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 77, 1));
const CLI: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 77, 2));

type FakeExec = crate::action::RecordingExecutor;

fn door(name: &str, ports: &[u16]) -> Door {
    Door {
        name: name.into(),
        line: 1,
        sequence: ports
            .iter()
            .map(|&port| Step {
                port,
                proto: Proto::Tcp,
            })
            .collect(),
        one_time_sequences: None,
        seq_timeout: Duration::from_secs(5),
        tcp_flags: TcpFlags {
            set: flag::SYN,
            unset: 0,
        },
        start_command: None,
        start_command_6: Command6::Fallback,
        stop_command: None,
        stop_command_6: Command6::Fallback,
        cmd_timeout: Duration::from_secs(10),
        target: None,
        open: Vec::new(),
        open_chain: "INPUT".into(),
        sweep_guard: true,
        totp_file: None,
        totp: None,
        spa: Vec::new(),
        spa_address: Default::default(),
    }
}

fn seed() -> Config {
    let mut open = door("openSSH", &[7000, 8000, 9000]);
    open.start_command = Some("/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT".into());
    let mut close = door("closeSSH", &[9000, 8000, 7000]);
    close.start_command =
        Some("/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT".into());
    Config {
        doors: vec![open, close],
        ..Config::default()
    }
}

struct T {
    e: Engine<FakeExec, MemoryLog>,
    exec: FakeExec,
    fw: RecordingFirewall,
    log: MemoryLog,
    filters: Arc<Mutex<Vec<String>>>,
    sport: u16,
}

impl T {
    fn new(config: Config) -> T {
        let exec = FakeExec::default();
        let fw = RecordingFirewall::default();
        let log = MemoryLog::default();
        let filters = Arc::new(Mutex::new(Vec::new()));
        let f2 = filters.clone();
        let e = Engine::new(
            config,
            PathBuf::from("/nonexistent/knockd.conf"),
            exec.clone(),
            Arc::new(fw.clone()),
            log.clone(),
            Box::new(move |f| {
                if let Ok(mut v) = f2.lock() {
                    v.push(f);
                }
            }),
        );
        T {
            e,
            exec,
            fw,
            log,
            filters,
            sport: 40000,
        }
    }
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }
    fn knock(&mut self, src: IpAddr, port: u16) {
        self.sport = self.sport.checked_add(1).unwrap_or(1024);
        let p = Packet {
            src,
            dst: SRV,
            proto: Proto::Tcp,
            sport: self.sport,
            dport: port,
            tcp_flags: flag::SYN,
            tcp_seq: 1,
        };
        self.e.on_packet(&p, T::now());
    }
    fn knock_seq(&mut self, src: IpAddr, ports: &[u16]) {
        for &p in ports {
            self.knock(src, p);
        }
    }
    /// Let spawned actions run and feed their completions back.
    async fn settle(&mut self) {
        for _ in 0..100 {
            tokio::task::yield_now().await;
            while let Some(d) = self.e.runner.try_recv() {
                self.e.on_done(d);
            }
            if self.e.runner.inflight() == 0 {
                return;
            }
        }
    }
    async fn advance(&mut self, d: Duration) {
        tokio::time::advance(d).await;
        self.e.on_timer(T::now());
        self.settle().await;
    }
    fn lines(&self) -> Vec<String> {
        self.log.lines()
    }
    fn has_line(&self, s: &str) -> bool {
        self.lines().iter().any(|l| l == s)
    }
}

#[tokio::test(start_paused = true)]
async fn seed_open_logs_like_knockd_and_records_a_grant() {
    let mut t = T::new(seed());
    t.knock_seq(CLI, &[7000, 8000, 9000]);
    t.settle().await;
    let cmd = "/sbin/iptables -I INPUT -s 10.99.77.2 -p tcp --dport 22 -j ACCEPT";
    assert_eq!(
        t.lines(),
        vec![
            "10.99.77.2: openSSH: Stage 1".to_string(),
            "10.99.77.2: openSSH: Stage 2".into(),
            "10.99.77.2: openSSH: Stage 3".into(),
            "10.99.77.2: openSSH: OPEN SESAME".into(),
            format!("openSSH: running command: {cmd}"),
            // 9000 is also closeSSH's first knock: doors are independent.
            "10.99.77.2: closeSSH: Stage 1".into(),
        ]
    );
    assert_eq!(t.exec.ran(), vec![cmd.to_string()]);
    let g = t.e.ledger().find("openSSH", CLI).cloned().expect("grant");
    assert_eq!(g.expires, None);
    assert!(matches!(g.close, Close::Derived { .. }));
}

#[tokio::test(start_paused = true)]
async fn reknock_does_not_duplicate_a_present_rule_and_restores_a_missing_one() {
    let mut t = T::new(seed());
    t.knock_seq(CLI, &[7000, 8000, 9000]);
    t.settle().await;
    // Right after the open, nine re-knocks at once: two checks from the grant's own budget
    // (a burst of three with the open) and four from the quick lane (one grant's share of
    // it); then the deadline changes now and the check waits for the own budget (one a
    // second): a flood of re-knocks is still paced.
    for _ in 0..9 {
        t.knock_seq(CLI, &[7000, 8000, 9000]);
        t.settle().await;
    }
    let checks = 2 + SHARE_BURST as usize;
    let ran = t.exec.ran();
    assert_eq!(ran.len(), 1 + checks, "{ran:?}");
    assert!(ran[1..].iter().all(|c| c.contains(" -C INPUT")), "{ran:?}");
    t.advance(Duration::from_secs(1)).await;
    t.settle().await;
    let ran = t.exec.ran();
    assert_eq!(ran.len(), 2 + checks, "one queued check: {ran:?}");
    assert!(ran[1 + checks].contains(" -C INPUT"), "{ran:?}");
    // Someone deleted the rule: the check fails and the start command runs again.
    t.exec.fail_on(" -C ");
    t.advance(Duration::from_secs(1)).await;
    t.knock_seq(CLI, &[7000, 8000, 9000]);
    t.settle().await;
    let ran = t.exec.ran();
    assert!(ran[2 + checks].contains(" -C INPUT"), "{ran:?}");
    assert!(ran[3 + checks].contains(" -I INPUT"), "{ran:?}");
    assert!(t.has_line("10.99.77.2: openSSH: rule was missing, re-inserted"));
}

#[tokio::test(start_paused = true)]
async fn close_door_closes_the_grant() {
    let mut t = T::new(seed());
    t.knock_seq(CLI, &[7000, 8000, 9000]);
    t.settle().await;
    t.knock_seq(CLI, &[9000, 8000, 7000]);
    t.settle().await;
    assert!(t.e.ledger().is_empty());
    assert!(t.has_line("10.99.77.2: closeSSH: closes the grant of door openSSH"));
    assert!(t
        .exec
        .ran()
        .last()
        .is_some_and(|c| c.contains("-D INPUT -s 10.99.77.2")));
}

fn native() -> Config {
    let mut d = door("ssh", &[1111, 2222, 3333]);
    d.open = vec![OpenPort {
        port: 22,
        proto: Proto::Tcp,
    }];
    d.cmd_timeout = Duration::from_secs(30);
    Config {
        doors: vec![d],
        ..Config::default()
    }
}

#[tokio::test(start_paused = true)]
async fn native_door_inserts_at_top_and_deletes_on_schedule() {
    let mut t = T::new(native());
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    t.settle().await;
    assert_eq!(t.fw.ops(), ["add INPUT 22/tcp from 10.99.77.2 (ssh)"]);
    assert_eq!(t.fw.rules().len(), 1);
    assert!(t.exec.ran().is_empty(), "no process per rule");
    t.advance(Duration::from_secs(29)).await;
    t.settle().await;
    assert_eq!(t.fw.ops().len(), 1);
    t.advance(Duration::from_secs(1)).await;
    t.settle().await;
    assert_eq!(t.fw.ops()[1], "delete INPUT 22/tcp from 10.99.77.2 (ssh)");
    assert!(t.fw.rules().is_empty());
    assert!(t.has_line("10.99.77.2: ssh: command timeout"));
    assert!(t.e.ledger().is_empty());
}

#[tokio::test(start_paused = true)]
async fn native_reknock_refreshes_the_deadline() {
    let mut t = T::new(native());
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    t.settle().await;
    t.advance(Duration::from_secs(20)).await;
    // A burst of nine re-knocks: three checks from the grant's own budget, four from the
    // quick lane (one grant's share), then one a second; never a second rule.
    for _ in 0..9 {
        t.knock_seq(CLI, &[1111, 2222, 3333]);
    }
    t.settle().await;
    assert_eq!(t.e.ledger().len(), 1);
    let refresh = "refresh INPUT 22/tcp from 10.99.77.2 (ssh)";
    let ops = t.fw.ops();
    assert_eq!(ops[0], "add INPUT 22/tcp from 10.99.77.2 (ssh)");
    assert_eq!(ops[1..], vec![refresh; 3 + SHARE_BURST as usize], "{ops:?}");
    // Someone removed the rule: the queued check (a second later) puts it back.
    t.fw.remove_rule(&t.fw.rules()[0]);
    t.advance(Duration::from_secs(1)).await;
    t.settle().await;
    assert_eq!(t.fw.rules().len(), 1);
    assert!(t.has_line("10.99.77.2: ssh: rule was missing, re-inserted"));
    t.advance(Duration::from_secs(20)).await;
    t.settle().await;
    assert!(
        !t.fw.ops().iter().any(|c| c.starts_with("delete")),
        "closed too early"
    );
    t.advance(Duration::from_secs(10)).await;
    t.settle().await;
    assert!(t.fw.ops().iter().any(|c| c.starts_with("delete")));
    assert!(t.fw.rules().is_empty());
}

#[tokio::test(start_paused = true)]
async fn stop_command_runs_after_cmd_timeout() {
    let mut d = door("web", &[1000, 2000, 3000]);
    d.start_command = Some("open %IP%".into());
    d.stop_command = Some("close %IP%".into());
    d.cmd_timeout = Duration::from_secs(5);
    let mut t = T::new(Config {
        doors: vec![d],
        ..Config::default()
    });
    t.knock_seq(CLI, &[1000, 2000, 3000]);
    t.settle().await;
    t.advance(Duration::from_secs(5)).await;
    assert_eq!(t.exec.ran(), vec!["open 10.99.77.2", "close 10.99.77.2"]);
    assert!(t.has_line("web: running command: close 10.99.77.2"));
}

#[tokio::test(start_paused = true)]
async fn failed_start_is_logged_and_closes_the_grant() {
    // Two native rules; the second insert fails: the first must not stay open.
    let mut config = native();
    config.doors[0].open.push(OpenPort {
        port: 443,
        proto: Proto::Tcp,
    });
    let mut t = T::new(config);
    t.fw.fail_on("add INPUT 443/tcp");
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    t.settle().await;
    t.settle().await;
    assert!(t.has_line(
        "10.99.77.2: ssh: firewall: injected failure: add INPUT 443/tcp from 10.99.77.2 (ssh)"
    ));
    assert!(t.has_line("10.99.77.2: ssh: the start command failed: closing the grant"));
    assert!(t.e.ledger().is_empty());
    assert!(
        t.fw.rules().is_empty(),
        "the rule that did go in must be deleted: {:?}",
        t.fw.ops()
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_is_logged_at_the_deadline() {
    let mut t = T::new(seed());
    t.knock_seq(CLI, &[7000, 8000]);
    t.advance(Duration::from_millis(4999)).await;
    assert!(!t.lines().iter().any(|l| l.contains("timeout")));
    t.advance(Duration::from_millis(1)).await;
    assert!(t.has_line("10.99.77.2: openSSH: sequence timeout (stage 2)"));
}

#[tokio::test(start_paused = true)]
async fn ipv6_knock_on_v4_iptables_command_warns() {
    let mut t = T::new(seed());
    let v6: IpAddr = "fd99:77::2".parse().expect("ip");
    for (e_src, port) in (t.sport..).zip([7000, 8000, 9000]) {
        let p = Packet {
            src: v6,
            dst: "fd99:77::1".parse().expect("ip"),
            proto: Proto::Tcp,
            sport: e_src,
            dport: port,
            tcp_flags: flag::SYN,
            tcp_seq: 1,
        };
        t.e.on_packet(&p, T::now());
    }
    t.settle().await;
    assert!(t
        .lines()
        .iter()
        .any(|l| l.starts_with("openSSH: warning: IPv6 knock from fd99:77::2")));
}

#[tokio::test(start_paused = true)]
async fn run_loop_exits_on_capture_error_and_closes_timed_grants() {
    let t = T::new(native());
    let fw = t.fw.clone();
    let log = t.log.clone();
    let (pkt_tx, pkt_rx) = mpsc::channel(16);
    let (_ctl_tx, ctl_rx) = mpsc::channel(16);
    let task = tokio::spawn(t.e.run(pkt_rx, ctl_rx, std::future::pending()));
    for (i, port) in [1111u16, 2222, 3333].into_iter().enumerate() {
        let p = Packet {
            src: CLI,
            dst: SRV,
            proto: Proto::Tcp,
            sport: 5000 + i as u16,
            dport: port,
            tcp_flags: flag::SYN,
            tcp_seq: 1,
        };
        pkt_tx
            .send(CaptureMsg::Batch(vec![p], T::now()))
            .await
            .expect("send");
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    pkt_tx
        .send(CaptureMsg::Error("kv0: The interface disappeared".into()))
        .await
        .expect("send");
    let r = task.await.expect("join");
    assert!(matches!(r, Err(EngineError::Capture(_))));
    let ops = fw.ops();
    assert!(
        ops.iter().any(|c| c.starts_with("add")) && ops.iter().any(|c| c.starts_with("delete")),
        "{ops:?}"
    );
    assert!(log.lines().iter().any(|l| l == "shutting down"));
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_running_config_on_error_and_attempts_on_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("knockd.conf");
    let good = "[openSSH]\n sequence = 7000,8000,9000\n seq_timeout = 2\n command = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n tcpflags = syn\n";
    std::fs::write(&path, good).expect("write");
    let mut t = T::new(crate::config::load(&path).expect("load").config);
    t.e.config_path = path.clone();
    t.knock_seq(CLI, &[7000, 8000]);
    std::fs::write(&path, "[openSSH]\n sequence = 7000,abc\n").expect("write");
    let errs = t.e.reload().expect_err("bad config");
    assert!(errs.iter().any(|e| e.contains(":2:")), "{errs:?}");
    assert!(t.has_line("reload failed: keeping the running configuration"));
    // Still running on the old config, attempt intact.
    std::fs::write(&path, format!("{good}\n[other]\n sequence = 1,2,3\n")).expect("write");
    t.e.reload().expect("good config");
    t.knock(CLI, 9000);
    t.settle().await;
    assert!(t.has_line("10.99.77.2: openSSH: OPEN SESAME"));
    assert_eq!(t.e.config().doors.len(), 2);
    assert!(t.filters.lock().map(|f| f.len()).unwrap_or(0) >= 2);
}

#[tokio::test(start_paused = true)]
async fn one_time_sequences_advance_and_exhaustion_disables_the_door() {
    let dir = tempfile::tempdir().expect("tempdir");
    let otp = dir.path().join("seqs");
    std::fs::write(
        &otp,
        "# used sequences get a leading '#'\n 7001,7002,7003\n 8001,8002,8003\n",
    )
    .expect("write");
    let conf = dir.path().join("knockd.conf");
    std::fs::write(
        &conf,
        format!(
            "[otp]\n one_time_sequences = {}\n command = open %IP%\n tcpflags = syn\n",
            otp.display()
        ),
    )
    .expect("write");
    let mut t = T::new(crate::config::load(&conf).expect("load").config);
    t.knock_seq(CLI, &[7001, 7002, 7003]);
    t.settle().await;
    assert_eq!(t.exec.ran(), vec!["open 10.99.77.2"]);
    let text = std::fs::read_to_string(&otp).expect("read");
    assert!(
        text.lines()
            .any(|l| l.starts_with('#') && l.contains("7001,7002,7003")),
        "{text}"
    );
    assert!(text.lines().any(|l| l == " 8001,8002,8003"), "{text}");
    // The used sequence no longer opens; the next one does.
    t.knock_seq(CLI, &[7001, 7002, 7003]);
    t.knock_seq(CLI, &[8001, 8002, 8003]);
    t.settle().await;
    assert_eq!(t.exec.ran().len(), 2);
    assert!(t.has_line(
        "no more sequences left in the one time sequences file for door otp --> disabling the door"
    ));
    // Disabled: nothing opens, and the capture filter matches nothing.
    t.knock_seq(CLI, &[8001, 8002, 8003]);
    t.settle().await;
    assert_eq!(t.exec.ran().len(), 2);
    let last = t.filters.lock().map(|f| f.last().cloned()).ok().flatten();
    assert_eq!(last.as_deref(), Some(crate::capture::filter::MATCH_NOTHING));
}

/// Issue 10, fail closed: when recording a use fails, the door is disabled, and the used
/// sequence never opens again, not even after a reload that reads the unchanged file.
#[tokio::test(start_paused = true)]
async fn one_time_sequence_that_cannot_be_recorded_never_opens_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let otp = dir.path().join("seqs");
    let text = " 7001,7002,7003\n 8001,8002,8003\n";
    std::fs::write(&otp, text).expect("write");
    let conf = dir.path().join("knockd.conf");
    std::fs::write(
        &conf,
        format!(
            "[otp]\n one_time_sequences = {}\n command = open %IP%\n tcpflags = syn\n",
            otp.display()
        ),
    )
    .expect("write");
    let mut t = T::new(crate::config::load(&conf).expect("load").config);
    t.e.config_path = conf.clone();
    // The file goes away after start (or cannot be rewritten): recording fails.
    std::fs::remove_file(&otp).expect("rm");
    t.knock_seq(CLI, &[7001, 7002, 7003]);
    t.settle().await;
    assert_eq!(t.exec.ran(), vec!["open 10.99.77.2"]);
    assert!(
        t.lines()
            .iter()
            .any(|l| l.contains("disabling the door until the file can be rewritten")),
        "{:?}",
        t.lines()
    );
    t.knock_seq(CLI, &[7001, 7002, 7003]);
    t.settle().await;
    assert_eq!(t.exec.ran().len(), 1, "disabled");
    // The file is back, its used line not marked: the reload records it now.
    std::fs::write(&otp, text).expect("write");
    t.e.reload().expect("reload");
    assert_eq!(
        std::fs::read_to_string(&otp).expect("read"),
        "# 7001,7002,7003\n 8001,8002,8003\n"
    );
    t.knock_seq(CLI, &[7001, 7002, 7003]);
    t.settle().await;
    assert_eq!(t.exec.ran().len(), 1, "the used sequence stays used");
    t.knock_seq(CLI, &[8001, 8002, 8003]);
    t.settle().await;
    assert_eq!(t.exec.ran().len(), 2, "the next one opens");
}

static WALL_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn test_wall() -> Duration {
    Duration::from_millis(WALL_MS.load(std::sync::atomic::Ordering::Relaxed))
}

/// A TOTP door: the current step's sequence opens; the same sequence from another address is
/// refused and logged; the filter holds the previous, current and next steps' ports only, and
/// moves at the step boundary.
#[tokio::test(start_paused = true)]
async fn totp_door_opens_refuses_replays_and_rotates_its_filter() {
    use std::sync::atomic::Ordering;
    let spec = knock_ipc::totp::Spec {
        secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        step_secs: 30,
        knocks: 4,
        lo: 10000,
        hi: 59999,
        exclude: vec![],
    };
    let mut d = door("rot", &[]);
    d.totp = Some(spec.clone());
    d.start_command = Some("open %IP%".into());
    WALL_MS.store(1000 * 30 * 1000 + 10_000, Ordering::Relaxed); // step 1000, 10 s in
    let mut t = T::new(Config {
        doors: vec![d],
        ..Config::default()
    });
    t.e.set_wall_clock(test_wall);
    let filter = |t: &T| {
        t.filters
            .lock()
            .map(|f| f.last().cloned())
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    let has_port = |f: &str, p: u16| {
        f.contains(&format!("tcp dst port {p})")) || f.contains(&format!("tcp dst port {p} "))
    };
    let f = filter(&t);
    // The accepted steps, and the two just outside them (clock skew is noticed, not opened).
    for step in [998, 999, 1000, 1001, 1002] {
        assert!(
            spec.ports(step).iter().all(|&p| has_port(&f, p)),
            "step {step}: {f}"
        );
    }
    assert!(
        !spec.ports(1003).iter().all(|&p| has_port(&f, p)),
        "never further: {f}"
    );
    t.knock_seq(CLI, &spec.ports(1000));
    t.settle().await;
    assert_eq!(t.exec.ran(), vec!["open 10.99.77.2"]);
    let other: IpAddr = "10.99.77.9".parse().expect("ip");
    t.knock_seq(other, &spec.ports(1000));
    t.settle().await;
    assert_eq!(t.exec.ran().len(), 1, "replay refused");
    assert!(
        t.has_line("10.99.77.9: rot: sequence refused: replay: this time step's sequence already opened the door for another address (current step 1000)"),
        "{:?}",
        t.lines()
    );
    // A replay is counted as one, not as a refused first knock.
    assert_eq!((t.e.stats().refused_replay, t.e.stats().refused), (1, 0));
    // A client whose clock is 60 s behind knocks step 998's sequence: nothing opens, and it is
    // counted and logged with the size of the skew; one 60 s ahead likewise.
    let skewed: IpAddr = "10.99.77.20".parse().expect("ip");
    t.knock_seq(skewed, &spec.ports(998));
    t.knock_seq(skewed, &spec.ports(1002));
    t.settle().await;
    assert_eq!(t.exec.ran().len(), 1, "a skewed clock opens nothing");
    assert_eq!(t.e.stats().totp_clock_skew, 2);
    assert!(
        t.lines()
            .iter()
            .any(|l| l.starts_with("10.99.77.20: rot: probable clock skew:")
                && l.contains("about 60 s behind this host's")),
        "{:?}",
        t.lines()
    );
    assert!(
        t.lines()
            .iter()
            .any(|l| l.contains("about 60 s ahead of this host's")),
        "{:?}",
        t.lines()
    );
    // The clock moves to step 1002: the engine's timer rotates the window.
    WALL_MS.store(1002 * 30 * 1000 + 1, Ordering::Relaxed);
    t.advance(Duration::from_secs(51)).await;
    let f = filter(&t);
    assert!(spec.ports(1002).iter().all(|&p| has_port(&f, p)), "{f}");
    assert!(!spec.ports(999).iter().all(|&p| has_port(&f, p)), "{f}");
    // Step 1000's sequence is out of the window: it opens nothing any more.
    t.knock_seq(CLI, &spec.ports(1000));
    t.settle().await;
    assert_eq!(t.exec.ran().len(), 1);
    t.knock_seq(CLI, &spec.ports(1002));
    t.settle().await;
    assert_eq!(t.exec.ran().len(), 2);
}

/// Every kind of event reaches subscribers (tail and the TUI depend on it).
#[tokio::test(start_paused = true)]
async fn every_event_kind_is_broadcast() {
    use knock_ipc::EventKind as K;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("knockd.conf");
    let text = "[ssh]\n sequence = 1111,2222,3333\n open = 22/tcp\n cmd_timeout = 5\n tcpflags = syn\n\
                [openSSH]\n sequence = 7000,8000,9000\n seq_timeout = 2\n command = /sbin/iptables -I INPUT -s %IP% -j ACCEPT\n tcpflags = syn\n\
                [closeSSH]\n sequence = 9100,8100,7100\n command = /sbin/iptables -D INPUT -s %IP% -j ACCEPT\n tcpflags = syn\n\
                [broken]\n sequence = 4000,5000,6000\n command = fail-me\n tcpflags = syn\n";
    std::fs::write(&conf, text).expect("write");
    let mut t = T::new(crate::config::load(&conf).expect("load").config);
    t.e.config_path = conf.clone();
    let mut rx = t.e.events().subscribe();
    t.exec.fail_on("fail-me");
    t.knock_seq(CLI, &[1111, 2222, 3333]); // stage, open, grant added
    t.knock_seq(CLI, &[1111, 2222, 3333]); // grant refreshed
    t.knock_seq(CLI, &[7000, 8000, 9000]);
    t.knock_seq(CLI, &[9100, 8100, 7100]); // grant closed by door
    t.knock_seq(CLI, &[4000, 5000, 6000]); // command failed
    t.settle().await;
    t.knock_seq(CLI, &[1111, 3333]); // reset
    t.knock_seq(CLI, &[7000]);
    t.advance(Duration::from_secs(5)).await; // timeout, grant expired
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    t.settle().await;
    let _ = t.e.on_request(knock_ipc::Request::Revoke {
        addr: CLI,
        door: None,
    }); // revoked
    t.e.reload().expect("reload ok");
    std::fs::write(&conf, "[x]\n sequence = nope\n").expect("write");
    t.e.reload().expect_err("reload fails");
    let mut seen = std::collections::BTreeSet::new();
    while let Ok(e) = rx.try_recv() {
        let name = format!("{:?}", e.kind);
        seen.insert(
            name.split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    for kind in [
        "Stage",
        "Open",
        "Reset",
        "Timeout",
        "GrantAdded",
        "GrantRefreshed",
        "GrantExpired",
        "GrantClosed",
        "GrantRevoked",
        "CommandFailed",
        "ReloadOk",
        "ReloadFailed",
    ] {
        assert!(seen.contains(kind), "no {kind} event; saw {seen:?}");
    }
    let _ = K::Lagged { missed: 0 };
}

#[tokio::test(start_paused = true)]
async fn shutdown_policies() {
    use crate::config::ShutdownPolicy;
    for (policy, closes_native, closes_derived) in [
        (ShutdownPolicy::Close, true, false),
        (ShutdownPolicy::CloseAll, true, true),
        (ShutdownPolicy::Keep, false, false),
    ] {
        let mut config = seed();
        let mut native = door("ssh", &[1111, 2222, 3333]);
        native.open = vec![OpenPort {
            port: 22,
            proto: Proto::Tcp,
        }];
        config.doors.push(native);
        config.options.on_shutdown = policy;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.json");
        let mut t = T::new(config);
        t.e.persistence.set_path(state.clone());
        t.knock_seq(CLI, &[7000, 8000, 9000]);
        t.knock_seq(CLI, &[1111, 2222, 3333]);
        t.settle().await;
        t.e.shutdown().await;
        let ran = t.exec.ran();
        assert_eq!(
            t.fw.ops().iter().any(|c| c.starts_with("delete")),
            closes_native,
            "{policy:?}: {:?}",
            t.fw.ops()
        );
        assert_eq!(
            ran.iter().any(|c| c.starts_with("/sbin/iptables -D")),
            closes_derived,
            "{policy:?}: {ran:?}"
        );
        let saved = crate::state::load(&state).expect("state");
        let expected_left = 2 - usize::from(closes_native) - usize::from(closes_derived);
        assert_eq!(
            saved.len(),
            expected_left,
            "{policy:?}: state keeps what is still open"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn reload_reopens_the_log_file_and_keeps_command_line_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("knockd.conf");
    let from_conf = dir.path().join("from-config.log");
    let from_cli = dir.path().join("from-cli.log");
    std::fs::write(
        &conf,
        format!(
            "[options]\n LogFile = {}\n[d]\n sequence = 1,5,3\n",
            from_conf.display()
        ),
    )
    .expect("write");
    let overrides = crate::config::Overrides {
        log_file: Some(from_cli.clone()),
        ..Default::default()
    };
    let mut config = crate::config::load(&conf).expect("load").config;
    overrides.apply(&mut config.options);
    let log =
        crate::knocklog::KnockLog::open(config.options.log_file.as_deref(), false).expect("log");
    let mut e = Engine::new(
        config,
        conf.clone(),
        FakeExec::default(),
        Arc::new(RecordingFirewall::default()),
        log,
        Box::new(|_| {}),
    )
    .with_overrides(overrides);
    e.log_line("before rotation");
    // logrotate: move the file away, then SIGHUP.
    std::fs::rename(&from_cli, dir.path().join("from-cli.log.1")).expect("rotate");
    e.reload().expect("reload");
    e.log_line("after rotation");
    let now = std::fs::read_to_string(&from_cli).expect("reopened log");
    assert!(
        now.contains("after rotation") && !now.contains("before rotation"),
        "{now}"
    );
    assert!(
        !from_conf.exists(),
        "the command line's -g must win on reload too"
    );
}

/// logrotate moves the log away and sends SIGHUP while the config is broken: the reload fails
/// (the running config stays) and the log is reopened all the same.
#[tokio::test(start_paused = true)]
async fn a_failed_reload_still_reopens_the_log_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("knockd.conf");
    let log_path = dir.path().join("knockd.log");
    std::fs::write(
        &conf,
        format!(
            "[options]\n LogFile = {}\n[d]\n sequence = 1,5,3\n",
            log_path.display()
        ),
    )
    .expect("write");
    let config = crate::config::load(&conf).expect("load").config;
    let log = crate::knocklog::KnockLog::open(Some(&log_path), false).expect("log");
    let mut e = Engine::new(
        config,
        conf.clone(),
        FakeExec::default(),
        Arc::new(RecordingFirewall::default()),
        log,
        Box::new(|_| {}),
    );
    e.log_line("before rotation");
    std::fs::rename(&log_path, dir.path().join("knockd.log.1")).expect("rotate");
    std::fs::write(&conf, "[d]\n sequence = 1,abc\n").expect("break the config");
    assert!(e.reload().is_err());
    e.log_line("after rotation");
    let now = std::fs::read_to_string(&log_path).expect("reopened log");
    assert!(now.contains("after rotation"), "{now}");
    assert!(now.contains("reload failed"), "{now}");
}

fn slow_command_door() -> Config {
    let mut d = door("web", &[1000, 2000, 3000]);
    d.start_command = Some("open %IP%".into());
    d.stop_command = Some("close %IP%".into());
    d.cmd_timeout = Duration::from_secs(5);
    Config {
        doors: vec![d],
        ..Config::default()
    }
}

fn nth(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i))
}

/// A flood that completes the sequence from many sources (here from 200 networks, with no
/// start rate to speak of): a few commands run, a bounded number are admitted to the pool,
/// a bounded number wait in the door's fair queue, the rest is refused and counted; once the
/// pool drains, the waiting ones start, and grants close.
#[tokio::test(start_paused = true)]
async fn the_command_pool_is_bounded_and_overflow_is_counted() {
    use super::{POOL_QUEUE, POOL_SIZE};
    use crate::fairstart::QUEUE_CAP;
    let mut config = slow_command_door();
    config.options.start_rate = Some(100_000);
    let mut t = T::new(config);
    t.exec.hold_on("open ");
    for i in 0..200 {
        t.knock_seq(nth(i * 256), &[1000, 2000, 3000]);
    }
    t.settle().await;
    assert_eq!(t.exec.ran().len(), POOL_SIZE, "running at once");
    assert_eq!(t.e.ledger().len(), POOL_QUEUE, "admitted");
    assert_eq!(t.e.starts_waiting(), QUEUE_CAP, "waiting for the pool");
    assert_eq!(t.e.stats().refused_pool_full, 0);
    assert_eq!(
        t.e.stats().refused_start_queue,
        (200 - POOL_QUEUE - QUEUE_CAP) as u64
    );
    assert!(t
        .lines()
        .iter()
        .any(|l| l.contains("open(s) refused") && l.contains("command pool full")));
    let refusal_lines = t.lines().iter().filter(|l| l.contains("refused")).count();
    assert_eq!(refusal_lines, 1, "refusals are logged at a limited rate");
    // Timers keep firing while the pool is saturated; each close waits for its own start.
    t.advance(Duration::from_secs(5)).await;
    t.settle().await;
    assert!(t.has_line("10.200.0.0: web: command timeout"));
    assert!(!t.exec.ran().iter().any(|c| c.starts_with("close ")));
    t.exec.release();
    for _ in 0..20 {
        t.settle().await;
    }
    // The waiting starts went as the pool drained; their grants time out 5 s later.
    assert_eq!(t.e.starts_waiting(), 0);
    t.advance(Duration::from_secs(5)).await;
    for _ in 0..20 {
        t.settle().await;
    }
    assert_eq!(
        t.exec
            .ran()
            .iter()
            .filter(|c| c.starts_with("open "))
            .count(),
        POOL_QUEUE + QUEUE_CAP
    );
    // Every admitted start ran, and every grant's close ran after its start.
    assert!(t.e.ledger().is_empty());
    assert_eq!(
        t.exec
            .ran()
            .iter()
            .filter(|c| c.starts_with("close "))
            .count(),
        POOL_QUEUE + QUEUE_CAP
    );
}

/// The seed's case: a sniffed sequence completed from thousands of spoofed sources (256 per
/// /24, one after the other) against a command door with the default StartRate. The door
/// starts at most its rate, and the legitimate client's network, knocking every 0.5 s, gets
/// its start within one token interval every time.
#[tokio::test(start_paused = true)]
async fn a_completing_flood_cannot_starve_a_legit_network_of_command_starts() {
    use crate::config::model::DEFAULT_START_RATE;
    let mut t = T::new(slow_command_door());
    let legit = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let token = Duration::from_secs(1) / DEFAULT_START_RATE;
    let mut flood = 0u32;
    for round in 0..8u32 {
        // 0.5 s of flood: 3,000 completions in 10 ms steps.
        for _ in 0..50 {
            for _ in 0..60 {
                t.knock_seq(nth(flood), &[1000, 2000, 3000]);
                flood += 1;
            }
            t.advance(Duration::from_millis(10)).await;
        }
        t.knock_seq(legit, &[1000, 2000, 3000]);
        t.settle().await;
        t.advance(token).await;
        let mine = format!("open {legit}");
        assert_eq!(
            t.exec.ran().iter().filter(|c| **c == mine).count(),
            1 + round as usize,
            "round {round}: the legit start ran within {token:?}"
        );
        // Close it so that the next knock is a new grant.
        t.e.on_request(knock_ipc::Request::Revoke {
            addr: legit,
            door: None,
        });
        t.settle().await;
    }
    let starts = t
        .exec
        .ran()
        .iter()
        .filter(|c| c.starts_with("open "))
        .count();
    let limit = (4.0 * DEFAULT_START_RATE as f64 + DEFAULT_START_RATE as f64 + 10.0) as usize;
    assert!(starts <= limit, "{starts} starts in 4 s (limit {limit})");
    let s = t.e.stats();
    assert!(s.refused_start_network + s.refused_start_queue + s.refused_start_displaced > 20_000);
    // Refused completions are counted and summarised, not logged one OPEN SESAME each.
    let lines = t.lines();
    let sesame = lines.iter().filter(|l| l.ends_with("OPEN SESAME")).count();
    assert!(
        sesame < 2_000,
        "{sesame} OPEN SESAME lines for 24,000 completions"
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("open(s) refused") && l.contains("busy network")));
}

#[tokio::test(start_paused = true)]
async fn max_grants_refuses_new_grants_but_not_reknocks() {
    let mut config = native();
    config.options.max_grants = Some(3);
    let mut t = T::new(config);
    for i in 0..5 {
        t.knock_seq(nth(i), &[1111, 2222, 3333]);
    }
    t.settle().await;
    assert_eq!(t.e.ledger().len(), 3);
    assert_eq!(t.fw.rules().len(), 3);
    assert_eq!(t.e.stats().refused_max_grants, 2);
    // A re-knock of an open grant is a deadline change, never refused.
    t.knock_seq(nth(0), &[1111, 2222, 3333]);
    t.settle().await;
    assert_eq!(t.e.stats().refused_max_grants, 2);
    assert_eq!(
        t.e.ledger().find("ssh", nth(0)).map(|g| g.refreshes),
        Some(1)
    );
}

/// A close that fails keeps the grant, as closing with its error, and is retried with
/// backoff until it succeeds.
#[tokio::test(start_paused = true)]
async fn a_failed_close_is_retried_and_visible_until_it_succeeds() {
    let mut t = T::new(native());
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    t.settle().await;
    t.fw.fail_on("delete");
    t.advance(Duration::from_secs(30)).await;
    t.settle().await;
    let g = t.e.ledger().list()[0].clone();
    let c = g.closing.clone().expect("closing");
    assert_eq!(c.failures, 1);
    assert!(c
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("injected failure")));
    let info = match t.e.on_request(knock_ipc::Request::Grants) {
        knock_ipc::Response::Grants { grants, .. } => grants,
        other => panic!("{other:?}"),
    };
    assert!(info[0].closing, "{info:?}");
    assert!(info[0]
        .close_error
        .as_deref()
        .is_some_and(|e| e.contains("injected")));
    assert!(t.has_line("10.99.77.2: ssh: close failed: grant kept as closing, retry in 1s"));
    // Backoff: 1 s, then 2 s.
    t.advance(Duration::from_secs(1)).await;
    t.settle().await;
    assert_eq!(
        t.fw.ops()
            .iter()
            .filter(|o| o.starts_with("delete"))
            .count(),
        2
    );
    t.advance(Duration::from_secs(1)).await;
    t.settle().await;
    assert_eq!(
        t.fw.ops()
            .iter()
            .filter(|o| o.starts_with("delete"))
            .count(),
        2
    );
    // A new knock meanwhile opens a new grant; the old one is still closing.
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    t.settle().await;
    assert_eq!(t.e.ledger().len(), 2);
    t.fw.heal();
    t.advance(Duration::from_secs(1)).await;
    t.settle().await;
    assert_eq!(t.e.ledger().len(), 1);
    assert!(t.e.ledger().list()[0].closing.is_none());
    assert!(t.has_line("10.99.77.2: ssh: closing again (attempt 3)"));
}

/// Shutdown with a close that fails: the grant stays in the state file as closing, and the
/// next start closes it.
#[tokio::test(start_paused = true)]
async fn shutdown_with_a_failing_close_keeps_the_grant_for_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let mut t = T::new(native());
    t.e.persistence.set_path(state.clone());
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    t.settle().await;
    t.fw.fail_on("delete");
    t.e.shutdown().await;
    let saved = crate::state::load(&state).expect("state");
    assert_eq!(saved.len(), 1);
    assert!(saved[0].closing);
    assert!(saved[0].close_error.is_some());
    assert!(t.lines().iter().any(|l| l.contains("could not be closed")));
    // Next start: closed at once, whatever its deadline.
    let fw = t.fw.clone();
    fw.heal();
    let mut t2 = T::new(native());
    t2.fw = fw.clone();
    t2.e.runner.set_firewall(Arc::new(fw.clone()));
    t2.e.restore(saved).await;
    t2.settle().await;
    assert!(fw.rules().is_empty());
    assert!(t2.e.ledger().is_empty());
    assert!(t2.has_line("10.99.77.2: ssh: grant was still closing when knockd stopped, closing it"));
}

/// After a reload that changes a native door's ports, a re-knock closes exactly the rules
/// the grant opened and opens the new ones: no rule outlives its grant.
#[tokio::test(start_paused = true)]
async fn a_reknock_after_a_reload_that_changed_the_rules_closes_the_old_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("knockd.conf");
    let text = |port: u16| {
        format!("[ssh]\n sequence = 1111,2222,3333\n open = {port}/tcp\n cmd_timeout = 30\n tcpflags = syn\n")
    };
    std::fs::write(&conf, text(22)).expect("write");
    let mut t = T::new(crate::config::load(&conf).expect("load").config);
    t.e.config_path = conf.clone();
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    t.settle().await;
    std::fs::write(&conf, text(2222)).expect("write");
    t.e.reload().expect("reload");
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    t.settle().await;
    t.settle().await;
    let ports: Vec<u16> = t.fw.rules().iter().map(|r| r.port).collect();
    assert_eq!(ports, vec![2222], "{:?}", t.fw.ops());
    let g = t.e.ledger().find("ssh", CLI).cloned().expect("grant");
    assert!(matches!(&g.close, Close::Rules { rules } if rules[0].port == 2222));
    t.advance(Duration::from_secs(30)).await;
    t.settle().await;
    assert!(t.fw.rules().is_empty(), "{:?}", t.fw.ops());
    assert!(t.e.ledger().is_empty());
}

fn saved_native(ports: &[u16], expires_in: i64) -> crate::state::SavedGrant {
    use crate::action::FwRule;
    crate::state::SavedGrant {
        door: "ssh".into(),
        addr: CLI,
        opened: "x".into(),
        opened_at_unix_ms: 1,
        expires_at_unix_ms: Some(crate::state::unix_ms(std::time::SystemTime::now()) + expires_in),
        close: Close::Rules {
            rules: ports
                .iter()
                .map(|&port| FwRule {
                    chain: "INPUT".into(),
                    src: CLI,
                    proto: Proto::Tcp,
                    port,
                    door: "ssh".into(),
                    instance: None,
                })
                .collect(),
        },
        refreshes: 0,
        closing: false,
        close_error: None,
        client: None,
    }
}

/// Restore with one rule of a two-rule grant gone: the other rule is closed, not forgotten.
#[tokio::test(start_paused = true)]
async fn restore_closes_what_is_left_of_a_partial_grant() {
    let mut t = T::new(native());
    let g = saved_native(&[22, 443], 60_000);
    if let Close::Rules { rules } = &g.close {
        t.fw.add_rule(rules[1].clone()); // 443 is there, 22 is gone
    }
    t.e.restore(vec![g]).await;
    t.settle().await;
    t.settle().await;
    assert!(t.fw.rules().is_empty(), "{:?}", t.fw.ops());
    assert!(t.e.ledger().is_empty());
    assert!(
        t.has_line("10.99.77.2: ssh: 1 of 2 rules no longer in the firewall: closing the others")
    );
    // All there: kept, closes on schedule. None there: forgotten, never re-opened.
    let mut t = T::new(native());
    let all = saved_native(&[22], 60_000);
    if let Close::Rules { rules } = &all.close {
        t.fw.add_rule(rules[0].clone());
    }
    let mut none = saved_native(&[22], 60_000);
    none.addr = "10.99.77.3".parse().expect("ip");
    if let Close::Rules { rules } = &mut none.close {
        rules[0].src = none.addr;
    }
    t.e.restore(vec![all, none]).await;
    t.settle().await;
    assert_eq!(t.e.ledger().len(), 1);
    assert!(!t.fw.ops().iter().any(|o| o.starts_with("add")));
}

/// The state file is data: a stop command written into it is never run; the config's door
/// of that name provides the command, and a grant whose door is gone is reported.
#[tokio::test(start_paused = true)]
async fn a_tampered_state_file_cannot_run_commands() {
    let mut config = slow_command_door();
    config.doors[0].name = "web".into();
    let mut t = T::new(config);
    let past = crate::state::unix_ms(std::time::SystemTime::now()) - 1000;
    let mk = |door: &str, close: Close| crate::state::SavedGrant {
        door: door.into(),
        addr: CLI,
        opened: "open".into(),
        opened_at_unix_ms: 1,
        expires_at_unix_ms: Some(past),
        close,
        refreshes: 0,
        closing: false,
        close_error: None,
        client: None,
    };
    let w = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    t.e.restore(vec![
        mk(
            "web",
            Close::StopCommand {
                command: "id > /tmp/pwned".into(),
            },
        ),
        mk(
            "gone",
            Close::StopCommand {
                command: "id > /tmp/pwned2".into(),
            },
        ),
        mk(
            "gone",
            Close::Derived {
                delete: w("/tmp/evil/iptables -D INPUT -s 10.99.77.2 -j ACCEPT"),
                check: w("/tmp/evil/iptables -C INPUT -s 10.99.77.2 -j ACCEPT"),
            },
        ),
    ])
    .await;
    t.settle().await;
    assert_eq!(
        t.exec.ran(),
        vec!["close 10.99.77.2"],
        "only the config's stop command"
    );
    assert!(t.lines().iter().any(|l| l.contains(
        "door 'gone' is no longer in the config or has no Stop_Command: the stop command recorded in the state file is not run"
    )));
    assert!(t
        .lines()
        .iter()
        .any(|l| l.contains("is not an iptables -D for this address: not run")));
}

static REPLAY_WALL_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn replay_wall() -> Duration {
    Duration::from_millis(REPLAY_WALL_MS.load(std::sync::atomic::Ordering::Relaxed))
}

/// Issue 10: the replay memory of a TOTP door survives a reload (and so do attempts in
/// progress) and a restart (through the state file); it expires with the window, and a
/// state file entry whose ports are not what the secret derives counts for nothing.
#[tokio::test(start_paused = true)]
async fn totp_replay_memory_survives_reload_and_restart() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("rot.totp");
    let spec = knock_ipc::totp::Spec::write_new(&secret).expect("secret");
    let conf = dir.path().join("knockd.conf");
    std::fs::write(
        &conf,
        format!(
            "[rot]\n TOTP_File = {}\n seq_timeout = 20\n command = open %IP%\n tcpflags = syn\n",
            secret.display()
        ),
    )
    .expect("write");
    let state = dir.path().join("state.json");
    let step = 58_000_000u64;
    REPLAY_WALL_MS.store((spec.step_start(step) + 1) * 1000, Ordering::Relaxed);
    let start = |state: &std::path::Path| {
        let mut t = T::new(crate::config::load(&conf).expect("load").config);
        t.e.config_path = conf.clone();
        t.e.persistence.set_path(state.to_path_buf());
        t.e.set_wall_clock(replay_wall);
        t
    };
    let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
        "10.99.77.2".parse().expect("ip"),
        "10.99.77.9".parse().expect("ip"),
        "10.99.77.10".parse().expect("ip"),
    );
    let mut t = start(&state);
    t.knock_seq(a, &spec.ports(step));
    // C is halfway through the previous step's sequence when the reload comes.
    let prev = spec.ports(step - 1);
    t.knock_seq(c, &prev[..2]);
    t.settle().await;
    assert_eq!(t.exec.ran(), vec!["open 10.99.77.2"]);
    t.e.reload().expect("reload");
    t.knock_seq(b, &spec.ports(step));
    t.knock_seq(c, &prev[2..]);
    t.settle().await;
    assert_eq!(
        t.exec.ran(),
        vec!["open 10.99.77.2", "open 10.99.77.10"],
        "replay from B refused after the reload; C's attempt survived it: {:?}",
        t.lines()
    );
    assert!(
        t.lines()
            .iter()
            .any(|l| l.starts_with("10.99.77.9: rot: sequence refused: replay")),
        "{:?}",
        t.lines()
    );
    t.e.flush_state().await;
    let saved = crate::state::load_all(&state).expect("state");
    assert_eq!(saved.totp_replay.len(), 2, "{saved:?}");

    // Restart: the memory comes back from the state file.
    let mut t2 = start(&state);
    t2.e.restore_all(saved.clone(), None).await;
    assert!(
        t2.has_line("replay memory: 2 of 2 TOTP step(s) from the state file still in their window")
    );
    t2.knock_seq(b, &spec.ports(step));
    t2.knock_seq(b, &prev);
    t2.settle().await;
    assert!(t2.exec.ran().is_empty(), "{:?}", t2.lines());
    // The address it opened for may re-knock.
    t2.knock_seq(a, &spec.ports(step));
    t2.settle().await;
    assert_eq!(t2.exec.ran(), vec!["open 10.99.77.2"]);
    t2.e.flush_state().await;
    assert_eq!(
        crate::state::load_all(&state).expect("state").totp_replay,
        saved.totp_replay,
        "written back after the restart"
    );

    // A tampered entry (ports that are not the secret's) counts for nothing.
    let mut forged = saved.clone();
    forged.totp_replay.retain(|r| r.step == step);
    forged.totp_replay[0].ports[0] ^= 1;
    let other = dir.path().join("other.json");
    let mut t3 = start(&other);
    t3.e.restore_all(forged, None).await;
    assert!(
        t3.has_line("replay memory: 0 of 1 TOTP step(s) from the state file still in their window")
    );

    // Two steps later the entries have left the window: forgotten, and gone from the file.
    REPLAY_WALL_MS.store((spec.step_start(step + 2) + 1) * 1000, Ordering::Relaxed);
    let mut t4 = start(&state);
    t4.e.restore_all(saved, None).await;
    assert!(
        t4.has_line("replay memory: 0 of 2 TOTP step(s) from the state file still in their window")
    );
    t4.e.flush_state().await;
    let left = crate::state::load_all(&state).expect("state").totp_replay;
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 10, fail closed across restarts: a one-time sequence used while its file could not
/// be rewritten is kept in the state file; the next start records it (the file is writable
/// again) instead of accepting the used line, and forgets entries its file already records.
#[tokio::test(start_paused = true)]
async fn an_unrecorded_one_time_sequence_stays_used_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let otp = dir.path().join("seqs");
    let text = " 7001,7002,7003\n 8001,8002,8003\n";
    std::fs::write(&otp, text).expect("write");
    let conf = dir.path().join("knockd.conf");
    std::fs::write(
        &conf,
        format!(
            "[otp]\n one_time_sequences = {}\n command = open %IP%\n tcpflags = syn\n",
            otp.display()
        ),
    )
    .expect("write");
    let state = dir.path().join("state.json");
    let start = || {
        let mut t = T::new(crate::config::load(&conf).expect("load").config);
        t.e.persistence.set_path(state.clone());
        t
    };
    let mut t = start();
    std::fs::remove_file(&otp).expect("rm");
    t.knock_seq(CLI, &[7001, 7002, 7003]);
    t.settle().await;
    assert_eq!(t.exec.ran(), vec!["open 10.99.77.2"]);
    t.e.flush_state().await;
    let saved = crate::state::load_all(&state).expect("state");
    assert_eq!(
        saved.one_time_used,
        vec![crate::state::SavedOneTime {
            file: otp.clone(),
            sequence: "7001:tcp,7002:tcp,7003:tcp".into()
        }]
    );
    // Restart with the file back as it was (its used line not marked).
    std::fs::write(&otp, text).expect("write");
    let mut t2 = start();
    t2.e.restore_all(saved.clone(), None).await;
    assert!(
        t2.has_line("door otp: recorded the one-time sequence used before the restart"),
        "{:?}",
        t2.lines()
    );
    assert_eq!(
        std::fs::read_to_string(&otp).expect("read"),
        "# 7001,7002,7003\n 8001,8002,8003\n"
    );
    t2.knock_seq(CLI, &[7001, 7002, 7003]);
    t2.settle().await;
    assert!(t2.exec.ran().is_empty(), "the used line stays used");
    t2.knock_seq(CLI, &[8001, 8002, 8003]);
    t2.settle().await;
    assert_eq!(t2.exec.ran(), vec!["open 10.99.77.2"]);
    t2.e.flush_state().await;
    assert!(crate::state::load_all(&state)
        .expect("state")
        .one_time_used
        .is_empty());
    // An entry its file already records is forgotten; one for an unreadable file is kept.
    let mut t3 = start();
    let mut gone = saved.clone();
    gone.one_time_used.push(crate::state::SavedOneTime {
        file: dir.path().join("missing"),
        sequence: "1,2,3".into(),
    });
    t3.e.restore_all(gone, None).await;
    t3.e.flush_state().await;
    let left = crate::state::load_all(&state).expect("state").one_time_used;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].file, dir.path().join("missing"));
}

static RENAME_WALL_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn rename_wall() -> Duration {
    Duration::from_millis(RENAME_WALL_MS.load(std::sync::atomic::Ordering::Relaxed))
}

/// The replay memory follows the secret, not the door's name: renaming the door (same
/// secret file) in a reload, or between two runs, keeps it.
#[tokio::test(start_paused = true)]
async fn totp_replay_memory_follows_the_secret_across_a_rename() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("rot.totp");
    let spec = knock_ipc::totp::Spec::write_new(&secret).expect("secret");
    let conf = dir.path().join("knockd.conf");
    let text = |name: &str| {
        format!(
            "[{name}]\n TOTP_File = {}\n command = open %IP%\n tcpflags = syn\n",
            secret.display()
        )
    };
    std::fs::write(&conf, text("rot")).expect("write");
    let state = dir.path().join("state.json");
    let step = 58_000_100u64;
    RENAME_WALL_MS.store((spec.step_start(step) + 1) * 1000, Ordering::Relaxed);
    let start = || {
        let mut t = T::new(crate::config::load(&conf).expect("load").config);
        t.e.config_path = conf.clone();
        t.e.persistence.set_path(state.clone());
        t.e.set_wall_clock(rename_wall);
        t
    };
    let b: IpAddr = "10.99.77.9".parse().expect("ip");
    let mut t = start();
    t.knock_seq(CLI, &spec.ports(step));
    std::fs::write(&conf, text("renamed")).expect("write");
    t.e.reload().expect("reload");
    t.knock_seq(b, &spec.ports(step));
    t.settle().await;
    assert_eq!(t.exec.ran(), vec!["open 10.99.77.2"], "{:?}", t.lines());
    t.e.flush_state().await;
    // The next run calls it differently again.
    std::fs::write(&conf, text("again")).expect("write");
    let mut t2 = start();
    t2.e.restore_all(crate::state::load_all(&state).expect("state"), None)
        .await;
    t2.knock_seq(b, &spec.ports(step));
    t2.settle().await;
    assert!(t2.exec.ran().is_empty(), "{:?}", t2.lines());
}

/// The capture filter is built in one place: the engine sends what `capture::filter_for`
/// builds (and `knockd -t` fits), doors without a sequence included: a disabled door's
/// `Target` stays a destination the sweep guard watches, in the filter as in the matcher.
#[tokio::test]
async fn the_engine_sends_the_one_capture_filter() {
    let mut c = seed();
    let mut off = door("off", &[]);
    let target: IpAddr = "10.99.77.9".parse().expect("ip");
    off.target = Some(target);
    c.doors.push(off);
    let t = T::new(c.clone());
    let sent = t
        .filters
        .lock()
        .map(|f| f.last().cloned())
        .ok()
        .flatten()
        .expect("a filter");
    assert_eq!(sent, crate::capture::filter_for(&c, &[], |_| None));
    assert!(sent.contains("dst host 10.99.77.9"), "{sent}");
    let checked = crate::capture::filter_doors(&c.doors, |_| None);
    assert_eq!(checked.len(), 3, "knockd -t fits the same doors");
}

/// Issue 21.8: at start the firewall is the truth for iptables too. A rule with this
/// instance's mark that no grant records is closed (and listed as closing until it is gone);
/// another instance's and a pre-tag rule stay; a recorded grant's rule is left to its grant.
#[tokio::test(start_paused = true)]
async fn at_start_rules_with_its_own_mark_and_no_grant_are_closed_and_no_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let mut t = T::new(native());
    t.e.persistence.set_path(state.clone());
    let own = Some(t.e.config.options.instance_tag());
    t.knock_seq(CLI, &[1111, 2222, 3333]);
    // The open waits for its record (written on a thread of its own, in real time).
    for _ in 0..500 {
        if !t.fw.rules().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        t.advance(Duration::from_millis(10)).await;
        t.settle().await;
    }
    let recorded = t.fw.rules()[0].clone();
    assert_eq!(recorded.instance, own);
    t.e.flush_state().await;
    let saved = crate::state::load_all(&state).expect("state");
    assert_eq!(saved.grants.len(), 1);
    let rule = |src: &str, instance: Option<&str>| crate::firewall::FwRule {
        src: src.parse().expect("ip"),
        instance: instance.map(String::from),
        ..recorded.clone()
    };
    let unrecorded = rule("10.99.77.9", own.as_deref());
    let other = rule("10.99.77.10", Some("00000000"));
    let old = rule("10.99.77.11", None);
    for r in [&unrecorded, &other, &old] {
        t.fw.add_rule(r.clone());
    }
    let fw = t.fw.clone();
    let mut t2 = T::new(native());
    t2.fw = fw.clone();
    t2.e.runner.set_firewall(Arc::new(fw.clone()));
    t2.e.restore_all(saved, None).await;
    t2.settle().await;
    let left: std::collections::HashSet<crate::firewall::FwRule> = fw.rules().into_iter().collect();
    assert_eq!(left, [recorded, other, old].into_iter().collect());
    assert_eq!(t2.e.ledger().len(), 1, "the recorded grant stays");
    let said = |s: &str| t2.lines().iter().any(|l| l.contains(s));
    assert!(said("10.99.77.9: knockd@"), "{:?}", t2.lines());
    assert!(said(
        "carries this knockd's mark but no grant records it: closing it"
    ));
    assert!(said("1 rule(s) of another knockd instance"));
    assert!(said(
        "1 rule(s) carry the mark of a knockd before instance tags"
    ));
}
