//! The stream commands of the [`Manager`]: open, write, finish, reset, stop, read.

use super::*;

impl Manager {
    /// Opens a bidirectional stream on `conn`.
    pub fn open_stream(&mut self, conn: ConnId) -> Result<StreamId, StreamError> {
        let c = self.established_mut(conn)?;
        let id = c.inner.streams().open(Dir::Bi).ok_or(StreamError::Limit)?;
        c.send_open.insert(id);
        c.recv_open.insert(id);
        Ok(StreamId { conn, id })
    }

    /// Opens a bidirectional stream on the preferred connection to `peer`.
    pub fn open_stream_to(&mut self, peer: &PeerId) -> Result<StreamId, StreamError> {
        let conn = self.connection(peer).ok_or(StreamError::NotConnected)?;
        self.open_stream(conn)
    }

    /// Writes as much of `data` as flow control allows; returns how much was taken.
    pub fn stream_write(&mut self, stream: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let c = self.sending_half(stream)?;
        let written = c
            .inner
            .send_stream(stream.id)
            .write(data)
            .map_err(|e| match e {
                quinn_proto::WriteError::Blocked => StreamError::Blocked,
                quinn_proto::WriteError::Stopped(code) => StreamError::Reset(code.into_inner()),
                quinn_proto::WriteError::ClosedStream => StreamError::Closed,
            })?;
        self.mark_dirty(stream.conn);
        Ok(written)
    }

    /// Finishes the sending half of a stream.
    pub fn stream_finish(&mut self, stream: StreamId) -> Result<(), StreamError> {
        let c = self.sending_half(stream)?;
        c.inner
            .send_stream(stream.id)
            .finish()
            .map_err(|e| match e {
                quinn_proto::FinishError::Stopped(code) => StreamError::Reset(code.into_inner()),
                quinn_proto::FinishError::ClosedStream => StreamError::Closed,
            })?;
        self.mark_dirty(stream.conn);
        Ok(())
    }

    /// Abandons the sending half of a stream with an error code.
    /// `code` is at most [`MAX_APP_CODE`].
    pub fn stream_reset(&mut self, stream: StreamId, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).map_err(|_| StreamError::CodeOutOfRange(code))?;
        let c = self.sending_half(stream)?;
        c.inner
            .send_stream(stream.id)
            .reset(code)
            .map_err(|_| StreamError::Closed)?;
        c.send_open.remove(&stream.id);
        self.mark_dirty(stream.conn);
        Ok(())
    }

    /// Asks the peer to stop sending on a stream, and discards what it sent.
    /// `code` is at most [`MAX_APP_CODE`].
    pub fn stream_stop(&mut self, stream: StreamId, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).map_err(|_| StreamError::CodeOutOfRange(code))?;
        let c = self.receiving_half(stream)?;
        c.inner
            .recv_stream(stream.id)
            .stop(code)
            .map_err(|_| StreamError::Closed)?;
        c.recv_open.remove(&stream.id);
        self.mark_dirty(stream.conn);
        Ok(())
    }

    /// Reads up to `max` bytes in order. `Err(Blocked)` means nothing is there yet: wait for
    /// [`Event::StreamReadable`].
    ///
    /// Each call returns one chunk and costs one of quinn's read sessions, so draining a stream
    /// this way takes one call per chunk plus one that answers `Blocked`;
    /// [`Manager::stream_read_chunks`] drains it in one call.
    pub fn stream_read(&mut self, stream: StreamId, max: usize) -> Result<Read, StreamError> {
        let c = self.receiving_half(stream)?;
        let mut recv = c.inner.recv_stream(stream.id);
        let mut chunks = recv.read(true).map_err(|_| StreamError::Closed)?;
        let result = match chunks.next(max) {
            Ok(Some(chunk)) => Ok(Read::Data(chunk.bytes)),
            Ok(None) => Ok(Read::Finished),
            Err(quinn_proto::ReadError::Blocked) => Err(StreamError::Blocked),
            Err(quinn_proto::ReadError::Reset(code)) => Err(StreamError::Reset(code.into_inner())),
        };
        // Finalizing may grant the peer more flow-control credit (or stream credit, once the
        // stream is done): then the connection has something to send.
        let transmit = chunks.finalize().should_transmit();
        if matches!(result, Ok(Read::Finished) | Err(StreamError::Reset(_))) {
            c.recv_open.remove(&stream.id);
        }
        if transmit {
            self.mark_dirty(stream.conn);
        }
        result
    }

    /// Reads what has arrived on a stream, in order, in one go: appends its chunks to `out`
    /// until everything received so far is read ([`ReadStatus::Blocked`]), the stream's end is
    /// reached ([`ReadStatus::Finished`]), or `max_bytes` bytes were read
    /// ([`ReadStatus::BudgetReached`]). The chunks are the buffers quinn received, handed over
    /// without copying; `out` may be any collection of [`Bytes`] (`Vec`, `VecDeque`,
    /// [`BytesMut`] to have them in one buffer).
    ///
    /// One call costs one of quinn's read sessions however many chunks it returns, where
    /// [`Manager::stream_read`] costs one per chunk and one more to learn that the stream is
    /// blocked. Flow-control credit for what was read is granted to the peer as the call ends.
    ///
    /// Errors, with nothing appended: [`StreamError::UnknownConnection`] if the connection is
    /// not established, [`StreamError::Closed`] if the stream was never open, was stopped, or
    /// was already read to its end or its reset, and [`StreamError::Reset`] if the peer reset
    /// it (quinn discards what was received and not yet read). After `Finished` or `Reset` the
    /// stream is gone, and further reads fail with `Closed`. A `max_bytes` of 0 reads nothing
    /// and reports `BudgetReached` (or an error).
    ///
    /// ```no_run
    /// # use bytes::Bytes;
    /// # use quicpeer::{Event, Manager, ReadStatus, StreamError};
    /// # fn consume(_: &[Bytes]) {}
    /// # fn example(manager: &mut Manager, event: Event) -> Result<(), StreamError> {
    /// let mut chunks: Vec<Bytes> = Vec::new();
    /// if let Event::StreamOpened { stream, .. } | Event::StreamReadable { stream } = event {
    ///     loop {
    ///         // At most 64 KiB per call, so that one busy stream cannot starve the others.
    ///         let read = manager.stream_read_chunks(stream, 64 * 1024, &mut chunks)?;
    ///         consume(&chunks);
    ///         chunks.clear();
    ///         match read.status {
    ///             // Everything that arrived is read: the next `StreamReadable` says when more did.
    ///             ReadStatus::Blocked => break,
    ///             ReadStatus::Finished => break, // the stream's end: nothing more will come
    ///             ReadStatus::BudgetReached => continue,
    ///         }
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn stream_read_chunks(
        &mut self,
        stream: StreamId,
        max_bytes: usize,
        out: &mut impl Extend<Bytes>,
    ) -> Result<ChunksRead, StreamError> {
        let c = self.receiving_half(stream)?;
        let mut recv = c.inner.recv_stream(stream.id);
        let mut chunks = recv.read(true).map_err(|_| StreamError::Closed)?;
        let mut bytes = 0;
        let result = loop {
            let budget = max_bytes.saturating_sub(bytes);
            if budget == 0 {
                break Ok(ReadStatus::BudgetReached);
            }
            match chunks.next(budget) {
                Ok(Some(chunk)) => {
                    bytes += chunk.bytes.len();
                    out.extend(Some(chunk.bytes));
                }
                Ok(None) => break Ok(ReadStatus::Finished),
                Err(quinn_proto::ReadError::Blocked) => break Ok(ReadStatus::Blocked),
                Err(quinn_proto::ReadError::Reset(code)) => {
                    break Err(StreamError::Reset(code.into_inner()))
                }
            }
        };
        let transmit = chunks.finalize().should_transmit();
        if matches!(
            result,
            Ok(ReadStatus::Finished) | Err(StreamError::Reset(_))
        ) {
            c.recv_open.remove(&stream.id);
        }
        if transmit {
            self.mark_dirty(stream.conn);
        }
        result.map(|status| ChunksRead { bytes, status })
    }

    /// An event about `stream` may still be reported: quinn keeps its sending half's state (it
    /// can still become writable, finished or stopped), or its receiving half is open (it can
    /// still become readable; [`Manager::poll_event`] drops a readable event of a stream whose
    /// receiving half was read to its end, reset or stopped). False once the connection is
    /// lost. The host layers use it to forget the streams they closed.
    pub(crate) fn may_report(&mut self, stream: StreamId) -> bool {
        let Ok(c) = self.established_mut(stream.conn) else {
            return false;
        };
        let has_send = stream.id.dir() == Dir::Bi || stream.id.initiator() == c.inner.side();
        c.recv_open.contains(&stream.id)
            || (has_send && c.inner.send_stream(stream.id).stopped().is_ok())
    }

    /// The established connection of a stream that has a sending half here: quinn panics on a
    /// send operation on the peer's unidirectional stream, which a peer may open at will
    /// (announced by `Event::StreamOpened` like any other).
    fn sending_half(&mut self, stream: StreamId) -> Result<&mut Conn, StreamError> {
        let c = self.established_mut(stream.conn)?;
        if stream.id.dir() == Dir::Uni && stream.id.initiator() != c.inner.side() {
            return Err(StreamError::ReceiveOnly);
        }
        Ok(c)
    }

    /// The established connection of a stream that has a receiving half here (quinn panics on
    /// a receive operation on one of our own unidirectional streams).
    fn receiving_half(&mut self, stream: StreamId) -> Result<&mut Conn, StreamError> {
        let c = self.established_mut(stream.conn)?;
        if stream.id.dir() == Dir::Uni && stream.id.initiator() == c.inner.side() {
            return Err(StreamError::Closed);
        }
        Ok(c)
    }

    pub(super) fn established_mut(&mut self, conn: ConnId) -> Result<&mut Conn, StreamError> {
        match self.conns.get_mut(&conn) {
            Some(c) if c.phase == Phase::Established => Ok(c),
            _ => Err(StreamError::UnknownConnection),
        }
    }
}
