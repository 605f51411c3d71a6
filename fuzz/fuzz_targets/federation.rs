//! `cargo fuzz run federation`: see `quicpeer_fuzz::federation` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::federation(data));
