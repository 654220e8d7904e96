//! [`Lab`]: a server and a client network namespace joined by a veth pair.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{kill_and_reap, Daemon, SharedChild};
use crate::wait::wait_until;

/// The server's end of the veth pair.
pub const SRV_IF: &str = "kv0";
/// The client's end of the veth pair.
pub const CLI_IF: &str = "kv1";
pub const SRV_V4: &str = "10.99.77.1";
pub const CLI_V4: &str = "10.99.77.2";
pub const SRV_V6: &str = "fd99:77::1";
pub const CLI_V6: &str = "fd99:77::2";

/// How long a new lab may take until its addresses are usable.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Labs created by this process so far; with the pid, it makes namespace names unique.
static LABS: AtomicU32 = AtomicU32::new(0);

/// `kt<pid>-<n>`: the prefix of lab `n` of process `pid`.
fn lab_prefix(pid: u32, n: u32) -> String {
    format!("kt{pid}-{n}")
}

/// Two fresh network namespaces, `kt<pid>-<n>-srv` and `kt<pid>-<n>-cli`, joined by a veth
/// pair: [`SRV_IF`] with [`SRV_V4`]/24 and [`SRV_V6`]/64 in the server, [`CLI_IF`] with
/// [`CLI_V4`]/24 and [`CLI_V6`]/64 in the client, plus a temp dir for files.
///
/// Dropping it kills the processes it started (by PID), then any process still inside its
/// namespaces, then deletes both namespaces and the temp dir, even during a panic.
pub struct Lab {
    srv: String,
    cli: String,
    dir: Arc<TempDir>,
    children: Mutex<Vec<SharedChild>>,
    spawned: AtomicU32,
}

impl Lab {
    /// Creates the namespaces and waits until the addresses are usable. Call
    /// [`require_root`](crate::require_root) first.
    #[expect(
        clippy::new_without_default,
        reason = "creating namespaces is not a default value"
    )]
    pub fn new() -> Lab {
        let prefix = lab_prefix(std::process::id(), LABS.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("cannot create the lab's temp dir");
        let lab = Lab {
            srv: format!("{prefix}-srv"),
            cli: format!("{prefix}-cli"),
            dir: Arc::new(dir),
            children: Mutex::new(Vec::new()),
            spawned: AtomicU32::new(0),
        };
        // From here on, a panic drops `lab`, which deletes whatever was created.
        lab.set_up();
        lab
    }

    fn set_up(&self) {
        let (srv, cli) = (self.srv.as_str(), self.cli.as_str());
        for ns in [srv, cli] {
            // A namespace of an earlier, killed process with our pid would make `add` fail.
            let _ = quiet_ip(&["netns", "delete", ns]);
            ip(&["netns", "add", ns]);
            // No duplicate address detection, so link-local addresses are usable at once too.
            ip(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Created inside the namespaces: the host never sees these interfaces.
        ip(&[
            "-n", srv, "link", "add", SRV_IF, "type", "veth", "peer", "name", CLI_IF, "netns", cli,
        ]);
        let ends = [(srv, SRV_IF, SRV_V4, SRV_V6), (cli, CLI_IF, CLI_V4, CLI_V6)];
        for (ns, ifname, v4, v6) in ends {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", ifname]);
            let v6 = format!("{v6}/64");
            ip(&["-n", ns, "addr", "add", &v6, "dev", ifname, "nodad"]);
            ip(&["-n", ns, "link", "set", ifname, "up"]);
        }
        let ready = wait_until(READY_TIMEOUT, || {
            ends.iter().all(|&(ns, ifname, v4, v6)| {
                let out = quiet_ip(&["-n", ns, "addr", "show", "dev", ifname]);
                let text = String::from_utf8_lossy(&out.stdout);
                out.status.success()
                    && text.contains("LOWER_UP")
                    && text.contains(&format!("inet {v4}/"))
                    && text.contains(&format!("inet6 {v6}/"))
                    && !text.contains("tentative")
            })
        });
        if !ready {
            let show = |ns: &str| {
                String::from_utf8_lossy(&quiet_ip(&["-n", ns, "addr"]).stdout).into_owned()
            };
            panic!(
                "lab not ready after {READY_TIMEOUT:?}\n{srv}:\n{}\n{cli}:\n{}",
                show(srv),
                show(cli)
            );
        }
    }

    /// The server namespace's name (for `ip netns exec`).
    pub fn srv_ns(&self) -> &str {
        &self.srv
    }

    /// The client namespace's name.
    pub fn cli_ns(&self) -> &str {
        &self.cli
    }

    /// The server's interface: [`SRV_IF`].
    pub fn srv_if(&self) -> &'static str {
        SRV_IF
    }

    /// The lab's temp dir, deleted with the lab.
    pub fn tempdir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside [`Lab::tempdir`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `name` inside [`Lab::tempdir`] and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Runs a command to completion in the server namespace (stdin closed, output captured).
    pub fn srv_exec<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        exec_in(&self.srv, args)
    }

    /// Runs a command to completion in the client namespace.
    pub fn cli_exec<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        exec_in(&self.cli, args)
    }

    /// Starts a long-running process in the server namespace.
    pub fn spawn_srv<I, S>(&self, args: I) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_in(&self.srv, args)
    }

    /// Starts a long-running process in the client namespace.
    pub fn spawn_cli<I, S>(&self, args: I) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_in(&self.cli, args)
    }

    fn spawn_in<I, S>(&self, ns: &str, args: I) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let program = args.first().expect("spawn needs at least a program");
        let name = Path::new(program)
            .file_name()
            .unwrap_or(program)
            .to_string_lossy()
            .into_owned();
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let label = format!("{name}#{n}");
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs the program in place, so the child's pid is the program's.
        cmd.args(["netns", "exec", ns]).args(&args);
        let (daemon, child) = Daemon::spawn(
            label,
            cmd,
            self.path(&format!("{n}-{name}.stdout")),
            self.path(&format!("{n}-{name}.stderr")),
            Arc::clone(&self.dir),
        );
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child);
        daemon
    }

    /// `iptables -S INPUT` (or `ip6tables -S INPUT`) in the server namespace, with knockd's
    /// instance tags taken out of its comments (`knockd@1a2b3c4d:ssh` reads `knockd:ssh`), so
    /// tests compare rules whatever state file their knockd has. [`Self::iptables_rules_raw`]
    /// keeps them.
    pub fn iptables_rules(&self, v6: bool) -> String {
        untag(&self.iptables_rules_raw(v6))
    }

    /// `iptables -S INPUT` (or `ip6tables -S INPUT`) in the server namespace, as listed.
    pub fn iptables_rules_raw(&self, v6: bool) -> String {
        let tool = if v6 { "ip6tables" } else { "iptables" };
        let out = self.srv_exec([tool, "-S", "INPUT"]);
        assert!(
            out.status.success(),
            "{tool} -S INPUT in {} failed: {}",
            self.srv,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `knockd@TAG:` (TAG: 8 hex digits) → `knockd:`.
pub fn untag(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    let mut rest = listing;
    while let Some(i) = rest.find("knockd@") {
        let after = &rest[i + 7..];
        let tagged = after.len() > 8
            && after.as_bytes()[8] == b':'
            && after[..8].bytes().all(|b| b.is_ascii_hexdigit());
        if tagged {
            out.push_str(&rest[..i]);
            out.push_str("knockd");
            rest = &after[8..];
        } else {
            out.push_str(&rest[..i + 7]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

impl Drop for Lab {
    fn drop(&mut self) {
        let children = self
            .children
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for child in children.drain(..) {
            kill_and_reap(&child);
        }
        for ns in [&self.cli, &self.srv] {
            delete_ns(ns);
        }
    }
}

/// Kills whatever still runs in namespace `ns` (e.g. commands a daemon started), then
/// deletes it.
pub(crate) fn delete_ns(ns: &str) {
    let out = quiet_ip(&["netns", "pids", ns]);
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|p| p.parse::<u32>().is_ok())
        .map(str::to_owned)
        .collect();
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let out = quiet_ip(&["netns", "delete", ns]);
    if !out.status.success() {
        eprintln!(
            "knock-e2e: cannot delete network namespace {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

pub(crate) fn exec_in<I, S>(ns: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `ip` with `args`; a failure is returned, not reported.
pub(crate) fn quiet_ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (install iproute2): {e}"))
}

/// Runs `ip` with `args`; panics with its stderr if it fails.
pub(crate) fn ip(args: &[&str]) {
    let out = quiet_ip(args);
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid_and_a_counter() {
        assert_eq!(lab_prefix(4242, 0), "kt4242-0");
        assert_eq!(lab_prefix(4242, 17), "kt4242-17");
        assert_ne!(lab_prefix(4242, 1), lab_prefix(4243, 1));
        assert_ne!(lab_prefix(1, 23), lab_prefix(12, 3));
    }

    #[test]
    fn names_fit_an_interface_name_even_at_the_largest_pid() {
        // pid_max is at most 2^22; keep the prefix usable as an interface name (<= 15).
        assert!(lab_prefix(4_194_304, 999).len() <= 15);
    }
}
