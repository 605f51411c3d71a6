//! `cargo fuzz run peer_book`: see `quicpeer_fuzz::peer_book` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::peer_book(data));
