//! The `knock` client: a drop-in replacement for knock(1) from knock 0.8.
//!
//! [`Args`] is the clap definition (also used to generate the man page), [`run`] does the
//! work for the thin `knock` binary. A run has two phases: [`Plan::from_args`] checks every
//! port argument and resolves the host once, then [`execute`] sends the knocks in order.
//! Nothing is sent unless the whole command line is valid.

mod args;
mod send;

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::Duration;

pub use args::{
    totp_file_warning, unix_now, Args, Family, PortSpec, PortSpecError, Protocol, TotpStep,
    EXAMPLES,
};
pub use send::{pick_address, resolve, send};

/// Everything that can stop `knock`. The binary prints it as `knock: {err}` and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum KnockError {
    /// A `PORT[:PROTO]` argument is invalid.
    #[error(transparent)]
    PortSpec(#[from] PortSpecError),
    /// No port argument at all.
    #[error("no ports to knock (give at least one PORT[:PROTO] after the host)")]
    NoPorts,
    /// The `--totp` file cannot be used.
    #[error(transparent)]
    Totp(#[from] knock_ipc::totp::TotpError),
    /// Both `-4` and `-6`.
    #[error("-4 and -6 cannot be used together (pick one, or neither to use the first address)")]
    ConflictingFamilies,
    /// The resolver failed.
    #[error("cannot resolve host '{host}': {source}")]
    Resolve {
        /// The host as given.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The host resolved, but not to an address of the requested family.
    #[error("host '{host}' has no {family} address{}", no_address_hint(*.family, .found))]
    NoAddress {
        /// The host as given.
        host: String,
        /// The family asked for with `-4`/`-6`.
        family: Family,
        /// The addresses it did resolve to.
        found: Vec<IpAddr>,
    },
    /// A knock could not be sent; the later knocks were not sent either.
    #[error("{} knock {index} of {total} to {} failed: {source}{}",
        .knock.protocol, target(.host, .knock.addr), rest_not_sent(*.index, *.total))]
    Send {
        /// The host as given.
        host: String,
        /// The knock that failed.
        knock: Knock,
        /// 1-based position of the knock in the sequence.
        index: usize,
        /// Number of knocks in the sequence.
        total: usize,
        /// The socket error.
        source: io::Error,
    },
}

fn no_address_hint(family: Family, found: &[IpAddr]) -> String {
    if found.is_empty() {
        return String::new();
    }
    let list = found
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let fix = match family {
        Family::V4 => "; drop -4 or use -6",
        Family::V6 => "; drop -6 or use -4",
        Family::Any => "",
    };
    format!(" (it resolves to {list}){fix}")
}

/// `10.0.0.1:7000`, or `example.com (10.0.0.1:7000)` when the host was a name.
fn target(host: &str, addr: SocketAddr) -> String {
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if literal.parse::<IpAddr>() == Ok(addr.ip()) {
        addr.to_string()
    } else {
        format!("{host} ({addr})")
    }
}

fn rest_not_sent(index: usize, total: usize) -> &'static str {
    if index < total {
        "; the remaining knocks were not sent"
    } else {
        ""
    }
}

/// One knock: a protocol and a destination address with its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knock {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Destination address and port.
    pub addr: SocketAddr,
}

impl fmt::Display for Knock {
    /// `tcp 10.0.0.1:7000`, `udp [::1]:7000`: the text after `hitting` in verbose mode.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.addr)
    }
}

/// A fully checked knock sequence, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The host as given on the command line (for messages).
    pub host: String,
    /// The knocks, in order.
    pub knocks: Vec<Knock>,
    /// Pause between two knocks.
    pub delay: Duration,
    /// Print `hitting PROTO ADDR` before each knock.
    pub verbose: bool,
    /// With `--totp`: the time step knocked (printed first in verbose mode).
    pub totp: Option<TotpStep>,
    /// Printed to stderr before the first knock (a TOTP file others can read).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Checks every port argument (with `--totp`: reads the secret file and derives the
    /// current step), then resolves the host once.
    pub fn from_args(args: &Args) -> Result<Self, KnockError> {
        let family = args.family()?;
        let mut warnings = Vec::new();
        let (ports, totp) = match &args.totp {
            Some(path) => {
                let spec = knock_ipc::totp::Spec::read(path)?;
                if let Ok(meta) = std::fs::metadata(path) {
                    use std::os::unix::fs::PermissionsExt;
                    warnings.extend(totp_file_warning(path, meta.permissions().mode()));
                }
                let step = TotpStep::of(&spec, unix_now());
                (step.specs(), Some(step))
            }
            None => (args.port_specs()?, None),
        };
        let base = resolve(&args.host, family)?;
        let knocks = ports
            .into_iter()
            .map(|(port, protocol)| {
                let mut addr = base;
                addr.set_port(port);
                Knock { protocol, addr }
            })
            .collect();
        Ok(Plan {
            host: args.host.clone(),
            knocks,
            delay: args.delay(),
            verbose: args.verbose,
            totp,
            warnings,
        })
    }
}

/// Sends the knocks of `plan` in order with `send_one`, calling `sleep` between two knocks
/// (never after the last) when the plan has a delay, and writing `hitting ...` lines to `out`
/// in verbose mode. Stops at the first knock that cannot be sent.
pub fn execute(
    plan: &Plan,
    out: &mut dyn Write,
    mut send_one: impl FnMut(&Knock) -> io::Result<()>,
    mut sleep: impl FnMut(Duration),
) -> Result<(), KnockError> {
    let total = plan.knocks.len();
    if let (true, Some(step), Some(first)) = (plan.verbose, &plan.totp, plan.knocks.first()) {
        let family = if first.addr.is_ipv4() { "IPv4" } else { "IPv6" };
        let _ = writeln!(out, "totp: {step}").and_then(|()| {
            writeln!(
                out,
                "totp: knocking {} over {family} (a step opens the door for one address: connect over {family} too, or choose with -4/-6)",
                first.addr.ip()
            )
        });
    }
    for (i, knock) in plan.knocks.iter().enumerate() {
        if i > 0 && !plan.delay.is_zero() {
            sleep(plan.delay);
        }
        if plan.verbose {
            // Like knock 0.8, announce the knock before sending it. A closed stdout must not
            // stop the sequence, so write errors are ignored.
            let _ = writeln!(out, "hitting {knock}").and_then(|()| out.flush());
        }
        send_one(knock).map_err(|source| KnockError::Send {
            host: plan.host.clone(),
            knock: *knock,
            index: i + 1,
            total,
            source,
        })?;
    }
    Ok(())
}

/// Runs the `knock` client: checks the arguments, resolves the host once, sends every knock.
///
/// Returns `Ok` only if every knock was sent.
pub fn run(args: &Args) -> Result<(), KnockError> {
    let plan = Plan::from_args(args)?;
    for w in &plan.warnings {
        eprintln!("knock: {w}");
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    execute(&plan, &mut out, send, thread::sleep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[derive(Debug, PartialEq)]
    enum Event {
        Sent(Knock),
        Slept(Duration),
    }

    fn knock(protocol: Protocol, port: u16) -> Knock {
        Knock {
            protocol,
            addr: (Ipv4Addr::new(10, 0, 0, 1), port).into(),
        }
    }

    fn plan(delay_ms: u64, verbose: bool) -> Plan {
        Plan {
            host: "10.0.0.1".into(),
            knocks: vec![
                knock(Protocol::Tcp, 7000),
                knock(Protocol::Udp, 8000),
                knock(Protocol::Tcp, 9000),
            ],
            delay: Duration::from_millis(delay_ms),
            verbose,
            totp: None,
            warnings: Vec::new(),
        }
    }

    /// Runs `execute` with recording fakes; `fail_at` makes that (0-based) knock fail.
    fn record(plan: &Plan, fail_at: Option<usize>) -> (Result<(), KnockError>, Vec<Event>, String) {
        let events = std::cell::RefCell::new(Vec::new());
        let mut out = Vec::new();
        let mut n = 0;
        let result = execute(
            plan,
            &mut out,
            |k| {
                events.borrow_mut().push(Event::Sent(*k));
                n += 1;
                if Some(n - 1) == fail_at {
                    Err(io::Error::from_raw_os_error(101))
                } else {
                    Ok(())
                }
            },
            |d| events.borrow_mut().push(Event::Slept(d)),
        );
        let text = String::from_utf8(out).expect("utf-8 output");
        (result, events.into_inner(), text)
    }

    #[test]
    fn sleeps_between_knocks_but_not_after_the_last() {
        let p = plan(250, false);
        let (result, events, out) = record(&p, None);
        assert!(result.is_ok());
        let d = Duration::from_millis(250);
        assert_eq!(
            events,
            vec![
                Event::Sent(p.knocks[0]),
                Event::Slept(d),
                Event::Sent(p.knocks[1]),
                Event::Slept(d),
                Event::Sent(p.knocks[2]),
            ]
        );
        assert_eq!(out, "");
    }

    #[test]
    fn no_delay_means_no_sleep() {
        let (result, events, _) = record(&plan(0, false), None);
        assert!(result.is_ok());
        assert!(events.iter().all(|e| matches!(e, Event::Sent(_))));
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn verbose_prints_like_knock_08() {
        let (result, _, out) = record(&plan(0, true), None);
        assert!(result.is_ok());
        assert_eq!(
            out,
            "hitting tcp 10.0.0.1:7000\nhitting udp 10.0.0.1:8000\nhitting tcp 10.0.0.1:9000\n"
        );
        let v6 = Knock {
            protocol: Protocol::Udp,
            addr: (Ipv6Addr::LOCALHOST, 7000).into(),
        };
        assert_eq!(v6.to_string(), "udp [::1]:7000");
    }

    #[test]
    fn stops_at_the_first_failed_knock() {
        let p = plan(100, false);
        let (result, events, _) = record(&p, Some(1));
        let err = result.expect_err("second knock fails");
        assert_eq!(events.len(), 3, "sent, slept, failed send; nothing after");
        assert!(matches!(
            err,
            KnockError::Send {
                index: 2,
                total: 3,
                ..
            }
        ));
        let text = err.to_string();
        assert!(
            text.starts_with("udp knock 2 of 3 to 10.0.0.1:8000 failed: "),
            "{text}"
        );
        assert!(
            text.ends_with("; the remaining knocks were not sent"),
            "{text}"
        );
    }

    #[test]
    fn send_error_names_the_host_when_it_is_a_name() {
        let mut p = plan(0, false);
        p.host = "door.example".into();
        let (result, _, _) = record(&p, Some(2));
        let text = result.expect_err("last knock fails").to_string();
        assert!(
            text.starts_with("tcp knock 3 of 3 to door.example (10.0.0.1:9000) failed: "),
            "{text}"
        );
        assert!(!text.contains("remaining"), "{text}");
    }

    /// `knock --totp FILE HOST` sends the current step's TCP ports, derived by the same
    /// `knock_ipc::totp` code knockd uses (whose fixed vectors are in knock-ipc).
    #[test]
    fn totp_file_gives_the_current_steps_ports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("door.totp");
        let spec = knock_ipc::totp::Spec::write_new(&path).expect("new");
        let args =
            Args::try_parse_from(["knock", "--totp", path.to_str().expect("utf8"), "127.0.0.1"])
                .expect("args");
        assert!(Args::try_parse_from(["knock", "--totp", "f", "h", "7000"]).is_err());
        assert!(Args::try_parse_from(["knock", "h"]).is_err());
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs()
        };
        loop {
            let before = spec.step_at(now());
            let got = args.port_specs().expect("ports");
            if spec.step_at(now()) != before {
                continue; // crossed a boundary while deriving: try again
            }
            let want: Vec<(u16, Protocol)> = spec
                .ports(before)
                .into_iter()
                .map(|p| (p, Protocol::Tcp))
                .collect();
            assert_eq!(got, want);
            break;
        }
        let missing =
            Args::try_parse_from(["knock", "--totp", "/nonexistent/x.totp", "h"]).expect("args");
        let e = missing.port_specs().expect_err("missing file").to_string();
        assert!(
            e.contains("cannot read TOTP file '/nonexistent/x.totp'"),
            "{e}"
        );
    }

    fn vector_spec() -> knock_ipc::totp::Spec {
        knock_ipc::totp::Spec {
            secret: b"12345678901234567890123456789012".to_vec(),
            step_secs: 30,
            knocks: 4,
            lo: 10000,
            hi: 59999,
            exclude: vec![],
        }
    }

    /// `knock -v --totp` says which step it knocks, its UTC window, the ports and the address
    /// (one of knock-ipc's fixed vectors: t = 1234567890).
    #[test]
    fn verbose_totp_prints_the_step_window_ports_and_address() {
        let step = TotpStep::of(&vector_spec(), 1_234_567_899);
        assert_eq!(
            step.to_string(),
            "step 41152263, 2009-02-13 23:31:30 to 23:32:00 UTC, ports 52682 51435 22727 35366"
        );
        let midnight = TotpStep::of(&vector_spec(), 86_400 * 3 - 1);
        assert!(
            midnight
                .to_string()
                .contains("1970-01-03 23:59:30 to 1970-01-04 00:00:00 UTC"),
            "{midnight}"
        );
        let mut p = plan(0, true);
        p.knocks = step
            .specs()
            .into_iter()
            .map(|(port, protocol)| Knock {
                protocol,
                addr: (Ipv6Addr::LOCALHOST, port).into(),
            })
            .collect();
        p.totp = Some(step);
        let (result, _, out) = record(&p, None);
        assert!(result.is_ok());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "totp: step 41152263, 2009-02-13 23:31:30 to 23:32:00 UTC, ports 52682 51435 22727 35366"
        );
        assert!(
            lines[1]
                .starts_with("totp: knocking ::1 over IPv6 (a step opens the door for one address"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "hitting tcp [::1]:52682");
        assert_eq!(lines.len(), 6);
        p.verbose = false;
        assert_eq!(record(&p, None).2, "", "quiet without -v");
    }

    #[test]
    fn totp_file_readable_by_others_is_warned_about() {
        let path = std::path::Path::new("/etc/knock/ssh.totp");
        assert_eq!(totp_file_warning(path, 0o100600), None);
        assert_eq!(totp_file_warning(path, 0o100400), None);
        assert_eq!(
            totp_file_warning(path, 0o100620),
            None,
            "group-writable, not readable"
        );
        assert_eq!(
            totp_file_warning(path, 0o100644).as_deref(),
            Some("warning: TOTP file '/etc/knock/ssh.totp' is readable by its group and every user (mode 0644): whoever reads it can open the door (chmod 600 '/etc/knock/ssh.totp')")
        );
        assert!(totp_file_warning(path, 0o100640)
            .is_some_and(|w| w.contains("readable by its group (mode 0640)")));
        assert!(totp_file_warning(path, 0o100604)
            .is_some_and(|w| w.contains("readable by every user (mode 0604)")));
        // The plan carries it; the knocks are still sent.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("door.totp");
        knock_ipc::totp::Spec::write_new(&file).expect("new");
        let args = |f: &std::path::Path| {
            Args::try_parse_from(["knock", "--totp", f.to_str().expect("utf8"), "127.0.0.1"])
                .expect("args")
        };
        let p = Plan::from_args(&args(&file)).expect("plan");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.knocks.len(), 4);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let p = Plan::from_args(&args(&file)).expect("plan");
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert_eq!(p.knocks.len(), 4);
    }

    #[test]
    fn plan_checks_ports_before_resolving() {
        let args = Args {
            host: "no-such-host.invalid".into(),
            ports: vec!["7000".into(), "99999:tcp".into()],
            udp: false,
            delay: 0,
            ipv4: false,
            ipv6: false,
            verbose: false,
            totp: None,
        };
        let err = Plan::from_args(&args).expect_err("bad port");
        assert_eq!(
            err.to_string(),
            "invalid port '99999' in '99999:tcp' (ports are 1-65535)"
        );
    }

    #[test]
    fn plan_resolves_once_and_sets_ports() {
        let args = Args {
            host: "127.0.0.1".into(),
            ports: vec!["7000".into(), "8000:tcp".into(), "9000:UDP".into()],
            udp: true,
            delay: 10,
            ipv4: true,
            ipv6: false,
            verbose: true,
            totp: None,
        };
        let p = Plan::from_args(&args).expect("valid plan");
        let lo = Ipv4Addr::LOCALHOST;
        assert_eq!(
            p.knocks,
            vec![
                Knock {
                    protocol: Protocol::Udp,
                    addr: (lo, 7000).into()
                },
                Knock {
                    protocol: Protocol::Tcp,
                    addr: (lo, 8000).into()
                },
                Knock {
                    protocol: Protocol::Udp,
                    addr: (lo, 9000).into()
                },
            ]
        );
        assert_eq!(p.delay, Duration::from_millis(10));
        assert!(p.verbose);
    }
}
