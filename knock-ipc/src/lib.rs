//! The wire protocol between knockd and knockctl.
//!
//! - [`protocol`]: the message types (plain serde structs and enums) and [`PROTOCOL_VERSION`].
//! - [`codec`]: the only place that encodes bytes: bincode 1.3.3 inside u32 length-prefixed
//!   frames, every frame's length checked against [`codec::MAX_FRAME`] before allocating.
//! - [`client`]: a reference async client (connect + handshake, request, subscribe).
//!
//! A connection starts with `ClientMsg::Hello`; the daemon answers `ServerMsg::Hello` or
//! `ServerMsg::Rejected` (version mismatch, permission). Then requests and responses
//! alternate, until the client subscribes: from then on the daemon only sends events.

pub mod client;
pub mod codec;
pub mod protocol;
pub mod spa;
pub mod totp;

pub use client::{connect_socket, BoxStream, Client, ClientError, Stream, Subscription};
pub use protocol::*;

/// Most grants (`Grants`) or attempts (`Attempts`) one answer lists, oldest first: what fits a
/// frame ([`codec::MAX_FRAME`]) with room to spare. Each answer also carries the total.
pub const LIST_CAP: usize = 5_000;

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/knockd/knockd.sock";
