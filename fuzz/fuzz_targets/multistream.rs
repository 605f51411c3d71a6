//! `cargo fuzz run multistream`: see `quicpeer_fuzz::multistream` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::multistream(data));
