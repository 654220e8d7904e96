//! Proves the harness with the reference implementation: Debian's knockd 0.8 in the server
//! namespace, Debian's knock in the client namespace, iptables only inside the lab.

use std::process::Command;
use std::time::Duration;

use knock_e2e::{
    debian_bin, read_text, require_root, wait_for_text, wait_until, Lab, CLI_V4, DEBIAN_KNOCK,
    DEBIAN_KNOCKD, SRV_IF, SRV_V4,
};

const IPTABLES: &str = "/usr/sbin/iptables";

/// The host's own rules, read (never changed) to prove the test left them alone.
fn host_firewall() -> String {
    let mut rules = String::new();
    for tool in ["iptables", "ip6tables"] {
        let out = Command::new(tool)
            .arg("-S")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} on the host: {e}"));
        assert!(
            out.status.success(),
            "{tool} -S on the host failed: {out:?}"
        );
        rules += &String::from_utf8_lossy(&out.stdout);
    }
    rules
}

#[test]
fn debian_knock_opens_a_door_of_debian_knockd_in_the_lab() {
    if !require_root() {
        return;
    }
    let knockd = debian_bin(DEBIAN_KNOCKD);
    let knock = debian_bin(DEBIAN_KNOCK);
    let host_before = host_firewall();

    let lab = Lab::new();
    let log = lab.path("knockd.log");
    let conf = lab.write_file(
        "knockd.conf",
        &format!(
            "[options]\n\
             \tLogFile = {log}\n\
             \n\
             [openSSH]\n\
             \tsequence    = 7000,8000,9000\n\
             \tseq_timeout = 5\n\
             \tcommand     = {IPTABLES} -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n\
             \ttcpflags    = syn\n",
            log = log.display()
        ),
    );
    let conf = conf.to_str().expect("temp dir path is UTF-8");
    let daemon = lab.spawn_srv([knockd, "-i", SRV_IF, "-c", conf, "-v"]);
    assert!(
        wait_for_text(
            &log,
            "starting up, listening on kv0",
            Duration::from_secs(5)
        ),
        "knockd did not start; log:\n{}",
        read_text(&log)
    );

    let out = lab.cli_exec([knock, SRV_V4, "7000", "8000", "9000"]);
    assert!(out.status.success(), "knock failed: {out:?}");

    let rule = format!("-A INPUT -s {CLI_V4}/32 -p tcp -m tcp --dport 22 -j ACCEPT");
    let opened = wait_until(Duration::from_secs(5), || {
        lab.iptables_rules(false).lines().any(|l| l == rule)
    });
    assert!(
        opened,
        "no `{rule}` in the lab:\n{}\nknockd log:\n{}",
        lab.iptables_rules(false),
        read_text(&log)
    );
    assert!(read_text(&log).contains(&format!("{CLI_V4}: openSSH: OPEN SESAME")));

    drop(daemon);
    drop(lab);
    assert_eq!(host_before, host_firewall(), "the host's firewall changed");
}
