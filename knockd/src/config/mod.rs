//! knockd.conf: parsing (pure, [`parse()`]) and loading from disk ([`load`]).
//!
//! - [`model`]: the validated configuration types.
//! - `keys`: the key table (names, aliases, where each key may appear).
//! - `values`: value parsers ([`parse_sequence`], ports, flags, timeouts, names).
//! - [`parse()`]: knockd 0.8's grammar, line by line; every error names its line and the fix
//!   ([`ConfigError`]).
//! - `options`: the `[options]` keys' values.
//! - `validate`: door-level checks and the [`Warning`]s for dubious doors.
//! - [`load`]: reads the file and fills one-time-sequence doors from their files.
//! - `text`: bytes to text (non-UTF-8 comments accepted, other non-UTF-8 bytes reported by line).
//! - [`otp`]: One_Time_Sequences files (read the current sequence, mark one as used).
//! - [`totp`]: the sequences a rotating (TOTP) door accepts at a time step.

pub mod error;
mod keys;
mod load;
pub mod model;
pub mod otp;
// Private so that `config::parse` names only the function; everything is re-exported here.
mod options;
mod parse;
mod text;
pub mod totp;
mod validate;
mod values;
pub mod warn;

pub use error::{ConfigError, ConfigErrors};
pub use keys::names as key_names;
pub use load::{load, Loaded};
pub use model::*;
pub use otp::OtpError;
pub use parse::{parse, Parsed};
pub use values::{parse_sequence, MAX_CHAIN_NAME_LEN, MAX_TIMEOUT_SECS};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
pub use warn::{Warning, MAX_LOGGED_WARNINGS};
