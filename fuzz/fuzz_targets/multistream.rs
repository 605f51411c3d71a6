//! `cargo fuzz run multistream`: see `quicpeer::fuzz::multistream` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer::fuzz::multistream(data));
