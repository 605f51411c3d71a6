//! `cargo fuzz run datagram_tls`: see `quicpeer_fuzz::datagram_tls` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quicpeer_fuzz::datagram_tls(data));
