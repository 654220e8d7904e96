//! The state file is data (issue 21): what a previous run recorded is believed only in the
//! exact shape knockd writes. A crafted state file must not make knockd delete an admin's
//! rule at start.

use knock_e2e::knockd::{srv_ok, OurKnockd};
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
