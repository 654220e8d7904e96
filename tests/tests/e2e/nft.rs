//! `Firewall = nftables` end to end. The server namespace runs a native nftables ruleset with a
//! default-drop `inet filter` input chain plus the one line the docs tell an admin to add
//! (`meta mark 0x4b4e accept`), and a TCP listener on port 22. A knock from the client
//! namespace must give a real TCP connection; everything else must not. nft only ever runs
//! inside the lab's namespaces.

use knock_e2e::knockd::{self, srv_ok, OurKnockd};
use knock_e2e::traffic::netns::create_in;
use knock_e2e::{bin, require_root, wait_until, Lab, CLI_V4, CLI_V6, SRV_V4, SRV_V6};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The host's own firewall: default drop, established traffic, neighbour discovery, and the
/// documented admin line for knockd's mark.
const HOST_RULESET: &str = "\
table inet filter {
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iif lo accept
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
        meta mark 0x4b4e accept
    }
}
";

fn conf(cmd_timeout: u32) -> String {
    format!(
        "[options]\n\
         \tFirewall = nftables\n\
         [ssh]\n\
         \tsequence    = 7000,8000,9000\n\
         \topen        = 22/tcp\n\
         \tcmd_timeout = {cmd_timeout}\n\
         [web]\n\
         \tsequence    = 7100,8100,9100\n\
         \topen        = 8080/tcp\n\
         \tcmd_timeout = {cmd_timeout}\n"
    )
}

/// A lab whose server has the host ruleset and listeners on 22 and 8080 (v4 and v6).
fn lab() -> Lab {
    let lab = open_lab();
    let file = lab.write_file("host.nft", HOST_RULESET);
    srv_ok(&lab, &["nft", "-f", file.to_str().expect("utf-8 path")]);
    lab
}

/// A lab whose server has listeners on 22 and 8080 and no firewall but knockd's: whatever
/// knockd's table does not drop connects.
fn open_lab() -> Lab {
    let lab = Lab::new();
    for port in [22u16, 8080] {
        let listener = create_in(lab.srv_ns(), || {
            Ok(TcpListener::bind(SocketAddr::from((
                std::net::Ipv6Addr::UNSPECIFIED,
                port,
            )))?)
        })
        .expect("listener in the server namespace");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
    }
    lab
}

/// Can the client open a TCP connection to the server's `port` (v4 or v6)?
fn connects(lab: &Lab, v6: bool, port: u16) -> bool {
    let ip: std::net::IpAddr = if v6 { SRV_V6 } else { SRV_V4 }.parse().expect("ip");
    create_in(lab.cli_ns(), move || {
        Ok(
            TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_millis(700))
                .is_ok(),
        )
    })
    .expect("connect from the client namespace")
}

fn knock(lab: &Lab, v6: bool, ports: &[&str]) {
    let mut args = vec![if v6 { SRV_V6 } else { SRV_V4 }];
    args.extend_from_slice(ports);
    knockd::knock(lab, &args);
}

fn table(lab: &Lab) -> String {
    let out = lab.srv_exec(["nft", "list", "table", "inet", "knockd"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Seconds the kernel has left on the client's port-22 element (0: none).
fn kernel_expires_s(lab: &Lab) -> u64 {
    let out = lab.srv_exec(["nft", "-j", "list", "set", "inet", "knockd", "allow4"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["set"]["elem"].as_array())
        .flatten()
        .filter(|e| e["elem"]["val"]["concat"][0] == CLI_V4)
        .filter_map(|e| e["elem"]["expires"].as_u64())
        .max()
        .unwrap_or(0)
}

fn wait_connects(lab: &Lab, v6: bool, port: u16, k: &OurKnockd) {
    assert!(
        wait_until(Duration::from_secs(5), || connects(lab, v6, port)),
        "no connection to port {port} after the knock\n{}\nknockd log:\n{}",
        table(lab),
        k.log()
    );
}

fn grant_flow(v6: bool) {
    if !require_root() {
        return;
    }
    let lab = lab();
    let k = OurKnockd::start(&lab, &conf(30));
    let client = if v6 { CLI_V6 } else { CLI_V4 };
    assert!(table(&lab).contains("tcp . 22"), "{}", table(&lab));
    // Nobody gets in without knocking: knockd's chain drops new connections to 22.
    assert!(!connects(&lab, v6, 22), "port 22 open before any knock");
    knock(&lab, v6, &["7000", "8000", "9000"]);
    wait_connects(&lab, v6, 22, &k);
    assert!(
        table(&lab).contains(&format!("{client} . tcp . 22 timeout 30s")),
        "{}",
        table(&lab)
    );
    // Only what was granted: another protected port stays closed.
    assert!(!connects(&lab, v6, 8080));
    // knockctl shows the backend and the kernel's time left.
    let status = String::from_utf8_lossy(&k.knockctl(&["status"]).stdout).into_owned();
    assert!(status.contains("firewall    nftables"), "{status}");
    let list = String::from_utf8_lossy(&k.knockctl(&["list"]).stdout).into_owned();
    assert!(list.contains("kernel") && list.contains(client), "{list}");
    // Revoke cuts new connections.
    let out = k.knockctl(&["revoke", client]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(3), || !connects(&lab, v6, 22)),
        "still connects after revoke\n{}",
        table(&lab)
    );
    assert!(!table(&lab).contains(&format!("{client} . tcp")));
}

#[test]
fn nft_knock_connects_stranger_does_not_revoke_cuts_v4() {
    grant_flow(false);
}

#[test]
fn nft_knock_connects_stranger_does_not_revoke_cuts_v6() {
    grant_flow(true);
}

#[test]
fn nft_kill_9_fails_closed_when_the_grant_expires() {
    if !require_root() {
        return;
    }
    let lab = lab();
    let k = OurKnockd::start(&lab, &conf(3));
    let knocked = Instant::now();
    knock(&lab, false, &["7000", "8000", "9000"]);
    wait_connects(&lab, false, 22, &k);
    k.daemon.kill_9();
    assert!(k.daemon.wait_exit(Duration::from_secs(5)).is_some());
    // knockd is gone and not restarted: the kernel still closes the door on time.
    let deadline = knocked + Duration::from_millis(3000);
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    // (The kernel's timer started when the element went in, a moment after the knock.)
    assert!(
        wait_until(Duration::from_millis(1500), || !connects(&lab, false, 22)),
        "port 22 still open 3 s after the knock with knockd dead\n{}",
        table(&lab)
    );
    // And the port stays protected.
    assert!(table(&lab).contains("tcp . 22"), "{}", table(&lab));
}

#[test]
fn nft_reknock_extends_the_kernel_timeout() {
    if !require_root() {
        return;
    }
    let lab = lab();
    let k = OurKnockd::start(&lab, &conf(3));
    knock(&lab, false, &["7000", "8000", "9000"]);
    wait_connects(&lab, false, 22, &k);
    std::thread::sleep(Duration::from_millis(2000));
    let reknocked = Instant::now();
    knock(&lab, false, &["7000", "8000", "9000"]);
    // The refreshed element is in the kernel (with about 3 s left, not 1 s).
    assert!(
        wait_until(Duration::from_secs(3), || kernel_expires_s(&lab) >= 2),
        "{}\n{}",
        table(&lab),
        k.log()
    );
    // knockd dies; the kernel keeps the refreshed deadline: open 1.8 s after the re-knock
    // (past the first knock's deadline), closed after 3 s.
    k.daemon.kill_9();
    assert!(k.daemon.wait_exit(Duration::from_secs(5)).is_some());
    std::thread::sleep(
        (reknocked + Duration::from_millis(1800)).saturating_duration_since(Instant::now()),
    );
    assert!(
        connects(&lab, false, 22),
        "the re-knock did not extend the kernel timeout\n{}",
        table(&lab)
    );
    std::thread::sleep(
        (reknocked + Duration::from_millis(3400)).saturating_duration_since(Instant::now()),
    );
    assert!(
        wait_until(Duration::from_millis(1500), || !connects(&lab, false, 22)),
        "{}",
        table(&lab)
    );
}

#[test]
fn nft_restart_restores_grants_with_the_kernel_timeout() {
    if !require_root() {
        return;
    }
    let lab = lab();
    let k = OurKnockd::start(&lab, &conf(60));
    knock(&lab, false, &["7000", "8000", "9000"]);
    knock(&lab, true, &["7100", "8100", "9100"]);
    wait_connects(&lab, false, 22, &k);
    wait_connects(&lab, true, 8080, &k);
    k.daemon.kill_9();
    assert!(k.daemon.wait_exit(Duration::from_secs(5)).is_some());
    // Lose the state file too: the kernel is the truth.
    let _ = std::fs::remove_file(lab.path("state.json"));
    std::thread::sleep(Duration::from_millis(1200));
    let k2 = OurKnockd::start(&lab, &conf(60));
    let json = k2.knockctl(&["--json", "list"]);
    let text = String::from_utf8_lossy(&json.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let grants = v
        .as_array()
        .or_else(|| v.get("grants").and_then(|g| g.as_array()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(grants.len(), 2, "{text}\n{}", k2.log());
    for g in &grants {
        let left = g["kernel_expires_in_ms"]
            .as_u64()
            .expect("kernel time left");
        assert!(
            (40_000..=59_000).contains(&left),
            "kernel time left {left} ms: {text}"
        );
    }
    assert!(connects(&lab, false, 22) && connects(&lab, true, 8080));
}

#[test]
fn nft_reload_removing_a_door_removes_its_protection_and_elements() {
    if !require_root() {
        return;
    }
    let lab = lab();
    let k = OurKnockd::start(&lab, &conf(60));
    knock(&lab, false, &["7100", "8100", "9100"]);
    wait_connects(&lab, false, 8080, &k);
    k.rewrite_conf(
        "[options]\n Firewall = nftables\n[ssh]\n sequence = 7000,8000,9000\n open = 22/tcp\n",
    );
    k.daemon.kill_hup();
    assert!(
        wait_until(Duration::from_secs(5), || !table(&lab).contains("8080")),
        "8080 still in the table after the reload:\n{}\n{}",
        table(&lab),
        k.log()
    );
    let t = table(&lab);
    assert!(t.contains("tcp . 22"), "{t}");
    assert!(!t.contains(&format!("{CLI_V4} . tcp . 8080")), "{t}");
    // knockd no longer protects 8080: the host's own policy (drop) applies, and the mark is
    // gone with the element.
    assert!(!connects(&lab, false, 8080));
}

#[test]
fn nft_advice_cleanup_and_check() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    // A default-drop chain without the admin line: `knockd -t` names it and the fix.
    let file = lab.write_file(
        "drop.nft",
        "table inet fw {\n chain in {\n  type filter hook input priority filter; policy drop;\n }\n}\n",
    );
    srv_ok(&lab, &["nft", "-f", file.to_str().expect("utf-8 path")]);
    let conf = lab.write_file("knockd.conf", &conf(10));
    let bin = bin("knockd");
    let bin = bin.to_str().expect("utf-8 path");
    let out = lab.srv_exec([bin, "-t", "-c", conf.to_str().expect("utf-8 path")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("'inet fw in'")
            && text.contains("nft insert rule inet fw in meta mark 0x4b4e accept"),
        "{text}"
    );
    let out = lab.srv_exec([
        bin,
        "-t",
        "--firewall",
        "iptables",
        "-c",
        conf.to_str().expect("utf-8 path"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("an iptables ACCEPT") && text.contains("Firewall = nftables"),
        "{text}"
    );
    // Start creates the table, stop leaves it (fail closed), --firewall-cleanup removes only it.
    // The advice comes before the readiness line: whoever waits for `starting up` has it.
    let k = OurKnockd::start(&lab, &knockd_conf_text(&conf));
    let log = k.log();
    let advice = log.find("nft insert rule inet fw in");
    let ready = log.find("starting up, listening on kv0");
    assert!(
        matches!((advice, ready), (Some(a), Some(r)) if a < r),
        "the advice must be logged before `starting up`:\n{log}"
    );
    k.daemon.kill_term();
    assert!(k.daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert!(table(&lab).contains("chain input"), "{}", table(&lab));
    let state = lab.path("state.json");
    let cleanup = |state: &std::path::Path, force: bool| {
        let mut args = vec![
            bin.to_string(),
            "--firewall-cleanup".into(),
            "-c".into(),
            conf.to_str().expect("utf-8 path").into(),
            "--state-file".into(),
            state.to_str().expect("utf-8 path").into(),
        ];
        if force {
            args.push("--force".into());
        }
        lab.srv_exec(args)
    };
    let out = cleanup(&state, false);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(table(&lab), "");
    let rest = lab.srv_exec(["nft", "list", "ruleset"]);
    assert!(String::from_utf8_lossy(&rest.stdout).contains("table inet fw"));
    // Idempotent.
    assert!(cleanup(&state, false).status.success());
    // While knockd runs, the clean-up refuses and names it, with --force too: the running
    // knockd would re-create its table within a second, its ports open to all meanwhile.
    let k = OurKnockd::start(&lab, &knockd_conf_text(&conf));
    for force in [false, true] {
        let out = cleanup(&state, force);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && err.contains(&format!("pid {}", k.daemon.pid())),
            "--force {force}: {out:?}"
        );
    }
    assert!(table(&lab).contains("chain input"), "{}", table(&lab));
    assert_eq!(
        k.count("removed or changed by another program"),
        0,
        "{}",
        k.log()
    );
    // Stopped, it belongs to no other config's knockd: refused and named; --force removes it.
    k.daemon.kill_term();
    assert!(k.daemon.wait_exit(Duration::from_secs(10)).is_some());
    let other = lab.path("other.json");
    let out = cleanup(&other, false);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success()
            && err.contains(&format!("state file {} (not running now)", state.display()))
            && err.contains("--force"),
        "{out:?}"
    );
    assert!(table(&lab).contains("chain input"), "{}", table(&lab));
    assert!(cleanup(&other, true).status.success());
    assert_eq!(table(&lab), "");
}

fn knockd_conf_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).expect("read conf")
}

/// The grants `knockctl --json list` shows.
fn grants(k: &OurKnockd) -> Vec<serde_json::Value> {
    let out = k.knockctl(&["--json", "list"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("knockctl list: {e}: {text} {out:?}"));
    v.as_array()
        .or_else(|| v.get("grants").and_then(|g| g.as_array()))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn nft_list_follows_the_kernels_time_left() {
    if !require_root() {
        return;
    }
    let lab = lab();
    let k = OurKnockd::start(&lab, &conf(60));
    knock(&lab, false, &["7000", "8000", "9000"]);
    wait_connects(&lab, false, 22, &k);
    // Behind knockd's back, the element is put again with 8 s: the list must say so (the
    // ledger alone would say about 60 s).
    let elem = format!("{{ {CLI_V4} . tcp . 22 }}");
    srv_ok(
        &lab,
        &[
            "nft", "delete", "element", "inet", "knockd", "allow4", &elem,
        ],
    );
    let short = format!("{{ {CLI_V4} . tcp . 22 timeout 8s }}");
    srv_ok(
        &lab,
        &["nft", "add", "element", "inet", "knockd", "allow4", &short],
    );
    let first = grants(&k);
    assert_eq!(first.len(), 1, "{first:?}");
    let left = |g: &serde_json::Value, key: &str| g[key].as_u64().unwrap_or(u64::MAX);
    let kernel1 = left(&first[0], "kernel_expires_in_ms");
    assert!((6_000..=8_000).contains(&kernel1), "{first:?}");
    assert!(
        left(&first[0], "expires_in_ms") <= 8_000,
        "the ledger follows: {first:?}"
    );
    // Time passes: the kernel's time left shrinks.
    std::thread::sleep(Duration::from_millis(1500));
    let second = grants(&k);
    let kernel2 = left(&second[0], "kernel_expires_in_ms");
    assert!(kernel2 + 1_000 <= kernel1, "{kernel1} then {second:?}");
    // Gone from the kernel (deleted by hand): gone from the list.
    srv_ok(
        &lab,
        &[
            "nft", "delete", "element", "inet", "knockd", "allow4", &elem,
        ],
    );
    // knockd learns it from the kernel's notification, a moment after `nft` returns.
    assert!(
        wait_until(Duration::from_secs(3), || grants(&k).is_empty()),
        "{}",
        k.log()
    );
    assert!(
        k.log().contains("grant no longer in the kernel"),
        "{}",
        k.log()
    );
}

#[test]
fn nft_two_doors_sharing_a_port_do_not_cut_each_other() {
    if !require_root() {
        return;
    }
    let lab = lab();
    let conf = "[options]\n Firewall = nftables\n\
                [ssh]\n sequence = 7000,8000,9000\n open = 22/tcp\n cmd_timeout = 60\n\
                [ssh-short]\n sequence = 7200,8200,9200\n open = 22/tcp\n cmd_timeout = 20\n";
    let k = OurKnockd::start(&lab, conf);
    knock(&lab, false, &["7000", "8000", "9000"]);
    wait_connects(&lab, false, 22, &k);
    knock(&lab, false, &["7200", "8200", "9200"]);
    assert!(
        wait_until(Duration::from_secs(5), || grants(&k).len() == 2),
        "{}",
        k.log()
    );
    // The shorter door's knock did not shorten the element.
    assert!(kernel_expires_s(&lab) >= 50, "{}", table(&lab));
    // Revoking one door's grant leaves the other's access.
    let out = k.knockctl(&["revoke", CLI_V4, "--door", "ssh"]);
    assert!(out.status.success(), "{out:?}");
    assert!(wait_until(Duration::from_secs(3), || grants(&k).len() == 1));
    assert!(connects(&lab, false, 22), "{}\n{}", table(&lab), k.log());
    let left = kernel_expires_s(&lab);
    assert!(
        (15..=20).contains(&left),
        "the element now lives as long as ssh-short: {left}"
    );
    // Revoking the last one closes it.
    let out = k.knockctl(&["revoke", CLI_V4]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(3), || !connects(&lab, false, 22)),
        "{}",
        table(&lab)
    );
}

#[test]
fn nft_a_reload_cannot_switch_backends_and_an_iptables_start_removes_the_table() {
    if !require_root() {
        return;
    }
    let lab = lab();
    let k = OurKnockd::start(&lab, &conf(60));
    let iptables =
        "[options]\n Firewall = iptables\n[ssh]\n sequence = 7000,8000,9000\n open = 22/tcp\n";
    k.rewrite_conf(iptables);
    k.daemon.kill_hup();
    assert!(
        k.wait_count(
            "reload failed: keeping the running configuration",
            1,
            Duration::from_secs(5)
        ),
        "{}",
        k.log()
    );
    assert!(k.log().contains("restart knockd to switch"), "{}", k.log());
    // Still nftables: a knock right after the refused switch gets in.
    knock(&lab, false, &["7000", "8000", "9000"]);
    wait_connects(&lab, false, 22, &k);
    // A restart with iptables removes the table (it would keep dropping port 22).
    k.daemon.kill_term();
    assert!(k.daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert!(table(&lab).contains("chain input"));
    let k2 = OurKnockd::start(&lab, iptables);
    assert!(
        k2.log().contains("removed table inet knockd"),
        "{}",
        k2.log()
    );
    assert_eq!(table(&lab), "");
}

/// The elements knockd's table `name` holds, as `nft list table` prints them.
fn table_named(lab: &Lab, name: &str) -> String {
    let out = lab.srv_exec(["nft", "list", "table", "inet", name]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft flush ruleset` (what `systemctl reload nftables` does) and `nft delete table inet
/// knockd` must not leave the doors' ports open: knockd notices, re-creates its table and puts
/// the open grants back. The server has no firewall but knockd's: the client's IPv6 address
/// (never granted) is the stranger.
#[test]
fn nft_a_flushed_or_deleted_table_is_recreated_with_its_grants() {
    if !require_root() {
        return;
    }
    let lab = open_lab();
    let k = OurKnockd::start(&lab, &conf(60));
    assert!(!connects(&lab, true, 22), "port 22 open before any knock");
    knock(&lab, false, &["7000", "8000", "9000"]);
    wait_connects(&lab, false, 22, &k);
    for (n, how) in [
        (1, vec!["nft", "flush", "ruleset"]),
        (2, vec!["nft", "delete", "table", "inet", "knockd"]),
    ] {
        srv_ok(&lab, &how);
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            !connects(&lab, true, 22),
            "a stranger connects to 22 two seconds after `{}`\n{}\n{}",
            how.join(" "),
            table(&lab),
            k.log()
        );
        assert!(
            table(&lab).contains(&format!("{CLI_V4} . tcp . 22 timeout")),
            "the open grant is not back after `{}`:\n{}\n{}",
            how.join(" "),
            table(&lab),
            k.log()
        );
        assert!(connects(&lab, false, 22), "the granted client is cut off");
        assert_eq!(
            k.count("was removed or changed by another program"),
            n,
            "{}",
            k.log()
        );
        let status = String::from_utf8_lossy(&k.knockctl(&["status"]).stdout).into_owned();
        assert!(
            status.contains(&format!("nftables table re-created {n}")),
            "{status}"
        );
    }
    // The grant kept its deadline (about 60 s from the knock), not a fresh one.
    let left = kernel_expires_s(&lab);
    assert!((40..=59).contains(&left), "{left} s left\n{}", table(&lab));
}

/// Two knockd with Firewall = nftables on one host never change each other's protection or
/// grants: a second one without a table of its own refuses to start and names the owner; with
/// its own (`NftTable`), its start, restart and stop leave the first one's grant and
/// protection alone.
#[test]
fn nft_a_second_knockd_keeps_out_of_the_first_ones_table() {
    if !require_root() {
        return;
    }
    let lab = open_lab();
    let a = OurKnockd::start(&lab, &conf(60));
    knock(&lab, false, &["7000", "8000", "9000"]);
    wait_connects(&lab, false, 22, &a);
    let first_is_whole = |when: &str| {
        assert!(
            connects(&lab, false, 22),
            "{when}: the first knockd's grant is gone\n{}",
            table(&lab)
        );
        assert!(
            !connects(&lab, true, 22) && !connects(&lab, true, 8080),
            "{when}: the first knockd's ports are open to a stranger\n{}",
            table(&lab)
        );
        assert!(grants(&a).len() == 1, "{when}: {}", a.log());
    };
    let other = |table: &str| {
        format!(
            "[options]\n Firewall = nftables\n{table}[other]\n sequence = 7300,8300,9300\n open = 9999/tcp\n cmd_timeout = 60\n"
        )
    };
    // Same table: refused, naming the first knockd.
    let b = OurKnockd::spawn_named(&lab, "b", &other(""));
    assert!(
        b.daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "a second knockd took over table inet knockd:\n{}",
        b.log()
    );
    let state_a = lab.path("state.json");
    assert!(
        b.log().contains(&format!(
            "belongs to the knockd with state file {} (running, pid {})",
            state_a.display(),
            a.daemon.pid()
        )) && b.log().contains("NftTable"),
        "{}",
        b.log()
    );
    first_is_whole("after the refused start");
    // Its own table: start, restart, stop.
    let own = other(" NftTable = knockd-b\n");
    let b = OurKnockd::start_named(&lab, "b", &own);
    assert!(table_named(&lab, "knockd-b").contains("tcp . 9999"));
    first_is_whole("after the second knockd started");
    b.daemon.kill_term();
    assert!(b.daemon.wait_exit(Duration::from_secs(10)).is_some());
    let b = OurKnockd::start_named(&lab, "b", &own);
    first_is_whole("after the second knockd restarted");
    b.daemon.kill_term();
    assert!(b.daemon.wait_exit(Duration::from_secs(10)).is_some());
    first_is_whole("after the second knockd stopped");
    assert!(a.daemon.is_running());
}

/// `OnShutdown = close` (the default) closes nftables grants at stop, as it does iptables
/// ones; the table stays and keeps the ports closed.
#[test]
fn nft_a_stop_closes_the_grants_as_on_shutdown_says() {
    if !require_root() {
        return;
    }
    let lab = open_lab();
    let k = OurKnockd::start(&lab, &conf(60));
    knock(&lab, false, &["7000", "8000", "9000"]);
    wait_connects(&lab, false, 22, &k);
    k.daemon.kill_term();
    assert!(k.daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        !table(&lab).contains(&format!("{CLI_V4} . tcp")),
        "{}",
        table(&lab)
    );
    assert!(!connects(&lab, false, 22), "still open after the stop");
}
