//! knockd: a port-knocking daemon compatible with knockd 0.8's configuration and logs.
//!
//! Pure cores (no I/O): [`config::parse`], [`packet`], [`filter`], [`matcher`].
//! Effects behind small traits: capture, firewall/commands, clock (tokio time), filesystem.

pub mod config;
pub mod filter;
pub mod matcher;
pub mod packet;
