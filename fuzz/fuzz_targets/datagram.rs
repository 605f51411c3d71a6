//! `cargo fuzz run datagram`: see `quicpeer_fuzz::datagram` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::datagram(data));
