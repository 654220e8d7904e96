//! `knockctl tui`: a live operator dashboard for knockd.
//!
//! - [`state`]: everything on screen, changed only by pure functions with time as an input
//!   ([`State::on_event`], [`State::on_response`], [`State::on_tick`]); one file per pane
//!   (`state/attempts.rs`, `grants.rs`, `events.rs`, `doors.rs`) plus what they share.
//! - [`input`]: [`State::on_key`], keys to state changes and [`Command`]s.
//! - [`render`](mod@render): [`render()`], a pure function of the state and the time; one
//!   file per pane (`render/attempts.rs`, ...) plus layout, header, footer and popups.
//! - `app`: the edge: the terminal (`ratatui::try_init`/`restore`: restored on every exit
//!   path, panics included), the two connections to knockd (requests, events) with
//!   reconnect and backoff, the clock, and the one `select!` loop.
//!
//! Durations, clocks, escaping and labels come from [`crate::present`], shared with the
//! CLI.

mod app;
#[cfg(test)]
mod fixtures;
pub mod input;
pub mod render;
pub mod state;

pub use input::{Command, KEYS};
pub use render::render;
pub use state::State;

use std::path::Path;

/// Run the dashboard against the daemon's control socket until the operator quits.
///
/// Connection errors (socket missing, permission denied, version mismatch) are returned
/// before the terminal is touched; they downcast to [`knock_ipc::ClientError`].
pub async fn run(socket: &Path) -> anyhow::Result<()> {
    app::run(socket).await
}
