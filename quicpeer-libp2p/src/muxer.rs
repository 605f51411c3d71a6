//! [`Connection`], the `StreamMuxer` a Swarm runs a connection on, and [`Stream`], its
//! substream. They exist to turn quicpeer-tokio's async calls (`accept_bi`, `open_bi`,
//! `closed`) into the poll functions libp2p's muxer trait asks for, and to make the
//! connection's end visible to the Swarm: `poll` fails with [`Error::ConnectionLost`] carrying
//! the [`Cause`](quicpeer::Cause) once quicpeer has lost it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p_core::muxing::{StreamMuxer, StreamMuxerEvent};
use quicpeer::Cause;
use quicpeer_tokio::{ConnectionError, Endpoint, RecvStream, SendStream};

use crate::Error;

type StreamFuture = BoxFuture<'static, Result<(SendStream, RecvStream), ConnectionError>>;

/// One quicpeer connection as a libp2p `StreamMuxer`: every QUIC bidirectional stream is a
/// substream. It keeps its endpoint (socket and driver task) alive; dropping it closes the
/// connection.
pub struct Connection {
    /// Keeps the endpoint's driver running as long as the connection is used.
    _endpoint: Arc<Endpoint>,
    conn: quicpeer_tokio::Connection,
    inbound: Option<StreamFuture>,
    outbound: Option<StreamFuture>,
    closed: BoxFuture<'static, Cause>,
    /// Why the connection ended, once `closed` said (it must not be polled again).
    lost: Option<Cause>,
}

impl Connection {
    pub(crate) fn new(endpoint: Arc<Endpoint>, conn: quicpeer_tokio::Connection) -> Self {
        let watched = conn.clone();
        Connection {
            _endpoint: endpoint,
            conn,
            inbound: None,
            outbound: None,
            closed: async move { watched.closed().await }.boxed(),
            lost: None,
        }
    }

    /// The quicpeer-tokio connection underneath (its `ConnId`, remote address, `closed()`).
    pub fn inner(&self) -> &quicpeer_tokio::Connection {
        &self.conn
    }
}

fn stream_error(error: ConnectionError) -> Error {
    match error {
        ConnectionError::Lost(cause) => Error::ConnectionLost(cause),
        _ => Error::EndpointClosed,
    }
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let conn = &this.conn;
        let future = this.inbound.get_or_insert_with(|| {
            let conn = conn.clone();
            async move { conn.accept_bi().await }.boxed()
        });
        let result = futures::ready!(future.poll_unpin(cx));
        this.inbound = None;
        Poll::Ready(
            result
                .map(|(send, recv)| Stream { send, recv })
                .map_err(stream_error),
        )
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let conn = &this.conn;
        let future = this.outbound.get_or_insert_with(|| {
            let conn = conn.clone();
            async move { conn.open_bi().await }.boxed()
        });
        let result = futures::ready!(future.poll_unpin(cx));
        this.outbound = None;
        Poll::Ready(
            result
                .map(|(send, recv)| Stream { send, recv })
                .map_err(stream_error),
        )
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The close is queued in the manager; the driver sends it. Nothing to wait for.
        self.conn.close();
        Poll::Ready(Ok(()))
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        if this.lost.is_none() {
            this.lost = Some(futures::ready!(this.closed.poll_unpin(cx)));
        }
        Poll::Ready(Err(Error::ConnectionLost(
            this.lost.clone().unwrap_or(Cause::ClosedLocally),
        )))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // quicpeer-tokio keeps a connection whose handles are gone (it is keyed by peer); the
        // Swarm dropping its muxer means it is done with it.
        self.conn.close();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

/// A substream: one QUIC bidirectional stream, both halves. Closing it (`poll_close`)
/// finishes the sending half; reading goes on until the peer finishes its own.
pub struct Stream {
    send: SendStream,
    recv: RecvStream,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().send).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_close(Pin::new(&mut self.get_mut().send), cx)
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}
