//! `/ipfs/ping/1.0.0`: the liveness and round-trip check every libp2p node answers.
//!
//! The dialer writes 32 random bytes, the listener echoes them, and the dialer measures the time
//! from its write to the echo. One stream carries many pings in turn (libp2p nodes keep one ping
//! stream per peer open). [`Pinger`] is the dialer's side and [`Responder`] the listener's, both
//! sans-IO: the random payload and the instants come from the caller, so a run is reproducible
//! and the library never reads the OS clock or its entropy. Both hold at most one payload.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use quicpeer::protocols::ping::{Pinger, Responder};
//!
//! let start = Instant::now();
//! let mut pinger = Pinger::new();
//! let mut responder = Responder::new();
//! let request = pinger.start(start, [7; 32]).unwrap();
//! let mut echo = Vec::new();
//! responder.handle_data(&request, &mut echo);
//! let rtt = pinger.handle_data(&echo, start + Duration::from_millis(10)).unwrap();
//! assert_eq!(rtt, Some(Duration::from_millis(10)));
//! ```

use std::time::{Duration, Instant};

/// The protocol ID.
pub const PROTOCOL: &str = "/ipfs/ping/1.0.0";
/// Length of a ping payload.
pub const PAYLOAD_LEN: usize = 32;

/// A ping payload.
pub type Payload = [u8; PAYLOAD_LEN];

/// What can go wrong on the dialer's side of a ping stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// A ping is already waiting for its echo; the protocol runs one at a time per stream.
    #[error("a ping is already in flight")]
    InFlight,
    /// The echo differs from the payload sent.
    #[error("echo does not match the payload")]
    Mismatch,
    /// The peer sent bytes when no ping was in flight, or more than the echo.
    #[error("unexpected data on the ping stream")]
    UnexpectedData,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    payload: Payload,
    sent_at: Instant,
    received: usize,
}

/// The dialer's side: sends a payload, waits for its echo, reports the round-trip time.
#[derive(Debug, Default)]
pub struct Pinger {
    in_flight: Option<InFlight>,
}

impl Pinger {
    /// A pinger with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a ping written at `now`; returns the bytes to write.
    pub fn start(&mut self, now: Instant, payload: Payload) -> Result<Payload, PingError> {
        if self.in_flight.is_some() {
            return Err(PingError::InFlight);
        }
        self.in_flight = Some(InFlight {
            payload,
            sent_at: now,
            received: 0,
        });
        Ok(payload)
    }

    /// When the ping in flight was sent, if one is.
    pub fn sent_at(&self) -> Option<Instant> {
        self.in_flight.map(|p| p.sent_at)
    }

    /// Feeds bytes read from the stream at `now`. Returns the round-trip time once the whole
    /// echo is in; after an error the ping is over.
    pub fn handle_data(
        &mut self,
        data: &[u8],
        now: Instant,
    ) -> Result<Option<Duration>, PingError> {
        if data.is_empty() {
            return Ok(None);
        }
        let Some(ping) = self.in_flight.as_mut() else {
            return Err(PingError::UnexpectedData);
        };
        let expected = &ping.payload[ping.received..];
        if data.len() > expected.len() {
            self.in_flight = None;
            return Err(PingError::UnexpectedData);
        }
        if !expected.starts_with(data) {
            self.in_flight = None;
            return Err(PingError::Mismatch);
        }
        ping.received += data.len();
        if ping.received < PAYLOAD_LEN {
            return Ok(None);
        }
        let rtt = now.saturating_duration_since(ping.sent_at);
        self.in_flight = None;
        Ok(Some(rtt))
    }
}

/// The listener's side: echoes each complete 32-byte payload, holding at most a partial one.
#[derive(Debug, Default)]
pub struct Responder {
    partial: Payload,
    len: usize,
}

impl Responder {
    /// A responder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes read from the stream and appends the echo of each completed payload to
    /// `out`. A trailing partial payload waits for the rest.
    pub fn handle_data(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            let take = (PAYLOAD_LEN - self.len).min(data.len());
            self.partial[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if self.len == PAYLOAD_LEN {
                out.extend_from_slice(&self.partial);
                self.len = 0;
            }
        }
    }

    /// Bytes of a payload received but not yet echoed.
    pub fn buffered(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payload(seed: u8) -> Payload {
        std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
    }

    #[test]
    fn echo_split_at_every_point_gives_the_rtt_from_the_given_instants() {
        let start = Instant::now();
        for cut in 0..=PAYLOAD_LEN {
            let mut pinger = Pinger::new();
            let mut responder = Responder::new();
            let request = pinger.start(start, payload(1)).expect("idle");
            let mut echo = Vec::new();
            responder.handle_data(&request[..cut], &mut echo);
            assert_eq!(responder.buffered(), cut % PAYLOAD_LEN);
            responder.handle_data(&request[cut..], &mut echo);
            assert_eq!(echo, request);
            let at = start + Duration::from_millis(3);
            let whole = (cut == PAYLOAD_LEN).then_some(Duration::from_millis(3));
            assert_eq!(pinger.handle_data(&echo[..cut], at), Ok(whole));
            if cut < PAYLOAD_LEN {
                let at = start + Duration::from_millis(4);
                assert_eq!(
                    pinger.handle_data(&echo[cut..], at),
                    Ok(Some(Duration::from_millis(4)))
                );
            }
            assert_eq!(pinger.sent_at(), None);
        }
    }

    #[test]
    fn many_pings_run_in_turn_on_one_stream() {
        let start = Instant::now();
        let mut pinger = Pinger::new();
        let mut responder = Responder::new();
        for i in 0..100u8 {
            let sent = start + Duration::from_secs(u64::from(i));
            let request = pinger.start(sent, payload(i)).expect("idle");
            assert_eq!(pinger.start(sent, payload(i)), Err(PingError::InFlight));
            assert_eq!(pinger.sent_at(), Some(sent));
            let mut echo = Vec::new();
            responder.handle_data(&request, &mut echo);
            let rtt = pinger
                .handle_data(&echo, sent + Duration::from_micros(u64::from(i)))
                .expect("echo");
            assert_eq!(rtt, Some(Duration::from_micros(u64::from(i))));
        }
    }

    #[test]
    fn responder_echoes_several_payloads_from_one_read() {
        let mut responder = Responder::new();
        let mut input = payload(1).to_vec();
        input.extend_from_slice(&payload(2));
        input.extend_from_slice(&payload(3)[..5]);
        let mut out = Vec::new();
        responder.handle_data(&input, &mut out);
        assert_eq!(out, input[..2 * PAYLOAD_LEN]);
        assert_eq!(responder.buffered(), 5);
    }

    #[test]
    fn a_wrong_echo_or_stray_bytes_are_errors() {
        let start = Instant::now();
        let mut pinger = Pinger::new();
        assert_eq!(
            pinger.handle_data(b"x", start),
            Err(PingError::UnexpectedData)
        );
        pinger.start(start, payload(1)).expect("idle");
        let mut wrong = payload(1);
        wrong[31] ^= 1;
        assert_eq!(pinger.handle_data(&wrong[..31], start), Ok(None));
        assert_eq!(
            pinger.handle_data(&wrong[31..], start),
            Err(PingError::Mismatch)
        );
        pinger
            .start(start, payload(2))
            .expect("over after an error");
        let mut long = payload(2).to_vec();
        long.push(0);
        assert_eq!(
            pinger.handle_data(&long, start),
            Err(PingError::UnexpectedData)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_nor_overfills(
            chunks in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..100),
                0..20,
            ),
        ) {
            let start = Instant::now();
            let mut pinger = Pinger::new();
            let mut responder = Responder::new();
            let mut echoed = 0;
            let mut total = 0;
            for chunk in &chunks {
                let _ = pinger.start(start, payload(0));
                let _ = pinger.handle_data(chunk, start);
                let mut out = Vec::new();
                responder.handle_data(chunk, &mut out);
                echoed += out.len();
                total += chunk.len();
                prop_assert!(responder.buffered() < PAYLOAD_LEN);
            }
            prop_assert_eq!(echoed + responder.buffered(), total);
        }
    }
}
