//! multistream-select 1.0: agreeing on the protocol a new stream speaks.
//!
//! Every libp2p stream starts with it: both sides send the header `/multistream/1.0.0`, the
//! dialer proposes protocol names one at a time, and the listener echoes the one it accepts or
//! answers `na`. Each message is a UTF-8 string plus `\n`, prefixed by its length (newline
//! included) as an unsigned varint. [`Dialer`] and [`Listener`] are the two roles as sans-IO
//! machines: bytes read from the stream go in through `handle_data` in fragments of any size,
//! bytes to write come out of `take_output`, and whatever follows the final negotiation message
//! (application data the peer sent in the same packet) comes back in [`Negotiated::leftover`].
//!
//! Everything a peer sends is bounded: a message longer than [`MAX_MESSAGE_LEN`], a listener
//! refusing more than [`MAX_PROPOSALS`] proposals, malformed framing, or an early end of the
//! stream is a [`MultistreamError`], never a panic, and never more than one message is held.
//!
//! ```
//! use quicpeer::protocols::multistream::{Dialer, Listener, Progress};
//!
//! let mut dialer = Dialer::new(["/echo/2", "/echo/1"]).unwrap();
//! let mut listener = Listener::new();
//! let supported = |p: &str| p == "/echo/1";
//!
//! // Header and first proposal go out together; the listener refuses `/echo/2`.
//! let answer = listener.handle_data(&dialer.take_output(), supported);
//! assert_eq!(answer, Ok(Progress::Pending));
//! assert_eq!(dialer.handle_data(&listener.take_output()), Ok(Progress::Pending));
//! // The dialer proposes `/echo/1`, which the listener accepts.
//! let agreed = listener.handle_data(&dialer.take_output(), supported);
//! let Ok(Progress::Done(on_listener)) = agreed else { panic!() };
//! let Ok(Progress::Done(on_dialer)) = dialer.handle_data(&listener.take_output()) else {
//!     panic!()
//! };
//! assert_eq!(on_listener.protocol, "/echo/1");
//! assert_eq!(on_dialer.protocol, "/echo/1");
//! ```

use std::collections::VecDeque;

use tracing::trace;

/// The header both sides send first: the protocol ID of multistream-select itself.
pub const HEADER: &str = "/multistream/1.0.0";
/// The listener's answer to a protocol it does not support.
pub const NOT_AVAILABLE: &str = "na";
/// A dialer's request for the listener's protocol list; answered with `na` (see [`Listener`]).
pub const LIST: &str = "ls";
/// The longest message accepted, newline included. Protocol names are short; the bound keeps a
/// peer from making us buffer more.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Proposals a [`Listener`] refuses before it gives up on the stream.
pub const MAX_PROPOSALS: usize = 16;

/// Bytes of a length prefix of at most [`MAX_MESSAGE_LEN`].
const MAX_PREFIX_LEN: usize = 2;
/// The longest frame (prefix and message) accepted: the most a machine ever buffers.
pub const MAX_BUFFERED: usize = MAX_PREFIX_LEN + MAX_MESSAGE_LEN;

/// Why a negotiation failed: what the peer sent, or that it ended the stream early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultistreamError {
    /// The length prefix announced a message longer than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the limit of {MAX_MESSAGE_LEN}")]
    MessageTooLong {
        /// The announced length.
        len: usize,
    },
    /// The length prefix is not a valid unsigned varint (overlong or not minimal).
    #[error("invalid length prefix")]
    InvalidLength,
    /// A message does not end with `\n`.
    #[error("message does not end with a newline")]
    MissingNewline,
    /// A message is not UTF-8.
    #[error("message is not UTF-8")]
    NotUtf8,
    /// The peer's first message is not the multistream header.
    #[error("expected header {HEADER:?}, got {0:?}")]
    UnexpectedHeader(String),
    /// The listener answered a proposal with something other than the proposal or `na`.
    #[error("unexpected answer {got:?} to proposal {proposed:?}")]
    UnexpectedAnswer {
        /// What we proposed.
        proposed: String,
        /// What came back.
        got: String,
    },
    /// The listener refused every protocol we proposed.
    #[error("every proposed protocol was refused: {0:?}")]
    AllRefused(Vec<String>),
    /// The dialer kept proposing after [`MAX_PROPOSALS`] refusals.
    #[error("more than {MAX_PROPOSALS} proposals refused")]
    TooManyProposals,
    /// The stream ended inside a message (a truncated length prefix or message).
    #[error("stream ended inside a message")]
    Truncated,
    /// The stream ended between messages, before the negotiation finished.
    #[error("stream ended before the negotiation finished")]
    UnexpectedEof,
    /// Input after the negotiation finished or failed: the machine is done with the stream.
    #[error("negotiation already over")]
    Finished,
}

/// Why a protocol name cannot be proposed or supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolNameError {
    /// A dialer needs at least one protocol to propose.
    #[error("no protocol to propose")]
    NoProtocols,
    /// Protocol names start with `/` (every libp2p implementation checks this).
    #[error("protocol name {0:?} does not start with '/'")]
    NoLeadingSlash(String),
    /// A newline would end the message early.
    #[error("protocol name {0:?} contains a newline")]
    Newline(String),
    /// The name does not fit in one message.
    #[error("protocol name of {0} bytes is longer than a message may be")]
    TooLong(usize),
    /// The name is taken by a protocol quicpeer answers itself.
    #[error("protocol {0:?} is built in")]
    Reserved(String),
}

/// Checks that `name` can be sent as a proposal.
pub fn validate_protocol_name(name: &str) -> Result<(), ProtocolNameError> {
    if !name.starts_with('/') {
        return Err(ProtocolNameError::NoLeadingSlash(name.to_owned()));
    }
    if name.contains('\n') {
        return Err(ProtocolNameError::Newline(name.to_owned()));
    }
    if name.len() + 1 > MAX_MESSAGE_LEN {
        return Err(ProtocolNameError::TooLong(name.len()));
    }
    Ok(())
}

/// Where a negotiation stands after some input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More input is needed.
    Pending,
    /// Both sides agreed on a protocol.
    Done(Negotiated),
}

/// The outcome of a successful negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The protocol the stream speaks from now on.
    pub protocol: String,
    /// Bytes that followed the last negotiation message: the first application data.
    pub leftover: Vec<u8>,
}

/// Appends one framed message.
fn push_message(out: &mut Vec<u8>, message: &str) {
    let mut prefix = unsigned_varint::encode::usize_buffer();
    out.extend_from_slice(unsigned_varint::encode::usize(
        message.len() + 1,
        &mut prefix,
    ));
    out.extend_from_slice(message.as_bytes());
    out.push(b'\n');
}

/// Reassembles framed messages from fragments, holding at most one frame.
#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// The first complete message of `buf` and the bytes it took, if it is complete.
    fn parse(buf: &[u8]) -> Result<Option<(String, usize)>, MultistreamError> {
        let (len, rest) = match unsigned_varint::decode::usize(buf) {
            Ok(decoded) => decoded,
            Err(unsigned_varint::decode::Error::Insufficient) => return Ok(None),
            Err(_) => return Err(MultistreamError::InvalidLength),
        };
        if len > MAX_MESSAGE_LEN {
            return Err(MultistreamError::MessageTooLong { len });
        }
        let Some(body) = rest.get(..len) else {
            return Ok(None);
        };
        let Some((b'\n', text)) = body.split_last() else {
            return Err(MultistreamError::MissingNewline);
        };
        let text = std::str::from_utf8(text).map_err(|_| MultistreamError::NotUtf8)?;
        Ok(Some((text.to_owned(), buf.len() - rest.len() + len)))
    }

    /// Feeds `data` and hands each complete message to `on_message` until it returns a result;
    /// then returns that result with the bytes after its message.
    fn feed<T>(
        &mut self,
        mut data: &[u8],
        mut on_message: impl FnMut(String) -> Result<Option<T>, MultistreamError>,
    ) -> Result<Option<(T, Vec<u8>)>, MultistreamError> {
        loop {
            // Take no more than a frame can need, so a large input is never copied whole.
            let take = data.len().min(MAX_BUFFERED - self.buf.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            let mut used = 0;
            while let Some((message, len)) = Self::parse(&self.buf[used..])? {
                used += len;
                if let Some(result) = on_message(message)? {
                    let mut leftover = self.buf.split_off(used);
                    leftover.extend_from_slice(data);
                    self.buf.clear();
                    return Ok(Some((result, leftover)));
                }
            }
            self.buf.drain(..used);
            // Either all input is in, or the buffer is full and held no complete frame, which
            // `parse` rejects (a full buffer holds any frame it would accept).
            if data.is_empty() {
                return Ok(None);
            }
        }
    }

    /// The error for the end of the stream at this point.
    fn eof(&self) -> MultistreamError {
        if self.buf.is_empty() {
            MultistreamError::UnexpectedEof
        } else {
            MultistreamError::Truncated
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialerState {
    AwaitHeader,
    AwaitAnswer,
    Over,
}

/// The dialer's side: proposes protocols in order of preference until one is accepted.
///
/// The header and the first proposal go out in one write (no round trip is spent on the header
/// alone); each `na` brings the next proposal.
#[derive(Debug)]
pub struct Dialer {
    proposals: VecDeque<String>,
    refused: Vec<String>,
    state: DialerState,
    framer: Framer,
    output: Vec<u8>,
}

impl Dialer {
    /// A dialer proposing `protocols`, most preferred first.
    pub fn new<I>(protocols: I) -> Result<Self, ProtocolNameError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let proposals: VecDeque<String> = protocols.into_iter().map(Into::into).collect();
        for name in &proposals {
            validate_protocol_name(name)?;
        }
        let Some(first) = proposals.front() else {
            return Err(ProtocolNameError::NoProtocols);
        };
        let mut output = Vec::new();
        push_message(&mut output, HEADER);
        push_message(&mut output, first);
        Ok(Self {
            proposals,
            refused: Vec::new(),
            state: DialerState::AwaitHeader,
            framer: Framer::default(),
            output,
        })
    }

    /// Bytes to write to the stream, in order; drain after every call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// The protocol currently proposed, while the negotiation runs.
    pub fn proposed(&self) -> Option<&str> {
        match self.state {
            DialerState::Over => None,
            _ => self.proposals.front().map(String::as_str),
        }
    }

    /// Feeds bytes read from the stream.
    pub fn handle_data(&mut self, data: &[u8]) -> Result<Progress, MultistreamError> {
        if self.state == DialerState::Over {
            return Err(MultistreamError::Finished);
        }
        let mut framer = std::mem::take(&mut self.framer);
        let result = framer.feed(data, |message| self.on_message(message));
        self.framer = framer;
        self.settle(result)
    }

    /// The stream ended (the peer finished it) before the negotiation was over.
    pub fn handle_eof(&mut self) -> MultistreamError {
        if self.state == DialerState::Over {
            return MultistreamError::Finished;
        }
        self.state = DialerState::Over;
        self.framer.eof()
    }

    fn on_message(&mut self, message: String) -> Result<Option<String>, MultistreamError> {
        match self.state {
            DialerState::AwaitHeader if message == HEADER => {
                self.state = DialerState::AwaitAnswer;
                Ok(None)
            }
            DialerState::AwaitHeader => Err(MultistreamError::UnexpectedHeader(message)),
            DialerState::AwaitAnswer => {
                let Some(proposed) = self.proposals.pop_front() else {
                    return Err(MultistreamError::AllRefused(std::mem::take(
                        &mut self.refused,
                    )));
                };
                if message == proposed {
                    return Ok(Some(proposed));
                }
                if message != NOT_AVAILABLE {
                    return Err(MultistreamError::UnexpectedAnswer {
                        proposed,
                        got: message,
                    });
                }
                trace!(protocol = %proposed, "refused");
                self.refused.push(proposed);
                match self.proposals.front() {
                    Some(next) => {
                        push_message(&mut self.output, next);
                        Ok(None)
                    }
                    None => Err(MultistreamError::AllRefused(std::mem::take(
                        &mut self.refused,
                    ))),
                }
            }
            DialerState::Over => Err(MultistreamError::Finished),
        }
    }

    fn settle(
        &mut self,
        result: Result<Option<(String, Vec<u8>)>, MultistreamError>,
    ) -> Result<Progress, MultistreamError> {
        match result {
            Ok(None) => Ok(Progress::Pending),
            Ok(Some((protocol, leftover))) => {
                self.state = DialerState::Over;
                Ok(Progress::Done(Negotiated { protocol, leftover }))
            }
            Err(error) => {
                self.state = DialerState::Over;
                self.output.clear();
                Err(error)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenerState {
    AwaitHeader,
    AwaitProposal,
    Over,
}

/// The listener's side: answers the header with the header and each proposal with its echo
/// (accepted) or `na`.
///
/// A lazy dialer that sends header, proposal and data in one write is served as well: the data
/// comes back as [`Negotiated::leftover`]. A listing request (`ls`) is answered with `na`:
/// implementations disagree on the format of the list, and nothing depends on it.
#[derive(Debug)]
pub struct Listener {
    state: ListenerState,
    refusals: usize,
    framer: Framer,
    output: Vec<u8>,
}

impl Default for Listener {
    fn default() -> Self {
        Self::new()
    }
}

impl Listener {
    /// A listener waiting for the dialer's header.
    pub fn new() -> Self {
        Self {
            state: ListenerState::AwaitHeader,
            refusals: 0,
            framer: Framer::default(),
            output: Vec::new(),
        }
    }

    /// Bytes to write to the stream, in order; drain after every call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Feeds bytes read from the stream; `supported` says whether a proposal is accepted.
    pub fn handle_data(
        &mut self,
        data: &[u8],
        supported: impl Fn(&str) -> bool,
    ) -> Result<Progress, MultistreamError> {
        if self.state == ListenerState::Over {
            return Err(MultistreamError::Finished);
        }
        let mut framer = std::mem::take(&mut self.framer);
        let result = framer.feed(data, |message| self.on_message(message, &supported));
        self.framer = framer;
        match result {
            Ok(None) => Ok(Progress::Pending),
            Ok(Some((protocol, leftover))) => {
                self.state = ListenerState::Over;
                Ok(Progress::Done(Negotiated { protocol, leftover }))
            }
            Err(error) => {
                self.state = ListenerState::Over;
                self.output.clear();
                Err(error)
            }
        }
    }

    /// The stream ended (the dialer finished it) before a protocol was agreed.
    pub fn handle_eof(&mut self) -> MultistreamError {
        if self.state == ListenerState::Over {
            return MultistreamError::Finished;
        }
        self.state = ListenerState::Over;
        self.framer.eof()
    }

    fn on_message(
        &mut self,
        message: String,
        supported: &impl Fn(&str) -> bool,
    ) -> Result<Option<String>, MultistreamError> {
        match self.state {
            ListenerState::AwaitHeader if message == HEADER => {
                push_message(&mut self.output, HEADER);
                self.state = ListenerState::AwaitProposal;
                Ok(None)
            }
            ListenerState::AwaitHeader => Err(MultistreamError::UnexpectedHeader(message)),
            ListenerState::AwaitProposal
                if message != LIST && message != NOT_AVAILABLE && supported(&message) =>
            {
                push_message(&mut self.output, &message);
                Ok(Some(message))
            }
            ListenerState::AwaitProposal => {
                self.refusals += 1;
                if self.refusals > MAX_PROPOSALS {
                    return Err(MultistreamError::TooManyProposals);
                }
                trace!(protocol = %message, "refusing");
                push_message(&mut self.output, NOT_AVAILABLE);
                Ok(None)
            }
            ListenerState::Over => Err(MultistreamError::Finished),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER_FRAME: &[u8] = b"\x13/multistream/1.0.0\n";

    fn frame(message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        push_message(&mut out, message);
        out
    }

    fn only(name: &'static str) -> impl Fn(&str) -> bool {
        move |p| p == name
    }

    #[test]
    fn frames_are_byte_exact() {
        assert_eq!(frame(HEADER), HEADER_FRAME);
        assert_eq!(frame(NOT_AVAILABLE), b"\x03na\n");
        assert_eq!(frame("/ipfs/ping/1.0.0"), b"\x11/ipfs/ping/1.0.0\n");
        // 200 bytes with the newline: a two-byte varint, 0xc8 0x01.
        let long = format!("/{}", "x".repeat(198));
        assert_eq!(&frame(&long)[..3], b"\xc8\x01/");
    }

    #[test]
    fn dialer_sends_header_and_first_proposal_in_one_write() {
        let mut dialer = Dialer::new(["/a", "/b"]).expect("valid");
        let mut expected = HEADER_FRAME.to_vec();
        expected.extend_from_slice(b"\x03/a\n");
        assert_eq!(dialer.take_output(), expected);
        assert!(dialer.take_output().is_empty());
        assert_eq!(dialer.proposed(), Some("/a"));
    }

    #[test]
    fn dialer_falls_back_after_na_and_keeps_leftover() {
        let mut dialer = Dialer::new(["/a", "/b"]).expect("valid");
        dialer.take_output();
        let mut input = HEADER_FRAME.to_vec();
        input.extend(frame(NOT_AVAILABLE));
        assert_eq!(dialer.handle_data(&input), Ok(Progress::Pending));
        assert_eq!(dialer.take_output(), frame("/b"));
        let mut input = frame("/b");
        input.extend_from_slice(b"app data");
        assert_eq!(
            dialer.handle_data(&input),
            Ok(Progress::Done(Negotiated {
                protocol: "/b".into(),
                leftover: b"app data".to_vec()
            }))
        );
        assert_eq!(dialer.handle_data(b"x"), Err(MultistreamError::Finished));
    }

    #[test]
    fn dialer_fails_when_every_proposal_is_refused() {
        let mut dialer = Dialer::new(["/a", "/b"]).expect("valid");
        let mut input = HEADER_FRAME.to_vec();
        input.extend(frame(NOT_AVAILABLE));
        input.extend(frame(NOT_AVAILABLE));
        assert_eq!(
            dialer.handle_data(&input),
            Err(MultistreamError::AllRefused(vec!["/a".into(), "/b".into()]))
        );
    }

    #[test]
    fn dialer_rejects_a_wrong_header_and_a_wrong_answer() {
        let mut dialer = Dialer::new(["/a"]).expect("valid");
        assert_eq!(
            dialer.handle_data(&frame("/multistream/2.0.0")),
            Err(MultistreamError::UnexpectedHeader(
                "/multistream/2.0.0".into()
            ))
        );
        let mut dialer = Dialer::new(["/a"]).expect("valid");
        let mut input = HEADER_FRAME.to_vec();
        input.extend(frame("/b"));
        assert_eq!(
            dialer.handle_data(&input),
            Err(MultistreamError::UnexpectedAnswer {
                proposed: "/a".into(),
                got: "/b".into()
            })
        );
    }

    #[test]
    fn invalid_names_are_refused_locally() {
        let none: [&str; 0] = [];
        assert_eq!(
            Dialer::new(none).err(),
            Some(ProtocolNameError::NoProtocols)
        );
        assert_eq!(
            Dialer::new(["ping"]).err(),
            Some(ProtocolNameError::NoLeadingSlash("ping".into()))
        );
        assert_eq!(
            Dialer::new(["/a\nb"]).err(),
            Some(ProtocolNameError::Newline("/a\nb".into()))
        );
        let long = format!("/{}", "x".repeat(MAX_MESSAGE_LEN));
        assert_eq!(
            Dialer::new([long.as_str()]).err(),
            Some(ProtocolNameError::TooLong(long.len()))
        );
    }

    /// A whole exchange between a dialer and a listener, with every byte stream cut at `cut`.
    fn negotiate_split(cut: usize) {
        let mut dialer = Dialer::new(["/x", "/echo/1"]).expect("valid");
        let mut listener = Listener::new();
        let mut to_listener = dialer.take_output();
        let mut listener_done = None;
        let mut dialer_done = None;
        for _ in 0..4 {
            let mut to_dialer = Vec::new();
            for part in [
                &to_listener[..cut.min(to_listener.len())],
                &to_listener[cut.min(to_listener.len())..],
            ] {
                if listener_done.is_none() {
                    if let Progress::Done(n) = listener
                        .handle_data(part, only("/echo/1"))
                        .expect("listener")
                    {
                        listener_done = Some(n);
                    }
                }
                to_dialer.extend(listener.take_output());
            }
            to_listener = Vec::new();
            for part in [
                &to_dialer[..cut.min(to_dialer.len())],
                &to_dialer[cut.min(to_dialer.len())..],
            ] {
                if dialer_done.is_none() {
                    if let Progress::Done(n) = dialer.handle_data(part).expect("dialer") {
                        dialer_done = Some(n);
                    }
                }
                to_listener.extend(dialer.take_output());
            }
        }
        let expected = Negotiated {
            protocol: "/echo/1".into(),
            leftover: Vec::new(),
        };
        assert_eq!(listener_done, Some(expected.clone()), "cut at {cut}");
        assert_eq!(dialer_done, Some(expected), "cut at {cut}");
    }

    #[test]
    fn negotiation_survives_a_split_at_every_point() {
        for cut in 0..48 {
            negotiate_split(cut);
        }
    }

    #[test]
    fn listener_accepts_a_lazy_dialer_byte_by_byte_and_keeps_its_data() {
        let mut input = HEADER_FRAME.to_vec();
        input.extend(frame("/nope"));
        input.extend(frame("/echo/1"));
        input.extend_from_slice(b"hello");
        for cut in 0..=input.len() {
            let mut listener = Listener::new();
            let mut output = Vec::new();
            let mut done = None;
            // The first part in one piece, the rest byte by byte.
            let (head, tail) = input.split_at(cut);
            let mut pieces = vec![head];
            pieces.extend(tail.chunks(1));
            for (i, piece) in pieces.iter().enumerate() {
                match listener.handle_data(piece, only("/echo/1")) {
                    Ok(Progress::Pending) => {}
                    Ok(Progress::Done(mut n)) => {
                        for rest in &pieces[i + 1..] {
                            n.leftover.extend_from_slice(rest);
                        }
                        done = Some(n);
                        output.extend(listener.take_output());
                        break;
                    }
                    Err(e) => panic!("cut {cut}: {e}"),
                }
                output.extend(listener.take_output());
            }
            let n = done.expect("negotiated");
            assert_eq!(n.protocol, "/echo/1");
            assert_eq!(n.leftover, b"hello", "cut {cut}");
            let mut expected = HEADER_FRAME.to_vec();
            expected.extend(frame(NOT_AVAILABLE));
            expected.extend(frame("/echo/1"));
            assert_eq!(output, expected, "cut {cut}");
        }
    }

    #[test]
    fn listener_answers_ls_and_na_with_na() {
        let mut listener = Listener::new();
        let mut input = HEADER_FRAME.to_vec();
        input.extend(frame(LIST));
        input.extend(frame(NOT_AVAILABLE));
        assert_eq!(
            listener.handle_data(&input, |_| true),
            Ok(Progress::Pending)
        );
        let mut expected = HEADER_FRAME.to_vec();
        expected.extend(frame(NOT_AVAILABLE));
        expected.extend(frame(NOT_AVAILABLE));
        assert_eq!(listener.take_output(), expected);
    }

    #[test]
    fn listener_gives_up_after_too_many_proposals() {
        let mut listener = Listener::new();
        let mut input = HEADER_FRAME.to_vec();
        for i in 0..=MAX_PROPOSALS {
            input.extend(frame(&format!("/p/{i}")));
        }
        assert_eq!(
            listener.handle_data(&input, |_| false),
            Err(MultistreamError::TooManyProposals)
        );
        assert!(listener.take_output().is_empty());
    }

    #[test]
    fn listener_rejects_anything_but_the_header_first() {
        let mut listener = Listener::new();
        assert_eq!(
            listener.handle_data(&frame("/echo/1"), |_| true),
            Err(MultistreamError::UnexpectedHeader("/echo/1".into()))
        );
        assert_eq!(
            listener.handle_data(HEADER_FRAME, |_| true),
            Err(MultistreamError::Finished)
        );
    }

    #[test]
    fn malformed_framing_is_a_typed_error() {
        let cases: [(&[u8], MultistreamError); 5] = [
            (b"\x81\x08", MultistreamError::MessageTooLong { len: 1025 }),
            (
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                MultistreamError::InvalidLength,
            ),
            // Zero written in two bytes: not minimal.
            (b"\x80\x00", MultistreamError::InvalidLength),
            (b"\x03na!", MultistreamError::MissingNewline),
            (b"\x00", MultistreamError::MissingNewline),
        ];
        for (input, error) in cases {
            assert_eq!(
                Listener::new().handle_data(input, |_| true),
                Err(error.clone()),
                "{input:?}"
            );
            assert_eq!(
                Dialer::new(["/a"]).expect("valid").handle_data(input),
                Err(error)
            );
        }
        assert_eq!(
            Listener::new().handle_data(b"\x03\xff\xfe\n", |_| true),
            Err(MultistreamError::NotUtf8)
        );
    }

    #[test]
    fn the_end_of_the_stream_is_truncation_or_eof() {
        let mut listener = Listener::new();
        assert_eq!(
            listener.handle_data(b"\x93", |_| true),
            Ok(Progress::Pending)
        );
        assert_eq!(listener.handle_eof(), MultistreamError::Truncated);
        let mut listener = Listener::new();
        assert_eq!(
            listener.handle_data(b"\x13/multi", |_| true),
            Ok(Progress::Pending)
        );
        assert_eq!(listener.handle_eof(), MultistreamError::Truncated);
        let mut listener = Listener::new();
        assert_eq!(
            listener.handle_data(HEADER_FRAME, |_| true),
            Ok(Progress::Pending)
        );
        assert_eq!(listener.handle_eof(), MultistreamError::UnexpectedEof);
        assert_eq!(listener.handle_eof(), MultistreamError::Finished);
        let mut dialer = Dialer::new(["/a"]).expect("valid");
        assert_eq!(dialer.handle_eof(), MultistreamError::UnexpectedEof);
    }

    #[test]
    fn a_large_input_is_not_buffered_whole() {
        let mut listener = Listener::new();
        let mut input = HEADER_FRAME.to_vec();
        input.extend(frame("/echo/1"));
        input.extend(std::iter::repeat_n(7u8, 100_000));
        let Ok(Progress::Done(n)) = listener.handle_data(&input, |_| true) else {
            panic!("not negotiated");
        };
        assert_eq!(n.leftover.len(), 100_000);
        assert!(listener.framer.buf.capacity() <= MAX_BUFFERED);
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_nor_overfills(
            chunks in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..300),
                0..20,
            ),
            header_first in any::<bool>(),
        ) {
            let mut listener = Listener::new();
            let mut dialer = Dialer::new(["/a", "/b"]).expect("valid");
            let mut prefix = if header_first { HEADER_FRAME.to_vec() } else { Vec::new() };
            for chunk in &chunks {
                prefix.extend_from_slice(chunk);
                let input = std::mem::take(&mut prefix);
                let _ = listener.handle_data(&input, |p| p == "/a");
                let _ = dialer.handle_data(&input);
                prop_assert!(listener.framer.buf.len() <= MAX_BUFFERED);
                prop_assert!(dialer.framer.buf.len() <= MAX_BUFFERED);
                // Output answers at most one message per refusal, header included.
                prop_assert!(listener.take_output().len() <= (MAX_PROPOSALS + 1) * MAX_BUFFERED);
                prop_assert!(dialer.take_output().len() <= 2 * MAX_BUFFERED);
            }
            let _ = listener.handle_eof();
            let _ = dialer.handle_eof();
        }
    }
}
