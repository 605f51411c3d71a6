//! The peer book: the peers a node has been connected to, kept across its restarts.
//!
//! A restarted node has lost its connections, and its peers still hold theirs to the old
//! process. They notice at the first packet they send (a stateless reset answers it), which for
//! an idle link is the next keep-alive, seconds later. A node that remembers its recent peers
//! dials them the moment it is back instead: each peer sees an inbound connection from a PeerId
//! it holds a connection to, under a new certificate key, and switches to it at once (the
//! restart epoch, `lifecycle`). The restart is then found about one round trip after the node is
//! up, idle or not, on the old port or a new one.
//!
//! The manager records, per peer, when it was last seen connected, who dialed, and where it was
//! reached ([`Manager::peer_book`]); the application stores that (the CLI keeps it in a file) and
//! hands it to the next process ([`Manager::dial_peer_book`]), which dials the most recently seen
//! peers first, no more than `Limits::max_pending_dials` at a time.

use super::*;

/// What the peer book keeps of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerRecord {
    /// The peer.
    pub peer: PeerId,
    /// Where it was reached, the address of its last connection first, then the addresses
    /// known for dialing it.
    pub addrs: Vec<SocketAddr>,
    /// Who dialed its last connection. A restarted node dials every peer back, but lets those
    /// that had dialed it reconnect by themselves afterwards.
    pub direction: Direction,
    /// When it was last seen connected (wall-clock time).
    pub last_seen: SystemTime,
}

impl PeerRecord {
    /// A record of `peer`, reached at `addrs`, last seen at `last_seen`.
    pub fn new(
        peer: PeerId,
        addrs: Vec<SocketAddr>,
        direction: Direction,
        last_seen: SystemTime,
    ) -> Self {
        Self {
            peer,
            addrs,
            direction,
            last_seen,
        }
    }
}

/// When and how a peer was last seen connected.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    pub(super) at: SystemTime,
    pub(super) addr: SocketAddr,
    pub(super) direction: Direction,
}

impl Manager {
    /// The peer book: every peer connected now (last seen now) or seen connected earlier by
    /// this manager or the peer book it was given, most recently seen first. At most
    /// `Limits::max_peer_book` peers are remembered; the least recently seen go first.
    pub fn peer_book(&self) -> Vec<PeerRecord> {
        let now = self.clock.get();
        let mut records: Vec<PeerRecord> = (self.seen.iter())
            .map(|(peer, seen)| {
                let entry = self.peers.get(peer);
                let current = (entry.and_then(|p| p.preferred))
                    .and_then(|id| self.conns.get(&id))
                    .filter(|c| c.phase == Phase::Established);
                let (at, addr, direction) = match current {
                    Some(conn) => (now, conn.addr, conn.direction),
                    None => (seen.at, seen.addr, seen.direction),
                };
                let mut addrs = vec![addr];
                for known in entry.map(|p| p.addrs.as_slice()).unwrap_or_default() {
                    if !addrs.contains(known) {
                        addrs.push(*known);
                    }
                }
                PeerRecord::new(*peer, addrs, direction, at)
            })
            .collect();
        records.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.peer.cmp(&b.peer)));
        records
    }

    /// Takes in a peer book (a restarted node's first command) and dials its `max` most
    /// recently seen peers, most recent first; returns how many dials it queued. The others stay
    /// in the book (within `Limits::max_peer_book`), to be saved again. They start while the
    /// dials in progress and the inbound handshakes in flight together stay below
    /// `Limits::max_pending_dials` (peers that come back by themselves hold the book back), the
    /// rest as earlier ones end, at the pace of `Limits::peer_book_dials`. Peers that
    /// had dialed us are dialed back but not reconnected to afterwards (their reconnect policy
    /// becomes [`ReconnectPolicy::never`]): they come back by themselves, as before.
    ///
    /// Each dial's outcome is reported as any dial's (`Connected`, `DialFailed`). A peer that
    /// still holds a connection to our previous process sees a new certificate key under our
    /// PeerId and replaces that connection at once.
    pub fn dial_peer_book(
        &mut self,
        now: Instant,
        book: impl IntoIterator<Item = PeerRecord>,
        max: usize,
    ) -> usize {
        let _span = self.entered_span();
        self.set_time(now);
        let local = self.identity.peer_id();
        let mut records: Vec<PeerRecord> = book
            .into_iter()
            .filter(|r| r.peer != local && !r.addrs.is_empty())
            .collect();
        // One record per peer, its most recent; then the most recent peers first.
        records.sort_by(|a, b| a.peer.cmp(&b.peer).then(b.last_seen.cmp(&a.last_seen)));
        records.dedup_by(|later, first| later.peer == first.peer);
        records.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.peer.cmp(&b.peer)));
        // Every record stays in the book (within its bound); the `max` most recent are dialed.
        for record in &records {
            if let Some(&addr) = record.addrs.first() {
                let seen = Seen {
                    at: record.last_seen,
                    addr,
                    direction: record.direction,
                };
                self.remember(record.peer, seen);
            }
        }
        records.truncate(max);
        let queued = records.len();
        self.book_dials.extend(records);
        debug!(queued, "dialing the peer book");
        self.start_book_dials(now);
        queued
    }

    /// Starts queued peer-book dials while pending-dial slots are free and the pace
    /// (`Limits::peer_book_dials`) allows; when it does not, wakes up when it will.
    pub(super) fn start_book_dials(&mut self, now: Instant) {
        self.book_next = None;
        while !self.book_dials.is_empty() {
            // Inbound handshakes count against the window too: while peers come back by
            // themselves (a restart's keep-alives found the reset), the book's dials wait
            // instead of adding handshakes (a book dial is a full one, with this node as the
            // client) that a busy node cannot finish before they time out.
            let handshakes = self.pending_dials + self.inbound_handshakes;
            if handshakes >= self.config.limits.max_pending_dials || self.shutting_down {
                return;
            }
            if !self.book_bucket.take(now) {
                self.book_next = Some(self.book_bucket.next_token_at(now));
                return;
            }
            let Some(record) = self.book_dials.pop_front() else {
                return;
            };
            if record.direction == Direction::Inbound {
                self.set_reconnect_policy(record.peer, Some(ReconnectPolicy::never()));
            }
            if let Err(error) = self.dial(now, record.peer, record.addrs) {
                debug!(peer = %record.peer, %error, "peer-book dial not started");
            }
        }
    }

    /// Notes that `peer` was seen connected, evicting the least recently seen peer beyond the
    /// bound.
    pub(super) fn remember(&mut self, peer: PeerId, seen: Seen) {
        if let Some(known) = self.seen.get_mut(&peer) {
            if seen.at >= known.at {
                *known = seen;
            }
            return;
        }
        if self.seen.len() >= self.config.limits.max_peer_book {
            let oldest = (self.seen.iter())
                .min_by_key(|(peer, seen)| (seen.at, **peer))
                .map(|(peer, _)| *peer);
            match oldest {
                Some(oldest) if self.seen.get(&oldest).is_some_and(|o| o.at <= seen.at) => {
                    self.seen.remove(&oldest);
                }
                _ => return,
            }
        }
        self.seen.insert(peer, seen);
    }
}
