//! The log end to end: lines are written by knockd's log thread (issue 12.6), logrotate's
//! `mv; kill -HUP` moves them to a new file even when the reload fails (issue 13.4), and
//! `knockctl status` counts dropped lines.

use knock_e2e::knockd::{knock, OurKnockd, EFFECT_TIMEOUT};
use knock_e2e::{require_root, wait_until, Lab, SRV_V4};
use std::path::Path;

fn count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn logrotate_moves_the_log_even_when_the_reload_fails() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let log = lab.path("knockd.log");
    let conf = format!(
        "[options]\n  LogFile = {}\n[door]\n  sequence = 7000,8000,9000\n  command = /bin/true\n  tcpflags = syn\n",
        log.display()
    );
    let knockd = OurKnockd::start(&lab, &conf);
    let open = "10.99.77.2: door: OPEN SESAME";
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert!(
        wait_until(EFFECT_TIMEOUT, || count(&log, open) == 1),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Each line in knockd 0.8's format: `[YYYY-MM-DD HH:MM] message`.
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.lines()
            .all(|l| l.starts_with("[20") && l.as_bytes().get(17) == Some(&b']')),
        "{text}"
    );
    // logrotate: move the file away, then SIGHUP, with a config that does not load.
    let rotated = lab.path("knockd.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    knockd.rewrite_conf(&conf.replace("7000,8000,9000", "7000,nonsense"));
    knockd.daemon.kill_hup();
    assert!(
        wait_until(EFFECT_TIMEOUT, || count(&log, "reload failed") == 1),
        "the failed reload did not reopen the log:\n{}",
        knockd.log()
    );
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert!(
        wait_until(EFFECT_TIMEOUT, || count(&log, open) == 1),
        "{}",
        knockd.log()
    );
    assert_eq!(count(&rotated, open), 1, "a line went to the rotated file");
    // Nothing was dropped, and status says so.
    let out = knockd.knockctl(&["status"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("log lines dropped 0"), "{status}");
    let json = knockd.knockctl(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["counters"]["log_lines_dropped"], 0);
}
