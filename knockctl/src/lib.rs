//! Client-side tools: the `knock` client and the `knockctl` control CLI.

pub mod ctl;
pub mod fleet;
pub mod knock;
pub mod tui;
