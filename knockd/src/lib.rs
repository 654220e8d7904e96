//! knockd: a port-knocking daemon compatible with knockd 0.8's configuration and logs.
//!
//! Pure cores (no I/O): [`config::parse()`], [`packet`], [`filter`], [`matcher`], [`grants`].
//! Effects at the edge: [`capture`] (libpcap thread), [`action`] (the `Executor` trait that runs
//! commands and iptables), [`knocklog`] (log file / syslog) written by
//! [`logwriter`]'s thread, [`daemon`] and [`signals`].
//! [`engine`] is the one task that owns all knock state.

pub mod action;
pub mod addrs;
pub mod bpf;
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
pub mod filter;
pub mod firewall;
pub mod grants;
pub mod knocklog;
pub mod logwriter;
pub mod matcher;
pub mod pacer;
pub mod packet;
pub mod proc;
pub mod ratelimit;
pub mod reload;
pub mod safefile;
pub mod signals;
pub mod skew;
pub mod sockdir;
pub mod state;
pub mod statewriter;
