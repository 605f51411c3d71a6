//! [`SendStream`] and [`RecvStream`]: the two halves of a bidirectional stream as tokio's
//! `AsyncWrite` and `AsyncRead`. They exist to turn the manager's `StreamError::Blocked` into
//! backpressure: a write the peer's flow control refuses parks its waker until
//! `StreamWritable`, a read with nothing to read parks until `StreamReadable`. Bytes go straight
//! between the caller's buffer and QUIC's; this crate holds none.
//!
//! Failures are `io::Error`s whose inner error is a [`StreamError`]:
//! `err.get_ref().and_then(|e| e.downcast_ref::<StreamError>())`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quicpeer::{Cause, Read, StreamError as ManagerStreamError, StreamId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::shared::{Shared, State};

/// Why a stream operation failed: the inner error of the `io::Error`s of [`SendStream`] and
/// [`RecvStream`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream's connection ended, for this reason. [`Cause::PeerRestarted`]: the peer
    /// restarted, and the endpoint has already started a fresh connection to it.
    #[error("connection lost: {0}")]
    ConnectionLost(Cause),
    /// The peer asked us to stop sending, with this code.
    #[error("stopped by peer with code {0}")]
    Stopped(u64),
    /// The peer reset the stream (abandoned sending), with this code.
    #[error("reset by peer with code {0}")]
    Reset(u64),
    /// The stream was already finished or reset (writing) or stopped (reading) on our side.
    #[error("stream closed")]
    Closed,
    /// The endpoint was closed or dropped.
    #[error("endpoint closed")]
    EndpointClosed,
}

impl StreamError {
    fn into_io(self) -> io::Error {
        let kind = match &self {
            StreamError::ConnectionLost(Cause::ClosedLocally) => io::ErrorKind::ConnectionAborted,
            StreamError::ConnectionLost(_) | StreamError::Stopped(_) | StreamError::Reset(_) => {
                io::ErrorKind::ConnectionReset
            }
            StreamError::Closed => io::ErrorKind::BrokenPipe,
            StreamError::EndpointClosed => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, self)
    }
}

/// The sending half of a bidirectional stream.
///
/// `poll_shutdown` finishes the stream (the peer reads its end); dropping it unfinished
/// finishes it too. Writes wait while the peer's flow control allows nothing more.
pub struct SendStream {
    shared: Arc<Shared>,
    stream: StreamId,
    finished: bool,
}

/// The receiving half of a bidirectional stream.
///
/// Reading returns `Ok` with nothing read at the stream's end. Dropping it before the end asks
/// the peer to stop sending (code 0).
pub struct RecvStream {
    shared: Arc<Shared>,
    stream: StreamId,
    /// The stream's end was read.
    ended: bool,
    /// The peer reset the stream, with this code: every later read says so again.
    reset: Option<u64>,
    /// `stop` was called: reads fail with `Closed`.
    stopped: bool,
}

/// The two halves of `stream`, counted as handles of it and of its connection.
pub(crate) fn pair(
    shared: &Arc<Shared>,
    state: &mut State,
    stream: StreamId,
) -> (SendStream, RecvStream) {
    state.streams.entry(stream).or_default().handles += 2;
    if let Some(c) = state.conns.get_mut(&stream.conn()) {
        c.handles += 2;
    }
    (
        SendStream {
            shared: shared.clone(),
            stream,
            finished: false,
        },
        RecvStream {
            shared: shared.clone(),
            stream,
            ended: false,
            reset: None,
            stopped: false,
        },
    )
}

/// Why a manager call on `stream` failed, in this crate's terms.
fn failure(state: &State, stream: StreamId, error: ManagerStreamError) -> StreamError {
    if let Some(cause) = state.conns.get(&stream.conn()).and_then(|c| c.lost.clone()) {
        return StreamError::ConnectionLost(cause);
    }
    match error {
        _ if state.stopped => StreamError::EndpointClosed,
        ManagerStreamError::UnknownConnection | ManagerStreamError::NotConnected => {
            StreamError::ConnectionLost(Cause::ClosedLocally)
        }
        _ => StreamError::Closed,
    }
}

/// The stream's connection is gone, or the endpoint: what every call answers from then on.
fn gone(state: &State, stream: StreamId) -> Option<StreamError> {
    if let Some(cause) = state.conns.get(&stream.conn()).and_then(|c| c.lost.clone()) {
        return Some(StreamError::ConnectionLost(cause));
    }
    state.stopped.then_some(StreamError::EndpointClosed)
}

/// Drops one handle of `stream` (and of its connection).
fn release(state: &mut State, stream: StreamId) {
    if let Some(s) = state.streams.get_mut(&stream) {
        s.handles = s.handles.saturating_sub(1);
        if s.handles == 0 {
            state.streams.remove(&stream);
        }
    }
    if let Some(c) = state.conns.get_mut(&stream.conn()) {
        c.handles = c.handles.saturating_sub(1);
    }
    state.forget_if_unused(stream.conn());
}

/// Resets or stops `stream` (`command` on the manager), as [`SendStream::reset`] and
/// [`RecvStream::stop`] do: a code out of QUIC's range is invalid input, any other failure says
/// what became of the stream.
fn abandon(
    shared: &Shared,
    stream: StreamId,
    command: impl FnOnce(&mut quicpeer::Manager) -> Result<(), ManagerStreamError>,
) -> io::Result<()> {
    let mut state = shared.lock();
    if let Some(e) = gone(&state, stream) {
        return Err(e.into_io());
    }
    let result = command(&mut state.manager);
    state.dispatch();
    let result = result.map_err(|e| match e {
        ManagerStreamError::CodeOutOfRange(_) => io::Error::new(io::ErrorKind::InvalidInput, e),
        e => failure(&state, stream, e).into_io(),
    });
    drop(state);
    shared.wake_driver();
    result
}

impl SendStream {
    /// The manager's handle of this stream.
    pub fn id(&self) -> StreamId {
        self.stream
    }

    /// Abandons sending with an application error `code` (the peer's reads fail with
    /// [`StreamError::Reset`]).
    pub fn reset(&mut self, code: u64) -> io::Result<()> {
        let stream = self.stream;
        let result = abandon(&self.shared, stream, |m| m.stream_reset(stream, code));
        self.finished |= result.is_ok();
        result
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut state = this.shared.lock();
        if let Some(e) = gone(&state, this.stream) {
            return Poll::Ready(Err(e.into_io()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match state.manager.stream_write(this.stream, buf) {
            Ok(written) => {
                state.dispatch();
                drop(state);
                this.shared.wake_driver();
                Poll::Ready(Ok(written))
            }
            Err(ManagerStreamError::Blocked) => {
                if let Some(s) = state.streams.get_mut(&this.stream) {
                    s.write_waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(ManagerStreamError::Reset(code)) => {
                Poll::Ready(Err(StreamError::Stopped(code).into_io()))
            }
            Err(e) => Poll::Ready(Err(failure(&state, this.stream, e).into_io())),
        }
    }

    /// Written bytes are QUIC's to send; the driver sends them without being asked.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Finishes the stream: the peer reads its end after the data written. Does not wait for
    /// the peer's acknowledgement.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        let mut state = this.shared.lock();
        if let Some(e) = gone(&state, this.stream) {
            return Poll::Ready(Err(e.into_io()));
        }
        let result = state.manager.stream_finish(this.stream);
        state.dispatch();
        let result = match result {
            Ok(()) => {
                this.finished = true;
                Ok(())
            }
            Err(ManagerStreamError::Reset(code)) => Err(StreamError::Stopped(code).into_io()),
            Err(e) => Err(failure(&state, this.stream, e).into_io()),
        };
        drop(state);
        this.shared.wake_driver();
        Poll::Ready(result)
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if !self.finished && gone(&state, self.stream).is_none() {
            // As quinn does: an unfinished stream is finished, so the peer reads its end.
            let _ = state.manager.stream_finish(self.stream);
            state.dispatch();
            self.shared.wake_driver();
        }
        release(&mut state, self.stream);
    }
}

impl RecvStream {
    /// The manager's handle of this stream.
    pub fn id(&self) -> StreamId {
        self.stream
    }

    /// Asks the peer to stop sending, with an application error `code`; what it sent and was
    /// not read is discarded.
    pub fn stop(&mut self, code: u64) -> io::Result<()> {
        let stream = self.stream;
        let result = abandon(&self.shared, stream, |m| m.stream_stop(stream, code));
        self.stopped |= result.is_ok();
        result
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.stopped {
            return Poll::Ready(Err(StreamError::Closed.into_io()));
        }
        if let Some(code) = this.reset {
            return Poll::Ready(Err(StreamError::Reset(code).into_io()));
        }
        if this.ended {
            // The stream's end was read: every later read reads it again.
            return Poll::Ready(Ok(()));
        }
        let mut state = this.shared.lock();
        if let Some(e) = gone(&state, this.stream) {
            return Poll::Ready(Err(e.into_io()));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // Every chunk that has arrived, as far as `buf` holds: one lock, one dispatch and one
        // doorbell per call, not per packet-sized chunk.
        let mut read = false;
        let poll = loop {
            if buf.remaining() == 0 {
                break Poll::Ready(Ok(()));
            }
            match state.manager.stream_read(this.stream, buf.remaining()) {
                Ok(Read::Data(bytes)) => {
                    // `stream_read` returns at most `remaining` bytes.
                    let n = bytes.len().min(buf.remaining());
                    buf.put_slice(&bytes[..n]);
                    read = true;
                }
                Ok(Read::Finished) => {
                    // Every later read reads the end again (after the data of this one).
                    this.ended = true;
                    break Poll::Ready(Ok(()));
                }
                Err(ManagerStreamError::Blocked) if read => break Poll::Ready(Ok(())),
                Err(ManagerStreamError::Blocked) => {
                    if let Some(s) = state.streams.get_mut(&this.stream) {
                        s.read_waker = Some(cx.waker().clone());
                    }
                    break Poll::Pending;
                }
                Err(ManagerStreamError::Reset(code)) => {
                    // The data read before the reset first; every later read fails.
                    this.reset = Some(code);
                    if read {
                        break Poll::Ready(Ok(()));
                    }
                    break Poll::Ready(Err(StreamError::Reset(code).into_io()));
                }
                // The data read first; the next read meets the failure again.
                Err(_) if read => break Poll::Ready(Ok(())),
                Err(e) => break Poll::Ready(Err(failure(&state, this.stream, e).into_io())),
            }
        };
        state.dispatch();
        if poll.is_pending() {
            return Poll::Pending;
        }
        drop(state);
        // Reading may have granted the peer flow-control credit: the driver sends it.
        this.shared.wake_driver();
        poll
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if !self.ended
            && !self.stopped
            && self.reset.is_none()
            && gone(&state, self.stream).is_none()
        {
            let _ = state.manager.stream_stop(self.stream, 0);
            state.dispatch();
            self.shared.wake_driver();
        }
        release(&mut state, self.stream);
    }
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStream")
            .field("stream", &self.stream)
            .finish()
    }
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvStream")
            .field("stream", &self.stream)
            .finish()
    }
}

/// futures-io's traits (feature `futures-io`), for code written against `futures` rather than
/// tokio: the same streams, the same backpressure; `poll_close` finishes the stream as tokio's
/// `poll_shutdown` does.
#[cfg(feature = "futures-io")]
mod futures_traits {
    use super::*;

    impl futures_io::AsyncWrite for SendStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            AsyncWrite::poll_write(self, cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            AsyncWrite::poll_flush(self, cx)
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            AsyncWrite::poll_shutdown(self, cx)
        }
    }

    impl futures_io::AsyncRead for RecvStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let mut read = ReadBuf::new(buf);
            match AsyncRead::poll_read(self, cx, &mut read) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}
