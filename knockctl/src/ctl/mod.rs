//! `knockctl`: inspect and control a running knockd over its control socket.
//!
//! - [`cli`]: the clap definition ([`Args`]), also the source of the man page.
//! - [`metrics`]: counters and gauges in the Prometheus text format (`knockctl metrics`).
//! - [`output`]: pure formatting of each answer for people, built on [`crate::present`].
//! - [`run`](mod@run): connect, ask, print; follow the event stream; exit codes.

pub mod cli;
pub mod metrics;
pub mod output;
pub mod run;

pub use cli::{Args, Command, EXAMPLES};
pub use run::{render, request_for, run, CtlError, Reply};
