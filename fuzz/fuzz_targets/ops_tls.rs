//! `cargo fuzz run ops_tls`: see `quicpeer_fuzz::ops_tls` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::ops_tls(data));
