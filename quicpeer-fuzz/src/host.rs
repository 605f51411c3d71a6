//! The `host` target: two [`Host`]s on a [`Network`], each with an application the input
//! drives, one of them free to break libp2p's stream protocols.
//!
//! [`Host`] is the layer between the manager and an application: it negotiates every stream
//! with multistream-select, answers and sends pings, queues opens that wait for the peer's
//! stream credit, and times all of that out. What the peer controls here is what reaches it:
//! honest negotiations and pings from the other host, and raw bytes on streams the other side's
//! application opens past its host (whole or in pieces, well-formed multistream messages for
//! known and unknown protocols or anything else, finished, reset or stopped), at any moment
//! of the connection's life, on healthy, lossy or dead links, across restarts.
//!
//! After every operation each running host's events are checked:
//!
//! - each [`Host::open_stream`] request is answered exactly once (`OutboundStream` or
//!   `OutboundFailed`), with one of its own proposals; no answer names an unknown request;
//! - each ping started is answered exactly once (`PingResult` or `PingFailed`) on its
//!   connection;
//! - an `InboundStream` speaks a protocol registered at the time;
//! - the manager's events that pass through never open a stream (`StreamOpened`), and name
//!   only streams the application owns (handed over, or opened by it past the host); they keep
//!   the manager's own invariants ([`check_state`]).
//!
//! At the end every link heals and the network runs 10 s (the negotiation and ping timeouts
//! are 2 s and 3 s): every request and ping must have been answered. Then the second node stops;
//! once the first has no established connection left (its idle timeout), it must hold no
//! stream.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use super::datagram::{Crypto, Payload};
use super::invariants::{check_state, EventLog};
use super::node::{advance, host_config, identities, manager_config, take_events, Node};
use quicpeer::protocols::{Host, HostEvent, OutboundId};
use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{ConnId, Event, Read, SansIo, StreamId};

/// Operations run from one input at most.
const MAX_OPS: usize = 128;
/// Simulated time all of an input's [`HostOp::Advance`]s may pass together (as in `ops`).
const MAX_ADVANCE: Duration = Duration::from_secs(30);
/// Bytes of one raw write at most.
const MAX_RAW: usize = 2048;
/// How long the healed network runs before every request and ping must be answered.
const SETTLE: Duration = Duration::from_secs(10);
/// How long the first node may take, at most, to notice that the second stopped (its idle
/// timeout is 5 s, but a lossy link can have stretched it: see `ops`).
const LONG_RUN_OUT: Duration = Duration::from_secs(320);

/// Protocol names the input picks from: two an application may register, the ping protocol
/// (reserved: registering it fails; proposing it reaches the peer's ping responder), one the
/// hosts never register, and one that is not a valid name.
const PROTOCOLS: [&str; 5] = [
    "/echo/1.0.0",
    "/chat/1.0.0",
    "/ipfs/ping/1.0.0",
    "/never/1.0.0",
    "no-slash",
];

/// A change of the link between the two nodes.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLink {
    /// 5 ms, nothing lost.
    Healthy,
    /// Nothing passes.
    Down,
    /// This percentage of datagrams is lost (modulo 101).
    Lossy(u8),
    /// Latency and jitter in milliseconds.
    Jittery(u8, u8),
}

impl HostLink {
    /// The simulator's link.
    pub(super) fn link(self) -> Link {
        let percent = |p: u8| f64::from(p % 101) / 100.0;
        let mut link = Link::default();
        match self {
            HostLink::Healthy => {}
            HostLink::Down => link = Link::down(),
            HostLink::Lossy(p) => link.loss = percent(p),
            HostLink::Jittery(latency, jitter) => {
                link.latency = Duration::from_millis(u64::from(latency));
                link.jitter = Duration::from_millis(u64::from(jitter));
            }
        }
        link
    }
}

/// One operation of a `host` input. `node` is taken modulo 2; the other node is its peer.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum HostOp {
    /// The node's application registers a protocol (from the harness's protocol list, modulo).
    Register {
        /// Which node.
        node: u8,
        /// Which protocol.
        protocol: u8,
    },
    /// The node's application unregisters a protocol.
    Unregister {
        /// Which node.
        node: u8,
        /// Which protocol.
        protocol: u8,
    },
    /// The node's application opens a stream to its peer proposing the protocols whose bits
    /// are set (bit `i`: `PROTOCOLS[i]`), in order, or reversed when bit 7 is set.
    Open {
        /// Which node.
        node: u8,
        /// Which protocols.
        protocols: u8,
    },
    /// The node pings its peer.
    Ping {
        /// Which node.
        node: u8,
    },
    /// The node's application opens a stream past its host and writes raw bytes: optionally
    /// the multistream header and a proposal first, then `data`.
    RawOpen {
        /// Which node.
        node: u8,
        /// The multistream header message first.
        header: bool,
        /// Then a proposal of this protocol (modulo `PROTOCOLS.len()`; past it, none).
        proposal: u8,
        /// Then these bytes (at most 2 KiB).
        data: Payload,
        /// Finished after the write.
        finish: bool,
    },
    /// More raw bytes on one of the node's raw streams (`index` modulo their number).
    RawWrite {
        /// Which node.
        node: u8,
        /// Which stream.
        index: u8,
        /// The bytes (at most 2 KiB).
        data: Payload,
    },
    /// The node's application resets (or, with `stop`, stops) one of the streams it owns.
    Abandon {
        /// Which node.
        node: u8,
        /// Which stream.
        index: u8,
        /// Stop its receiving half instead of resetting its sending half.
        stop: bool,
    },
    /// The node's application finishes one of the streams it owns.
    Finish {
        /// Which node.
        node: u8,
        /// Which stream.
        index: u8,
    },
    /// The node's application writes on one of the streams it owns (`len` bytes).
    Write {
        /// Which node.
        node: u8,
        /// Which stream.
        index: u8,
        /// How many bytes.
        len: u8,
    },
    /// The node's application reads every stream it owns that has something to read.
    Read {
        /// Which node.
        node: u8,
    },
    /// The node dials its peer.
    Dial {
        /// Which node.
        node: u8,
    },
    /// The node closes its preferred connection to its peer.
    Close {
        /// Which node.
        node: u8,
    },
    /// The node restarts: its state is lost, its identity kept.
    Restart {
        /// Which node.
        node: u8,
    },
    /// The link between the nodes changes.
    SetLink(HostLink),
    /// Time passes.
    Advance {
        /// Milliseconds.
        millis: u16,
    },
}

/// A whole `host` input: operations until the bytes run out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInput {
    /// The network's seed.
    pub seed: u8,
    /// What happens.
    pub ops: Vec<HostOp>,
}

impl HostInput {
    /// Decodes an input; every byte string decodes to something.
    pub fn decode(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let seed = super::decode(&mut u).unwrap_or(0);
        let ops = super::decode_ops(&mut u, MAX_OPS);
        Self { seed, ops }
    }
}

/// The `host` fuzz target (null handshake). Panics only when an invariant fails.
pub fn host(data: &[u8]) {
    let input = HostInput::decode(data);
    let mut harness = Harness::new(input.seed, Crypto::Null);
    for op in &input.ops {
        harness.op(op);
    }
    harness.finish();
}

/// What the harness knows of one node's current incarnation.
#[derive(Default)]
struct NodeState {
    log: EventLog,
    /// Protocols registered, as the application knows them.
    registered: BTreeSet<&'static str>,
    /// Open requests not yet answered, with their proposals.
    pending: BTreeMap<OutboundId, Vec<&'static str>>,
    /// Requests answered.
    answered: BTreeSet<OutboundId>,
    /// Pings not yet answered, per connection.
    pings: BTreeMap<ConnId, u32>,
    /// Streams the application owns: handed over by the host, or opened past it.
    owned: BTreeSet<StreamId>,
    /// The owned streams opened past the host, in order.
    raw: Vec<StreamId>,
}

struct Harness {
    net: Network<Node<Host>>,
    nodes: [NodeState; 2],
    advance_left: Duration,
}

/// A multistream-select message: its length as a varint, the text, a newline.
fn message(out: &mut Vec<u8>, text: &str) {
    let mut len = text.len() as u64 + 1;
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

fn protocol(index: u8) -> &'static str {
    PROTOCOLS[usize::from(index) % PROTOCOLS.len()]
}

impl Harness {
    fn new(seed: u8, crypto: Crypto) -> Self {
        let mut net = Network::<Node<Host>>::with_seed(u64::from(seed));
        net.record_sent = false;
        let config = manager_config(crypto);
        let host = host_config();
        for (i, identity) in identities().iter().take(2).enumerate() {
            net.add_node(
                &format!("h{i}"),
                identity.clone(),
                (config.clone(), host.clone()),
            );
        }
        let mut harness = Self {
            net,
            nodes: Default::default(),
            advance_left: MAX_ADVANCE,
        };
        // Connected from the start: most of what a host does needs a connection.
        harness.dial(0);
        harness.net.run_for(Duration::from_millis(100));
        harness.check();
        harness
    }

    fn host(&mut self, node: usize) -> Option<&mut Host> {
        self.net.machine(NodeId(node)).map(|n| &mut n.0)
    }

    fn dial(&mut self, node: usize) {
        let now = self.net.now();
        let (peer, addr) = (
            self.net.peer_id(NodeId(1 - node)),
            self.net.addr(NodeId(1 - node)),
        );
        if let Some(host) = self.host(node) {
            let _ = host.manager_mut().dial(now, peer, [addr]);
        }
    }

    /// An owned stream of `node`, by index.
    fn owned(&self, node: usize, index: u8) -> Option<StreamId> {
        let owned = &self.nodes[node].owned;
        owned
            .iter()
            .nth(usize::from(index) % owned.len().max(1))
            .copied()
    }

    fn op(&mut self, op: &HostOp) {
        let now = self.net.now();
        let side = |n: &u8| usize::from(*n % 2);
        match op {
            HostOp::Register { node, protocol: p } => {
                let (node, name) = (side(node), protocol(*p));
                if let Some(host) = self.host(node) {
                    if host.register(name).is_ok() {
                        self.nodes[node].registered.insert(name);
                    }
                }
            }
            HostOp::Unregister { node, protocol: p } => {
                let (node, name) = (side(node), protocol(*p));
                if let Some(host) = self.host(node) {
                    let was = host.unregister(name);
                    let known = self.nodes[node].registered.remove(name);
                    assert_eq!(
                        was, known,
                        "invariant: unregister({name}) says {was}, the application registered it: {known}"
                    );
                }
            }
            HostOp::Open { node, protocols } => {
                let node = side(node);
                let mut proposals: Vec<&'static str> = (0..PROTOCOLS.len())
                    .filter(|i| protocols & (1 << i) != 0)
                    .map(|i| PROTOCOLS[i])
                    .collect();
                if protocols & 0x80 != 0 {
                    proposals.reverse();
                }
                let peer = self.net.peer_id(NodeId(1 - node));
                if let Some(host) = self.host(node) {
                    if let Ok(id) = host.open_stream(now, peer, proposals.clone()) {
                        let fresh = self.nodes[node].pending.insert(id, proposals).is_none()
                            && !self.nodes[node].answered.contains(&id);
                        assert!(fresh, "invariant: open_stream returned {id} twice");
                    }
                }
            }
            HostOp::Ping { node } => {
                let node = side(node);
                let peer = self.net.peer_id(NodeId(1 - node));
                if let Some(host) = self.host(node) {
                    if let Ok(conn) = host.ping(now, peer) {
                        *self.nodes[node].pings.entry(conn).or_default() += 1;
                    }
                }
            }
            HostOp::RawOpen {
                node,
                header,
                proposal,
                data,
                finish,
            } => {
                let node = side(node);
                let mut bytes = Vec::new();
                if *header {
                    message(&mut bytes, quicpeer::protocols::multistream::HEADER);
                }
                if usize::from(*proposal) < PROTOCOLS.len() {
                    message(&mut bytes, protocol(*proposal));
                }
                bytes.extend_from_slice(&data.0[..data.0.len().min(MAX_RAW)]);
                let peer = self.net.peer_id(NodeId(1 - node));
                if let Some(host) = self.host(node) {
                    let manager = host.manager_mut();
                    if let Ok(stream) = manager.open_stream_to(&peer) {
                        let _ = manager.stream_write(stream, &bytes);
                        if *finish {
                            let _ = manager.stream_finish(stream);
                        }
                        self.nodes[node].owned.insert(stream);
                        self.nodes[node].raw.push(stream);
                    }
                }
            }
            HostOp::RawWrite { node, index, data } => {
                let node = side(node);
                let raw = &self.nodes[node].raw;
                if let Some(&stream) = raw.get(usize::from(*index) % raw.len().max(1)) {
                    if let Some(host) = self.host(node) {
                        let _ = host
                            .manager_mut()
                            .stream_write(stream, &data.0[..data.0.len().min(MAX_RAW)]);
                    }
                }
            }
            HostOp::Abandon { node, index, stop } => {
                let node = side(node);
                if let Some(stream) = self.owned(node, *index) {
                    if let Some(host) = self.host(node) {
                        let manager = host.manager_mut();
                        let _ = if *stop {
                            manager.stream_stop(stream, 7)
                        } else {
                            manager.stream_reset(stream, 7)
                        };
                    }
                }
            }
            HostOp::Finish { node, index } => {
                let node = side(node);
                if let Some(stream) = self.owned(node, *index) {
                    if let Some(host) = self.host(node) {
                        let _ = host.manager_mut().stream_finish(stream);
                    }
                }
            }
            HostOp::Write { node, index, len } => {
                let node = side(node);
                if let Some(stream) = self.owned(node, *index) {
                    if let Some(host) = self.host(node) {
                        let _ = host
                            .manager_mut()
                            .stream_write(stream, &vec![0x5a; usize::from(*len)]);
                    }
                }
            }
            HostOp::Read { node } => {
                let node = side(node);
                self.collect(node);
                let readable = self.nodes[node].log.take_readable();
                if let Some(host) = self.host(node) {
                    for stream in readable {
                        for _ in 0..16 {
                            match host.manager_mut().stream_read(stream, 1 << 16) {
                                Ok(Read::Data(_)) => {}
                                Ok(Read::Finished) | Err(_) => break,
                            }
                        }
                    }
                }
            }
            HostOp::Dial { node } => self.dial(side(node)),
            HostOp::Close { node } => {
                let node = side(node);
                let peer = self.net.peer_id(NodeId(1 - node));
                if let Some(host) = self.host(node) {
                    let manager = host.manager_mut();
                    if let Some(conn) = manager.connection(&peer) {
                        manager.close(now, conn);
                    }
                }
            }
            HostOp::Restart { node } => {
                let node = side(node);
                self.check();
                self.net.restart(NodeId(node));
                self.net.take_events(NodeId(node));
                self.nodes[node] = NodeState::default();
            }
            HostOp::SetLink(change) => {
                let link = change.link();
                self.net.set_link(NodeId(0), NodeId(1), link);
            }
            HostOp::Advance { millis } => {
                advance(&mut self.net, &mut self.advance_left, *millis);
            }
        }
        // What the application did past its host reaches the host at its next call, as in a
        // driver's loop (`Host::poll_event` reports events as of the last call): let the
        // network take its turn at this instant first.
        self.net.run_for(Duration::ZERO);
        self.check();
    }

    /// Takes a node's new events and checks each against what its application knows.
    fn collect(&mut self, node: usize) {
        let mut events: Vec<HostEvent> = take_events(&mut self.net, node);
        if let Some(host) = self.host(node) {
            while let Some(event) = host.poll_event() {
                events.push(event);
            }
        }
        let state = &mut self.nodes[node];
        for event in events {
            state.record(event);
        }
    }

    fn check(&mut self) {
        for node in 0..2 {
            self.collect(node);
            if let Some(machine) = self.net.machine(NodeId(node)) {
                check_state(machine.0.manager(), &self.nodes[node].log);
            }
        }
    }

    fn finish(&mut self) {
        self.net.set_link(NodeId(0), NodeId(1), Link::default());
        let mut ran = Duration::ZERO;
        while ran < SETTLE {
            self.net.run_for(Duration::from_secs(1));
            self.check();
            ran += Duration::from_secs(1);
        }
        for (node, state) in self.nodes.iter().enumerate() {
            if let Some((id, proposals)) = state.pending.iter().next() {
                panic!(
                    "invariant: node {node}'s open {id} of {proposals:?} unanswered {SETTLE:?} after the network healed"
                );
            }
            if let Some((conn, n)) = state.pings.iter().find(|(_, n)| **n > 0) {
                panic!(
                    "invariant: node {node}'s {n} ping(s) on {conn} unanswered after {SETTLE:?}"
                );
            }
        }
        // The second node goes; once the first has no established connection left, it holds
        // no stream.
        self.net.stop(NodeId(1));
        let mut ran = Duration::ZERO;
        loop {
            let established = self
                .host(0)
                .map_or(0, |host| host.manager().phase_counts().1);
            if established == 0 || ran >= LONG_RUN_OUT {
                break;
            }
            self.net.run_for(Duration::from_secs(1));
            self.check();
            ran += Duration::from_secs(1);
        }
        if let Some(host) = self.host(0) {
            let established = host.manager().phase_counts().1;
            assert_eq!(
                established, 0,
                "invariant: node 0 still has {established} established connection(s) {ran:?} after its only peer stopped"
            );
            let held = host.stream_count();
            assert_eq!(
                held, 0,
                "invariant: node 0 holds {held} stream(s) with no connection established"
            );
        }
    }
}

impl NodeState {
    fn record(&mut self, event: HostEvent) {
        match event {
            HostEvent::Manager(event) => {
                match &event {
                    Event::StreamOpened { stream, .. } => {
                        panic!("invariant: the host passed on StreamOpened of {stream}")
                    }
                    Event::StreamReadable { stream }
                    | Event::StreamWritable { stream }
                    | Event::StreamFinished { stream }
                    | Event::StreamStopped { stream, .. } => assert!(
                        self.owned.contains(stream),
                        "invariant: the host passed on {event:?}, of a stream the application does not own"
                    ),
                    Event::ConnectionLost {
                        conn,
                        unfinished_streams,
                        ..
                    } => {
                        for stream in unfinished_streams {
                            assert!(
                                self.owned.contains(stream),
                                "invariant: ConnectionLost of {conn} lists {stream}, which the application does not own"
                            );
                        }
                    }
                    _ => {}
                }
                self.log.record(&event);
            }
            HostEvent::InboundStream {
                stream, protocol, ..
            } => {
                assert!(
                    self.registered.contains(protocol.as_str()),
                    "invariant: InboundStream {stream} speaks {protocol}, which is not registered ({:?})",
                    self.registered
                );
                self.take_over(stream);
            }
            HostEvent::OutboundStream {
                id,
                stream,
                protocol,
                ..
            } => {
                let proposals = self.answer(id);
                assert!(
                    proposals.contains(&protocol.as_str()),
                    "invariant: {id} agreed on {protocol}, not one of {proposals:?}"
                );
                self.take_over(stream);
            }
            HostEvent::OutboundFailed { id, .. } => {
                self.answer(id);
            }
            HostEvent::PingResult { conn, .. } | HostEvent::PingFailed { conn, .. } => {
                let waiting = self.pings.get_mut(&conn);
                match waiting {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => panic!("invariant: a ping answer on {conn}, where no ping waits"),
                }
            }
            other => panic!("invariant: no check for {other:?}"),
        }
    }

    /// Marks a request answered; its proposals.
    fn answer(&mut self, id: OutboundId) -> Vec<&'static str> {
        match self.pending.remove(&id) {
            Some(proposals) => {
                self.answered.insert(id);
                proposals
            }
            None if self.answered.contains(&id) => panic!("invariant: {id} answered twice"),
            None => panic!("invariant: an answer to {id}, which was never requested"),
        }
    }

    fn take_over(&mut self, stream: StreamId) {
        let fresh = self.owned.insert(stream);
        assert!(fresh, "invariant: {stream} handed over twice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ops: &[HostOp]) -> Harness {
        let mut harness = Harness::new(1, Crypto::Null);
        for op in ops {
            harness.op(op);
        }
        harness
    }

    #[test]
    fn a_negotiated_stream_is_handed_over_on_both_sides() {
        let harness = run(&[
            HostOp::Register {
                node: 1,
                protocol: 0,
            },
            HostOp::Open {
                node: 0,
                protocols: 0b1,
            },
            HostOp::Advance { millis: 100 },
        ]);
        assert!(harness.nodes[0].pending.is_empty());
        assert_eq!(harness.nodes[0].answered.len(), 1);
        assert_eq!(harness.nodes[0].owned.len(), 1, "OutboundStream");
        assert_eq!(harness.nodes[1].owned.len(), 1, "InboundStream");
    }

    #[test]
    fn a_ping_is_answered() {
        let harness = run(&[HostOp::Ping { node: 0 }, HostOp::Advance { millis: 100 }]);
        let pings = &harness.nodes[0].pings;
        assert_eq!(pings.len(), 1, "one ping started");
        assert!(pings.values().all(|n| *n == 0), "and answered: {pings:?}");
    }

    /// The checks fire: a protocol registered behind the application's back is, to the
    /// harness, not registered, so the stream a peer negotiates for it is a finding.
    #[test]
    #[should_panic(expected = "invariant: InboundStream")]
    fn a_stream_of_an_unregistered_protocol_is_a_finding() {
        let mut harness = run(&[]);
        if let Some(host) = harness.host(0) {
            host.register(PROTOCOLS[0]).expect("a valid name");
        }
        for op in [
            HostOp::RawOpen {
                node: 1,
                header: true,
                proposal: 0,
                data: Payload(Vec::new()),
                finish: false,
            },
            HostOp::Advance { millis: 100 },
        ] {
            harness.op(&op);
        }
    }

    #[test]
    fn the_harness_ends_with_every_request_answered_and_no_stream_held() {
        let mut harness = run(&[
            HostOp::Register {
                node: 1,
                protocol: 1,
            },
            HostOp::Open {
                node: 0,
                protocols: 0b11,
            },
            HostOp::Ping { node: 1 },
            HostOp::SetLink(HostLink::Down),
            HostOp::Open {
                node: 0,
                protocols: 0b10,
            },
        ]);
        harness.finish();
        assert!(harness.nodes[0].pending.is_empty());
        assert_eq!(harness.nodes[0].answered.len(), 2);
    }
}
