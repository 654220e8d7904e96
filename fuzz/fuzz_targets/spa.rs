#![no_main]
// Invariants: knock-fuzz/src/spa.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| knock_fuzz::spa::check(data));
