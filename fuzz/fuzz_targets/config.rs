#![no_main]
// Invariants: knock-fuzz/src/config.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| knock_fuzz::config::check(data));
