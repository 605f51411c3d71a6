//! The JSON-lines vocabulary every comparison peer speaks, and a log to wait on it.
//!
//! The rust-libp2p peer (in process or as `libp2p-peer`), the js-libp2p peer
//! (`interop/js/peer.mjs`) and the py-libp2p peer (`interop/py/peer.py`) print the same events,
//! one JSON object per line, so one parser and one set of assertions serve them all.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Something a comparison peer reports. PeerIds and multiaddrs are kept as their text forms:
/// rust-libp2p, js-libp2p, py-libp2p and quicpeer each have their own types for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PeerEvent {
    /// The peer is up; `addrs` are its listen addresses with `/p2p/<id>` (none when dialing).
    Listening {
        /// The peer's own PeerId.
        peer_id: String,
        /// Where it listens.
        addrs: Vec<String>,
    },
    /// A connection completed its handshake.
    Connected {
        /// The remote PeerId, as verified by the peer's TLS layer.
        peer: String,
        /// The remote address.
        addr: String,
        /// `inbound` or `outbound`.
        direction: String,
    },
    /// A connection ended.
    Closed {
        /// The remote PeerId.
        peer: String,
        /// The remote address.
        addr: String,
        /// `inbound` or `outbound`.
        direction: String,
        /// Why, as the libp2p implementation reports it (rust-libp2p's
        /// `ConnectionClosed { cause }`); js-libp2p and py-libp2p give no reason here, see
        /// `QuicClosed`.
        #[serde(default)]
        cause: Option<String>,
    },
    /// js-libp2p and py-libp2p: why the QUIC transport saw a connection end.
    QuicClosed {
        /// The transport's connection id.
        conn: String,
        /// js: quinn's `ConnectionError` text, or `closed`. py: aioquic's `ConnectionTerminated`
        /// reason and error code, e.g. `Idle timeout (error code 0x1)`.
        reason: String,
    },
    /// rust-libp2p on quicpeer-libp2p: its reconnect behaviour dialed the peer again.
    Redialing {
        /// The peer.
        peer: String,
        /// `PeerRestarted` (its connection ended with a stateless reset) or `Unresponsive` (its
        /// connection went silent: a fresh one races it).
        reason: String,
    },
    /// An outbound ping completed.
    Ping {
        /// The pinged peer.
        peer: String,
        /// Round-trip time in milliseconds.
        rtt_ms: f64,
    },
    /// An outbound ping failed.
    PingFailed {
        /// The peer, where known.
        #[serde(default)]
        peer: Option<String>,
        /// The error text.
        error: String,
    },
    /// The listen address could not be bound.
    ListenFailed {
        /// The error text.
        error: String,
    },
    /// A dial failed.
    DialFailed {
        /// The peer, where known.
        #[serde(default)]
        peer: Option<String>,
        /// The error text.
        error: String,
    },
}

impl PeerEvent {
    /// Whether this event reports a connection killed by a QUIC stateless reset.
    ///
    /// Both libp2p implementations run quinn, which reports a reset as
    /// `ConnectionError::Reset`, displayed `reset by peer`; rust-libp2p wraps it in an I/O
    /// error whose text ends with it. (`stream reset by peer: error N` is a stream's reset,
    /// not the connection's, and does not end that way.)
    pub fn is_stateless_reset(&self) -> bool {
        let text = match self {
            PeerEvent::Closed { cause, .. } => cause.as_deref().unwrap_or_default(),
            PeerEvent::QuicClosed { reason, .. } => reason,
            _ => return false,
        };
        // libp2p-quic's quinn says "reset by peer"; quicpeer-libp2p names quicpeer's cause.
        text.ends_with("reset by peer") || text.contains("peer restarted (stateless reset)")
    }

    /// This event as one JSON line (no newline).
    pub fn to_json(&self) -> String {
        // Serializing these plain enums cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// An event and when the harness received it.
#[derive(Debug, Clone)]
pub struct Stamped<T = PeerEvent> {
    /// When it was seen (emitted in process, or read from the child's stdout).
    pub at: Instant,
    /// The event.
    pub event: T,
}

/// Everything a peer reported so far, and a way to wait for what comes next. Comparison peers
/// report [`PeerEvent`]s; a quicpeer node reports its host's own events.
#[derive(Debug)]
pub struct EventLog<T = PeerEvent> {
    rx: Receiver<Stamped<T>>,
    seen: Vec<Stamped<T>>,
}

impl<T> EventLog<T> {
    /// A log over the events arriving on `rx`.
    pub fn new(rx: Receiver<Stamped<T>>) -> Self {
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Events received so far, oldest first.
    pub fn seen(&self) -> &[Stamped<T>] {
        &self.seen
    }

    /// Waits, at most `timeout`, for the first event at or after `since` that `pick` maps to
    /// something (events already received count too). `None` on timeout or when the peer is
    /// gone.
    pub fn wait_for<U>(
        &mut self,
        since: Instant,
        timeout: Duration,
        mut pick: impl FnMut(&T) -> Option<U>,
    ) -> Option<(Instant, U)> {
        let found = self
            .seen
            .iter()
            .filter(|s| s.at >= since)
            .find_map(|s| pick(&s.event).map(|t| (s.at, t)));
        if found.is_some() {
            return found;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(stamped) => {
                    let hit = (stamped.at >= since)
                        .then(|| pick(&stamped.event))
                        .flatten()
                        .map(|t| (stamped.at, t));
                    self.seen.push(stamped);
                    if hit.is_some() {
                        return hit;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Takes the next event not yet received, waiting at most `timeout` for it. It is handed
    /// over, not kept in [`EventLog::seen`]: for a long-running consumer such as the
    /// `libp2p-peer` binary.
    pub fn next(&mut self, timeout: Duration) -> Option<Stamped<T>> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Takes whatever has arrived without waiting.
    pub fn drain(&mut self) {
        while let Ok(stamped) = self.rx.try_recv() {
            self.seen.push(stamped);
        }
    }
}

impl EventLog<PeerEvent> {
    /// Waits (at most `timeout`) for a `Listening` event at or after `since`: the peer's PeerId
    /// and listen addresses.
    pub fn listening(
        &mut self,
        since: Instant,
        timeout: Duration,
    ) -> Option<(String, Vec<String>)> {
        let (_, found) = self.wait_for(since, timeout, |e| match e {
            PeerEvent::Listening { peer_id, addrs } => Some((peer_id.clone(), addrs.clone())),
            _ => None,
        })?;
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_js_peers_lines_parse() {
        let line = r#"{"event":"quic_closed","conn":"140234977204592","reason":"reset by peer"}"#;
        let event: PeerEvent = serde_json::from_str(line).unwrap();
        assert!(event.is_stateless_reset());
        let line = r#"{"event":"closed","peer":"12D3","addr":"/ip4/127.0.0.1/udp/1/quic-v1","direction":"outbound"}"#;
        let event: PeerEvent = serde_json::from_str(line).unwrap();
        assert_eq!(
            event,
            PeerEvent::Closed {
                peer: "12D3".into(),
                addr: "/ip4/127.0.0.1/udp/1/quic-v1".into(),
                direction: "outbound".into(),
                cause: None,
            }
        );
        assert!(!event.is_stateless_reset());
    }

    #[test]
    fn the_py_peers_lines_parse() {
        // Python's json.dumps puts a space after each separator.
        let line = r#"{"event": "quic_closed", "conn": "139949083031696", "reason": "Idle timeout (error code 0x1)"}"#;
        let event: PeerEvent = serde_json::from_str(line).unwrap();
        assert!(!event.is_stateless_reset());
        let line = r#"{"event": "connected", "peer": "12D3", "addr": "/ip4/127.0.0.1/udp/1/quic-v1", "direction": "outbound"}"#;
        let event: PeerEvent = serde_json::from_str(line).unwrap();
        assert_eq!(
            event,
            PeerEvent::Connected {
                peer: "12D3".into(),
                addr: "/ip4/127.0.0.1/udp/1/quic-v1".into(),
                direction: "outbound".into(),
            }
        );
    }

    #[test]
    fn only_a_connection_reset_counts_as_a_stateless_reset() {
        let closed = |cause: &str| PeerEvent::Closed {
            peer: String::new(),
            addr: String::new(),
            direction: String::new(),
            cause: Some(cause.into()),
        };
        assert!(closed("Connection error: I/O error: reset by peer").is_stateless_reset());
        assert!(!closed("Connection error: I/O error: timed out").is_stateless_reset());
        assert!(!closed("stream reset by peer: error 0").is_stateless_reset());
    }

    #[test]
    fn events_round_trip_as_json_lines() {
        let event = PeerEvent::Ping {
            peer: "12D3".into(),
            rtt_ms: 0.5,
        };
        let line = event.to_json();
        assert_eq!(line, r#"{"event":"ping","peer":"12D3","rtt_ms":0.5}"#);
        assert_eq!(serde_json::from_str::<PeerEvent>(&line).unwrap(), event);
    }
}
