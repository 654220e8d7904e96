//! The state file loader (`knockd::state::parse_all`, what `load_all` runs on the file's
//! text) and its writer (`knockd::state::render_all`): grants and the memory sections.
//!
//! Invariants: no panic; memory bounded by [`memory_limit`]; whatever loads, saves to a text
//! that loads back to the same grants (save/load round trip), and saving that again gives the
//! same text; no memory section holds more than `MAX_MEMORY_ENTRIES`.

use knockd::state::{parse_all as parse, render_all as render, MAX_MEMORY_ENTRIES};

/// Peak bytes for a file of `len` bytes (serde_json builds each grant once).
pub fn memory_limit(len: usize) -> usize {
    64 * len + (1 << 16)
}

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = crate::alloc::within("state::parse", memory_limit(data.len()), || parse(text));
    let Ok(grants) = loaded else {
        return;
    };
    assert!(
        grants.totp_replay.len() <= MAX_MEMORY_ENTRIES
            && grants.one_time_used.len() <= MAX_MEMORY_ENTRIES
    );
    let saved = match render(grants.clone()) {
        Ok(s) => s,
        Err(e) => panic!("loaded grants cannot be saved: {e}"),
    };
    let again = match parse(&saved) {
        Ok(g) => g,
        Err(e) => panic!("a saved state does not load: {e}\n{saved}"),
    };
    assert_eq!(again, grants, "save/load changed the grants");
    match render(again) {
        Ok(s) => assert_eq!(s, saved, "saving twice gives different texts"),
        Err(e) => panic!("cannot save twice: {e}"),
    }
}
