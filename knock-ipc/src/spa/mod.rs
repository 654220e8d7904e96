//! Single-packet authorization (SPA): the packet format and key files shared by knockd and
//! `knock --spa`. One implementation for both sides; fixed vectors (tests below) pin it, and a
//! test-only Python script (`knock-ipc/tests/spa_vectors.py`, libsodium through PyNaCl) checks
//! them against an independent implementation.
//!
//! - [`packet`]: the pure format: [`packet::seal`], [`packet::open`], [`packet::verify`].
//! - [`keys`]: the server key, a client's public record, a client's key file.
//!
//! The server's checks, cheapest first (each refusal is one [`Refusal`] counter):
//! length → hint lookup (a hash map of every enrolled client's hints of epochs e-2..=e+2) →
//! AEAD open → body epoch = hint epoch → clock window → replay memory → per-client and global
//! budget → Ed25519 signature → door policy → replay memory committed → grant.

pub mod keys;
pub mod packet;

#[cfg(test)]
mod tests;

pub use keys::{ClientKey, ClientRecord, ServerKey, SpaError};
pub use packet::{Body, DoorId, Op, SessionKeys, PACKET_LEN};

use serde::{Deserialize, Serialize};

/// Default UDP port of SPA packets.
pub const DEFAULT_PORT: u16 = 62201;

/// Why a packet did not open anything. Counted per reason; never logged per packet before
/// the AEAD has authenticated it. New variants go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    /// Not exactly [`PACKET_LEN`] bytes.
    Length,
    /// The hint is no enrolled client's for the current epochs (forged, too old, revoked).
    UnknownHint,
    /// The AEAD tag does not verify (changed, or a hint collision).
    Aead,
    /// A body field with no meaning.
    Malformed,
    /// The body's timestamp is not of the hint's epoch.
    Epoch,
    /// The timestamp is outside the clock window around the server's clock.
    Clock,
    /// Accepted before (or made before the start fence).
    Replay,
    /// The client's or the global signature budget is spent.
    Busy,
    /// The Ed25519 signature does not verify.
    Signature,
    /// No door lists the client (or the named door does not).
    NoDoor,
    /// The door's SPA_Address policy refuses the address asked for.
    Address,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::Length,
        Refusal::UnknownHint,
        Refusal::Aead,
        Refusal::Malformed,
        Refusal::Epoch,
        Refusal::Clock,
        Refusal::Replay,
        Refusal::Busy,
        Refusal::Signature,
        Refusal::NoDoor,
        Refusal::Address,
    ];

    /// Label in metrics and `knockctl` output.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Length => "length",
            Refusal::UnknownHint => "unknown_hint",
            Refusal::Aead => "aead",
            Refusal::Malformed => "malformed",
            Refusal::Epoch => "epoch",
            Refusal::Clock => "clock",
            Refusal::Replay => "replay",
            Refusal::Busy => "busy",
            Refusal::Signature => "signature",
            Refusal::NoDoor => "no_door",
            Refusal::Address => "address",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
