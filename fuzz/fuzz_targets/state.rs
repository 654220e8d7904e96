#![no_main]
// Invariants: knock-fuzz/src/state.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| knock_fuzz::state::check(data));
