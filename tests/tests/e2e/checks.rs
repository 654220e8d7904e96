//! Checks that tell the truth (issue 17): `knockd -t` as root and as an unprivileged user,
//! start-up warnings in the LogFile (once), and a control socket directory that keeps a
//! user out named in knockctl's message.

use knock_e2e::knockd::OurKnockd;
use knock_e2e::{bin, require_root, wait_until, Lab, SRV_IF};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

/// Three knocks: warned about.
const WEAK: &str = "[ssh]\n sequence = 2222,11111,33333\n seq_timeout = 5\n open = 22/tcp\n cmd_timeout = 3\n tcpflags = syn\n";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn check(lab: &Lab, prefix: &[&str], iface: &str) -> Output {
    let conf = lab.path("check.conf");
    let mut args: Vec<OsString> = prefix.iter().map(OsString::from).collect();
    args.extend([
        bin("knockd").into_os_string(),
        "-t".into(),
        "-i".into(),
        iface.into(),
        "-c".into(),
        conf.into_os_string(),
    ]);
    lab.srv_exec(args)
}

/// As root, a missing interface is an error (the start would fail); as nobody, `-t` names
/// the checks it could not make; the summary counts every warning printed.
#[test]
fn check_as_root_and_as_nobody_tells_the_truth() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = lab.write_file("check.conf", WEAK);
    std::fs::set_permissions(lab.tempdir(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod lab dir");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let missing = check(&lab, &[], "nosuch0");
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        text(&missing).contains("interface 'nosuch0' does not exist on this host"),
        "{}",
        text(&missing)
    );
    assert!(!text(&missing).contains(": OK,"), "{}", text(&missing));

    let root = check(&lab, &[], SRV_IF);
    assert!(root.status.success(), "{}", text(&root));
    let out = String::from_utf8_lossy(&root.stdout).into_owned();
    let printed = out.lines().filter(|l| l.contains("warning: ")).count();
    assert!(printed >= 1, "{out}");
    assert!(
        out.contains(&format!("OK, 1 door(s), {printed} warning(s)")),
        "the summary counts what was printed:\n{out}"
    );
    assert!(!out.contains("not checked"), "{out}");

    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let unprivileged = check(&lab, &nobody, SRV_IF);
    assert!(unprivileged.status.success(), "{}", text(&unprivileged));
    let out = String::from_utf8_lossy(&unprivileged.stdout).into_owned();
    let not_checked = out
        .lines()
        .find(|l| l.starts_with("not checked: "))
        .unwrap_or_else(|| panic!("no 'not checked' line:\n{out}"));
    assert!(
        not_checked.contains(&format!("{SRV_IF}'s link type")),
        "{out}"
    );
    assert!(not_checked.contains("nftables input-hook chains"), "{out}");
    assert!(
        not_checked.ends_with("(run knockd -t as root on the host that runs knockd)"),
        "{out}"
    );
    let printed = out.lines().filter(|l| l.contains("warning: ")).count();
    assert!(
        out.contains(&format!("OK, 1 door(s), {printed} warning(s)")),
        "{out}"
    );
    // Without privileges a missing interface is a warning (maybe another host), counted.
    let elsewhere = check(&lab, &nobody, "nosuch0");
    assert!(elsewhere.status.success(), "{}", text(&elsewhere));
    let out = String::from_utf8_lossy(&elsewhere.stdout).into_owned();
    assert!(
        out.contains("warning: interface 'nosuch0' does not exist on this host"),
        "{out}"
    );
    let printed = out.lines().filter(|l| l.contains("warning: ")).count();
    assert!(
        out.contains(&format!("OK, 1 door(s), {printed} warning(s)")),
        "{out}"
    );
}

/// `knockd -t` checks every SPA client record and door reference: a door naming a client
/// who is not enrolled, a record in the wrong file, two records with the same keys and a
/// missing server key are errors (exit status 1) naming the file or door and the fix; a
/// clean client directory passes, naming the rule that keeps the SPA port silent, or warning
/// that none does (command doors only).
#[test]
fn check_names_every_spa_client_problem() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = format!(
        "[options]\n SPA_ClientDir = {}\n SPA_ServerKey = {}\n\
         [ssh]\n SPA = alice, bob\n Open = 22/tcp\n",
        lab.path("clients").display(),
        lab.path("spa.key").display()
    );
    lab.write_file("check.conf", &conf);
    let no_key = check(&lab, &[], SRV_IF);
    assert_eq!(no_key.status.code(), Some(1), "{}", text(&no_key));
    assert!(
        text(&no_key).contains("spa.key' does not exist: no SPA door can open"),
        "{}",
        text(&no_key)
    );
    let made = std::process::Command::new(bin("knockd"))
        .arg("-c")
        .arg(lab.path("check.conf"))
        .args(["--new-client", "alice", "--out"])
        .arg(lab.path("alice.knock"))
        .output()
        .expect("knockd --new-client");
    assert!(made.status.success(), "{made:?}");
    let alice = std::fs::read_to_string(lab.path("clients/alice.pub")).expect("alice.pub");
    lab.write_file(
        "clients/mallory.pub",
        &alice.replace("name = alice", "name = mallory"),
    );
    lab.write_file("clients/carol.pub", &alice);
    let bad = check(&lab, &[], SRV_IF);
    let out = text(&bad);
    assert_eq!(bad.status.code(), Some(1), "{out}");
    for needle in [
        "error: door 'ssh': SPA names client 'bob', who is not enrolled",
        "knockd --new-client bob --out bob.knock",
        "carol.pub' names client 'alice'",
        "mallory.pub hold the same keys",
        "3 error(s), 1 door(s)",
    ] {
        assert!(out.contains(needle), "{needle}:\n{out}");
    }
    std::fs::remove_file(lab.path("clients/mallory.pub")).expect("rm");
    std::fs::remove_file(lab.path("clients/carol.pub")).expect("rm");
    lab.write_file(
        "check.conf",
        &conf.replace("SPA = alice, bob", "SPA = alice"),
    );
    let clean = check(&lab, &[], SRV_IF);
    assert!(clean.status.success(), "{}", text(&clean));
    assert!(
        text(&clean).contains("SPA: 1 client(s) enrolled"),
        "{}",
        text(&clean)
    );
    // Which rule keeps the SPA port silent (Firewall = iptables, the default) ...
    assert!(
        text(&clean).contains("SPA port 62201/udp: at start knockd inserts `iptables -I INPUT 1 -p udp -m udp --dport 62201 -m comment --comment knockd@"),
        "{}",
        text(&clean)
    );
    // ... and, with only command doors, that none does.
    lab.write_file(
        "check.conf",
        &conf
            .replace("SPA = alice, bob", "SPA = alice")
            .replace("Open = 22/tcp", "Start_Command = /bin/true %IP%"),
    );
    let command = check(&lab, &[], SRV_IF);
    assert!(command.status.success(), "{}", text(&command));
    assert!(
        text(&command).contains("warning: SPA_Port 62201/udp: no door opens natively (Open =) and Firewall = iptables, so knockd adds no rule for it"),
        "{}",
        text(&command)
    );
}

/// The config's warnings reach the LogFile (knockd.conf(5) says they are logged), and each
/// start-up warning is written once.
#[test]
fn start_up_warnings_go_to_the_log_file_once() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let log = lab.path("knockd.log");
    let conf = format!("[options]\n LogFile = {}\n{WEAK}", log.display());
    let k = OurKnockd::start(&lab, &conf);
    let needle = "door 'ssh': sequence has only 3 knocks";
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(needle)),
        "not in the LogFile:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let file = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(file.matches(needle).count(), 1, "{file}");
    assert_eq!(k.count(needle), 1, "stderr once:\n{}", k.log());
}

/// A user who cannot pass the socket's directory is told which directory stops them (not
/// only "join group knockd").
#[test]
fn knockctl_names_the_directory_that_keeps_a_user_out() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let k = OurKnockd::start(&lab, WEAK);
    assert!(k.knockctl(&["status"]).status.success());
    std::fs::set_permissions(lab.tempdir(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod lab dir");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("knockctl"))
        .arg("--socket")
        .arg(&k.socket)
        .arg("status")
        .output()
        .expect("run setpriv");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let dir = lab.tempdir().display().to_string();
    assert!(
        text(&out).contains(&format!(
            "you cannot pass directory {dir} (mode 0700, owner 0:0)"
        )) && text(&out).contains(&format!("chgrp knockd {dir} && chmod g+rx {dir}")),
        "{}",
        text(&out)
    );
    k.wait_started();
}
