//! A ping between two quicpeer nodes over a raw QUIC stream: the pinger writes 32 random bytes,
//! the responder echoes them, the pinger measures the round trip.
//!
//! It is `/ipfs/ping/1.0.0` without the multistream-select negotiation in front, so it only
//! talks to quicpeer nodes. It lives in this one module, behind `Pinger` and `Responder`, to be
//! swapped for the library's `/ipfs/ping/1.0.0` when the protocols layer lands. Like that
//! protocol it keeps one stream per connection and sends one ping at a time on it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use quicpeer::{Event, Manager, PeerId, Read, StreamError, StreamId};

/// Bytes in a ping.
pub const PING_SIZE: usize = 32;
/// Most bytes read from a stream in one go.
const READ_MAX: usize = 4096;
/// Stream error code used when the pinger gives up on a stream.
const CODE_TIMEOUT: u32 = 1;

/// How one ping ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PingOutcome {
    /// The echo came back.
    Ok {
        /// Sequence number, from 1.
        seq: u64,
        /// Time from the write to the echo.
        rtt: Duration,
    },
    /// No echo.
    Failed {
        /// Sequence number.
        seq: u64,
        /// Why, for people.
        reason: String,
    },
}

#[derive(Debug)]
struct Outstanding {
    seq: u64,
    sent: Instant,
    payload: [u8; PING_SIZE],
    echoed: Vec<u8>,
}

/// Pings one peer over its preferred connection.
#[derive(Debug)]
pub struct Pinger {
    peer: PeerId,
    timeout: Duration,
    stream: Option<StreamId>,
    outstanding: Option<Outstanding>,
    next_seq: u64,
}

impl Pinger {
    /// A pinger for `peer`; a ping without an echo after `timeout` fails.
    pub fn new(peer: PeerId, timeout: Duration) -> Self {
        Self {
            peer,
            timeout,
            stream: None,
            outstanding: None,
            next_seq: 1,
        }
    }

    /// Fails the outstanding ping if it timed out, then sends a ping if none is outstanding and
    /// the peer is connected. Returns the failure, if any.
    pub fn tick(&mut self, m: &mut Manager, now: Instant) -> Option<PingOutcome> {
        if let Some(out) = &self.outstanding {
            if now.saturating_duration_since(out.sent) < self.timeout {
                return None;
            }
            // A late echo must not be taken for the next one: give up on this stream.
            if let Some(stream) = self.stream.take() {
                let _ = m.stream_reset(stream, CODE_TIMEOUT);
                let _ = m.stream_stop(stream, CODE_TIMEOUT);
            }
            return self.fail("timeout".into());
        }
        self.send(m, now).err().and_then(|reason| self.fail(reason))
    }

    /// Sends a ping now if none is outstanding (e.g. right after connecting).
    pub fn send(&mut self, m: &mut Manager, now: Instant) -> Result<(), String> {
        if self.outstanding.is_some() {
            return Ok(());
        }
        let Some(conn) = m.connection(&self.peer) else {
            return Ok(()); // not connected: nothing is sent, nothing fails
        };
        let stream = match self.stream {
            Some(stream) if stream.conn() == conn => stream,
            _ => {
                let stream = m.open_stream(conn).map_err(|e| e.to_string())?;
                self.stream = Some(stream);
                stream
            }
        };
        let payload: [u8; PING_SIZE] = rand::random();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding = Some(Outstanding {
            seq,
            sent: now,
            payload,
            echoed: Vec::with_capacity(PING_SIZE),
        });
        match m.stream_write(stream, &payload) {
            Ok(PING_SIZE) => Ok(()),
            Ok(_) | Err(StreamError::Blocked) => {
                self.stream = None;
                let _ = m.stream_reset(stream, CODE_TIMEOUT);
                Err("stream blocked".into())
            }
            Err(e) => {
                self.stream = None;
                Err(e.to_string())
            }
        }
    }

    /// Reacts to a manager event: reads echoes, fails the ping when its connection dies.
    pub fn on_event(
        &mut self,
        m: &mut Manager,
        now: Instant,
        event: &Event,
    ) -> Option<PingOutcome> {
        match event {
            Event::StreamReadable { stream } if Some(*stream) == self.stream => {
                self.read(m, *stream, now)
            }
            Event::StreamStopped { stream, .. } if Some(*stream) == self.stream => {
                self.stream = None;
                self.fail("stream stopped by the peer".into())
            }
            Event::ConnectionLost { conn, cause, .. }
                if self.stream.is_some_and(|s| s.conn() == *conn) =>
            {
                self.stream = None;
                self.fail(format!("connection lost: {cause}"))
            }
            _ => None,
        }
    }

    fn read(&mut self, m: &mut Manager, stream: StreamId, now: Instant) -> Option<PingOutcome> {
        loop {
            match m.stream_read(stream, READ_MAX) {
                Ok(Read::Data(data)) => {
                    let Some(out) = self.outstanding.as_mut() else {
                        continue; // an echo nobody waits for: discard
                    };
                    let want = PING_SIZE - out.echoed.len();
                    out.echoed
                        .extend_from_slice(data.get(..want.min(data.len())).unwrap_or(&[]));
                    if out.echoed.len() == PING_SIZE {
                        let out = self.outstanding.take()?;
                        return Some(if out.echoed[..] == out.payload[..] {
                            PingOutcome::Ok {
                                seq: out.seq,
                                rtt: now.saturating_duration_since(out.sent),
                            }
                        } else {
                            PingOutcome::Failed {
                                seq: out.seq,
                                reason: "the echo differs from the ping".into(),
                            }
                        });
                    }
                }
                Ok(Read::Finished) | Err(StreamError::Reset(_)) => {
                    self.stream = None;
                    return self.fail("the peer ended the stream".into());
                }
                Err(_) => return None,
            }
        }
    }

    fn fail(&mut self, reason: String) -> Option<PingOutcome> {
        let out = self.outstanding.take()?;
        Some(PingOutcome::Failed {
            seq: out.seq,
            reason,
        })
    }
}

/// Echoes what peers write on the streams they open.
#[derive(Debug, Default)]
pub struct Responder {
    inbound: BTreeSet<StreamId>,
}

impl Responder {
    /// Reacts to a manager event.
    pub fn on_event(&mut self, m: &mut Manager, event: &Event) {
        match event {
            Event::StreamOpened { stream, .. } => {
                self.inbound.insert(*stream);
                self.echo(m, *stream);
            }
            Event::StreamReadable { stream } if self.inbound.contains(stream) => {
                self.echo(m, *stream)
            }
            Event::ConnectionLost {
                unfinished_streams, ..
            } => {
                for stream in unfinished_streams {
                    self.inbound.remove(stream);
                }
            }
            _ => {}
        }
    }

    fn echo(&mut self, m: &mut Manager, stream: StreamId) {
        loop {
            match m.stream_read(stream, READ_MAX) {
                Ok(Read::Data(data)) => {
                    // A peer that does not read its echoes gets its stream reset, not our memory.
                    if m.stream_write(stream, &data) != Ok(data.len()) {
                        let _ = m.stream_reset(stream, CODE_TIMEOUT);
                        let _ = m.stream_stop(stream, CODE_TIMEOUT);
                        self.inbound.remove(&stream);
                        return;
                    }
                }
                Ok(Read::Finished) => {
                    let _ = m.stream_finish(stream);
                    self.inbound.remove(&stream);
                    return;
                }
                Err(StreamError::Blocked) => return,
                Err(_) => {
                    self.inbound.remove(&stream);
                    return;
                }
            }
        }
    }
}
