//! Helpers for end-to-end tests: real daemons and clients in throwaway network namespaces.
//!
//! A [`Lab`] is two fresh network namespaces, a server and a client, joined by a veth pair
//! (`kv0` in the server, `kv1` in the client) with fixed addresses ([`SRV_V4`], [`CLI_V4`],
//! [`SRV_V6`], [`CLI_V6`]). The namespaces are private, so every lab uses the same addresses
//! and tests can run in parallel. Dropping the lab kills every process it started (by PID) and
//! deletes both namespaces, also when the test panics; nothing touches the host's network.
//!
//! ```no_run
//! use std::time::Duration;
//! use knock_e2e::{bin, require_root, wait_until, Lab, SRV_IF, SRV_V4};
//!
//! if !require_root() {
//!     return;
//! }
//! let lab = Lab::new();
//! let conf = lab.write_file("knockd.conf", "[door]\n sequence = 7000,8000\n command = true\n");
//! let knockd = lab.spawn_srv([bin("knockd").as_os_str(), "-i".as_ref(), SRV_IF.as_ref(),
//!                             "-c".as_ref(), conf.as_os_str()]);
//! assert!(knockd.wait_for_log("listening", Duration::from_secs(5)), "{}", knockd.log_text());
//! let out = lab.cli_exec([bin("knock").as_os_str(), SRV_V4.as_ref(), "7000".as_ref(), "8000".as_ref()]);
//! assert!(out.status.success());
//! assert!(wait_until(Duration::from_secs(5), || lab.iptables_rules(false).contains("ACCEPT")));
//! ```
//!
//! Root-only tests start with `if !require_root() { return; }`: outside CI that prints a loud
//! SKIPPED line; with `CI=true` a missing privilege is a failure.

mod bins;
pub mod fleet;
pub mod knockd;
mod netns;
mod process;
mod root;
pub mod spoof6;
pub mod traffic;
mod wait;

pub use bins::{bin, debian_bin, DEBIAN_KNOCK, DEBIAN_KNOCKD};
pub use netns::{untag, Lab, CLI_IF, CLI_V4, CLI_V6, SRV_IF, SRV_V4, SRV_V6};
pub use process::Daemon;
pub use root::require_root;
pub use wait::{load_average, read_text, wait_for_text, wait_until, POLL};
