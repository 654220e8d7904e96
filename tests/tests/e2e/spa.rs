//! Single-packet knocks end to end, IPv4 and IPv6, with `Firewall = nftables` (which drops the
//! SPA port). The client's key is made by `knockd --new-client`; `knock --spa` opens; a packet
//! made with the same key (what a sniffer captures) is replayed from another address, from the
//! same address, after SIGHUP, after `kill -9` + restart (also a packet made after the restart
//! by a client clock ahead: refused by the replay memory in the state file, not the start
//! fence) and after the state file was deleted: every replay is refused and counted; a revoked client is refused without a restart; knockd
//! binds no UDP socket and nothing answers a probe to the SPA port. With `Firewall = iptables`,
//! knockd's own DROP rule keeps the port silent through grants, `kill -9` + restart, reloads,
//! a clean exit and `--firewall-cleanup` (`spa_port_is_silent_with_iptables_*`), and is put
//! back by the periodic check after another program deleted it
//! (`a_deleted_spa_drop_rule_is_put_back_by_the_check`).

use knock_e2e::knockd::{self, srv_ok, OurKnockd};
use knock_e2e::traffic::netns::create_in;
use knock_e2e::{bin, require_root, wait_until, Lab, CLI_IF, CLI_V4, CLI_V6, SRV_V4, SRV_V6};
use knock_ipc::spa::keys::random_nonce;
use knock_ipc::spa::{Body, ClientKey, DoorId, Op};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

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

fn lab() -> Lab {
    let lab = Lab::new();
    let file = lab.write_file("host.nft", HOST_RULESET);
    srv_ok(&lab, &["nft", "-f", file.to_str().expect("utf-8 path")]);
    listen_22(&lab);
    lab
}

/// Something listening on port 22 of the server namespace (IPv4 and IPv6).
fn listen_22(lab: &Lab) {
    let listener = create_in(lab.srv_ns(), || {
        Ok(TcpListener::bind(SocketAddr::from((
            std::net::Ipv6Addr::UNSPECIFIED,
            22,
        )))?)
    })
    .expect("listener");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
}

fn srv(v6: bool) -> IpAddr {
    if v6 { SRV_V6 } else { SRV_V4 }.parse().expect("ip")
}

fn connects(lab: &Lab, v6: bool) -> bool {
    let ip = srv(v6);
    create_in(lab.cli_ns(), move || {
        Ok(
            TcpStream::connect_timeout(&SocketAddr::new(ip, 22), Duration::from_millis(700))
                .is_ok(),
        )
    })
    .expect("connect")
}

fn conf(lab: &Lab) -> String {
    format!(
        "[options]\n\tFirewall = nftables\n\tSPA_ClientDir = {}\n\tSPA_ServerKey = {}\n\
         [ssh]\n\tSPA = alice\n\tOpen = 22/tcp\n\tCmd_Timeout = 30\n",
        lab.path("clients").display(),
        lab.path("spa.key").display()
    )
}

/// Sends `packet` to the SPA port from `from` in the client namespace; Err = ICMP came back.
fn send(lab: &Lab, from: IpAddr, to: IpAddr, packet: Vec<u8>) {
    create_in(lab.cli_ns(), move || {
        let s = UdpSocket::bind(SocketAddr::new(from, 0))?;
        s.send_to(&packet, SocketAddr::new(to, knock_ipc::spa::DEFAULT_PORT))?;
        Ok(())
    })
    .expect("send from the client namespace");
}

/// Whether a probe from `from` (client namespace) to UDP `port` of `to` gets an answer.
fn answered(lab: &Lab, from: IpAddr, to: IpAddr, port: u16) -> bool {
    create_in(lab.cli_ns(), move || {
        let s = UdpSocket::bind(SocketAddr::new(from, 0))?;
        s.connect(SocketAddr::new(to, port))?;
        s.set_read_timeout(Some(Duration::from_millis(800)))?;
        s.send(b"probe")?;
        let mut buf = [0u8; 64];
        // Port unreachable shows as ECONNREFUSED on the next receive; silence as a timeout.
        Ok(match s.recv(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        })
    })
    .expect("probe")
}

/// `knockd_spa_packets_total{outcome="..."}` from `knockctl metrics`.
fn outcome(k: &OurKnockd, what: &str) -> u64 {
    let text = String::from_utf8_lossy(&k.knockctl(&["metrics"]).stdout).into_owned();
    let needle = format!("knockd_spa_packets_total{{outcome=\"{what}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_outcome(k: &OurKnockd, what: &str, n: u64) {
    assert!(
        wait_until(Duration::from_secs(5), || outcome(k, what) >= n),
        "SPA outcome {what} never reached {n} (is {})\n{}",
        outcome(k, what),
        k.log()
    );
}

fn spa_flow(v6: bool) {
    if !require_root() {
        return;
    }
    let lab = lab();
    let conf_text = conf(&lab);
    let conf_path = lab.write_file("knockd.conf", &conf_text);
    let key = lab.path("alice.knock");
    let made = std::process::Command::new(bin("knockd"))
        .arg("-c")
        .arg(&conf_path)
        .args(["--new-client", "alice", "--out"])
        .arg(&key)
        .output()
        .expect("knockd --new-client");
    assert!(made.status.success(), "{made:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let k = OurKnockd::start(&lab, &conf_text);
    let (cli, other): (IpAddr, IpAddr) = if v6 {
        (
            CLI_V6.parse().expect("ip"),
            "fd99:77::3".parse().expect("ip"),
        )
    } else {
        (
            CLI_V4.parse().expect("ip"),
            "10.99.77.3".parse().expect("ip"),
        )
    };

    // Silent: no socket of knockd's, knockd's table drops the port, a probe gets no answer.
    let ss = lab.srv_exec(["ss", "-lunp"]);
    assert!(
        !String::from_utf8_lossy(&ss.stdout).contains("knockd"),
        "{ss:?}"
    );
    let table = lab.srv_exec(["nft", "list", "table", "inet", "knockd"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("udp dport 62201"),
        "{table:?}"
    );
    let to = srv(v6);
    assert!(
        !answered(&lab, cli, to, knock_ipc::spa::DEFAULT_PORT),
        "the SPA port answered a probe"
    );
    assert!(!connects(&lab, v6));

    // Opens with the real client.
    let host = to.to_string();
    knockd::knock(&lab, &["--spa", key.to_str().expect("utf-8"), &host]);
    assert!(
        wait_until(Duration::from_secs(5), || connects(&lab, v6)),
        "{}",
        k.log()
    );
    let list = String::from_utf8_lossy(&k.knockctl(&["list"]).stdout).into_owned();
    assert!(list.contains("SPA alice"), "{list}");
    let clients = String::from_utf8_lossy(&k.knockctl(&["clients"]).stdout).into_owned();
    assert!(
        clients.contains("alice") && clients.contains("SHA256:") && clients.contains("ssh"),
        "{clients}"
    );

    // A packet as a sniffer captures it: accepted once, then refused everywhere (the client
    // gets a second address now, so that its own knocks above came from the first).
    let prefix = if v6 { "64" } else { "24" };
    let added = lab.cli_exec([
        "ip",
        "addr",
        "add",
        &format!("{other}/{prefix}"),
        "dev",
        CLI_IF,
        "nodad",
    ]);
    assert!(added.status.success(), "{added:?}");
    std::thread::sleep(Duration::from_millis(300));
    let client = ClientKey::read(&key).expect("client key");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let body = Body {
        ts_ms: now_ms,
        op: Op::Open,
        addr: None,
        timeout_secs: 0,
        door: DoorId::ANY,
    };
    let packet = client
        .packet(&body, &random_nonce().expect("nonce"))
        .expect("packet")
        .to_vec();
    send(&lab, cli, to, packet.clone());
    wait_outcome(&k, "accepted", 2);
    send(&lab, other, to, packet.clone());
    wait_outcome(&k, "replay", 1);
    send(&lab, cli, to, packet.clone());
    wait_outcome(&k, "replay", 2);
    k.daemon.kill_hup();
    assert!(
        k.wait_count("configuration reloaded", 1, Duration::from_secs(5)),
        "{}",
        k.log()
    );
    send(&lab, other, to, packet.clone());
    wait_outcome(&k, "replay", 3);
    assert_eq!(outcome(&k, "accepted"), 2);
    let grants = String::from_utf8_lossy(&k.knockctl(&["list"]).stdout).into_owned();
    assert!(
        !grants.contains(&other.to_string()),
        "a replay opened {other}: {grants}"
    );

    // A client whose clock is 45 s ahead (within the clock window): its packet is made after
    // the next start, so the start fence alone would let a replay of it in.
    let ahead = client
        .packet(
            &Body {
                ts_ms: now_ms + 45_000,
                ..body
            },
            &random_nonce().expect("nonce"),
        )
        .expect("packet")
        .to_vec();
    send(&lab, cli, to, ahead.clone());
    wait_outcome(&k, "accepted", 3);
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(lab.path("state.json")).is_ok_and(|t| {
                t.contains("spa_replay") && t.contains(&(now_ms + 45_000).to_string())
            })
        }),
        "the replay memory never reached the state file"
    );

    // kill -9 and restart: the fence refuses every packet made before the start, the
    // memory from the state file the one made after it.
    k.daemon.kill_9();
    assert!(k.daemon.wait_exit(Duration::from_secs(5)).is_some());
    drop(k);
    let k = OurKnockd::start(&lab, &conf_text);
    send(&lab, other, to, packet.clone());
    wait_outcome(&k, "replay", 1);
    send(&lab, other, to, ahead.clone());
    wait_outcome(&k, "replay", 2);
    send(&lab, cli, to, ahead.clone());
    wait_outcome(&k, "replay", 3);
    assert_eq!(outcome(&k, "accepted"), 0, "{}", k.log());
    assert!(
        k.log()
            .contains("SPA replay memory: 1 client(s) from the state file"),
        "{}",
        k.log()
    );
    // Lost state file and restart: the same.
    k.daemon.kill_9();
    assert!(k.daemon.wait_exit(Duration::from_secs(5)).is_some());
    drop(k);
    let _ = std::fs::remove_file(lab.path("state.json"));
    let k = OurKnockd::start(&lab, &conf_text);
    send(&lab, other, to, packet.clone());
    wait_outcome(&k, "replay", 1);
    assert_eq!(outcome(&k, "accepted"), 0, "{}", k.log());
    // A fresh packet still opens (and names its client on the grant the kernel kept).
    knockd::knock(&lab, &["--spa", key.to_str().expect("utf-8"), &host]);
    wait_outcome(&k, "accepted", 1);

    // Revoked without a restart: its next packet does not pass the hint lookup.
    let out = k.knockctl(&["clients", "revoke", "alice", "--close"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(5), || !connects(&lab, v6)),
        "still open after revoke --close"
    );
    knockd::knock(&lab, &["--spa", key.to_str().expect("utf-8"), &host]);
    wait_outcome(&k, "unknown_hint", 1);
    assert!(!connects(&lab, v6), "a revoked client opened");
    assert!(lab.path("clients/alice.pub.revoked").exists());
}

#[test]
fn spa_opens_and_every_replay_is_refused_v4() {
    spa_flow(false);
}

#[test]
fn spa_opens_and_every_replay_is_refused_v6() {
    spa_flow(true);
}

/// The SPA port's DROP rule as `iptables -S INPUT` lists it (instance tag removed).
fn drop_rule(port: u16) -> String {
    format!(
        "-A INPUT -p udp -m udp --dport {port} -m comment --comment \"knockd:spa-drop\" -j DROP"
    )
}

/// How many drop rules of knockd's for `port` each family's INPUT holds: (IPv4, IPv6).
fn drops(lab: &Lab, port: u16) -> (usize, usize) {
    let rule = drop_rule(port);
    (
        knockd::rule_count(lab, false, &rule),
        knockd::rule_count(lab, true, &rule),
    )
}

fn wait_drops(lab: &Lab, port: u16, n: (usize, usize), log: &str) {
    assert!(
        wait_until(Duration::from_secs(5), || drops(lab, port) == n),
        "drop rules for {port}: {:?}, not {n:?}\nv4:\n{}\nv6:\n{}\n{log}",
        drops(lab, port),
        lab.iptables_rules(false),
        lab.iptables_rules(true)
    );
}

fn iptables_conf(lab: &Lab, spa_port: u16) -> String {
    format!(
        "[options]\n\tFirewall = iptables\n\tSPA_Port = {spa_port}\n\tSPA_ClientDir = {}\n\tSPA_ServerKey = {}\n\
         [ssh]\n\tSPA = alice\n\tOpen = 22/tcp\n\tCmd_Timeout = 30\n",
        lab.path("clients").display(),
        lab.path("spa.key").display()
    )
}

/// `Firewall = iptables`: knockd's own DROP rule (`knockd@TAG:spa-drop`, first in INPUT, both
/// families) keeps the SPA port silent while a grant (inserted in front of it) opens port 22
/// under the admin's own drop; `kill -9` + restart keeps exactly one rule per family; a failed
/// reload keeps it, one that moves SPA_Port swaps it; a clean exit leaves none, and
/// `--firewall-cleanup` removes one a `kill -9` left.
fn spa_iptables_flow(v6: bool) {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    listen_22(&lab);
    // The admin's ruleset: port 22 closed, nothing about the SPA port (the kernel would
    // answer it with ICMP port unreachable).
    for tool in ["iptables", "ip6tables"] {
        srv_ok(
            &lab,
            &[
                tool, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP",
            ],
        );
    }
    let port = knock_ipc::spa::DEFAULT_PORT;
    let conf_text = iptables_conf(&lab, port);
    let conf_path = lab.write_file("knockd.conf", &conf_text);
    let key = lab.path("alice.knock");
    let made = std::process::Command::new(bin("knockd"))
        .arg("-c")
        .arg(&conf_path)
        .args(["--new-client", "alice", "--out"])
        .arg(&key)
        .output()
        .expect("knockd --new-client");
    assert!(made.status.success(), "{made:?}");
    let (cli, to): (IpAddr, IpAddr) = if v6 {
        (CLI_V6.parse().expect("ip"), srv(true))
    } else {
        (CLI_V4.parse().expect("ip"), srv(false))
    };
    // Without knockd the kernel answers (what the rule is for; the probe sees it).
    assert!(
        answered(&lab, cli, to, port),
        "no ICMP answer without the rule: the probe proves nothing"
    );

    let k = OurKnockd::start(&lab, &conf_text);
    wait_drops(&lab, port, (1, 1), &k.log());
    for tool in ["iptables", "ip6tables"] {
        let said = format!("SPA port {port}/udp: inserted `{tool} -I INPUT 1 -p udp -m udp --dport {port} -m comment --comment knockd@");
        assert!(k.log().contains(&said), "{said}\n{}", k.log());
    }
    assert!(
        !answered(&lab, cli, to, port),
        "the SPA port answered a probe"
    );

    // A grant goes in front of the drop rule and opens its own port.
    assert!(!connects(&lab, v6));
    let host = to.to_string();
    knockd::knock(&lab, &["--spa", key.to_str().expect("utf-8"), &host]);
    assert!(
        wait_until(Duration::from_secs(5), || connects(&lab, v6)),
        "{}",
        k.log()
    );
    let rules = knockd::input_rules(&lab, v6);
    assert_eq!(
        rules.last().map(String::as_str),
        Some("-A INPUT -p tcp -m tcp --dport 22 -j DROP"),
        "{rules:?}"
    );
    assert!(
        rules[0].contains("-j ACCEPT") && rules[1] == drop_rule(port),
        "{rules:?}"
    );
    assert!(
        !answered(&lab, cli, to, port),
        "the SPA port answered the granted client"
    );

    // kill -9 + restart: the rule left behind is kept, not doubled, and not taken for a grant.
    k.daemon.kill_9();
    assert!(k.daemon.wait_exit(Duration::from_secs(5)).is_some());
    drop(k);
    wait_drops(&lab, port, (1, 1), "after kill -9");
    let k = OurKnockd::start(&lab, &conf_text);
    assert!(
        k.wait_count(
            "already in INPUT (left by an earlier run): kept",
            2,
            Duration::from_secs(5)
        ),
        "{}",
        k.log()
    );
    assert_eq!(drops(&lab, port), (1, 1), "{}", k.log());
    assert!(
        !k.log().contains("spa-drop: rule"),
        "taken for a grant:\n{}",
        k.log()
    );
    assert!(
        !answered(&lab, cli, to, port),
        "the SPA port answered after the restart"
    );

    // A reload that fails keeps the rule; one that moves the port swaps it.
    k.rewrite_conf("[ssh\n");
    k.daemon.kill_hup();
    assert!(
        k.wait_count("reload failed", 1, Duration::from_secs(5)),
        "{}",
        k.log()
    );
    assert_eq!(drops(&lab, port), (1, 1), "{}", k.log());
    let moved = port + 1;
    k.rewrite_conf(&iptables_conf(&lab, moved));
    k.daemon.kill_hup();
    wait_drops(&lab, moved, (1, 1), &k.log());
    wait_drops(&lab, port, (0, 0), &k.log());
    assert!(
        !answered(&lab, cli, to, moved),
        "the new SPA port answered a probe"
    );

    // A clean exit leaves none.
    k.daemon.kill_term();
    assert!(k.daemon.wait_exit(Duration::from_secs(20)).is_some());
    assert_eq!(drops(&lab, moved), (0, 0), "{}", k.log());
    assert!(
        !lab.iptables_rules_raw(false).contains("spa-drop")
            && !lab.iptables_rules_raw(true).contains("spa-drop"),
        "{}",
        k.log()
    );
    drop(k);

    // --firewall-cleanup refuses while the owner runs (--force too), removes what a kill -9
    // left, and nothing else.
    let cleanup = |force: bool| {
        let mut argv = vec![
            bin("knockd").into_os_string(),
            "-c".into(),
            conf_path.clone().into_os_string(),
            "--state-file".into(),
            lab.path("state.json").into_os_string(),
            "--firewall-cleanup".into(),
        ];
        if force {
            argv.push("--force".into());
        }
        lab.srv_exec(argv)
    };
    let k = OurKnockd::start(&lab, &conf_text);
    wait_drops(&lab, port, (1, 1), &k.log());
    for force in [false, true] {
        let refused = cleanup(force);
        assert!(!refused.status.success(), "{refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("spa-drop is in use"),
            "{refused:?}"
        );
        assert_eq!(drops(&lab, port), (1, 1));
    }
    k.daemon.kill_9();
    assert!(k.daemon.wait_exit(Duration::from_secs(5)).is_some());
    drop(k);
    let cleanup = cleanup(false);
    assert!(cleanup.status.success(), "{cleanup:?}");
    assert_eq!(drops(&lab, port), (0, 0), "{cleanup:?}");
    for v6 in [false, true] {
        assert_eq!(
            knockd::input_rules(&lab, v6).last().map(String::as_str),
            Some("-A INPUT -p tcp -m tcp --dport 22 -j DROP"),
            "the admin's rule stays"
        );
    }
}

#[test]
fn spa_port_is_silent_with_iptables_v4() {
    spa_iptables_flow(false);
}

#[test]
fn spa_port_is_silent_with_iptables_v6() {
    spa_iptables_flow(true);
}

/// Another program deletes knockd's DROP rule in both families (`iptables -D`, what a ruleset
/// restore or a flush of INPUT does to it): the periodic check (every 15 s) puts it back, says
/// so once per family, and the port is silent again, with no reload.
#[test]
fn a_deleted_spa_drop_rule_is_put_back_by_the_check() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let port = knock_ipc::spa::DEFAULT_PORT;
    let conf_text = iptables_conf(&lab, port);
    let conf_path = lab.write_file("knockd.conf", &conf_text);
    let made = std::process::Command::new(bin("knockd"))
        .arg("-c")
        .arg(&conf_path)
        .args(["--new-client", "alice", "--out"])
        .arg(lab.path("alice.knock"))
        .output()
        .expect("knockd --new-client");
    assert!(made.status.success(), "{made:?}");
    let k = OurKnockd::start(&lab, &conf_text);
    wait_drops(&lab, port, (1, 1), &k.log());
    let started = std::time::Instant::now();
    for (v6, tool) in [(false, "iptables"), (true, "ip6tables")] {
        let listed = lab.iptables_rules_raw(v6);
        let rule = listed
            .lines()
            .find(|l| l.contains(":spa-drop"))
            .expect("the drop rule")
            .replace('"', "");
        let mut delete = vec![tool, "-D"];
        delete.extend(rule.split_whitespace().skip(1));
        srv_ok(&lab, &delete);
    }
    assert_eq!(drops(&lab, port), (0, 0));
    let (cli, to): (IpAddr, IpAddr) = (CLI_V4.parse().expect("ip"), srv(false));
    assert!(
        answered(&lab, cli, to, port),
        "the port stayed silent without the rule: the probe proves nothing"
    );
    assert!(
        wait_until(Duration::from_secs(20), || drops(&lab, port) == (1, 1)),
        "not put back within 20 s: {:?}\n{}",
        drops(&lab, port),
        k.log()
    );
    let took = started.elapsed();
    assert!(
        k.wait_count(
            "was missing from INPUT (removed by another program",
            2,
            Duration::from_secs(2)
        ),
        "{}",
        k.log()
    );
    for tool in ["iptables", "ip6tables"] {
        let said = format!("warning: SPA port {port}/udp: {tool}: DROP rule knockd@");
        assert_eq!(k.count(&said), 1, "{said}\n{}", k.log());
    }
    assert!(!answered(&lab, cli, to, port), "the SPA port answered");
    // Quiet when in place: only the two inserts at start and the two put back.
    assert_eq!(k.count("SPA port 62201/udp"), 4, "{}", k.log());
    assert!(!k.log().contains("already in INPUT"), "{}", k.log());
    eprintln!("put back after {took:?}");
}
