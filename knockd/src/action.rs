//! Firewall actions: what to run when a door opens or a grant closes.
//!
//! The pure part builds argument vectors (native `Open =` rules, `%IP%` expansion, the derived
//! `-D` inverse of a single iptables command). The effect sits behind [`Executor`], with a
//! real implementation that spawns processes and never blocks the engine.

use crate::proc::Exit;
use std::future::Future;
use std::net::IpAddr;

/// Replace `%IP%` (case-sensitive, like knockd) with the canonical address text.
pub fn expand(cmd: &str, ip: IpAddr) -> String {
    cmd.replace("%IP%", &ip.to_string())
}

pub use crate::firewall::FwRule;

/// The inverse of a start command that is a single `iptables`/`ip6tables` `-A`/`-I` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// `... -D CHAIN rule...`: closes what the start command opened.
    pub delete: Vec<String>,
    /// `... -C CHAIN rule...`: exits 0 when the rule is present.
    pub check: Vec<String>,
}

const SHELL_SPECIAL: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '{', '}', '\'', '"', '\\', '*', '?', '[', ']',
    '~', '#', '\n',
];

fn is_iptables(program: &str) -> bool {
    let base = program.rsplit('/').next().unwrap_or(program);
    matches!(
        base,
        "iptables" | "ip6tables" | "iptables-nft" | "ip6tables-nft" | "iptables-legacy"
    ) || base == "ip6tables-legacy"
}

/// Every iptables command option (exactly one per command line).
const OPS: &[&str] = &[
    "-A",
    "--append",
    "-I",
    "--insert",
    "-D",
    "--delete",
    "-R",
    "--replace",
    "-F",
    "--flush",
    "-N",
    "-X",
    "-P",
    "-C",
    "--check",
    "-Z",
    "-L",
    "-S",
    "-E",
];

/// Directories a recorded iptables program may live in.
const TRUSTED_DIRS: &[&str] = &[
    "/sbin/",
    "/usr/sbin/",
    "/bin/",
    "/usr/bin/",
    "/usr/local/sbin/",
];

/// Is a derived inverse read back from the state file (for a door no longer in the config)
/// exactly one knockd could have written for `addr`? The state file is data, so only one
/// shape is accepted, word by word:
///
/// `PROGRAM [-w [SECS]] -D|-C CHAIN -s ADDR[/32|/128] [-i IFACE] [-p tcp|udp] [-m tcp|udp]
/// [--dport PORT[:PORT]] [-m comment --comment WORD] -j ACCEPT`
///
/// with PROGRAM `iptables` (`ip6tables` for an IPv6 address; `-nft`/`-legacy` variants, bare
/// or in a system directory), ADDR exactly the grant's address, each option at most once,
/// delete and check the same words but for `-D`/`-C`. Anything else (another prefix such as
/// `/0`, another table, another target, `--modprobe=`, extra words) is refused: nothing runs.
pub fn valid_recorded_inverse(delete: &[String], check: &[String], addr: IpAddr) -> bool {
    let same_but_op = delete.len() == check.len()
        && delete
            .iter()
            .zip(check)
            .all(|(d, c)| d == c || (d == "-D" && c == "-C"));
    same_but_op && recorded_shape(delete, "-D", addr) && recorded_shape(check, "-C", addr)
}

/// One recorded command in the exact shape [`valid_recorded_inverse`] describes.
fn recorded_shape(words: &[String], op: &str, addr: IpAddr) -> bool {
    let Some((program, rest)) = words.split_first() else {
        return false;
    };
    let base = program.rsplit('/').next().unwrap_or(program);
    let family = if addr.is_ipv6() {
        "ip6tables"
    } else {
        "iptables"
    };
    let program_ok = [
        family,
        &format!("{family}-nft"),
        &format!("{family}-legacy"),
    ]
    .contains(&base)
        && (program == base
            || TRUSTED_DIRS
                .iter()
                .any(|d| program.strip_prefix(d) == Some(base)));
    if !program_ok {
        return false;
    }
    let a = addr.to_string();
    let host = if addr.is_ipv6() { "/128" } else { "/32" };
    let name = |w: &str, max: usize, extra: &[char]| {
        !w.is_empty()
            && w.len() <= max
            && !w.starts_with('-')
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c))
    };
    let port = |w: &str| w.parse::<u16>().is_ok_and(|p| p > 0);
    let mut seen: Vec<&str> = Vec::new();
    let mut matches = 0;
    let mut it = rest.iter().map(String::as_str).peekable();
    while let Some(w) = it.next() {
        // Each option at most once (`-m` twice: a protocol match and the comment match).
        if w == "-m" {
            matches += 1;
            if matches > 2 {
                return false;
            }
        } else if seen.contains(&w) {
            return false;
        } else {
            seen.push(w);
        }
        let ok = match w {
            "-w" => {
                if it
                    .peek()
                    .is_some_and(|n| n.len() <= 3 && n.parse::<u16>().is_ok())
                {
                    it.next();
                }
                true
            }
            _ if w == op => it.next().is_some_and(|c| name(c, 28, &[])),
            "-s" => it.next().is_some_and(|s| {
                s.strip_prefix(a.as_str())
                    .is_some_and(|r| r.is_empty() || r == host)
            }),
            "-i" => it.next().is_some_and(|i| name(i, 15, &['.'])),
            "-p" => it.next().is_some_and(|p| p == "tcp" || p == "udp"),
            "-m" => it
                .next()
                .is_some_and(|m| m == "tcp" || m == "udp" || m == "comment"),
            "--dport" => it.next().is_some_and(|p| match p.split_once(':') {
                Some((lo, hi)) => port(lo) && port(hi),
                None => port(p),
            }),
            "--comment" => it.next().is_some_and(|c| name(c, 64, &[':', '.'])),
            "-j" => it.next().is_some_and(|j| j == "ACCEPT"),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    seen.contains(&op) && seen.contains(&"-s") && seen.contains(&"-j")
}

/// Split an expanded command into words if it is a plain command line (no shell syntax).
pub fn plain_words(cmd: &str) -> Option<Vec<String>> {
    if cmd.contains(SHELL_SPECIAL) {
        return None;
    }
    let words: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    (!words.is_empty()).then_some(words)
}

/// Derive the closing command of `iptables [-t T] [-w] -I|-A CHAIN [N] rule...`.
pub fn derive_inverse(expanded: &str) -> Option<Derived> {
    let words = plain_words(expanded)?;
    if !is_iptables(&words[0]) {
        return None;
    }
    let op_positions: Vec<usize> = words
        .iter()
        .enumerate()
        .filter(|(_, w)| OPS.contains(&w.as_str()))
        .map(|(i, _)| i)
        .collect();
    let [pos] = op_positions[..] else {
        return None;
    };
    let op = words[pos].as_str();
    if !matches!(op, "-A" | "--append" | "-I" | "--insert") {
        return None;
    }
    let chain = words.get(pos + 1)?;
    if chain.starts_with('-') {
        return None;
    }
    let mut rest = pos + 2;
    if matches!(op, "-I" | "--insert")
        && words
            .get(rest)
            .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit()))
    {
        rest += 1;
    }
    let build = |new_op: &str| {
        let mut v: Vec<String> = words[..pos].to_vec();
        v.push(new_op.to_string());
        v.push(chain.clone());
        v.extend_from_slice(&words[rest..]);
        v
    };
    Some(Derived {
        delete: build("-D"),
        check: build("-C"),
    })
}

/// Two command lines are the same command: same words, program compared by basename.
pub fn same_command(a: &[String], b: &[String]) -> bool {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    a.len() == b.len() && !a.is_empty() && base(&a[0]) == base(&b[0]) && a[1..] == b[1..]
}

/// Something for the executor to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A door's command, run by `/bin/sh -c` like knockd.
    Shell(String),
    /// A program with arguments, no shell.
    Exec(Vec<String>),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Shell(s) => f.write_str(s),
            Action::Exec(v) => f.write_str(&v.join(" ")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Exited non-zero (`None`: killed by a signal).
    Failed {
        code: Option<i32>,
        stderr: String,
    },
    /// Could not be started at all.
    SpawnError(String),
    /// Still running at its time limit: killed.
    TimedOut(std::time::Duration),
    /// A native door's firewall op failed (the backend's message).
    Firewall(String),
    /// Not run: an open whose record could not be written to the state file (fail closed).
    NotRecorded,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

/// Runs actions. Implementations must not block the caller's thread.
pub trait Executor: Clone + Send + Sync + 'static {
    fn run(&self, action: Action) -> impl Future<Output = Outcome> + Send;
}

/// Spawns real processes (no shell for `Exec`, `/bin/sh -c` for `Shell`), each in its own
/// process group, killed with its children after [`crate::proc::COMMAND_TIME_LIMIT`].
#[derive(Debug, Clone, Default)]
pub struct SystemExecutor;

impl Executor for SystemExecutor {
    async fn run(&self, action: Action) -> Outcome {
        let argv = match &action {
            Action::Shell(s) => vec!["/bin/sh".to_string(), "-c".to_string(), s.clone()],
            Action::Exec(argv) => argv.clone(),
        };
        match crate::proc::run(&argv, None, crate::proc::COMMAND_TIME_LIMIT).await {
            Exit::Status { code: Some(0), .. } => Outcome::Ok,
            Exit::Status { code, stderr } => Outcome::Failed { code, stderr },
            Exit::TimedOut(d) => Outcome::TimedOut(d),
            Exit::SpawnError(e) => Outcome::SpawnError(e),
        }
    }
}

/// Records every action instead of running it; actions whose text contains one of the
/// `fail_on` substrings exit 1. For tests and benchmarks (no root, no firewall).
#[derive(Debug, Clone, Default)]
pub struct RecordingExecutor {
    ran: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    fail: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    hold: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    released: std::sync::Arc<tokio::sync::Notify>,
}

impl RecordingExecutor {
    /// Everything run so far, as command lines.
    pub fn ran(&self) -> Vec<String> {
        self.ran.lock().map(|v| v.clone()).unwrap_or_default()
    }
    /// Make actions containing `s` fail from now on (e.g. `" -C "`: rule missing).
    pub fn fail_on(&self, s: &str) {
        if let Ok(mut f) = self.fail.lock() {
            f.push(s.to_string());
        }
    }
    /// Stop failing.
    pub fn heal(&self) {
        if let Ok(mut f) = self.fail.lock() {
            f.clear();
        }
    }
    /// Actions containing `s` hang (after being recorded) until [`Self::release`].
    pub fn hold_on(&self, s: &str) {
        if let Ok(mut h) = self.hold.lock() {
            h.push(s.to_string());
        }
    }
    /// Let held actions finish, and stop holding.
    pub fn release(&self) {
        if let Ok(mut h) = self.hold.lock() {
            h.clear();
        }
        self.released.notify_waiters();
    }
}

impl Executor for RecordingExecutor {
    async fn run(&self, a: Action) -> Outcome {
        let s = a.to_string();
        let fails = self
            .fail
            .lock()
            .map(|f| f.iter().any(|x| s.contains(x)))
            .unwrap_or(false);
        let held = |s: &str| {
            self.hold
                .lock()
                .map(|h| h.iter().any(|x| s.contains(x)))
                .unwrap_or(false)
        };
        let wait = self.released.notified();
        tokio::pin!(wait);
        wait.as_mut().enable();
        let hold = held(&s);
        if let Ok(mut r) = self.ran.lock() {
            r.push(s);
        }
        if hold {
            wait.await;
        }
        if fails {
            Outcome::Failed {
                code: Some(1),
                stderr: String::new(),
            }
        } else {
            Outcome::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 12));

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn expands_ip_case_sensitively() {
        assert_eq!(
            expand("a %IP% b %IP% %ip%", V4),
            "a 10.0.0.12 b 10.0.0.12 %ip%"
        );
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd99, 0x77, 0, 0, 0, 0, 0, 2));
        assert_eq!(expand("-s %IP%", v6), "-s fd99:77::2");
    }

    #[test]
    fn derives_the_inverse_of_seed_open_command() {
        let open = "/sbin/iptables -I INPUT -s 10.0.0.12 -p tcp --dport 22 -j ACCEPT";
        let d = derive_inverse(open).expect("derivable");
        assert_eq!(
            d.delete,
            w("/sbin/iptables -D INPUT -s 10.0.0.12 -p tcp --dport 22 -j ACCEPT")
        );
        assert_eq!(
            d.check,
            w("/sbin/iptables -C INPUT -s 10.0.0.12 -p tcp --dport 22 -j ACCEPT")
        );
        // The seed's closeSSH door runs exactly this inverse.
        let close = "/sbin/iptables -D INPUT -s 10.0.0.12 -p tcp --dport 22 -j ACCEPT";
        assert!(same_command(&d.delete, &w(close)));
        assert!(same_command(
            &d.delete,
            &w("iptables -D INPUT -s 10.0.0.12 -p tcp --dport 22 -j ACCEPT")
        ));
    }

    #[test]
    fn derive_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "iptables -A INPUT -s 1.2.3.4 -j ACCEPT",
                Some("iptables -D INPUT -s 1.2.3.4 -j ACCEPT"),
            ),
            (
                "iptables -I INPUT 1 -s 1.2.3.4 -j ACCEPT",
                Some("iptables -D INPUT -s 1.2.3.4 -j ACCEPT"),
            ),
            (
                "ip6tables -w -t filter --insert INPUT -s ::1 -j ACCEPT",
                Some("ip6tables -w -t filter -D INPUT -s ::1 -j ACCEPT"),
            ),
            ("iptables -D INPUT -s 1.2.3.4 -j ACCEPT", None),
            ("iptables -I INPUT -s 1.2.3.4 -j ACCEPT; echo hi", None),
            (
                "iptables -I INPUT -s 1.2.3.4 -m comment --comment 'x y' -j ACCEPT",
                None,
            ),
            ("/usr/bin/logger opened", None),
            ("iptables -F", None),
            ("iptables -I", None),
        ];
        for (cmd, want) in cases {
            let got = derive_inverse(cmd).map(|d| d.delete.join(" "));
            assert_eq!(got.as_deref(), *want, "{cmd}");
        }
    }

    #[test]
    fn recorded_inverses_from_the_state_file_are_validated() {
        let ip: IpAddr = "10.0.0.12".parse().expect("ip");
        let good =
            derive_inverse("/sbin/iptables -I INPUT -s 10.0.0.12 -p tcp --dport 22 -j ACCEPT")
                .expect("derived");
        assert!(valid_recorded_inverse(&good.delete, &good.check, ip));
        let other: IpAddr = "10.0.0.13".parse().expect("ip");
        assert!(!valid_recorded_inverse(&good.delete, &good.check, other));
        for (d, c) in [
            (
                "/tmp/x/iptables -D INPUT -s 10.0.0.12 -j ACCEPT",
                "/tmp/x/iptables -C INPUT -s 10.0.0.12 -j ACCEPT",
            ),
            ("sh -D INPUT -s 10.0.0.12", "sh -C INPUT -s 10.0.0.12"),
            (
                "iptables -F INPUT -s 10.0.0.12",
                "iptables -C INPUT -s 10.0.0.12",
            ),
            (
                "iptables -D INPUT -s 10.0.0.12 -j ACCEPT",
                "iptables -C INPUT -s 10.0.0.12 -j DROP",
            ),
            (
                "iptables -D INPUT -s 10.0.0.12 -X",
                "iptables -C INPUT -s 10.0.0.12 -X",
            ),
        ] {
            assert!(!valid_recorded_inverse(&w(d), &w(c), ip), "{d}");
        }
        let mut evil = good.delete.clone();
        evil.push("$(id)".into());
        let mut evil_c = good.check.clone();
        evil_c.push("$(id)".into());
        assert!(!valid_recorded_inverse(&evil, &evil_c, ip));
    }

    /// Issue 21.6: a recorded inverse is accepted only in exactly the shape knockd derives.
    #[test]
    fn recorded_inverses_have_exactly_the_derived_shape() {
        let v4: IpAddr = "10.9.9.9".parse().expect("ip");
        let v6: IpAddr = "fd00::9".parse().expect("ip");
        let pair = |d: &str| {
            let c = d.replacen(" -D ", " -C ", 1);
            (w(d), w(&c))
        };
        for (d, ip) in [
            ("iptables -D INPUT -s 10.9.9.9 -p tcp --dport 22 -j ACCEPT", v4),
            ("/sbin/iptables -w 5 -D INPUT -s 10.9.9.9/32 -p tcp --dport 22 -j ACCEPT", v4),
            ("/usr/sbin/iptables-legacy -w -D knock-in -s 10.9.9.9 -i eth0 -p udp -m udp --dport 1000:2000 -m comment --comment knockd:web -j ACCEPT", v4),
            ("ip6tables -D INPUT -s fd00::9/128 -p tcp --dport 22 -j ACCEPT", v6),
            ("ip6tables-nft -D INPUT -s fd00::9 -j ACCEPT", v6),
        ] {
            let (dw, cw) = pair(d);
            assert!(valid_recorded_inverse(&dw, &cw, ip), "refused: {d}");
        }
        for (d, ip) in [
            // The examples: any source, extra words, another table, a module path.
            (
                "iptables -w 5 -D INPUT -s 10.9.9.9/0 -p tcp --dport 22 -j DROP",
                v4,
            ),
            (
                "iptables -w 5 -D INPUT -s 10.9.9.9/0 -p tcp --dport 22 -j ACCEPT",
                v4,
            ),
            (
                "iptables -w 5 -D INPUT -s 10.9.9.9/8 -p tcp --dport 22 -j ACCEPT",
                v4,
            ),
            (
                "iptables -w 5 -D INPUT -s 10.9.9.9/32 -p tcp --dport 22 -j DROP",
                v4,
            ),
            (
                "iptables -D INPUT -s 10.9.9.9 -p tcp --dport 22 -j ACCEPT extra words",
                v4,
            ),
            (
                "iptables -D INPUT -s 10.9.9.9 -p tcp --dport 22 -j ACCEPT -s 10.0.0.0/0",
                v4,
            ),
            (
                "iptables -t nat -D INPUT -s 10.9.9.9 -p tcp --dport 22 -j ACCEPT",
                v4,
            ),
            ("iptables -t filter -D INPUT -s 10.9.9.9 -j ACCEPT", v4),
            (
                "iptables --modprobe=/tmp/x -D INPUT -s 10.9.9.9 -j ACCEPT",
                v4,
            ),
            ("iptables -D INPUT -s 10.9.9.99 -j ACCEPT", v4),
            ("iptables -D INPUT -s 10.9.9.9,10.0.0.0/8 -j ACCEPT", v4),
            ("iptables -D INPUT -s 10.9.9.9 -d 10.0.0.1 -j ACCEPT", v4),
            ("iptables -D INPUT ! -s 10.9.9.9 -j ACCEPT", v4),
            (
                "iptables -D INPUT -s 10.9.9.9 -m state --state NEW -j ACCEPT",
                v4,
            ),
            ("iptables -D INPUT -s 10.9.9.9 -p all -j ACCEPT", v4),
            ("iptables -D INPUT -s 10.9.9.9 --dport 0 -j ACCEPT", v4),
            ("iptables -D INPUT -s 10.9.9.9", v4),
            ("iptables -D -s 10.9.9.9 -j ACCEPT", v4),
            ("iptables -D INPUT 1 -s 10.9.9.9 -j ACCEPT", v4),
            ("iptables -D INPUT -D INPUT -s 10.9.9.9 -j ACCEPT", v4),
            ("/tmp/iptables -D INPUT -s 10.9.9.9 -j ACCEPT", v4),
            ("ip6tables -D INPUT -s 10.9.9.9 -j ACCEPT", v4),
            ("iptables -D INPUT -s fd00::9 -j ACCEPT", v6),
            ("ip6tables -D INPUT -s fd00::9/64 -j ACCEPT", v6),
            (
                "iptables -D INPUT -s 10.9.9.9 -m comment --comment a;b -j ACCEPT",
                v4,
            ),
        ] {
            let (dw, cw) = pair(d);
            assert!(!valid_recorded_inverse(&dw, &cw, ip), "accepted: {d}");
        }
        // The check must be the delete's words but for -C.
        let (dw, _) = pair("iptables -D INPUT -s 10.9.9.9 -j ACCEPT");
        let cw = w("iptables -C INPUT -s 10.9.9.9 -p tcp -j ACCEPT");
        assert!(!valid_recorded_inverse(&dw, &cw, v4));
        assert!(!valid_recorded_inverse(&dw, &dw, v4));
    }

    #[tokio::test]
    async fn system_executor_reports_exit_codes() {
        let e = SystemExecutor;
        assert!(e.run(Action::Shell("true".into())).await.is_ok());
        assert_eq!(
            e.run(Action::Shell("echo oops >&2; exit 3".into())).await,
            Outcome::Failed {
                code: Some(3),
                stderr: "oops".into()
            }
        );
        assert!(matches!(
            e.run(Action::Exec(vec!["/nonexistent/x".into()])).await,
            Outcome::SpawnError(_)
        ));
    }
}
