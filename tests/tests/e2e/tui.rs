//! `knockctl tui` in a real terminal (tmux: send-keys / capture-pane) against a real knockd in
//! network namespaces: a partial knock shows up as `2/3`, the completed knock as a grant, `r`
//! then `y` revokes it (the iptables rule is gone), `q` quits and the terminal is restored.

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
        Tmux {
            socket: format!("kt-tui-{}", std::process::id()),
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
