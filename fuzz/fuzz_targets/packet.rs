#![no_main]
// Invariants: knock-fuzz/src/packet.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| knock_fuzz::packet::check(data));
