//! The knockd.conf parser (`knockd::config::parse`) and the sequence grammar it shares with
//! one-time sequences files and `knock`.
//!
//! Input: config text (lossy UTF-8, as a non-UTF-8 file is an error before parsing).
//! Invariants: no panic; memory bounded by [`memory_limit`]; every error names a line of the
//! file (1..=lines+1, or 0 for the whole file) and a non-empty message; an accepted config has
//! doors whose sequences are 1..=32 knocks, ports non-zero.

use knockd::config::{parse, parse_sequence};

/// Peak bytes the parser may allocate for an input of `len` bytes: the config it builds is a
/// small multiple of the text (every door copies its strings once, plus errors quoting lines).
pub fn memory_limit(len: usize) -> usize {
    64 * len + (1 << 20)
}
/// Sequences a config may give a door (knockd 0.8's limit).
pub const MAX_SEQUENCE: usize = 32;

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    let result = crate::alloc::within("config::parse", memory_limit(data.len()), || {
        parse(&text, "fuzz.conf")
    });
    match result {
        Ok(parsed) => {
            for door in &parsed.config.doors {
                assert!(
                    door.line >= 1 && door.line <= lines,
                    "door {} at line {} of {lines}",
                    door.name,
                    door.line
                );
                if door.one_time_sequences.is_none() {
                    assert!(
                        (1..=MAX_SEQUENCE).contains(&door.sequence.len()),
                        "door {} has {} knocks",
                        door.name,
                        door.sequence.len()
                    );
                }
                assert!(door.sequence.iter().all(|s| s.port != 0), "port 0 accepted");
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error result without errors");
            for e in errors.iter() {
                assert!(
                    e.line <= lines + 1,
                    "error at line {} of {lines}: {e}",
                    e.line
                );
                assert!(!e.message.trim().is_empty(), "error without a message");
            }
        }
    }
    // The sequence grammar on its own (one line of a one-time sequences file, `Sequence =`).
    let first = text.lines().next().unwrap_or("");
    if let Ok(steps) = parse_sequence(first) {
        let again = steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            parse_sequence(&again).as_ref(),
            Ok(&steps),
            "sequence {first:?} rendered as {again:?} does not parse back"
        );
    }
}
