//! The native nftables backend (`Firewall = nftables`), all of it: knockd owns one table,
//! `inet knockd`, whose sets hold the grants with per-element timeouts, so the kernel itself
//! closes a grant at its deadline whether or not knockd is alive (fail closed).
//!
//! - [`side`]: the engine's nftables side ([`side::NftSide`], the owner of the backend and its
//!   queue) and its decisions over the grant ledger (shared elements, reload, restore, listing).
//! - [`backend`]: [`NftFirewall`], the [`crate::firewall::Firewall`] backend (element batches,
//!   listing, table set-up).
//! - [`setup`]: the table at start (refusing another knockd's), its removal
//!   (`--firewall-cleanup`, an iptables start), and the advice about native chains that would
//!   drop what knockd opens.
//! - [`watch`]: the kernel's nf_tables notifications: another program deleted something of
//!   the table (`nft flush ruleset`), so the side checks and re-creates it.
//! - [`script`]: the table, its sets and chain, and element changes as `nft -f` text (pure).
//! - [`netlink`]: the same element changes as one nf_tables netlink batch (pure encoding).
//! - [`listing`]: the kernel's set listing (`nft -j list table inet knockd`) back into elements.
//! - [`dump`]: the kernel's elements with their time left, over netlink (pure decoding).
//! - [`detect`]: native base chains on the input hook that drop, and the line the admin needs.
//! - [`transport`]: the effect: a long-lived netlink socket for element batches (a small one
//!   applied at once by the caller when nothing is queued, the rest by a worker thread) and
//!   `nft -f -` (table set-up, listing, clean-up).

pub mod backend;
pub mod detect;
pub mod dump;
pub mod kernel;
pub mod listing;
pub mod netlink;
pub mod nlmsg;
pub mod script;
pub mod setup;
pub mod side;
pub mod transport;
pub mod watch;

pub use backend::NftFirewall;

use crate::config::Proto;
use std::net::IpAddr;
use std::time::Duration;

/// The table knockd owns by default (family `inet`); `NftTable` names another.
pub const DEFAULT_TABLE: &str = "knockd";

static TABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The table this process owns (family `inet`): `NftTable`, fixed once at start by
/// [`set_table`] ([`DEFAULT_TABLE`] until then). Nothing else is ever touched.
pub fn table() -> &'static str {
    TABLE.get().map_or(DEFAULT_TABLE, String::as_str)
}

/// Fix this process's table (at start, before any nftables work). A second call with another
/// name fails: a running knockd never changes tables (a restart does).
pub fn set_table(name: &str) -> Result<(), String> {
    let fixed = TABLE.get_or_init(|| name.to_string());
    if fixed == name {
        Ok(())
    } else {
        Err(format!(
            "NftTable changed from {fixed} to {name}: restart knockd to use another table"
        ))
    }
}
/// Allow sets: (source address . protocol . port) with `flags timeout`.
pub const SET4: &str = "allow4";
pub const SET6: &str = "allow6";
/// The base chain (hook input, priority filter - 10).
pub const CHAIN: &str = "input";
/// Priority of knockd's chain: before the usual filter chains (0) and iptables-nft's INPUT.
pub const PRIORITY: i32 = -10;

/// One grant tuple: a set element `addr . proto . port`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Elem {
    pub addr: IpAddr,
    pub proto: Proto,
    pub port: u16,
}

impl Elem {
    /// The set this element lives in.
    pub fn set(&self) -> &'static str {
        if self.addr.is_ipv4() {
            SET4
        } else {
            SET6
        }
    }
}

impl std::fmt::Display for Elem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} . {} . {}", self.addr, self.proto, self.port)
    }
}

/// The element as a firewall rule for the [`crate::firewall`] queue (chain `inet-knockd`).
pub fn fw_rule(e: &Elem, door: &str) -> crate::firewall::FwRule {
    crate::firewall::FwRule {
        chain: "inet-knockd".into(),
        src: e.addr,
        proto: e.proto,
        port: e.port,
        door: door.to_string(),
        instance: None,
    }
}

/// One change to the allow sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElemOp {
    /// Make the element present with exactly this timeout from now (open or refresh). Written as
    /// add + delete + add in the same transaction, so it neither fails when the element is
    /// missing nor keeps an older timeout on kernels that cannot update one in place.
    Put { elem: Elem, timeout: Duration },
    /// Make the element absent (revoke). Written as add + delete: never fails when the kernel
    /// already expired it.
    Remove { elem: Elem },
}

impl ElemOp {
    pub fn elem(&self) -> &Elem {
        match self {
            ElemOp::Put { elem, .. } | ElemOp::Remove { elem } => elem,
        }
    }
}

impl std::fmt::Display for ElemOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElemOp::Put { elem, timeout } => {
                write!(f, "nft put {elem} timeout {}ms", timeout.as_millis())
            }
            ElemOp::Remove { elem } => write!(f, "nft remove {elem}"),
        }
    }
}

/// Errors of the nftables backend; each names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft ({0}); install the nftables package (apt install nftables)")]
    Spawn(String),
    #[error("nft failed: {0}")]
    Nft(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error(
        "table inet {} is missing (removed by another program, for example nft flush ruleset)",
        table()
    )]
    NoTable,
    #[error("cannot read the kernel's set listing: {0}")]
    Listing(String),
}
