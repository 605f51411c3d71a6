//! The `ops` target: arbitrary sequences of what applications and networks do, against a
//! [`Network`] of two to four nodes.
//!
//! After every [`Op`] each running node's getters are checked against each other and against
//! its event log (see [`invariants`](super::invariants)). At the end the network heals, runs
//! forward, and every restart must have been noticed: each connection a node held to a peer
//! that then restarted, stopped or moved must have ended (by a stateless reset, an idle timeout
//! or anything else) unless the observer itself restarted meanwhile.

use std::collections::BTreeSet;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use super::datagram::Crypto;
use super::invariants::{check_state, EventLog};
use super::node::{advance, identities, manager_config, take_events, Node};
use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{ConnId, Event, KeyMode, Manager, Read, StreamError, StreamId};

/// Operations run from one input at most; the rest of a longer input is ignored.
const MAX_OPS: usize = 128;
/// Bytes written by one [`Op::Send`] at most.
const MAX_SEND: usize = 4096;
/// How long the healed network runs at the end at least: the longest timer of these nodes, the
/// dial backoff's 10 s, so that dials held back while links were down are made again. It then
/// runs on while a stale connection is still held: one ends by a stateless reset within a
/// keep-alive (1 s) and a round trip, or by its idle timeout (5 s).
const RUN_OUT: Duration = Duration::from_secs(10);
/// How long it runs at most. QUIC's idle timeout is at least three probe timeouts (RFC 9000
/// §10.1), and a connection whose acknowledgements were lost on a lossy link can carry an RTT
/// estimate of seconds (one input found 4.6 s on a 5 ms link at 60 % loss: a 41 s idle
/// timeout); such a connection must still end, only later.
const LONG_RUN_OUT: Duration = Duration::from_secs(320);

/// Simulated time all of an input's [`Op::Advance`]s may pass together; an `Advance` past it
/// passes what is left (nothing, once it is spent). An execution costs in proportion to the
/// simulated time it covers (every connection pings each second), and the committed corpus had
/// grown inputs covering 20 minutes and more that ran 100 times longer than the rest. 30 s is
/// three times the longest timer of these nodes (dial backoff at most 10 s; idle timeout 5 s,
/// handshake timeout 2 s, keep-alive 1 s), so everything that happens on a timer can still
/// happen, and repeat; what an input loses is minutes of steady pinging.
const MAX_ADVANCE: Duration = Duration::from_secs(30);

/// How the network and its nodes are configured.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// Number of nodes: 2 + this modulo 3.
    pub nodes: u8,
    /// quinn's random per-process keys instead of keys derived from the identity (restarts
    /// are then only found by idle timeouts and suspicion).
    pub random_keys: bool,
    /// Suspicion redial on.
    pub suspicion: bool,
    /// Datagrams to a dead address come back as ICMP errors.
    pub icmp: bool,
    /// The network's seed.
    pub seed: u8,
}

/// A change of the link between two nodes, both ways.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange {
    /// Back to the default: 5 ms, nothing lost.
    Healthy,
    /// Nothing passes.
    Down,
    /// This percentage of datagrams is lost (modulo 101).
    Lossy(u8),
    /// Slow and jittery: latency and jitter in milliseconds.
    Jittery(u8, u8),
    /// This percentage of datagrams is duplicated, and as many reordered (modulo 101).
    Messy(u8),
}

/// One operation of an `ops` input. Node numbers are taken modulo the number of nodes.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `from` dials `to` at `to`'s current address.
    Dial {
        /// The dialer.
        from: u8,
        /// The dialed.
        to: u8,
    },
    /// `node` closes its preferred connection to `peer`.
    Close {
        /// Who closes.
        node: u8,
        /// To whom.
        peer: u8,
    },
    /// `node` closes everything to `peer` and forgets it.
    Disconnect {
        /// Who disconnects.
        node: u8,
        /// From whom.
        peer: u8,
    },
    /// `node` replaces its connection to `peer` (make-before-break).
    Redial {
        /// Who redials.
        node: u8,
        /// Whom.
        peer: u8,
    },
    /// `node` restarts on its address: state lost, identity kept.
    Restart {
        /// Which node.
        node: u8,
    },
    /// `node` restarts on a new port; its old address goes dark.
    RestartOnNewPort {
        /// Which node.
        node: u8,
    },
    /// `node` goes down.
    Stop {
        /// Which node.
        node: u8,
    },
    /// `node` comes back up (if it was down), with fresh state.
    Start {
        /// Which node.
        node: u8,
    },
    /// The link between `a` and `b` changes.
    SetLink {
        /// One end.
        a: u8,
        /// The other end.
        b: u8,
        /// How.
        change: LinkChange,
    },
    /// Time passes.
    Advance {
        /// Milliseconds.
        millis: u16,
    },
    /// `node` writes on a fresh stream to `peer`.
    Send {
        /// The writer.
        node: u8,
        /// To whom.
        peer: u8,
        /// Bytes (modulo 4097).
        len: u16,
        /// Whether the stream is finished after the write.
        finish: bool,
    },
    /// `node` reads whatever its streams have.
    Read {
        /// The reader.
        node: u8,
    },
}

/// A whole `ops` input: the setup, then operations until the bytes run out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsInput {
    /// The network.
    pub setup: Setup,
    /// What happens to it.
    pub ops: Vec<Op>,
}

impl OpsInput {
    /// Decodes an input; every byte string decodes to something.
    pub fn decode(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let setup = super::decode(&mut u).unwrap_or(Setup {
            nodes: 0,
            random_keys: false,
            suspicion: false,
            icmp: false,
            seed: 0,
        });
        let ops = super::decode_ops(&mut u, MAX_OPS);
        Self { setup, ops }
    }
}

/// The `ops` fuzz target. Panics only when an invariant fails.
pub fn ops(data: &[u8]) {
    ops_with(Crypto::Null, data);
}

/// The `ops_tls` fuzz target: the same inputs with the nodes on real TLS.
pub fn ops_tls(data: &[u8]) {
    ops_with(Crypto::Tls, data);
}

fn ops_with(crypto: Crypto, data: &[u8]) {
    let input = OpsInput::decode(data);
    let mut harness = Harness::new(input.setup, crypto);
    for op in &input.ops {
        harness.op(*op);
    }
    harness.finish();
}

/// What the harness knows of one node.
struct NodeState {
    up: bool,
    /// Bumped at every (re)start: a new manager, a new event log.
    incarnation: u32,
    log: EventLog,
    /// Streams with something to read.
    readable: BTreeSet<StreamId>,
}

/// A connection that must end: `observer` held it to a peer that then lost its state.
struct MustEnd {
    observer: usize,
    incarnation: u32,
    conn: ConnId,
    peer: usize,
}

struct Harness {
    net: Network<Node<Manager>>,
    nodes: Vec<NodeState>,
    must_end: Vec<MustEnd>,
    links: BTreeSet<(usize, usize)>,
    /// What is left of [`MAX_ADVANCE`].
    advance_left: Duration,
}

impl Harness {
    fn new(setup: Setup, crypto: Crypto) -> Self {
        let count = 2 + usize::from(setup.nodes % 3);
        let mut net = Network::<Node<Manager>>::with_seed(u64::from(setup.seed));
        net.record_sent = false;
        net.icmp_unreachable = setup.icmp;
        let mut config = manager_config(crypto);
        config.suspicion_ptos = setup.suspicion.then_some(3);
        config.keys = if setup.random_keys {
            KeyMode::RandomPerProcess
        } else {
            KeyMode::DerivedFromIdentity
        };
        let mut nodes = Vec::new();
        for (i, identity) in identities().iter().take(count).enumerate() {
            net.add_node(&format!("n{i}"), identity.clone(), (config.clone(), ()));
            nodes.push(NodeState {
                up: true,
                incarnation: 0,
                log: EventLog::default(),
                readable: BTreeSet::new(),
            });
        }
        Self {
            net,
            nodes,
            must_end: Vec::new(),
            links: BTreeSet::new(),
            advance_left: MAX_ADVANCE,
        }
    }

    fn node(&self, n: u8) -> usize {
        usize::from(n) % self.nodes.len()
    }

    fn op(&mut self, op: Op) {
        let now = self.net.now();
        match op {
            Op::Dial { from, to } => {
                let (from, to) = (self.node(from), self.node(to));
                let (peer, addr) = (self.net.peer_id(NodeId(to)), self.net.addr(NodeId(to)));
                if let Some(manager) = self.net.manager(NodeId(from)) {
                    let _ = manager.dial(now, peer, [addr]);
                }
            }
            Op::Close { node, peer } => {
                let peer = self.net.peer_id(NodeId(self.node(peer)));
                if let Some(manager) = self.net.manager(NodeId(self.node(node))) {
                    if let Some(conn) = manager.connection(&peer) {
                        manager.close(now, conn);
                    }
                }
            }
            Op::Disconnect { node, peer } => {
                let peer = self.net.peer_id(NodeId(self.node(peer)));
                if let Some(manager) = self.net.manager(NodeId(self.node(node))) {
                    manager.disconnect(now, peer);
                }
            }
            Op::Redial { node, peer } => {
                let peer = self.net.peer_id(NodeId(self.node(peer)));
                if let Some(manager) = self.net.manager(NodeId(self.node(node))) {
                    let _ = manager.redial(now, peer);
                }
            }
            Op::Restart { node } => {
                let node = self.node(node);
                if self.nodes[node].up {
                    self.lose_state(node);
                    self.net.restart(NodeId(node));
                    self.started(node);
                }
            }
            Op::RestartOnNewPort { node } => {
                let node = self.node(node);
                if self.nodes[node].up {
                    self.lose_state(node);
                    self.net.restart_on_new_port(NodeId(node));
                    self.started(node);
                }
            }
            Op::Stop { node } => {
                let node = self.node(node);
                if self.nodes[node].up {
                    self.lose_state(node);
                    self.net.stop(NodeId(node));
                    self.nodes[node].up = false;
                }
            }
            Op::Start { node } => {
                let node = self.node(node);
                if !self.nodes[node].up {
                    self.net.start(NodeId(node));
                    self.started(node);
                }
            }
            Op::SetLink { a, b, change } => {
                let (a, b) = (self.node(a), self.node(b));
                if a != b {
                    self.net.set_link(NodeId(a), NodeId(b), link(change));
                    self.links.insert((a.min(b), a.max(b)));
                }
            }
            Op::Advance { millis } => {
                advance(&mut self.net, &mut self.advance_left, millis);
            }
            Op::Send {
                node,
                peer,
                len,
                finish,
            } => {
                let peer = self.net.peer_id(NodeId(self.node(peer)));
                if let Some(manager) = self.net.manager(NodeId(self.node(node))) {
                    if let Ok(stream) = manager.open_stream_to(&peer) {
                        let data = vec![0xa5; usize::from(len) % (MAX_SEND + 1)];
                        let _ = manager.stream_write(stream, &data);
                        if finish {
                            let _ = manager.stream_finish(stream);
                        }
                    }
                }
            }
            Op::Read { node } => {
                let node = self.node(node);
                self.collect(node);
                let streams = std::mem::take(&mut self.nodes[node].readable);
                if let Some(manager) = self.net.manager(NodeId(node)) {
                    for stream in streams {
                        for _ in 0..64 {
                            match manager.stream_read(stream, 1 << 16) {
                                Ok(Read::Data(_)) => {}
                                Ok(Read::Finished) | Err(StreamError::Blocked) | Err(_) => break,
                            }
                        }
                    }
                }
            }
        }
        self.check();
    }

    /// A node is about to lose its state: every connection another node holds to it must end.
    fn lose_state(&mut self, node: usize) {
        self.check();
        let peer = self.net.peer_id(NodeId(node));
        for observer in 0..self.nodes.len() {
            if observer == node || !self.nodes[observer].up {
                continue;
            }
            let incarnation = self.nodes[observer].incarnation;
            if let Some(manager) = self.net.manager(NodeId(observer)) {
                for conn in manager.connections(&peer) {
                    self.must_end.push(MustEnd {
                        observer,
                        incarnation,
                        conn,
                        peer: node,
                    });
                }
            }
        }
    }

    fn started(&mut self, node: usize) {
        let state = &mut self.nodes[node];
        state.up = true;
        state.incarnation += 1;
        state.log = EventLog::default();
        state.readable.clear();
        // Events of the old incarnation were collected before it went.
        self.net.take_events(NodeId(node));
    }

    /// Feeds a node's new events (the simulator's and those still queued) to its log.
    fn collect(&mut self, node: usize) {
        let mut events: Vec<Event> = take_events(&mut self.net, node);
        if let Some(manager) = self.net.manager(NodeId(node)) {
            while let Some(event) = manager.poll_event() {
                events.push(event);
            }
        }
        let state = &mut self.nodes[node];
        for event in &events {
            state.log.record(event);
            match event {
                Event::StreamOpened { stream, .. } | Event::StreamReadable { stream } => {
                    state.readable.insert(*stream);
                }
                Event::ConnectionLost { conn, .. } => {
                    state.readable.retain(|s| s.conn() != *conn);
                }
                _ => {}
            }
        }
    }

    fn check(&mut self) {
        for node in 0..self.nodes.len() {
            if !self.nodes[node].up {
                continue;
            }
            self.collect(node);
            if let Some(manager) = self.net.manager(NodeId(node)) {
                check_state(manager, &self.nodes[node].log);
            }
        }
    }

    /// Heals the network, runs it forward, and checks that no connection to a lost state
    /// survived.
    fn finish(&mut self) {
        for &(a, b) in &self.links {
            self.net.set_link(NodeId(a), NodeId(b), Link::default());
        }
        // In steps of a second, each checked, until nothing stale is held after `RUN_OUT`.
        let mut ran = Duration::ZERO;
        while ran < LONG_RUN_OUT && (ran < RUN_OUT || self.stale_held().is_some()) {
            self.net.run_for(Duration::from_secs(1));
            self.check();
            ran += Duration::from_secs(1);
        }
        if let Some(must) = self.stale_held() {
            panic!(
                "invariant: node {} still holds {} to node {}, which lost its state {ran:?} ago",
                must.observer, must.conn, must.peer,
            );
        }
    }

    /// A connection to a lost state that its observer (same incarnation) still holds.
    fn stale_held(&self) -> Option<&MustEnd> {
        self.must_end.iter().find(|must| {
            let observer = &self.nodes[must.observer];
            observer.up
                && observer.incarnation == must.incarnation
                && !observer.log.is_lost(must.conn)
        })
    }
}

fn link(change: LinkChange) -> Link {
    let percent = |p: u8| f64::from(p % 101) / 100.0;
    match change {
        LinkChange::Healthy => Link::default(),
        LinkChange::Down => Link::down(),
        LinkChange::Lossy(p) => {
            let mut link = Link::default();
            link.loss = percent(p);
            link
        }
        LinkChange::Jittery(latency, jitter) => {
            let mut link = Link::default();
            link.latency = Duration::from_millis(u64::from(latency));
            link.jitter = Duration::from_millis(u64::from(jitter));
            link
        }
        LinkChange::Messy(p) => {
            let mut link = Link::default();
            link.duplicate = percent(p);
            link.reorder = percent(p);
            link
        }
    }
}
