//! `cargo fuzz run channel`: see `quicpeer_fuzz::channel` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::channel(data));
