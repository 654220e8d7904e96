//! Message types. Rules: plain named structs and struct variants; new variants go at the end;
//! any change to these types bumps [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Bump on any change to the types in this module.
pub const PROTOCOL_VERSION: u32 = 15;

/// Client → daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    Hello { version: u32, client: String },
    Request { request: Request },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Status,
    Grants,
    Attempts,
    Doors,
    /// Close the grants of `addr` (only that door's when `door` is set).
    Revoke {
        addr: IpAddr,
        door: Option<String>,
    },
    Reload,
    /// Switch this connection to the live event stream.
    Subscribe,
    /// The enrolled SPA clients.
    Clients,
    /// Revoke SPA client `name` (refused from its next packet); `close`: also close its
    /// open grants.
    RevokeClient {
        name: String,
        close: bool,
    },
}

impl Request {
    /// The request's name, as clients show it in messages (`revoke failed: ...`).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Grants => "grants",
            Request::Attempts => "attempts",
            Request::Doors => "doors",
            Request::Revoke { .. } => "revoke",
            Request::Reload => "reload",
            Request::Subscribe => "subscribe",
            Request::Clients => "clients",
            Request::RevokeClient { .. } => "clients revoke",
        }
    }
}

/// Daemon → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    Hello {
        version: u32,
        daemon_version: String,
    },
    /// Handshake refused (version mismatch, not allowed); the connection closes.
    Rejected {
        reason: String,
    },
    Response {
        response: Response,
    },
    Event {
        event: Event,
    },
}

// One Response per request, moved once: the size of the Status variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Status {
        status: Status,
    },
    /// The oldest grants (at most [`crate::LIST_CAP`]); `total`: how many are open.
    Grants {
        grants: Vec<GrantInfo>,
        total: u64,
    },
    /// The oldest attempts (at most [`crate::LIST_CAP`]); `total`: how many are tracked.
    Attempts {
        attempts: Vec<AttemptInfo>,
        total: u64,
    },
    Doors {
        doors: Vec<DoorInfo>,
    },
    Revoked {
        grants: Vec<GrantInfo>,
    },
    Reloaded {
        warnings: Vec<String>,
    },
    ReloadFailed {
        errors: Vec<String>,
    },
    Subscribed,
    Error {
        message: String,
    },
    Clients {
        clients: Vec<ClientInfo>,
    },
    /// The client is revoked; `closed`: its grants closed (with `close`).
    ClientRevoked {
        name: String,
        closed: Vec<GrantInfo>,
    },
}

/// An enrolled SPA client (`knockctl clients`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub name: String,
    pub fingerprint: String,
    /// Doors whose `SPA =` lists it.
    pub doors: Vec<String>,
    /// When its last packet was accepted (unix ms).
    pub last_seen_unix_ms: Option<i64>,
    /// Its open grants.
    pub grants: u64,
    pub revoked: bool,
}

/// SPA packets by outcome (`knockctl status`, `knockctl metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaCounters {
    pub accepted: u64,
    /// Every reason, in [`crate::spa::Refusal::ALL`] order.
    pub refused: Vec<(crate::spa::Refusal, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub packets: u64,
    pub stages: u64,
    pub opens: u64,
    pub resets: u64,
    pub timeouts: u64,
    pub evictions: u64,
    pub commands_failed: u64,
    /// Packets the kernel dropped before knockd could read them (pcap stats).
    pub kernel_drops: u64,
    /// Sources the sweep guard found scanning.
    pub scanners: u64,
    /// First knocks refused (scanner penalty, network share, table full of advanced attempts);
    /// TOTP replays are counted apart (`refused_replay`).
    pub refused: u64,
    /// Opens refused because the command pool's queue was full.
    pub refused_pool_full: u64,
    /// Opens refused because MaxGrants grants were open.
    pub refused_max_grants: u64,
    /// Log lines dropped because the log could not keep up (LogFile, syslog or stderr stalled):
    /// logging never holds up the engine.
    pub log_lines_dropped: u64,
    /// Opens refused because their source network already had starts waiting for the
    /// door's `StartRate`.
    pub refused_start_network: u64,
    /// Opens refused because the door's start queue was full of busier networks.
    pub refused_start_queue: u64,
    /// Waiting opens dropped for one from a quieter network.
    pub refused_start_displaced: u64,
    /// TOTP sequences refused as replays: the step's sequence already opened the door for
    /// as many other addresses as it may (not counted in `refused`).
    pub refused_replay: u64,
    /// TOTP sequences knocked through for a step just outside the accepted window: a client
    /// clock off by about two steps (or a late replay).
    pub totp_clock_skew: u64,
    /// Opens refused because the state file could not record them (fail closed).
    pub refused_state_unwritable: u64,
    /// `Firewall = nftables`: times knockd re-created its table after another program removed
    /// or changed it (`nft flush ruleset`, `systemctl reload nftables`).
    pub nft_tables_recreated: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub daemon_version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub interfaces: Vec<String>,
    pub config_file: String,
    pub doors: u32,
    pub attempts: u64,
    pub max_attempts: u64,
    pub grants: u64,
    pub counters: Counters,
    /// Firewall backend of native doors: `iptables` or `nftables`.
    pub firewall: String,
    /// Single-packet knocks by outcome.
    pub spa: SpaCounters,
    /// The state file cannot be written now: the last error (None: the last write succeeded).
    /// Opens are refused meanwhile.
    pub state_error: Option<String>,
    /// Since when it cannot be written.
    pub state_error_since_unix_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantInfo {
    pub door: String,
    pub addr: IpAddr,
    /// What was opened, e.g. `22/tcp (INPUT)` or the start command.
    pub opened: String,
    pub opened_at_unix_ms: i64,
    /// None: open until revoked or closed by another door.
    pub expires_in_ms: Option<u64>,
    /// How it closes, e.g. `native rule delete`, `stop_command`.
    pub closes: String,
    pub refreshes: u32,
    /// `Firewall = nftables` grants: the time the kernel has left on the grant's set elements
    /// (as written at the last knock, or read back from the kernel at start); None otherwise.
    pub kernel_expires_in_ms: Option<u64>,
    /// Being closed: kept (and listed) until its close succeeded.
    pub closing: bool,
    /// Why the last close attempt failed (it is retried with backoff).
    pub close_error: Option<String>,
    /// The SPA client whose packet opened it.
    pub client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptInfo {
    pub addr: IpAddr,
    pub door: String,
    pub stage: u32,
    pub of: u32,
    pub age_ms: u64,
    pub remaining_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoorInfo {
    pub name: String,
    /// `7000:tcp` per knock; empty when a one-time door is exhausted.
    pub sequence: Vec<String>,
    pub seq_timeout_ms: u64,
    pub cmd_timeout_ms: u64,
    pub tcp_flags: String,
    /// `open 22/tcp (INPUT)`, `command`, `command + stop_command`, or `none`.
    pub action: String,
    pub one_time: bool,
    pub enabled: bool,
    pub target: Option<IpAddr>,
    /// `static`, `one-time` or `totp`.
    pub kind: String,
    /// TOTP doors: the current time step (the sequence itself is never sent).
    pub step: Option<u64>,
    /// Knocks in the door's sequence (a one-time door: its current line; TOTP: per step).
    pub knocks: u32,
    /// `sequence` was withheld: static and one-time sequences are sent to root only (a
    /// member of group knockd could use, and burn, them).
    pub sequence_hidden: bool,
    /// TOTP doors: the length of a step, in seconds.
    pub step_secs: Option<u64>,
    /// TOTP doors: how long after this answer the next step (and its sequence) begins.
    pub next_step_in_ms: Option<u64>,
}

impl DoorInfo {
    /// What a peer that is not root may see: everything but the sequence.
    pub fn without_sequence(mut self) -> DoorInfo {
        if !self.sequence.is_empty() {
            self.sequence.clear();
            self.sequence_hidden = true;
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_unix_ms: i64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    Stage {
        addr: IpAddr,
        door: String,
        stage: u32,
        of: u32,
    },
    Reset {
        addr: IpAddr,
        door: String,
        stage: u32,
    },
    Timeout {
        addr: IpAddr,
        door: String,
        stage: u32,
    },
    Open {
        addr: IpAddr,
        door: String,
    },
    GrantAdded {
        grant: GrantInfo,
    },
    GrantRefreshed {
        grant: GrantInfo,
    },
    GrantRevoked {
        grant: GrantInfo,
    },
    GrantExpired {
        grant: GrantInfo,
    },
    GrantClosed {
        grant: GrantInfo,
        by_door: String,
    },
    CommandFailed {
        door: String,
        message: String,
    },
    ReloadOk {
        doors: u32,
        warnings: Vec<String>,
    },
    ReloadFailed {
        errors: Vec<String>,
    },
    /// This subscriber was too slow; `missed` events were skipped.
    Lagged {
        missed: u64,
    },
}
