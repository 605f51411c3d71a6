//! `cargo fuzz run address`: see `quicpeer_fuzz::address` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::address(data));
