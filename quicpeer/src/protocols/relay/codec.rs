//! The hop and stop messages of circuit relay v2, typed, and their framing.
//!
//! Every message travels as an unsigned-varint length followed by a protobuf body of at most
//! [`MAX_MESSAGE`] bytes. [`take_frame`] cuts one body off a receive buffer without ever
//! buffering more than one message; [`HopMessage::decode`] and [`StopMessage::decode`] turn a
//! body into a typed message or a typed [`CodecError`], never a panic.

use std::time::Duration;

use prost::Message as _;

use super::proto;
use crate::address::Multiaddr;
use crate::PeerId;

/// The most bytes one message body may have (the length prefix not counted), as in go- and
/// rust-libp2p.
pub const MAX_MESSAGE: usize = 4096;
/// The longest length prefix of a body of at most [`MAX_MESSAGE`] bytes.
const MAX_PREFIX: usize = 2;

/// Why bytes from a peer are not a relay message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The length prefix announces a body above [`MAX_MESSAGE`] bytes (or is not a varint
    /// that short): the stream is reset.
    #[error("message of {0} bytes is above the 4 KiB limit")]
    Oversize(usize),
    /// The stream ended inside a message.
    #[error("stream ended inside a message")]
    Truncated,
    /// The body is not valid protobuf for the message.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// The message has no `type`.
    #[error("message without a type")]
    MissingType,
    /// The `type` is none the spec defines.
    #[error("unknown message type {0}")]
    UnknownType(i32),
    /// A message that must name a peer does not.
    #[error("message without a peer")]
    MissingPeer,
    /// The peer id bytes are no valid PeerId.
    #[error("invalid peer id")]
    InvalidPeerId,
    /// A STATUS message without a status.
    #[error("STATUS without a status code")]
    MissingStatus,
    /// A status code the spec does not define.
    #[error("unknown status code {0}")]
    UnknownStatus(i32),
    /// A reservation without its expiry.
    #[error("reservation without an expiry")]
    MissingExpiry,
    /// A reservation address that is not a multiaddr.
    #[error("invalid multiaddr in a reservation")]
    InvalidAddress,
}

/// The STATUS codes of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// 100: the request succeeded.
    Ok,
    /// 200: the relay refuses reservations.
    ReservationRefused,
    /// 201: a limit of the relay is reached.
    ResourceLimitExceeded,
    /// 202: the peer may not do this.
    PermissionDenied,
    /// 203: the relay could not reach the target, or the target refused.
    ConnectionFailed,
    /// 204: the target holds no reservation.
    NoReservation,
    /// 400: the message could not be parsed.
    MalformedMessage,
    /// 401: a message of a type that makes no sense here.
    UnexpectedMessage,
}

impl Status {
    /// The code on the wire.
    pub fn code(self) -> i32 {
        match self {
            Status::Ok => 100,
            Status::ReservationRefused => 200,
            Status::ResourceLimitExceeded => 201,
            Status::PermissionDenied => 202,
            Status::ConnectionFailed => 203,
            Status::NoReservation => 204,
            Status::MalformedMessage => 400,
            Status::UnexpectedMessage => 401,
        }
    }

    /// The status of a wire code, if the spec defines it.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            100 => Status::Ok,
            200 => Status::ReservationRefused,
            201 => Status::ResourceLimitExceeded,
            202 => Status::PermissionDenied,
            203 => Status::ConnectionFailed,
            204 => Status::NoReservation,
            400 => Status::MalformedMessage,
            401 => Status::UnexpectedMessage,
            _ => return None,
        })
    }

    /// The spec's name, as logs and the CLI print it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::ReservationRefused => "RESERVATION_REFUSED",
            Status::ResourceLimitExceeded => "RESOURCE_LIMIT_EXCEEDED",
            Status::PermissionDenied => "PERMISSION_DENIED",
            Status::ConnectionFailed => "CONNECTION_FAILED",
            Status::NoReservation => "NO_RESERVATION",
            Status::MalformedMessage => "MALFORMED_MESSAGE",
            Status::UnexpectedMessage => "UNEXPECTED_MESSAGE",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The limits a relay puts on one circuit; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    /// How long the circuit may last (whole seconds on the wire).
    pub duration: Option<Duration>,
    /// How many bytes may cross it in each direction.
    pub data: Option<u64>,
}

impl Limit {
    fn to_proto(self) -> Option<proto::Limit> {
        if self.duration.is_none() && self.data.is_none() {
            return None;
        }
        Some(proto::Limit {
            duration: (self.duration).map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
            data: self.data,
        })
    }

    /// An empty limit message limits nothing: the same as none.
    fn from_proto(limit: Option<proto::Limit>) -> Option<Self> {
        let limit = limit.filter(|l| l.duration.is_some() || l.data.is_some())?;
        Some(Limit {
            duration: limit.duration.map(|s| Duration::from_secs(s.into())),
            data: limit.data,
        })
    }
}

/// A reservation as the relay grants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// When it expires, in seconds since the UNIX epoch.
    pub expire: u64,
    /// The relay's addresses (with its `/p2p/` part) the client can advertise.
    pub addrs: Vec<Multiaddr>,
    /// The signed voucher ([`Voucher`](super::Voucher) in an envelope).
    pub voucher: Option<Vec<u8>>,
}

/// A message of the hop protocol (`/libp2p/circuit/relay/0.2.0/hop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopMessage {
    /// A client asks for a reservation.
    Reserve,
    /// A client asks to be connected to `peer`.
    Connect {
        /// The target.
        peer: PeerId,
    },
    /// The relay's answer.
    Status {
        /// The outcome.
        status: Status,
        /// The reservation granted, in answer to RESERVE.
        reservation: Option<Reservation>,
        /// The circuit's limits (or the limits of circuits to a reservation).
        limit: Option<Limit>,
    },
}

/// A message of the stop protocol (`/libp2p/circuit/relay/0.2.0/stop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopMessage {
    /// The relay connects `peer` to the stream's receiver.
    Connect {
        /// The peer at the other end of the circuit.
        peer: PeerId,
        /// The circuit's limits.
        limit: Option<Limit>,
    },
    /// The receiver's answer.
    Status(Status),
}

const HOP_RESERVE: i32 = 0;
const HOP_CONNECT: i32 = 1;
const HOP_STATUS: i32 = 2;
const STOP_CONNECT: i32 = 0;
const STOP_STATUS: i32 = 1;

fn peer_proto(peer: &PeerId) -> proto::Peer {
    proto::Peer {
        id: Some(peer.to_bytes()),
        addrs: Vec::new(),
    }
}

fn peer_from(peer: Option<proto::Peer>) -> Result<PeerId, CodecError> {
    let id = peer.and_then(|p| p.id).ok_or(CodecError::MissingPeer)?;
    PeerId::from_bytes(&id).map_err(|_| CodecError::InvalidPeerId)
}

fn status_from(status: Option<i32>) -> Result<Status, CodecError> {
    let code = status.ok_or(CodecError::MissingStatus)?;
    Status::from_code(code).ok_or(CodecError::UnknownStatus(code))
}

/// Prefixes a body with its varint length.
fn frame(body: Vec<u8>) -> Vec<u8> {
    let mut buf = unsigned_varint::encode::usize_buffer();
    let prefix = unsigned_varint::encode::usize(body.len(), &mut buf);
    let mut out = Vec::with_capacity(prefix.len() + body.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&body);
    out
}

impl HopMessage {
    /// The message, length-prefixed, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let message = match self {
            HopMessage::Reserve => proto::HopMessage {
                r#type: Some(HOP_RESERVE),
                ..Default::default()
            },
            HopMessage::Connect { peer } => proto::HopMessage {
                r#type: Some(HOP_CONNECT),
                peer: Some(peer_proto(peer)),
                ..Default::default()
            },
            HopMessage::Status {
                status,
                reservation,
                limit,
            } => proto::HopMessage {
                r#type: Some(HOP_STATUS),
                status: Some(status.code()),
                reservation: reservation.as_ref().map(|r| proto::Reservation {
                    expire: Some(r.expire),
                    addrs: r.addrs.iter().map(|a| a.to_vec()).collect(),
                    voucher: r.voucher.clone(),
                }),
                limit: limit.and_then(Limit::to_proto),
                ..Default::default()
            },
        };
        frame(message.encode_to_vec())
    }

    /// Decodes a message body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, CodecError> {
        let message = proto::HopMessage::decode(body)
            .map_err(|error| CodecError::Protobuf(error.to_string()))?;
        match message.r#type.ok_or(CodecError::MissingType)? {
            HOP_RESERVE => Ok(HopMessage::Reserve),
            HOP_CONNECT => Ok(HopMessage::Connect {
                peer: peer_from(message.peer)?,
            }),
            HOP_STATUS => {
                let reservation = match message.reservation {
                    None => None,
                    Some(r) => Some(Reservation {
                        expire: r.expire.ok_or(CodecError::MissingExpiry)?,
                        addrs: (r.addrs.into_iter())
                            .map(|a| Multiaddr::try_from(a).map_err(|_| CodecError::InvalidAddress))
                            .collect::<Result<_, _>>()?,
                        voucher: r.voucher,
                    }),
                };
                Ok(HopMessage::Status {
                    status: status_from(message.status)?,
                    reservation,
                    limit: Limit::from_proto(message.limit),
                })
            }
            other => Err(CodecError::UnknownType(other)),
        }
    }
}

impl StopMessage {
    /// The message, length-prefixed, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let message = match self {
            StopMessage::Connect { peer, limit } => proto::StopMessage {
                r#type: Some(STOP_CONNECT),
                peer: Some(peer_proto(peer)),
                limit: limit.and_then(Limit::to_proto),
                ..Default::default()
            },
            StopMessage::Status(status) => proto::StopMessage {
                r#type: Some(STOP_STATUS),
                status: Some(status.code()),
                ..Default::default()
            },
        };
        frame(message.encode_to_vec())
    }

    /// Decodes a message body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, CodecError> {
        let message = proto::StopMessage::decode(body)
            .map_err(|error| CodecError::Protobuf(error.to_string()))?;
        match message.r#type.ok_or(CodecError::MissingType)? {
            STOP_CONNECT => Ok(StopMessage::Connect {
                peer: peer_from(message.peer)?,
                limit: Limit::from_proto(message.limit),
            }),
            STOP_STATUS => Ok(StopMessage::Status(status_from(message.status)?)),
            other => Err(CodecError::UnknownType(other)),
        }
    }
}

/// Cuts the first length-prefixed message body off `buf`: `Ok(None)` while it is incomplete
/// (read more; `buf` never needs more than `2 + MAX_MESSAGE` bytes), `Err(Oversize)` as soon
/// as the prefix announces too long a body.
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, CodecError> {
    let (len, rest) = match unsigned_varint::decode::usize(buf) {
        Ok(decoded) => decoded,
        Err(unsigned_varint::decode::Error::Insufficient) if buf.len() < MAX_PREFIX => {
            return Ok(None)
        }
        // Longer than any prefix of an allowed length, or not minimal.
        Err(_) => return Err(CodecError::Oversize(usize::MAX)),
    };
    if len > MAX_MESSAGE {
        return Err(CodecError::Oversize(len));
    }
    if rest.len() < len {
        return Ok(None);
    }
    let start = buf.len() - rest.len();
    let body = buf[start..start + len].to_vec();
    buf.drain(..start + len);
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        crate::Identity::from_ed25519_seed([n; 32]).peer_id()
    }

    fn body(framed: &[u8]) -> Vec<u8> {
        let mut buf = framed.to_vec();
        let body = take_frame(&mut buf).expect("valid").expect("complete");
        assert!(buf.is_empty());
        body
    }

    #[test]
    fn hop_messages_round_trip() {
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().expect("addr");
        let messages = [
            HopMessage::Reserve,
            HopMessage::Connect { peer: peer(1) },
            HopMessage::Status {
                status: Status::Ok,
                reservation: Some(Reservation {
                    expire: 1_700_000_000,
                    addrs: vec![addr],
                    voucher: Some(vec![1, 2, 3]),
                }),
                limit: Some(Limit {
                    duration: Some(Duration::from_secs(120)),
                    data: Some(1 << 17),
                }),
            },
            HopMessage::Status {
                status: Status::NoReservation,
                reservation: None,
                limit: None,
            },
        ];
        for message in messages {
            assert_eq!(HopMessage::decode(&body(&message.encode())), Ok(message));
        }
    }

    #[test]
    fn stop_messages_round_trip() {
        let messages = [
            StopMessage::Connect {
                peer: peer(2),
                limit: None,
            },
            StopMessage::Connect {
                peer: peer(2),
                limit: Some(Limit {
                    duration: None,
                    data: Some(7),
                }),
            },
            StopMessage::Status(Status::ConnectionFailed),
        ];
        for message in messages {
            assert_eq!(StopMessage::decode(&body(&message.encode())), Ok(message));
        }
    }

    #[test]
    fn every_status_code_round_trips() {
        for code in [100, 200, 201, 202, 203, 204, 400, 401] {
            let status = Status::from_code(code).expect("defined");
            assert_eq!(status.code(), code);
        }
        assert_eq!(Status::from_code(0), None);
        assert_eq!(Status::from_code(300), None);
    }

    #[test]
    fn a_reserve_is_the_bytes_go_and_rust_libp2p_send() {
        // type = RESERVE (0), explicitly present: field 1, varint 0.
        assert_eq!(HopMessage::Reserve.encode(), [2, 0x08, 0x00]);
    }

    #[test]
    fn frames_arrive_in_pieces() {
        let framed = HopMessage::Connect { peer: peer(3) }.encode();
        let mut buf = Vec::new();
        for (i, byte) in framed.iter().enumerate() {
            buf.push(*byte);
            let taken = take_frame(&mut buf).expect("valid");
            assert_eq!(taken.is_some(), i == framed.len() - 1);
        }
    }

    #[test]
    fn oversize_messages_are_refused_from_the_prefix() {
        // 4097 announced: refused before any of the body is buffered.
        let mut buf = vec![0x81, 0x20];
        assert_eq!(take_frame(&mut buf), Err(CodecError::Oversize(4097)));
        let mut exactly = vec![0x80, 0x20];
        assert_eq!(take_frame(&mut exactly), Ok(None));
        // A prefix that goes on past two bytes announces at least 16 KiB.
        let mut long = vec![0xff, 0xff, 0xff];
        assert!(matches!(
            take_frame(&mut long),
            Err(CodecError::Oversize(_))
        ));
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        assert!(matches!(
            HopMessage::decode(&[0xff, 0xff]),
            Err(CodecError::Protobuf(_))
        ));
        assert_eq!(HopMessage::decode(&[]), Err(CodecError::MissingType));
        assert_eq!(
            HopMessage::decode(&[0x08, 0x07]),
            Err(CodecError::UnknownType(7))
        );
        // CONNECT without a peer, then with a peer id of junk.
        assert_eq!(
            HopMessage::decode(&[0x08, 0x01]),
            Err(CodecError::MissingPeer)
        );
        assert_eq!(
            HopMessage::decode(&[0x08, 0x01, 0x12, 0x03, 0x0a, 0x01, 0x00]),
            Err(CodecError::InvalidPeerId)
        );
        // STATUS without a code, then with an undefined one.
        assert_eq!(
            HopMessage::decode(&[0x08, 0x02]),
            Err(CodecError::MissingStatus)
        );
        assert_eq!(
            HopMessage::decode(&[0x08, 0x02, 0x28, 0x05]),
            Err(CodecError::UnknownStatus(5))
        );
        assert_eq!(
            StopMessage::decode(&[0x08, 0x09]),
            Err(CodecError::UnknownType(9))
        );
    }
}
