//! The host's state of one stream: what it does with the stream, and what input leads to.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::{OutboundId, StreamFailure};
use crate::protocols::closed::ClosedStreams;
use crate::protocols::multistream::{Dialer, Listener, MultistreamError, Negotiated, Progress};
use crate::protocols::ping::{Payload, Pinger, Responder};
use crate::{ConnId, PeerId, StreamError, StreamId};

/// What the host does with one stream it holds.
#[derive(Debug)]
pub(super) enum Role {
    /// Inbound, negotiating as listener.
    Accepting(Listener),
    /// Inbound, agreed on an application protocol; handed over once the echo is written.
    Accepted(Negotiated),
    /// Outbound for the application, negotiating as dialer.
    Opening { dialer: Dialer, id: OutboundId },
    /// Our ping stream to the peer, negotiating; `payload` goes out once it is agreed.
    PingOpening { dialer: Dialer, payload: Payload },
    /// Our ping stream to the peer, negotiated: one ping at a time.
    Pinging(Pinger),
    /// The peer's ping stream; `finishing` once the peer finished it.
    PingIn {
        responder: Responder,
        finishing: bool,
    },
}

/// What the input to a stream led to.
pub(super) enum Outcome {
    /// Nothing for the host to do; read on.
    Continue,
    /// An inbound stream agreed on a protocol.
    Accepted(Negotiated),
    /// An outbound stream of the application agreed on a protocol.
    Opened(Negotiated),
    /// A ping's echo came back.
    Pong(Duration),
    /// The stream failed: the host resets it.
    Fail(StreamFailure),
}

/// What a read of the stream gave.
pub(super) enum Input<'a> {
    Data(&'a [u8]),
    /// The peer finished its side.
    Eof,
}

fn negotiation_failure(error: MultistreamError) -> StreamFailure {
    match error {
        MultistreamError::AllRefused(proposed) => StreamFailure::Unsupported { proposed },
        other => StreamFailure::Negotiation(other),
    }
}

impl Role {
    pub(super) fn on_input(
        &mut self,
        input: Input<'_>,
        out: &mut Vec<u8>,
        now: Instant,
        supported: impl Fn(&str) -> bool,
    ) -> Outcome {
        match self {
            Role::Accepting(listener) => {
                let result = match input {
                    Input::Data(data) => listener.handle_data(data, supported),
                    Input::Eof => Err(listener.handle_eof()),
                };
                out.extend(listener.take_output());
                match result {
                    Ok(Progress::Pending) => Outcome::Continue,
                    Ok(Progress::Done(negotiated)) => Outcome::Accepted(negotiated),
                    Err(error) => Outcome::Fail(negotiation_failure(error)),
                }
            }
            Role::Opening { dialer, .. } => {
                let result = match input {
                    Input::Data(data) => dialer.handle_data(data),
                    Input::Eof => Err(dialer.handle_eof()),
                };
                out.extend(dialer.take_output());
                match result {
                    Ok(Progress::Pending) => Outcome::Continue,
                    Ok(Progress::Done(negotiated)) => Outcome::Opened(negotiated),
                    Err(error) => Outcome::Fail(negotiation_failure(error)),
                }
            }
            Role::PingOpening { dialer, payload } => {
                let result = match input {
                    Input::Data(data) => dialer.handle_data(data),
                    Input::Eof => Err(dialer.handle_eof()),
                };
                out.extend(dialer.take_output());
                let leftover = match result {
                    Ok(Progress::Pending) => return Outcome::Continue,
                    Ok(Progress::Done(negotiated)) => negotiated.leftover,
                    Err(error) => return Outcome::Fail(negotiation_failure(error)),
                };
                let mut pinger = Pinger::new();
                match pinger.start(now, *payload) {
                    Ok(bytes) => out.extend_from_slice(&bytes),
                    Err(error) => return Outcome::Fail(StreamFailure::Ping(error)),
                }
                *self = Role::Pinging(pinger);
                // Anything the peer sent after its echo of the protocol is a (bad) echo.
                self.on_input(Input::Data(&leftover), out, now, supported)
            }
            Role::Pinging(pinger) => match input {
                Input::Data(data) => match pinger.handle_data(data, now) {
                    Ok(None) => Outcome::Continue,
                    Ok(Some(rtt)) => Outcome::Pong(rtt),
                    Err(error) => Outcome::Fail(StreamFailure::Ping(error)),
                },
                Input::Eof => Outcome::Fail(StreamFailure::Stream(StreamError::Closed)),
            },
            Role::PingIn {
                responder,
                finishing,
            } => {
                match input {
                    Input::Data(data) => responder.handle_data(data, out),
                    Input::Eof => *finishing = true,
                }
                Outcome::Continue
            }
            // Not read: the rest of the stream is the application's.
            Role::Accepted(_) => Outcome::Continue,
        }
    }
}

/// A stream the host holds.
#[derive(Debug)]
pub(super) struct HostStream {
    pub(super) role: Role,
    /// Bytes waiting for flow-control credit; the host reads nothing more until they are out.
    pub(super) out: Vec<u8>,
    /// When the negotiation or the ping in flight fails with `TimedOut`.
    pub(super) deadline: Option<Instant>,
    /// A read found the peer's end of the stream, still to be acted on.
    pub(super) eof: bool,
}

/// The host's state of one connection.
#[derive(Debug)]
pub(super) struct ConnState {
    pub(super) peer: PeerId,
    pub(super) streams: BTreeMap<StreamId, HostStream>,
    /// Our ping stream, reused for every ping.
    pub(super) ping: Option<StreamId>,
    /// The peer's ping streams, oldest first.
    pub(super) inbound_pings: VecDeque<StreamId>,
    /// Streams the host closed whose late events may still come.
    pub(super) closed: ClosedStreams,
    /// Opens waiting for the peer to allow more streams, oldest first.
    pub(super) queued: VecDeque<Queued>,
}

/// An outbound stream the host could not open yet: the peer's stream limit was reached. It is
/// opened, in order, when the peer allows more streams (`Event::StreamsAvailable`).
#[derive(Debug)]
pub(super) struct Queued {
    /// Names it in the deadline index.
    pub(super) key: u64,
    /// `Opening` or `PingOpening`.
    pub(super) role: Role,
    pub(super) deadline: Instant,
}

/// What the host's deadline index times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Timed {
    /// A stream's negotiation or ping.
    Stream(StreamId),
    /// An open still waiting for the peer's stream credit.
    Queued(ConnId, u64),
}

impl ConnState {
    pub(super) fn new(peer: PeerId) -> Self {
        Self {
            peer,
            streams: BTreeMap::new(),
            ping: None,
            inbound_pings: VecDeque::new(),
            closed: ClosedStreams::new(super::CLOSED_MEMORY),
            queued: VecDeque::new(),
        }
    }
}
