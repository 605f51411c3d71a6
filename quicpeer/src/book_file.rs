//! The peer book on disk (feature `book-file`): a node saves [`Manager::peer_book`] as
//! connections come and go, and a restart with the same identity reads it back and hands it to
//! [`Manager::dial_peer_book`], so that the node dials its recent peers at once instead of
//! waiting for them to notice the restart. The `quicpeer` command's `--peer-book FILE` is this
//! format; an embedder may keep its book anywhere, this is the one quicpeer reads and writes.
//!
//! [`Manager::peer_book`]: crate::Manager::peer_book
//! [`Manager::dial_peer_book`]: crate::Manager::dial_peer_book
//!
//! One JSON object (version 1):
//!
//! ```json
//! {
//!   "format": "quicpeer-peer-book",
//!   "version": 1,
//!   "peer": "12D3KooW…",
//!   "records": [
//!     {"peer": "12D3KooW…", "addrs": ["127.0.0.1:4001"], "direction": "outbound",
//!      "last_seen_ms": 1700000000000}
//!   ]
//! }
//! ```
//!
//! `peer` is the node the book belongs to; each record is one [`PeerRecord`] (`last_seen_ms`:
//! unix milliseconds). Reading is bounded (size, records, addresses per record) and checks the
//! format tag and version before the body, so a later version is reported as such rather than
//! as a malformed file. Unknown fields are ignored. Writing replaces the file atomically
//! (`FILE.tmp`, synced, renamed), so a reader never sees half a book.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Direction, Limits, PeerId, PeerRecord};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The `format` tag of a peer book.
pub const FORMAT: &str = "quicpeer-peer-book";
/// The version this program reads and writes.
pub const VERSION: u64 = 1;

/// The largest file `--peer-book` reads.
pub const MAX_BYTES: u64 = 16 << 20;
/// The most addresses a record may have (writing keeps the first ones).
pub const MAX_ADDRS: usize = 32;

/// The most records a book may have: as many as the manager remembers.
pub fn max_records() -> usize {
    Limits::default().max_peer_book
}

/// Why a peer book could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file exists but cannot be read.
    #[error("cannot read the file: {0}")]
    Unreadable(#[source] io::Error),
    /// The file is over the size bound.
    #[error("larger than {max} bytes")]
    TooLarge {
        /// The bound, in bytes.
        max: u64,
    },
    /// Not JSON, or not a peer book's shape.
    #[error("not a peer book: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A JSON object with another `format` tag.
    #[error("not a peer book: format {found:?}, expected {FORMAT:?}")]
    WrongFormat {
        /// The tag found.
        found: String,
    },
    /// A peer book of a version this program does not read.
    #[error("peer book version {found} is not supported (this program reads version {VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// More records than the bound.
    #[error("{count} records, more than the {max} accepted")]
    TooManyRecords {
        /// Records found.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// The book's own `peer` is not a PeerId.
    #[error("the book's own peer {value:?} is not a PeerId")]
    BadLocalPeerId {
        /// The text found.
        value: String,
    },
    /// The book belongs to another node.
    #[error("the book belongs to another node, {found}")]
    Foreign {
        /// The node it belongs to.
        found: PeerId,
    },
    /// A record's `peer` is not a PeerId.
    #[error("record {index}: {value:?} is not a PeerId")]
    BadPeerId {
        /// The record's position in the list.
        index: usize,
        /// The text found.
        value: String,
    },
    /// A record's address is not `ip:port`.
    #[error("record {index}: {value:?} is not an ip:port address")]
    BadAddr {
        /// The record's position in the list.
        index: usize,
        /// The text found.
        value: String,
    },
    /// A record with more addresses than the bound.
    #[error("record {index}: {count} addresses, more than the {max} accepted")]
    TooManyAddrs {
        /// The record's position in the list.
        index: usize,
        /// Addresses found.
        count: usize,
        /// The bound.
        max: usize,
    },
}

impl ReadError {
    /// A stable, machine-readable name (the `error` field of `peer_book_error` lines).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreadable(_) => "unreadable",
            Self::TooLarge { .. } => "too_large",
            Self::Malformed(_) => "malformed",
            Self::WrongFormat { .. } => "wrong_format",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::TooManyRecords { .. } => "too_many_records",
            Self::BadLocalPeerId { .. } => "bad_local_peer_id",
            Self::Foreign { .. } => "foreign",
            Self::BadPeerId { .. } => "bad_peer_id",
            Self::BadAddr { .. } => "bad_addr",
            Self::TooManyAddrs { .. } => "too_many_addrs",
        }
    }
}

/// The records of the book at `path`, which must belong to `local`; a missing file is an empty
/// book. Files over `max_bytes` are refused.
pub fn read(path: &Path, local: PeerId, max_bytes: u64) -> Result<Vec<PeerRecord>, ReadError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ReadError::Unreadable(e)),
    };
    // One byte over the bound tells a file at the bound from a larger one.
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Unreadable)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge { max: max_bytes });
    }
    parse(&bytes, local)
}

/// The records of a book's bytes (see [`read`]).
pub fn parse(bytes: &[u8], local: PeerId) -> Result<Vec<PeerRecord>, ReadError> {
    let header: Header = serde_json::from_slice(bytes).map_err(ReadError::Malformed)?;
    if header.format != FORMAT {
        return Err(ReadError::WrongFormat {
            found: header.format,
        });
    }
    if header.version != VERSION {
        return Err(ReadError::UnsupportedVersion {
            found: header.version,
        });
    }
    let book: BookIn = serde_json::from_slice(bytes).map_err(ReadError::Malformed)?;
    let owner = (book.peer.parse::<PeerId>()).map_err(|_| ReadError::BadLocalPeerId {
        value: book.peer.clone(),
    })?;
    if owner != local {
        return Err(ReadError::Foreign { found: owner });
    }
    let records = book.records;
    if records.count > max_records() {
        return Err(ReadError::TooManyRecords {
            count: records.count,
            max: max_records(),
        });
    }
    let mut out = Vec::with_capacity(records.kept.len());
    for (index, record) in records.kept.into_iter().enumerate() {
        let peer = (record.peer.parse::<PeerId>()).map_err(|_| ReadError::BadPeerId {
            index,
            value: record.peer.clone(),
        })?;
        if record.addrs.count > MAX_ADDRS {
            return Err(ReadError::TooManyAddrs {
                index,
                count: record.addrs.count,
                max: MAX_ADDRS,
            });
        }
        let mut addrs = Vec::with_capacity(record.addrs.kept.len());
        for text in record.addrs.kept {
            match text.parse::<SocketAddr>() {
                Ok(addr) => addrs.push(addr),
                Err(_) => return Err(ReadError::BadAddr { index, value: text }),
            }
        }
        let direction = match record.direction {
            DirectionName::Inbound => Direction::Inbound,
            DirectionName::Outbound => Direction::Outbound,
        };
        out.push(PeerRecord::new(
            peer,
            addrs,
            direction,
            from_unix_ms(record.last_seen_ms),
        ));
    }
    Ok(out)
}

/// The JSON text of `local`'s book of `records` (at most [`max_records`], each with at most
/// [`MAX_ADDRS`] addresses, so that [`parse`] accepts what this writes).
pub fn encode(local: PeerId, records: &[PeerRecord]) -> serde_json::Result<Vec<u8>> {
    let book = BookOut {
        format: FORMAT,
        version: VERSION,
        peer: local.to_string(),
        records: (records.iter().take(max_records()))
            .map(|r| RecordOut {
                peer: r.peer.to_string(),
                addrs: r
                    .addrs
                    .iter()
                    .take(MAX_ADDRS)
                    .map(|a| a.to_string())
                    .collect(),
                direction: match r.direction {
                    Direction::Inbound => DirectionName::Inbound,
                    Direction::Outbound => DirectionName::Outbound,
                },
                last_seen_ms: unix_ms(r.last_seen),
            })
            .collect(),
    };
    let mut text = serde_json::to_vec_pretty(&book)?;
    text.push(b'\n');
    Ok(text)
}

/// Replaces the book at `path` atomically: writes `FILE.tmp` beside it, syncs it, renames it
/// over `path`.
pub fn write(path: &Path, local: PeerId, records: &[PeerRecord]) -> io::Result<()> {
    let text = encode(local, records).map_err(io::Error::other)?;
    let tmp = tmp_path(path);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // The book says whom this node talks to, and where: its owner's business.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(&text)?;
    file.flush()?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

/// `FILE.tmp` for `FILE`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A time no `SystemTime` can hold (not on Linux, where u64 milliseconds always fit) reads as
/// the epoch: the record then counts as the oldest.
fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// What is read first: the format tag and version (other fields are skipped, not parsed).
#[derive(Deserialize)]
struct Header {
    format: String,
    version: u64,
}

/// A version-1 book as read.
#[derive(Deserialize)]
struct BookIn {
    peer: String,
    records: Bounded<RecordIn, RecordBound>,
}

#[derive(Deserialize)]
struct RecordIn {
    peer: String,
    addrs: Bounded<String, AddrBound>,
    direction: DirectionName,
    last_seen_ms: u64,
}

#[derive(Serialize)]
struct BookOut {
    format: &'static str,
    version: u64,
    peer: String,
    records: Vec<RecordOut>,
}

#[derive(Serialize)]
struct RecordOut {
    peer: String,
    addrs: Vec<String>,
    direction: DirectionName,
    last_seen_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DirectionName {
    Inbound,
    Outbound,
}

/// How many elements of a [`Bounded`] list are kept.
trait Bound {
    fn max() -> usize;
}

struct RecordBound;
impl Bound for RecordBound {
    fn max() -> usize {
        max_records()
    }
}

struct AddrBound;
impl Bound for AddrBound {
    fn max() -> usize {
        MAX_ADDRS
    }
}

/// A JSON list of which at most `B::max()` elements are parsed and kept, the rest only counted
/// (`count` over the bound: the list is refused), so that a huge list costs no memory.
struct Bounded<T, B> {
    kept: Vec<T>,
    count: usize,
    bound: PhantomData<B>,
}

impl<'de, T: Deserialize<'de>, B: Bound> Deserialize<'de> for Bounded<T, B> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List<T, B>(PhantomData<(T, B)>);

        impl<'de, T: Deserialize<'de>, B: Bound> Visitor<'de> for List<T, B> {
            type Value = Bounded<T, B>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let keep = B::max();
                let mut kept = Vec::new();
                while kept.len() < keep {
                    match seq.next_element()? {
                        Some(element) => kept.push(element),
                        None => break,
                    }
                }
                let mut count = kept.len();
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(Bounded {
                    kept,
                    count,
                    bound: PhantomData,
                })
            }
        }

        deserializer.deserialize_seq(List(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::Identity;

    fn peer(seed: u8) -> PeerId {
        Identity::from_ed25519_seed([seed; 32]).peer_id()
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn records() -> Vec<PeerRecord> {
        vec![
            PeerRecord::new(
                peer(2),
                vec![
                    "127.0.0.1:4001".parse().unwrap(),
                    "[::1]:4002".parse().unwrap(),
                ],
                Direction::Outbound,
                at(1_700_000_000_123),
            ),
            PeerRecord::new(
                peer(3),
                vec!["10.0.0.7:55000".parse().unwrap()],
                Direction::Inbound,
                at(1_600_000_000_000),
            ),
            PeerRecord::new(peer(4), vec![], Direction::Inbound, at(0)),
        ]
    }

    /// A unique path in the temp directory.
    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("quicpeer-book-{}-{name}", std::process::id()))
    }

    fn parse_text(text: &str) -> Result<Vec<PeerRecord>, ReadError> {
        parse(text.as_bytes(), peer(1))
    }

    /// A version-1 book of `peer(1)` with `records` as its JSON list.
    fn book_with(records: &str) -> String {
        format!(
            r#"{{"format":"quicpeer-peer-book","version":1,"peer":"{}","records":{records}}}"#,
            peer(1)
        )
    }

    #[test]
    fn round_trip() {
        let text = encode(peer(1), &records()).unwrap();
        assert_eq!(parse(&text, peer(1)).unwrap(), records());

        let path = temp("round-trip");
        write(&path, peer(1), &records()).unwrap();
        assert_eq!(read(&path, peer(1), MAX_BYTES).unwrap(), records());
        assert!(!tmp_path(&path).exists(), "the temporary file was renamed");
        // A second write replaces the first.
        write(&path, peer(1), &records()[..1]).unwrap();
        assert_eq!(read(&path, peer(1), MAX_BYTES).unwrap().len(), 1);
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_format_is_as_documented() {
        let text = String::from_utf8(encode(peer(1), &records()[1..2]).unwrap());
        let value: serde_json::Value = serde_json::from_str(&text.unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "format": "quicpeer-peer-book",
                "version": 1,
                "peer": peer(1).to_string(),
                "records": [{
                    "peer": peer(3).to_string(),
                    "addrs": ["10.0.0.7:55000"],
                    "direction": "inbound",
                    "last_seen_ms": 1_600_000_000_000u64,
                }],
            })
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let records = format!(
            r#"[{{"peer":"{}","addrs":[],"direction":"outbound","last_seen_ms":5,"x":[1]}}]"#,
            peer(2)
        );
        let text = book_with(&records).replace("\"version\":1", "\"version\":1,\"note\":{}");
        let book = parse_text(&text).unwrap();
        assert_eq!(book.len(), 1);
        assert_eq!(book[0].last_seen, at(5));
    }

    #[test]
    fn a_missing_file_is_an_empty_book() {
        let book = read(&temp("missing"), peer(1), MAX_BYTES).unwrap();
        assert!(book.is_empty());
    }

    #[test]
    fn unreadable() {
        // A directory opens but does not read.
        let error = read(&std::env::temp_dir(), peer(1), MAX_BYTES).unwrap_err();
        assert!(matches!(error, ReadError::Unreadable(_)), "{error}");
    }

    #[test]
    fn too_large() {
        let path = temp("too-large");
        write(&path, peer(1), &records()).unwrap();
        let size = fs::metadata(&path).unwrap().len();
        assert!(read(&path, peer(1), size).is_ok(), "at the bound");
        let error = read(&path, peer(1), size - 1).unwrap_err();
        assert!(
            matches!(error, ReadError::TooLarge { max } if max == size - 1),
            "{error}"
        );
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn malformed() {
        for text in [
            "\u{0}\u{1}garbage",
            "",
            "[]",
            r#"{"format":"quicpeer-peer-book"}"#,
            r#"{"format":"quicpeer-peer-book","version":"1"}"#,
            &book_with("{}"),
            &book_with(r#"[{"peer":"x"}]"#),
            &book_with(&format!(
                r#"[{{"peer":"{}","addrs":[],"direction":"sideways","last_seen_ms":1}}]"#,
                peer(2)
            )),
            &book_with(&format!(
                r#"[{{"peer":"{}","addrs":[],"direction":"inbound","last_seen_ms":-1}}]"#,
                peer(2)
            )),
        ] {
            let error = parse_text(text).unwrap_err();
            assert!(matches!(error, ReadError::Malformed(_)), "{text}: {error}");
            assert_eq!(error.kind(), "malformed");
        }
    }

    #[test]
    fn wrong_format() {
        let text = book_with("[]").replace("quicpeer-peer-book", "something-else");
        let error = parse_text(&text).unwrap_err();
        assert!(
            matches!(&error, ReadError::WrongFormat { found } if found == "something-else"),
            "{error}"
        );
    }

    #[test]
    fn unsupported_version() {
        // Checked before the body, which a later version may shape differently.
        let text = r#"{"format":"quicpeer-peer-book","version":2,"records":7}"#;
        let error = parse_text(text).unwrap_err();
        assert!(
            matches!(error, ReadError::UnsupportedVersion { found: 2 }),
            "{error}"
        );
    }

    #[test]
    fn foreign() {
        let text = encode(peer(9), &records()).unwrap();
        let error = parse(&text, peer(1)).unwrap_err();
        assert!(
            matches!(error, ReadError::Foreign { found } if found == peer(9)),
            "{error}"
        );
        let text = book_with("[]").replace(&peer(1).to_string(), "not-a-peer");
        let error = parse_text(&text).unwrap_err();
        assert!(
            matches!(&error, ReadError::BadLocalPeerId { value } if value == "not-a-peer"),
            "{error}"
        );
    }

    #[test]
    fn too_many_records() {
        // The extra records are counted, not kept.
        let max = max_records();
        let record = format!(
            r#"{{"peer":"{}","addrs":[],"direction":"inbound","last_seen_ms":1}}"#,
            peer(2)
        );
        let list = |n| format!("[{}]", vec![record.as_str(); n].join(","));
        assert_eq!(parse_text(&book_with(&list(max))).unwrap().len(), max);
        let error = parse_text(&book_with(&list(max + 5))).unwrap_err();
        assert!(
            matches!(error, ReadError::TooManyRecords { count, max: m } if count == max + 5 && m == max),
            "{error}"
        );
        // What this program writes, it reads: records beyond the bound are not written.
        let many = vec![records()[0].clone(); max + 1];
        assert_eq!(
            parse(&encode(peer(1), &many).unwrap(), peer(1))
                .unwrap()
                .len(),
            max
        );
    }

    #[test]
    fn bad_records() {
        let record = |peer: &str, addrs: &str| {
            book_with(&format!(
                r#"[{{"peer":"{}","addrs":[],"direction":"inbound","last_seen_ms":1}},
                    {{"peer":"{peer}","addrs":{addrs},"direction":"inbound","last_seen_ms":1}}]"#,
                super::tests::peer(2)
            ))
        };
        let good = peer(3).to_string();

        let error = parse_text(&record("12D3KooW0OIl", "[]")).unwrap_err();
        assert!(
            matches!(&error, ReadError::BadPeerId { index: 1, value } if value == "12D3KooW0OIl"),
            "{error}"
        );

        for bad in [
            "127.0.0.1",
            "localhost:4001",
            "/ip4/127.0.0.1/udp/1/quic-v1",
        ] {
            let error = parse_text(&record(&good, &format!(r#"["127.0.0.1:1","{bad}"]"#)));
            let error = error.unwrap_err();
            assert!(
                matches!(&error, ReadError::BadAddr { index: 1, value } if value == bad),
                "{error}"
            );
        }

        let max = MAX_ADDRS;
        let addrs = format!("[{}]", vec!["\"127.0.0.1:1\""; max + 2].join(","));
        let error = parse_text(&record(&good, &addrs)).unwrap_err();
        assert!(
            matches!(error, ReadError::TooManyAddrs { index: 1, count, max: m } if count == max + 2 && m == max),
            "{error}"
        );
        // What this program writes, it reads: addresses beyond the bound are not written.
        let many = PeerRecord::new(
            peer(3),
            (1..=max as u16 + 3)
                .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
                .collect(),
            Direction::Outbound,
            at(1),
        );
        let text = encode(peer(1), &[many]).unwrap();
        let book = parse(&text, peer(1)).unwrap();
        assert_eq!(book[0].addrs.len(), max);
    }
}
