//! `cargo fuzz run ops`: see `quicpeer::fuzz::ops` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer::fuzz::ops(data));
