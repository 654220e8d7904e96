#![no_main]
// Invariants: knock-fuzz/src/knock_args.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| knock_fuzz::knock_args::check(data));
