//! The `frames` target: arbitrary QUIC frames inside valid 1-RTT packets of an established
//! connection.
//!
//! Most of what the `datagram` target injects dies at packet protection, so the frames inside a
//! connection are reached only through the honest peer's real packets. Here the honest peer logs
//! its TLS secrets ([`Config::key_log`](quicpeer::Config::key_log)); the harness derives the
//! 1-RTT packet and header-protection keys of the peer's sending direction (RFC 9001 §5.1, and
//! §6 for key updates), opens the peer's real short-header packets on their way to the target,
//! and replaces one of them with a packet under the same packet number and key phase that
//! carries the input's frames, encoded as RFC 9000 §19 says with field values the input chooses,
//! hostile ones included (optionally followed by the real packet's own frames). The forged packet
//! is sealed and header-protected with the real keys, so quinn-proto and the manager process its
//! frames. Reusing a packet number the peer really sent keeps the honest peer consistent: the
//! target's acknowledgement of it acknowledges a packet the peer did send (an acknowledgement of
//! a packet number it never used would make it close the connection).
//!
//! Between such packets the input interleaves honest traffic (delivering or dropping the peer's
//! datagrams, the target's answers, time, streams written and read), and after every step the
//! invariants of [`invariants`](super::invariants) run, as in the `datagram` target.
//!
//! The input is a plain byte format (see [`FramesInput::decode`]) that [`FramesInput::encode`]
//! writes back, so seeds are built from typed steps.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::crypto::tls13::OkmBlock;
use rustls::quic::{HeaderProtectionKey, PacketKey};
use rustls::{KeyLog, Tls13CipherSuite};

use super::datagram::{self, peer_config, target_config, Crypto, Harness, Mode};
use quicpeer::identity::null_crypto;
use quicpeer::internals::CID_LEN;
use quicpeer::{Config, Manager, PeerId, ReadStatus};

/// Steps run from one input at most; the rest of a longer input is ignored.
const MAX_STEPS: usize = 256;
/// Frames in one forged packet at most.
const MAX_FRAMES: usize = 16;
/// Ranges of an ACK frame beyond the first, at most.
const MAX_ACK_RANGES: usize = 8;
/// The largest forged datagram: the managers' `max_udp_payload`.
const MAX_DATAGRAM: usize = 1452;
/// The AEAD tag of every QUIC v1 cipher suite.
const TAG_LEN: usize = 16;
/// Header-protection sample length of every QUIC v1 cipher suite.
const SAMPLE_LEN: usize = 16;
/// The largest QUIC variable-length integer.
pub const VARINT_MAX: u64 = (1 << 62) - 1;
/// Traffic secrets of the peer kept at once (one per connection it made; the newest win).
const MAX_SECRETS: usize = 16;
/// Key generations followed per secret: quinn updates keys every 10 to 1000 packets at first,
/// and an input cannot make more than a few thousand packets.
const MAX_GENERATIONS: usize = 64;
/// KiB all of an input's [`Step::Burst`]s may write together; a burst past it writes what is
/// left (nothing, once it is spent). A burst is what reaches quinn's first key update, which
/// comes after 10 to 1000 of a side's 1-RTT packets (the next only near the cipher's
/// confidentiality limit, millions of packets on): 1 280 KiB is about 1 000 full packets, so
/// the first update is within every input's reach. Grown inputs had bursts of 10 MiB and more
/// and took 30 times as long as the median one, for nothing a smaller burst does not reach.
const MAX_BURST_KIB: u32 = 1280;
/// How many packet-number windows past its estimate the harness tries when opening a packet.
const PN_WINDOWS: u64 = 16;

/// A field value: small values in one byte, larger ones in two, four or eight, so that the
/// fuzzer reaches both the interesting small values and hostile large ones.
///
/// Encoding: a byte `b < 0xf0` is `b`; `0xf0..=0xf7` a little-endian `u16` follows, `0xf8..=0xfb`
/// a `u32`, `0xfc..=0xfe` a `u64` (cut to 62 bits), and `0xff` is [`VARINT_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value(pub u64);

/// Bytes: a length byte, then that many bytes (fewer if the input ends first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data(pub Vec<u8>);

/// One QUIC frame (RFC 9000 §19), or raw bytes. Stream, connection-ID and sequence fields are
/// [`Value`]s: any varint, not only a sensible one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `len + 1` PADDING bytes.
    Padding {
        /// One less than the bytes.
        len: u8,
    },
    /// PING.
    Ping,
    /// ACK, or ACK_ECN with the three counts.
    Ack {
        /// Largest acknowledged.
        largest: Value,
        /// ACK delay.
        delay: Value,
        /// First ACK range.
        first: Value,
        /// (gap, length) of the further ranges.
        ranges: Vec<(Value, Value)>,
        /// ECT(0), ECT(1) and CE counts (ACK_ECN).
        ecn: Option<(Value, Value, Value)>,
    },
    /// RESET_STREAM.
    ResetStream {
        /// Stream ID.
        id: Value,
        /// Application error code.
        code: Value,
        /// Final size.
        final_size: Value,
    },
    /// STOP_SENDING.
    StopSending {
        /// Stream ID.
        id: Value,
        /// Application error code.
        code: Value,
    },
    /// CRYPTO (1-RTT: TLS post-handshake messages, e.g. a session ticket).
    Crypto {
        /// Offset.
        offset: Value,
        /// Data.
        data: Data,
    },
    /// NEW_TOKEN (a server must not receive one).
    NewToken {
        /// The token.
        token: Data,
    },
    /// STREAM, type 0x08–0x0f.
    Stream {
        /// Stream ID.
        id: Value,
        /// Offset (the OFF bit), or none.
        offset: Option<Value>,
        /// Length field present (the LEN bit); without it the data runs to the packet's end.
        explicit_len: bool,
        /// The FIN bit.
        fin: bool,
        /// Data.
        data: Data,
    },
    /// MAX_DATA.
    MaxData(Value),
    /// MAX_STREAM_DATA.
    MaxStreamData {
        /// Stream ID.
        id: Value,
        /// Maximum.
        max: Value,
    },
    /// MAX_STREAMS (bidirectional or unidirectional).
    MaxStreams {
        /// Bidirectional (0x12) or unidirectional (0x13).
        bidi: bool,
        /// Maximum.
        max: Value,
    },
    /// DATA_BLOCKED.
    DataBlocked(Value),
    /// STREAM_DATA_BLOCKED.
    StreamDataBlocked {
        /// Stream ID.
        id: Value,
        /// Limit.
        limit: Value,
    },
    /// STREAMS_BLOCKED.
    StreamsBlocked {
        /// Bidirectional (0x16) or unidirectional (0x17).
        bidi: bool,
        /// Limit.
        limit: Value,
    },
    /// NEW_CONNECTION_ID; the length byte is the data's, so it may be 0 or above 20.
    NewConnectionId {
        /// Sequence number.
        seq: Value,
        /// Retire prior to.
        retire_prior_to: Value,
        /// The connection ID.
        cid: Data,
        /// Stateless reset token.
        token: [u8; 16],
    },
    /// RETIRE_CONNECTION_ID.
    RetireConnectionId {
        /// Sequence number.
        seq: Value,
    },
    /// PATH_CHALLENGE.
    PathChallenge([u8; 8]),
    /// PATH_RESPONSE.
    PathResponse([u8; 8]),
    /// CONNECTION_CLOSE: transport (0x1c, with a frame type) or application (0x1d).
    ConnectionClose {
        /// Application close (0x1d).
        app: bool,
        /// Error code.
        code: Value,
        /// Frame type (transport close only).
        frame_type: Value,
        /// Reason phrase (any bytes, not only UTF-8).
        reason: Data,
    },
    /// HANDSHAKE_DONE (a server must not receive one).
    HandshakeDone,
    /// DATAGRAM (RFC 9221), with or without a length; not negotiated by quicpeer.
    Datagram {
        /// Length field present (0x31).
        explicit_len: bool,
        /// Data.
        data: Data,
    },
    /// ACK_FREQUENCY (draft-ietf-quic-ack-frequency, type 0xaf), which quinn-proto parses.
    AckFrequency {
        /// Sequence number.
        seq: Value,
        /// Ack-eliciting threshold.
        threshold: Value,
        /// Requested max ack delay (µs).
        max_delay: Value,
        /// Reordering threshold.
        reordering: Value,
    },
    /// IMMEDIATE_ACK (0x1f).
    ImmediateAck,
    /// Raw bytes, whatever they parse as.
    Raw(Data),
}

/// Frame kinds in the input's encoding, in the order of the tags.
const FRAME_KINDS: u8 = 24;

/// One step of a `frames` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The next of the peer's 1-RTT packets in flight reaches the target carrying `frames`
    /// (and, with `keep`, its own frames after them). The datagrams in flight before it are
    /// delivered first. If none is in flight, the peer first opens a stream and finishes it
    /// at once, which makes it send one.
    Frames {
        /// The real packet's frames follow the forged ones.
        keep: bool,
        /// The frames.
        frames: Vec<Frame>,
    },
    /// The peer's oldest datagram in flight reaches the target.
    Deliver,
    /// The peer's oldest datagram in flight is lost.
    Drop,
    /// The target's oldest datagram to the peer reaches it, or is lost.
    Reply {
        /// Lost instead of delivered.
        lose: bool,
    },
    /// Everything in flight both ways is delivered, until nothing is.
    Flush,
    /// Time passes.
    Wait {
        /// Milliseconds.
        millis: u16,
    },
    /// The peer writes on a fresh stream to the target, and finishes it.
    PeerSends {
        /// Bytes written.
        len: u8,
    },
    /// The target writes on a fresh stream to the peer, and finishes it.
    TargetSends {
        /// Bytes written.
        len: u8,
    },
    /// The target reads every stream reported opened or readable (64 KiB each at most).
    TargetReads,
    /// The peer writes `kib` KiB on a fresh stream to the target and finishes it: many packets
    /// at once, which bring quinn's key updates within an input's reach.
    Burst {
        /// KiB written.
        kib: u8,
    },
}

/// Step kinds in the input's encoding.
const STEP_KINDS: u8 = 10;

/// A whole `frames` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramesInput {
    /// The target dialed the peer (else the peer dialed the target).
    pub target_dialed: bool,
    /// What happens then.
    pub steps: Vec<Step>,
}

/// Reads the input's byte format; `None` when the input ends.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.0.get(..N)?.try_into().ok()?;
        self.0 = &self.0[N..];
        Some(bytes)
    }

    fn value(&mut self) -> Option<Value> {
        let tag = self.u8()?;
        let value = match tag {
            0..=0xef => u64::from(tag),
            0xf0..=0xf7 => u64::from(u16::from_le_bytes(self.array()?)),
            0xf8..=0xfb => u64::from(u32::from_le_bytes(self.array()?)),
            0xfc..=0xfe => u64::from_le_bytes(self.array()?) & VARINT_MAX,
            0xff => VARINT_MAX,
        };
        Some(Value(value))
    }

    fn data(&mut self) -> Option<Data> {
        let len = usize::from(self.u8()?).min(self.0.len());
        let (data, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(Data(data.to_vec()))
    }

    fn frame(&mut self) -> Option<Frame> {
        let frame = match self.u8()? % FRAME_KINDS {
            0 => Frame::Padding { len: self.u8()? },
            1 => Frame::Ping,
            2 => {
                let (largest, delay, first) = (self.value()?, self.value()?, self.value()?);
                let count = usize::from(self.u8()?) % (MAX_ACK_RANGES + 1);
                let mut ranges = Vec::with_capacity(count);
                for _ in 0..count {
                    ranges.push((self.value()?, self.value()?));
                }
                let ecn = match self.u8()? % 2 {
                    0 => None,
                    _ => Some((self.value()?, self.value()?, self.value()?)),
                };
                Frame::Ack {
                    largest,
                    delay,
                    first,
                    ranges,
                    ecn,
                }
            }
            3 => Frame::ResetStream {
                id: self.value()?,
                code: self.value()?,
                final_size: self.value()?,
            },
            4 => Frame::StopSending {
                id: self.value()?,
                code: self.value()?,
            },
            5 => Frame::Crypto {
                offset: self.value()?,
                data: self.data()?,
            },
            6 => Frame::NewToken {
                token: self.data()?,
            },
            7 => {
                let bits = self.u8()?;
                let id = self.value()?;
                let offset = match bits & 4 {
                    0 => None,
                    _ => Some(self.value()?),
                };
                Frame::Stream {
                    id,
                    offset,
                    explicit_len: bits & 2 != 0,
                    fin: bits & 1 != 0,
                    data: self.data()?,
                }
            }
            8 => Frame::MaxData(self.value()?),
            9 => Frame::MaxStreamData {
                id: self.value()?,
                max: self.value()?,
            },
            10 => Frame::MaxStreams {
                bidi: self.u8()? % 2 == 0,
                max: self.value()?,
            },
            11 => Frame::DataBlocked(self.value()?),
            12 => Frame::StreamDataBlocked {
                id: self.value()?,
                limit: self.value()?,
            },
            13 => Frame::StreamsBlocked {
                bidi: self.u8()? % 2 == 0,
                limit: self.value()?,
            },
            14 => Frame::NewConnectionId {
                seq: self.value()?,
                retire_prior_to: self.value()?,
                cid: self.data()?,
                token: self.array()?,
            },
            15 => Frame::RetireConnectionId { seq: self.value()? },
            16 => Frame::PathChallenge(self.array()?),
            17 => Frame::PathResponse(self.array()?),
            18 => Frame::ConnectionClose {
                app: self.u8()? % 2 == 1,
                code: self.value()?,
                frame_type: self.value()?,
                reason: self.data()?,
            },
            19 => Frame::HandshakeDone,
            20 => Frame::Datagram {
                explicit_len: self.u8()? % 2 == 1,
                data: self.data()?,
            },
            21 => Frame::AckFrequency {
                seq: self.value()?,
                threshold: self.value()?,
                max_delay: self.value()?,
                reordering: self.value()?,
            },
            22 => Frame::ImmediateAck,
            _ => Frame::Raw(self.data()?),
        };
        Some(frame)
    }

    fn step(&mut self) -> Option<Step> {
        let step = match self.u8()? % STEP_KINDS {
            0 => {
                let flags = self.u8()?;
                let count = usize::from(flags >> 1) % (MAX_FRAMES + 1);
                let mut frames = Vec::with_capacity(count);
                for _ in 0..count {
                    match self.frame() {
                        Some(frame) => frames.push(frame),
                        None => break,
                    }
                }
                Step::Frames {
                    keep: flags & 1 != 0,
                    frames,
                }
            }
            1 => Step::Deliver,
            2 => Step::Drop,
            3 => Step::Reply {
                lose: self.u8()? % 2 == 1,
            },
            4 => Step::Flush,
            5 => Step::Wait {
                millis: u16::from_le_bytes(self.array()?),
            },
            6 => Step::PeerSends { len: self.u8()? },
            7 => Step::TargetSends { len: self.u8()? },
            8 => Step::TargetReads,
            _ => Step::Burst { kib: self.u8()? },
        };
        Some(step)
    }
}

impl FramesInput {
    /// Decodes an input; every byte string decodes to something. The first byte's low bit says
    /// who dialed; then steps follow until the bytes run out, each a kind byte (modulo the
    /// number of kinds) and its fields. A frames step has a byte whose low bit is `keep` and
    /// whose upper seven bits count the frames (modulo 17); each frame is a kind byte and its
    /// fields, [`Value`]s and [`Data`] as they say, flags in a byte, arrays as their bytes.
    pub fn decode(data: &[u8]) -> Self {
        let mut reader = Reader(data);
        let target_dialed = reader.u8().is_some_and(|b| b & 1 == 1);
        let mut steps = Vec::new();
        while steps.len() < MAX_STEPS {
            match reader.step() {
                Some(step) => steps.push(step),
                None => break,
            }
        }
        Self {
            target_dialed,
            steps,
        }
    }

    /// Encodes an input in the format [`decode`](Self::decode) reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.target_dialed)];
        for step in &self.steps {
            encode_step(step, &mut out);
        }
        out
    }
}

fn put_value(value: Value, out: &mut Vec<u8>) {
    match value.0 {
        v if v < 0xf0 => out.push(v as u8),
        VARINT_MAX => out.push(0xff),
        v => {
            if let Ok(v) = u16::try_from(v) {
                out.push(0xf0);
                out.extend_from_slice(&v.to_le_bytes());
            } else if let Ok(v) = u32::try_from(v) {
                out.push(0xf8);
                out.extend_from_slice(&v.to_le_bytes());
            } else {
                out.push(0xfc);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

fn put_data(data: &Data, out: &mut Vec<u8>) {
    let len = data.0.len().min(255);
    out.push(len as u8);
    out.extend_from_slice(&data.0[..len]);
}

fn encode_step(step: &Step, out: &mut Vec<u8>) {
    match step {
        Step::Frames { keep, frames } => {
            out.push(0);
            let count = frames.len().min(MAX_FRAMES);
            out.push(((count as u8) << 1) | u8::from(*keep));
            for frame in &frames[..count] {
                encode_frame(frame, out);
            }
        }
        Step::Deliver => out.push(1),
        Step::Drop => out.push(2),
        Step::Reply { lose } => out.extend_from_slice(&[3, u8::from(*lose)]),
        Step::Flush => out.push(4),
        Step::Wait { millis } => {
            out.push(5);
            out.extend_from_slice(&millis.to_le_bytes());
        }
        Step::PeerSends { len } => out.extend_from_slice(&[6, *len]),
        Step::TargetSends { len } => out.extend_from_slice(&[7, *len]),
        Step::TargetReads => out.push(8),
        Step::Burst { kib } => out.extend_from_slice(&[9, *kib]),
    }
}

fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    let values = |out: &mut Vec<u8>, values: &[Value]| {
        for value in values {
            put_value(*value, out);
        }
    };
    match frame {
        Frame::Padding { len } => out.extend_from_slice(&[0, *len]),
        Frame::Ping => out.push(1),
        Frame::Ack {
            largest,
            delay,
            first,
            ranges,
            ecn,
        } => {
            out.push(2);
            values(out, &[*largest, *delay, *first]);
            let ranges = &ranges[..ranges.len().min(MAX_ACK_RANGES)];
            out.push(ranges.len() as u8);
            for (gap, len) in ranges {
                values(out, &[*gap, *len]);
            }
            match ecn {
                None => out.push(0),
                Some((a, b, c)) => {
                    out.push(1);
                    values(out, &[*a, *b, *c]);
                }
            }
        }
        Frame::ResetStream {
            id,
            code,
            final_size,
        } => {
            out.push(3);
            values(out, &[*id, *code, *final_size]);
        }
        Frame::StopSending { id, code } => {
            out.push(4);
            values(out, &[*id, *code]);
        }
        Frame::Crypto { offset, data } => {
            out.push(5);
            put_value(*offset, out);
            put_data(data, out);
        }
        Frame::NewToken { token } => {
            out.push(6);
            put_data(token, out);
        }
        Frame::Stream {
            id,
            offset,
            explicit_len,
            fin,
            data,
        } => {
            out.push(7);
            out.push(
                u8::from(offset.is_some()) << 2 | u8::from(*explicit_len) << 1 | u8::from(*fin),
            );
            put_value(*id, out);
            if let Some(offset) = offset {
                put_value(*offset, out);
            }
            put_data(data, out);
        }
        Frame::MaxData(max) => {
            out.push(8);
            put_value(*max, out);
        }
        Frame::MaxStreamData { id, max } => {
            out.push(9);
            values(out, &[*id, *max]);
        }
        Frame::MaxStreams { bidi, max } => {
            out.extend_from_slice(&[10, u8::from(!*bidi)]);
            put_value(*max, out);
        }
        Frame::DataBlocked(limit) => {
            out.push(11);
            put_value(*limit, out);
        }
        Frame::StreamDataBlocked { id, limit } => {
            out.push(12);
            values(out, &[*id, *limit]);
        }
        Frame::StreamsBlocked { bidi, limit } => {
            out.extend_from_slice(&[13, u8::from(!*bidi)]);
            put_value(*limit, out);
        }
        Frame::NewConnectionId {
            seq,
            retire_prior_to,
            cid,
            token,
        } => {
            out.push(14);
            values(out, &[*seq, *retire_prior_to]);
            put_data(cid, out);
            out.extend_from_slice(token);
        }
        Frame::RetireConnectionId { seq } => {
            out.push(15);
            put_value(*seq, out);
        }
        Frame::PathChallenge(data) => {
            out.push(16);
            out.extend_from_slice(data);
        }
        Frame::PathResponse(data) => {
            out.push(17);
            out.extend_from_slice(data);
        }
        Frame::ConnectionClose {
            app,
            code,
            frame_type,
            reason,
        } => {
            out.extend_from_slice(&[18, u8::from(*app)]);
            values(out, &[*code, *frame_type]);
            put_data(reason, out);
        }
        Frame::HandshakeDone => out.push(19),
        Frame::Datagram { explicit_len, data } => {
            out.extend_from_slice(&[20, u8::from(*explicit_len)]);
            put_data(data, out);
        }
        Frame::AckFrequency {
            seq,
            threshold,
            max_delay,
            reordering,
        } => {
            out.push(21);
            values(out, &[*seq, *threshold, *max_delay, *reordering]);
        }
        Frame::ImmediateAck => out.push(22),
        Frame::Raw(data) => {
            out.push(23);
            put_data(data, out);
        }
    }
}

/// Appends `value` as a QUIC variable-length integer (RFC 9000 §16), in the shortest form.
fn varint(value: u64, out: &mut Vec<u8>) {
    let value = value & VARINT_MAX;
    if value < 1 << 6 {
        out.push(value as u8);
    } else if value < 1 << 14 {
        out.extend_from_slice(&(value as u16 | 0x4000).to_be_bytes());
    } else if value < 1 << 30 {
        out.extend_from_slice(&(value as u32 | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(value | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

impl Frame {
    /// Appends the frame's wire encoding (RFC 9000 §19; RFC 9221 §4 for DATAGRAM).
    pub fn write(&self, out: &mut Vec<u8>) {
        let v = |out: &mut Vec<u8>, values: &[Value]| {
            for value in values {
                varint(value.0, out);
            }
        };
        let bytes = |out: &mut Vec<u8>, data: &Data| {
            varint(data.0.len() as u64, out);
            out.extend_from_slice(&data.0);
        };
        match self {
            Frame::Padding { len } => out.resize(out.len() + usize::from(*len) + 1, 0),
            Frame::Ping => out.push(0x01),
            Frame::Ack {
                largest,
                delay,
                first,
                ranges,
                ecn,
            } => {
                out.push(if ecn.is_some() { 0x03 } else { 0x02 });
                v(out, &[*largest, *delay]);
                varint(ranges.len() as u64, out);
                v(out, &[*first]);
                for (gap, len) in ranges {
                    v(out, &[*gap, *len]);
                }
                if let Some((a, b, c)) = ecn {
                    v(out, &[*a, *b, *c]);
                }
            }
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => {
                out.push(0x04);
                v(out, &[*id, *code, *final_size]);
            }
            Frame::StopSending { id, code } => {
                out.push(0x05);
                v(out, &[*id, *code]);
            }
            Frame::Crypto { offset, data } => {
                out.push(0x06);
                v(out, &[*offset]);
                bytes(out, data);
            }
            Frame::NewToken { token } => {
                out.push(0x07);
                bytes(out, token);
            }
            Frame::Stream {
                id,
                offset,
                explicit_len,
                fin,
                data,
            } => {
                out.push(
                    0x08 | u8::from(offset.is_some()) << 2
                        | u8::from(*explicit_len) << 1
                        | u8::from(*fin),
                );
                v(out, &[*id]);
                if let Some(offset) = offset {
                    v(out, &[*offset]);
                }
                if *explicit_len {
                    bytes(out, data);
                } else {
                    out.extend_from_slice(&data.0);
                }
            }
            Frame::MaxData(max) => {
                out.push(0x10);
                v(out, &[*max]);
            }
            Frame::MaxStreamData { id, max } => {
                out.push(0x11);
                v(out, &[*id, *max]);
            }
            Frame::MaxStreams { bidi, max } => {
                out.push(if *bidi { 0x12 } else { 0x13 });
                v(out, &[*max]);
            }
            Frame::DataBlocked(limit) => {
                out.push(0x14);
                v(out, &[*limit]);
            }
            Frame::StreamDataBlocked { id, limit } => {
                out.push(0x15);
                v(out, &[*id, *limit]);
            }
            Frame::StreamsBlocked { bidi, limit } => {
                out.push(if *bidi { 0x16 } else { 0x17 });
                v(out, &[*limit]);
            }
            Frame::NewConnectionId {
                seq,
                retire_prior_to,
                cid,
                token,
            } => {
                out.push(0x18);
                v(out, &[*seq, *retire_prior_to]);
                out.push(cid.0.len().min(255) as u8);
                out.extend_from_slice(&cid.0);
                out.extend_from_slice(token);
            }
            Frame::RetireConnectionId { seq } => {
                out.push(0x19);
                v(out, &[*seq]);
            }
            Frame::PathChallenge(data) => {
                out.push(0x1a);
                out.extend_from_slice(data);
            }
            Frame::PathResponse(data) => {
                out.push(0x1b);
                out.extend_from_slice(data);
            }
            Frame::ConnectionClose {
                app,
                code,
                frame_type,
                reason,
            } => {
                if *app {
                    out.push(0x1d);
                    v(out, &[*code]);
                } else {
                    out.push(0x1c);
                    v(out, &[*code, *frame_type]);
                }
                bytes(out, reason);
            }
            Frame::HandshakeDone => out.push(0x1e),
            Frame::Datagram { explicit_len, data } => {
                if *explicit_len {
                    out.push(0x31);
                    bytes(out, data);
                } else {
                    out.push(0x30);
                    out.extend_from_slice(&data.0);
                }
            }
            Frame::AckFrequency {
                seq,
                threshold,
                max_delay,
                reordering,
            } => {
                varint(0xaf, out);
                v(out, &[*seq, *threshold, *max_delay, *reordering]);
            }
            Frame::ImmediateAck => out.push(0x1f),
            Frame::Raw(data) => out.extend_from_slice(&data.0),
        }
    }
}

/// The `frames` fuzz target, on the null handshake (packets in the clear, sealed by the
/// harness as the peer would). Panics only when an invariant fails.
pub fn frames(data: &[u8]) {
    frames_with(Crypto::Null, data);
}

/// The `frames_tls` fuzz target: the same inputs on real TLS, the frames sealed and
/// header-protected with the keys the harness derives from the peer's key log.
pub fn frames_tls(data: &[u8]) {
    frames_with(Crypto::Tls, data);
}

fn frames_with(crypto: Crypto, data: &[u8]) {
    let input = FramesInput::decode(data);
    let mut harness = FrameHarness::new(input.target_dialed, crypto);
    for step in &input.steps {
        harness.step(step);
    }
}

/// The honest peer's TLS traffic secrets, as its rustls configurations log them: how many were
/// ever logged, and the newest [`MAX_SECRETS`].
#[derive(Default)]
pub(crate) struct SecretLog(Mutex<(usize, VecDeque<Vec<u8>>)>);

impl fmt::Debug for SecretLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretLog").finish_non_exhaustive()
    }
}

impl KeyLog for SecretLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        // Both directions: which one is the peer's sending direction shows when a packet opens.
        if label == "CLIENT_TRAFFIC_SECRET_0" || label == "SERVER_TRAFFIC_SECRET_0" {
            let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let (total, secrets) = &mut *log;
            if secrets.len() == MAX_SECRETS {
                secrets.pop_front();
            }
            secrets.push_back(secret.to_vec());
            *total += 1;
        }
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(suite: &Tls13CipherSuite, secret: &[u8], label: &[u8], out: &mut [u8]) {
    let expander = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(secret));
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    if expander.expand_slice(&info, out).is_err() {
        panic!("harness: HKDF-Expand-Label of {} bytes", out.len());
    }
}

/// The 1-RTT keys of one sending direction of one connection, every key generation followed.
struct Direction {
    suite: &'static Tls13CipherSuite,
    header: Box<dyn HeaderProtectionKey>,
    /// Packet keys by generation (key phase = generation modulo 2), and the newest secret.
    generations: Vec<Box<dyn PacketKey>>,
    secret: Vec<u8>,
    /// The generation and the largest packet number of the last packet opened.
    current: usize,
    largest: Option<u64>,
}

impl Direction {
    /// The keys of a traffic secret, if the harness knows its suite: a 48-byte secret is
    /// TLS_AES_256_GCM_SHA384 (what two rustls peers with the ring provider agree on), a 32-byte
    /// one TLS_CHACHA20_POLY1305_SHA256. (TLS_AES_128_GCM_SHA256 would need a 16-byte AEAD key,
    /// which rustls' public API cannot build.)
    fn new(secret: &[u8]) -> Option<Self> {
        use rustls::crypto::ring::cipher_suite;
        let suite = match secret.len() {
            48 => cipher_suite::TLS13_AES_256_GCM_SHA384,
            32 => cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            _ => return None,
        }
        .tls13()?;
        let quic = suite.quic?;
        let mut hp = [0u8; 32];
        expand_label(suite, secret, b"quic hp", &mut hp);
        let mut direction = Self {
            suite,
            header: quic.header_protection_key(AeadKey::from(hp)),
            generations: Vec::new(),
            secret: secret.to_vec(),
            current: 0,
            largest: None,
        };
        direction.push_generation();
        Some(direction)
    }

    /// Derives the packet key of the newest secret, and the secret after it ("quic ku").
    fn push_generation(&mut self) {
        let Some(quic) = self.suite.quic else { return };
        let (mut key, mut iv) = ([0u8; 32], [0u8; 12]);
        expand_label(self.suite, &self.secret, b"quic key", &mut key);
        expand_label(self.suite, &self.secret, b"quic iv", &mut iv);
        self.generations
            .push(quic.packet_key(AeadKey::from(key), Iv::from(iv)));
        let mut next = vec![0u8; self.secret.len()];
        expand_label(self.suite, &self.secret, b"quic ku", &mut next);
        self.secret = next;
    }

    fn generation(&mut self, generation: usize) -> Option<&dyn PacketKey> {
        while self.generations.len() <= generation && self.generations.len() < MAX_GENERATIONS {
            self.push_generation();
        }
        self.generations.get(generation).map(|key| &**key)
    }

    /// Opens a short-header packet (alone in its datagram) sent in this direction.
    fn open(&mut self, datagram: &[u8]) -> Option<Opened> {
        let pn_offset = 1 + CID_LEN;
        let sample = datagram.get(pn_offset + 4..pn_offset + 4 + SAMPLE_LEN)?;
        let mut first = datagram[0];
        let mut pn = [0u8; 4];
        pn.copy_from_slice(&datagram[pn_offset..pn_offset + 4]);
        self.header
            .decrypt_in_place(sample, &mut first, &mut pn)
            .ok()?;
        if first & 0x18 != 0 {
            return None; // reserved bits: not this direction's header protection
        }
        let pn_len = usize::from(first & 0x03) + 1;
        let mut header = Vec::with_capacity(pn_offset + pn_len);
        header.push(first);
        header.extend_from_slice(&datagram[1..pn_offset]);
        header.extend_from_slice(&pn[..pn_len]);
        let truncated = pn[..pn_len]
            .iter()
            .fold(0u64, |n, &b| (n << 8) | u64::from(b));
        let phase = usize::from(first & 0x04 != 0);
        // The generation of that phase at or next to the current one, then the one before.
        let mut generations = vec![];
        if self.current % 2 == phase {
            generations.push(self.current);
        } else {
            generations.push(self.current + 1);
            if let Some(previous) = self.current.checked_sub(1) {
                generations.push(previous);
            }
        }
        let window = 1u64 << (8 * pn_len);
        let expected = self.largest.map_or(0, |n| n + 1);
        let estimate = decode_pn(truncated, window, expected);
        let body = &datagram[pn_offset + pn_len..];
        for generation in generations {
            for k in 0..PN_WINDOWS {
                let number = estimate + k * window;
                let key = self.generation(generation)?;
                let mut payload = body.to_vec();
                if let Ok(plain) = key.decrypt_in_place(number, &header, &mut payload) {
                    let len = plain.len();
                    payload.truncate(len);
                    self.current = self.current.max(generation);
                    self.largest = Some(self.largest.map_or(number, |n| n.max(number)));
                    return Some(Opened {
                        generation,
                        number,
                        header,
                        payload,
                    });
                }
            }
        }
        None
    }

    /// Seals `payload` as the packet `opened` was: same header, packet number and key phase.
    fn seal(&mut self, opened: &Opened, mut payload: Vec<u8>) -> Option<Vec<u8>> {
        let pn_offset = 1 + CID_LEN;
        let pn_len = opened.header.len() - pn_offset;
        // Header protection samples 16 bytes from 4 past the packet number's start.
        if pn_len + payload.len() < 4 {
            payload.resize(4 - pn_len, 0);
        }
        let key = self.generation(opened.generation)?;
        let tag = key
            .encrypt_in_place(opened.number, &opened.header, &mut payload)
            .ok()?;
        let mut packet = opened.header.clone();
        packet.extend_from_slice(&payload);
        packet.extend_from_slice(tag.as_ref());
        let mut sample = [0u8; SAMPLE_LEN];
        sample.copy_from_slice(&packet[pn_offset + 4..pn_offset + 4 + SAMPLE_LEN]);
        let (head, rest) = packet.split_at_mut(1);
        self.header
            .encrypt_in_place(
                &sample,
                &mut head[0],
                &mut rest[pn_offset - 1..pn_offset - 1 + pn_len],
            )
            .ok()?;
        Some(packet)
    }
}

/// Opens a short-header packet (alone in its datagram) of the null handshake: no header
/// protection, the payload in the clear before a 16-byte tag.
fn open_null(datagram: &[u8]) -> Option<Opened> {
    let pn_offset = 1 + CID_LEN;
    let pn_len = usize::from(datagram.first()? & 0x03) + 1;
    let header = datagram.get(..pn_offset + pn_len)?.to_vec();
    let end = datagram.len().checked_sub(null_crypto::TAG_LEN)?;
    let payload = datagram.get(pn_offset + pn_len..end)?.to_vec();
    Some(Opened {
        generation: 0,
        number: 0,
        header,
        payload,
    })
}

/// RFC 9000 §A.3: the packet number closest to `expected` with these low bits.
fn decode_pn(truncated: u64, window: u64, expected: u64) -> u64 {
    let half = window / 2;
    let candidate = (expected & !(window - 1)) | truncated;
    if candidate + half <= expected && candidate < (1 << 62) - window {
        candidate + window
    } else if candidate > expected + half && candidate >= window {
        candidate - window
    } else {
        candidate
    }
}

/// A real packet of the peer, opened.
struct Opened {
    generation: usize,
    number: u64,
    /// The unprotected header: first byte, destination CID, truncated packet number.
    header: Vec<u8>,
    payload: Vec<u8>,
}

/// The peer's sending keys for every connection it made, opened lazily from its key log.
#[derive(Default)]
struct Keys {
    /// The peers are on the null handshake: packets open and seal without keys.
    null: bool,
    log: Arc<SecretLog>,
    /// Directions derived so far, in the order their secrets were logged.
    directions: Vec<Direction>,
    logged: usize,
}

impl Keys {
    /// Opens a datagram of the peer's, if it is one short-header packet under a known key;
    /// returns which direction opened it.
    fn open(&mut self, datagram: &[u8]) -> Option<(usize, Opened)> {
        let first = *datagram.first()?;
        if first & 0x80 != 0 {
            return None; // a long header (the fixed bit 0x40 may be greased, RFC 9287)
        }
        if self.null {
            return open_null(datagram).map(|opened| (0, opened));
        }
        self.refresh();
        // The newest connection first: it is the one most packets belong to.
        (0..self.directions.len())
            .rev()
            .find_map(|i| self.directions[i].open(datagram).map(|opened| (i, opened)))
    }

    /// Seals `payload` as `opened` was sealed, by the keys of `direction`.
    fn seal(&mut self, direction: usize, opened: &Opened, mut payload: Vec<u8>) -> Option<Vec<u8>> {
        if self.null {
            // Header protection samples 16 bytes from 4 past the packet number's start, so
            // the packet number and payload are at least 4 bytes long, as in `Direction::seal`.
            let pn_len = opened.header.len() - (1 + CID_LEN);
            if pn_len + payload.len() < 4 {
                payload.resize(4 - pn_len, 0);
            }
            return Some(null_crypto::seal(&opened.header, &payload));
        }
        self.directions.get_mut(direction)?.seal(opened, payload)
    }

    /// Derives the keys of secrets logged since the last call.
    fn refresh(&mut self) {
        let log = self.log.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, secrets) = &*log;
        // The log keeps only the newest secrets; `logged` counts those taken so far.
        let first = total - secrets.len();
        let fresh: Vec<Vec<u8>> = secrets
            .iter()
            .skip(self.logged.saturating_sub(first))
            .cloned()
            .collect();
        self.logged = *total;
        drop(log);
        for secret in fresh {
            if self.directions.len() == MAX_SECRETS {
                self.directions.remove(0);
            }
            if let Some(direction) = Direction::new(&secret) {
                self.directions.push(direction);
            }
        }
    }
}

/// The `datagram` harness plus the peer's keys.
struct FrameHarness {
    inner: Harness,
    keys: Keys,
    chunks: Vec<Bytes>,
    /// What is left of [`MAX_BURST_KIB`].
    burst_left: u32,
}

impl FrameHarness {
    fn new(target_dialed: bool, crypto: Crypto) -> Self {
        let log = Arc::new(SecretLog::default());
        // quicpeer's default bidirectional limit, and as many unidirectional streams (off by
        // default, but an embedder may allow them): the frames forge stream IDs in the hundreds.
        let defaults = Config::default();
        let streams = |mut config: Config| {
            config.max_concurrent_bidi_streams = defaults.max_concurrent_bidi_streams;
            config.max_concurrent_uni_streams = defaults.max_concurrent_bidi_streams;
            config
        };
        let mut config = streams(peer_config(crypto));
        config.key_log = Some(log.clone());
        let mode = if target_dialed {
            Mode::ConnectedAsDialer
        } else {
            Mode::ConnectedAsListener
        };
        Self {
            inner: Harness::with_configs(mode, streams(target_config(false, crypto)), config),
            keys: Keys {
                null: crypto == Crypto::Null,
                log,
                ..Keys::default()
            },
            chunks: Vec::new(),
            burst_left: MAX_BURST_KIB,
        }
    }

    fn step(&mut self, step: &Step) {
        let honest = match step {
            Step::Frames { keep, frames } => {
                self.forge(*keep, frames);
                return;
            }
            Step::Deliver => datagram::Step::Deliver,
            Step::Drop => datagram::Step::Drop,
            Step::Reply { lose } => datagram::Step::Reply { lose: *lose },
            Step::Flush => datagram::Step::Flush,
            Step::Wait { millis } => datagram::Step::Wait { millis: *millis },
            Step::PeerSends { len } => datagram::Step::PeerSends { len: *len },
            Step::TargetSends { len } => datagram::Step::TargetSends { len: *len },
            Step::TargetReads => {
                self.target_reads();
                return;
            }
            Step::Burst { kib } => {
                let kib = u32::from(*kib).min(self.burst_left);
                self.burst_left -= kib;
                let target = self.inner.target.peer_id();
                let manager = &mut self.inner.peer.manager;
                if let Ok(stream) = manager.open_stream_to(&target) {
                    let _ = manager.stream_write(stream, &vec![0xa5; kib as usize * 1024]);
                    let _ = manager.stream_finish(stream);
                }
                self.inner.settle();
                return;
            }
        };
        self.inner.step(&honest);
    }

    /// Finds the first of the peer's datagrams in flight that opens.
    fn find(&mut self) -> Option<(usize, usize, Opened)> {
        self.inner
            .to_target
            .iter()
            .enumerate()
            .find_map(|(index, datagram)| {
                self.keys
                    .open(datagram)
                    .map(|(direction, opened)| (index, direction, opened))
            })
    }

    /// Replaces a packet of the peer's with one carrying `frames`; false if none was found.
    fn forge(&mut self, keep: bool, frames: &[Frame]) -> bool {
        let mut found = self.find();
        if found.is_none() {
            let target = self.inner.target.peer_id();
            open_and_finish(&mut self.inner.peer.manager, &target);
            self.inner.settle();
            found = self.find();
        }
        let Some((index, direction, opened)) = found else {
            return false;
        };
        for _ in 0..index {
            if let Some(datagram) = self.inner.to_target.pop_front() {
                self.inner.deliver_to_target(datagram);
            }
        }
        self.inner.to_target.pop_front();
        let mut payload = Vec::new();
        for frame in frames {
            frame.write(&mut payload);
        }
        let budget = MAX_DATAGRAM - opened.header.len() - TAG_LEN;
        let own = if keep { opened.payload.len() } else { 0 };
        payload.truncate(budget.saturating_sub(own));
        if keep {
            payload.extend_from_slice(&opened.payload);
        }
        let Some(packet) = self.keys.seal(direction, &opened, payload) else {
            panic!("harness: a packet that opened does not seal");
        };
        self.inner.deliver_to_target(packet);
        self.inner.settle();
        true
    }

    /// The target reads every stream it was told about, as an application would, and finishes
    /// its own half of a stream read to its end (so that the stream closes and the peer gets
    /// the credit back).
    fn target_reads(&mut self) {
        let manager = &mut self.inner.target.manager;
        for stream in self.inner.target.log.take_readable() {
            let read = manager.stream_read_chunks(stream, 64 * 1024, &mut self.chunks);
            self.chunks.clear();
            if matches!(read, Ok(read) if read.status == ReadStatus::Finished) {
                let _ = manager.stream_finish(stream);
            }
        }
        self.inner.settle();
    }
}

/// Opens a stream to `peer` and finishes it at once, so that the manager sends a packet.
fn open_and_finish(manager: &mut Manager, peer: &PeerId) {
    if let Ok(stream) = manager.open_stream_to(peer) {
        let _ = manager.stream_finish(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path works end to end: a STREAM frame forged under the peer's real keys (or in the
    /// clear, on the null handshake) reaches the target's application with exactly its bytes.
    #[test]
    fn a_forged_stream_frame_is_read_by_the_target() {
        for (target_dialed, crypto) in [
            (false, Crypto::Tls),
            (true, Crypto::Tls),
            (false, Crypto::Null),
            (true, Crypto::Null),
        ] {
            let mut harness = FrameHarness::new(target_dialed, crypto);
            harness.step(&Step::PeerSends { len: 3 });
            // The peer's fourth bidirectional stream.
            forge_and_read_stream(&mut harness, 3, target_dialed);
        }
    }

    /// Forges a STREAM frame on the peer's `index`th bidirectional stream and checks that the
    /// target reads exactly its bytes.
    fn forge_and_read_stream(harness: &mut FrameHarness, index: u64, target_dialed: bool) {
        // Client streams are 0, 4, 8, …, server streams 1, 5, 9, …; the peer dialed (is the
        // client) unless the target did.
        let id = 4 * index + u64::from(target_dialed);
        let body = b"forged, yet sealed with the real keys".to_vec();
        assert!(
            harness.find().is_some(),
            "no packet of the peer's opens with the logged keys"
        );
        harness.step(&Step::Frames {
            keep: true,
            frames: vec![Frame::Stream {
                id: Value(id),
                offset: None,
                explicit_len: true,
                fin: true,
                data: Data(body.clone()),
            }],
        });
        harness.step(&Step::Flush);
        let peer = harness.inner.peer.peer_id();
        let conn = harness.inner.target.manager.connection(&peer);
        assert!(conn.is_some(), "the connection survived the forged packet");
        let streams = harness.inner.target.log.take_readable();
        // Shown as `<conn>/s<index>`.
        let forged = streams
            .iter()
            .find(|s| s.to_string().ends_with(&format!("/s{index}")));
        let Some(&stream) = forged else {
            panic!("stream {id} not reported: {streams:?}");
        };
        let mut chunks: Vec<Bytes> = Vec::new();
        let read = harness
            .inner
            .target
            .manager
            .stream_read_chunks(stream, 1 << 16, &mut chunks)
            .expect("the forged stream reads");
        assert_eq!(read.status, ReadStatus::Finished);
        assert_eq!(chunks.concat(), body);
    }

    /// The regression of the first finding: finishing (or writing, or resetting) a
    /// unidirectional stream the peer opened panicked inside quinn-proto; now it is a typed
    /// error, and the stream still reads.
    #[test]
    fn the_peers_unidirectional_stream_has_no_sending_half() {
        use quicpeer::StreamError;
        let mut harness = FrameHarness::new(false, Crypto::Tls);
        harness.step(&Step::PeerSends { len: 1 });
        // The client's (the peer's) first unidirectional stream: ID 2.
        assert!(harness.forge(
            true,
            &[Frame::Stream {
                id: Value(2),
                offset: None,
                explicit_len: true,
                fin: true,
                data: Data(b"one way".to_vec()),
            }]
        ));
        let streams = harness.inner.target.log.take_readable();
        let uni: Vec<_> = streams.iter().filter(|s| !s.is_bidirectional()).collect();
        let [&stream] = uni.as_slice() else {
            panic!("one unidirectional stream expected: {streams:?}");
        };
        let manager = &mut harness.inner.target.manager;
        assert_eq!(manager.stream_finish(stream), Err(StreamError::ReceiveOnly));
        assert_eq!(
            manager.stream_write(stream, b"x"),
            Err(StreamError::ReceiveOnly)
        );
        assert_eq!(
            manager.stream_reset(stream, 1),
            Err(StreamError::ReceiveOnly)
        );
        let mut chunks: Vec<Bytes> = Vec::new();
        let read = manager
            .stream_read_chunks(stream, 1 << 16, &mut chunks)
            .expect("the stream reads");
        assert_eq!(read.status, ReadStatus::Finished);
        assert_eq!(chunks.concat(), b"one way");
    }

    /// A frame the target must refuse (HANDSHAKE_DONE sent to a server, RFC 9000 §19.20)
    /// closes the connection: the forged packet was authenticated and its frames parsed.
    #[test]
    fn a_forbidden_frame_closes_the_connection() {
        let mut harness = FrameHarness::new(false, Crypto::Tls);
        harness.step(&Step::PeerSends { len: 1 });
        assert!(harness.find().is_some(), "no packet of the peer's opens");
        harness.step(&Step::Frames {
            keep: false,
            frames: vec![Frame::HandshakeDone],
        });
        let peer = harness.inner.peer.peer_id();
        assert!(
            harness.inner.target.manager.connection(&peer).is_none(),
            "the target kept a connection whose peer sent HANDSHAKE_DONE to a server"
        );
    }

    /// quinn updates its 1-RTT keys every 10 to 1000 packets at first: the harness follows the
    /// peer through key updates, and every forged packet is still accepted.
    #[test]
    fn forged_packets_follow_key_updates() {
        let mut harness = FrameHarness::new(true, Crypto::Tls);
        for round in 0..400 {
            harness.step(&Step::PeerSends { len: 1 });
            assert!(
                harness.forge(true, &[Frame::Ping]),
                "round {round}: no packet of the peer's opened"
            );
            harness.step(&Step::Flush);
            harness.step(&Step::TargetReads);
        }
        let generations = harness.keys.directions.iter().map(|d| d.current).max();
        assert!(
            generations.is_some_and(|g| g >= 1),
            "no key update in 400 rounds: {generations:?}"
        );
        // The peer has opened streams 0 to 400; the forged frame opens the next.
        harness.step(&Step::PeerSends { len: 1 });
        forge_and_read_stream(&mut harness, 401, true);
    }

    #[test]
    fn inputs_round_trip() {
        let input = FramesInput {
            target_dialed: true,
            steps: vec![
                Step::PeerSends { len: 9 },
                Step::Frames {
                    keep: true,
                    frames: vec![
                        Frame::Ack {
                            largest: Value(VARINT_MAX),
                            delay: Value(70_000),
                            first: Value(3),
                            ranges: vec![(Value(1), Value(300))],
                            ecn: Some((Value(1), Value(2), Value(1 << 40))),
                        },
                        Frame::NewConnectionId {
                            seq: Value(1),
                            retire_prior_to: Value(0),
                            cid: Data(vec![7; 21]),
                            token: [1; 16],
                        },
                        Frame::Raw(Data(vec![0x40, 0x1e])),
                    ],
                },
                Step::Wait { millis: 300 },
                Step::TargetReads,
            ],
        };
        assert_eq!(FramesInput::decode(&input.encode()), input);
    }

    #[test]
    fn varints_are_rfc_9000s() {
        // RFC 9000 §A.1's examples.
        let mut out = Vec::new();
        varint(151_288_809_941_952_652, &mut out);
        assert_eq!(out, [0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]);
        out.clear();
        varint(494_878_333, &mut out);
        assert_eq!(out, [0x9d, 0x7f, 0x3e, 0x7d]);
        out.clear();
        varint(15_293, &mut out);
        assert_eq!(out, [0x7b, 0xbd]);
        out.clear();
        varint(37, &mut out);
        assert_eq!(out, [0x25]);
        // RFC 9000 §A.3's example.
        assert_eq!(decode_pn(0x9b32, 1 << 16, 0xa82f30eb), 0xa82f9b32);
    }
}
