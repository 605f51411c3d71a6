//! The state the driver task and the API handles share: the [`Manager`], and per connection
//! and per stream what the async API waits on (wakers) and what arrived for it (inbound
//! connections and streams). It exists so that one `std::sync::Mutex` guards the manager and
//! everything derived from its events together: a handle that sees the manager's answer also
//! sees the connection's fate, since the events of every manager call are dispatched before
//! the lock is released ([`State::dispatch`]).
//!
//! Nothing here buffers application data: reads and writes go straight to the manager, whose
//! QUIC flow control bounds what is held. The queues here hold handles (inbound connections,
//! bounded by `Limits::max_connections`; inbound streams, bounded by the stream limit the
//! endpoint grants each connection) and peer events (a bounded broadcast channel).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use quicpeer::{Cause, ConnId, Direction, Event, Manager, PeerId, StreamId};
use tokio::sync::{broadcast, oneshot, Notify};
use tracing::trace;

use crate::endpoint::{ConnectError, EndpointStats, PeerEvent};

/// The state behind one endpoint, and the driver's doorbell.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Rung by API calls that gave the manager something to send or a timer to rearm.
    pub(crate) notify: Notify,
}

impl Shared {
    /// Locks the state. A handle that panicked while holding the lock cannot leave the manager
    /// half-updated in a way that matters more than stopping would, so a poisoned lock is used.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the driver: the manager may have datagrams to send or new timers.
    pub(crate) fn wake_driver(&self) {
        self.notify.notify_one();
    }
}

/// A list of wakers of tasks waiting for one thing, each task once.
#[derive(Default)]
pub(crate) struct Wakers(Vec<Waker>);

impl Wakers {
    pub(crate) fn register(&mut self, waker: &Waker) {
        if !self.0.iter().any(|w| w.will_wake(waker)) {
            self.0.push(waker.clone());
        }
    }

    pub(crate) fn wake(&mut self) {
        for waker in self.0.drain(..) {
            waker.wake();
        }
    }
}

/// What the API knows about one connection.
pub(crate) struct ConnState {
    pub(crate) peer: PeerId,
    pub(crate) addr: SocketAddr,
    /// Why it ended, once it has.
    pub(crate) lost: Option<Cause>,
    /// Streams the peer opened that `accept_bi` has not taken yet.
    pub(crate) incoming: VecDeque<StreamId>,
    /// `accept_bi` callers.
    pub(crate) accept_wakers: Wakers,
    /// `open_bi` callers waiting for stream credit.
    pub(crate) open_wakers: Wakers,
    /// `closed` callers.
    pub(crate) closed_wakers: Wakers,
    /// Live `Connection`, `SendStream` and `RecvStream` handles of it.
    pub(crate) handles: usize,
    /// Waiting in the endpoint's accept queue.
    pub(crate) queued: bool,
}

/// What the API knows about one stream.
#[derive(Default)]
pub(crate) struct StreamState {
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    /// The `SendStream` and `RecvStream` handles still alive (0 to 2).
    pub(crate) handles: u8,
}

/// Everything behind the mutex.
pub(crate) struct State {
    pub(crate) manager: Manager,
    pub(crate) conns: HashMap<ConnId, ConnState>,
    pub(crate) streams: HashMap<StreamId, StreamState>,
    /// Inbound connections not accepted yet.
    pub(crate) accept_queue: VecDeque<ConnId>,
    pub(crate) accept_wakers: Wakers,
    /// `Endpoint::connect` callers, per peer, until its dial ends.
    pub(crate) dials: HashMap<PeerId, Vec<oneshot::Sender<Result<ConnId, ConnectError>>>>,
    /// Datagrams outside QUIC (`Endpoint::send_raw`: hole punching) waiting for the driver;
    /// at most [`RAW_QUEUE`](crate::RAW_QUEUE).
    pub(crate) raw: VecDeque<(SocketAddr, Vec<u8>)>,
    /// `Endpoint::connect_addr` callers, per connection attempt, until it ends.
    pub(crate) attempts: HashMap<ConnId, oneshot::Sender<Result<ConnId, ConnectError>>>,
    pub(crate) events: broadcast::Sender<PeerEvent>,
    /// `Endpoint::close` callers, woken when no connection is left.
    pub(crate) close_wakers: Wakers,
    /// The driver stopped (closed, aborted or failed): nothing will move any more.
    pub(crate) stopped: bool,
    /// The driver should stop after its current turn.
    pub(crate) stop_requested: bool,
    /// The driver's counters.
    pub(crate) stats: EndpointStats,
}

/// The monotonic time the manager is given.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl State {
    pub(crate) fn new(manager: Manager, events: broadcast::Sender<PeerEvent>) -> Self {
        Self {
            manager,
            conns: HashMap::new(),
            streams: HashMap::new(),
            accept_queue: VecDeque::new(),
            accept_wakers: Wakers::default(),
            dials: HashMap::new(),
            attempts: HashMap::new(),
            raw: VecDeque::new(),
            events,
            close_wakers: Wakers::default(),
            stopped: false,
            stop_requested: false,
            stats: EndpointStats::default(),
        }
    }

    /// Hands every event the manager has queued to whoever waits for it. Called after every
    /// manager call, by the driver and by the handles, before the lock is released.
    pub(crate) fn dispatch(&mut self) {
        while let Some(event) = self.manager.poll_event() {
            trace!(?event, "event");
            match event {
                Event::Connected {
                    peer,
                    conn,
                    addr,
                    direction,
                    replaced,
                } => {
                    let inbound = direction == Direction::Inbound;
                    self.conns.insert(
                        conn,
                        ConnState {
                            peer,
                            addr,
                            lost: None,
                            incoming: VecDeque::new(),
                            accept_wakers: Wakers::default(),
                            open_wakers: Wakers::default(),
                            closed_wakers: Wakers::default(),
                            handles: 0,
                            queued: inbound,
                        },
                    );
                    if inbound {
                        self.accept_queue.push_back(conn);
                        self.accept_wakers.wake();
                    }
                    for waiter in self.dials.remove(&peer).unwrap_or_default() {
                        let _ = waiter.send(Ok(conn));
                    }
                    if let Some(waiter) = self.attempts.remove(&conn) {
                        let _ = waiter.send(Ok(conn));
                    }
                    self.publish(PeerEvent::Connected {
                        peer,
                        conn,
                        addr,
                        direction,
                        replaced,
                    });
                }
                Event::ConnectionLost {
                    peer,
                    conn,
                    addr,
                    cause,
                    ..
                } => {
                    self.lose(conn, cause.clone());
                    self.publish(PeerEvent::ConnectionLost {
                        peer,
                        conn,
                        addr,
                        cause,
                    });
                }
                Event::Reconnecting {
                    peer,
                    lost,
                    attempt,
                } => self.publish(PeerEvent::Reconnecting {
                    peer,
                    lost,
                    attempt,
                }),
                Event::Unresponsive { peer, conn, .. } => {
                    self.publish(PeerEvent::Unresponsive { peer, conn })
                }
                Event::DialFailed {
                    peer,
                    errors,
                    retry_at,
                } => {
                    for waiter in self.dials.remove(&peer).unwrap_or_default() {
                        let _ = waiter.send(Err(ConnectError::DialFailed {
                            peer,
                            errors: errors.clone(),
                        }));
                    }
                    self.publish(PeerEvent::DialFailed {
                        peer,
                        errors,
                        will_retry: retry_at.is_some(),
                    });
                }
                Event::ConnectFailed { conn, addr, cause } => {
                    if let Some(waiter) = self.attempts.remove(&conn) {
                        let _ = waiter.send(Err(ConnectError::Failed { addr, cause }));
                    }
                }
                Event::StreamOpened { stream, .. } => {
                    if let Some(c) = self.conns.get_mut(&stream.conn()) {
                        c.incoming.push_back(stream);
                        c.accept_wakers.wake();
                        self.streams.entry(stream).or_default();
                    }
                }
                Event::StreamReadable { stream } => {
                    if let Some(waker) = self
                        .streams
                        .get_mut(&stream)
                        .and_then(|s| s.read_waker.take())
                    {
                        waker.wake();
                    }
                }
                Event::StreamWritable { stream } | Event::StreamStopped { stream, .. } => {
                    if let Some(waker) = self
                        .streams
                        .get_mut(&stream)
                        .and_then(|s| s.write_waker.take())
                    {
                        waker.wake();
                    }
                }
                Event::StreamsAvailable { conn, .. } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.open_wakers.wake();
                    }
                }
                // `StreamFinished` (the peer acknowledged a finished stream) needs no one woken.
                _ => {}
            }
        }
        if self.manager.connection_count() == 0 {
            self.close_wakers.wake();
        }
    }

    fn publish(&self, event: PeerEvent) {
        // No subscriber is fine; a subscriber that lags loses the oldest events (and is told).
        let _ = self.events.send(event);
    }

    /// Marks a connection lost and wakes everything waiting on it or its streams.
    fn lose(&mut self, conn: ConnId, cause: Cause) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.lost = Some(cause);
        c.accept_wakers.wake();
        c.open_wakers.wake();
        c.closed_wakers.wake();
        if c.queued {
            c.queued = false;
            self.accept_queue.retain(|id| *id != conn);
        }
        for (_, s) in self.streams.iter_mut().filter(|(id, _)| id.conn() == conn) {
            if let Some(w) = s.read_waker.take() {
                w.wake();
            }
            if let Some(w) = s.write_waker.take() {
                w.wake();
            }
        }
        self.forget_if_unused(conn);
    }

    /// Drops what is kept of a lost connection once no handle names it.
    pub(crate) fn forget_if_unused(&mut self, conn: ConnId) {
        if self
            .conns
            .get(&conn)
            .is_some_and(|c| c.lost.is_some() && c.handles == 0 && !c.queued)
        {
            self.conns.remove(&conn);
            self.streams.retain(|id, _| id.conn() != conn);
        }
    }

    /// The driver is gone: every waiter learns it.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
        self.dials.clear();
        self.attempts.clear();
        self.accept_wakers.wake();
        self.close_wakers.wake();
        for c in self.conns.values_mut() {
            c.accept_wakers.wake();
            c.open_wakers.wake();
            c.closed_wakers.wake();
        }
        for s in self.streams.values_mut() {
            if let Some(w) = s.read_waker.take() {
                w.wake();
            }
            if let Some(w) = s.write_waker.take() {
                w.wake();
            }
        }
    }
}
