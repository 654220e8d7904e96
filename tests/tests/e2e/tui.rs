//! `knockctl tui` in a real terminal (tmux: send-keys / capture-pane) against a real knockd in
//! network namespaces: a partial knock shows up as `2/3`, the completed knock as a grant, `r`
//! then `y` revokes it (the iptables rule is gone), `q` quits and the terminal is restored.
//! And over two hosts through real ssh (`knock_e2e::fleet`): both hosts' grants, one host
//! going away and coming back while the other keeps updating, `r` revoking on its own host.

use knock_e2e::fleet::{Fleet, CLIENT_V4};
use knock_e2e::knockd::{accept_rule, knock, OurKnockd, SEED};
use knock_e2e::{bin, require_root, wait_until, Lab, SRV_V4};
use std::process::Command;
use std::time::Duration;

/// A private tmux server (its own socket name), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        // Tests run in parallel: each its own server.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: format!("kt-tui-{}-{n}", std::process::id()),
        }
    }
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "tui"])
    }
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }
    fn wait_screen(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        wait_until(timeout, || pred(&self.screen()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn tui_shows_knocks_and_grants_revokes_and_restores_the_terminal() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    // Attempts must not time out while the test looks at them.
    let k = OurKnockd::start(&lab, &SEED.replace("seq_timeout = 5", "seq_timeout = 30"));
    let socket = &k.socket;
    let accept_22 = accept_rule(22);

    let tmux = Tmux::new();
    // The pane runs the TUI, then says how it ended and stays open for inspection.
    let script = format!(
        "{} --socket {} tui; echo TUI-EXITED rc=$?; sleep 60",
        bin("knockctl").display(),
        socket.display()
    );
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "80",
        "-y",
        "24",
        "bash",
        "-c",
        &script,
    ]);
    assert!(
        tmux.wait_screen(Duration::from_secs(10), |s| s.contains("[connected]")),
        "TUI did not connect:\n{}",
        tmux.screen()
    );

    // A partial knock: the attempts pane shows the source, the door and 2/3.
    knock(&lab, &[SRV_V4, "7000", "8000"]);
    assert!(
        tmux.wait_screen(Duration::from_secs(5), |s| s
            .lines()
            .any(|l| l.contains("10.99.77.2")
                && l.contains("openSSH")
                && l.contains("2/3"))),
        "no 2/3 row:\n{}",
        tmux.screen()
    );

    // Complete it: the grant appears.
    knock(&lab, &[SRV_V4, "9000"]);
    assert!(wait_until(Duration::from_secs(5), || lab
        .iptables_rules(false)
        .contains(&accept_22)));
    assert!(
        tmux.wait_screen(Duration::from_secs(5), |s| s.contains("Grants (1)")),
        "no grant:\n{}",
        tmux.screen()
    );
    let screen = tmux.screen();
    let grants = screen.split("Grants (1)").nth(1).unwrap_or_default();
    assert!(
        grants.contains("10.99.77.2") && grants.contains("openSSH"),
        "{screen}"
    );

    // Focus the grants pane, r, y: revoked, and the rule is really gone.
    tmux.keys(&["2"]);
    tmux.keys(&["r"]);
    assert!(
        tmux.wait_screen(Duration::from_secs(5), |s| s.contains("Revoke 10.99.77.2")),
        "no confirmation:\n{}",
        tmux.screen()
    );
    tmux.keys(&["y"]);
    assert!(
        wait_until(Duration::from_secs(5), || !lab
            .iptables_rules(false)
            .contains(&accept_22)),
        "rule still present:\n{}\n{}",
        lab.iptables_rules(false),
        tmux.screen()
    );
    assert!(
        tmux.wait_screen(Duration::from_secs(5), |s| s.contains("Grants (0)")),
        "{}",
        tmux.screen()
    );

    // q quits; the shell after it prints on a normal (restored) screen.
    tmux.keys(&["q"]);
    assert!(
        tmux.wait_screen(Duration::from_secs(5), |s| s.contains("TUI-EXITED rc=0")),
        "TUI did not exit cleanly:\n{}",
        tmux.screen()
    );
    let after = tmux.screen();
    assert!(
        !after.contains("Attempts"),
        "dashboard still on screen:\n{after}"
    );
    let alt = tmux.cmd(&["display-message", "-p", "-t", "tui", "#{alternate_on}"]);
    assert_eq!(alt.trim(), "0", "alternate screen still on");
}

/// A native door; grants last long enough to look at them.
const FLEET_CONF: &str = "[ssh]\n sequence = 2222,1111,3333\n seq_timeout = 60\n open = 22/tcp\n \
                          cmd_timeout = 600\n tcpflags = syn\n";

/// Whether a row of the screen has `host` right before `addr` (a HOST column cell, not an
/// event line, where the host is followed by its tag).
fn host_row(screen: &str, host: &str, addr: &str, also: &str) -> bool {
    screen.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.windows(2).any(|w| w[0] == host && w[1] == addr) && l.contains(also)
    })
}

fn fleet_has_grant(fleet: &Fleet, i: usize) -> bool {
    fleet
        .iptables_rules(i)
        .contains(&format!("-s {CLIENT_V4}/32 -p tcp -m tcp --dport 22"))
}

#[test]
fn tui_over_two_hosts_survives_one_going_away_and_revokes_on_the_grants_host() {
    if !require_root() {
        return;
    }
    let wait = Duration::from_secs(20);
    let mut fleet = Fleet::new(2, FLEET_CONF);
    for i in [0, 1] {
        fleet.knock(i, &["2222", "1111", "3333"]);
        assert!(
            wait_until(wait, || fleet_has_grant(&fleet, i)),
            "h{i}: no grant"
        );
    }

    let tmux = Tmux::new();
    let tui = fleet.knockctl_command_line(&format!(
        "--hosts-file {} --hosts fleet tui",
        fleet.hosts_file().display()
    ));
    let script = format!("{tui}; echo TUI-EXITED rc=$?; sleep 60");
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "200",
        "-y",
        "50",
        "bash",
        "-c",
        &script,
    ]);
    // Both hosts connected, each one's grant on its own row.
    assert!(
        tmux.wait_screen(wait, |s| s.contains("[2/2 connected]")
            && host_row(s, "h0", CLIENT_V4, "22/tcp")
            && host_row(s, "h1", CLIENT_V4, "22/tcp")),
        "both hosts' grants not shown:\n{}",
        tmux.screen()
    );
    assert!(tmux.screen().contains("2 Grants (2)"), "{}", tmux.screen());

    // h1 goes away (its sshd and every session on it): the header says so in ssh's words,
    // retrying; its grant stays on screen, marked stale.
    fleet.stop_sshd(1);
    let refused = format!(
        "ssh: connect to host {} port 22: Connection refused",
        fleet.hosts[1].addr
    );
    assert!(
        tmux.wait_screen(wait, |s| s.contains("[1/2 connected]")
            && s.lines().any(
                |l| l.starts_with("h1  disconnected, retrying") && l.contains(&refused)
            )),
        "h1 not shown as disconnected:\n{}",
        tmux.screen()
    );
    assert!(tmux.screen().contains("STALE: h1"), "{}", tmux.screen());
    // Meanwhile h0 keeps updating: a knock there shows as an attempt.
    fleet.knock(0, &["2222"]);
    assert!(
        tmux.wait_screen(wait, |s| host_row(s, "h0", CLIENT_V4, "1/3")),
        "h0's attempt not shown while h1 is down:\n{}",
        tmux.screen()
    );

    // h1 comes back: reconnected, its grant listed again, nothing stale.
    fleet.start_sshd(1);
    let sshd = fleet.hosts[1].sshd.as_ref().expect("sshd");
    assert!(
        sshd.wait_for_log("Server listening on", wait),
        "{}",
        sshd.log_text()
    );
    assert!(
        tmux.wait_screen(wait, |s| s.contains("[2/2 connected]")
            && !s.contains("STALE")
            && host_row(s, "h1", CLIENT_V4, "22/tcp")),
        "h1 not back:\n{}",
        tmux.screen()
    );

    // r on h1's grant (the younger: second row) revokes it on h1 only.
    tmux.keys(&["2"]);
    tmux.keys(&["j"]);
    tmux.keys(&["r"]);
    assert!(
        tmux.wait_screen(Duration::from_secs(5), |s| s
            .contains(&format!("Revoke {CLIENT_V4} (ssh) on h1? y/n"))),
        "no confirmation naming h1:\n{}",
        tmux.screen()
    );
    tmux.keys(&["y"]);
    assert!(
        wait_until(wait, || !fleet_has_grant(&fleet, 1)),
        "h1's grant still open:\n{}",
        tmux.screen()
    );
    assert!(fleet_has_grant(&fleet, 0), "h0's grant was revoked too");
    assert!(
        tmux.wait_screen(wait, |s| s.contains("h1: revoked")
            && s.contains("2 Grants (1)")),
        "{}",
        tmux.screen()
    );

    tmux.keys(&["q"]);
    assert!(
        tmux.wait_screen(Duration::from_secs(5), |s| s.contains("TUI-EXITED rc=0")),
        "TUI did not exit cleanly:\n{}",
        tmux.screen()
    );
}
