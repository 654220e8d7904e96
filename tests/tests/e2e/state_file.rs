//! The state file is data (issue 21): what a previous run recorded is believed only in the
//! exact shape knockd writes. A crafted state file must not make knockd delete an admin's
//! rule at start.

use knock_e2e::knockd::{knockd_args, srv_ok, OurKnockd};
use knock_e2e::{require_root, wait_until, Lab};
use std::time::Duration;

const DOOR: &str = "[ssh]\n sequence = 2222,1111,3333\n tcpflags = syn\n open = 22/tcp\n";

/// The admin's own rules, as `iptables -S INPUT` prints them.
const ADMIN_DROP: &str = "-A INPUT -p tcp -m tcp --dport 22 -j DROP";
const ADMIN_DROP_ONE: &str = "-A INPUT -s 10.9.9.9/32 -p tcp -m tcp --dport 22 -j DROP";

fn crafted_grant(door: &str, delete: &str) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    serde_json::json!({
        "door": door,
        "addr": "10.9.9.9",
        "opened": "crafted",
        "opened_at_unix_ms": now - 10_000,
        "expires_at_unix_ms": now - 1_000,
        "close": {
            "kind": "derived",
            "delete": words(delete),
            "check": words(&delete.replacen(" -D ", " -C ", 1)),
        },
        "closing": true,
    })
}

/// Issue 21.6: recorded deletes of a door that is not in the config (`/0` = any source, a
/// DROP target, another table, `--modprobe=`) are reported and never run: the admin's DROP
/// rules survive knockd's start.
#[test]
fn a_crafted_state_file_does_not_remove_an_admins_drop_rule() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    srv_ok(
        &lab,
        &[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP",
        ],
    );
    srv_ok(
        &lab,
        &[
            "iptables", "-A", "INPUT", "-s", "10.9.9.9", "-p", "tcp", "--dport", "22", "-j", "DROP",
        ],
    );
    let crafted = [
        "iptables -w 5 -D INPUT -s 10.9.9.9/0 -p tcp --dport 22 -j DROP",
        "iptables -w 5 -D INPUT -s 10.9.9.9/32 -p tcp --dport 22 -j DROP",
        "iptables -t filter -D INPUT -s 10.9.9.9 -p tcp --dport 22 -j DROP",
        "iptables --modprobe=/bin/true -D INPUT -s 10.9.9.9/0 -p tcp --dport 22 -j DROP",
        "iptables -D INPUT -s 10.9.9.9 -p tcp --dport 22 -j ACCEPT -s 0.0.0.0/0",
    ];
    let grants: Vec<_> = crafted
        .iter()
        .enumerate()
        .map(|(i, d)| crafted_grant(&format!("gone{i}"), d))
        .collect();
    let state = serde_json::json!({"format": 1, "written_by": "test", "grants": grants});
    lab.write_file("state.json", &state.to_string());
    let k = OurKnockd::start(&lab, DOOR);
    assert!(
        wait_until(Duration::from_secs(10), || k.count("not run")
            >= crafted.len()),
        "not every crafted delete was reported:\n{}",
        k.log()
    );
    let rules = lab.iptables_rules(false);
    assert!(rules.contains(ADMIN_DROP), "{rules}\n{}", k.log());
    assert!(rules.contains(ADMIN_DROP_ONE), "{rules}\n{}", k.log());
    assert!(k.daemon.is_running());
}

/// Fills `dir` (as `pid` sees it, through /proc/<pid>/root) with a file until the disk is
/// full.
fn fill(pid: u32, dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = std::path::PathBuf::from(format!("/proc/{pid}/root{}/filler", dir.display()));
    let mut f = std::fs::File::create(&filler).expect("create the filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    filler
}

/// Issue 21.8: with the state file's filesystem full (a 256 KiB tmpfs in knockd's own mount
/// namespace), an open fails closed: refused with a log line and a counter, no rule, and
/// `knockctl status` and metrics say since when the file cannot be written. Once the disk has
/// room the writer catches up by itself, and the next knock opens.
#[test]
fn a_full_disk_refuses_opens_says_so_and_recovers() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let dir = lab.path("statedir");
    std::fs::create_dir(&dir).expect("mkdir");
    let conf = lab.write_file("knockd.conf", DOOR);
    let socket = lab.path("knockd.sock");
    let script = r#"mount -t tmpfs -o size=256k,mode=0700 knock-e2e-state "$1" || exit 97; shift; exec "$@""#;
    let mut args: Vec<std::ffi::OsString> = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    args.push(dir.clone().into_os_string());
    args.extend(knockd_args(&conf, &socket, &dir.join("state.json")));
    let k = OurKnockd {
        daemon: lab.spawn_srv(args),
        conf,
        socket,
    };
    k.wait_started();
    let pid = k.daemon.pid();
    let filler = fill(pid, &dir);
    let rule = knock_e2e::knockd::native_rule(22, "ssh");
    let seq = [knock_e2e::SRV_V4, "2222", "1111", "3333"];
    knock_e2e::knockd::knock(&lab, &seq);
    assert!(
        k.wait_count(
            "open refused: the state file cannot record it",
            1,
            Duration::from_secs(10)
        ),
        "{}",
        k.log()
    );
    assert_eq!(
        knock_e2e::knockd::rule_count(&lab, false, &rule),
        0,
        "a rule without its record:\n{}",
        lab.iptables_rules(false)
    );
    let status = String::from_utf8_lossy(&k.knockctl(&["status"]).stdout).into_owned();
    assert!(
        status.contains("state file  CANNOT BE WRITTEN since "),
        "{status}"
    );
    assert!(status.contains("state file unwritable 1"), "{status}");
    let metrics = String::from_utf8_lossy(&k.knockctl(&["metrics"]).stdout).into_owned();
    assert!(
        metrics.contains("knockd_state_write_failing 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("knockd_refusals_total{reason=\"state_unwritable\"} 1"),
        "{metrics}"
    );
    assert!(k.knockctl(&["list"]).status.success());
    // Room again: the writer catches up within its retry interval, the next knock opens.
    std::fs::remove_file(&filler).expect("free the disk");
    assert!(
        wait_until(Duration::from_secs(10), || String::from_utf8_lossy(
            &k.knockctl(&["status"]).stdout
        )
        .contains("state file  ok")),
        "{}",
        k.log()
    );
    knock_e2e::knockd::knock(&lab, &seq);
    assert!(
        knock_e2e::knockd::wait_rule(&lab, false, &rule, Duration::from_secs(10)),
        "{}",
        k.log()
    );
    let state = std::fs::read_to_string(format!("/proc/{pid}/root{}/state.json", dir.display()))
        .expect("read the state file");
    assert!(state.contains("\"door\": \"ssh\""), "{state}");
}

/// Issue 21.8, the crash: knockd is killed (-9) with its state file's disk full, and started
/// again on the same full disk. No rule of its outlives its deadline, and a rule that carries
/// its mark but whose grant never reached the state file (here put in by hand, as a crash
/// before the record would leave it) is closed at the restart. The rules of another instance
/// (another tag) and of a knockd before the tags (`knockd:ssh`) in the same chain stay.
#[test]
fn a_kill_on_a_full_disk_then_a_restart_leaves_no_rule_of_its_own_behind() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let dir = lab.path("statedir");
    std::fs::create_dir(&dir).expect("mkdir");
    // The small tmpfs outlives each knockd: a holder process keeps its mount namespace, and
    // both runs enter it.
    let holder = lab.spawn_srv([
        "unshare".into(),
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        r#"mount -t tmpfs -o size=256k,mode=0700 knock-e2e-state "$1" || exit 97; exec sleep 600"#
            .into(),
        "sh".into(),
        dir.clone().into_os_string(),
    ]
    .into_iter()
    .collect::<Vec<std::ffi::OsString>>());
    let mountinfo = format!("/proc/{}/mountinfo", holder.pid());
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(
            &mountinfo
        )
        .is_ok_and(|m| m.contains("knock-e2e-state"))),
        "the tmpfs never came"
    );
    let conf = lab.write_file("knockd.conf", &format!("{DOOR} cmd_timeout = 6\n"));
    let socket = lab.path("knockd.sock");
    let start = || {
        let mut args: Vec<std::ffi::OsString> = vec![
            "nsenter".into(),
            "-t".into(),
            holder.pid().to_string().into(),
            "-m".into(),
            "--".into(),
        ];
        args.extend(knockd_args(&conf, &socket, &dir.join("state.json")));
        let k = OurKnockd {
            daemon: lab.spawn_srv(args),
            conf: conf.clone(),
            socket: socket.clone(),
        };
        k.wait_started();
        k
    };
    let k = start();
    let rule = knock_e2e::knockd::native_rule(22, "ssh");
    let seq = [knock_e2e::SRV_V4, "2222", "1111", "3333"];
    knock_e2e::knockd::knock(&lab, &seq);
    assert!(
        knock_e2e::knockd::wait_rule(&lab, false, &rule, Duration::from_secs(5)),
        "{}",
        k.log()
    );
    let opened = std::time::Instant::now();
    // Its rule carries its tag: the same mark on a rule for another source is one whose grant
    // never reached the state file.
    let raw = lab.iptables_rules_raw(false);
    let mark = raw
        .split('"')
        .find(|w| w.starts_with("knockd@") && w.ends_with(":ssh"))
        .unwrap_or_else(|| panic!("no tagged comment in:\n{raw}"))
        .to_string();
    let add = |src: &str, comment: &str| {
        srv_ok(
            &lab,
            &[
                "iptables",
                "-A",
                "INPUT",
                "-s",
                src,
                "-p",
                "tcp",
                "-m",
                "tcp",
                "--dport",
                "22",
                "-m",
                "comment",
                "--comment",
                comment,
                "-j",
                "ACCEPT",
            ],
        );
    };
    add("10.99.77.9/32", &mark);
    add("10.99.77.10/32", "knockd@00000000:ssh");
    add("10.99.77.11/32", "knockd:ssh");
    let filler = fill(holder.pid(), &dir);
    k.daemon.kill_9();
    k.daemon.wait_exit(Duration::from_secs(5));
    // The restart, on the same full disk.
    let k = start();
    let own = |raw: &str, src: &str| {
        raw.lines()
            .any(|l| l.contains(&format!("{src}/32")) && l.contains(&mark))
    };
    assert!(
        wait_until(Duration::from_secs(5), || !own(
            &lab.iptables_rules_raw(false),
            "10.99.77.9"
        )),
        "the unrecorded rule of its own stayed:\n{}\n{}",
        lab.iptables_rules_raw(false),
        k.log()
    );
    assert!(
        k.log()
            .contains("carries this knockd's mark but no grant records it"),
        "{}",
        k.log()
    );
    // The recorded grant closes at its deadline (6 s after the open), full disk or not.
    assert!(
        wait_until(Duration::from_secs(15), || !own(
            &lab.iptables_rules_raw(false),
            knock_e2e::CLI_V4
        )),
        "the grant's rule outlived its deadline:\n{}\n{}",
        lab.iptables_rules_raw(false),
        k.log()
    );
    assert!(
        opened.elapsed() < Duration::from_secs(12),
        "closed {:?} after the open",
        opened.elapsed()
    );
    let raw = lab.iptables_rules_raw(false);
    assert!(
        raw.contains("\"knockd@00000000:ssh\""),
        "another instance's rule went:\n{raw}"
    );
    assert!(
        raw.contains("\"knockd:ssh\""),
        "an untagged rule went:\n{raw}"
    );
    assert!(
        k.log().contains("of another knockd instance"),
        "{}",
        k.log()
    );
    assert!(k.log().contains("before instance tags"), "{}", k.log());
    drop(filler);
    assert!(k.daemon.is_running());
}
