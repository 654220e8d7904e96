//! knockd's command line (knockd 0.8 compatible flags).

use crate::config::FirewallKind;
use clap::builder::TypedValueParser as _;
use clap::Parser;
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/knockd.conf";
pub const DEFAULT_PIDFILE: &str = "/var/run/knockd.pid";

const AFTER_HELP: &str = "\
Command-line options take precedence over the config file ([options] Interface, PidFile,
LogFile). Without -i or Interface, knockd captures on the interface of the default route.

Signals: SIGHUP reloads the config (a bad config is reported and the running one kept; one
that arrives during start-up is queued, never fatal); SIGTERM/SIGINT close grants that have a
deadline (see OnShutdown in knockd.conf(5)) and exit. `knockctl` talks to the running daemon
over the control socket (status, list, revoke, reload, tail, tui). Open grants are saved in the
state file (written off the main task at most every 100 ms, locked: a second knockd on the
same state file refuses to start), so a restart closes them on schedule. The state file is
data: stop commands come from the config, and a recorded iptables -D of a door no longer in the
config runs only in exactly the shape knockd writes (-D CHAIN -s ADDR[/32|/128], tcp/udp port,
knockd's comment, -j ACCEPT); anything else is logged and never run.

Grants and commands: a grant stays listed (CLOSING, with the last error) and in the state file
until its close succeeded; failed closes are retried after 1, 2, 4 ... 60 s, and a grant still
closing at shutdown is closed first by the next start. Each door starts at most StartRate (20)
new grants per second; what waits is queued per source network (/24, /64: 4 per network, 32 per
door), the network that asked least recently first, so a flood from many addresses elsewhere
cannot starve a client's network (beyond that an open is refused and counted in knockctl
status by reason). Door commands run through a bounded pool (4 at once, 2 more for closes,
64 admitted at most; starts wait for it in the fair queue), and at most MaxGrants (10000)
grants are open at once. Door
commands are killed after 30 s; iptables waits at most 5 s for its lock (-w 5) and is killed
after 10 s. Native doors' rules opened or closed together go in one iptables-restore --noflush
transaction.

Under attack: the sweep guard ends the attempts of a source that, while knocking, opens
connections to SweepThreshold (5) other ports of this host, and refuses its first knocks for
SweepPenalty (60 s); the capture filter then sees new connections (SYN without ACK, UDP) to
every port of the host, never established traffic. A flood of first knocks only displaces
attempts at stage 1, and one /24 or /64 holds at most MaxAttemptsPerNetwork attempts. A used-up
or unwritable One_Time_Sequences file disables its door with a warning; it never stops knockd.
See knockd.conf(5).

With Firewall = nftables (or --firewall nftables), native doors are elements with a kernel
timeout in table inet knockd, which stays when knockd stops (fail closed: the doors' ports stay
protected, grants expire on schedule); --firewall-cleanup removes it. knockd -t and the
start-up log name every nftables input chain that would drop what knockd opens, with the line
to add to it. Switching Firewall takes a restart (a reload refuses it); a start with iptables
removes a table inet knockd left by an nftables run.

Examples:
  knockd -t -c /etc/knockd.conf      check a config file and exit
  knockd -i eth0 -v                  run in the foreground, verbose
  knockd -d                          run as a daemon (pidfile /var/run/knockd.pid)
  knockd --new-totp /etc/knockd/ssh.totp
                                     make a rotating door's secret (then TOTP_File = ...)
  knockd --new-client alice --out alice.knock
                                     enroll an SPA client (then SPA = alice in a door)";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "knockd",
    version,
    about = "Port-knock server: opens firewall doors for clients that knock the right sequence",
    long_about = "knockd listens to all traffic on an interface (libpcap) for special \
sequences of port hits (knocks). When a client completes a door's sequence, knockd runs the \
door's command or inserts a firewall rule for that client, and can close it again after a \
timeout. The config file format is that of knockd 0.8 (see knockd.conf(5)).",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// Interface to listen on (overrides Interface in the config; `any` for all)
    #[arg(short = 'i', long, value_name = "INTERFACE")]
    pub interface: Option<String>,

    /// Config file
    #[arg(short = 'c', long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// Detach and run in the background (writes the pidfile)
    #[arg(short = 'd', long)]
    pub daemon: bool,

    /// Debug output on stderr (per-packet detail)
    #[arg(short = 'D', long)]
    pub debug: bool,

    /// Verbose output on stderr
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Accepted for knockd compatibility and ignored: reverse DNS of knockers would let any
    /// packet trigger lookups and leak knocks to DNS observers
    #[arg(short = 'l', long)]
    pub lookup: bool,

    /// Pidfile (overrides PidFile in the config) [default: /var/run/knockd.pid with -d]
    #[arg(short = 'p', long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Log file (overrides LogFile in the config)
    #[arg(short = 'g', long, value_name = "FILE")]
    pub logfile: Option<PathBuf>,

    /// Ignore IPv6 addresses and packets
    #[arg(short = '4', long = "only-ip-v4")]
    pub only_ipv4: bool,

    /// Write a fresh TOTP door secret to FILE (mode 0600; never overwrites) and exit. Name it
    /// in a door with `TOTP_File = FILE` and copy it to clients for `knock --totp FILE HOST`
    #[arg(long = "new-totp", value_name = "FILE")]
    pub new_totp: Option<PathBuf>,

    /// Enroll an SPA client NAME: write its public record to SPA_ClientDir (from -c, default
    /// /etc/knockd/clients/NAME.pub) and its secret key file to --out (mode 0600; give it to
    /// the client for `knock --spa FILE HOST`); the first one also makes SPA_ServerKey. Exit
    #[arg(long = "new-client", value_name = "NAME", requires = "out")]
    pub new_client: Option<String>,

    /// Where --new-client writes the client's secret key file (never overwritten)
    #[arg(long = "out", value_name = "FILE", requires = "new_client")]
    pub out: Option<PathBuf>,

    /// Check the config file, print problems and warnings (the summary counts every one), and
    /// exit (0 = valid); the capture filter is compiled for the interface's link type. With
    /// knockd's privileges (root) a missing interface is an error; without them, the checks
    /// that need them are skipped and named ("not checked: ..."). With SPA doors it checks the
    /// server key, every client record and every door's SPA list (errors: exit 1)
    #[arg(short = 't', long = "check-config")]
    pub check_config: bool,

    /// Control socket for knockctl (overrides Socket in the config) [default: /run/knockd/knockd.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Where the grant ledger is kept across restarts (overrides StateFile in the config)
    /// [default: /var/lib/knockd/state.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Firewall backend of native doors (`Open =`), overriding Firewall in the config:
    /// iptables (rules in INPUT) or nftables (kernel-expiring elements in table inet knockd)
    /// [default: iptables]
    #[arg(long, value_name = "BACKEND", value_parser = firewall_parser())]
    pub firewall: Option<FirewallKind>,

    /// Remove knockd's nftables table (inet knockd, or NftTable of the config: its grants and
    /// the protection of the doors' ports) and its SPA port DROP rules in iptables and
    /// ip6tables INPUT (knockd@TAG:spa-drop, left by a kill -9), and exit; other tables and
    /// rules are not touched. Refused while the knockd that owns them runs (it would re-create
    /// the table within a second), and when another knockd's state file owns the table
    #[arg(long)]
    pub firewall_cleanup: bool,

    /// With --firewall-cleanup: remove the table when another knockd, stopped, owns it (never
    /// while its owner runs)
    #[arg(long, requires = "firewall_cleanup")]
    pub force: bool,
}

fn firewall_parser() -> impl clap::builder::TypedValueParser<Value = FirewallKind> {
    clap::builder::PossibleValuesParser::new(["iptables", "nftables"])
        .map(|s: String| FirewallKind::parse(&s).unwrap_or_default())
}
