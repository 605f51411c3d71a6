//! `cargo fuzz run relay_server`: see `quicpeer_fuzz::relay_server` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::relay_server(data));
