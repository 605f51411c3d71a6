//! [`RedbStore`]: the on-disk [`Store`], one [redb](https://docs.rs/redb) file per node
//! (feature `store-redb`).
//!
//! redb is a pure-Rust embedded key-value store with ACID write transactions, copy-on-write
//! B-trees with checksums, and explicit durability: one [`Store::commit`] is one write
//! transaction committed with `Durability::Immediate` (flushed to disk before it returns), so
//! a group commit costs one flush however many messages it holds. A crash (`kill -9`, power
//! loss) leaves the file at the last committed transaction. The file is locked while open
//! (`flock`), so a second process that opens the same store gets [`StoreError::Locked`]
//! instead of corrupting it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::store::{Batch, Entry, Snapshot, Store, StoreError};
use crate::PeerId;

/// The file inside the store's directory.
pub const FILE_NAME: &str = "channel.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DELIVERED: TableDefinition<&[u8], u64> = TableDefinition::new("delivered");
const PEER_INCARNATIONS: TableDefinition<&[u8], u64> = TableDefinition::new("peer_incarnations");
const OUTBOX: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("outbox");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// A [`Store`] in a redb file. See the [module documentation](self).
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn io(error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(error.to_string())
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

fn storage(error: redb::StorageError) -> StoreError {
    match error {
        redb::StorageError::Corrupted(what) => StoreError::Corrupt(what),
        // redb reports a file that is not one of its own (bad magic, bad header) this way.
        redb::StorageError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => corrupt(e),
        redb::StorageError::Io(e) => io(e),
        other => io(other),
    }
}

/// Most redb errors are storage errors underneath.
fn any(error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Corrupted(what) => StoreError::Corrupt(what),
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => corrupt(e),
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
        redb::Error::UpgradeRequired(v) => corrupt(format!("file format {v}")),
        redb::Error::TableTypeMismatch { .. } | redb::Error::TableIsMultimap(_) => {
            corrupt("tables of another shape")
        }
        other => io(other),
    }
}

fn encode_entry(entry: &Entry) -> Vec<u8> {
    let origin = entry.origin.to_bytes();
    let mut out = Vec::with_capacity(1 + origin.len() + 8 + entry.body.len());
    // A PeerId is at most 64 bytes (codec.rs), so its length fits a byte.
    out.push(origin.len() as u8);
    out.extend_from_slice(&origin);
    out.extend_from_slice(&entry.seq.to_be_bytes());
    out.extend_from_slice(&entry.body);
    out
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    let (&len, rest) = bytes.split_first().ok_or_else(|| corrupt("empty entry"))?;
    let len = len as usize;
    if rest.len() < len + 8 {
        return Err(corrupt("short entry"));
    }
    let origin = PeerId::from_bytes(&rest[..len]).map_err(|_| corrupt("bad origin"))?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&rest[len..len + 8]);
    Ok(Entry {
        origin,
        seq: u64::from_be_bytes(seq),
        body: Bytes::copy_from_slice(&rest[len + 8..]),
    })
}

fn peer(bytes: &[u8]) -> Result<PeerId, StoreError> {
    PeerId::from_bytes(bytes).map_err(|_| corrupt("bad PeerId key"))
}

impl RedbStore {
    /// Opens the store in directory `dir` (creating both if missing). Errors:
    /// [`StoreError::Locked`] if another process has it open, [`StoreError::Corrupt`] if the
    /// file is not a store, [`StoreError::Io`] otherwise.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            redb::DatabaseError::Storage(e) => storage(e),
            other => any(other),
        })?;
        // Create every table, so that readers find them.
        let txn = db.begin_write().map_err(any)?;
        {
            txn.open_table(META).map_err(any)?;
            txn.open_table(DELIVERED).map_err(any)?;
            txn.open_table(PEER_INCARNATIONS).map_err(any)?;
            txn.open_table(OUTBOX).map_err(any)?;
            txn.open_table(LOG).map_err(any)?;
        }
        txn.commit().map_err(any)?;
        Ok(Self { db, path })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for RedbStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(any)?;
        let meta = txn.open_table(META).map_err(any)?;
        let get = |key: &str| -> Result<u64, StoreError> {
            Ok(meta.get(key).map_err(any)?.map_or(0, |v| v.value()))
        };
        let mut snapshot = Snapshot {
            incarnation: get("incarnation")?,
            next_seq: get("next_seq")?,
            log_len: get("log_len")?,
            ..Snapshot::default()
        };
        for row in txn
            .open_table(DELIVERED)
            .map_err(any)?
            .iter()
            .map_err(any)?
        {
            let (k, v) = row.map_err(any)?;
            snapshot.delivered.insert(peer(k.value())?, v.value());
        }
        for row in (txn.open_table(PEER_INCARNATIONS).map_err(any)?)
            .iter()
            .map_err(any)?
        {
            let (k, v) = row.map_err(any)?;
            snapshot
                .peer_incarnations
                .insert(peer(k.value())?, v.value());
        }
        for row in txn.open_table(OUTBOX).map_err(any)?.iter().map_err(any)? {
            let (k, v) = row.map_err(any)?;
            let (p, qseq) = k.value();
            let entry = decode_entry(v.value())?;
            (snapshot.outboxes.entry(peer(p)?).or_default()).push((qseq, entry));
        }
        Ok(snapshot)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(any)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut meta = txn.open_table(META).map_err(any)?;
            if let Some(incarnation) = batch.incarnation {
                meta.insert("incarnation", incarnation).map_err(any)?;
            }
            if let Some(next) = batch.next_seq {
                meta.insert("next_seq", next).map_err(any)?;
            }
            if !batch.log.is_empty() {
                let len = meta.get("log_len").map_err(any)?.map_or(0, |v| v.value());
                let mut log = txn.open_table(LOG).map_err(any)?;
                for (i, entry) in batch.log.iter().enumerate() {
                    log.insert(len + i as u64, encode_entry(entry).as_slice())
                        .map_err(any)?;
                }
                meta.insert("log_len", len + batch.log.len() as u64)
                    .map_err(any)?;
            }
            let mut delivered = txn.open_table(DELIVERED).map_err(any)?;
            for (origin, seq) in &batch.delivered {
                delivered
                    .insert(origin.to_bytes().as_slice(), *seq)
                    .map_err(any)?;
            }
            let mut incarnations = txn.open_table(PEER_INCARNATIONS).map_err(any)?;
            for (p, incarnation) in &batch.peer_incarnations {
                incarnations
                    .insert(p.to_bytes().as_slice(), *incarnation)
                    .map_err(any)?;
            }
            let mut outbox = txn.open_table(OUTBOX).map_err(any)?;
            for (p, qseq, entry) in &batch.enqueued {
                let key = p.to_bytes();
                outbox
                    .insert((key.as_slice(), *qseq), encode_entry(entry).as_slice())
                    .map_err(any)?;
            }
            for (p, upto) in &batch.acked {
                let key = p.to_bytes();
                let range = (key.as_slice(), 0u64)..=(key.as_slice(), *upto);
                outbox.retain_in(range, |_, _| false).map_err(any)?;
            }
        }
        txn.commit().map_err(any)
    }

    fn read_log(&mut self, from: u64, max: usize) -> Result<Vec<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(any)?;
        let log = txn.open_table(LOG).map_err(any)?;
        let mut out = Vec::new();
        for row in log.range(from..).map_err(any)?.take(max) {
            let (_, v) = row.map_err(any)?;
            out.push(decode_entry(v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("quicpeer-redb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn entry(seed: u8, seq: u64) -> Entry {
        Entry {
            origin: Identity::from_ed25519_seed([seed; 32]).peer_id(),
            seq,
            body: Bytes::from(format!("m{seq}")),
        }
    }

    #[test]
    fn a_reopened_store_keeps_outboxes_marks_and_the_log() {
        let dir = dir("reopen");
        let (a, b) = (entry(1, 0).origin, entry(2, 0).origin);
        {
            let mut store = RedbStore::open(&dir).unwrap();
            assert_eq!(store.load().unwrap(), Snapshot::default());
            let mut batch = Batch {
                incarnation: Some(3),
                next_seq: Some(3),
                log: vec![entry(1, 1), entry(1, 2), entry(2, 1)],
                ..Batch::default()
            };
            batch.delivered.insert(a, 2);
            batch.delivered.insert(b, 1);
            batch.peer_incarnations.insert(b, 9);
            batch.enqueued = (1..=4).map(|q| (b, q, entry(1, q))).collect();
            store.commit(&batch).unwrap();
            let mut acked = Batch::default();
            acked.acked.insert(b, 2);
            store.commit(&acked).unwrap();
        }
        let mut store = RedbStore::open(&dir).unwrap();
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.incarnation, 3);
        assert_eq!(snapshot.next_seq, 3);
        assert_eq!(snapshot.log_len, 3);
        assert_eq!(snapshot.delivered.get(&a), Some(&2));
        assert_eq!(snapshot.peer_incarnations.get(&b), Some(&9));
        assert_eq!(
            snapshot.outboxes.get(&b).unwrap(),
            &vec![(3, entry(1, 3)), (4, entry(1, 4))]
        );
        assert_eq!(
            store.read_log(1, 10).unwrap(),
            vec![entry(1, 2), entry(2, 1)]
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn channels_restarted_on_the_store_keep_their_outbox_and_marks() {
        use crate::protocols::channel::{ChannelConfig, Channels};
        use crate::protocols::{Host, HostConfig};
        use crate::{Config, Manager};
        use std::time::{Duration, Instant, SystemTime};
        let dir = dir("machine");
        let now = Instant::now();
        let host = || {
            let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
            let identity = Identity::from_ed25519_seed([1; 32]);
            let manager = Manager::new(now, wall, identity, Config::default(), [1; 32]).unwrap();
            Host::new(now, manager, HostConfig::default(), [1; 32])
        };
        let me = entry(1, 0).origin;
        let other = entry(2, 0).origin;
        let config = ChannelConfig::new("chat", vec![(other, vec![])]);
        {
            let store = RedbStore::open(&dir).unwrap();
            let mut channels = Channels::new(now, host(), store, config.clone()).unwrap();
            for i in 0..3u8 {
                channels.accept(Bytes::from(vec![i])).unwrap();
            }
            channels.commit();
            // A fourth, never committed: the crash loses it, and its seq is given again.
            channels.accept(Bytes::from_static(b"lost")).unwrap();
        }
        let store = RedbStore::open(&dir).unwrap();
        let mut channels = Channels::new(now, host(), store, config).unwrap();
        assert_eq!(channels.incarnation(), 2);
        assert_eq!(channels.outbox_len(&other), 3);
        assert_eq!(channels.delivered(&me), 3);
        assert_eq!(channels.accept(Bytes::from_static(b"next")), Ok(4));
        let log = channels.store_mut().read_log(0, 10).unwrap();
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        drop(channels);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_open_elsewhere_is_locked() {
        let dir = dir("locked");
        let _first = RedbStore::open(&dir).unwrap();
        // flock: a second open file description is refused, in this process as in another.
        assert_eq!(RedbStore::open(&dir).err(), Some(StoreError::Locked));
        drop(_first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_is_a_typed_error_and_is_left_alone() {
        let dir = dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(dir.join(FILE_NAME), &garbage).unwrap();
        let error = RedbStore::open(&dir).err();
        assert!(matches!(error, Some(StoreError::Corrupt(_))), "{error:?}");
        assert_eq!(std::fs::read(dir.join(FILE_NAME)).unwrap(), garbage);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
