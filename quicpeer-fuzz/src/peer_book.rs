//! The `peer_book` target: bytes read as a peer book file, into [`quicpeer::book_file`].
//!
//! A peer book is the first thing a restarted node reads, from a disk that may hold anything: a
//! file cut short by a crash, another build's version, another tool's JSON, plain corruption.
//! Input: the file's bytes, read as the book of a fixed node (the seeds are that node's books).
//! Checks: parsing ends in records or a typed [`ReadError`] that displays and names its kind,
//! never a panic; what parses is within the format's bounds (records, addresses per record);
//! and a book written from those records reads back as the same records.

use std::sync::OnceLock;

use quicpeer::book_file::{encode, max_records, parse, ReadError, MAX_ADDRS};
use quicpeer::{Identity, PeerId};

/// The node whose book the input is read as.
pub fn book_owner() -> PeerId {
    static OWNER: OnceLock<PeerId> = OnceLock::new();
    *OWNER.get_or_init(|| Identity::from_ed25519_seed([1; 32]).peer_id())
}

/// The target's body.
pub fn peer_book(data: &[u8]) {
    let owner = book_owner();
    let records = match parse(data, owner) {
        Ok(records) => records,
        Err(error) => {
            // Every refusal is typed, displays, and has a stable kind.
            let kind: &str = ReadError::kind(&error);
            assert!(!kind.is_empty(), "invariant: a read error names its kind");
            let _ = error.to_string();
            return;
        }
    };
    assert!(
        records.len() <= max_records(),
        "invariant: a book of {} records parsed (bound {})",
        records.len(),
        max_records()
    );
    for record in &records {
        assert!(
            record.addrs.len() <= MAX_ADDRS,
            "invariant: a record with {} addresses parsed",
            record.addrs.len()
        );
    }
    let written = match encode(owner, &records) {
        Ok(bytes) => bytes,
        Err(error) => panic!("invariant: parsed records cannot be written: {error}"),
    };
    match parse(&written, owner) {
        Ok(again) => assert_eq!(again, records, "invariant: a written book reads back"),
        Err(error) => panic!("invariant: a written book does not read back: {error}"),
    }
}
