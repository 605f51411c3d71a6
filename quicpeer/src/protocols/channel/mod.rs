//! Peer channels: messages to a set of peers that survive crashes of either side, delivered
//! exactly once, in order per origin.
//!
//! A QUIC stream loses what was in flight when its connection dies, and the manager's
//! `ConnectionLost` lists the streams that were unfinished, but only in memory: a crash loses
//! the list too. [`Channels`] is the layer that makes an application's messages survive: it
//! owns a [`Host`], keeps every message it has not seen acknowledged in a durable [`Store`],
//! and sends them again on the next connection after any loss.
//!
//! # The model
//!
//! A node has a set of *links*: the peers named in [`ChannelConfig::peers`] (and only those:
//! a channel stream from any other PeerId, as verified by the handshake, is refused). The
//! application [accepts](Channels::accept) messages; each gets the next `seq` of this node
//! (the *origin*), is appended to the node's own log, and is queued to every link. A message
//! received from a link is *delivered*: appended to the log, once per `(origin, seq)`, and,
//! with [`ChannelConfig::forward`], queued to every other link, so that every node of any
//! connected graph of links (a star, a chain, a partial mesh) gets every message.
//!
//! On the wire (`/quicpeer/channel/1.0.0`, see [`codec`]), each side opens one stream per
//! connection to each link it is connected to, says `Hello` (channel name, its incarnation),
//! then sends its outbox for that link from its first unacknowledged entry. Entries carry
//! `qseq`, their place in that outbox; the receiver answers with cumulative `Ack { upto }`
//! once what it delivered is committed. After any loss (reset, restart, idle timeout,
//! supersession, a crash of either side) the sender opens a new stream on the next connection
//! and sends every unacknowledged entry again; the receiver drops what it delivered already.
//!
//! # The guarantee
//!
//! A message is *accepted* when the commit that holds it returned (then
//! [`ChannelEvent::Accepted`]), and *delivered* at a node when the commit that appended it to
//! that node's log returned (then [`ChannelEvent::Delivered`]). Provided each node's store
//! keeps what was committed (a crash, `kill -9` included, loses only what was not committed),
//! and the links eventually stay up long enough to pass the outbox:
//!
//! - every accepted message is delivered at every node reachable over links (at every link,
//!   without forwarding), **exactly once** per node: its log holds each `(origin, seq)` at most
//!   once, and each accepted message eventually;
//! - **in per-origin order**: a node's log holds an origin's messages in `seq` order with no
//!   gap;
//! - a message that was not accepted (the node crashed before the commit) was never sent and
//!   is delivered nowhere; its `seq` is given to the next message accepted.
//!
//! Why: a receiver delivers `(origin, seq)` only if `seq` is one above the origin's durable
//! high-water mark (duplicates are dropped, a gap is refused), and commits the log entry, the
//! high-water mark and the forwarded copies in one batch before it acknowledges; a sender
//! removes an entry only once it is acknowledged, and sends nothing before the batch that
//! queued it is committed. Forwarding keeps the order, since each node delivers and so
//! forwards each origin's messages in order, and a link's messages travel in queue order.
//!
//! What breaks it: losing a store. A node restarted with an empty store starts its
//! incarnation and its `seq` over: peers that saw a later incarnation of it refuse it
//! ([`ChannelError::StaleIncarnation`]), and the others drop its new messages as duplicates up
//! to the old high-water mark. Keep the store with the identity.
//!
//! # Group commit
//!
//! The machine commits in [`poll_transmit`](SansIo::poll_transmit), before it writes
//! anything: everything accepted, delivered, queued and acknowledged since the last commit
//! goes into one [`Batch`], one transaction and one flush to disk. `handle_datagram` only feeds
//! the host, so a driver's run of datagrams followed by `poll_transmit` is one commit (a read
//! of more than [`ChannelConfig::max_batch`] messages commits every `max_batch`); so is a
//! run of [`accept`](Channels::accept)s. Acceptance and delivery are reported after the commit.
//!
//! # Bounds
//!
//! Bodies are at most [`codec::MAX_BODY`] bytes; a frame at most [`codec::MAX_FRAME`]. A
//! link's outbox holds at most [`ChannelConfig::max_outbox`] entries for
//! [`accept`](Channels::accept) (beyond: [`AcceptError::OutboxFull`]) and twice that with
//! forwarded ones (beyond: the inbound stream that brings more is paused, its data left
//! unread so that QUIC's flow control holds the sender, until the outbox drains). One inbound
//! stream per link, one partial frame per stream (one read, 256 KiB, while it is paused), one
//! batch of at most `max_batch` messages in memory.

pub mod codec;
#[cfg(feature = "store-redb")]
pub mod redb_store;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

pub use codec::{CodecError, Decoder, Frame, MAX_BODY, PROTOCOL};
#[cfg(feature = "store-redb")]
pub use redb_store::RedbStore;
pub use store::{Batch, Entry, MemoryStore, Snapshot, Store, StoreError};

use super::host::{Host, HostEvent, OutboundId};
use crate::{ConnId, Event, PeerId, ReadStatus, SansIo, StreamError, StreamId, Transmit};

/// Application error code with which a channel stream is reset or stopped when refused.
pub const REFUSED_CODE: u64 = 0x4348; // "CH"
/// Bytes read from one stream per read call.
const READ_BUDGET: usize = 256 * 1024;

/// Settings of [`Channels`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// The channel's name; a peer's `Hello` must name the same one.
    pub name: String,
    /// The links: the peers messages go to and come from, each with the addresses to dial it
    /// at (none: wait for it to dial). Channel streams from any other peer are refused.
    pub peers: Vec<(PeerId, Vec<SocketAddr>)>,
    /// Whether a message received from one link is queued to the others. Needed unless every
    /// node links to every other (a full mesh).
    pub forward: bool,
    /// Entries a link's outbox may hold before [`Channels::accept`] refuses more; forwarded
    /// entries may take it to twice this. Default 65 536.
    pub max_outbox: usize,
    /// Messages read before a commit even within one call. Default 4096.
    pub max_batch: usize,
    /// How often links that are not connected are dialed. Default 1 s.
    pub redial_interval: Duration,
    /// How long a sender waits before opening a new stream after the peer refused one.
    /// Default 1 s.
    pub retry_delay: Duration,
}

impl ChannelConfig {
    /// A channel named `name` over these links, forwarding, with the default bounds.
    pub fn new(name: impl Into<String>, peers: Vec<(PeerId, Vec<SocketAddr>)>) -> Self {
        Self {
            name: name.into(),
            peers,
            forward: true,
            max_outbox: 65_536,
            max_batch: 4096,
            redial_interval: Duration::from_secs(1),
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// Why a peer's channel stream was refused: it was reset (and stopped) with
/// [`REFUSED_CODE`]; what was delivered before stays delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The bytes are not a frame.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The peer is not one of the links.
    #[error("peer is not a link of this channel")]
    NotALink,
    /// A frame out of place: a message before `Hello`, a second `Hello`, an `Ack` from the
    /// sender or a message from the receiver.
    #[error("unexpected frame")]
    Unexpected,
    /// `Hello` named another channel.
    #[error("peer opened channel {0:?}")]
    WrongChannel(String),
    /// `Hello` from an incarnation older than one already seen: a replay, or a peer that lost
    /// its store.
    #[error("incarnation {got} is older than {seen}")]
    StaleIncarnation {
        /// The highest incarnation seen from the peer.
        seen: u64,
        /// The one offered.
        got: u64,
    },
    /// An acknowledgement of an entry never sent on the stream.
    #[error("ack of qseq {upto}, but only {sent} was sent")]
    AckBeyondSent {
        /// What was acknowledged.
        upto: u64,
        /// The highest `qseq` sent on the stream (0: none).
        sent: u64,
    },
    /// A message whose `qseq` is not above the previous one on the stream.
    #[error("qseq {got} after {last}")]
    NotIncreasing {
        /// The previous `qseq`.
        last: u64,
        /// This one.
        got: u64,
    },
    /// A message that skips some of its origin's messages.
    #[error("gap from {origin}: expected seq {expected}, got {got}")]
    Gap {
        /// The origin.
        origin: PeerId,
        /// The next `seq` that could be delivered.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// A message claiming to be one of ours that we never accepted, or with `seq` 0.
    #[error("message with an impossible seq {0}")]
    BadSeq(u64),
}

/// Why [`Channels::accept`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The body is above [`MAX_BODY`].
    #[error("body of {0} bytes exceeds the bound")]
    TooLarge(usize),
    /// The outbox to this link is full: wait for it to drain (the link is down or slow).
    #[error("outbox to {0} full")]
    OutboxFull(PeerId),
    /// The store failed; the machine accepts nothing more (restart it).
    #[error(transparent)]
    Store(StoreError),
}

/// What [`Channels`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// A message given to [`Channels::accept`] is durable: it will reach every node.
    Accepted {
        /// Its number.
        seq: u64,
    },
    /// A message was appended to the log, durably (our own ones included).
    Delivered {
        /// Its log index, from 0.
        index: u64,
        /// The message.
        entry: Entry,
        /// The link it came from (`None`: accepted here).
        from: Option<PeerId>,
    },
    /// A link's stream was refused for what it sent; see the error.
    LinkFailed {
        /// The peer.
        peer: PeerId,
        /// Why.
        error: ChannelError,
    },
    /// A commit failed: the machine stops sending and accepting; restart it on a working store.
    StoreFailed(StoreError),
    /// Something the host reports (connections, other protocols' streams).
    Host(HostEvent),
}

/// Counters, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Messages received that were delivered already.
    pub duplicates: u64,
    /// Entries sent (first sends and resends).
    pub sent: u64,
    /// Commits.
    pub commits: u64,
}

#[derive(Debug)]
enum Out {
    Idle,
    Opening { id: OutboundId, conn: ConnId },
    Open(OutStream),
}

#[derive(Debug)]
struct OutStream {
    stream: StreamId,
    /// The next `qseq` to send.
    next: u64,
    /// The highest `qseq` sent on this stream (0: none).
    sent: u64,
    wbuf: Vec<u8>,
    decoder: Decoder,
}

#[derive(Debug)]
struct Link {
    addrs: Vec<SocketAddr>,
    outbox: VecDeque<(u64, Entry)>,
    next_qseq: u64,
    out: Out,
    retry_at: Option<Instant>,
}

#[derive(Debug)]
struct Inbound {
    peer: PeerId,
    decoder: Decoder,
    hello: bool,
    /// The last `qseq` taken in (delivered or a duplicate).
    last: u64,
    /// The last `qseq` acknowledged.
    acked: u64,
    wbuf: Vec<u8>,
    /// A message that could not be forwarded yet (an outbox full): the stream is not read
    /// until it is taken.
    held: Option<Frame>,
}

/// Exactly-once channels on a [`Host`]. See the [module documentation](self).
pub struct Channels<S: Store> {
    host: Host,
    store: S,
    config: ChannelConfig,
    me: PeerId,
    incarnation: u64,
    next_seq: u64,
    log_len: u64,
    delivered: BTreeMap<PeerId, u64>,
    peer_incarnations: BTreeMap<PeerId, u64>,
    links: BTreeMap<PeerId, Link>,
    inbound: BTreeMap<StreamId, Inbound>,
    outbound: BTreeMap<StreamId, PeerId>,
    /// Our opens in flight, with their connection.
    opens: BTreeMap<OutboundId, ConnId>,
    batch: Batch,
    /// Reported once the batch is committed.
    pending: Vec<ChannelEvent>,
    events: VecDeque<ChannelEvent>,
    failed: Option<StoreError>,
    next_redial: Option<Instant>,
    chunks: Vec<Bytes>,
    stats: ChannelStats,
}

impl<S: Store> Channels<S> {
    /// Channels over `host` (which should be fresh), starting from what `store` holds: it
    /// takes the next incarnation and commits it before anything is sent.
    pub fn new(
        now: Instant,
        mut host: Host,
        mut store: S,
        config: ChannelConfig,
    ) -> Result<Self, StoreError> {
        let snapshot = store.load()?;
        let incarnation = snapshot.incarnation + 1;
        store.commit(&Batch {
            incarnation: Some(incarnation),
            ..Batch::default()
        })?;
        // The name is a constant that validates.
        let _ = host.register(PROTOCOL);
        let me = host.manager().local_peer_id();
        let mut outboxes = snapshot.outboxes;
        let links = (config.peers.iter())
            .filter(|(peer, _)| *peer != me)
            .map(|(peer, addrs)| {
                let outbox: VecDeque<_> = outboxes.remove(peer).unwrap_or_default().into();
                let next_qseq = outbox.back().map_or(1, |(q, _)| q + 1);
                let link = Link {
                    addrs: addrs.clone(),
                    outbox,
                    next_qseq,
                    out: Out::Idle,
                    retry_at: None,
                };
                (*peer, link)
            })
            .collect();
        debug!(%me, incarnation, "channels started");
        Ok(Self {
            host,
            store,
            config,
            me,
            incarnation,
            next_seq: snapshot.next_seq.max(1),
            log_len: snapshot.log_len,
            delivered: snapshot.delivered,
            peer_incarnations: snapshot.peer_incarnations,
            links,
            inbound: BTreeMap::new(),
            outbound: BTreeMap::new(),
            opens: BTreeMap::new(),
            batch: Batch::default(),
            pending: Vec::new(),
            events: VecDeque::new(),
            failed: None,
            next_redial: Some(now),
            chunks: Vec::new(),
            stats: ChannelStats::default(),
        })
    }

    // ---- getters ----

    /// The host, for queries.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The host, for commands (other protocols, pings).
    pub fn host_mut(&mut self) -> &mut Host {
        &mut self.host
    }

    /// The store.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// This start's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Entries waiting for `peer`'s acknowledgement.
    pub fn outbox_len(&self, peer: &PeerId) -> usize {
        self.links.get(peer).map_or(0, |l| l.outbox.len())
    }

    /// The highest `seq` of `origin` delivered (committed or about to be).
    pub fn delivered(&self, origin: &PeerId) -> u64 {
        self.delivered.get(origin).copied().unwrap_or(0)
    }

    /// Counters.
    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    // ---- commands ----

    /// Accepts a message of the local application: numbers it, logs it, queues it to every
    /// link. It is durable, and reported as [`ChannelEvent::Accepted`], after the next commit
    /// (the next `poll_transmit`); returns its `seq`.
    pub fn accept(&mut self, body: Bytes) -> Result<u64, AcceptError> {
        if let Some(error) = &self.failed {
            return Err(AcceptError::Store(error.clone()));
        }
        if body.len() > MAX_BODY {
            return Err(AcceptError::TooLarge(body.len()));
        }
        if let Some((peer, _)) =
            (self.links.iter()).find(|(_, l)| l.outbox.len() >= self.config.max_outbox)
        {
            return Err(AcceptError::OutboxFull(*peer));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.batch.next_seq = Some(self.next_seq);
        let entry = Entry {
            origin: self.me,
            seq,
            body,
        };
        self.pending.push(ChannelEvent::Accepted { seq });
        self.deliver(entry, None);
        Ok(seq)
    }

    /// Commits what is pending now, without waiting for `poll_transmit`.
    pub fn commit(&mut self) {
        if self.batch.is_empty() || self.failed.is_some() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        match self.store.commit(&batch) {
            Ok(()) => {
                self.stats.commits += 1;
                self.events.extend(self.pending.drain(..));
            }
            Err(error) => {
                warn!(%error, "channel store commit failed; channels stopped");
                self.pending.clear();
                self.failed = Some(error.clone());
                self.events.push_back(ChannelEvent::StoreFailed(error));
                let streams: Vec<_> = (self.inbound.keys().chain(self.outbound.keys()))
                    .copied()
                    .collect();
                for stream in streams {
                    self.refuse(stream);
                }
                self.inbound.clear();
                self.outbound.clear();
                for link in self.links.values_mut() {
                    link.out = Out::Idle;
                }
            }
        }
    }

    // ---- internals ----

    /// Logs `entry`, marks it delivered, queues it to the links it goes to.
    fn deliver(&mut self, entry: Entry, from: Option<PeerId>) {
        self.delivered.insert(entry.origin, entry.seq);
        self.batch.delivered.insert(entry.origin, entry.seq);
        if from.is_none() || self.config.forward {
            for (peer, link) in &mut self.links {
                if Some(*peer) == from || *peer == entry.origin {
                    continue;
                }
                let qseq = link.next_qseq;
                link.next_qseq += 1;
                link.outbox.push_back((qseq, entry.clone()));
                self.batch.enqueued.push((*peer, qseq, entry.clone()));
            }
        }
        self.batch.log.push(entry.clone());
        self.pending.push(ChannelEvent::Delivered {
            index: self.log_len,
            entry,
            from,
        });
        self.log_len += 1;
    }

    /// Resets and stops a stream, ignoring a stream already gone.
    fn refuse(&mut self, stream: StreamId) {
        let manager = self.host.manager_mut();
        let _ = manager.stream_reset(stream, REFUSED_CODE);
        let _ = manager.stream_stop(stream, REFUSED_CODE);
    }

    fn fail_inbound(&mut self, stream: StreamId, error: ChannelError) {
        if let Some(state) = self.inbound.remove(&stream) {
            debug!(peer = %state.peer, %error, "inbound channel stream refused");
            self.events.push_back(ChannelEvent::LinkFailed {
                peer: state.peer,
                error,
            });
        }
        self.refuse(stream);
    }

    /// Drops our stream to a link. `refused`: the peer ended it (a refusal, a protocol
    /// error), so the next one waits `retry_delay`, unless the stream's connection is no longer
    /// the peer's: then the next one is opened at once on the new connection.
    fn fail_outbound(
        &mut self,
        now: Instant,
        stream: StreamId,
        error: Option<ChannelError>,
        refused: bool,
    ) {
        if let Some(peer) = self.outbound.remove(&stream) {
            let alive = self.host.manager().connection(&peer) == Some(stream.conn());
            if let Some(link) = self.links.get_mut(&peer) {
                link.out = Out::Idle;
                if alive && (refused || error.is_some()) {
                    link.retry_at = Some(now + self.config.retry_delay);
                }
            }
            if let Some(error) = error {
                debug!(%peer, %error, "outbound channel stream refused");
                self.events
                    .push_back(ChannelEvent::LinkFailed { peer, error });
            }
        }
        self.refuse(stream);
    }

    /// Takes in the host's events; returns whether there was any.
    fn pump(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(event) = self.host.poll_event() {
            any = true;
            self.on_host_event(now, event);
        }
        any
    }

    fn on_host_event(&mut self, now: Instant, event: HostEvent) {
        match event {
            HostEvent::InboundStream {
                peer,
                stream,
                protocol,
                leftover,
            } if protocol == PROTOCOL => {
                if self.failed.is_some() {
                    self.refuse(stream);
                    return;
                }
                if !self.links.contains_key(&peer) {
                    self.events.push_back(ChannelEvent::LinkFailed {
                        peer,
                        error: ChannelError::NotALink,
                    });
                    self.refuse(stream);
                    return;
                }
                // One inbound stream per link: a newer one replaces the older.
                let older: Vec<_> = (self.inbound.iter())
                    .filter(|(_, s)| s.peer == peer)
                    .map(|(id, _)| *id)
                    .collect();
                for id in older {
                    self.inbound.remove(&id);
                    self.refuse(id);
                }
                self.inbound.insert(
                    stream,
                    Inbound {
                        peer,
                        decoder: Decoder::new(),
                        hello: false,
                        last: 0,
                        acked: 0,
                        wbuf: Vec::new(),
                        held: None,
                    },
                );
                self.on_inbound_data(stream, &leftover);
            }
            HostEvent::OutboundStream {
                peer,
                id,
                stream,
                leftover,
                ..
            } if self.opens.contains_key(&id) => {
                self.opens.remove(&id);
                let link = self.links.get_mut(&peer);
                let Some(link) =
                    link.filter(|l| matches!(l.out, Out::Opening { id: i, .. } if i == id))
                else {
                    // An open we gave up on (its connection was replaced).
                    self.refuse(stream);
                    return;
                };
                let mut wbuf = Vec::new();
                Frame::Hello {
                    channel: self.config.name.clone(),
                    incarnation: self.incarnation,
                }
                .encode(&mut wbuf);
                link.out = Out::Open(OutStream {
                    stream,
                    next: link.outbox.front().map_or(link.next_qseq, |(q, _)| *q),
                    sent: 0,
                    wbuf,
                    decoder: Decoder::new(),
                });
                self.outbound.insert(stream, peer);
                self.on_outbound_data(now, stream, &leftover);
            }
            HostEvent::OutboundFailed {
                peer, id, error, ..
            } if self.opens.contains_key(&id) => {
                let conn = self.opens.remove(&id);
                // A connection that is no longer the peer's (lost, or replaced by the winner
                // of a simultaneous dial) is no refusal: open again at once on the new one.
                let alive = conn.is_some() && self.host.manager().connection(&peer) == conn;
                match self.links.get_mut(&peer) {
                    Some(link) if matches!(link.out, Out::Opening { id: i, .. } if i == id) => {
                        debug!(%peer, %error, "channel stream open failed");
                        link.out = Out::Idle;
                        if alive {
                            link.retry_at = Some(now + self.config.retry_delay);
                        }
                    }
                    _ => {}
                }
            }
            HostEvent::Manager(Event::StreamReadable { stream }) => {
                if self.inbound.contains_key(&stream) || self.outbound.contains_key(&stream) {
                    self.read(now, stream);
                } else {
                    self.events.push_back(ChannelEvent::Host(HostEvent::Manager(
                        Event::StreamReadable { stream },
                    )));
                }
            }
            HostEvent::Manager(Event::StreamWritable { stream })
            | HostEvent::Manager(Event::StreamFinished { stream })
                if self.inbound.contains_key(&stream) || self.outbound.contains_key(&stream) => {}
            HostEvent::Manager(Event::StreamStopped { stream, .. })
                if self.inbound.contains_key(&stream) || self.outbound.contains_key(&stream) =>
            {
                self.inbound.remove(&stream);
                self.fail_outbound(now, stream, None, true);
            }
            HostEvent::Manager(Event::ConnectionLost {
                peer,
                conn,
                addr,
                cause,
                unfinished_streams,
            }) => {
                self.inbound.retain(|id, _| id.conn() != conn);
                self.outbound.retain(|id, _| id.conn() != conn);
                self.opens.retain(|_, c| *c != conn);
                for link in self.links.values_mut() {
                    let dead = match &link.out {
                        Out::Opening { conn: c, .. } => *c == conn,
                        Out::Open(s) => s.stream.conn() == conn,
                        Out::Idle => false,
                    };
                    if dead {
                        link.out = Out::Idle;
                    }
                }
                self.events.push_back(ChannelEvent::Host(HostEvent::Manager(
                    Event::ConnectionLost {
                        peer,
                        conn,
                        addr,
                        cause,
                        unfinished_streams,
                    },
                )));
            }
            other => self.events.push_back(ChannelEvent::Host(other)),
        }
    }

    fn read(&mut self, now: Instant, stream: StreamId) {
        loop {
            if (self.inbound.get(&stream)).is_some_and(|s| s.held.is_some()) {
                // Paused: the data waits in the stream, and flow control holds the sender.
                return;
            }
            self.chunks.clear();
            let mut chunks = std::mem::take(&mut self.chunks);
            let result =
                (self.host.manager_mut()).stream_read_chunks(stream, READ_BUDGET, &mut chunks);
            for chunk in &chunks {
                if self.inbound.contains_key(&stream) {
                    self.on_inbound_data(stream, chunk);
                } else if self.outbound.contains_key(&stream) {
                    self.on_outbound_data(now, stream, chunk);
                }
            }
            self.chunks = chunks;
            if !self.inbound.contains_key(&stream) && !self.outbound.contains_key(&stream) {
                return;
            }
            match result {
                Ok(read) if read.status == ReadStatus::BudgetReached => continue,
                Ok(read) if read.status == ReadStatus::Blocked => return,
                Ok(_) | Err(_) => {
                    // Finished or reset by the peer, or gone with its connection: the sender
                    // opens a new one.
                    if self.inbound.remove(&stream).is_some() {
                        self.refuse(stream);
                    }
                    let refused = matches!(result, Ok(_) | Err(StreamError::Reset(_)));
                    self.fail_outbound(now, stream, None, refused);
                    return;
                }
            }
        }
    }

    fn on_inbound_data(&mut self, stream: StreamId, data: &[u8]) {
        let Some(state) = self.inbound.get_mut(&stream) else {
            return;
        };
        state.decoder.push(data);
        loop {
            let Some(state) = self.inbound.get_mut(&stream) else {
                return;
            };
            if state.held.is_some() {
                return;
            }
            let frame = match state.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(error) => return self.fail_inbound(stream, error.into()),
            };
            match self.on_inbound_frame(stream, frame.clone()) {
                Ok(true) => {}
                Ok(false) => {
                    if let Some(state) = self.inbound.get_mut(&stream) {
                        state.held = Some(frame);
                    }
                    return;
                }
                Err(error) => return self.fail_inbound(stream, error),
            }
            if self.batch.log.len() >= self.config.max_batch {
                self.commit();
            }
        }
    }

    /// Takes in one frame; `Ok(false)`: not now (an outbox it goes to is full), hold it.
    fn on_inbound_frame(&mut self, stream: StreamId, frame: Frame) -> Result<bool, ChannelError> {
        let Some(state) = self.inbound.get_mut(&stream) else {
            return Ok(true);
        };
        let peer = state.peer;
        match frame {
            Frame::Hello {
                channel,
                incarnation,
            } => {
                if state.hello {
                    return Err(ChannelError::Unexpected);
                }
                if channel != self.config.name {
                    return Err(ChannelError::WrongChannel(channel));
                }
                let seen = self.peer_incarnations.get(&peer).copied().unwrap_or(0);
                if incarnation < seen {
                    return Err(ChannelError::StaleIncarnation {
                        seen,
                        got: incarnation,
                    });
                }
                state.hello = true;
                if incarnation > seen {
                    self.peer_incarnations.insert(peer, incarnation);
                    self.batch.peer_incarnations.insert(peer, incarnation);
                }
                Ok(true)
            }
            Frame::Msg {
                qseq,
                origin,
                seq,
                body,
            } => {
                if !state.hello {
                    return Err(ChannelError::Unexpected);
                }
                if qseq <= state.last {
                    return Err(ChannelError::NotIncreasing {
                        last: state.last,
                        got: qseq,
                    });
                }
                let high = self.delivered.get(&origin).copied().unwrap_or(0);
                if seq == 0 || (origin == self.me && seq > high) {
                    return Err(ChannelError::BadSeq(seq));
                }
                if seq <= high {
                    self.stats.duplicates += 1;
                } else if seq == high + 1 {
                    if self.config.forward {
                        let cap = self.config.max_outbox.saturating_mul(2);
                        let full = (self.links.iter())
                            .any(|(p, l)| *p != peer && *p != origin && l.outbox.len() >= cap);
                        if full {
                            return Ok(false);
                        }
                    }
                    self.deliver(Entry { origin, seq, body }, Some(peer));
                } else {
                    return Err(ChannelError::Gap {
                        origin,
                        expected: high + 1,
                        got: seq,
                    });
                }
                if let Some(state) = self.inbound.get_mut(&stream) {
                    state.last = qseq;
                }
                Ok(true)
            }
            Frame::Ack { .. } => Err(ChannelError::Unexpected),
        }
    }

    fn on_outbound_data(&mut self, now: Instant, stream: StreamId, data: &[u8]) {
        let Some(peer) = self.outbound.get(&stream).copied() else {
            return;
        };
        let Some(Link {
            out: Out::Open(out),
            outbox,
            ..
        }) = self.links.get_mut(&peer)
        else {
            return;
        };
        out.decoder.push(data);
        let error = loop {
            match out.decoder.next_frame() {
                Ok(None) => return,
                Err(error) => break ChannelError::from(error),
                Ok(Some(Frame::Ack { upto })) => {
                    if upto > out.sent {
                        break ChannelError::AckBeyondSent {
                            upto,
                            sent: out.sent,
                        };
                    }
                    let mut removed = false;
                    while outbox.front().is_some_and(|(q, _)| *q <= upto) {
                        outbox.pop_front();
                        removed = true;
                    }
                    if removed {
                        self.batch.acked.insert(peer, upto);
                    }
                }
                Ok(Some(_)) => break ChannelError::Unexpected,
            }
        };
        self.fail_outbound(now, stream, Some(error), true);
    }

    /// Writes acknowledgements and outbox entries, as flow control allows. Returns whether
    /// anything was written.
    fn write(&mut self) -> bool {
        let mut wrote = false;
        let manager = self.host.manager_mut();
        let mut dead = Vec::new();
        for (id, state) in &mut self.inbound {
            if state.wbuf.is_empty() && state.last > state.acked {
                Frame::Ack { upto: state.last }.encode(&mut state.wbuf);
                state.acked = state.last;
            }
            match flush(manager, *id, &mut state.wbuf) {
                Ok(n) => wrote |= n > 0,
                Err(()) => dead.push(*id),
            }
        }
        for id in dead.drain(..) {
            self.inbound.remove(&id);
        }
        for link in self.links.values_mut() {
            let Out::Open(out) = &mut link.out else {
                continue;
            };
            loop {
                match flush(manager, out.stream, &mut out.wbuf) {
                    Ok(n) => wrote |= n > 0,
                    Err(()) => {
                        dead.push(out.stream);
                        break;
                    }
                }
                if !out.wbuf.is_empty() {
                    break;
                }
                let index = link.outbox.partition_point(|(q, _)| *q < out.next);
                let Some((qseq, entry)) = link.outbox.get(index) else {
                    break;
                };
                Frame::Msg {
                    qseq: *qseq,
                    origin: entry.origin,
                    seq: entry.seq,
                    body: entry.body.clone(),
                }
                .encode(&mut out.wbuf);
                out.sent = *qseq;
                out.next = qseq + 1;
                self.stats.sent += 1;
            }
        }
        for id in dead {
            if let Some(peer) = self.outbound.remove(&id) {
                if let Some(link) = self.links.get_mut(&peer) {
                    link.out = Out::Idle;
                }
            }
        }
        wrote
    }

    /// Opens a stream to every connected link that has none on its preferred connection.
    fn open_streams(&mut self, now: Instant) {
        if self.failed.is_some() {
            return;
        }
        let mut stale = Vec::new();
        for (peer, link) in &mut self.links {
            if link.retry_at.is_some_and(|t| t <= now) {
                link.retry_at = None;
            }
            let conn = self.host.manager().connection(peer);
            let current = match &link.out {
                Out::Idle => None,
                Out::Opening { conn, .. } => Some(*conn),
                Out::Open(out) => Some(out.stream.conn()),
            };
            if current.is_some() && current == conn {
                continue;
            }
            if let Out::Open(out) = &link.out {
                stale.push(out.stream);
            }
            link.out = Out::Idle;
            if link.retry_at.is_some() {
                continue;
            }
            let Some(conn) = conn else {
                continue;
            };
            match self.host.open_stream(now, *peer, [PROTOCOL]) {
                Ok(id) => {
                    link.out = Out::Opening { id, conn };
                    self.opens.insert(id, conn);
                }
                Err(error) => {
                    debug!(%peer, %error, "channel stream not opened");
                    link.retry_at = Some(now + self.config.retry_delay);
                }
            }
        }
        for stream in stale {
            self.outbound.remove(&stream);
            self.refuse(stream);
        }
    }

    fn redial(&mut self, now: Instant) {
        if self.next_redial.is_some_and(|t| t > now) {
            return;
        }
        self.next_redial = Some(now + self.config.redial_interval);
        for (peer, link) in &self.links {
            if link.addrs.is_empty() || self.host.manager().connection(peer).is_some() {
                continue;
            }
            if let Err(error) = self.host.manager_mut().dial(now, *peer, link.addrs.clone()) {
                debug!(%peer, %error, "redial not started");
            }
        }
    }

    /// One round: take in events, commit, write, open streams. Returns whether it did
    /// anything that may have more to send.
    /// Takes the held messages of paused streams whose outboxes have room again, and reads
    /// on.
    fn resume(&mut self, now: Instant) {
        let held: Vec<StreamId> = (self.inbound.iter())
            .filter(|(_, s)| s.held.is_some())
            .map(|(id, _)| *id)
            .collect();
        for stream in held {
            let Some(frame) = self.inbound.get_mut(&stream).and_then(|s| s.held.take()) else {
                continue;
            };
            match self.on_inbound_frame(stream, frame.clone()) {
                Ok(true) => {
                    self.on_inbound_data(stream, &[]);
                    self.read(now, stream);
                }
                Ok(false) => {
                    if let Some(state) = self.inbound.get_mut(&stream) {
                        state.held = Some(frame);
                    }
                }
                Err(error) => self.fail_inbound(stream, error),
            }
        }
    }

    fn drive(&mut self, now: Instant) -> bool {
        let took = self.pump(now);
        self.resume(now);
        self.commit();
        self.open_streams(now);
        let wrote = self.write();
        took || wrote
    }
}

/// Writes as much of `buf` as the stream takes; `Err` if the stream is gone.
fn flush(manager: &mut crate::Manager, stream: StreamId, buf: &mut Vec<u8>) -> Result<usize, ()> {
    if buf.is_empty() {
        return Ok(0);
    }
    match manager.stream_write(stream, buf) {
        Ok(n) => {
            buf.drain(..n);
            Ok(n)
        }
        Err(StreamError::Blocked) => Ok(0),
        Err(_) => Err(()),
    }
}

impl<S: Store> SansIo for Channels<S> {
    type Event = ChannelEvent;

    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        data: &[u8],
    ) {
        // Taken in at the next `poll_transmit`, so that a run of datagrams is one commit.
        self.host.handle_datagram(now, from, local_ip, data);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.host.handle_timeout(now);
        self.redial(now);
    }

    fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr) {
        self.host.handle_unreachable(now, addr);
    }

    fn set_max_datagrams(&mut self, max: usize) {
        self.host.set_max_datagrams(max);
    }

    fn shard(&self) -> Option<u8> {
        self.host.shard()
    }

    fn datagram_shard(&self, datagram: &[u8]) -> Option<u8> {
        self.host.datagram_shard(datagram)
    }

    /// Takes in what arrived since the last call, commits it in one batch (with what was
    /// accepted), then writes: nothing leaves before the commit it depends on.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        loop {
            let busy = self.drive(now);
            if let Some(transmit) = self.host.poll_transmit(now, buf) {
                return Some(transmit);
            }
            // Sending may have queued host events (a connection that died of it).
            if !busy && !self.pump(now) {
                return None;
            }
        }
    }

    /// Events as of the last `poll_transmit`: call it first, as the loop does.
    fn poll_event(&mut self) -> Option<ChannelEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let retry = (self.links.values()).filter_map(|l| l.retry_at).min();
        [self.host.poll_timeout(), self.next_redial, retry]
            .into_iter()
            .flatten()
            .min()
    }
}

impl<S: Store> crate::GracefulClose for Channels<S> {
    fn close_all(&mut self, now: Instant) {
        self.host.manager_mut().close_all(now);
    }

    fn is_closed(&self) -> bool {
        self.host.manager().connection_count() == 0
    }
}

#[cfg(feature = "sim")]
impl crate::sim::Simulated for Channels<MemoryStore> {
    /// The manager's, the host's and the channels' configuration, and the store, which a
    /// restart keeps (clones share it).
    type Config = (crate::Config, super::HostConfig, ChannelConfig, MemoryStore);

    fn build(
        identity: crate::Identity,
        (config, host_config, channels, store): Self::Config,
        seed: [u8; 32],
        now: Instant,
        wall_now: std::time::SystemTime,
    ) -> Result<Self, crate::ManagerError> {
        let host = <Host as crate::sim::Simulated>::build(
            identity,
            (config, host_config),
            seed,
            now,
            wall_now,
        )?;
        // A memory store only fails if a thread panicked holding it.
        Ok(Channels::new(now, host, store, channels)
            .unwrap_or_else(|error| panic!("memory store failed: {error}")))
    }

    fn manager_mut(&mut self) -> &mut crate::Manager {
        self.host.manager_mut()
    }
}
