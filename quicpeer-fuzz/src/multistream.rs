//! The `multistream` target: what a peer can send on a fresh libp2p stream, into the
//! multistream-select [`Listener`] and [`Dialer`] and the ping [`Responder`] and [`Pinger`].
//!
//! Input: a role byte, a fragmentation byte, then the peer's bytes. Each machine is fed the
//! bytes twice, whole and in fragments, and both runs must agree: the same answer bytes, the
//! same outcome, the same leftover (a byte-level machine must not depend on how reads split the
//! stream). Other checks: a negotiated protocol is one we support (listener) or proposed
//! (dialer); a finished machine takes no more input; the answers are at most about twice the
//! input (no amplification); the responder echoes exactly the complete payloads; the pinger
//! reports a round trip only for an exact echo.

use std::time::{Duration, Instant};

use quicpeer::protocols::multistream::{
    Dialer, Listener, MultistreamError, Progress, MAX_BUFFERED,
};
use quicpeer::protocols::ping::{Pinger, Responder, PAYLOAD_LEN};

/// What the dialer proposes, most preferred first.
pub const PROPOSALS: [&str; 3] = ["/noise", "/ipfs/ping/1.0.0", "/echo/1.0.0"];
/// What the listener accepts.
pub const SUPPORTED: [&str; 2] = ["/ipfs/ping/1.0.0", "/echo/1.0.0"];
/// The pinger's payload.
pub const PING_PAYLOAD: [u8; PAYLOAD_LEN] = [0x70; PAYLOAD_LEN];

/// The machine an input is fed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The multistream-select listener (the peer dialed us).
    Listener,
    /// The multistream-select dialer (we opened the stream).
    Dialer,
    /// The ping responder.
    Responder,
    /// The ping initiator, with [`PING_PAYLOAD`] in flight.
    Pinger,
}

impl Role {
    /// The role byte's meaning.
    pub fn from_byte(byte: u8) -> Self {
        match byte % 4 {
            0 => Self::Listener,
            1 => Self::Dialer,
            2 => Self::Responder,
            _ => Self::Pinger,
        }
    }

    /// The byte that selects this role.
    pub fn byte(self) -> u8 {
        match self {
            Self::Listener => 0,
            Self::Dialer => 1,
            Self::Responder => 2,
            Self::Pinger => 3,
        }
    }
}

/// The `multistream` fuzz target. Panics only when an invariant fails.
pub fn multistream(data: &[u8]) {
    let [role, split, peer @ ..] = data else {
        return;
    };
    let fragments = fragments(peer, *split);
    match Role::from_byte(*role) {
        Role::Listener => negotiation(peer, &fragments, ListenerRun::default),
        Role::Dialer => negotiation(peer, &fragments, DialerRun::new),
        Role::Responder => responder(peer, &fragments),
        Role::Pinger => pinger(&fragments),
    }
}

/// Cuts `data` into fragments whose lengths cycle through a pattern chosen by `split` (0: one
/// fragment).
fn fragments(data: &[u8], split: u8) -> Vec<&[u8]> {
    if split == 0 {
        return vec![data];
    }
    let max = usize::from(split % 64) + 1;
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0usize;
    while !rest.is_empty() {
        let len = (1 + (i * 7 + usize::from(split)) % max).min(rest.len());
        let (head, tail) = rest.split_at(len);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

/// One side of a negotiation, behind one interface for both roles.
trait Run {
    fn feed(&mut self, data: &[u8]) -> Result<Progress, MultistreamError>;
    fn eof(&mut self) -> MultistreamError;
    fn output(&mut self) -> Vec<u8>;
    /// Whether a negotiated protocol is acceptable for this side.
    fn acceptable(&self, protocol: &str) -> bool;
}

#[derive(Default)]
struct ListenerRun(Listener);

impl Run for ListenerRun {
    fn feed(&mut self, data: &[u8]) -> Result<Progress, MultistreamError> {
        self.0.handle_data(data, |p| SUPPORTED.contains(&p))
    }
    fn eof(&mut self) -> MultistreamError {
        self.0.handle_eof()
    }
    fn output(&mut self) -> Vec<u8> {
        self.0.take_output()
    }
    fn acceptable(&self, protocol: &str) -> bool {
        SUPPORTED.contains(&protocol)
    }
}

struct DialerRun(Dialer);

impl DialerRun {
    fn new() -> Self {
        match Dialer::new(PROPOSALS) {
            Ok(dialer) => Self(dialer),
            Err(error) => panic!("harness: the fixed proposals are invalid: {error}"),
        }
    }
}

impl Run for DialerRun {
    fn feed(&mut self, data: &[u8]) -> Result<Progress, MultistreamError> {
        self.0.handle_data(data)
    }
    fn eof(&mut self) -> MultistreamError {
        self.0.handle_eof()
    }
    fn output(&mut self) -> Vec<u8> {
        self.0.take_output()
    }
    fn acceptable(&self, protocol: &str) -> bool {
        PROPOSALS.contains(&protocol)
    }
}

/// What feeding a run produced: its output, and its outcome with everything after it.
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    output: Vec<u8>,
    outcome: Option<Result<(String, Vec<u8>), MultistreamError>>,
}

fn transcript<R: Run>(mut run: R, fragments: &[&[u8]]) -> (Transcript, R) {
    let mut output = run.output();
    let mut outcome = None;
    for (i, fragment) in fragments.iter().enumerate() {
        let result = run.feed(fragment);
        output.extend(run.output());
        match result {
            Ok(Progress::Pending) => {}
            Ok(Progress::Done(negotiated)) => {
                let mut leftover = negotiated.leftover;
                for later in &fragments[i + 1..] {
                    leftover.extend_from_slice(later);
                }
                outcome = Some(Ok((negotiated.protocol, leftover)));
                break;
            }
            Err(error) => {
                outcome = Some(Err(error));
                break;
            }
        }
    }
    (Transcript { output, outcome }, run)
}

fn negotiation<R: Run>(peer: &[u8], fragments: &[&[u8]], new: fn() -> R) {
    let (whole, mut whole_run) = transcript(new(), &[peer]);
    let (split, _) = transcript(new(), fragments);
    assert_eq!(
        whole.outcome, split.outcome,
        "invariant: the outcome depends on how the stream's bytes were split"
    );
    // A machine that fails drops its pending answers, and a split run has written some of
    // them already: that is fine, the stream is reset anyway. Otherwise, the same bytes.
    if !matches!(whole.outcome, Some(Err(_))) {
        assert_eq!(
            whole.output, split.output,
            "invariant: the answers depend on how the stream's bytes were split"
        );
    }
    assert!(
        whole.output.len() <= 2 * peer.len() + 2 * MAX_BUFFERED,
        "invariant: {} bytes of answers to {} bytes",
        whole.output.len(),
        peer.len()
    );
    match &whole.outcome {
        Some(Ok((protocol, _))) => assert!(
            whole_run.acceptable(protocol),
            "invariant: negotiated {protocol:?}, which this side never offered"
        ),
        Some(Err(MultistreamError::Finished)) => {
            panic!("invariant: a fresh machine reported Finished")
        }
        _ => {}
    }
    if whole.outcome.is_some() {
        assert_eq!(
            whole_run.feed(b"\x13/multistream/1.0.0\n"),
            Err(MultistreamError::Finished),
            "invariant: a finished negotiation took more input"
        );
        assert!(
            whole_run.output().is_empty(),
            "invariant: a finished negotiation wrote more"
        );
        assert_eq!(whole_run.eof(), MultistreamError::Finished);
    } else {
        assert!(
            matches!(
                whole_run.eof(),
                MultistreamError::Truncated | MultistreamError::UnexpectedEof
            ),
            "invariant: the end of a stream mid-negotiation is not an early end"
        );
    }
}

fn responder(peer: &[u8], fragments: &[&[u8]]) {
    let complete = peer.len() / PAYLOAD_LEN * PAYLOAD_LEN;
    for pieces in [&[peer][..], fragments] {
        let mut responder = Responder::new();
        let mut out = Vec::new();
        for piece in pieces {
            responder.handle_data(piece, &mut out);
            assert!(
                responder.buffered() < PAYLOAD_LEN,
                "invariant: the responder holds a whole payload"
            );
        }
        assert_eq!(
            out,
            &peer[..complete],
            "invariant: the responder's echo is not the complete payloads"
        );
        assert_eq!(responder.buffered(), peer.len() - complete);
    }
}

fn pinger(fragments: &[&[u8]]) {
    let sent = Instant::now();
    let mut pinger = Pinger::new();
    if pinger.start(sent, PING_PAYLOAD).is_err() {
        panic!("invariant: a fresh pinger refused to start");
    }
    let mut received = Vec::new();
    for fragment in fragments {
        let in_flight = pinger.sent_at().is_some();
        let result = pinger.handle_data(fragment, sent + Duration::from_millis(5));
        if in_flight {
            received.extend_from_slice(fragment);
        }
        match result {
            Ok(Some(rtt)) => {
                assert_eq!(
                    received, PING_PAYLOAD,
                    "invariant: a round trip reported for an inexact echo"
                );
                assert_eq!(rtt, Duration::from_millis(5));
                received.clear();
            }
            Ok(None) => assert!(
                fragment.is_empty() || PING_PAYLOAD.starts_with(&received),
                "invariant: a wrong echo was accepted so far"
            ),
            Err(_) => {
                assert!(
                    pinger.sent_at().is_none(),
                    "invariant: a ping still in flight after an error"
                );
                received.clear();
            }
        }
    }
}
