//! The `knock` command line and the parsing of `PORT[:PROTO]` arguments.
//!
//! Everything here is pure: strings in, values or [`PortSpecError`]s out.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

use super::KnockError;

/// One-line summary shown by `knock -h`.
const ABOUT: &str = "Send a port-knocking sequence (TCP SYNs or UDP datagrams) to a host";

/// Full description shown by `knock --help` and in the man page.
const LONG_ABOUT: &str = "\
Send a port-knocking sequence to HOST: one TCP SYN or one UDP datagram per port, \
in the order given, for a knockd server to recognise.

Each port argument is PORT or PORT:PROTO, where PORT is a number from 1 to 65535 \
and PROTO is tcp or udp, in any case. Ports without a protocol are knocked with TCP, \
or with UDP when -u is given. A TCP knock is exactly one SYN: a non-blocking connect \
that is closed at once, never retried. A UDP knock is one datagram carrying a single \
NUL byte, sent from a fresh socket.

With --totp FILE, the ports are the current time step's sequence of a rotating door, \
derived from the secret file made by `knockd --new-totp` (all TCP); give no PORT then. \
Keep the client's clock in sync with the server's (one step of skew is accepted). With -v, \
knock first prints the step, its time window in UTC, the ports and the address it knocks. \
A step's sequence opens the door for one address: connect over the same address family \
as the knock (or choose it with -4/-6). knock warns when the file is readable by others.

Every port argument is checked, and HOST is resolved once, before the first knock is \
sent. Of HOST's addresses, knock uses the one a connection would: the first (in the \
resolver's order) of the requested family that this host has a route to. knock stops at the first knock it cannot send. It cannot tell whether the \
server saw the knocks.

Differences from knock 0.8:
  * -u only sets the default protocol: an explicit :tcp stays TCP.
  * Protocol names are case-insensitive: 7000:UDP is UDP, not TCP.
  * Ports must be numbers from 1 to 65535 and protocols tcp or udp; knock 0.8
    truncated 99999 to 34463, looked up service names and sent typos as TCP.
  * HOST is resolved once, not once per port.
  * -d waits between knocks, not after the last one.
  * The exit status is 1 if a knock could not be sent; --help exits 0.";

/// Examples and exit status, shown after the options by `knock --help`.
pub const EXAMPLES: &str = "\
Examples:
  knock example.com 7000 8000 9000
      Knock TCP ports 7000, 8000 and 9000 on example.com, in that order.

  knock -v example.com 7000:udp 8000:tcp 9000:udp
      Mix protocols, printing each knock as it is sent.

  knock -u -d 500 example.com 7000 8000 9000:tcp
      UDP to 7000 and 8000, TCP to 9000, with half a second between knocks.

  knock -6 example.com 7000 8000 9000
      Knock the IPv6 address of example.com.

  knock --totp ssh.totp example.com
      Knock the current sequence of a rotating door whose secret file (from
      knockd --new-totp) was copied to this client.

Exit status:
  0  every knock was sent
  1  invalid port argument, unresolvable host, or a knock could not be sent
  2  usage error (unknown option, missing argument, -4 with -6)";

/// Command line of the `knock` client, a drop-in replacement for knock(1) from knock 0.8.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "knock",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES
)]
pub struct Args {
    /// Host to knock: a host name, an IPv4 address or an IPv6 address.
    #[arg(value_name = "HOST")]
    pub host: String,

    /// Ports to knock, in order: PORT or PORT:PROTO, e.g. 7000, 8000:tcp, 9000:udp.
    #[arg(value_name = "PORT[:PROTO]", required_unless_present = "totp", num_args = 1..)]
    pub ports: Vec<String>,

    /// Knock a rotating (TOTP) door: send the current time step's sequence derived from the
    /// secret FILE made by `knockd --new-totp` (instead of PORT arguments). The clocks of
    /// client and server may differ by up to one step.
    #[arg(long = "totp", value_name = "FILE", conflicts_with_all = ["ports", "udp"])]
    pub totp: Option<std::path::PathBuf>,

    /// Use UDP for ports given without a protocol (an explicit :tcp still means TCP).
    #[arg(short = 'u', long = "udp")]
    pub udp: bool,

    /// Wait MS milliseconds between knocks (not after the last one).
    #[arg(short = 'd', long = "delay", value_name = "MS", default_value_t = 0)]
    pub delay: u64,

    /// Use IPv4 only: knock an IPv4 address of HOST.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Use IPv6 only: knock an IPv6 address of HOST.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Print each knock as it is sent ("hitting tcp 10.0.0.1:7000"); with --totp, first the
    /// step, its UTC time window, the ports and the address knocked.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

impl Args {
    /// The protocol for ports given without one.
    pub fn default_protocol(&self) -> Protocol {
        if self.udp {
            Protocol::Udp
        } else {
            Protocol::Tcp
        }
    }

    /// The address family requested with `-4`/`-6`.
    pub fn family(&self) -> Result<Family, KnockError> {
        match (self.ipv4, self.ipv6) {
            (false, false) => Ok(Family::Any),
            (true, false) => Ok(Family::V4),
            (false, true) => Ok(Family::V6),
            (true, true) => Err(KnockError::ConflictingFamilies),
        }
    }

    /// The pause between two knocks.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay)
    }

    /// Parses every port argument, in order, applying the default protocol.
    ///
    /// Fails on the first invalid argument, so that nothing is sent for a bad command line.
    pub fn port_specs(&self) -> Result<Vec<(u16, Protocol)>, KnockError> {
        if let Some(path) = &self.totp {
            let spec = knock_ipc::totp::Spec::read(path)?;
            let step = TotpStep::of(&spec, unix_now());
            return Ok(step.specs());
        }
        if self.ports.is_empty() {
            return Err(KnockError::NoPorts);
        }
        let default = self.default_protocol();
        self.ports
            .iter()
            .map(|arg| {
                let spec: PortSpec = arg.parse()?;
                Ok((spec.port, spec.protocol_or(default)))
            })
            .collect()
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The time step of a rotating door that `knock --totp` knocks: its number, its window of
/// Unix time `[start, end)` and its ports (all TCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpStep {
    /// The step number (Unix time / step length).
    pub step: u64,
    /// Unix time the step begins.
    pub start: u64,
    /// Unix time the next step begins.
    pub end: u64,
    /// The step's knock ports, in order.
    pub ports: Vec<u16>,
}

impl TotpStep {
    /// The step of `spec` at Unix time `now`.
    pub fn of(spec: &knock_ipc::totp::Spec, now: u64) -> TotpStep {
        let step = spec.step_at(now);
        TotpStep {
            step,
            start: spec.step_start(step),
            end: spec.step_start(step.saturating_add(1)),
            ports: spec.ports(step),
        }
    }

    /// The ports as `knock` sends them.
    pub fn specs(&self) -> Vec<(u16, Protocol)> {
        self.ports.iter().map(|&p| (p, Protocol::Tcp)).collect()
    }
}

impl fmt::Display for TotpStep {
    /// `step 59145678, 2026-12-07 01:40:00 to 01:40:30 UTC, ports 12345 23456 34567 45678`:
    /// what `knock -v --totp` prints first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |secs: u64| {
            i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        };
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        match (at(self.start), at(self.end)) {
            (Some(start), Some(end)) => write!(
                f,
                "step {}, {} to {} UTC, ports {}",
                self.step,
                start.format("%Y-%m-%d %H:%M:%S"),
                end.format(if start.date_naive() == end.date_naive() {
                    "%H:%M:%S"
                } else {
                    "%Y-%m-%d %H:%M:%S"
                }),
                ports.join(" ")
            ),
            _ => write!(f, "step {}, ports {}", self.step, ports.join(" ")),
        }
    }
}

/// A warning for a TOTP secret file whose permission bits (`mode`) let others read it:
/// whoever reads it can open the door.
pub fn totp_file_warning(path: &std::path::Path, mode: u32) -> Option<String> {
    let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
        (false, false) => return None,
        (true, false) => "its group",
        (false, true) => "every user",
        (true, true) => "its group and every user",
    };
    Some(format!(
        "warning: TOTP file '{}' is readable by {who} (mode {:04o}): whoever reads it can open the door (chmod 600 '{}')",
        path.display(),
        mode & 0o7777,
        path.display()
    ))
}

/// Which address family to knock on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Whatever the resolver returns first (`AF_UNSPEC`).
    Any,
    /// IPv4 only (`-4`).
    V4,
    /// IPv6 only (`-6`).
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Any => "IP",
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Transport protocol of one knock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// One TCP SYN.
    Tcp,
    /// One UDP datagram with a single NUL byte.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One `PORT[:PROTO]` argument; `protocol` is `None` when no `:PROTO` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    /// Port number, 1-65535.
    pub port: u16,
    /// Explicit protocol, if the argument had one.
    pub protocol: Option<Protocol>,
}

impl PortSpec {
    /// The explicit protocol, or `default` when the argument had none.
    pub fn protocol_or(self, default: Protocol) -> Protocol {
        self.protocol.unwrap_or(default)
    }
}

impl FromStr for PortSpec {
    type Err = PortSpecError;

    fn from_str(arg: &str) -> Result<Self, Self::Err> {
        let mut parts = arg.split(':');
        let port_text = parts.next().unwrap_or_default();
        let proto_text = parts.next();
        if parts.next().is_some() {
            return Err(PortSpecError::TooManyParts {
                arg: arg.to_owned(),
            });
        }

        if port_text.is_empty() {
            return Err(PortSpecError::MissingPort {
                arg: arg.to_owned(),
            });
        }
        let port = parse_port(port_text).ok_or_else(|| PortSpecError::InvalidPort {
            port: port_text.to_owned(),
            arg: arg.to_owned(),
        })?;

        let protocol = match proto_text {
            None => None,
            Some("") => {
                return Err(PortSpecError::MissingProtocol {
                    arg: arg.to_owned(),
                })
            }
            Some(p) if p.eq_ignore_ascii_case("tcp") => Some(Protocol::Tcp),
            Some(p) if p.eq_ignore_ascii_case("udp") => Some(Protocol::Udp),
            Some(p) => {
                return Err(PortSpecError::UnknownProtocol {
                    protocol: p.to_owned(),
                    arg: arg.to_owned(),
                })
            }
        };
        Ok(PortSpec { port, protocol })
    }
}

/// Parses a port strictly: ASCII digits only (no sign, no spaces), value 1-65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => None,
        Ok(port) => Some(port),
    }
}

/// Renders ` in '7000:tcp'` when the bad part is not the whole argument.
fn in_arg(part: &str, arg: &str) -> String {
    if part == arg {
        String::new()
    } else {
        format!(" in '{arg}'")
    }
}

/// Why a `PORT[:PROTO]` argument was rejected. Each message names the argument and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    /// The port is not a number from 1 to 65535.
    #[error("invalid port '{port}'{} (ports are 1-65535)", in_arg(.port, .arg))]
    InvalidPort {
        /// The port part of the argument.
        port: String,
        /// The whole argument.
        arg: String,
    },
    /// Nothing before the `:`.
    #[error("missing port in '{arg}' (use PORT or PORT:PROTO, e.g. 7000 or 7000:udp)")]
    MissingPort {
        /// The whole argument.
        arg: String,
    },
    /// Nothing after the `:`.
    #[error("missing protocol after ':' in '{arg}' (use tcp or udp, or drop the ':')")]
    MissingProtocol {
        /// The whole argument.
        arg: String,
    },
    /// A protocol other than tcp or udp.
    #[error("unknown protocol '{protocol}' in '{arg}' (use tcp or udp)")]
    UnknownProtocol {
        /// The protocol part of the argument.
        protocol: String,
        /// The whole argument.
        arg: String,
    },
    /// More than one `:`.
    #[error("too many ':' in '{arg}' (use PORT or PORT:PROTO, e.g. 7000 or 7000:udp)")]
    TooManyParts {
        /// The whole argument.
        arg: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn good_port_specs() {
        let table: &[(&str, u16, Option<Protocol>)] = &[
            ("1", 1, None),
            ("7000", 7000, None),
            ("65535", 65535, None),
            ("07000", 7000, None),
            ("7000:tcp", 7000, Some(Protocol::Tcp)),
            ("7000:udp", 7000, Some(Protocol::Udp)),
            ("7000:UDP", 7000, Some(Protocol::Udp)),
            ("7000:Tcp", 7000, Some(Protocol::Tcp)),
            ("7000:uDp", 7000, Some(Protocol::Udp)),
        ];
        for &(arg, port, protocol) in table {
            let spec: PortSpec = arg
                .parse()
                .unwrap_or_else(|e| panic!("'{arg}' should parse: {e}"));
            assert_eq!(spec, PortSpec { port, protocol }, "for '{arg}'");
        }
    }

    #[test]
    fn bad_port_specs() {
        let table: &[(&str, &str)] = &[
            ("0", "invalid port '0' (ports are 1-65535)"),
            ("65536", "invalid port '65536' (ports are 1-65535)"),
            ("99999", "invalid port '99999' (ports are 1-65535)"),
            (
                "99999:tcp",
                "invalid port '99999' in '99999:tcp' (ports are 1-65535)",
            ),
            ("abc", "invalid port 'abc' (ports are 1-65535)"),
            ("ssh", "invalid port 'ssh' (ports are 1-65535)"),
            ("-1", "invalid port '-1' (ports are 1-65535)"),
            ("+7000", "invalid port '+7000' (ports are 1-65535)"),
            (" 7000", "invalid port ' 7000' (ports are 1-65535)"),
            ("8000junk", "invalid port '8000junk' (ports are 1-65535)"),
            (
                "8000junk:udp",
                "invalid port '8000junk' in '8000junk:udp' (ports are 1-65535)",
            ),
            (
                "",
                "missing port in '' (use PORT or PORT:PROTO, e.g. 7000 or 7000:udp)",
            ),
            (
                ":tcp",
                "missing port in ':tcp' (use PORT or PORT:PROTO, e.g. 7000 or 7000:udp)",
            ),
            (
                "7000:",
                "missing protocol after ':' in '7000:' (use tcp or udp, or drop the ':')",
            ),
            (
                "7000:icmp",
                "unknown protocol 'icmp' in '7000:icmp' (use tcp or udp)",
            ),
            (
                "7000:tcp ",
                "unknown protocol 'tcp ' in '7000:tcp ' (use tcp or udp)",
            ),
            (
                "7000:tcp:udp",
                "too many ':' in '7000:tcp:udp' (use PORT or PORT:PROTO, e.g. 7000 or 7000:udp)",
            ),
            (
                "7000::tcp",
                "too many ':' in '7000::tcp' (use PORT or PORT:PROTO, e.g. 7000 or 7000:udp)",
            ),
        ];
        for &(arg, message) in table {
            match arg.parse::<PortSpec>() {
                Ok(spec) => panic!("'{arg}' should be rejected, got {spec:?}"),
                Err(e) => assert_eq!(e.to_string(), message, "for '{arg}'"),
            }
        }
    }

    fn args(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("knock").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{argv:?} should parse: {e}"))
    }

    #[test]
    fn default_protocol_and_explicit_override() {
        let plain = args(&["h", "1", "2:udp", "3:tcp"]);
        let specs = plain.port_specs().expect("valid ports");
        assert_eq!(
            specs,
            vec![(1, Protocol::Tcp), (2, Protocol::Udp), (3, Protocol::Tcp)]
        );

        let udp = args(&["-u", "h", "1", "2:udp", "3:tcp", "4:TCP"]);
        let specs = udp.port_specs().expect("valid ports");
        assert_eq!(
            specs,
            vec![
                (1, Protocol::Udp),
                (2, Protocol::Udp),
                (3, Protocol::Tcp),
                (4, Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn first_bad_port_is_reported() {
        let a = args(&["h", "7000", "8000:icmp", "99999"]);
        let err = a.port_specs().expect_err("8000:icmp is invalid");
        assert_eq!(
            err.to_string(),
            "unknown protocol 'icmp' in '8000:icmp' (use tcp or udp)"
        );
    }

    #[test]
    fn options_parse() {
        let a = args(&["-v", "-4", "-d", "250", "--udp", "host", "7000"]);
        assert!(a.verbose && a.udp);
        assert_eq!(a.family().expect("one family"), Family::V4);
        assert_eq!(a.delay(), Duration::from_millis(250));
        assert_eq!(a.host, "host");
        assert_eq!(a.ports, vec!["7000"]);

        let a = args(&["host", "7000", "--ipv6", "--delay=5"]);
        assert_eq!(a.family().expect("one family"), Family::V6);
        assert_eq!(a.delay, 5);

        assert_eq!(args(&["h", "1"]).family().expect("default"), Family::Any);
    }

    #[test]
    fn usage_errors() {
        for argv in [
            &["-4", "-6", "h", "1"][..],
            &["h"],
            &[],
            &["-d", "x", "h", "1"],
            &["-d", "-5", "h", "1"],
        ] {
            let parsed = Args::try_parse_from(std::iter::once("knock").chain(argv.iter().copied()));
            assert!(parsed.is_err(), "{argv:?} should be a usage error");
        }
    }

    #[test]
    fn both_families_set_programmatically_is_an_error() {
        let mut a = args(&["h", "1"]);
        a.ipv4 = true;
        a.ipv6 = true;
        assert!(matches!(a.family(), Err(KnockError::ConflictingFamilies)));
    }

    #[test]
    fn no_ports_set_programmatically_is_an_error() {
        let mut a = args(&["h", "1"]);
        a.ports.clear();
        assert!(matches!(a.port_specs(), Err(KnockError::NoPorts)));
    }
}
