//! What knockctl's two faces share: the CLI tables ([`crate::ctl::output`]) and the
//! dashboard ([`crate::tui`]) show the same values the same way. Pure functions, no I/O, no
//! clock reads (time and time zone are inputs).
//!
//! - [`time`]: durations (`4m03s`, `12.3s`), time left, wall-clock instants.
//! - [`text`]: escaping of daemon-supplied text ([`visible`]) and widths in terminal columns.
//! - [`labels`]: how a door's sequence, a grant's closing and a failed revoke read.
//! - [`table`]: column layout for the CLI tables (wrapping, or one line per row).
//! - [`fit`]: column layout for the TUI's panes (content widths, `…` where cut).

pub mod fit;
pub mod labels;
pub mod table;
pub mod text;
pub mod time;

pub use labels::{
    closes_by, door_sequence, door_sequence_short, no_grant_message, protocols, state_file_health,
};
pub use text::{text_width, visible};
pub use time::{
    format_clock, format_duration_ms, format_duration_secs, format_remaining, format_time_of_day,
};
