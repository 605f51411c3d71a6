//! `cargo fuzz run relay`: see `quicpeer_fuzz::relay` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::relay(data));
