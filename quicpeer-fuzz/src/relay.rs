//! The `relay` target: what a peer can send on a circuit relay v2 hop or stop stream, into the
//! relay's framing ([`take_frame`]) and message decoders, and every body into the voucher
//! opener.
//!
//! Input: a kind byte (hop or stop), a fragmentation byte, then the peer's bytes. The bytes go
//! through the framing twice, whole and in fragments, and both runs must cut the same bodies
//! and end in the same error (framing must not depend on how reads split the stream). Other
//! checks: the receive buffer never has to hold more than one maximal message (prefix
//! included) plus the fragment just read; a body is at most [`MAX_MESSAGE`] bytes; every
//! message that decodes encodes back to bytes that decode to the same message.

use quicpeer::protocols::relay::codec::{take_frame, MAX_MESSAGE};
use quicpeer::protocols::relay::{CodecError, HopMessage, StopMessage, Voucher};

/// Which protocol's messages an input carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// `/libp2p/circuit/relay/0.2.0/hop`.
    Hop,
    /// `/libp2p/circuit/relay/0.2.0/stop`.
    Stop,
}

impl RelayKind {
    /// The kind byte's meaning.
    pub fn from_byte(byte: u8) -> Self {
        if byte.is_multiple_of(2) {
            Self::Hop
        } else {
            Self::Stop
        }
    }
}

/// Cuts `data` into bodies `fragment` bytes at a time (all at once when 0); the bodies, and
/// the error that ended the stream, if any.
fn frames(data: &[u8], fragment: usize) -> (Vec<Vec<u8>>, Option<CodecError>) {
    let mut buf = Vec::new();
    let mut bodies = Vec::new();
    let step = if fragment == 0 {
        data.len().max(1)
    } else {
        fragment
    };
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match take_frame(&mut buf) {
                Ok(Some(body)) => {
                    assert!(body.len() <= MAX_MESSAGE, "body over the limit");
                    bodies.push(body);
                }
                Ok(None) => break,
                Err(error) => return (bodies, Some(error)),
            }
        }
        if fragment != 0 {
            assert!(
                buf.len() <= 2 + MAX_MESSAGE + chunk.len(),
                "the receive buffer grew past one message: {}",
                buf.len()
            );
        }
    }
    (bodies, None)
}

/// The fuzz body: never panics on any input unless an invariant fails.
pub fn relay(data: &[u8]) {
    let [kind, fragment, rest @ ..] = data else {
        return;
    };
    let kind = RelayKind::from_byte(*kind);
    let whole = frames(rest, 0);
    let pieces = frames(rest, usize::from(*fragment % 64));
    // An oversize prefix is an error however it arrives; what it reports may differ only in
    // how much of an unfinished prefix was seen.
    assert_eq!(whole.0, pieces.0, "the bodies depend on fragmentation");
    assert_eq!(
        whole.1.is_some(),
        pieces.1.is_some(),
        "the error depends on fragmentation"
    );
    for body in &whole.0 {
        let _ = Voucher::open(body);
        match kind {
            RelayKind::Hop => {
                if let Ok(message) = HopMessage::decode(body) {
                    let mut framed = message.encode();
                    let again = take_frame(&mut framed).ok().flatten();
                    let again = again.as_deref().map(HopMessage::decode);
                    assert_eq!(again, Some(Ok(message)), "hop round trip");
                }
            }
            RelayKind::Stop => {
                if let Ok(message) = StopMessage::decode(body) {
                    let mut framed = message.encode();
                    let again = take_frame(&mut framed).ok().flatten();
                    let again = again.as_deref().map(StopMessage::decode);
                    assert_eq!(again, Some(Ok(message)), "stop round trip");
                }
            }
        }
    }
}
