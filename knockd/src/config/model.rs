//! The parsed, validated configuration. Plain data: no I/O here.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// knockd 0.8 defaults.
pub const DEFAULT_SEQ_TIMEOUT: Duration = Duration::from_secs(25);
pub const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// knockd's SEQ_MAX.
pub const MAX_SEQUENCE_LEN: usize = 32;
/// Default cap on knock attempts tracked at once (all sources, all doors).
pub const DEFAULT_MAX_ATTEMPTS: usize = 100_000;
/// Open grants at most when `MaxGrants` is not set.
pub const DEFAULT_MAX_GRANTS: usize = 10_000;
/// New grants each door starts per second when `StartRate` is not set.
pub const DEFAULT_START_RATE: u32 = 20;
pub const DEFAULT_OPEN_CHAIN: &str = "INPUT";
/// Default cap on concurrent control connections (`MaxClients`).
pub const DEFAULT_MAX_CLIENTS: usize = 64;
/// Distinct non-knock ports that make a source with an attempt in progress a scanner.
pub const DEFAULT_SWEEP_THRESHOLD: usize = 5;
pub const MAX_SWEEP_THRESHOLD: usize = 1024;
/// How long a scanner cannot start an attempt on a guarded door.
pub const DEFAULT_SWEEP_PENALTY: Duration = Duration::from_secs(60);
/// Source networks for the per-network share of the attempt table.
pub const DEFAULT_PREFIX_V4: u8 = 24;
pub const DEFAULT_PREFIX_V6: u8 = 64;

/// Transport protocol of a knock or of a port opened by a native door.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One knock of a sequence: `7000:tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Step {
    pub port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.port, self.proto)
    }
}

/// TCP flag bits as they sit in byte 13 of the TCP header.
pub mod flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    /// Names as written in `tcpflags =`, in bit order.
    pub const NAMES: [(&str, u8); 6] = [
        ("fin", FIN),
        ("syn", SYN),
        ("rst", RST),
        ("psh", PSH),
        ("ack", ACK),
        ("urg", URG),
    ];
}

/// `TCPFlags = syn,!ack`: bits that must be set and bits that must be clear.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub set: u8,
    pub unset: u8,
}

impl TcpFlags {
    pub fn matches(self, flags: u8) -> bool {
        flags & self.set == self.set && flags & self.unset == 0
    }
    pub fn is_dont_care(self) -> bool {
        self.set == 0 && self.unset == 0
    }
}

/// `Start_Command_6` / `Stop_Command_6`: knockd falls back to the v4 command when the key is
/// absent, and an empty value disables the command for IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Command6 {
    #[default]
    Fallback,
    Disabled,
    Command(String),
}

/// Native door action (`Open = 22/tcp`): knockd itself inserts
/// `iptables -I <chain> -s IP -p tcp --dport 22 -j ACCEPT` and deletes it after `Cmd_Timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenPort {
    pub port: u16,
    pub proto: Proto,
}

/// `22/tcp,443/tcp`: opened ports as the log, `knockctl list`/`doors` and the state file show
/// them (the one place this label is built).
pub fn ports_label(ports: impl IntoIterator<Item = (u16, Proto)>) -> String {
    let mut out = String::new();
    for (i, (port, proto)) in ports.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{port}/{proto}"));
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub struct Door {
    pub name: String,
    /// Line of the `[name]` header in the config file.
    pub line: usize,
    pub sequence: Vec<Step>,
    /// `One_Time_Sequences = file`: when set, `sequence` is the file's current line.
    pub one_time_sequences: Option<PathBuf>,
    pub seq_timeout: Duration,
    pub tcp_flags: TcpFlags,
    pub start_command: Option<String>,
    pub start_command_6: Command6,
    pub stop_command: Option<String>,
    pub stop_command_6: Command6,
    pub cmd_timeout: Duration,
    pub target: Option<IpAddr>,
    /// Native action (`Open = 22/tcp, 443/tcp`); empty for command doors.
    pub open: Vec<OpenPort>,
    /// Chain for the native action (`Open_Chain`), default INPUT.
    pub open_chain: String,
    /// `SweepGuard` (default on): the sweep guard watches this door's attempts.
    pub sweep_guard: bool,
    /// `TOTP_File = file`: a rotating door; `load` fills `totp` from the file and the engine
    /// derives the sequences of the current time steps (`sequence` stays empty).
    pub totp_file: Option<PathBuf>,
    pub totp: Option<knock_ipc::totp::Spec>,
    /// `SPA = alice, bob`: clients whose single-packet knocks open this door.
    pub spa: Vec<String>,
    /// `SPA_Address`: which address an SPA packet may open.
    pub spa_address: SpaAddress,
}

/// `SPA_Address = source | require | any`: the address an SPA packet opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpaAddress {
    /// The packet's source; an address in the packet must equal it (default).
    #[default]
    Source,
    /// The packet must carry an address, equal to its source.
    Require,
    /// The address in the packet, or the source when it carries none (NAT; logged).
    Any,
}

impl SpaAddress {
    pub fn parse(s: &str) -> Option<SpaAddress> {
        match s.to_ascii_lowercase().as_str() {
            "source" => Some(SpaAddress::Source),
            "require" => Some(SpaAddress::Require),
            "any" => Some(SpaAddress::Any),
            _ => None,
        }
    }
}

/// Default `SPA_ClientDir` and `SPA_ServerKey`.
pub const DEFAULT_SPA_CLIENT_DIR: &str = "/etc/knockd/clients";
pub const DEFAULT_SPA_SERVER_KEY: &str = "/etc/knockd/spa.key";

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Options {
    pub use_syslog: bool,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub interface: Option<String>,
    /// `MaxAttempts`: cap on attempts tracked at once; None = DEFAULT_MAX_ATTEMPTS.
    pub max_attempts: Option<usize>,
    /// `Socket`: control socket path; None = [`knock_ipc::DEFAULT_SOCKET`].
    pub socket: Option<PathBuf>,
    /// `StateFile`: where the grant ledger is persisted; None = DEFAULT_STATE_FILE.
    pub state_file: Option<PathBuf>,
    /// `OnShutdown`: what happens to open grants when knockd stops.
    pub on_shutdown: ShutdownPolicy,
    /// `MaxGrants`: cap on open grants; None = DEFAULT_MAX_GRANTS.
    pub max_grants: Option<usize>,
    /// `StartRate`: new grants each door starts per second; None = DEFAULT_START_RATE.
    pub start_rate: Option<u32>,
    /// `SweepThreshold`; None = DEFAULT_SWEEP_THRESHOLD.
    pub sweep_threshold: Option<usize>,
    /// `SweepPenalty`; None = DEFAULT_SWEEP_PENALTY.
    pub sweep_penalty: Option<Duration>,
    /// `MaxAttemptsPerNetwork`; None = a tenth of MaxAttempts.
    pub max_attempts_per_network: Option<usize>,
    /// `NetworkPrefixV4` / `NetworkPrefixV6`; None = /24 and /64.
    pub network_prefix_v4: Option<u8>,
    pub network_prefix_v6: Option<u8>,
    /// `Firewall`: how native doors (`Open =`) open and close.
    pub firewall: FirewallKind,
    /// `NftMark`: None = default (`DEFAULT_NFT_MARK`), Some(0) = off.
    pub nft_mark: Option<u32>,
    /// `MaxClients`: cap on concurrent control connections; None = DEFAULT_MAX_CLIENTS.
    pub max_clients: Option<usize>,
    /// `SPA_Port`; None = knock_ipc::spa::DEFAULT_PORT.
    pub spa_port: Option<u16>,
    /// `SPA_ClientDir`; None = DEFAULT_SPA_CLIENT_DIR.
    pub spa_client_dir: Option<PathBuf>,
    /// `SPA_ServerKey`; None = DEFAULT_SPA_SERVER_KEY.
    pub spa_server_key: Option<PathBuf>,
    /// `NftTable`: the nftables table (family inet) this knockd owns; None = `knockd`.
    pub nft_table: Option<String>,
}

/// Packet mark set by `Firewall = nftables` on packets a grant accepts ("KN").
pub const DEFAULT_NFT_MARK: u32 = 0x4b4e;

impl Options {
    pub fn spa_port(&self) -> u16 {
        self.spa_port.unwrap_or(knock_ipc::spa::DEFAULT_PORT)
    }

    pub fn spa_client_dir(&self) -> PathBuf {
        self.spa_client_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SPA_CLIENT_DIR))
    }

    pub fn spa_server_key(&self) -> PathBuf {
        self.spa_server_key
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SPA_SERVER_KEY))
    }

    /// The state file (`StateFile`, `--state-file`, or [`DEFAULT_STATE_FILE`]).
    pub fn state_file(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE))
    }

    /// This knockd's instance tag: 8 hex digits of a hash (FNV-1a) of its state file's path,
    /// as given. Its iptables rules carry it in their comment (`knockd@TAG:door`), so two
    /// instances sharing a chain (each has its own state file) tell their rules apart: one
    /// never closes the other's.
    pub fn instance_tag(&self) -> String {
        let path = self.state_file();
        let mut h: u32 = 0x811c_9dc5;
        for b in path.as_os_str().as_encoded_bytes() {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }

    /// The nftables table (family inet) this knockd owns: `NftTable`, or `knockd`.
    pub fn nft_table(&self) -> &str {
        self.nft_table.as_deref().unwrap_or("knockd")
    }

    /// The mark knockd's nftables chain sets on accepted packets, if any.
    pub fn nft_mark(&self) -> Option<u32> {
        match self.nft_mark {
            None => Some(DEFAULT_NFT_MARK),
            Some(0) => None,
            Some(m) => Some(m),
        }
    }
}

/// The firewall backend of native doors (`Firewall = ...`, `--firewall`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirewallKind {
    /// `iptables` (default): `iptables -I CHAIN ... -j ACCEPT` per port, deleted at the deadline.
    #[default]
    Iptables,
    /// `nftables`: elements with a kernel timeout in the sets of table `inet knockd`.
    Nftables,
}

impl FirewallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FirewallKind::Iptables => "iptables",
            FirewallKind::Nftables => "nftables",
        }
    }

    pub fn parse(value: &str) -> Option<FirewallKind> {
        match value.to_ascii_lowercase().as_str() {
            "iptables" => Some(FirewallKind::Iptables),
            "nftables" | "nft" => Some(FirewallKind::Nftables),
            _ => None,
        }
    }
}

pub const DEFAULT_STATE_FILE: &str = "/var/lib/knockd/state.json";

/// What knockd does with open grants when it stops (`OnShutdown = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownPolicy {
    /// `close` (default): close grants that have a deadline; grants without one (a door
    /// with only an iptables start command, like knockd's example) stay open as in knockd.
    #[default]
    Close,
    /// `close-all`: close every grant, including those without a deadline.
    CloseAll,
    /// `keep`: leave every rule in place; the state file lets the next start close them on
    /// schedule (grants past their deadline are closed at once).
    Keep,
}

impl ShutdownPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownPolicy::Close => "close",
            ShutdownPolicy::CloseAll => "close-all",
            ShutdownPolicy::Keep => "keep",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub options: Options,
    pub doors: Vec<Door>,
}

impl Config {
    pub fn max_attempts(&self) -> usize {
        self.options.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    }
    pub fn max_grants(&self) -> usize {
        self.options.max_grants.unwrap_or(DEFAULT_MAX_GRANTS)
    }
    pub fn start_rate(&self) -> u32 {
        self.options.start_rate.unwrap_or(DEFAULT_START_RATE)
    }

    pub fn max_attempts_per_network(&self) -> usize {
        self.options
            .max_attempts_per_network
            .unwrap_or((self.max_attempts() / 10).max(1))
    }

    pub fn sweep_threshold(&self) -> usize {
        self.options
            .sweep_threshold
            .unwrap_or(DEFAULT_SWEEP_THRESHOLD)
    }

    pub fn sweep_penalty(&self) -> Duration {
        self.options.sweep_penalty.unwrap_or(DEFAULT_SWEEP_PENALTY)
    }
}

/// Command-line settings that beat the config file, applied at start and on every reload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub interface: Option<String>,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    pub firewall: Option<FirewallKind>,
    /// Directory knockd started in: a relative LogFile or PidFile is resolved against it, at
    /// start and identically on every reload (after -d the working directory is `/`).
    pub base_dir: Option<PathBuf>,
}

impl Overrides {
    pub fn apply(&self, options: &mut Options) {
        let set = |dst: &mut Option<PathBuf>, src: &Option<PathBuf>| {
            if src.is_some() {
                dst.clone_from(src);
            }
        };
        if self.interface.is_some() {
            options.interface.clone_from(&self.interface);
        }
        set(&mut options.log_file, &self.log_file);
        set(&mut options.pid_file, &self.pid_file);
        set(&mut options.socket, &self.socket);
        set(&mut options.state_file, &self.state_file);
        if let Some(f) = self.firewall {
            options.firewall = f;
        }
        if let Some(base) = &self.base_dir {
            for p in [&mut options.log_file, &mut options.pid_file]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
    }
}
