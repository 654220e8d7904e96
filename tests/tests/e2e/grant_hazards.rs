//! The grant pipeline under two hazards, end to end in namespaces:
//!
//! - a held xtables lock: knockd's firewall programs wait at most `-w 5` and are killed after
//!   their time limit, so the close of a grant fails (visibly, as closing with the lock error)
//!   instead of hanging, knockd keeps answering, and the grant closes once the lock is free;
//! - SIGHUPs that arrive while start-up restores thousands of grants from the state file are
//!   reloads, never fatal.
//!
//! Debian 12's `iptables` is iptables-nft, which takes no xtables lock. So knockd runs in a
//! private mount namespace (inside the server's network namespace) with a tmpfs of its own
//! on `/run`, where `/run/xtables.lock` is a bind mount of a file in the lab's temp dir, and
//! `iptables`/`iptables-restore` resolve to the legacy variants (which honour the lock). The
//! test's own `iptables-legacy` listings run on a private `/run` too. The host's `/run` is
//! never touched: a fresh machine has no `/run/xtables.lock` (only iptables-legacy creates
//! it) and none is left behind.

use nix::fcntl::{Flock, FlockArg};
use std::ffi::OsString;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use knock_e2e::knockd::{knock, OurKnockd};
use knock_e2e::{require_root, wait_until, Lab, CLI_V4, SRV_V4};

const SEQ: [&str; 5] = [SRV_V4, "2222", "1111", "3333", "4444"];

fn door(cmd_timeout: u32) -> String {
    format!("[ssh]\n sequence = 2222,1111,3333,4444\n tcpflags = syn\n open = 22/tcp\n cmd_timeout = {cmd_timeout}\n")
}

/// Mounts a private tmpfs on `/run` (in the mount namespace this script runs in), so what
/// iptables-legacy creates there (`/run/xtables.lock`) never reaches the host.
const PRIVATE_RUN: &str = "mount -t tmpfs -o mode=0755 knock-e2e-run /run || exit 97";

/// A wrapper running the rest in a private mount namespace with its own `/run`, where
/// `/run/xtables.lock` is `lock` and the iptables programs are the legacy ones.
fn legacy_with_private_lock(lab: &Lab, lock: &std::path::Path) -> Vec<OsString> {
    let dir = lab.path("legacy-bin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, target) in [
        ("iptables", "iptables-legacy"),
        ("iptables-restore", "iptables-legacy-restore"),
        ("ip6tables", "ip6tables-legacy"),
        ("ip6tables-restore", "ip6tables-legacy-restore"),
    ] {
        symlink(format!("/usr/sbin/{target}"), dir.join(name)).expect("symlink");
    }
    let script = format!(
        r#"lock=$1; bin=$2; shift 2
{PRIVATE_RUN}
: >/run/xtables.lock || exit 97
mount --bind "$lock" /run/xtables.lock || exit 97
PATH="$bin:$PATH"; export PATH
exec "$@""#
    );
    [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]
    .into_iter()
    .map(OsString::from)
    .chain([lock.into(), dir.into()])
    .collect()
}

/// `iptables-legacy -S INPUT` in the server's namespace, on a private `/run` (its own free
/// lock: the lab's may be held).
fn legacy_rules(lab: &Lab) -> String {
    let script = format!("{PRIVATE_RUN}\nexec iptables-legacy -w 5 -S INPUT");
    let out = lab.srv_exec([
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "iptables-legacy -S INPUT: {out:?}");
    knock_e2e::untag(&String::from_utf8_lossy(&out.stdout))
}

fn has_grant_rule(lab: &Lab) -> bool {
    legacy_rules(lab)
        .lines()
        .any(|l| l.contains(&format!("{CLI_V4}/32")) && l.contains("knockd:ssh"))
}

fn grants(k: &OurKnockd) -> Vec<serde_json::Value> {
    let out = k.knockctl(&["--json", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .or_else(|| v.get("grants").and_then(|g| g.as_array()))
        .cloned()
        .unwrap_or_default()
}

/// Holds `lock` (flock, exclusive, as iptables-legacy takes it) until dropped.
fn hold_lock(lock: &std::path::Path) -> Flock<std::fs::File> {
    let f = std::fs::File::open(lock).expect("open the lab's lock file");
    Flock::lock(f, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock the lab's lock file: {e}"))
}

#[test]
fn a_held_xtables_lock_does_not_hang_knockd_and_the_grant_closes_once_it_is_free() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let lock = lab.write_file("xtables.lock", "");
    let k = OurKnockd::spawn_with(&lab, &door(2), legacy_with_private_lock(&lab, &lock), &[]);
    k.wait_started();
    knock(&lab, &SEQ);
    assert!(
        wait_until(Duration::from_secs(5), || has_grant_rule(&lab)),
        "not opened (legacy iptables):\n{}\n{}",
        legacy_rules(&lab),
        k.log()
    );
    // The lock is held from before the deadline (2 s) on.
    let holder = hold_lock(&lock);
    let held_at = Instant::now();
    // The close waits at most -w 5 per program (each also killed after its time limit) and
    // then fails: the grant stays, listed as closing with the lock error. Without time limits
    // (iptables -w waiting forever) this never shows up.
    let mut slowest = Duration::ZERO;
    let closing = wait_until(Duration::from_secs(30), || {
        let t = Instant::now();
        let status = k.knockctl(&["status"]);
        slowest = slowest.max(t.elapsed());
        assert!(status.status.success(), "{status:?}");
        grants(&k).iter().any(|g| {
            g["closing"] == true
                && g["close_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("lock"))
        })
    });
    assert!(
        closing,
        "no failed close after {:?} with the lock held:\n{}",
        held_at.elapsed(),
        k.log()
    );
    // knockd kept answering while its firewall waited for the lock.
    assert!(
        slowest < Duration::from_secs(2),
        "knockctl status took {slowest:?}"
    );
    assert!(
        has_grant_rule(&lab),
        "the rule went while the lock was held?"
    );
    // Written by the log's own thread, a moment after the status shows the grant closing.
    assert!(
        k.wait_count(
            "close failed: grant kept as closing",
            1,
            Duration::from_secs(2)
        ),
        "{}",
        k.log()
    );
    drop(holder);
    // Free: the retry closes it.
    assert!(
        wait_until(Duration::from_secs(30), || !has_grant_rule(&lab)
            && grants(&k).is_empty()),
        "the grant did not close once the lock was free:\n{}\n{}",
        legacy_rules(&lab),
        k.log()
    );
    assert!(k.daemon.is_running());
}

/// Grants a previous run left in the state file: `n` sources, their rules in INPUT, with
/// their deadline `expires_in_ms` from now (negative: past, the restore closes them), and
/// `forgotten` nftables grants.
fn previous_run(lab: &Lab, n: usize, expires_in_ms: i64, forgotten: usize) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let addrs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "10.{}.{}.{}",
                100 + i / 62_500,
                (i / 250) % 250,
                i % 250 + 1
            )
        })
        .collect();
    let grants: Vec<serde_json::Value> = addrs
        .iter()
        .map(|a| {
            serde_json::json!({
                "door": "ssh",
                "addr": a,
                "opened": "22/tcp (INPUT)",
                "opened_at_unix_ms": now - 1000,
                "expires_at_unix_ms": now + expires_in_ms,
                "close": {"kind": "rules", "rules": [
                    {"chain": "INPUT", "src": a, "proto": "tcp", "port": 22, "door": "ssh"}
                ]},
            })
        })
        .collect();
    // And nftables grants of a run with Firewall = nftables: not in any kernel table now, so
    // the restore only forgets them, but reading them makes start-up (before the signal
    // handlers exist) take a while.
    let mut grants = grants;
    grants.extend((0..forgotten).map(|i| {
        let a = format!(
            "10.{}.{}.{}",
            200 + i / 62_500,
            (i / 250) % 250,
            i % 250 + 1
        );
        serde_json::json!({
            "door": "ssh",
            "addr": a,
            "opened": "22/tcp (nftables)",
            "opened_at_unix_ms": now - 1000,
            "expires_at_unix_ms": now + 60_000,
            "close": {"kind": "nft", "elems": [{"addr": a, "proto": "tcp", "port": 22}]},
        })
    }));
    let state = serde_json::json!({"format": 1, "written_by": "test", "grants": grants});
    lab.write_file("state.json", &state.to_string());
    let mut rules = String::from("*filter\n");
    for a in &addrs {
        rules.push_str(&format!(
            "-I INPUT -s {a}/32 -p tcp -m tcp --dport 22 -m comment --comment knockd:ssh -j ACCEPT\n"
        ));
    }
    rules.push_str("COMMIT\n");
    let file = lab.write_file("rules.txt", &rules);
    let out = lab.srv_exec([
        "iptables-restore",
        "--noflush",
        file.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{out:?}");
    addrs
}

/// Is SIGHUP blocked or caught by `pid` (knockd has taken charge of it)?
fn hup_handled(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().any(|l| {
        (l.starts_with("SigBlk:") || l.starts_with("SigCgt:"))
            && l.split_whitespace()
                .nth(1)
                .and_then(|m| u64::from_str_radix(m, 16).ok())
                .is_some_and(|m| m & 1 != 0)
    })
}

/// nftables grants of an earlier run in the state file (forgotten at restore).
const FORGOTTEN: usize = 20_000;

fn knockd_rules(lab: &Lab) -> usize {
    lab.iptables_rules(false).matches("knockd:ssh").count()
}

#[test]
fn sighups_during_the_restore_of_thousands_of_grants_are_reloads() {
    if !require_root() {
        return;
    }
    const N: usize = 2000;
    let lab = Lab::new();
    previous_run(&lab, N, -500, FORGOTTEN);
    assert_eq!(knockd_rules(&lab), N);
    let k = OurKnockd::spawn(&lab, &door(8));
    // From the instant knockd holds SIGHUP (blocked from the first line of main, before the
    // config, the state file and the restore), SIGHUP it a few ms
    // apart through start-up, then every 20 ms while the restored grants are closed. Without
    // the hold, the first of these lands before the handler exists and kills knockd.
    let pid = k.daemon.pid();
    let comm = format!("/proc/{pid}/comm");
    let t0 = Instant::now();
    while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "knockd") {
        assert!(t0.elapsed() < Duration::from_secs(5), "knockd never ran");
    }
    // The hold is the first line of main, but on a loaded machine the first line may run well
    // after the exec: a SIGHUP before it is the default action (death), which no program can
    // prevent. Wait for the hold (it must come), then storm.
    let exec_at = Instant::now();
    while !hup_handled(pid) {
        assert!(
            exec_at.elapsed() < Duration::from_secs(5),
            "knockd never held or handled SIGHUP (SigBlk/SigCgt)"
        );
        std::thread::yield_now();
    }
    let mut sent = 0;
    let mut started_at = None;
    while t0.elapsed() < Duration::from_secs(60) {
        if !k.daemon.is_running() {
            break;
        }
        k.daemon.kill_hup();
        sent += 1;
        // (A few ms apart before it listens: a storm of `kill` processes must not starve it.)
        std::thread::sleep(Duration::from_millis(if started_at.is_some() {
            20
        } else {
            3
        }));
        if started_at.is_none() && k.log().contains("starting up, listening on kv0") {
            started_at = Some(Instant::now());
        }
        if started_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    assert!(
        k.daemon.is_running(),
        "knockd died after {sent} SIGHUP(s):\n{}",
        k.log()
    );
    assert!(started_at.is_some(), "never started:\n{}", k.log());
    assert!(
        k.wait_count("configuration reloaded", 1, Duration::from_secs(10)),
        "no SIGHUP became a reload ({sent} sent):\n{}",
        k.log()
    );
    assert!(
        k.count("grant expired while knockd was down") == N,
        "{}",
        k.log()
    );
    // Every restored grant is closed; knockd is still there afterwards.
    assert!(
        wait_until(Duration::from_secs(40), || knockd_rules(&lab) == 0),
        "{} of {N} rules left:\n{}",
        knockd_rules(&lab),
        k.log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(wait_until(Duration::from_secs(10), || grants(&k).is_empty()));
    assert!(k.daemon.is_running());
    assert!(k.knockctl(&["status"]).status.success());
}

#[test]
fn a_knock_right_after_restoring_thousands_of_grants_is_not_stuck_behind_their_checks() {
    if !require_root() {
        return;
    }
    const N: usize = 2000;
    let lab = Lab::new();
    previous_run(&lab, N, 60_000, 0);
    let k = OurKnockd::spawn(&lab, &door(60));
    k.wait_started();
    // The restore checks every grant's rule (one listing, not 2,000 `iptables -C` of 30 ms
    // each in front of this knock's rule).
    let knocked = Instant::now();
    knock(&lab, &SEQ);
    let own = format!("-s {CLI_V4}/32");
    assert!(
        wait_until(Duration::from_secs(5), || lab
            .iptables_rules(false)
            .contains(&own)),
        "the knock's rule took longer than 5 s:\n{}",
        k.log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("rule in after {:?}", knocked.elapsed());
    assert_eq!(k.count("grant restored"), N, "{}", k.log());
    assert!(
        !k.log().contains("no longer in the firewall"),
        "{}",
        k.log()
    );
    assert_eq!(grants(&k).len(), N + 1);
}

/// Closing 5,000 grants restored past their deadline takes seconds, not minutes: knockd
/// deletes them in the chain's order (iptables-nft compares a `-D` with every rule in front of
/// its match: from the chain's end, the 2,048-rule batches hit the 10 s limit and fell back to
/// one process per rule, over 40 s). The admin's own rule for one of the same sources, with
/// the same port, stays.
#[test]
fn closing_five_thousand_restored_grants_takes_seconds() {
    if !require_root() {
        return;
    }
    const N: usize = 5000;
    let lab = Lab::new();
    let addrs = previous_run(&lab, N, -500, 0);
    let admin = format!("-s {}/32 -p tcp -m tcp --dport 22 -j ACCEPT", addrs[0]);
    let out = lab.srv_exec(
        ["iptables", "-A", "INPUT"]
            .into_iter()
            .chain(admin.split(' ')),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(knockd_rules(&lab), N);
    let k = OurKnockd::spawn(&lab, &door(8));
    k.wait_started();
    let t0 = Instant::now();
    let closed = wait_until(Duration::from_secs(60), || knockd_rules(&lab) == 0);
    let took = t0.elapsed();
    eprintln!("{N} restored grants closed in {took:?}");
    assert!(
        closed,
        "{} of {N} rules left:\n{}",
        knockd_rules(&lab),
        k.log()
            .lines()
            .filter(|l| !l.contains("expired while knockd was down"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        took < Duration::from_secs(15),
        "closing {N} restored grants took {took:?}"
    );
    assert!(
        lab.iptables_rules(false).contains(&admin),
        "the admin's rule went:\n{}",
        lab.iptables_rules(false)
    );
    assert!(wait_until(Duration::from_secs(10), || grants(&k).is_empty()));
    assert!(!k.log().contains("close failed"), "{}", k.log());
}
