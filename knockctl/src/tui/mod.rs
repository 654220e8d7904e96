//! `knockctl tui`: a live operator dashboard for knockd.
//!
//! - [`state`]: everything on screen, changed only by pure functions with time as an input
//!   ([`State::host_event`], [`State::host_response`], [`State::on_tick`]); one file per pane
//!   (`state/attempts.rs`, `grants.rs`, `events.rs`, `doors.rs`) plus what they share.
//! - [`input`]: [`State::on_key`], keys to state changes and [`Command`]s.
//! - [`render`](mod@render): [`render()`], a pure function of the state and the time; one
//!   file per pane (`render/attempts.rs`, ...) plus layout, header, footer and popups.
//! - `link`: one task per host: its two connections to knockd (requests, events) through
//!   [`crate::fleet`]'s connectors (local socket or ssh), refreshes, commands, reconnect
//!   with backoff; it reports on a channel, so no host ever holds up the screen.
//! - `app`: the edge: the terminal (`ratatui::try_init`/`restore`: restored on every exit
//!   path, panics included), the host tasks, the clock, and the one `select!` loop.
//!
//! With one host the dashboard is that host's; with many (`-H`, `--hosts`) every pane has
//! a HOST column, the header a line per host, and the event log merges them by time.
//!
//! Durations, clocks, escaping and labels come from [`crate::present`], shared with the
//! CLI.

mod app;
#[cfg(test)]
mod fixtures;
pub mod input;
pub mod link;
pub mod render;
pub mod state;

pub use input::{Command, KEYS};
pub use render::render;
pub use state::State;

use std::path::Path;
use std::time::Duration;

use crate::fleet::Host;

/// Runs the dashboard over `hosts` until the operator quits; `ssh` is the ssh program for
/// ssh targets, `timeout` how long a host gets to connect.
///
/// With one host, connection errors (socket missing, permission denied, version mismatch)
/// are returned before the terminal is touched; they downcast to
/// [`knock_ipc::ClientError`], or to [`crate::fleet::HostError`] for ssh's own errors. With
/// many, a host that cannot be reached is shown as such and retried.
pub async fn run(hosts: &[Host], ssh: &Path, timeout: Duration) -> anyhow::Result<()> {
    app::run(hosts, ssh, timeout).await
}
