//! The frames of `/quicpeer/channel/1.0.0` and their length-prefixed encoding.
//!
//! Every frame is `varint(len) || kind || fields`, `len` counting the bytes after the prefix
//! and bounded by [`MAX_FRAME`]. Integers are unsigned varints (as in multistream-select);
//! byte strings are `varint(len) || bytes`. A [`Decoder`] holds at most one partial frame, so
//! what a peer sends never grows its buffer past the bound.
//!
//! ```text
//! Hello = 0x00 channel:string incarnation:varint     sender -> receiver, first on a stream
//! Msg   = 0x01 qseq:varint origin:bytes seq:varint body:rest
//! Ack   = 0x02 upto:varint                           receiver -> sender, cumulative (qseq)
//! ```

use bytes::{Buf, Bytes, BytesMut};

use crate::PeerId;

/// The protocol name of channel streams.
pub const PROTOCOL: &str = "/quicpeer/channel/1.0.0";
/// The largest message body a channel carries.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest channel name.
pub const MAX_NAME: usize = 128;
/// The largest encoded PeerId accepted (multihash of a key: 38 bytes for Ed25519; RSA keys are
/// hashed, so no PeerId is longer than this).
const MAX_PEER_ID: usize = 64;
/// The largest frame after its length prefix: a message of [`MAX_BODY`] and its header.
pub const MAX_FRAME: usize = MAX_BODY + 128;

const HELLO: u8 = 0;
const MSG: u8 = 1;
const ACK: u8 = 2;

/// One frame of a channel stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream: which channel, and the sender's incarnation (bumped at every start of
    /// its store).
    Hello {
        /// The channel's name.
        channel: String,
        /// The sender's incarnation.
        incarnation: u64,
    },
    /// A message.
    Msg {
        /// Its place in the sender's outbox to this receiver; increases along a stream.
        qseq: u64,
        /// The peer that accepted it first.
        origin: PeerId,
        /// Its number among the origin's messages, from 1.
        seq: u64,
        /// What it says.
        body: Bytes,
    },
    /// Every message up to `qseq` = `upto` on this stream is durably delivered.
    Ack {
        /// The highest `qseq` acknowledged.
        upto: u64,
    },
}

/// Why bytes are not a valid frame. A peer that sends one gets its stream reset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes exceeds the bound")]
    Oversize(u64),
    /// A varint is malformed (overlong or over 64 bits).
    #[error("malformed varint")]
    Varint,
    /// The frame ended before its fields did, or has bytes after them.
    #[error("truncated or overlong frame")]
    Length,
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// An empty frame: no kind.
    #[error("empty frame")]
    Empty,
    /// The channel name is not UTF-8 or is too long.
    #[error("bad channel name")]
    Name,
    /// The origin is not a PeerId.
    #[error("bad origin PeerId")]
    Origin,
    /// A message body above [`MAX_BODY`].
    #[error("message body of {0} bytes exceeds the bound")]
    Body(usize),
}

pub(crate) fn put_varint(out: &mut Vec<u8>, value: u64) {
    let mut buf = unsigned_varint::encode::u64_buffer();
    out.extend_from_slice(unsigned_varint::encode::u64(value, &mut buf));
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl Frame {
    /// Appends the frame, length prefix included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut inner = Vec::new();
        match self {
            Frame::Hello {
                channel,
                incarnation,
            } => {
                inner.push(HELLO);
                put_bytes(&mut inner, channel.as_bytes());
                put_varint(&mut inner, *incarnation);
            }
            Frame::Msg {
                qseq,
                origin,
                seq,
                body,
            } => {
                inner.push(MSG);
                put_varint(&mut inner, *qseq);
                put_bytes(&mut inner, &origin.to_bytes());
                put_varint(&mut inner, *seq);
                inner.extend_from_slice(body);
            }
            Frame::Ack { upto } => {
                inner.push(ACK);
                put_varint(&mut inner, *upto);
            }
        }
        put_varint(out, inner.len() as u64);
        out.extend_from_slice(&inner);
    }

    /// Decodes one frame's content (after its length prefix).
    pub fn decode(mut frame: Bytes) -> Result<Frame, CodecError> {
        if frame.is_empty() {
            return Err(CodecError::Empty);
        }
        let kind = frame.get_u8();
        let result = match kind {
            HELLO => {
                let name = take_bytes(&mut frame, MAX_NAME).map_err(|e| match e {
                    CodecError::Oversize(_) => CodecError::Name,
                    other => other,
                })?;
                let channel = String::from_utf8(name.to_vec()).map_err(|_| CodecError::Name)?;
                let incarnation = take_varint(&mut frame)?;
                Frame::Hello {
                    channel,
                    incarnation,
                }
            }
            MSG => {
                let qseq = take_varint(&mut frame)?;
                let origin = take_bytes(&mut frame, MAX_PEER_ID).map_err(|e| match e {
                    CodecError::Oversize(_) => CodecError::Origin,
                    other => other,
                })?;
                let origin = PeerId::from_bytes(&origin).map_err(|_| CodecError::Origin)?;
                let seq = take_varint(&mut frame)?;
                if frame.len() > MAX_BODY {
                    return Err(CodecError::Body(frame.len()));
                }
                let body = std::mem::take(&mut frame);
                Frame::Msg {
                    qseq,
                    origin,
                    seq,
                    body,
                }
            }
            ACK => Frame::Ack {
                upto: take_varint(&mut frame)?,
            },
            other => return Err(CodecError::Kind(other)),
        };
        if !frame.is_empty() {
            return Err(CodecError::Length);
        }
        Ok(result)
    }
}

fn take_varint(buf: &mut Bytes) -> Result<u64, CodecError> {
    match unsigned_varint::decode::u64(buf) {
        Ok((value, rest)) => {
            let used = buf.len() - rest.len();
            buf.advance(used);
            Ok(value)
        }
        Err(unsigned_varint::decode::Error::Insufficient) => Err(CodecError::Length),
        Err(_) => Err(CodecError::Varint),
    }
}

fn take_bytes(buf: &mut Bytes, max: usize) -> Result<Bytes, CodecError> {
    let len = take_varint(buf)?;
    if len > max as u64 {
        return Err(CodecError::Oversize(len));
    }
    let len = len as usize;
    if buf.len() < len {
        return Err(CodecError::Length);
    }
    Ok(buf.split_to(len))
}

/// Splits a byte stream into frames. Holds at most one partial frame (at most
/// [`MAX_FRAME`] plus its prefix).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held: a partial frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends bytes that arrived. Call [`Decoder::next_frame`] until `Ok(None)` after each;
    /// the buffer never holds more than one frame's worth before that.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. After an error the stream
    /// is unusable: reset it.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        let (len, used) = match unsigned_varint::decode::u64(&self.buf) {
            Ok((len, rest)) => (len, self.buf.len() - rest.len()),
            Err(unsigned_varint::decode::Error::Insufficient) => {
                // A varint of a bound-respecting length is at most 3 bytes.
                if self.buf.len() > 9 {
                    return Err(CodecError::Varint);
                }
                return Ok(None);
            }
            Err(_) => return Err(CodecError::Varint),
        };
        if len > MAX_FRAME as u64 {
            return Err(CodecError::Oversize(len));
        }
        let len = len as usize;
        if self.buf.len() < used + len {
            return Ok(None);
        }
        self.buf.advance(used);
        let frame = self.buf.split_to(len).freeze();
        Frame::decode(frame).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn peer() -> PeerId {
        Identity::from_ed25519_seed([3; 32]).peer_id()
    }

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Hello {
                channel: "chat".into(),
                incarnation: 7,
            },
            Frame::Msg {
                qseq: 300,
                origin: peer(),
                seq: 1,
                body: Bytes::from_static(b"hello"),
            },
            Frame::Msg {
                qseq: 301,
                origin: peer(),
                seq: u64::MAX,
                body: Bytes::new(),
            },
            Frame::Ack { upto: 301 },
        ]
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let mut wire = Vec::new();
        for frame in frames() {
            frame.encode(&mut wire);
        }
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for byte in wire {
            decoder.push(&[byte]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(out, frames());
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn an_oversize_prefix_is_refused_before_its_bytes_arrive() {
        let mut wire = Vec::new();
        put_varint(&mut wire, MAX_FRAME as u64 + 1);
        let mut decoder = Decoder::new();
        decoder.push(&wire);
        assert_eq!(
            decoder.next_frame(),
            Err(CodecError::Oversize(MAX_FRAME as u64 + 1))
        );
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let cases: Vec<(Vec<u8>, CodecError)> = vec![
            (vec![], CodecError::Empty),
            (vec![9], CodecError::Kind(9)),
            (vec![ACK], CodecError::Length),
            (vec![ACK, 1, 0], CodecError::Length),
            (vec![HELLO, 2, 0xff, 0xfe, 1], CodecError::Name),
            (vec![MSG, 1, 3, 1, 2, 3, 1], CodecError::Origin),
            (vec![ACK, 0x80, 0x80, 0x80], CodecError::Length),
            (
                vec![
                    ACK, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                CodecError::Varint,
            ),
        ];
        for (bytes, error) in cases {
            assert_eq!(
                Frame::decode(Bytes::from(bytes.clone())),
                Err(error),
                "{bytes:?}"
            );
        }
        // An overlong varint prefix never buffers more than a few bytes.
        let mut decoder = Decoder::new();
        decoder.push(&[0x80; 12]);
        assert_eq!(decoder.next_frame(), Err(CodecError::Varint));
    }

    #[test]
    fn an_oversize_body_is_refused() {
        let mut inner = vec![MSG, 1];
        put_bytes(&mut inner, &peer().to_bytes());
        inner.push(1);
        inner.extend(std::iter::repeat_n(0, MAX_BODY + 1));
        assert_eq!(
            Frame::decode(Bytes::from(inner)),
            Err(CodecError::Body(MAX_BODY + 1))
        );
    }
}
