//! Where a channel machine keeps what must survive a crash: the [`Store`] trait, the batches
//! it commits, and [`MemoryStore`].
//!
//! The machine keeps its working state in memory and writes every change to the store as one
//! [`Batch`] per call (group commit): everything accepted, delivered, enqueued and
//! acknowledged since the last commit, applied atomically. An implementation must make a
//! batch durable (or fail) before `commit` returns, and apply all of it or none of it; the
//! machine sends nothing that depends on a batch (no message it enqueued, no acknowledgement
//! of what it delivered) before the batch is committed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::PeerId;

/// One message: who accepted it first, its number there, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The peer that accepted it.
    pub origin: PeerId,
    /// Its number among the origin's messages, from 1.
    pub seq: u64,
    /// What it says.
    pub body: Bytes,
}

/// Everything a machine needs to start from a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The incarnation of the last start (0: never started).
    pub incarnation: u64,
    /// The number the next accepted message gets.
    pub next_seq: u64,
    /// Messages in the log.
    pub log_len: u64,
    /// Per origin, the highest `seq` delivered (every lower one was delivered too).
    pub delivered: BTreeMap<PeerId, u64>,
    /// Per remote peer, the highest incarnation it opened a channel with.
    pub peer_incarnations: BTreeMap<PeerId, u64>,
    /// Per remote peer, the messages not yet acknowledged, by `qseq`, ascending.
    pub outboxes: BTreeMap<PeerId, Vec<(u64, Entry)>>,
}

/// The changes of one group commit. Empty fields change nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// A new incarnation (at start).
    pub incarnation: Option<u64>,
    /// The next `seq` for our own messages.
    pub next_seq: Option<u64>,
    /// Messages appended to the log, in delivery order.
    pub log: Vec<Entry>,
    /// New delivered high-water marks, per origin.
    pub delivered: BTreeMap<PeerId, u64>,
    /// New incarnations seen, per remote peer.
    pub peer_incarnations: BTreeMap<PeerId, u64>,
    /// Messages added to outboxes: remote peer, `qseq`, message.
    pub enqueued: Vec<(PeerId, u64, Entry)>,
    /// Outbox entries acknowledged: per remote peer, every `qseq` up to this one is removed.
    pub acked: BTreeMap<PeerId, u64>,
}

impl Batch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.incarnation.is_none()
            && self.next_seq.is_none()
            && self.log.is_empty()
            && self.delivered.is_empty()
            && self.peer_incarnations.is_empty()
            && self.enqueued.is_empty()
            && self.acked.is_empty()
    }
}

/// Why a store could not be opened, read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another handle in this one) holds the store: stop that one first.
    #[error("store locked by another process")]
    Locked,
    /// The store's files are not a store, or are damaged: restore them from a backup. Nothing
    /// was written.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// An I/O error (disk full, permissions): the batch was not committed.
    #[error("store I/O failed: {0}")]
    Io(String),
    /// An earlier commit failed; the store refuses further batches until reopened, since the
    /// machine's memory is ahead of it.
    #[error("an earlier commit failed")]
    Poisoned,
}

/// Durable state of a channel machine. See the [module documentation](self).
pub trait Store {
    /// Reads everything the machine starts from.
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Applies `batch` atomically and durably: when it returns `Ok`, a crash loses none of it;
    /// when it returns `Err`, none of it was applied.
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError>;
    /// Up to `max` log entries from index `from` (the first message delivered is 0).
    fn read_log(&mut self, from: u64, max: usize) -> Result<Vec<Entry>, StoreError>;
}

#[derive(Debug, Default)]
struct MemoryInner {
    state: Snapshot,
    log: Vec<Entry>,
    commits: u64,
}

/// A store in memory, for tests and the simulator: clones share one store, so a machine
/// rebuilt from a clone (a simulated restart) finds what the dropped one committed.
/// "Durable" here means "survives the machine", not the process.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Batches committed so far: with group commit, far fewer than messages.
    pub fn commits(&self) -> u64 {
        self.lock().map(|i| i.commits).unwrap_or(0)
    }

    /// The whole log, in delivery order.
    pub fn log(&self) -> Vec<Entry> {
        self.lock().map(|i| i.log.clone()).unwrap_or_default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryInner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned)
    }
}

/// Applies a batch to a snapshot (and the log): the reference semantics every store follows.
pub(crate) fn apply(state: &mut Snapshot, log: &mut Vec<Entry>, batch: &Batch) {
    if let Some(incarnation) = batch.incarnation {
        state.incarnation = incarnation;
    }
    if let Some(next) = batch.next_seq {
        state.next_seq = next;
    }
    log.extend(batch.log.iter().cloned());
    state.log_len += batch.log.len() as u64;
    for (origin, seq) in &batch.delivered {
        state.delivered.insert(*origin, *seq);
    }
    for (peer, incarnation) in &batch.peer_incarnations {
        state.peer_incarnations.insert(*peer, *incarnation);
    }
    for (peer, qseq, entry) in &batch.enqueued {
        (state.outboxes.entry(*peer).or_default()).push((*qseq, entry.clone()));
    }
    for (peer, upto) in &batch.acked {
        if let Some(outbox) = state.outboxes.get_mut(peer) {
            outbox.retain(|(qseq, _)| qseq > upto);
        }
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(self.lock()?.state.clone())
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let MemoryInner {
            state,
            log,
            commits,
        } = &mut *inner;
        apply(state, log, batch);
        *commits += 1;
        Ok(())
    }

    fn read_log(&mut self, from: u64, max: usize) -> Result<Vec<Entry>, StoreError> {
        let inner = self.lock()?;
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(inner.log.iter().skip(from).take(max).cloned().collect())
    }
}
