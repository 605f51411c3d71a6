//! The [`Endpoint`]: one UDP socket, one manager, one driver task; dials peers by PeerId,
//! accepts inbound connections, reports peer events. It exists as the entry point that owns
//! the driver task's lifetime: closing it closes every connection gracefully, dropping it stops
//! the task at once (as a crash would).

use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use quicpeer::{
    Cause, Config, ConnId, DialError, DialOutcome, Direction, Identity, Manager, PeerId,
};
use tokio::sync::{broadcast, oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::connection::Connection;
use crate::shared::{now, Shared, State};

/// Peer events a subscriber may lag behind by before it loses the oldest.
pub const EVENT_CAPACITY: usize = 1024;

/// Datagrams of [`Endpoint::send_raw`] that may wait for the driver; more are refused.
pub const RAW_QUEUE: usize = 64;

/// How long [`Endpoint::close`] waits for the peers to be told.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// What happened to a peer: the connection-level events of the manager, for
/// [`Endpoint::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A connection completed its handshake and the peer's identity is verified.
    Connected {
        /// The verified peer.
        peer: PeerId,
        /// The new connection ([`Endpoint::connection`] gives a handle of the preferred one).
        conn: ConnId,
        /// The peer's address on it.
        addr: SocketAddr,
        /// Who dialed (an automatic redial is `Outbound`).
        direction: Direction,
        /// The connection it takes over from, if any (a reconnect after a restart).
        replaced: Option<ConnId>,
    },
    /// An established connection ended; its streams fail with
    /// [`StreamError::ConnectionLost`](crate::StreamError::ConnectionLost).
    ConnectionLost {
        /// The peer.
        peer: PeerId,
        /// The connection.
        conn: ConnId,
        /// The peer's address on it.
        addr: SocketAddr,
        /// Why: [`Cause::PeerRestarted`] when the peer restarted (a fresh connection is on
        /// its way).
        cause: Cause,
    },
    /// The endpoint started a fresh connection to a peer it lost.
    Reconnecting {
        /// The peer.
        peer: PeerId,
        /// The connection that was lost.
        lost: ConnId,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A connection has had no answer for a while; a fresh dial races it.
    Unresponsive {
        /// The peer.
        peer: PeerId,
        /// The silent connection.
        conn: ConnId,
    },
    /// Every address of a dial failed.
    DialFailed {
        /// The peer.
        peer: PeerId,
        /// Each address tried, with its own error.
        errors: Vec<(SocketAddr, Cause)>,
        /// Whether the endpoint will try again by itself (a reconnect with backoff).
        will_retry: bool,
    },
}

/// Counters of the endpoint's socket ([`Endpoint::stats`]), as the mio driver's
/// `DriverStats`: with GSO one send system call carries a run of datagrams, with GRO one
/// receive buffer holds several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// Send system calls those took.
    pub send_calls: u64,
    /// Sends that met a full socket buffer (and waited for it to drain).
    pub send_blocked: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// Receive system calls that returned datagrams.
    pub recv_calls: u64,
}

/// Why [`Endpoint::connect`] gave no connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The dial could not start (no address, a limit, our own PeerId, shutting down).
    #[error("dial not started: {0}")]
    Dial(#[from] DialError),
    /// Every address was tried and failed; each with its cause (a wrong identity is
    /// [`Cause::PeerIdMismatch`], no answer is a handshake timeout).
    #[error("dial to {peer} failed: {}", describe(errors))]
    DialFailed {
        /// The peer dialed.
        peer: PeerId,
        /// Each address tried, with why it failed.
        errors: Vec<(SocketAddr, Cause)>,
    },
    /// The one attempt of [`Endpoint::connect_addr`] failed (a wrong identity is
    /// [`Cause::PeerIdMismatch`], a closed port a refused or unreachable handshake, silence a
    /// handshake timeout).
    #[error("connection to {addr} failed: {cause}")]
    Failed {
        /// The address dialed.
        addr: SocketAddr,
        /// Why the attempt failed.
        cause: Cause,
    },
    /// The connection was established, then lost before `connect` could hand it out (its
    /// [`PeerEvent::ConnectionLost`] says why). Rare; connecting again is the answer.
    #[error("connection {conn} to {peer} lost as soon as it was established")]
    LostAtOnce {
        /// The peer.
        peer: PeerId,
        /// The connection, as named in the events.
        conn: ConnId,
    },
    /// The endpoint was closed or dropped before the dial ended.
    #[error("endpoint closed")]
    EndpointClosed,
}

fn describe(errors: &[(SocketAddr, Cause)]) -> String {
    let parts: Vec<String> = errors.iter().map(|(a, c)| format!("{a}: {c}")).collect();
    parts.join("; ")
}

/// A QUIC endpoint on tokio, keyed by peers: one UDP socket and the task that drives it.
///
/// Dropping it without [`Endpoint::close`] stops the driver at once, without telling the
/// peers (as a crash would): their connections die by idle timeout, or, when this identity
/// comes back on the same address, by stateless reset ([`Cause::PeerRestarted`]).
/// [`Connection`]s and streams of a stopped endpoint fail with `EndpointClosed` errors.
pub struct Endpoint {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    peer_id: PeerId,
    task: JoinHandle<()>,
    events: broadcast::Sender<crate::PeerEvent>,
}

impl Endpoint {
    /// Binds a UDP socket at `addr` and starts the driver task on the current tokio runtime.
    /// Inbound connections are accepted from the start ([`Endpoint::accept`]).
    ///
    /// Fails if the socket cannot be bound or the manager cannot be built from `config`
    /// (`io::ErrorKind::InvalidInput`, the [`quicpeer::ManagerError`] inside).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (it spawns the driver task), or in one without its I/O and time
    /// drivers enabled.
    pub fn bind(identity: Identity, config: Config, addr: SocketAddr) -> io::Result<Endpoint> {
        let socket = crate::driver::Socket::bind(addr)?;
        let local_addr = socket.local_addr();
        let peer_id = identity.peer_id();
        let mut manager = Manager::new(now(), SystemTime::now(), identity, config, seed())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        manager.set_max_datagrams(socket.transmit_datagrams());
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(manager, events.clone())),
            notify: Notify::new(),
        });
        let task = tokio::spawn(crate::driver::run(shared.clone(), socket));
        debug!(%peer_id, %local_addr, "endpoint bound");
        Ok(Endpoint {
            shared,
            local_addr,
            peer_id,
            task,
            events,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the driver did with the socket so far: datagrams and system calls.
    pub fn stats(&self) -> EndpointStats {
        self.shared.lock().stats
    }

    /// This endpoint's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Connects to `peer`, trying `addrs` (and the addresses already known for it); the
    /// handshake verifies that the other side is `peer`. Returns the peer's connection at once
    /// if it has one (an inbound one, or one the endpoint redialed after a restart); joins the
    /// dial in progress if there is one.
    pub async fn connect(
        &self,
        peer: PeerId,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Connection, ConnectError> {
        let waiter = {
            let mut state = self.shared.lock();
            if state.stopped || state.stop_requested {
                return Err(ConnectError::EndpointClosed);
            }
            let outcome = state.manager.dial(now(), peer, addrs);
            state.dispatch();
            match outcome? {
                DialOutcome::AlreadyConnected(conn) => {
                    return Connection::new(&self.shared, &mut state, conn)
                        .ok_or(ConnectError::EndpointClosed);
                }
                DialOutcome::Started | DialOutcome::Joined => {
                    let (tx, rx) = oneshot::channel();
                    state.dials.entry(peer).or_default().push(tx);
                    rx
                }
            }
        };
        self.shared.wake_driver();
        let conn = waiter.await.map_err(|_| ConnectError::EndpointClosed)??;
        let mut state = self.shared.lock();
        Connection::new(&self.shared, &mut state, conn).ok_or(if state.stopped {
            ConnectError::EndpointClosed
        } else {
            ConnectError::LostAtOnce { peer, conn }
        })
    }

    /// Starts one connection to `addr` and waits for its handshake: for an embedder that owns
    /// its dial and redial logic (a libp2p `Transport`). `expected` pins the PeerId the
    /// handshake must prove (`None`: whoever answers, named by [`Connection::peer_id`]). Unlike
    /// [`Endpoint::connect`] it never joins or reuses another connection, tries no other
    /// address, and its failure ([`ConnectError::Failed`]) does not touch the peer's dial state.
    ///
    /// Dropping the future before it ends closes the attempt (or the connection, if it was
    /// established in the meantime and not handed out).
    pub async fn connect_addr(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<Connection, ConnectError> {
        let mut guard = {
            let mut state = self.shared.lock();
            if state.stopped || state.stop_requested {
                return Err(ConnectError::EndpointClosed);
            }
            let started = state.manager.connect(now(), addr, expected);
            state.dispatch();
            let conn = started?;
            let (tx, rx) = oneshot::channel();
            state.attempts.insert(conn, tx);
            AttemptGuard {
                shared: self.shared.clone(),
                conn,
                rx: Some(rx),
            }
        };
        self.shared.wake_driver();
        let rx = guard.rx.as_mut().ok_or(ConnectError::EndpointClosed)?;
        let outcome = rx.await;
        guard.rx = None;
        let conn = outcome.map_err(|_| ConnectError::EndpointClosed)??;
        let mut state = self.shared.lock();
        let peer = state.conns.get(&conn).map(|c| c.peer);
        Connection::new(&self.shared, &mut state, conn).ok_or(match peer {
            Some(peer) if !state.stopped => ConnectError::LostAtOnce { peer, conn },
            _ => ConnectError::EndpointClosed,
        })
    }

    /// Sends `payload` to `to` from the endpoint's socket, outside QUIC: the datagrams a hole
    /// punch sends to open a NAT binding for the peer's connection. Best effort, as UDP is;
    /// returns `false` (and sends nothing) when [`RAW_QUEUE`] datagrams already wait for the
    /// driver or the endpoint is closed.
    pub fn send_raw(&self, to: SocketAddr, payload: Vec<u8>) -> bool {
        {
            let mut state = self.shared.lock();
            if state.stopped || state.stop_requested || state.raw.len() >= RAW_QUEUE {
                return false;
            }
            state.raw.push_back((to, payload));
        }
        self.shared.wake_driver();
        true
    }

    /// Whether new inbound connections are accepted (they are from [`Endpoint::bind`] on).
    /// With `false`, new clients are refused statelessly while the established connections
    /// and this endpoint's own dials go on: a listener that stops listening and keeps serving
    /// what it holds.
    pub fn set_accepting(&self, accepting: bool) {
        self.shared.lock().manager.set_accepting(accepting);
    }

    /// Whether new inbound connections are accepted ([`Endpoint::set_accepting`]).
    pub fn is_accepting(&self) -> bool {
        self.shared.lock().manager.is_accepting()
    }

    /// The preferred established connection to `peer`, if there is one: for instance the one
    /// the endpoint opened by itself after the peer restarted.
    pub fn connection(&self, peer: &PeerId) -> Option<Connection> {
        let mut state = self.shared.lock();
        let conn = state.manager.connection(peer)?;
        Connection::new(&self.shared, &mut state, conn)
    }

    /// The next inbound connection (the peer dialed us), or `None` once the endpoint is
    /// closed. Connections wait for this call in a queue bounded by the manager's connection
    /// limits; one lost before it is taken is dropped from the queue.
    pub async fn accept(&self) -> Option<Connection> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(conn) = state.accept_queue.pop_front() {
                if let Some(c) = state.conns.get_mut(&conn) {
                    c.queued = false;
                }
                return Poll::Ready(Connection::new(&self.shared, &mut state, conn));
            }
            if state.stopped || state.stop_requested {
                return Poll::Ready(None);
            }
            state.accept_wakers.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// A receiver of peer events from now on. Bounded ([`EVENT_CAPACITY`]): a receiver that
    /// lags behind loses the oldest events and is told so (`RecvError::Lagged`); the driver
    /// never waits for it.
    pub fn events(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    /// Closes every connection gracefully and stops the endpoint, waiting at most
    /// [`CLOSE_GRACE`] for the closes to be sent and the connections to drain. Returns whether
    /// every connection ended in time.
    pub async fn close(&self) -> bool {
        self.close_within(CLOSE_GRACE).await
    }

    /// [`Endpoint::close`] with a deadline of `grace` from now.
    pub async fn close_within(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        {
            let mut state = self.shared.lock();
            if state.stopped {
                return state.manager.connection_count() == 0;
            }
            state.manager.close_all(now());
            state.dispatch();
        }
        self.shared.wake_driver();
        let drained = poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.stopped || state.manager.connection_count() == 0 {
                return Poll::Ready(());
            }
            state.close_wakers.register(cx.waker());
            Poll::Pending
        });
        let closed =
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), drained).await;
        let mut state = self.shared.lock();
        let all = state.manager.connection_count() == 0;
        state.stop_requested = true;
        state.accept_wakers.wake();
        drop(state);
        self.shared.wake_driver();
        closed.is_ok() && all
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.lock().stop();
    }
}

/// The attempt of a [`Endpoint::connect_addr`] in flight: dropped before the attempt ended
/// (the future was dropped), it closes the attempt, or the connection it became.
struct AttemptGuard {
    shared: Arc<Shared>,
    conn: ConnId,
    /// The attempt's outcome, until it was taken.
    rx: Option<oneshot::Receiver<Result<ConnId, ConnectError>>>,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut state = self.shared.lock();
        let pending = state.attempts.remove(&self.conn).is_some();
        let established = matches!(rx.try_recv(), Ok(Ok(_)));
        if state.stopped || !(pending || established) {
            return;
        }
        debug!(conn = %self.conn, "connect_addr dropped: closing its attempt");
        state.manager.close(now(), self.conn);
        state.dispatch();
        drop(state);
        self.shared.wake_driver();
    }
}

/// A seed for the manager's random choices (connection IDs, jitter) without a random-number
/// dependency: std's `RandomState` is keyed from the operating system's randomness.
fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(i);
        hasher.write_u128(nanos);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    seed
}
