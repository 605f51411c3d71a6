//! [`Connection`]: a handle of one established connection to a verified peer, to open and
//! accept streams and to learn how it ended. It exists so that what the manager knows about a
//! connection (its peer, its streams, its [`Cause`] of death) can be awaited.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use quicpeer::{Cause, ConnId, ConnectionStats, PeerId, StreamError as ManagerStreamError};

use crate::shared::{now, Shared, State};
use crate::stream::{RecvStream, SendStream};

/// Why a connection could not open or accept a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The connection ended, for this reason. After [`Cause::PeerRestarted`] the endpoint has
    /// already started a fresh connection to the peer ([`Endpoint::connect`](crate::Endpoint::connect)
    /// or [`Endpoint::connection`](crate::Endpoint::connection) gives it).
    #[error("connection lost: {0}")]
    Lost(Cause),
    /// The endpoint was closed or dropped.
    #[error("endpoint closed")]
    EndpointClosed,
}

/// One established connection to a verified peer.
///
/// Cloning gives another handle of the same connection. Dropping every handle does not close
/// it: the endpoint keeps connections per peer (and reconnects them); [`Connection::close`]
/// closes it.
pub struct Connection {
    shared: Arc<Shared>,
    conn: ConnId,
    peer: PeerId,
    addr: SocketAddr,
}

impl Connection {
    /// A handle of `conn`, if the API knows it.
    pub(crate) fn new(shared: &Arc<Shared>, state: &mut State, conn: ConnId) -> Option<Self> {
        if state.stopped {
            return None;
        }
        let c = state.conns.get_mut(&conn)?;
        c.handles += 1;
        Some(Connection {
            shared: shared.clone(),
            conn,
            peer: c.peer,
            addr: c.addr,
        })
    }

    /// The verified identity of the peer.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The manager's handle of this connection, as named in [`PeerEvent`](crate::PeerEvent)s.
    pub fn id(&self) -> ConnId {
        self.conn
    }

    /// The connection's statistics (round-trip time, packets and bytes, losses), while the
    /// manager knows it.
    pub fn stats(&self) -> Option<ConnectionStats> {
        self.shared.lock().manager.stats(self.conn)
    }

    /// Opens a bidirectional stream. Waits while the peer's limit on concurrent streams is
    /// reached, until it grants more. The peer learns of the stream when data is first written.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(err) = self.ended(&state) {
                return Poll::Ready(Err(err));
            }
            match state.manager.open_stream(self.conn) {
                Ok(stream) => {
                    state.dispatch();
                    Poll::Ready(Ok(crate::stream::pair(&self.shared, &mut state, stream)))
                }
                Err(ManagerStreamError::Limit) => {
                    if let Some(c) = state.conns.get_mut(&self.conn) {
                        c.open_wakers.register(cx.waker());
                    }
                    Poll::Pending
                }
                Err(_) => Poll::Ready(Err(self
                    .ended(&state)
                    .unwrap_or(ConnectionError::Lost(Cause::ClosedLocally)))),
            }
        })
        .await
    }

    /// The next bidirectional stream the peer opened.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            let next = state
                .conns
                .get_mut(&self.conn)
                .and_then(|c| c.incoming.pop_front());
            if let Some(stream) = next {
                return Poll::Ready(Ok(crate::stream::pair(&self.shared, &mut state, stream)));
            }
            if let Some(err) = self.ended(&state) {
                return Poll::Ready(Err(err));
            }
            if let Some(c) = state.conns.get_mut(&self.conn) {
                c.accept_wakers.register(cx.waker());
            }
            Poll::Pending
        })
        .await
    }

    /// Closes the connection (the peer sees it closed by us; the endpoint does not redial it).
    pub fn close(&self) {
        let mut state = self.shared.lock();
        if state.stopped {
            return;
        }
        state.manager.close(now(), self.conn);
        state.dispatch();
        drop(state);
        self.shared.wake_driver();
    }

    /// Waits until the connection ends, and tells why ([`Cause::ClosedLocally`] too when the
    /// endpoint stopped).
    pub async fn closed(&self) -> Cause {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            match self.ended(&state) {
                Some(ConnectionError::Lost(cause)) => return Poll::Ready(cause),
                Some(ConnectionError::EndpointClosed) => return Poll::Ready(Cause::ClosedLocally),
                None => {}
            }
            if let Some(c) = state.conns.get_mut(&self.conn) {
                c.closed_wakers.register(cx.waker());
            }
            Poll::Pending
        })
        .await
    }

    /// Why the connection can no longer be used, if it cannot.
    fn ended(&self, state: &State) -> Option<ConnectionError> {
        match state.conns.get(&self.conn) {
            Some(c) => match &c.lost {
                Some(cause) => Some(ConnectionError::Lost(cause.clone())),
                None if state.stopped => Some(ConnectionError::EndpointClosed),
                None => None,
            },
            None => Some(ConnectionError::EndpointClosed),
        }
    }
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        let mut state = self.shared.lock();
        if let Some(c) = state.conns.get_mut(&self.conn) {
            c.handles += 1;
        }
        Connection {
            shared: self.shared.clone(),
            conn: self.conn,
            peer: self.peer,
            addr: self.addr,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(c) = state.conns.get_mut(&self.conn) {
            c.handles = c.handles.saturating_sub(1);
        }
        state.forget_if_unused(self.conn);
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("conn", &self.conn)
            .field("peer", &self.peer)
            .field("addr", &self.addr)
            .finish()
    }
}
