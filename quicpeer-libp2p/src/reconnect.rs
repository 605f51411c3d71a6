//! A small `NetworkBehaviour` that gives a Swarm quicpeer's restart recovery. It exists because
//! a Swarm never redials by itself: the transport can tell *why* a connection ended (a peer that
//! restarted, [`Cause::PeerRestarted`]) and *that* one went silent (quicpeer's suspicion,
//! `Unresponsive`), but only a behaviour can ask the Swarm to dial.
//!
//! - A connection this node dialed ends with [`Cause::PeerRestarted`] or
//!   [`Cause::PeerRestarting`]: the peer is dialed again at the same address (if no other
//!   connection to it is left).
//! - A connection this node dialed goes silent (the peer restarted without a stateless reset,
//!   as stock libp2p-quic nodes do): the peer is dialed again with `PeerCondition::Always`,
//!   make-before-break; the silent connection goes when the Swarm or its idle timeout drops it.
//!
//! The silence reaches the behaviour from the transport through [`Signals`]:
//!
//! ```no_run
//! use libp2p_swarm::NetworkBehaviour;
//! use quicpeer_libp2p::{reconnect, Config, Transport};
//!
//! #[derive(NetworkBehaviour)]
//! struct Behaviour {
//!     reconnect: reconnect::Behaviour,
//! }
//!
//! let keypair = libp2p_identity::Keypair::generate_ed25519();
//! let reconnect = reconnect::Behaviour::new();
//! let signals = reconnect.signals();
//! let transport = Transport::new(Config::new(&keypair).with_signals(signals));
//! let behaviour = Behaviour { reconnect };
//! # let _ = (transport, behaviour);
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use libp2p_core::transport::PortUse;
use libp2p_core::{ConnectedPoint, Endpoint, Multiaddr};
use libp2p_identity::PeerId;
use libp2p_swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p_swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure, FromSwarm,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use quicpeer::Cause;
use tracing::debug;

use crate::cause_of;

/// Silent-connection signals the transport may queue before the behaviour reads them; more
/// are dropped (the behaviour is behind, and a dial per peer is already coming).
pub const SIGNAL_CAPACITY: usize = 256;

/// Peers whose dialed address is remembered (those with connections this node dialed, and
/// those being redialed); beyond it, new peers are not redialed.
pub const MAX_PEERS: usize = 16_384;

/// Dials of one redial that may fail before it gives up (the peer may still be restarting:
/// its port closed, or silent).
pub const MAX_ATTEMPTS: u32 = 10;

/// Wait before the second attempt of a redial; doubled for each next one, up to
/// [`RETRY_MAX`].
pub const RETRY_INITIAL: Duration = Duration::from_millis(50);

/// Longest wait between two attempts of a redial.
pub const RETRY_MAX: Duration = Duration::from_secs(1);

/// A redial in progress: until a connection to the peer is established, or its attempts run out.
struct Redial {
    addr: Multiaddr,
    reason: Reason,
    attempts: u32,
    /// When the next attempt is due, after a failed one.
    due: Option<tokio::time::Instant>,
}

/// The transport's side of the behaviour: give it to [`Config::with_signals`](crate::Config::with_signals).
#[derive(Clone, Debug)]
pub struct Signals(pub(crate) mpsc::Sender<PeerId>);

impl Signals {
    pub(crate) fn try_send(&mut self, peer: PeerId) -> Result<(), mpsc::TrySendError<PeerId>> {
        self.0.try_send(peer)
    }
}

/// Why the behaviour dialed a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// A connection ended because the peer restarted (or said it was restarting).
    PeerRestarted,
    /// A connection went silent (quicpeer's suspicion): a fresh one races it.
    Unresponsive,
}

/// What the behaviour reports to the Swarm's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A redial was asked of the Swarm.
    Redialing {
        /// The peer.
        peer: PeerId,
        /// The address dialed.
        addr: Multiaddr,
        /// Why.
        reason: Reason,
    },
}

/// Redials peers that restarted or went silent; see the [module documentation](self).
pub struct Behaviour {
    signals: mpsc::Sender<PeerId>,
    silent: mpsc::Receiver<PeerId>,
    /// The address each peer was dialed at, and how many of our dialed connections it has.
    dialed: HashMap<PeerId, (Multiaddr, usize)>,
    /// Redials in progress, one per peer (bounded by `dialed`, itself bounded by [`MAX_PEERS`]).
    redials: HashMap<PeerId, Redial>,
    /// Wakes `poll` when the earliest retry is due.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What to hand the Swarm: each redial's dial, then its report.
    queue: VecDeque<ToSwarm<Event, THandlerInEvent<Behaviour>>>,
}

impl Behaviour {
    /// A behaviour with its signal channel; pass [`Behaviour::signals`] to the transport.
    pub fn new() -> Self {
        let (signals, silent) = mpsc::channel(SIGNAL_CAPACITY);
        Behaviour {
            signals,
            silent,
            dialed: HashMap::new(),
            redials: HashMap::new(),
            timer: None,
            queue: VecDeque::new(),
        }
    }

    /// The sender of silent-connection signals, for [`Config::with_signals`](crate::Config::with_signals).
    pub fn signals(&self) -> Signals {
        Signals(self.signals.clone())
    }

    /// Starts a redial of `peer`, unless one is in progress.
    fn redial(&mut self, peer: PeerId, addr: Multiaddr, reason: Reason) {
        if self.redials.contains_key(&peer) {
            return;
        }
        self.redials.insert(
            peer,
            Redial {
                addr: addr.clone(),
                reason: reason.clone(),
                attempts: 1,
                due: None,
            },
        );
        self.dial(peer, addr, reason);
    }

    /// Queues one dial (make-before-break for a silent connection) and its report.
    fn dial(&mut self, peer: PeerId, addr: Multiaddr, reason: Reason) {
        let condition = match reason {
            Reason::Unresponsive => PeerCondition::Always,
            Reason::PeerRestarted => PeerCondition::DisconnectedAndNotDialing,
        };
        self.queue.push_back(ToSwarm::Dial {
            opts: DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(condition)
                .build(),
        });
        self.queue
            .push_back(ToSwarm::GenerateEvent(Event::Redialing {
                peer,
                addr,
                reason,
            }));
    }

    /// A dial failed: the redial of the peer tries again later, while it has attempts left.
    fn on_dial_failure(&mut self, peer: PeerId) {
        let Some(redial) = self.redials.get_mut(&peer) else {
            return;
        };
        if redial.due.is_some() {
            return;
        }
        if redial.attempts >= MAX_ATTEMPTS {
            debug!(%peer, attempts = redial.attempts, "redial gave up");
            self.redials.remove(&peer);
            return;
        }
        let wait = RETRY_INITIAL
            .saturating_mul(1 << (redial.attempts - 1).min(16))
            .min(RETRY_MAX);
        let due = tokio::time::Instant::now() + wait;
        redial.due = Some(due);
        self.arm(due);
    }

    /// Sets the timer to `due` if that is earlier than it is set to.
    fn arm(&mut self, due: tokio::time::Instant) {
        match &mut self.timer {
            Some(timer) if timer.deadline() <= due => {}
            Some(timer) => timer.as_mut().reset(due),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(due))),
        }
    }

    /// Dials the redials whose retry is due, and sets the timer to the next one.
    fn retry_due(&mut self) {
        let now = tokio::time::Instant::now();
        let mut due = Vec::new();
        let mut next: Option<tokio::time::Instant> = None;
        for (peer, redial) in &mut self.redials {
            match redial.due {
                Some(at) if at <= now => {
                    redial.due = None;
                    redial.attempts += 1;
                    due.push((*peer, redial.addr.clone(), redial.reason.clone()));
                }
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        for (peer, addr, reason) in due {
            self.dial(peer, addr, reason);
        }
        if let Some(at) = next {
            self.arm(at);
        }
    }

    fn on_closed(&mut self, closed: ConnectionClosed<'_>) {
        let ConnectedPoint::Dialer { address, .. } = closed.endpoint else {
            return;
        };
        let restarted = closed
            .cause
            .and_then(|e| cause_of(e))
            .is_some_and(|c| matches!(c, Cause::PeerRestarted | Cause::PeerRestarting { .. }));
        let left = match self.dialed.get_mut(&closed.peer_id) {
            Some((_, count)) => {
                *count = count.saturating_sub(1);
                *count
            }
            None => 0,
        };
        if restarted && closed.remaining_established == 0 {
            debug!(peer = %closed.peer_id, %address, "peer restarted: redialing");
            self.redial(closed.peer_id, address.clone(), Reason::PeerRestarted);
        } else if left == 0 {
            self.dialed.remove(&closed.peer_id);
        }
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("dialed", &self.dialed.len())
            .finish_non_exhaustive()
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if self.dialed.len() < MAX_PEERS || self.dialed.contains_key(&peer) {
            let entry = self.dialed.entry(peer).or_insert((addr.clone(), 0));
            entry.0 = addr.clone();
            entry.1 += 1;
        }
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(closed) => self.on_closed(closed),
            FromSwarm::ConnectionEstablished(established) => {
                self.redials.remove(&established.peer_id);
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                ..
            }) => self.on_dial_failure(peer),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(timer) = &mut self.timer {
            if timer.as_mut().poll(cx).is_ready() {
                self.timer = None;
                self.retry_due();
            }
        }
        while let Poll::Ready(Some(peer)) = self.silent.poll_next_unpin(cx) {
            if let Some((addr, _)) = self.dialed.get(&peer) {
                debug!(%peer, %addr, "connection unresponsive: dialing a fresh one");
                let addr = addr.clone();
                self.redial(peer, addr, Reason::Unresponsive);
            }
        }
        match self.queue.pop_front() {
            Some(next) => Poll::Ready(next),
            None => Poll::Pending,
        }
    }
}
