//! The `federation` target: three nodes exchanging messages over peer channels
//! ([`Channels`]) while they crash, lose links and receive raw bytes on channel streams.
//!
//! The `channel` target fuzzes the channel codec. This one fuzzes the guarantee the channels
//! exist for: every accepted message is delivered at every node exactly once, in per-origin
//! order, whatever crashes (each node keeps its store across them, as a real one keeps its
//! disk) and whatever the network does. The topology comes from the input: a full mesh, or a
//! chain whose middle node forwards. The operations: a node accepts a message (not committed
//! until the node next sends, so that a crash may lose it, as the guarantee allows), commits,
//! crashes and restarts, writes raw bytes on a fresh channel stream to a peer, links go down,
//! lossy or jittery, and time passes.
//!
//! After every operation, on every running node:
//!
//! - `Accepted` numbers a node's messages 1, 2, 3, … with no gap (a message lost to a crash
//!   before its commit gives its number to the next);
//! - `Delivered` appends, per origin, exactly the next number: no duplicate, no gap, no
//!   reordering, across restarts too; its body is the body the origin accepted under that
//!   number;
//! - the manager's events keep [`check_state`].
//!
//! At the end every link heals and the network runs until every node has delivered every
//! accepted message of every origin (at most 120 s): eventual delivery.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use super::datagram::{Crypto, Payload};
use super::host::HostLink;
use super::invariants::{check_state, EventLog};
use super::node::{advance, host_config, identities, manager_config, take_events, Node};
use quicpeer::protocols::channel::{ChannelConfig, ChannelEvent, Channels, MemoryStore, PROTOCOL};
use quicpeer::protocols::{HostEvent, OutboundId};
use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{PeerId, StreamId};

/// Operations run from one input at most.
const MAX_OPS: usize = 128;
/// Simulated time all of an input's `Advance`s may pass together (as in `ops`).
const MAX_ADVANCE: Duration = Duration::from_secs(30);
/// Nodes.
const NODES: usize = 3;
/// Bytes of one raw write at most.
const MAX_RAW: usize = 2048;
/// How long the healed network may take to deliver everything at the end.
const SETTLE: Duration = Duration::from_secs(120);

/// How the nodes are linked.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Every node links to every other; no forwarding needed.
    Mesh,
    /// 0 – 1 – 2: node 1 forwards between the ends.
    Chain,
}

/// One operation of a `federation` input. Node numbers are taken modulo 3.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum FederationOp {
    /// The node's application accepts a message of `len` bytes (committed when the node next
    /// sends, or at a `Commit`).
    Accept {
        /// Which node.
        node: u8,
        /// Its length.
        len: u8,
    },
    /// The node commits what it accepted.
    Commit {
        /// Which node.
        node: u8,
    },
    /// The node crashes and restarts from its store.
    Crash {
        /// Which node.
        node: u8,
    },
    /// The node writes raw bytes on a fresh channel stream to node `to`.
    Raw {
        /// Which node.
        node: u8,
        /// To whom.
        to: u8,
        /// The bytes (at most 2 KiB).
        data: Payload,
    },
    /// The link between two nodes changes.
    SetLink {
        /// One end.
        a: u8,
        /// The other.
        b: u8,
        /// How.
        change: HostLink,
    },
    /// Time passes.
    Advance {
        /// Milliseconds.
        millis: u16,
    },
}

/// A whole `federation` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationInput {
    /// How the nodes are linked.
    pub topology: Topology,
    /// The network's seed.
    pub seed: u8,
    /// What happens.
    pub ops: Vec<FederationOp>,
}

impl FederationInput {
    /// Decodes an input; every byte string decodes to something.
    pub fn decode(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let topology = super::decode(&mut u).unwrap_or(Topology::Mesh);
        let seed = super::decode(&mut u).unwrap_or(0);
        let ops = super::decode_ops(&mut u, MAX_OPS);
        Self {
            topology,
            seed,
            ops,
        }
    }
}

/// The `federation` fuzz target (null handshake). Panics only when an invariant fails.
pub fn federation(data: &[u8]) {
    let input = FederationInput::decode(data);
    let mut harness = Harness::new(input.topology, input.seed);
    for op in &input.ops {
        harness.op(op);
    }
    harness.finish();
}

/// What the harness knows of one node, across its restarts.
#[derive(Default)]
struct NodeState {
    /// Its manager's events, this incarnation.
    log: EventLog,
    /// Messages given to `accept` and not yet reported accepted, by `seq`.
    unconfirmed: BTreeMap<u64, Bytes>,
    /// Per origin, the highest `seq` delivered here.
    delivered: BTreeMap<PeerId, u64>,
    /// Raw writes to make once their stream is negotiated.
    raw: BTreeMap<OutboundId, Vec<u8>>,
}

struct Harness {
    net: Network<Node<Channels<MemoryStore>>>,
    peers: Vec<PeerId>,
    nodes: Vec<NodeState>,
    /// Per origin, the bodies of its accepted messages, `seq` 1 first.
    accepted: BTreeMap<PeerId, Vec<Bytes>>,
    /// Deliveries collected and not yet compared with what their origin accepted.
    deliveries: Vec<(usize, PeerId, u64, Bytes)>,
    /// Distinguishes the bodies.
    counter: u32,
    advance_left: Duration,
}

impl Harness {
    fn new(topology: Topology, seed: u8) -> Self {
        let mut net = Network::<Node<Channels<MemoryStore>>>::with_seed(u64::from(seed));
        net.record_sent = false;
        let config = manager_config(Crypto::Null);
        let host = host_config();
        let ids = identities();
        // The nodes' addresses are known before they are added: the simulator numbers them.
        let addrs: Vec<SocketAddr> = (0..NODES)
            .map(|i| SocketAddr::from(([192, 0, 2, i as u8 + 1], 4001)))
            .collect();
        let linked = |a: usize, b: usize| match topology {
            Topology::Mesh => a != b,
            Topology::Chain => a.abs_diff(b) == 1,
        };
        let mut peers = Vec::new();
        for (i, identity) in ids.iter().take(NODES).enumerate() {
            let links = (0..NODES)
                .filter(|&j| linked(i, j))
                .map(|j| (ids[j].peer_id(), vec![addrs[j]]))
                .collect();
            let mut channels = ChannelConfig::new("fuzz", links);
            channels.forward = topology == Topology::Chain;
            channels.max_outbox = 64;
            channels.max_batch = 8;
            let node = net.add_node(
                &format!("n{i}"),
                identity.clone(),
                (
                    config.clone(),
                    (host.clone(), channels, MemoryStore::default()),
                ),
            );
            if net.addr(node) != addrs[i] {
                panic!(
                    "harness: node {i} is at {}, not {}",
                    net.addr(node),
                    addrs[i]
                );
            }
            peers.push(identity.peer_id());
        }
        let mut harness = Self {
            net,
            peers,
            nodes: (0..NODES).map(|_| NodeState::default()).collect(),
            accepted: BTreeMap::new(),
            deliveries: Vec::new(),
            counter: 0,
            advance_left: MAX_ADVANCE,
        };
        harness.net.run_for(Duration::from_millis(200));
        harness.check();
        harness
    }

    fn machine(&mut self, node: usize) -> Option<&mut Channels<MemoryStore>> {
        self.net.machine(NodeId(node)).map(|n| &mut n.0)
    }

    fn op(&mut self, op: &FederationOp) {
        let node = |n: &u8| usize::from(*n) % NODES;
        let mut settle = true;
        match op {
            FederationOp::Accept { node: n, len } => {
                let n = node(n);
                self.counter += 1;
                let mut body = self.counter.to_le_bytes().to_vec();
                body.resize(4 + usize::from(*len), n as u8);
                let body = Bytes::from(body);
                if let Some(channels) = self.machine(n) {
                    if let Ok(seq) = channels.accept(body.clone()) {
                        self.nodes[n].unconfirmed.insert(seq, body);
                    }
                }
                // Not committed yet: a crash now loses it, as the guarantee allows.
                settle = false;
            }
            FederationOp::Commit { node: n } => {
                if let Some(channels) = self.machine(node(n)) {
                    channels.commit();
                }
            }
            FederationOp::Crash { node: n } => {
                let n = node(n);
                self.check();
                self.net.restart(NodeId(n));
                self.net.take_events(NodeId(n));
                let state = &mut self.nodes[n];
                state.log = EventLog::default();
                state.unconfirmed.clear();
                state.raw.clear();
            }
            FederationOp::Raw { node: n, to, data } => {
                let (n, to) = (node(n), node(to));
                let (now, peer) = (self.net.now(), self.peers[to]);
                let bytes = data.0[..data.0.len().min(MAX_RAW)].to_vec();
                if let Some(channels) = self.machine(n) {
                    if let Ok(id) = channels.host_mut().open_stream(now, peer, [PROTOCOL]) {
                        self.nodes[n].raw.insert(id, bytes);
                    }
                }
            }
            FederationOp::SetLink { a, b, change } => {
                let (a, b) = (node(a), node(b));
                if a != b {
                    let link = change.link();
                    self.net.set_link(NodeId(a), NodeId(b), link);
                }
            }
            FederationOp::Advance { millis } => {
                advance(&mut self.net, &mut self.advance_left, *millis);
            }
        }
        if settle {
            self.net.run_for(Duration::ZERO);
        }
        self.check();
    }

    /// Takes a node's new events and checks each.
    fn collect(&mut self, node: usize) {
        let events: Vec<ChannelEvent> = take_events(&mut self.net, node);
        let me = self.peers[node];
        let mut writes: Vec<(StreamId, Vec<u8>)> = Vec::new();
        for event in events {
            let state = &mut self.nodes[node];
            match event {
                ChannelEvent::Accepted { seq } => {
                    let mine = self.accepted.entry(me).or_default();
                    assert_eq!(
                        seq,
                        mine.len() as u64 + 1,
                        "invariant: node {node} accepted seq {seq} after {} accepted ones",
                        mine.len()
                    );
                    let Some(body) = state.unconfirmed.remove(&seq) else {
                        panic!("invariant: node {node} reported seq {seq} accepted, which accept() never returned");
                    };
                    mine.push(body);
                }
                ChannelEvent::Delivered { entry, .. } => {
                    let last = state.delivered.entry(entry.origin).or_default();
                    assert_eq!(
                        entry.seq,
                        *last + 1,
                        "invariant: node {node} delivered seq {} of {} after seq {last} (a duplicate, a gap or a reordering)",
                        entry.seq,
                        entry.origin
                    );
                    *last = entry.seq;
                    // The origin's `Accepted` may come later in this round of events: the
                    // bodies are compared in `check`, once every node's are in.
                    self.deliveries
                        .push((node, entry.origin, entry.seq, entry.body));
                }
                ChannelEvent::Host(HostEvent::Manager(event)) => state.log.record(&event),
                ChannelEvent::Host(HostEvent::OutboundStream { id, stream, .. }) => {
                    if let Some(bytes) = state.raw.remove(&id) {
                        writes.push((stream, bytes));
                    }
                }
                ChannelEvent::Host(HostEvent::OutboundFailed { id, .. }) => {
                    state.raw.remove(&id);
                }
                _ => {}
            }
        }
        if !writes.is_empty() {
            if let Some(channels) = self.machine(node) {
                let manager = channels.host_mut().manager_mut();
                for (stream, bytes) in writes {
                    let _ = manager.stream_write(stream, &bytes);
                    let _ = manager.stream_finish(stream);
                }
            }
        }
    }

    fn check(&mut self) {
        for node in 0..NODES {
            self.collect(node);
        }
        for (node, origin, seq, body) in std::mem::take(&mut self.deliveries) {
            let accepted = self.accepted.get(&origin);
            let index = usize::try_from(seq).ok().and_then(|s| s.checked_sub(1));
            let Some(original) = accepted.zip(index).and_then(|(a, i)| a.get(i)) else {
                panic!(
                    "invariant: node {node} delivered seq {seq} of {origin}, which accepted {}",
                    accepted.map_or(0, Vec::len)
                );
            };
            assert!(
                *original == body,
                "invariant: node {node} delivered seq {seq} of {origin} with another body"
            );
        }
        for node in 0..NODES {
            let Some(channels) = self.net.machine(NodeId(node)).map(|n| &mut n.0) else {
                continue;
            };
            check_state(channels.host().manager(), &self.nodes[node].log);
            for (origin, &upto) in &self.nodes[node].delivered {
                assert!(
                    channels.delivered(origin) >= upto,
                    "invariant: node {node} says {} delivered of {origin}, its events {upto}",
                    channels.delivered(origin)
                );
            }
        }
    }

    fn finish(&mut self) {
        for a in 0..NODES {
            for b in a + 1..NODES {
                self.net.set_link(NodeId(a), NodeId(b), Link::default());
            }
        }
        // Whatever was accepted and not yet committed is committed now.
        for node in 0..NODES {
            if let Some(channels) = self.machine(node) {
                channels.commit();
            }
        }
        let mut ran = Duration::ZERO;
        loop {
            self.check();
            let missing = self.missing();
            match missing {
                None => break,
                Some(what) if ran >= SETTLE => {
                    panic!("invariant: {what} {SETTLE:?} after every link healed")
                }
                Some(_) => {}
            }
            self.net.run_for(Duration::from_secs(1));
            ran += Duration::from_secs(1);
        }
    }

    /// A message some node has not delivered yet, if any.
    fn missing(&self) -> Option<String> {
        for (node, state) in self.nodes.iter().enumerate() {
            for (origin, accepted) in &self.accepted {
                let have = state.delivered.get(origin).copied().unwrap_or(0);
                if have < accepted.len() as u64 {
                    return Some(format!(
                        "node {node} delivered {have} of the {} messages {origin} accepted",
                        accepted.len()
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(topology: Topology, ops: &[FederationOp]) -> Harness {
        let mut harness = Harness::new(topology, 1);
        for op in ops {
            harness.op(op);
        }
        harness
    }

    #[test]
    fn a_chain_delivers_through_its_middle_node() {
        let mut harness = run(
            Topology::Chain,
            &[
                FederationOp::Accept { node: 0, len: 3 },
                FederationOp::Advance { millis: 500 },
            ],
        );
        harness.finish();
        let origin = harness.peers[0];
        assert_eq!(harness.accepted[&origin].len(), 1);
        for state in &harness.nodes {
            assert_eq!(state.delivered.get(&origin), Some(&1));
        }
    }

    #[test]
    fn a_message_lost_to_a_crash_before_its_commit_gives_up_its_number() {
        let mut harness = run(
            Topology::Mesh,
            &[
                FederationOp::Accept { node: 0, len: 1 },
                FederationOp::Crash { node: 0 },
                FederationOp::Accept { node: 0, len: 2 },
                FederationOp::Advance { millis: 500 },
            ],
        );
        harness.finish();
        let accepted = &harness.accepted[&harness.peers[0]];
        assert_eq!(accepted.len(), 1, "one accepted");
        assert_eq!(accepted[0].len(), 4 + 2, "the second body");
    }

    /// The checks fire: a delivery whose body is not what its origin accepted is a finding.
    #[test]
    #[should_panic(expected = "with another body")]
    fn a_delivery_of_another_body_is_a_finding() {
        let mut harness = run(Topology::Mesh, &[FederationOp::Accept { node: 0, len: 1 }]);
        // The accept is committed when node 0 next sends; its origin's record is then altered.
        harness.op(&FederationOp::Commit { node: 0 });
        let origin = harness.peers[0];
        if let Some(accepted) = harness.accepted.get_mut(&origin) {
            accepted[0] = Bytes::from_static(b"forged");
        }
        harness.op(&FederationOp::Advance { millis: 500 });
    }
}
