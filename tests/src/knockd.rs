//! Helpers for tests of our own `knockd` and `knock`: start the daemon in a lab with a
//! private control socket and state file, knock from the client namespace, and look at the
//! server namespace's firewall.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{bin, wait_until, Daemon, Lab, SRV_IF};

/// knockd 0.8's example config, verbatim (the fixture the config parser tests use too).
pub const SEED: &str = include_str!("../fixtures/config/good/seed.conf");

/// How long our knockd may take to log `starting up, listening on kv0`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a knock may take to show up in the firewall (normally a few milliseconds).
pub const EFFECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `-A INPUT -s 10.99.77.2/32 -p tcp -m tcp --dport <port> -j ACCEPT`: what
/// `iptables -I INPUT -s %IP% -p tcp --dport <port> -j ACCEPT` looks like in `iptables -S`.
pub fn accept_rule(port: u16) -> String {
    format!(
        "-A INPUT -s {}/32 -p tcp -m tcp --dport {port} -j ACCEPT",
        crate::CLI_V4
    )
}

/// The rule a native door (`open = <port>/tcp`) inserts for the lab's client, as
/// `iptables -S` prints it.
pub fn native_rule(port: u16, door: &str) -> String {
    format!(
        "-A INPUT -s {}/32 -p tcp -m tcp --dport {port} -m comment --comment \"knockd:{door}\" -j ACCEPT",
        crate::CLI_V4
    )
}

/// `knockd -i kv0 -c <conf> --socket <socket> --state-file <state>`: our knockd on the lab's
/// server interface with a control socket and state file of the test's own (never the host's
/// defaults).
pub fn knockd_args(conf: &Path, socket: &Path, state: &Path) -> Vec<OsString> {
    vec![
        bin("knockd").into(),
        "-i".into(),
        SRV_IF.into(),
        "-c".into(),
        conf.into(),
        "--socket".into(),
        socket.into(),
        "--state-file".into(),
        state.into(),
    ]
}

/// Our knockd running in a lab's server namespace.
pub struct OurKnockd {
    pub daemon: Daemon,
    /// The config file it was started with (rewrite it and SIGHUP to reload).
    pub conf: PathBuf,
    /// Its control socket, private to the lab.
    pub socket: PathBuf,
}

impl OurKnockd {
    /// Writes `conf_text` to `knockd.conf` in the lab, starts `knockd -i kv0 -c <conf>` with
    /// a control socket and state file inside the lab's temp dir (never the host's defaults),
    /// and waits until it logs that it listens.
    pub fn start(lab: &Lab, conf_text: &str) -> OurKnockd {
        let knockd = OurKnockd::spawn(lab, conf_text);
        knockd.wait_started();
        knockd
    }

    /// Waits until it logs that it listens (`starting up, listening on kv0`); panics with
    /// its log when it does not within [`START_TIMEOUT`].
    pub fn wait_started(&self) {
        assert!(
            self.daemon
                .wait_for_log("starting up, listening on kv0", START_TIMEOUT),
            "our knockd ({}) did not start within {START_TIMEOUT:?}:\n{}",
            self.conf.display(),
            self.log()
        );
    }

    /// Like [`OurKnockd::start`], without waiting (for configs that must fail).
    pub fn spawn(lab: &Lab, conf_text: &str) -> OurKnockd {
        OurKnockd::spawn_with(lab, conf_text, Vec::new(), &[])
    }

    /// Like [`OurKnockd::spawn`], started through `prefix` (a wrapper that execs the rest,
    /// e.g. `prlimit ... --`, so the daemon's pid stays knockd's) and with `extra` arguments
    /// after the usual ones.
    pub fn spawn_with(
        lab: &Lab,
        conf_text: &str,
        prefix: Vec<OsString>,
        extra: &[&str],
    ) -> OurKnockd {
        let conf = lab.write_file("knockd.conf", conf_text);
        let socket = lab.path("knockd.sock");
        let mut args = prefix;
        args.extend(knockd_args(&conf, &socket, &lab.path("state.json")));
        args.extend(extra.iter().map(OsString::from));
        let daemon = lab.spawn_srv(args);
        OurKnockd {
            daemon,
            conf,
            socket,
        }
    }

    /// A second knockd in the same lab: config, socket and state file named `name.*`, so it
    /// shares nothing with the first but the interface. Does not wait for it to start.
    pub fn spawn_named(lab: &Lab, name: &str, conf_text: &str) -> OurKnockd {
        let conf = lab.write_file(&format!("{name}.conf"), conf_text);
        let socket = lab.path(&format!("{name}.sock"));
        let args = knockd_args(&conf, &socket, &lab.path(&format!("{name}.json")));
        let daemon = lab.spawn_srv(args);
        OurKnockd {
            daemon,
            conf,
            socket,
        }
    }

    /// [`OurKnockd::spawn_named`], waiting until it listens.
    pub fn start_named(lab: &Lab, name: &str, conf_text: &str) -> OurKnockd {
        let knockd = OurKnockd::spawn_named(lab, name, conf_text);
        knockd.wait_started();
        knockd
    }

    /// Runs `knockctl --socket <its socket> <args>` and returns what it printed.
    pub fn knockctl(&self, args: &[&str]) -> Output {
        Command::new(bin("knockctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run knockctl")
    }

    /// Everything the daemon logged so far (stderr; stdout too).
    pub fn log(&self) -> String {
        self.daemon.log_text()
    }

    /// How many times `needle` occurs in the log so far.
    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits until `needle` occurs at least `n` times in the log.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.count(needle) >= n)
    }

    /// When knockd logged each line containing `needle`, in order: seconds within the UTC
    /// day, from the line's own timestamp (the time of its event, not of the test's look, so
    /// a slow test does not stretch it).
    pub fn logged_at(&self, needle: &str) -> Vec<f64> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.split_whitespace().next().and_then(day_secs))
            .collect()
    }

    /// The first of [`OurKnockd::logged_at`]; panics with the log when there is none.
    pub fn first_logged_at(&self, needle: &str) -> f64 {
        self.logged_at(needle)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no '{needle}' in the log:\n{}", self.log()))
    }

    /// Replaces the config file (for a SIGHUP reload).
    pub fn rewrite_conf(&self, conf_text: &str) {
        std::fs::write(&self.conf, conf_text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.conf.display()));
    }
}

/// Seconds within the day of a tracing timestamp (`2026-11-25T17:48:05.505754Z`).
fn day_secs(t: &str) -> Option<f64> {
    let time = t.split_once('T')?.1.trim_end_matches('Z');
    let mut it = time.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Runs our `knock` in the client namespace with `args` (options, host, ports) and asserts
/// that it succeeded.
pub fn knock(lab: &Lab, args: &[&str]) -> Output {
    let mut argv: Vec<OsString> = vec![bin("knock").into()];
    argv.extend(args.iter().map(OsString::from));
    let out = lab.cli_exec(&argv);
    assert!(
        out.status.success(),
        "knock {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command in the server namespace and asserts that it succeeded.
pub fn srv_ok(lab: &Lab, args: &[&str]) -> Output {
    let out = lab.srv_exec(args);
    assert!(
        out.status.success(),
        "`{}` in the server namespace failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// How many lines of `iptables -S INPUT` (or ip6tables) in the server namespace are exactly
/// `rule`.
pub fn rule_count(lab: &Lab, v6: bool, rule: &str) -> usize {
    lab.iptables_rules(v6)
        .lines()
        .filter(|l| *l == rule)
        .count()
}

/// Waits until `rule` is in the server's INPUT chain.
pub fn wait_rule(lab: &Lab, v6: bool, rule: &str, timeout: Duration) -> bool {
    wait_until(timeout, || rule_count(lab, v6, rule) > 0)
}

/// Waits until `rule` is no longer in the server's INPUT chain.
pub fn wait_no_rule(lab: &Lab, v6: bool, rule: &str, timeout: Duration) -> bool {
    wait_until(timeout, || rule_count(lab, v6, rule) == 0)
}

/// True if `rule` never shows up in the server's INPUT chain during `period`.
pub fn stays_absent(lab: &Lab, v6: bool, rule: &str, period: Duration) -> bool {
    !wait_rule(lab, v6, rule, period)
}

/// The rules of the server's INPUT chain (without the `-P` policy line), in order.
pub fn input_rules(lab: &Lab, v6: bool) -> Vec<String> {
    lab.iptables_rules(v6)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect()
}
