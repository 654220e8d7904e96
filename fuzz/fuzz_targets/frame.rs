#![no_main]
// Invariants: knock-fuzz/src/frame.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| knock_fuzz::frame::check(data));
