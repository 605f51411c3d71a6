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
        let c = self.established_mut(stream.conn)?;
        let written = c
            .inner
            .send_stream(stream.id)
            .write(data)
            .map_err(|e| match e {
                quinn_proto::WriteError::Blocked => StreamError::Blocked,
                quinn_proto::WriteError::Stopped(code) => StreamError::Reset(code.into_inner()),
                quinn_proto::WriteError::ClosedStream => StreamError::Closed,
            })?;
        self.dirty.insert(stream.conn);
        Ok(written)
    }

    /// Finishes the sending half of a stream.
    pub fn stream_finish(&mut self, stream: StreamId) -> Result<(), StreamError> {
        let c = self.established_mut(stream.conn)?;
        c.inner
            .send_stream(stream.id)
            .finish()
            .map_err(|e| match e {
                quinn_proto::FinishError::Stopped(code) => StreamError::Reset(code.into_inner()),
                quinn_proto::FinishError::ClosedStream => StreamError::Closed,
            })?;
        self.dirty.insert(stream.conn);
        Ok(())
    }

    /// Abandons the sending half of a stream with an error code.
    pub fn stream_reset(&mut self, stream: StreamId, code: u32) -> Result<(), StreamError> {
        let c = self.established_mut(stream.conn)?;
        c.inner
            .send_stream(stream.id)
            .reset(VarInt::from_u32(code))
            .map_err(|_| StreamError::Closed)?;
        c.send_open.remove(&stream.id);
        self.dirty.insert(stream.conn);
        Ok(())
    }

    /// Asks the peer to stop sending on a stream, and discards what it sent.
    pub fn stream_stop(&mut self, stream: StreamId, code: u32) -> Result<(), StreamError> {
        let c = self.established_mut(stream.conn)?;
        c.inner
            .recv_stream(stream.id)
            .stop(VarInt::from_u32(code))
            .map_err(|_| StreamError::Closed)?;
        c.recv_open.remove(&stream.id);
        self.dirty.insert(stream.conn);
        Ok(())
    }

    /// Reads up to `max` bytes in order. `Err(Blocked)` means nothing is there yet: wait for
    /// [`Event::StreamReadable`].
    pub fn stream_read(&mut self, stream: StreamId, max: usize) -> Result<Read, StreamError> {
        let c = self.established_mut(stream.conn)?;
        let mut recv = c.inner.recv_stream(stream.id);
        let mut chunks = recv.read(true).map_err(|_| StreamError::Closed)?;
        let result = match chunks.next(max) {
            Ok(Some(chunk)) => Ok(Read::Data(chunk.bytes)),
            Ok(None) => Ok(Read::Finished),
            Err(quinn_proto::ReadError::Blocked) => Err(StreamError::Blocked),
            Err(quinn_proto::ReadError::Reset(code)) => Err(StreamError::Reset(code.into_inner())),
        };
        // Finalizing may grant the peer more flow-control credit.
        let _ = chunks.finalize();
        if matches!(result, Ok(Read::Finished) | Err(StreamError::Reset(_))) {
            c.recv_open.remove(&stream.id);
        }
        self.dirty.insert(stream.conn);
        result
    }

    pub(super) fn established_mut(&mut self, conn: ConnId) -> Result<&mut Conn, StreamError> {
        match self.conns.get_mut(&conn) {
            Some(c) if c.phase == Phase::Established => Ok(c),
            _ => Err(StreamError::UnknownConnection),
        }
    }
}
