//! `cargo fuzz run datagram`: see `quicpeer::fuzz::datagram` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer::fuzz::datagram(data));
