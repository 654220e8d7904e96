//! The one-time sequences reader (`knockd::config::otp::current_in`, what `read_current` runs on
//! the file's bytes).
//!
//! Invariants: no panic; memory bounded by [`memory_limit`]; a current sequence is 1..=32
//! knocks with non-zero ports, and is what the grammar gives for one line of the file.

use knockd::config::otp::current_in;
use knockd::config::parse_sequence;

/// Peak bytes for a file of `len` bytes (the sequence is a parsed copy of one line).
pub fn memory_limit(len: usize) -> usize {
    16 * len + 4096
}

pub fn check(data: &[u8]) {
    let current = crate::alloc::within("otp::current_in", memory_limit(data.len()), || {
        current_in(data)
    });
    if let Some(steps) = current {
        assert!(!steps.is_empty(), "an empty current sequence");
        assert!(steps.iter().all(|s| s.port != 0), "port 0 in {steps:?}");
        let line_matches = data.split(|b| *b == b'\n').any(|line| {
            std::str::from_utf8(line)
                .ok()
                .and_then(|l| parse_sequence(l.trim()).ok())
                .is_some_and(|s| s == steps)
        });
        assert!(line_matches, "{steps:?} is no line of the file");
    }
}
