//! Our knockd and knock end to end: the daemon in a lab's server namespace, knocks from the
//! client namespace, and the firewall checked with iptables inside the server namespace.
//! Debian's knock and knockd stand in for either side to prove the two interoperate.

use std::time::{Duration, Instant};

use knock_e2e::knockd::{
    accept_rule, input_rules, knock, native_rule, rule_count, srv_ok, stays_absent, wait_no_rule,
    wait_rule, OurKnockd, EFFECT_TIMEOUT, SEED,
};
use knock_e2e::{
    bin, debian_bin, read_text, require_root, wait_for_text, wait_until, Lab, CLI_V4, CLI_V6,
    DEBIAN_KNOCK, DEBIAN_KNOCKD, SRV_IF, SRV_V4, SRV_V6,
};

/// A door that opens port 22 with `command`, plus `[sync]`: a one-knock door on 4444 whose
/// `OPEN SESAME` in the log proves every earlier knock has been processed (knocks of one
/// client are handled in order, and a door never sees another door's ports).
fn door_conf(sequence: &str, seq_timeout: u32) -> String {
    format!(
        "[openSSH]\n\
         \tsequence    = {sequence}\n\
         \tseq_timeout = {seq_timeout}\n\
         \tcommand     = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
         \ttcpflags    = syn\n\
         \n\
         [sync]\n\
         \tsequence    = 4444\n\
         \tcommand     = /bin/true\n"
    )
}

const SYNC_OPEN: &str = "10.99.77.2: sync: OPEN SESAME";

/// Knocks the `[sync]` door (the `n`th time) and waits until knockd has logged it.
fn sync(lab: &Lab, knockd: &OurKnockd, n: usize) {
    knock(lab, &[SRV_V4, "4444"]);
    assert!(
        knockd.wait_count(SYNC_OPEN, n, EFFECT_TIMEOUT),
        "knockd never saw the sync knock #{n}:\n{}",
        knockd.log()
    );
}

fn assert_opens(lab: &Lab, knockd: &OurKnockd, rule: &str) {
    assert!(
        wait_rule(lab, false, rule, EFFECT_TIMEOUT),
        "no `{rule}` in the server's INPUT:\n{}\nknockd log:\n{}",
        lab.iptables_rules(false),
        knockd.log()
    );
}

/// After the knocks just sent (and a sync knock), the rule stays absent for a while.
fn assert_stays_closed(lab: &Lab, knockd: &OurKnockd, rule: &str) {
    assert!(
        stays_absent(lab, false, rule, Duration::from_millis(500)),
        "`{rule}` appeared although the door must stay closed:\n{}\nknockd log:\n{}",
        lab.iptables_rules(false),
        knockd.log()
    );
    assert!(
        !knockd.log().contains("openSSH: OPEN SESAME"),
        "openSSH opened:\n{}",
        knockd.log()
    );
}

#[test]
fn seed_config_opens_above_the_drop_closes_and_never_duplicates() {
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
    let drop = "-A INPUT -p tcp -m tcp --dport 22 -j DROP";
    let knockd = OurKnockd::start(&lab, SEED);
    let accept = accept_rule(22);

    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert_opens(&lab, &knockd, &accept);
    assert_eq!(
        input_rules(&lab, false),
        [accept.clone(), drop.to_string()],
        "the ACCEPT must be the first rule of INPUT, above the DROP\nknockd log:\n{}",
        knockd.log()
    );
    assert!(knockd.log().contains("10.99.77.2: openSSH: OPEN SESAME"));

    // Opening again must not stack a second ACCEPT.
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert!(
        knockd.wait_count("10.99.77.2: openSSH: OPEN SESAME", 2, EFFECT_TIMEOUT),
        "the second open was not seen:\n{}",
        knockd.log()
    );
    // Whatever the second open runs, it runs at once; give it time to do damage.
    let duplicated = wait_until(Duration::from_millis(700), || {
        rule_count(&lab, false, &accept) > 1
    });
    assert!(
        !duplicated,
        "opening twice stacked the ACCEPT:\n{}\nknockd log:\n{}",
        lab.iptables_rules(false),
        knockd.log()
    );
    assert_eq!(input_rules(&lab, false), [accept.clone(), drop.to_string()]);

    knock(&lab, &[SRV_V4, "9000", "8000", "7000"]);
    assert!(
        wait_no_rule(&lab, false, &accept, EFFECT_TIMEOUT),
        "the close sequence did not remove the ACCEPT:\n{}\nknockd log:\n{}",
        lab.iptables_rules(false),
        knockd.log()
    );
    assert!(knockd.log().contains("10.99.77.2: closeSSH: OPEN SESAME"));
    assert_eq!(
        input_rules(&lab, false),
        [drop.to_string()],
        "the DROP must stay"
    );
}

#[test]
fn wrong_order_stays_closed() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, &door_conf("7000,8000,9000", 5));
    knock(&lab, &[SRV_V4, "7000", "9000", "8000"]);
    sync(&lab, &knockd, 1);
    assert_stays_closed(&lab, &knockd, &accept_rule(22));
    assert!(
        knockd.log().contains(
            "10.99.77.2: openSSH: sequence reset at stage 1 (unexpected knock on 9000:tcp)"
        ),
        "no reset logged:\n{}",
        knockd.log()
    );
}

#[test]
fn sequence_timeout_fires_on_time_and_keeps_the_door_closed() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, &door_conf("7000,8000,9000", 1));
    let timeout_line = "10.99.77.2: openSSH: sequence timeout (stage 2)";

    let before = Instant::now();
    knock(&lab, &[SRV_V4, "7000", "8000"]);
    let after = Instant::now();
    // The first knock went out between `before` and `after`; seq_timeout = 1 runs from it,
    // and the timeout must be logged when it expires, not when the next packet comes.
    assert!(
        wait_until(Duration::from_millis(1450), || knockd
            .log()
            .contains(timeout_line)),
        "`{timeout_line}` was not logged within ~1 s of the first knock:\n{}",
        knockd.log()
    );
    let seen = Instant::now();
    assert!(
        seen >= before + Duration::from_secs(1),
        "the timeout came too early: {:?} after the first knock was sent",
        seen - before
    );
    assert!(
        seen <= after + Duration::from_millis(1400),
        "the timeout came too late: {:?} after the knocks",
        seen - after
    );

    let third = before + Duration::from_millis(1500);
    std::thread::sleep(third.saturating_duration_since(Instant::now()));
    knock(&lab, &[SRV_V4, "9000"]);
    sync(&lab, &knockd, 1);
    assert_stays_closed(&lab, &knockd, &accept_rule(22));
    let log = knockd.log();
    assert!(
        !log.contains("openSSH: Stage 3"),
        "the late knock counted as stage 3:\n{log}"
    );
    assert_eq!(log.matches(timeout_line).count(), 1, "{log}");
}

#[test]
fn doors_progress_independently_when_interleaved() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = "\
[openSSH]
	sequence    = 7000,8000,9000
	seq_timeout = 5
	command     = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT

[openWeb]
	sequence    = 1111,2222,3333
	seq_timeout = 5
	command     = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 80 -j ACCEPT
";
    let knockd = OurKnockd::start(&lab, conf);
    for port in ["7000", "1111", "8000", "2222", "9000", "3333"] {
        knock(&lab, &[SRV_V4, port]);
    }
    assert_opens(&lab, &knockd, &accept_rule(22));
    assert_opens(&lab, &knockd, &accept_rule(80));
    let log = knockd.log();
    assert!(!log.contains("sequence reset"), "a door was reset:\n{log}");
    assert_eq!(rule_count(&lab, false, &accept_rule(22)), 1);
    assert_eq!(rule_count(&lab, false, &accept_rule(80)), 1);
}

/// One SYN to 7000 that the server drops, so the client's kernel retransmits it (same
/// flow) after ~1 s; returns how many copies reached the server.
fn retransmitted_syn_to_7000(lab: &Lab) -> u64 {
    srv_ok(
        lab,
        &[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "7000", "-j", "DROP",
        ],
    );
    let out = lab.cli_exec([
        "timeout",
        "2.5",
        "bash",
        "-c",
        "exec 3<>/dev/tcp/10.99.77.1/7000",
    ]);
    assert_eq!(
        out.status.code(),
        Some(124),
        "the connect should hang until `timeout` ends it: {out:?}"
    );
    let counted = srv_ok(lab, &["iptables", "-v", "-S", "INPUT"]);
    let counted = String::from_utf8_lossy(&counted.stdout);
    let syns: u64 = counted
        .lines()
        .find(|l| l.contains("--dport 7000"))
        .and_then(|l| l.split(" -c ").nth(1))
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter for the DROP on 7000 in:\n{counted}"));
    assert!(
        syns >= 2,
        "the kernel did not retransmit the SYN ({syns} packet(s))"
    );
    srv_ok(
        lab,
        &[
            "iptables", "-D", "INPUT", "-p", "tcp", "--dport", "7000", "-j", "DROP",
        ],
    );
    syns
}

#[test]
fn a_retransmitted_syn_counts_once() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, &door_conf("7000,8000,9000", 5));
    let syns = retransmitted_syn_to_7000(&lab);
    knock(&lab, &[SRV_V4, "8000", "9000"]);
    assert_opens(&lab, &knockd, &accept_rule(22));
    let log = knockd.log();
    assert_eq!(
        log.matches("10.99.77.2: openSSH: Stage 1").count(),
        1,
        "the {syns} copies of one SYN must count as one knock:\n{log}"
    );
    assert!(
        !log.contains("sequence reset"),
        "reset by a retransmit:\n{log}"
    );
}

#[test]
fn a_retransmit_is_not_a_second_knock_on_a_repeated_port() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, &door_conf("7000,7000,8000", 5));
    let syns = retransmitted_syn_to_7000(&lab);
    knock(&lab, &[SRV_V4, "8000"]);
    sync(&lab, &knockd, 1);
    assert!(
        stays_absent(&lab, false, &accept_rule(22), Duration::from_millis(500)),
        "{syns} copies of one SYN counted as the two knocks on 7000:\n{}",
        knockd.log()
    );
    // Two real knocks on 7000 (two flows) do count twice.
    knock(&lab, &[SRV_V4, "7000", "7000", "8000"]);
    assert_opens(&lab, &knockd, &accept_rule(22));
}

#[test]
fn knocking_the_first_port_again_restarts_the_sequence() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, &door_conf("7000,8000,9000", 5));
    knock(&lab, &[SRV_V4, "7000", "8000", "7000", "8000", "9000"]);
    assert_opens(&lab, &knockd, &accept_rule(22));
    assert!(
        knockd.log().contains(
            "10.99.77.2: openSSH: sequence reset at stage 2 (unexpected knock on 7000:tcp)"
        ),
        "{}",
        knockd.log()
    );
}

#[test]
fn native_door_opens_with_a_comment_and_closes_after_cmd_timeout() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let log_file = lab.path("knockd.log");
    let conf = format!(
        "[options]\n\
         \tLogFile = {}\n\
         \n\
         [ssh]\n\
         \tsequence    = 7000,8000,9000\n\
         \tseq_timeout = 5\n\
         \topen        = 22/tcp\n\
         \tcmd_timeout = 2\n",
        log_file.display()
    );
    let knockd = OurKnockd::start(&lab, &conf);
    let rule = native_rule(22, "ssh");
    let before = Instant::now();
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert_opens(&lab, &knockd, &rule);
    let opened = Instant::now();
    assert!(
        wait_no_rule(&lab, false, &rule, Duration::from_secs(4)),
        "the grant was not closed within 4 s of cmd_timeout = 2:\n{}\nknockd log:\n{}",
        lab.iptables_rules(false),
        knockd.log()
    );
    let closed = Instant::now();
    assert!(
        closed >= before + Duration::from_millis(1900),
        "closed too early: {:?} after the knock",
        closed - before
    );
    assert!(
        closed - opened <= Duration::from_secs(4),
        "closed too late: {:?} after it opened",
        closed - opened
    );
    assert!(
        knockd.wait_count("10.99.77.2: ssh: command timeout", 1, EFFECT_TIMEOUT),
        "{}",
        knockd.log()
    );
    assert!(
        input_rules(&lab, false).is_empty(),
        "{}",
        lab.iptables_rules(false)
    );

    // The LogFile has knockd 0.8's format: `[YYYY-MM-DD HH:MM] message`.
    let text = read_text(&log_file);
    for msg in [
        "10.99.77.2: ssh: OPEN SESAME",
        "10.99.77.2: ssh: command timeout",
    ] {
        let line = text
            .lines()
            .find(|l| l.ends_with(msg))
            .unwrap_or_else(|| panic!("no `{msg}` in the LogFile:\n{text}"));
        assert!(is_logfile_line(line, msg), "bad LogFile line `{line}`");
    }
}

/// `[YYYY-MM-DD HH:MM] msg`.
fn is_logfile_line(line: &str, msg: &str) -> bool {
    let Some(stamp) = line
        .strip_suffix(msg)
        .and_then(|l| l.strip_prefix('['))
        .and_then(|l| l.strip_suffix("] "))
    else {
        return false;
    };
    stamp.len() == 16
        && stamp.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == ' ',
            13 => c == ':',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn udp_and_tcp_knocks_are_told_apart() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = "\
[web]
	sequence    = 2222:udp,3333,4444:udp
	seq_timeout = 5
	open        = 443/tcp
	cmd_timeout = 60
";
    let knockd = OurKnockd::start(&lab, conf);
    let rule = native_rule(443, "web");
    // All TCP: the first knock is on the wrong protocol, so nothing starts.
    knock(&lab, &[SRV_V4, "2222", "3333", "4444"]);
    // -u makes bare ports UDP; an explicit :tcp stays TCP.
    knock(&lab, &["-u", SRV_V4, "2222", "3333:tcp", "4444"]);
    assert!(
        wait_rule(&lab, false, &rule, EFFECT_TIMEOUT),
        "no `{rule}`:\n{}\nknockd log:\n{}",
        lab.iptables_rules(false),
        knockd.log()
    );
    let log = knockd.log();
    assert_eq!(log.matches("web: OPEN SESAME").count(), 1, "{log}");
    assert_eq!(
        log.matches("web: Stage 1").count(),
        1,
        "the TCP 2222 counted:\n{log}"
    );
}

#[test]
fn an_open_grant_survives_a_reload_and_still_closes_on_time() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = |sequence: &str| {
        format!(
            "[ssh]\n\
             \tsequence    = {sequence}\n\
             \topen        = 22/tcp\n\
             \tcmd_timeout = 2\n"
        )
    };
    let knockd = OurKnockd::start(&lab, &conf("7000,8000,9000"));
    let rule = native_rule(22, "ssh");
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert_opens(&lab, &knockd, &rule);
    let opened = Instant::now();
    // The door changes its sequence; the grant it gave must still close on schedule.
    knockd.rewrite_conf(&conf("1111,2222,3333"));
    knockd.daemon.kill_hup();
    assert!(
        knockd.wait_count("configuration reloaded: 1 door(s)", 1, EFFECT_TIMEOUT),
        "{}",
        knockd.log()
    );
    assert_eq!(
        rule_count(&lab, false, &rule),
        1,
        "the reload closed the grant early"
    );
    assert!(
        wait_no_rule(&lab, false, &rule, Duration::from_secs(4)),
        "the grant leaked across the reload:\n{}\nknockd log:\n{}",
        lab.iptables_rules(false),
        knockd.log()
    );
    assert!(opened.elapsed() <= Duration::from_secs(4));
}

#[test]
fn an_attempt_in_progress_survives_a_reload_of_an_unchanged_door() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = door_conf("7000,8000,9000", 5);
    let knockd = OurKnockd::start(&lab, &conf);
    knock(&lab, &[SRV_V4, "7000", "8000"]);
    assert!(
        knockd.wait_count("10.99.77.2: openSSH: Stage 2", 1, EFFECT_TIMEOUT),
        "{}",
        knockd.log()
    );
    knockd.rewrite_conf(&conf);
    knockd.daemon.kill_hup();
    assert!(
        knockd.wait_count("configuration reloaded: 2 door(s)", 1, EFFECT_TIMEOUT),
        "{}",
        knockd.log()
    );
    knock(&lab, &[SRV_V4, "9000"]);
    assert_opens(&lab, &knockd, &accept_rule(22));
}

#[test]
fn ipv6_knock_runs_start_command_6() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = "\
[openSSH]
	sequence        = 7000,8000,9000
	seq_timeout     = 5
	command         = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
	start_command_6 = /sbin/ip6tables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
	tcpflags        = syn
";
    let knockd = OurKnockd::start(&lab, conf);
    knock(&lab, &["-6", SRV_V6, "7000", "8000", "9000"]);
    let rule = format!("-A INPUT -s {CLI_V6}/128 -p tcp -m tcp --dport 22 -j ACCEPT");
    assert!(
        wait_rule(&lab, true, &rule, EFFECT_TIMEOUT),
        "no `{rule}` in ip6tables:\n{}\nknockd log:\n{}",
        lab.iptables_rules(true),
        knockd.log()
    );
    assert!(
        knockd
            .log()
            .contains(&format!("{CLI_V6}: openSSH: OPEN SESAME")),
        "{}",
        knockd.log()
    );
    assert!(
        input_rules(&lab, false).is_empty(),
        "an IPv6 knock touched iptables:\n{}",
        lab.iptables_rules(false)
    );
}

#[test]
fn debian_knock_opens_our_knockd() {
    if !require_root() {
        return;
    }
    let debian_knock = debian_bin(DEBIAN_KNOCK);
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, SEED);
    let out = lab.cli_exec([debian_knock, SRV_V4, "7000", "8000", "9000"]);
    assert!(out.status.success(), "Debian's knock failed: {out:?}");
    assert_opens(&lab, &knockd, &accept_rule(22));
}

#[test]
fn our_knock_opens_debian_knockd() {
    if !require_root() {
        return;
    }
    let debian_knockd = debian_bin(DEBIAN_KNOCKD);
    let lab = Lab::new();
    let log = lab.path("knockd.log");
    let conf = SEED.replace("\tUseSyslog\n", &format!("\tLogFile = {}\n", log.display()));
    let conf = lab.write_file("knockd.conf", &conf);
    let conf = conf.to_str().expect("temp dir path is UTF-8");
    let _daemon = lab.spawn_srv([debian_knockd, "-i", SRV_IF, "-c", conf]);
    assert!(
        wait_for_text(
            &log,
            "starting up, listening on kv0",
            Duration::from_secs(5)
        ),
        "Debian's knockd did not start; log:\n{}",
        read_text(&log)
    );
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    let rule = accept_rule(22);
    assert!(
        wait_rule(&lab, false, &rule, EFFECT_TIMEOUT),
        "no `{rule}`:\n{}\nDebian knockd log:\n{}",
        lab.iptables_rules(false),
        read_text(&log)
    );
    assert!(read_text(&log).contains(&format!("{CLI_V4}: openSSH: OPEN SESAME")));
}

#[test]
fn a_bad_sequence_refuses_to_start_and_names_file_and_line() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    // Line 3 is the bad one.
    let bad = "[openSSH]\n\
               \tseq_timeout = 5\n\
               \tsequence    = 7000,abc\n\
               \tcommand     = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n";
    let knockd = OurKnockd::spawn(&lab, bad);
    let status = knockd
        .daemon
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("knockd kept running on a bad config:\n{}", knockd.log()));
    assert_eq!(status.code(), Some(1), "{}", knockd.log());
    let stderr = knockd.daemon.stderr_text();
    assert!(
        stderr.contains("knockd.conf:3:") && stderr.contains("abc"),
        "stderr must name the file, line 3 and the bad value:\n{stderr}"
    );
    assert!(!knockd.socket.exists(), "a control socket was left behind");
    assert!(
        !stderr.contains("starting up"),
        "it started before failing:\n{stderr}"
    );
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert!(input_rules(&lab, false).is_empty());

    // `knockd -t` agrees.
    let check = |path: &std::path::Path| {
        std::process::Command::new(bin("knockd"))
            .arg("-t")
            .arg("-c")
            .arg(path)
            .output()
            .expect("cannot run knockd -t")
    };
    let out = check(&knockd.conf);
    assert_eq!(
        out.status.code(),
        Some(1),
        "knockd -t on a bad config: {out:?}"
    );
    let good = lab.write_file("good.conf", SEED);
    let out = check(&good);
    assert_eq!(
        out.status.code(),
        Some(0),
        "knockd -t on the seed config: {out:?}"
    );
}

#[test]
fn sighup_keeps_the_old_config_when_broken_and_switches_when_valid() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, &door_conf("7000,8000,9000", 5));
    let accept = accept_rule(22);

    knockd.rewrite_conf("[openSSH]\n\tsequence = 7000,abc\n");
    knockd.daemon.kill_hup();
    assert!(
        knockd.wait_count("reload failed", 1, EFFECT_TIMEOUT),
        "no `reload failed`:\n{}",
        knockd.log()
    );
    assert!(knockd.daemon.is_running(), "{}", knockd.log());
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert_opens(&lab, &knockd, &accept);

    // Forget the rule, then switch to another sequence.
    srv_ok(
        &lab,
        &[
            "iptables", "-D", "INPUT", "-s", CLI_V4, "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
        ],
    );
    knockd.rewrite_conf(&door_conf("1111,2222,3333", 5));
    knockd.daemon.kill_hup();
    assert!(
        knockd.wait_count("configuration reloaded: 2 door(s)", 1, EFFECT_TIMEOUT),
        "the valid config was not loaded:\n{}",
        knockd.log()
    );
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    sync(&lab, &knockd, 1);
    assert!(
        stays_absent(&lab, false, &accept, Duration::from_millis(500)),
        "the old sequence still opens:\n{}",
        knockd.log()
    );
    assert_eq!(knockd.count("openSSH: OPEN SESAME"), 1, "{}", knockd.log());
    knock(&lab, &[SRV_V4, "1111", "2222", "3333"]);
    assert_opens(&lab, &knockd, &accept);
}

#[test]
fn sigterm_closes_open_grants_and_exits_promptly() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = "\
[ssh]
	sequence    = 7000,8000,9000
	open        = 22/tcp
	cmd_timeout = 60
";
    let knockd = OurKnockd::start(&lab, conf);
    let rule = native_rule(22, "ssh");
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert_opens(&lab, &knockd, &rule);

    let asked = Instant::now();
    knockd.daemon.kill_term();
    let status = knockd.daemon.wait_exit(Duration::from_secs(3));
    let took = asked.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("knockd still runs 3 s after SIGTERM:\n{}", knockd.log()));
    assert!(status.success(), "exit status {status}:\n{}", knockd.log());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        rule_count(&lab, false, &rule),
        0,
        "SIGTERM left the grant open:\n{}\nknockd log:\n{}",
        lab.iptables_rules(false),
        knockd.log()
    );
    assert!(knockd.log().contains("shutting down"), "{}", knockd.log());
    assert!(
        !knockd.socket.exists(),
        "the control socket {} was left behind",
        knockd.socket.display()
    );
}

#[test]
fn losing_the_interface_stops_knockd_with_an_error() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, &door_conf("7000,8000,9000", 5));
    let out = std::process::Command::new("ip")
        .args(["-n", lab.srv_ns(), "link", "del", SRV_IF])
        .output()
        .expect("cannot run ip");
    assert!(out.status.success(), "ip link del failed: {out:?}");
    let status = knockd
        .daemon
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "knockd still runs 5 s after its interface was deleted:\n{}",
                knockd.log()
            )
        });
    assert!(!status.success(), "exit status {status}:\n{}", knockd.log());
    let stderr = knockd.daemon.stderr_text();
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("knockd: ") && l.contains(SRV_IF)),
        "no `knockd: ...` error naming {SRV_IF} on stderr:\n{stderr}"
    );
}

/// knockd 0.8 never saw an address added after it started (lab E11); ours re-reads them.
#[test]
fn an_address_added_after_start_is_picked_up() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, &door_conf("7000,8000,9000", 5));
    srv_ok(
        &lab,
        &["ip", "addr", "add", "10.99.77.10/24", "dev", SRV_IF],
    );
    // The address watcher polls every 2 s; then the capture filter names the new address.
    assert!(
        wait_until(Duration::from_secs(6), || knockd
            .log()
            .contains("10.99.77.10")),
        "knockd never noticed the new address:\n{}",
        knockd.log()
    );
    knock(&lab, &["10.99.77.10", "7000", "8000", "9000"]);
    assert_opens(&lab, &knockd, &accept_rule(22));
}

/// `-i any`: Linux cooked capture (DLT_LINUX_SLL), IPv4 and IPv6 (knockd 0.8 could not do v6
/// there, issue #83).
#[test]
fn capture_on_any_interface_works_for_ipv4_and_ipv6() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = lab.write_file(
        "knockd.conf",
        "[openSSH]\n sequence = 7000,8000,9000\n tcpflags = syn\n\
         command = /sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
         command_6 = /sbin/ip6tables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n",
    );
    let socket = lab.path("any.sock");
    let state = lab.path("any.json");
    let knockd = lab.spawn_srv([
        bin("knockd").as_os_str(),
        "-i".as_ref(),
        "any".as_ref(),
        "-c".as_ref(),
        conf.as_os_str(),
        "--socket".as_ref(),
        socket.as_os_str(),
        "--state-file".as_ref(),
        state.as_os_str(),
    ]);
    assert!(
        knockd.wait_for_log("starting up, listening on any", Duration::from_secs(10)),
        "{}",
        knockd.log_text()
    );
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert!(
        wait_rule(&lab, false, &accept_rule(22), EFFECT_TIMEOUT),
        "IPv4 on -i any:\n{}",
        knockd.log_text()
    );
    knock(&lab, &["-6", SRV_V6, "7000", "8000", "9000"]);
    let v6 = format!("-A INPUT -s {CLI_V6}/128 -p tcp -m tcp --dport 22 -j ACCEPT");
    assert!(
        wait_rule(&lab, true, &v6, EFFECT_TIMEOUT),
        "IPv6 on -i any:\n{}\n{}",
        lab.iptables_rules(true),
        knockd.log_text()
    );
}

/// Without CAP_NET_RAW/CAP_NET_ADMIN knockd says exactly what to do, and starts nothing.
#[test]
fn without_capabilities_it_says_how_to_fix_it() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = lab.write_file("knockd.conf", &door_conf("7000,8000,9000", 5));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(lab.tempdir(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin("knockd"))
        .args(["-i", "lo", "-c"])
        .arg(&conf)
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("missing capabilities: CAP_NET_RAW, CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(
        err.contains("setcap cap_net_raw,cap_net_admin+eip"),
        "{err}"
    );
}
