//! `cargo fuzz run certificate`: see `quicpeer_fuzz::certificate` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::certificate(data));
