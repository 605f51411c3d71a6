//! The `channel` target: what a peer can send on a `/quicpeer/channel/1.0.0` stream, into the
//! channel codec's [`Decoder`].
//!
//! Input: a fragmentation byte, then the peer's bytes. The decoder is fed the bytes whole and
//! in fragments, and both runs must agree: the same frames, then the same error or none (a
//! byte-level decoder must not depend on how reads split the stream). Other checks: the
//! decoder never holds more than one bounded frame; every frame it yields encodes back to
//! bytes that decode to the same frame; no body is above `MAX_BODY`.

use quicpeer::protocols::channel::codec::{CodecError, Decoder, Frame, MAX_BODY, MAX_FRAME};

/// Bytes a decoder may hold between frames: one frame and its length prefix.
const MAX_HELD: usize = MAX_FRAME + 10;

/// Feeds `bytes` in pieces of `split` bytes (0: whole); returns the frames and the error that
/// ended the run, if any.
fn run(bytes: &[u8], split: usize) -> (Vec<Frame>, Option<CodecError>) {
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    let pieces: Vec<&[u8]> = if split == 0 {
        vec![bytes]
    } else {
        bytes.chunks(split).collect()
    };
    for piece in pieces {
        // A reader pushes at most what one read returned before draining.
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
        assert!(
            decoder.buffered() <= MAX_HELD,
            "invariant: decoder holds {} bytes",
            decoder.buffered()
        );
    }
    (frames, None)
}

/// The target's body.
pub fn channel(data: &[u8]) {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let whole = run(bytes, 0);
    let pieces = run(bytes, usize::from(split % 17));
    assert_eq!(whole, pieces, "invariant: fragmentation changes the result");
    for frame in &whole.0 {
        if let Frame::Msg { body, .. } = frame {
            assert!(body.len() <= MAX_BODY, "invariant: body above MAX_BODY");
        }
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        let mut decoder = Decoder::new();
        decoder.push(&wire);
        assert_eq!(
            decoder.next_frame().ok().flatten().as_ref(),
            Some(frame),
            "invariant: a decoded frame re-encodes to itself"
        );
        assert_eq!(
            decoder.buffered(),
            0,
            "invariant: re-encoding has no excess"
        );
    }
}
