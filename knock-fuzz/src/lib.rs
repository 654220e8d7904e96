//! Fuzz invariants for everything knockd and its clients read from someone else.
//!
//! Each module is one input decoder and one `check(data: &[u8])` function that panics when an
//! invariant breaks: never a panic inside the decoder, never an allocation beyond the limit
//! documented next to the decoder, and a round trip wherever a writer exists.
//!
//! The same functions run under libFuzzer (`fuzz/fuzz_targets/*.rs`, driven by
//! `scripts/fuzz.sh`) and in `cargo test` (`tests/replay.rs` replays every committed seed and
//! regression input under `fuzz/`).
//!
//! | target | input | invariants |
//! | --- | --- | --- |
//! | [`packet`] | link-type byte + captured frame | no panic, no allocation, framing-independent |
//! | [`config`] | knockd.conf text | no panic, errors located, bounded memory |
//! | [`frame`] | bytes from a control-socket peer | length limit, bounded memory, encode/decode round trip |
//! | [`state`] | state file text | no panic, save/load round trip |
//! | [`otp`] | one-time sequences file | no panic, result is a valid sequence |
//! | [`knock_args`] | NUL-separated argv of `knock` | no panic, port specs round trip |
//! | [`spa`] | SPA packet, body or key file | no panic, no allocation, every change of a valid packet refused, round trips |

pub mod alloc;
pub mod config;
pub mod frame;
pub mod knock_args;
pub mod otp;
pub mod packet;
pub mod spa;
pub mod state;

/// A target's check: panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every target by name, as `scripts/fuzz.sh` and the replay test know them.
pub const TARGETS: &[(&str, Check)] = &[
    ("packet", packet::check),
    ("config", config::check),
    ("frame", frame::check),
    ("state", state::check),
    ("otp", otp::check),
    ("knock_args", knock_args::check),
    ("spa", spa::check),
];
