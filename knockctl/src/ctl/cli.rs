//! The `knockctl` command line. Kept in the library so man pages and completions can be
//! generated from it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

/// One-line summary shown by `knockctl -h`.
const ABOUT: &str = "Inspect and control a running knockd";

/// Full description shown by `knockctl --help` and in the man page.
const LONG_ABOUT: &str = "\
Inspect and control a running knockd over its control socket: show its status, the open \
grants, the knock sequences in progress and the configured doors; revoke grants; reload \
the configuration; follow events live. With -H or --hosts, on many hosts at once over ssh.

Tables fit the terminal's width (COLUMNS overrides it), wrapping long cells onto continuation \
lines; when standard output is not a terminal (a pipe, a file), every row stays on one line, \
so grep sees it whole.

The control socket is only accessible to root and to members of the group knockd (over ssh: the \
ssh user on the remote host). Door sequences (static and one-time) are shown to root only: \
knockd sends members each door's kind and number of knocks.";

/// Examples and exit status, shown after the options by `knockctl --help`.
pub const EXAMPLES: &str = "\
Examples:
  knockctl status
      Version, pid, uptime, interfaces, config file and counters of knockd.

  knockctl list
      Open grants: time left, when and by which door they were opened, for
      which address, what was opened and how it closes.

  knockctl revoke 10.0.0.12 --door openSSH
      Close the grant door openSSH gave 10.0.0.12 (all its grants without --door).

  knockctl reload
      Re-read the configuration; errors are printed with their file:line.

  knockctl tail
      One line per event as it happens, until knockd stops or Ctrl-C:
        14:59:16.201 10.0.0.12 openSSH stage 2/3
        14:59:16.305 10.0.0.12 openSSH OPEN

  knockctl --json list | jq -r '.[].addr'
      Machine-readable output (tail: one JSON object per line).

  KNOCKCTL_SOCKET=/tmp/knockd.sock knockctl attempts
      Talk to a knockd listening on another socket.

  knockctl -H ssh://root@bastion1 -H ssh://ops@node7:2222 list
      Many hosts over ssh (it runs `knockctl dial-stdio` there): one table with
      a HOST column; a host that fails is named on stderr with its reason.
      -H and --hosts count wherever they stand: `knockctl -H ssh://a list -H
      ssh://b` asks a and b.

  knockctl --hosts prod revoke 203.0.113.7
      Hosts and groups of ~/.config/knockctl/hosts.toml:
        [hosts]
        bastion1 = \"ssh://root@bastion1\"
        node7 = { url = \"ssh://ops@node7:2222\", knockctl = \"/usr/local/bin/knockctl\" }
        [groups]
        prod = [\"bastion1\", \"node7\"]
      revoke acts on every host that has a grant for the address (--on HOST: one).

  knockctl --hosts prod --ssh-persist 300 list
      Share one ssh connection per host (ssh's ControlMaster), kept 300 s after
      its last command: later commands skip the ssh login (key exchange and
      authentication). Hosts whose ssh config sets ControlMaster or ControlPath
      keep their own settings. Also `persist = 300` under [ssh] in the hosts file.

  ssh -o BatchMode=yes -T -p 2222 -l ops -- node7 knockctl dial-stdio --socket /run/knockd/knockd.sock
      What `knockctl -H ssh://ops@node7:2222/run/knockd/knockd.sock` runs: the
      remote knockctl relays the control protocol to that socket, unchanged.

Environment:
  KNOCKCTL_HOST         comma-separated URLs used when neither -H nor --hosts is given
  KNOCKCTL_SSH          the ssh program (default: ssh from PATH)
  KNOCKCTL_SSH_PERSIST  seconds for --ssh-persist (0: no sharing)

Exit status:
  0  success (many hosts: every host answered)
  1  knockd refused or failed the request (the message says why); many hosts: some
     did not answer (the others' answers are printed)
  2  usage error
  3  knockd is not running (no socket, or nothing listening on it); many hosts: none
     answered";

/// Command line of `knockctl`.
// The field docs are --help text, not rustdoc: their brackets (`[user@]host`, `[ssh]`) are
// literal.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "knockctl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Args {
    /// Control socket of knockd.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KNOCKCTL_SOCKET",
        hide_env_values = true,
        default_value = knock_ipc::DEFAULT_SOCKET
    )]
    pub socket: PathBuf,

    /// Machine-readable output: one JSON document (tail: one JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,

    /// A knockd to talk to: unix:///path/to.sock or ssh://[user@]host[:port][/socket/path]
    /// (repeat for many hosts; default: KNOCKCTL_HOST, comma-separated, else --socket).
    #[arg(short = 'H', long = "host", global = true, value_name = "URL")]
    pub host: Vec<String>,

    /// Hosts or groups of the hosts file to talk to (NAME[,NAME]; `all`: every host).
    #[arg(long, global = true, value_name = "NAME", value_delimiter = ',')]
    pub hosts: Vec<String>,

    /// The hosts file [default: ~/.config/knockctl/hosts.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub hosts_file: Option<PathBuf>,

    /// Share one ssh connection per host (ssh's ControlMaster), kept SECS after its last
    /// command, so later commands skip the login (0: no sharing; default: the hosts file's
    /// [ssh] persist, else none). Not for hosts whose ssh config sets ControlMaster or
    /// ControlPath: ssh's own settings win.
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        env = "KNOCKCTL_SSH_PERSIST",
        value_parser = clap::value_parser!(u64).range(0..=86_400)
    )]
    pub ssh_persist: Option<u64>,

    /// Seconds each host gets to connect and answer; a host that takes longer is reported
    /// and the others' answers are printed.
    #[arg(long, global = true, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

impl Args {
    /// Parses the process's arguments like [`Parser::parse`] (usage errors exit 2), with
    /// every `-H` and `--hosts` counted wherever it stands (see [`Args::try_parse_all`]).
    pub fn parse_all() -> Args {
        Args::try_parse_all(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses `argv`, keeping every `-H URL` and `--hosts NAME` in the order given, before
    /// and after the command (`knockctl -H a list -H b` asks a and b). clap propagates a
    /// global option as a whole from the level where it was last given, so the values
    /// given before the command would be lost: a second parse of the same words by a
    /// command where each level has its own `-H` and `--hosts` gathers them all.
    pub fn try_parse_all<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
        let mut args = Args::try_parse_from(&argv)?;
        let matches = each_level_own_hosts(Args::command()).try_get_matches_from(&argv)?;
        let mut level = Some(&matches);
        let (mut host, mut hosts) = (Vec::new(), Vec::new());
        while let Some(m) = level {
            host.extend(m.get_many::<String>("host").into_iter().flatten().cloned());
            hosts.extend(m.get_many::<String>("hosts").into_iter().flatten().cloned());
            level = m.subcommand().map(|(_, sub)| sub);
        }
        args.host = host;
        args.hosts = hosts;
        Ok(args)
    }
}

/// `cmd` with `-H` and `--hosts` no longer global but defined on every level (subcommands
/// included), so that each level's matches hold the values given there.
fn each_level_own_hosts(cmd: clap::Command) -> clap::Command {
    let own: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| ["host", "hosts"].contains(&a.get_id().as_str()))
        .map(|a| a.clone().global(false))
        .collect();
    fn add(cmd: clap::Command, own: &[clap::Arg]) -> clap::Command {
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        let mut cmd = cmd;
        for name in names {
            cmd = cmd.mut_subcommand(name, |sub| add(sub.args(own.iter().cloned()), own));
        }
        cmd
    }
    let cmd = cmd
        .mut_arg("host", |a| a.global(false))
        .mut_arg("hosts", |a| a.global(false));
    add(cmd, &own)
}

/// What to ask knockd.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Show version, pid, uptime, interfaces, config file, doors and counters.
    Status,
    /// List open grants (addresses let in, and until when); knockd lists the oldest 5000 and
    /// knockctl says how many more there are (on stderr with --json).
    #[command(visible_alias = "grants")]
    List,
    /// List knock sequences in progress (the oldest 5000, and how many more there are).
    Attempts,
    /// List configured doors: sequence (root only; others see kind and number of knocks),
    /// timeout, action (TOTP doors: step and when the next begins).
    Doors,
    /// Close the open grants of ADDRESS (only those of one door with --door).
    Revoke {
        /// IPv4 or IPv6 address whose grants to close.
        #[arg(value_name = "ADDRESS")]
        addr: IpAddr,
        /// Only close the grant of this door.
        #[arg(long, value_name = "NAME")]
        door: Option<String>,
        /// With many hosts: only on this host (by default, on every host that has a grant
        /// for ADDRESS).
        #[arg(long, value_name = "HOST")]
        on: Option<String>,
    },
    /// Re-read the configuration file (errors are printed with their file:line).
    Reload,
    /// Print events as they happen, one per line, until knockd closes the connection.
    Tail,
    /// Live dashboard: attempts, grants, events, doors (`?` shows the keys). Over many
    /// hosts (-H, --hosts): a HOST column and a header line per host.
    Tui,
    /// Print counters and gauges in the Prometheus text format (for node_exporter's textfile
    /// collector; knockd opens no TCP port).
    #[command(long_about = METRICS_ABOUT)]
    Metrics,
    /// List the enrolled SPA clients (name, fingerprint, doors, last seen, open grants), or
    /// revoke one (refused from its next packet; no restart).
    Clients {
        #[command(subcommand)]
        action: Option<ClientsAction>,
    },
    /// Relay stdin and stdout to the control socket, unchanged, until either side closes:
    /// the remote end of `knockctl -H ssh://...` (knockctl runs it over ssh).
    #[command(name = "dial-stdio", long_about = DIAL_ABOUT)]
    DialStdio,
}

/// `knockctl clients ...`
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ClientsAction {
    /// Revoke client NAME: its next packet is refused, and its record file in SPA_ClientDir
    /// is renamed NAME.pub.revoked so that a restart keeps it revoked.
    Revoke {
        #[arg(value_name = "NAME")]
        name: String,
        /// Also close the grants its packets opened.
        #[arg(long)]
        close: bool,
    },
}

const DIAL_ABOUT: &str = "\
Connect to the control socket (--socket) and copy stdin to it and it to stdout, byte for \
byte, until either side closes. knockctl -H ssh://host runs `knockctl dial-stdio` on that \
host through ssh: the same protocol, handshake and limits as a local client, and knockd \
checks the ssh user's credentials (root or group knockd). Not meant to be run by hand. \
For `knockctl -H ssh://ops@node7:2222/run/knockd/knockd.sock list`, knockctl runs:

  ssh -o BatchMode=yes -T -p 2222 -l ops -- node7 knockctl dial-stdio --socket /run/knockd/knockd.sock

ssh runs it through the remote user's login shell, so a heavy shell start-up file (~/.bashrc \
for bash) is paid on every connection: an account with a plain shell is faster.";

/// `--timeout`: seconds, more than 0 (decimals allowed).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "'{text}' is not a number of seconds from 0 to 86400"
        )),
    }
}

const METRICS_ABOUT: &str = "\
Print knockd's counters and gauges in the Prometheus text exposition format: packets, knocks, \
opens, resets, timeouts, evictions, command failures, kernel drops (counters, `_total`) and \
grants open, attempts tracked, doors, uptime (gauges). knockd opens no TCP port: run this \
from a timer and let node_exporter's textfile collector serve the file, e.g. every minute:

  { knockctl metrics || echo \"knockd_up 0\"; } \\
    > /var/lib/prometheus/node-exporter/knockd.prom.tmp && \\
  mv /var/lib/prometheus/node-exporter/knockd.prom.tmp /var/lib/prometheus/node-exporter/knockd.prom

When knockd is not running, knockctl metrics prints nothing and exits 3: the echo then \
writes knockd_up 0, so an alert on knockd_up == 0 fires (without it the file would keep \
the last knockd_up 1). The file is renamed into place, so the collector never reads half \
of it. A systemd service and timer doing this are in packaging/metrics/.";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn parses_revoke_with_door_and_global_options_anywhere() {
        let args = Args::try_parse_from([
            "knockctl",
            "revoke",
            "10.0.0.12",
            "--door",
            "openSSH",
            "--json",
            "--socket",
            "/tmp/k.sock",
        ])
        .expect("valid");
        assert!(args.json);
        assert_eq!(args.socket, PathBuf::from("/tmp/k.sock"));
        assert_eq!(
            args.command,
            Command::Revoke {
                addr: "10.0.0.12".parse().expect("ip"),
                door: Some("openSSH".into()),
                on: None,
            }
        );
    }

    #[test]
    fn hosts_timeout_and_revoke_on() {
        let args = Args::try_parse_from([
            "knockctl",
            "-H",
            "ssh://root@bastion1",
            "-H",
            "unix:///tmp/k.sock",
            "--hosts",
            "prod,web",
            "--timeout",
            "2.5",
            "revoke",
            "10.0.0.12",
            "--on",
            "bastion1",
        ])
        .expect("valid");
        assert_eq!(args.host, ["ssh://root@bastion1", "unix:///tmp/k.sock"]);
        assert_eq!(args.hosts, ["prod", "web"]);
        assert_eq!(args.timeout, Duration::from_millis(2500));
        assert!(matches!(args.command, Command::Revoke { on: Some(ref h), .. } if h == "bastion1"));
        for bad in ["0", "-1", "x"] {
            assert!(Args::try_parse_from(["knockctl", "--timeout", bad, "list"]).is_err());
        }
        let dial = Args::try_parse_from(["knockctl", "dial-stdio", "--socket", "/s"]).expect("ok");
        assert_eq!(dial.command, Command::DialStdio);
    }

    #[test]
    fn every_h_and_hosts_counts_wherever_it_stands() {
        let args = Args::try_parse_all([
            "knockctl",
            "-H",
            "ssh://a",
            "--hosts",
            "prod",
            "list",
            "-H",
            "ssh://b",
            "--hosts=web,db",
            "-Hssh://c",
        ])
        .expect("valid");
        assert_eq!(args.host, ["ssh://a", "ssh://b", "ssh://c"]);
        assert_eq!(args.hosts, ["prod", "web", "db"]);
        assert_eq!(args.command, Command::List);
        let args = Args::try_parse_all([
            "knockctl",
            "--host=ssh://a",
            "clients",
            "-H",
            "ssh://b",
            "revoke",
            "laptop",
            "-H",
            "ssh://c",
        ])
        .expect("valid");
        assert_eq!(args.host, ["ssh://a", "ssh://b", "ssh://c"]);
        let args = Args::try_parse_all(["knockctl", "status"]).expect("valid");
        assert!(args.host.is_empty() && args.hosts.is_empty());
        // Everything else parses as before; errors are clap's.
        let args = Args::try_parse_all(["knockctl", "--json", "revoke", "10.0.0.1", "--on", "h"])
            .expect("valid");
        assert!(args.json);
        let err = Args::try_parse_all(["knockctl", "-H"]).expect_err("no value");
        assert_eq!(err.exit_code(), 2);
        each_level_own_hosts(Args::command()).debug_assert();
    }

    #[test]
    fn rejects_bad_address_and_missing_command() {
        for argv in [
            &["knockctl", "revoke", "not-an-ip"][..],
            &["knockctl"],
            &["knockctl", "frobnicate"],
        ] {
            let err = Args::try_parse_from(argv).expect_err("must fail");
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }
}
