//! Pinging one peer with `/ipfs/ping/1.0.0`, through the library's [`Host`], one ping at a time.
//!
//! The host negotiates the protocol with multistream-select, reuses one ping stream per
//! connection, enforces the ping timeout and answers other peers' pings itself; this module
//! only numbers the pings of one peer for printing, and starts the next when asked to.
//!
//! The RTT printed is measured here, from `Host::ping` to the event reporting the echo, so the
//! first ping on a fresh stream includes its negotiation, as a user waiting for it sees it.
//! (The host's own figure starts later and comes out lower than the path's RTT when the
//! negotiation's answer and the echo arrive together.)

use std::time::{Duration, Instant};

use quicpeer::protocols::PingStartError;
use quicpeer::{ConnId, Host, HostEvent, PeerId};

/// How one ping ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PingOutcome {
    /// The echo came back.
    Ok {
        /// Sequence number, from 1.
        seq: u64,
        /// Time from the write to the echo.
        rtt: Duration,
    },
    /// No echo (timeout, connection lost, a broken echo, a refused negotiation).
    Failed {
        /// Sequence number (0 when the ping could not even start).
        seq: u64,
        /// Why, for people.
        reason: String,
    },
}

/// Pings one peer over its preferred connection.
#[derive(Debug)]
pub struct Pinger {
    peer: PeerId,
    /// The ping in flight: its number, when it started, and the connection it went on.
    outstanding: Option<(u64, Instant, ConnId)>,
    next_seq: u64,
}

impl Pinger {
    /// A pinger for `peer`.
    pub fn new(peer: PeerId) -> Self {
        Self {
            peer,
            outstanding: None,
            next_seq: 1,
        }
    }

    /// Starts a ping if the peer is connected and no ping is outstanding; a ping that cannot
    /// start for another reason is reported as failed.
    pub fn send(&mut self, host: &mut Host, now: Instant) -> Option<PingOutcome> {
        let mut replaced = None;
        if let Some((seq, _, conn)) = self.outstanding {
            if host.manager().connection(&self.peer) == Some(conn) {
                return None;
            }
            // The connection it went on was replaced (a suspicion redial won): it is given up
            // now and the fresh connection pinged at once, as an application resends at once.
            self.outstanding = None;
            replaced = Some(PingOutcome::Failed {
                seq,
                reason: "its connection was replaced by a fresh one".into(),
            });
        }
        match host.ping(now, self.peer) {
            Ok(conn) => {
                self.outstanding = Some((self.next_seq, now, conn));
                self.next_seq += 1;
                replaced
            }
            // Not connected: nothing is sent, nothing fails. In flight: its result will come.
            Err(PingStartError::NotConnected | PingStartError::InFlight) => replaced,
            Err(e) => Some(PingOutcome::Failed {
                seq: 0,
                reason: e.to_string(),
            }),
        }
    }

    /// The outcome of our ping, if `event` (handled at `now`) reports one.
    pub fn on_event(&mut self, now: Instant, event: &HostEvent) -> Option<PingOutcome> {
        match event {
            HostEvent::PingResult { peer, conn, .. } if *peer == self.peer => {
                let (seq, start, _) = self.outstanding.take_if(|o| o.2 == *conn)?;
                Some(PingOutcome::Ok {
                    seq,
                    rtt: now.saturating_duration_since(start),
                })
            }
            HostEvent::PingFailed { peer, conn, error } if *peer == self.peer => {
                Some(PingOutcome::Failed {
                    seq: self.outstanding.take_if(|o| o.2 == *conn)?.0,
                    reason: error.to_string(),
                })
            }
            _ => None,
        }
    }
}
