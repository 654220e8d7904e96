//! knockd: a port-knocking daemon compatible with knockd 0.8's configuration and logs.
//!
//! Pure cores (no I/O): [`config::parse()`], [`packet`], [`capture::filter`] (the capture
//! filter's text), [`matcher`] (attempts), [`grants`] (the grant ledger) and [`close`] (what closes a grant), [`fairstart`] (fair
//! start queues), [`ratelimit`], [`firewall::nftables`]'s `script` and `netlink` (nftables encodings).
//!
//! Effects at the edge: [`capture`] (the libpcap thread, its filter fitted by
//! [`capture::bpf`]), [`action`] (the `Executor` trait that runs commands), [`firewall`]
//! (iptables and nftables backends behind one trait), [`knocklog`] (log file / syslog) written
//! by [`logwriter`]'s thread, [`statewriter`] (the state file, see [`state`]), [`control`]
//! (the control socket), [`signals`], [`addrs`] (local addresses), [`privileges`].
//!
//! [`engine`] is the one task that owns all knock state, split into owners it routes
//! between; [`reload`] prepares a reload off it. [`serve`] runs the daemon (engine, socket,
//! capture) with its effects as parameters; [`daemon`] starts it from the command line
//! ([`cli`]), [`oneshot`] holds `knockd -t` and `--new-totp`.

pub mod action;
pub mod addrs;
pub mod capture;
pub mod check;
pub mod cli;
pub mod close;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod fairstart;
pub mod fdlimit;
pub mod firewall;
pub mod grants;
pub mod knocklog;
pub mod logwriter;
pub mod matcher;
pub mod oneshot;
pub mod packet;
pub mod privileges;
pub mod proc;
pub mod ratelimit;
pub mod reload;
pub mod safefile;
pub mod serve;
pub mod signals;
pub mod skew;
pub mod sockdir;
pub mod state;
pub mod statewriter;
