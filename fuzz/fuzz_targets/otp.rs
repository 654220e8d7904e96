#![no_main]
// Invariants: knock-fuzz/src/otp.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| knock_fuzz::otp::check(data));
