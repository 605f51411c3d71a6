//! `--peer-book FILE`: a node keeps its peer book on disk ([`crate::peer_book`]). At start the
//! book is read and its peers dialed; every connection made or lost rewrites the file (at most
//! once per [`SAVE_INTERVAL`], the rest coalesced), and so does a graceful exit.
//!
//! A book that cannot be used is reported and left as it is: the node starts without it and
//! does not write over it (it may be another node's book, a later version, or not a book at
//! all). Remove the file to start a new one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quicpeer::{Event, HostEvent, Manager, PeerId, PeerRecord};

use crate::output::{Json, Output};
use crate::peer_book;

/// The least time between two writes of the book: a churn of connections costs one write (and
/// one `fsync`) per interval, not one per event.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// How many of the book's peers are dialed at start (the most recently seen first).
pub const DIAL_AT_START: usize = 1024;

/// Where the node's peer book is kept, if anywhere.
#[derive(Debug, clap::Args)]
pub struct PeerBookArgs {
    /// Keep the node's peer book in FILE (JSON; created if missing): at start its recent peers
    /// are dialed, so that those still connected to the previous process switch to this one at
    /// once; it is rewritten as connections come and go.
    #[arg(long, value_name = "FILE")]
    peer_book: Option<PathBuf>,
}

impl PeerBookArgs {
    /// Whether `--peer-book` was given.
    pub fn is_set(&self) -> bool {
        self.peer_book.is_some()
    }

    /// Reads the book of `local`: the keeper that saves it, and the records to dial. Without
    /// `--peer-book`, or with a book that cannot be used (reported on stderr and, with `--json`,
    /// as a `peer_book_error` line), there is no keeper and nothing to dial.
    pub fn load(&self, local: PeerId, out: &Output) -> (Option<BookKeeper>, Vec<PeerRecord>) {
        let Some(path) = &self.peer_book else {
            return (None, Vec::new());
        };
        match peer_book::read(path, local, peer_book::MAX_BYTES) {
            Ok(records) => (Some(BookKeeper::new(path.clone(), local)), records),
            Err(error) => {
                eprintln!(
                    "warning: peer book {}: {error}; starting without it (the file is left as it is)",
                    path.display()
                );
                out.json(
                    Instant::now(),
                    Json::event("peer_book_error")
                        .str("path", &path.display().to_string())
                        .str("error", error.kind())
                        .str("detail", &error.to_string()),
                );
                (None, Vec::new())
            }
        }
    }
}

/// Dials the peers of a loaded book and says how many.
pub fn dial(
    manager: &mut Manager,
    now: Instant,
    keeper: Option<&BookKeeper>,
    records: Vec<PeerRecord>,
    out: &Output,
) {
    let Some(keeper) = keeper else {
        return;
    };
    let peers = records.len();
    let dialing = manager.dial_peer_book(now, records, DIAL_AT_START);
    let path = keeper.path().display().to_string();
    out.emit(
        Instant::now(),
        Json::event("peer_book")
            .str("path", &path)
            .int("peers", peers as u64)
            .int("dialing", dialing as u64),
        || format!("PEER BOOK {path}: dialing {dialing} of {peers} peer(s)"),
    );
}

/// Writes the manager's peer book to its file when connections change.
#[derive(Debug)]
pub struct BookKeeper {
    path: PathBuf,
    local: PeerId,
    /// A change not written yet.
    pending: bool,
    last_save: Option<Instant>,
    /// A write failed (said once on stderr).
    failed: bool,
}

impl BookKeeper {
    fn new(path: PathBuf, local: PeerId) -> Self {
        Self {
            path,
            local,
            pending: false,
            last_save: None,
            failed: false,
        }
    }

    /// The book's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `event` changes the book: a connection made or lost.
    pub fn changes(event: &HostEvent) -> bool {
        matches!(
            event,
            HostEvent::Manager(Event::Connected { .. } | Event::ConnectionLost { .. })
        )
    }

    /// Notes a change of the book, which is written at once unless it was written less than
    /// [`SAVE_INTERVAL`] ago (then at [`BookKeeper::due`]).
    pub fn changed(&mut self, now: Instant, manager: &Manager) {
        self.pending = true;
        self.save_if_due(now, manager);
    }

    /// When a change waits to be written: the driver should wake up then and call
    /// [`BookKeeper::save_if_due`].
    pub fn due(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        self.last_save.map(|t| t + SAVE_INTERVAL)
    }

    /// Writes a waiting change if the interval since the last write has passed.
    pub fn save_if_due(&mut self, now: Instant, manager: &Manager) {
        if self.pending && self.last_save.is_none_or(|t| now >= t + SAVE_INTERVAL) {
            self.save(now, manager);
        }
    }

    /// Writes the book now (at a graceful exit).
    pub fn save(&mut self, now: Instant, manager: &Manager) {
        self.pending = false;
        self.last_save = Some(now);
        let records = manager.peer_book();
        if let Err(e) = peer_book::write(&self.path, self.local, &records) {
            if !std::mem::replace(&mut self.failed, true) {
                eprintln!(
                    "warning: cannot write the peer book {}: {e} (the node carries on; this is \
                     said once)",
                    self.path.display()
                );
            }
        }
    }
}
