//! `--peer-book FILE`: a node keeps its peer book on disk ([`quicpeer::book_file`]). At start the
//! book is read and its peers dialed; every connection made or lost rewrites the file (at most
//! once per [`SAVE_INTERVAL`], the rest coalesced), and so does a graceful exit.
//!
//! A book that cannot be used is reported and left as it is: the node starts without it and
//! does not write over it (it may be another node's book, a later version, or not a book at
//! all). Remove the file to start a new one.

use std::collections::hash_map::{Entry, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use quicpeer::{Event, HostEvent, Manager, PeerId, PeerRecord};

use crate::output::{Json, Output};
use quicpeer::book_file as peer_book;

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
    dial_shares(&mut [(manager, now)], keeper, records, out);
}

/// Dials the peers of a loaded book from several managers (the shards of one node): each takes
/// every n-th record, most recent first, and the dials at start ([`DIAL_AT_START`]) are split
/// between them. Says how many in one line.
pub fn dial_shares(
    shards: &mut [(&mut Manager, Instant)],
    keeper: Option<&BookKeeper>,
    records: Vec<PeerRecord>,
    out: &Output,
) {
    let Some(keeper) = keeper else {
        return;
    };
    let peers = records.len();
    let n = shards.len().max(1);
    let mut dialing = 0;
    for (i, (manager, now)) in shards.iter_mut().enumerate() {
        let share: Vec<_> = records.iter().skip(i).step_by(n).cloned().collect();
        let at_start = DIAL_AT_START / n + usize::from(i < DIAL_AT_START % n);
        dialing += manager.dial_peer_book(*now, share, at_start);
    }
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
        self.save_if_due_with(now, || manager.peer_book());
    }

    /// As [`save_if_due`](Self::save_if_due), with the book's records from `records`.
    fn save_if_due_with(&mut self, now: Instant, records: impl FnOnce() -> Vec<PeerRecord>) {
        if self.pending && self.last_save.is_none_or(|t| now >= t + SAVE_INTERVAL) {
            self.save_records(now, &records());
        }
    }

    /// Writes the book now (at a graceful exit).
    pub fn save(&mut self, now: Instant, manager: &Manager) {
        self.save_records(now, &manager.peer_book());
    }

    /// Writes these records as the book now.
    pub fn save_records(&mut self, now: Instant, records: &[PeerRecord]) {
        self.pending = false;
        self.last_save = Some(now);
        if let Err(e) = peer_book::write(&self.path, self.local, records) {
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
/// The books of several managers (the shards of one node) as one: the most recent record of
/// each peer, most recent first, within the book's bound ([`peer_book::max_records`]).
pub fn merge(books: impl IntoIterator<Item = Vec<PeerRecord>>) -> Vec<PeerRecord> {
    let mut newest: HashMap<PeerId, PeerRecord> = HashMap::new();
    for record in books.into_iter().flatten() {
        match newest.entry(record.peer) {
            Entry::Occupied(mut kept) if kept.get().last_seen < record.last_seen => {
                kept.insert(record);
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) => {
                slot.insert(record);
            }
        }
    }
    let mut records: Vec<_> = newest.into_values().collect();
    records.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.peer.cmp(&b.peer)));
    records.truncate(peer_book::max_records());
    records
}

/// One node's book kept by several shards, each on a thread of its own. A shard that sees a
/// connection made or lost only marks its book stale ([`ShardedBook::changed`]: nothing is
/// copied on the event's path); at most once per [`SAVE_INTERVAL`] the node's loop has each
/// stale shard hand over its book on its own thread ([`ShardedBook::refresh`]), and the file
/// is written with the books as last handed over, merged ([`merge`]), at most once per interval.
#[derive(Debug, Clone)]
pub struct ShardedBook(Arc<Mutex<SharedBook>>);

#[derive(Debug)]
struct SharedBook {
    keeper: BookKeeper,
    /// Each shard's book as it last handed it over.
    shards: Vec<Vec<PeerRecord>>,
    /// Shards whose book changed since.
    stale: Vec<bool>,
}

impl SharedBook {
    /// Writes the merged book if a change waits and the interval has passed. A shard whose
    /// book changed again since it handed it over keeps a change waiting, so that its newer
    /// book is written at a later turn (under constant churn the file still moves once per
    /// interval, never waiting for every shard to be current at once).
    fn save_if_due(&mut self, now: Instant) {
        let shards = &self.shards;
        (self.keeper).save_if_due_with(now, || merge(shards.iter().cloned()));
        if self.stale.iter().any(|s| *s) {
            self.keeper.pending = true;
        }
    }
}

impl ShardedBook {
    /// A book kept by `shards` shards.
    pub fn new(keeper: BookKeeper, shards: usize) -> Self {
        Self(Arc::new(Mutex::new(SharedBook {
            keeper,
            shards: vec![Vec::new(); shards],
            stale: vec![false; shards],
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedBook> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Shard `shard`'s book changed (see [`BookKeeper::changes`]).
    pub fn changed(&self, shard: usize) {
        let mut book = self.lock();
        if let Some(stale) = book.stale.get_mut(shard) {
            *stale = true;
        }
        book.keeper.pending = true;
    }

    /// The shards whose book changed since they last handed it over; the node's loop asks them
    /// for it ([`refresh`](Self::refresh)) once per [`SAVE_INTERVAL`].
    pub fn stale(&self) -> Vec<usize> {
        let book = self.lock();
        (book.stale.iter().enumerate())
            .filter_map(|(shard, stale)| stale.then_some(shard))
            .collect()
    }

    /// Shard `shard` hands over its book (on its own thread); the file is written if due.
    pub fn refresh(&self, shard: usize, now: Instant, manager: &Manager) {
        let records = manager.peer_book();
        let mut guard = self.lock();
        let book = &mut *guard;
        if let (Some(slot), Some(stale)) = (book.shards.get_mut(shard), book.stale.get_mut(shard)) {
            *slot = records;
            *stale = false;
        }
        book.save_if_due(now);
    }

    /// Writes a change that waited for the interval, if it is due now (the node's loop calls it
    /// once per [`SAVE_INTERVAL`], after asking the stale shards for their books).
    pub fn tick(&self, now: Instant) {
        self.lock().save_if_due(now);
    }

    /// Writes the shards' final books now (at a graceful exit).
    pub fn save(&self, now: Instant, managers: &[&Manager]) {
        let records = merge(managers.iter().map(|m| m.peer_book()));
        self.lock().keeper.save_records(now, &records);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime};

    use quicpeer::{Direction, Identity, PeerRecord};

    use super::merge;

    fn record(seed: u8, secs: u64) -> PeerRecord {
        let peer = Identity::from_ed25519_seed([seed; 32]).peer_id();
        let addr = SocketAddr::from(([127, 0, 0, 1], 4000 + u16::from(seed)));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        PeerRecord::new(peer, vec![addr], Direction::Inbound, at)
    }

    #[test]
    fn merged_shard_books_keep_each_peers_newest_record_newest_first() {
        let shard0 = vec![record(1, 10), record(2, 30)];
        let shard1 = vec![record(2, 20), record(3, 40)];
        let merged = merge([shard0, shard1]);
        let got: Vec<_> = merged.iter().map(|r| (r.peer, r.last_seen)).collect();
        let want: Vec<_> = [record(3, 40), record(2, 30), record(1, 10)]
            .iter()
            .map(|r| (r.peer, r.last_seen))
            .collect();
        assert_eq!(got, want);
        assert!(merge(Vec::<Vec<PeerRecord>>::new()).is_empty());
    }
}
