//! `cargo fuzz run ops`: see `quicpeer_fuzz::ops` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::ops(data));
