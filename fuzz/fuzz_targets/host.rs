//! `cargo fuzz run host`: see `quicpeer_fuzz::host` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::host(data));
