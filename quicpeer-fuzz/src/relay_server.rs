//! The `relay_server` target: a circuit relay v2 server ([`Relay`]) with small limits and
//! three clients the input drives, honest or not.
//!
//! The `relay` target fuzzes the wire formats; this one fuzzes the server's state machine,
//! where quicpeer's promises live: a reservation is freed in the call that reports its
//! connection's death, slots and circuits stay within their limits, and a circuit ends when
//! either end goes. The clients reserve, connect to each other (or to the relay, or to
//! themselves), write raw bytes on hop streams, answer stop streams or break them, write,
//! read, finish and reset the streams of their circuits, crash, redial, and sit behind lossy or
//! dead links, while time passes.
//!
//! After every operation, on the relay:
//!
//! - its reservations are those its events say: each `ReservationAccepted` on a connection,
//!   freed exactly once (`ReservationFreed`), `reservation_count()` equal to the live ones;
//! - no reservation outlives its connection: once the relay's application has seen a
//!   connection's `ConnectionLost`, no live reservation is on it;
//! - `slots_in_use() <= max_reservations`, circuits within `max_circuits` plus those being set
//!   up (`max_pending`); each circuit opened at most once and closed at most once;
//! - its application, which owns no stream and opened none, gets no stream's events, no
//!   inbound stream and no outbound answer; the manager's events keep [`check_state`].
//!
//! At the end the links heal, every client stops, and once the relay has no connection left and
//! the grace period is over it holds nothing: no reservation, no slot, no circuit, no stream,
//! and every circuit it opened was closed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use super::datagram::{Crypto, Payload};
use super::host::HostLink;
use super::invariants::{check_state, EventLog};
use super::node::{advance, host_config, identities, manager_config, take_events, Node};
use quicpeer::protocols::relay::{
    CircuitId, HopMessage, Relay, RelayConfig, RelayEvent, Status, StopMessage, HOP_PROTOCOL,
    STOP_PROTOCOL,
};
use quicpeer::protocols::{HostEvent, OutboundId};
use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{ConnId, Event, Read, StreamId};

/// Operations run from one input at most.
const MAX_OPS: usize = 128;
/// Simulated time all of an input's `Advance`s may pass together (as in `ops`).
const MAX_ADVANCE: Duration = Duration::from_secs(30);
/// Clients (nodes 1 to 3; the relay is node 0).
const CLIENTS: usize = 3;
/// Bytes of one raw write at most.
const MAX_RAW: usize = 2048;
/// How long the relay's grace period lasts (a dead connection's slot is held this long).
const GRACE: Duration = Duration::from_secs(2);
/// How long the end runs at most before the relay must have let every connection go.
const LONG_RUN_OUT: Duration = Duration::from_secs(320);

/// The relay's limits: small, so that an input reaches each of them.
fn relay_config() -> RelayConfig {
    let mut config = RelayConfig::default();
    config.max_reservations = 3;
    config.max_reservations_per_peer = 2;
    config.reservation_ttl = Duration::from_secs(8);
    config.grace = GRACE;
    config.max_circuits = 2;
    config.max_circuits_per_peer = 2;
    config.circuit_duration = Duration::from_secs(6);
    config.circuit_bytes = 8 * 1024;
    config.message_timeout = Duration::from_secs(2);
    config.max_pending = 4;
    config
}

/// One operation of a `relay_server` input. `client` is taken modulo 3 (nodes 1 to 3).
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum RelayOp {
    /// The client asks for a reservation on a fresh hop stream.
    Reserve {
        /// Which client.
        client: u8,
    },
    /// The client asks for a circuit to node `to` (modulo 4: the relay or any client, itself
    /// included) on a fresh hop stream.
    Connect {
        /// Which client.
        client: u8,
        /// To whom.
        to: u8,
    },
    /// The client writes raw bytes on a fresh hop stream.
    RawHop {
        /// Which client.
        client: u8,
        /// The bytes (at most 2 KiB).
        data: Payload,
    },
    /// The client answers one of the stop streams the relay opened to it: OK, or garbage.
    AnswerStop {
        /// Which client.
        client: u8,
        /// Which stop stream.
        index: u8,
        /// A STATUS OK (else bytes that are no message).
        ok: bool,
    },
    /// The client writes on one of its streams (`len` × 64 bytes).
    Write {
        /// Which client.
        client: u8,
        /// Which stream.
        index: u8,
        /// How much.
        len: u8,
    },
    /// The client reads every stream it owns.
    Read {
        /// Which client.
        client: u8,
    },
    /// The client finishes one of its streams.
    Finish {
        /// Which client.
        client: u8,
        /// Which stream.
        index: u8,
    },
    /// The client resets one of its streams.
    Reset {
        /// Which client.
        client: u8,
        /// Which stream.
        index: u8,
    },
    /// The client crashes and comes back: its state is lost, its identity kept.
    Crash {
        /// Which client.
        client: u8,
    },
    /// The client dials the relay.
    Dial {
        /// Which client.
        client: u8,
    },
    /// The link between the client and the relay changes.
    SetLink {
        /// Which client.
        client: u8,
        /// How.
        change: HostLink,
    },
    /// Time passes.
    Advance {
        /// Milliseconds.
        millis: u16,
    },
}

/// A whole `relay_server` input: operations until the bytes run out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInput {
    /// The network's seed.
    pub seed: u8,
    /// What happens.
    pub ops: Vec<RelayOp>,
}

impl RelayInput {
    /// Decodes an input; every byte string decodes to something.
    pub fn decode(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let seed = super::decode(&mut u).unwrap_or(0);
        let ops = super::decode_ops(&mut u, MAX_OPS);
        Self { seed, ops }
    }
}

/// The `relay_server` fuzz target (null handshake). Panics only when an invariant fails.
pub fn relay_server(data: &[u8]) {
    let input = RelayInput::decode(data);
    let mut harness = Harness::new(input.seed);
    for op in &input.ops {
        harness.op(op);
    }
    harness.finish();
}

/// What the harness knows of a client's current incarnation.
#[derive(Default)]
struct ClientState {
    /// Bytes to write on a hop stream once it is negotiated, per request (written when the
    /// harness next looks at the client's events: after the operation that negotiated it).
    requests: BTreeMap<OutboundId, Vec<u8>>,
    /// Streams the client's application owns (hop streams, stop streams), in order.
    owned: Vec<StreamId>,
    /// Stop streams the relay opened to it.
    stops: Vec<StreamId>,
    /// Streams with something to read.
    readable: BTreeSet<StreamId>,
}

/// What the harness knows of the relay.
#[derive(Default)]
struct RelayState {
    log: EventLog,
    /// Live reservations, by connection, as the events tell.
    reservations: BTreeMap<ConnId, quicpeer::PeerId>,
    /// Connections the relay's application saw end.
    lost: BTreeSet<ConnId>,
    open_circuits: BTreeSet<CircuitId>,
    closed_circuits: BTreeSet<CircuitId>,
}

struct Harness {
    net: Network<Node<Relay>>,
    relay: RelayState,
    clients: [ClientState; CLIENTS],
    advance_left: Duration,
}

impl Harness {
    fn new(seed: u8) -> Self {
        let mut net = Network::<Node<Relay>>::with_seed(u64::from(seed));
        net.record_sent = false;
        let config = manager_config(Crypto::Null);
        let host = host_config();
        let ids = identities();
        net.add_node(
            "relay",
            ids[0].clone(),
            (config.clone(), (host.clone(), relay_config())),
        );
        for (i, identity) in ids.iter().enumerate().skip(1).take(CLIENTS) {
            net.add_node(
                &format!("c{i}"),
                identity.clone(),
                (config.clone(), (host.clone(), RelayConfig::default())),
            );
        }
        let mut harness = Self {
            net,
            relay: RelayState::default(),
            clients: Default::default(),
            advance_left: MAX_ADVANCE,
        };
        for client in 1..=CLIENTS {
            harness.client_started(client);
            harness.dial(client);
        }
        harness.net.run_for(Duration::from_millis(100));
        harness.check();
        harness
    }

    fn machine(&mut self, node: usize) -> Option<&mut Relay> {
        self.net.machine(NodeId(node)).map(|n| &mut n.0)
    }

    /// A (re)started client accepts stop streams.
    fn client_started(&mut self, client: usize) {
        if let Some(relay) = self.machine(client) {
            if let Err(error) = relay.host_mut().register(STOP_PROTOCOL) {
                panic!("harness: cannot register the stop protocol: {error}");
            }
        }
    }

    fn dial(&mut self, client: usize) {
        let now = self.net.now();
        let (peer, addr) = (self.net.peer_id(NodeId(0)), self.net.addr(NodeId(0)));
        if let Some(relay) = self.machine(client) {
            let _ = relay.host_mut().manager_mut().dial(now, peer, [addr]);
        }
    }

    /// Opens a hop stream from `client`, to carry `bytes` once negotiated.
    fn hop(&mut self, client: usize, bytes: Vec<u8>) {
        let now = self.net.now();
        let relay_peer = self.net.peer_id(NodeId(0));
        if let Some(relay) = self.machine(client) {
            if let Ok(id) = relay
                .host_mut()
                .open_stream(now, relay_peer, [HOP_PROTOCOL])
            {
                self.clients[client - 1].requests.insert(id, bytes);
            }
        }
    }

    fn owned(&self, client: usize, index: u8) -> Option<StreamId> {
        let owned = &self.clients[client - 1].owned;
        owned.get(usize::from(index) % owned.len().max(1)).copied()
    }

    fn op(&mut self, op: &RelayOp) {
        let client = |c: &u8| 1 + usize::from(*c) % CLIENTS;
        match op {
            RelayOp::Reserve { client: c } => self.hop(client(c), HopMessage::Reserve.encode()),
            RelayOp::Connect { client: c, to } => {
                let peer = self.net.peer_id(NodeId(usize::from(*to) % (CLIENTS + 1)));
                self.hop(client(c), HopMessage::Connect { peer }.encode());
            }
            RelayOp::RawHop { client: c, data } => {
                self.hop(client(c), data.0[..data.0.len().min(MAX_RAW)].to_vec())
            }
            RelayOp::AnswerStop {
                client: c,
                index,
                ok,
            } => {
                let c = client(c);
                let stops = &self.clients[c - 1].stops;
                if let Some(&stream) = stops.get(usize::from(*index) % stops.len().max(1)) {
                    let bytes = if *ok {
                        StopMessage::Status(Status::Ok).encode()
                    } else {
                        vec![2, 0xff, 0xff]
                    };
                    if let Some(relay) = self.machine(c) {
                        let _ = relay.host_mut().manager_mut().stream_write(stream, &bytes);
                    }
                }
            }
            RelayOp::Write {
                client: c,
                index,
                len,
            } => {
                let c = client(c);
                if let Some(stream) = self.owned(c, *index) {
                    if let Some(relay) = self.machine(c) {
                        let data = vec![0x3c; usize::from(*len) * 64];
                        let _ = relay.host_mut().manager_mut().stream_write(stream, &data);
                    }
                }
            }
            RelayOp::Read { client: c } => {
                let c = client(c);
                self.collect_client(c);
                let readable = std::mem::take(&mut self.clients[c - 1].readable);
                if let Some(relay) = self.machine(c) {
                    let manager = relay.host_mut().manager_mut();
                    for stream in readable {
                        for _ in 0..16 {
                            match manager.stream_read(stream, 1 << 16) {
                                Ok(Read::Data(_)) => {}
                                Ok(Read::Finished) | Err(_) => break,
                            }
                        }
                    }
                }
            }
            RelayOp::Finish { client: c, index } => {
                let c = client(c);
                if let Some(stream) = self.owned(c, *index) {
                    if let Some(relay) = self.machine(c) {
                        let _ = relay.host_mut().manager_mut().stream_finish(stream);
                    }
                }
            }
            RelayOp::Reset { client: c, index } => {
                let c = client(c);
                if let Some(stream) = self.owned(c, *index) {
                    if let Some(relay) = self.machine(c) {
                        let _ = relay.host_mut().manager_mut().stream_reset(stream, 9);
                    }
                }
            }
            RelayOp::Crash { client: c } => {
                let c = client(c);
                self.check();
                self.net.restart(NodeId(c));
                self.net.take_events(NodeId(c));
                self.clients[c - 1] = ClientState::default();
                self.client_started(c);
            }
            RelayOp::Dial { client: c } => self.dial(client(c)),
            RelayOp::SetLink { client: c, change } => {
                let link = change.link();
                self.net.set_link(NodeId(0), NodeId(client(c)), link);
            }
            RelayOp::Advance { millis } => {
                advance(&mut self.net, &mut self.advance_left, *millis);
            }
        }
        // What the applications did past their hosts reaches them at their next call.
        self.net.run_for(Duration::ZERO);
        self.check();
    }

    /// A client's new events: hop streams negotiated get their request written.
    fn collect_client(&mut self, client: usize) {
        let events: Vec<RelayEvent> = take_events(&mut self.net, client);
        let mut writes = Vec::new();
        let state = &mut self.clients[client - 1];
        for event in events {
            match event {
                RelayEvent::Host(HostEvent::OutboundStream { id, stream, .. }) => {
                    state.owned.push(stream);
                    if let Some(bytes) = state.requests.remove(&id) {
                        writes.push((stream, bytes));
                    }
                }
                RelayEvent::Host(HostEvent::OutboundFailed { id, .. }) => {
                    state.requests.remove(&id);
                }
                RelayEvent::Host(HostEvent::InboundStream {
                    stream, protocol, ..
                }) => {
                    state.owned.push(stream);
                    if protocol == STOP_PROTOCOL {
                        state.stops.push(stream);
                    }
                }
                RelayEvent::Host(HostEvent::Manager(Event::StreamReadable { stream })) => {
                    state.readable.insert(stream);
                }
                _ => {}
            }
        }
        if !writes.is_empty() {
            if let Some(relay) = self.machine(client) {
                let manager = relay.host_mut().manager_mut();
                for (stream, bytes) in writes {
                    let _ = manager.stream_write(stream, &bytes);
                }
            }
        }
    }

    /// The relay's new events, each checked against what the harness knows.
    fn collect_relay(&mut self) {
        let events: Vec<RelayEvent> = take_events(&mut self.net, 0);
        for event in events {
            self.relay.record(event);
        }
    }

    fn check(&mut self) {
        for client in 1..=CLIENTS {
            self.collect_client(client);
        }
        self.collect_relay();
        let state = &self.relay;
        let Some(relay) = self.net.machine(NodeId(0)).map(|n| &mut n.0) else {
            panic!("harness: the relay is down");
        };
        check_state(relay.host().manager(), &state.log);
        let config = relay.config();
        assert_eq!(
            relay.reservation_count(),
            state.reservations.len(),
            "invariant: reservation_count() disagrees with the reservation events {:?}",
            state.reservations
        );
        if let Some(conn) = state.reservations.keys().find(|c| state.lost.contains(c)) {
            panic!("invariant: a reservation outlives its connection {conn}");
        }
        assert!(
            relay.slots_in_use() <= config.max_reservations,
            "invariant: {} slots in use, over max_reservations {}",
            relay.slots_in_use(),
            config.max_reservations
        );
        assert!(
            relay.circuit_count() <= config.max_circuits + config.max_pending,
            "invariant: {} circuits, over max_circuits {} plus max_pending {}",
            relay.circuit_count(),
            config.max_circuits,
            config.max_pending
        );
    }

    fn finish(&mut self) {
        for client in 1..=CLIENTS {
            self.net
                .set_link(NodeId(0), NodeId(client), Link::default());
        }
        self.net.run_for(Duration::from_secs(5));
        self.check();
        for client in 1..=CLIENTS {
            self.net.stop(NodeId(client));
        }
        let mut ran = Duration::ZERO;
        loop {
            let live = self
                .machine(0)
                .map_or(0, |relay| relay.host().manager().live_connections());
            if live == 0 || ran >= LONG_RUN_OUT {
                break;
            }
            self.net.run_for(Duration::from_secs(1));
            self.check();
            ran += Duration::from_secs(1);
        }
        self.net.run_for(GRACE + Duration::from_secs(1));
        self.check();
        let open = self.relay.open_circuits.clone();
        let Some(relay) = self.machine(0) else {
            panic!("harness: the relay is down");
        };
        let live = relay.host().manager().live_connections();
        assert_eq!(
            live, 0,
            "invariant: the relay holds {live} connection(s) {ran:?} after every client stopped"
        );
        assert_eq!(
            (relay.reservation_count(), relay.slots_in_use(), relay.circuit_count()),
            (0, 0, 0),
            "invariant: with no client left and the grace over, the relay holds (reservations, slots, circuits)"
        );
        let held = relay.host().stream_count();
        assert_eq!(
            held, 0,
            "invariant: the relay's host holds {held} stream(s) with no connection"
        );
        assert!(
            open.is_empty(),
            "invariant: circuits opened and never closed: {open:?}"
        );
    }
}

impl RelayState {
    fn record(&mut self, event: RelayEvent) {
        match event {
            RelayEvent::Host(HostEvent::Manager(event)) => {
                match &event {
                    Event::StreamOpened { .. }
                    | Event::StreamReadable { .. }
                    | Event::StreamWritable { .. }
                    | Event::StreamFinished { .. }
                    | Event::StreamStopped { .. } => {
                        panic!("invariant: the relay's application, which owns no stream, got {event:?}")
                    }
                    Event::ConnectionLost {
                        conn,
                        unfinished_streams,
                        ..
                    } => {
                        assert!(
                            unfinished_streams.is_empty(),
                            "invariant: ConnectionLost of {conn} lists {unfinished_streams:?}; the relay's application owns no stream"
                        );
                        self.lost.insert(*conn);
                    }
                    _ => {}
                }
                self.log.record(&event);
            }
            RelayEvent::Host(other) => {
                panic!("invariant: the relay's application, which opened nothing and registered nothing, got {other:?}")
            }
            RelayEvent::ReservationAccepted {
                peer,
                conn,
                renewed,
                ..
            } => {
                let known = self.reservations.insert(conn, peer);
                assert!(
                    known.is_none() || renewed,
                    "invariant: a second reservation on {conn} not reported as renewed"
                );
            }
            RelayEvent::ReservationFreed { conn, .. } => {
                assert!(
                    self.reservations.remove(&conn).is_some(),
                    "invariant: ReservationFreed on {conn}, which holds no reservation"
                );
            }
            RelayEvent::CircuitOpened { id, .. } => {
                assert!(
                    !self.closed_circuits.contains(&id) && self.open_circuits.insert(id),
                    "invariant: {id} opened twice"
                );
            }
            RelayEvent::CircuitClosed { id, .. } => {
                self.open_circuits.remove(&id);
                assert!(
                    self.closed_circuits.insert(id),
                    "invariant: {id} closed twice"
                );
            }
            RelayEvent::ReservationRefused { .. }
            | RelayEvent::CircuitRefused { .. }
            | RelayEvent::BadRequest { .. } => {}
            other => panic!("invariant: no check for {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `ops`; a hop request goes out at the operation after its stream was negotiated,
    /// so each `Advance` here is taken twice.
    fn run(ops: &[RelayOp]) -> Harness {
        let mut harness = Harness::new(1);
        for op in ops {
            harness.op(op);
            if matches!(op, RelayOp::Advance { .. }) {
                harness.op(op);
            }
        }
        harness
    }

    #[test]
    fn a_reservation_is_accepted_and_counted() {
        let harness = run(&[
            RelayOp::Reserve { client: 0 },
            RelayOp::Advance { millis: 300 },
        ]);
        assert_eq!(harness.relay.reservations.len(), 1);
    }

    #[test]
    fn a_circuit_opens_when_its_target_answers() {
        let harness = run(&[
            RelayOp::Reserve { client: 1 },
            RelayOp::Advance { millis: 200 },
            RelayOp::Connect { client: 0, to: 2 },
            RelayOp::Advance { millis: 200 },
            RelayOp::AnswerStop {
                client: 1,
                index: 0,
                ok: true,
            },
            RelayOp::Advance { millis: 200 },
        ]);
        assert_eq!(harness.relay.open_circuits.len(), 1);
    }

    #[test]
    fn a_crashed_clients_reservation_is_freed() {
        let mut harness = run(&[
            RelayOp::Reserve { client: 0 },
            RelayOp::Advance { millis: 300 },
        ]);
        assert_eq!(harness.relay.reservations.len(), 1);
        for op in [
            RelayOp::Crash { client: 0 },
            RelayOp::Advance { millis: 3000 },
        ] {
            harness.op(&op);
        }
        assert!(harness.relay.reservations.is_empty());
        assert!(
            !harness.relay.lost.is_empty(),
            "the old connection was lost"
        );
    }

    /// The checks fire: a reservation the harness did not learn of from the events is a
    /// finding.
    #[test]
    #[should_panic(expected = "invariant: reservation_count() disagrees")]
    fn a_reservation_unknown_to_the_events_is_a_finding() {
        let mut harness = run(&[
            RelayOp::Reserve { client: 0 },
            RelayOp::Advance { millis: 300 },
        ]);
        harness.relay.reservations.clear();
        harness.check();
    }
}
