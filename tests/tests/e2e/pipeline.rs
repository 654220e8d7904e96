//! The grant pipeline end to end: a reload that changes a native door's ports followed by a
//! re-knock leaves no rule behind, a re-knock after the rule was removed by hand puts it back
//! at once, and a second knockd on the same state file refuses to start.

use std::time::{Duration, Instant};

use knock_e2e::knockd::{
    knock, knockd_args, native_rule, rule_count, wait_no_rule, wait_rule, OurKnockd,
};
use knock_e2e::{load_average, require_root, wait_until, Lab, SRV_V4};

fn door(port: u16) -> String {
    format!("[ssh]\n sequence = 2222,1111,3333,4444\n tcpflags = syn\n open = {port}/tcp\n cmd_timeout = 3\n")
}

/// Issue: with `open = 22/tcp`, knock, change the door to 2222, reload, knock again: the
/// 2222 rule used to stay forever. Now the re-knock closes 22 and opens 2222, and at
/// `cmd_timeout` no rule of knockd's is left.
#[test]
fn a_reknock_after_a_reload_that_changed_the_port_leaves_no_rule_after_cmd_timeout() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let k = OurKnockd::start(&lab, &door(22));
    let seq = [SRV_V4, "2222", "1111", "3333", "4444"];
    knock(&lab, &seq);
    assert!(
        wait_rule(&lab, false, &native_rule(22, "ssh"), Duration::from_secs(5)),
        "not opened:\n{}",
        k.log()
    );
    k.rewrite_conf(&door(2222));
    k.daemon.kill_hup();
    assert!(
        k.wait_count("configuration reloaded", 1, Duration::from_secs(5)),
        "{}",
        k.log()
    );
    knock(&lab, &seq);
    assert!(
        wait_rule(
            &lab,
            false,
            &native_rule(2222, "ssh"),
            Duration::from_secs(5)
        ),
        "the new rule never came:\n{}\n{}",
        lab.iptables_rules(false),
        k.log()
    );
    assert!(
        wait_no_rule(&lab, false, &native_rule(22, "ssh"), Duration::from_secs(2)),
        "the old rule stayed:\n{}",
        lab.iptables_rules(false)
    );
    // cmd_timeout = 3 s: nothing of knockd's is left after it.
    assert!(
        wait_until(Duration::from_secs(6), || !lab
            .iptables_rules(false)
            .contains("knockd:ssh")),
        "a rule outlived its grant:\n{}\n{}",
        lab.iptables_rules(false),
        k.log()
    );
    assert_eq!(rule_count(&lab, false, &native_rule(2222, "ssh")), 0);
}

/// Someone removes the grant's rule by hand and knocks again 0.2 s later, eight times back to
/// back: each re-knock puts the rule back at once (the grant's burst of three checks, then the
/// quick lane; only a flood is paced at one check a second per grant, which used to hold the
/// re-knocks from the third on back by most of a second each). Timed on knockd's own clock, from each
/// re-knock's `OPEN SESAME` to its `re-inserted` line: the test's own processes (iptables,
/// knock, polling), which a loaded machine slows down, are not in it.
#[test]
fn a_reknock_after_the_rule_was_removed_by_hand_reopens_at_once() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let k = OurKnockd::start(
        &lab,
        &door(22).replace("cmd_timeout = 3", "cmd_timeout = 60"),
    );
    let seq = [SRV_V4, "2222", "1111", "3333", "4444"];
    let rule = native_rule(22, "ssh");

    let t0 = Instant::now();
    knock(&lab, &seq);
    assert!(
        wait_rule(&lab, false, &rule, Duration::from_secs(5)),
        "not opened:\n{}",
        k.log()
    );
    // The rule as listed, with knockd's instance tag, turned into its delete.
    let listed = lab
        .iptables_rules_raw(false)
        .lines()
        .find(|l| knock_e2e::untag(l) == rule)
        .expect("the rule as listed")
        .to_string();
    let delete: Vec<String> = listed
        .replacen("-A", "-D", 1)
        .replace('"', "")
        .split(' ')
        .map(String::from)
        .collect();
    const ROUNDS: usize = 8;
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let t = Instant::now();
        let out =
            lab.srv_exec(std::iter::once("iptables".to_string()).chain(delete.iter().cloned()));
        assert!(out.status.success(), "{out:?}");
        std::thread::sleep(Duration::from_millis(200));
        knock(&lab, &seq);
        assert!(
            wait_rule(&lab, false, &rule, Duration::from_secs(5)),
            "round {round}: not put back:\n{}",
            k.log()
        );
        rounds.push(t.elapsed());
    }
    let total = t0.elapsed();
    // Logged once the check's result is in, by the log's own thread: a moment after the
    // rule is back.
    assert!(
        k.wait_count(
            "rule was missing, re-inserted",
            ROUNDS,
            Duration::from_secs(2)
        ),
        "{}",
        k.log()
    );
    assert_eq!(
        k.count("rule was missing, re-inserted"),
        ROUNDS,
        "{}",
        k.log()
    );
    // The first OPEN SESAME is the first knock's; then one per re-knock.
    let knocked = k.logged_at("ssh: OPEN SESAME");
    let reinserted = k.logged_at("rule was missing, re-inserted");
    assert_eq!(
        (knocked.len(), reinserted.len()),
        (ROUNDS + 1, ROUNDS),
        "{}",
        k.log()
    );
    let waits: Vec<f64> = (0..ROUNDS)
        .map(|i| reinserted[i] - knocked[i + 1])
        .collect();
    eprintln!(
        "open and {ROUNDS} rounds: {total:?} (rounds {rounds:?}); knockd put the rule back \
         {waits:.3?} s after each re-knock ({})",
        load_average()
    );
    assert!(
        waits.iter().all(|w| *w < 0.6),
        "a re-knock waited for the one-a-second pace: the rule was back {waits:.3?} s after \
         it ({})\n{}",
        load_average(),
        k.log()
    );
    assert_eq!(rule_count(&lab, false, &rule), 1);
}

/// Two daemons on one state file would both rewrite it: the second refuses and says why.
#[test]
fn a_second_knockd_on_the_same_state_file_refuses_to_start() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let first = OurKnockd::start(&lab, &door(22));
    let second = lab.spawn_srv(knockd_args(
        &first.conf,
        &lab.path("other.sock"),
        &lab.path("state.json"),
    ));
    assert!(
        second.wait_exit(Duration::from_secs(5)).is_some(),
        "the second knockd kept running:\n{}",
        second.log_text()
    );
    let text = second.log_text();
    assert!(
        text.contains("is in use by another knockd") && text.contains("own StateFile"),
        "{text}"
    );
    assert!(first.daemon.is_running());
}
