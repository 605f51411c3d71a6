//! `cargo fuzz run frames`: see `quicpeer_fuzz::frames` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::frames(data));
