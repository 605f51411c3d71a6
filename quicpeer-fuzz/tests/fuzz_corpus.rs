//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the library
//! function its fuzz target wraps, so a plain `cargo test` on stable Rust runs the seeds and
//! every regression input a fuzzer ever found. A panic is a failed invariant.
//!
//! To rebuild the seeds from fresh packets and certificates:
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpora`.

#[path = "../../quicpeer/tests/support/vectors.rs"]
#[allow(dead_code)]
mod vectors;

use std::path::{Path, PathBuf};

use quicpeer_fuzz::{self as fuzz, seeds};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The files of one target's corpus, sorted; the corpus must not be empty.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into();
            (name, std::fs::read(&path).expect("read corpus file"))
        })
        .collect()
}

fn replay(target: &str, run: fn(&[u8])) {
    for (name, data) in corpus(target) {
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{target} corpus file {name} failed");
    }
}

#[test]
fn certificate_corpus_replays() {
    replay("certificate", fuzz::certificate);
}

#[test]
fn datagram_corpus_replays() {
    replay("datagram", fuzz::datagram);
}

/// The same corpus on real TLS (the `datagram_tls` target shares it).
#[test]
fn datagram_corpus_replays_on_tls() {
    replay("datagram", fuzz::datagram_tls);
}

#[test]
fn frames_corpus_replays() {
    replay("frames", fuzz::frames);
}

/// The same corpus on real TLS (the `frames_tls` target shares it).
#[test]
fn frames_corpus_replays_on_tls() {
    replay("frames", fuzz::frames_tls);
}

#[test]
fn ops_corpus_replays() {
    replay("ops", fuzz::ops);
}

/// The same corpus on real TLS (the `ops_tls` target shares it).
#[test]
fn ops_corpus_replays_on_tls() {
    replay("ops", fuzz::ops_tls);
}

#[test]
fn host_corpus_replays() {
    replay("host", fuzz::host);
}

#[test]
fn multistream_corpus_replays() {
    replay("multistream", fuzz::multistream);
}

#[test]
fn relay_corpus_replays() {
    replay("relay", fuzz::relay);
}

#[test]
fn relay_server_corpus_replays() {
    replay("relay_server", fuzz::relay_server);
}

#[test]
fn federation_corpus_replays() {
    replay("federation", fuzz::federation);
}

#[test]
fn channel_corpus_replays() {
    replay("channel", fuzz::channel);
}

#[test]
fn address_corpus_replays() {
    replay("address", fuzz::address);
}

#[test]
fn peer_book_corpus_replays() {
    replay("peer_book", fuzz::peer_book);
}

fn spec_vectors() -> Vec<(String, Vec<u8>)> {
    vectors::load()
        .into_iter()
        .map(|v| (v.name, v.der))
        .collect()
}

#[test]
fn seeds_decode_to_what_was_encoded() {
    for seed in seeds::all(&spec_vectors()) {
        let again = match seed.target {
            "datagram" => seeds::encode_datagram(&fuzz::DatagramInput::decode(&seed.data)),
            "ops" => seeds::encode_ops(&fuzz::OpsInput::decode(&seed.data)),
            "host" => seeds::encode_host(&fuzz::HostInput::decode(&seed.data)),
            "relay_server" => seeds::encode_relay_server(&fuzz::RelayInput::decode(&seed.data)),
            "frames" => fuzz::FramesInput::decode(&seed.data).encode(),
            _ => continue,
        };
        assert_eq!(again, seed.data, "{} seed {}", seed.target, seed.name);
    }
}

#[test]
fn every_target_has_its_seeds_committed() {
    for seed in seeds::all(&spec_vectors()) {
        let path = corpus_dir(seed.target).join(&seed.name);
        assert!(
            path.is_file(),
            "missing seed {}: run `cargo test --test fuzz_corpus -- --ignored write_seed_corpora`",
            path.display()
        );
    }
}

/// Writes the seeds into `fuzz/corpus/` (run on purpose, see the module docs).
#[test]
#[ignore = "writes into the source tree"]
fn write_seed_corpora() {
    for seed in seeds::all(&spec_vectors()) {
        let dir = corpus_dir(seed.target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        std::fs::write(dir.join(&seed.name), &seed.data).expect("write a seed");
    }
}
