//! `cargo fuzz run frames_tls`: see `quicpeer_fuzz::frames_tls` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::frames_tls(data));
