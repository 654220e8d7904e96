//! knockd.conf: parsing (pure, [`parse()`]) and loading from disk ([`load`]).
//!
//! - [`model`]: the validated configuration types.
//! - [`parse()`], [`parse_sequence`], [`load`]: knockd 0.8's grammar; every error names its
//!   line and the fix ([`ConfigError`]), dubious settings become [`Warning`]s.
//! - [`otp`]: One_Time_Sequences files (read the current sequence, mark one as used).

pub mod error;
pub mod model;
pub mod otp;
// Private so that `config::parse` names only the function; everything is re-exported here.
mod parse;
pub mod warn;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use otp::OtpError;
pub use parse::{load, parse, parse_sequence, Parsed, MAX_CHAIN_NAME_LEN, MAX_TIMEOUT_SECS};
pub use warn::Warning;
