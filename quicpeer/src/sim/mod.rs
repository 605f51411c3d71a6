//! A deterministic network for [`Manager`]s, or for any machine stacked on one (such as
//! [`Host`]): virtual clock, seeded loss, reordering, duplication and latency per link, and
//! restarts of a node with its identity kept.
//!
//! It exists so that every behaviour of the manager can be tested, fuzzed and benchmarked
//! without sockets or sleeps: a run is a pure function of its seed. Nodes live at fixed
//! addresses (from the documentation range 192.0.2.0/24; nothing ever leaves the process).
//! [`Network::restart`] drops a node's manager and builds a new one from the same identity on
//! the same address, exactly what a crashed-and-restarted process looks like from outside.
//! `Network::new` hosts bare managers; `Network::<M>::with_seed` hosts any [`Simulated`]
//! machine, e.g. `Network::<Host>::with_seed(1)`.
//!
//! ```
//! use std::time::Duration;
//! use quicpeer::sim::Network;
//! use quicpeer::{Config, Event, Identity};
//!
//! let mut net = Network::new(1);
//! let a = net.add_node("a", Identity::from_ed25519_seed([1; 32]), Config::default());
//! let b = net.add_node("b", Identity::from_ed25519_seed([2; 32]), Config::default());
//! net.dial(a, b);
//! net.run_for(Duration::from_millis(100));
//! assert!(net.events(a).iter().any(|(_, e)| matches!(e, Event::Connected { .. })));
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tracing::{info_span, Span};

use crate::protocols::{Host, HostConfig};
use crate::{Config, ConnId, Identity, Manager, ManagerError, PeerId, SansIo};

/// A machine the network can host: a [`Manager`], or a layer that owns one.
pub trait Simulated: SansIo + Sized {
    /// What a node is configured with; kept across restarts.
    type Config: Clone;

    /// Builds a node's machine. `seed` differs per node and per restart.
    fn build(
        identity: Identity,
        config: Self::Config,
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Self, ManagerError>;

    /// The manager inside, for commands.
    fn manager_mut(&mut self) -> &mut Manager;
}

impl Simulated for Manager {
    type Config = Config;

    fn build(
        identity: Identity,
        config: Config,
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Self, ManagerError> {
        Manager::new(now, wall_now, identity, config, seed)
    }

    fn manager_mut(&mut self) -> &mut Manager {
        self
    }
}

impl Simulated for Host {
    /// The manager's configuration and the host's.
    type Config = (Config, HostConfig);

    fn build(
        identity: Identity,
        (config, host): (Config, HostConfig),
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Self, ManagerError> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let manager = Manager::new(now, wall_now, identity, config, rng.random())?;
        Ok(Host::new(now, manager, host, rng.random()))
    }

    fn manager_mut(&mut self) -> &mut Manager {
        Host::manager_mut(self)
    }
}

/// Index of a node in a [`Network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// Properties of the path from one node to another.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Link {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..jitter` per packet.
    pub jitter: Duration,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Probability that a packet is held back by up to one more latency, overtaken by later ones.
    pub reorder: f64,
    /// Whether packets pass at all.
    pub up: bool,
}

impl Link {
    /// A link up, with this one-way delay and nothing else in its way.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// A link that passes nothing.
    pub fn down() -> Self {
        Self {
            up: false,
            ..Self::default()
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            up: true,
        }
    }
}

/// One datagram a node sent, as recorded by the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// When it was sent.
    pub at: Instant,
    /// The connection it belongs to (`None`: a stateless response such as a reset).
    pub conn: Option<ConnId>,
    /// Where it went.
    pub to: SocketAddr,
    /// Its size.
    pub size: usize,
}

/// One datagram with its bytes, as captured by the network (see [`Network::capture_payloads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// When it was sent.
    pub at: Instant,
    /// The node that sent it.
    pub node: NodeId,
    /// The connection it belongs to on the sender (`None`: a stateless response).
    pub conn: Option<ConnId>,
    /// The sender's address.
    pub from: SocketAddr,
    /// Where it went.
    pub to: SocketAddr,
    /// The datagram.
    pub data: Vec<u8>,
}

/// A simulated node: one machine at one address.
pub struct Node<M: Simulated = Manager> {
    /// Name used in logs.
    pub name: String,
    identity: Identity,
    config: M::Config,
    addr: SocketAddr,
    machine: Option<M>,
    events: Vec<(Instant, M::Event)>,
    sent: Vec<Sent>,
    next_timeout: Option<Instant>,
    generation: u32,
    span: Span,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    deliver_at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    /// `None`: an ICMP "port unreachable" about a datagram `to` sent to `from`.
    data: Option<Vec<u8>>,
}

/// Steps taken at one instant after which the network declares the loop spinning.
const SPIN_LIMIT: u32 = 100_000;

/// The simulated network. See the [module documentation](self).
pub struct Network<M: Simulated = Manager> {
    seed: u64,
    start: Instant,
    now: Instant,
    wall_epoch: SystemTime,
    nodes: Vec<Node<M>>,
    by_addr: HashMap<SocketAddr, NodeId>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    rng: ChaCha20Rng,
    default_link: Link,
    links: HashMap<(NodeId, NodeId), Link>,
    buf: Vec<u8>,
    steps_at_now: u32,
    steps: u64,
    captured: Vec<Captured>,
    /// Whether to keep a copy of every datagram sent, bytes included (see [`Network::captured`]);
    /// off by default. Real packets for fuzz corpora and replay tests.
    pub capture_payloads: bool,
    /// Whether to record every datagram sent (see [`Network::sent`]).
    pub record_sent: bool,
    /// Whether a datagram to an address where no node is up comes back as an ICMP "port
    /// unreachable" (fed to the sender's `Manager::handle_unreachable`), as a closed port on a
    /// reachable host does. Off by default: such datagrams vanish, as behind a firewall.
    pub icmp_unreachable: bool,
    /// Datagrams one transmit may carry, told to every machine as it starts
    /// ([`SansIo::set_max_datagrams`]), as the mio driver does where its sockets have GSO. The
    /// network splits such runs into datagrams. 1 (the default) leaves the machines alone.
    pub max_datagrams: usize,
}

impl Network {
    /// An empty network of managers whose randomness comes from `seed`. Its clock starts at an
    /// arbitrary instant; the wall clock nodes see starts at 2026-01-01T00:00:00Z.
    pub fn new(seed: u64) -> Self {
        Self::with_seed(seed)
    }
}

impl<M: Simulated> Network<M> {
    /// An empty network of `M`s whose randomness comes from `seed` (see [`Network::new`]).
    pub fn with_seed(seed: u64) -> Self {
        // The origin of the virtual clock; only differences from it matter.
        let start = Instant::now();
        Self {
            seed,
            start,
            now: start,
            wall_epoch: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha20Rng::seed_from_u64(seed),
            default_link: Link::default(),
            links: HashMap::new(),
            buf: Vec::new(),
            steps_at_now: 0,
            steps: 0,
            captured: Vec::new(),
            capture_payloads: false,
            record_sent: true,
            icmp_unreachable: false,
            max_datagrams: 1,
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time elapsed since the network was created.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Sets the link used between nodes that have no link of their own.
    pub fn set_default_link(&mut self, link: Link) {
        self.default_link = link;
    }

    /// Sets the link from `a` to `b` and from `b` to `a`.
    pub fn set_link(&mut self, a: NodeId, b: NodeId, link: Link) {
        self.links.insert((a, b), link);
        self.links.insert((b, a), link);
    }

    /// The link from `a` to `b`.
    pub fn link(&self, a: NodeId, b: NodeId) -> Link {
        self.links
            .get(&(a, b))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// Adds a node listening at the next free address.
    pub fn add_node(&mut self, name: &str, identity: Identity, config: M::Config) -> NodeId {
        let index = self.nodes.len();
        let ip = Ipv4Addr::new(192, 0, 2, 1 + (index % 250) as u8);
        let addr = SocketAddr::new(IpAddr::V4(ip), 4001 + (index / 250) as u16);
        let id = NodeId(index);
        let span = info_span!("node", name);
        self.nodes.push(Node {
            name: name.to_owned(),
            identity,
            config,
            addr,
            machine: None,
            events: Vec::new(),
            sent: Vec::new(),
            next_timeout: None,
            generation: 0,
            span,
        });
        self.by_addr.insert(addr, id);
        self.start(id);
        id
    }

    /// The node's address.
    pub fn addr(&self, node: NodeId) -> SocketAddr {
        self.nodes[node.0].addr
    }

    /// The node's PeerId.
    pub fn peer_id(&self, node: NodeId) -> PeerId {
        self.nodes[node.0].identity.peer_id()
    }

    /// The node's manager, for commands. `None` while the node is down.
    pub fn manager(&mut self, node: NodeId) -> Option<&mut Manager> {
        self.machine(node).map(M::manager_mut)
    }

    /// The node's machine, for commands. `None` while the node is down.
    pub fn machine(&mut self, node: NodeId) -> Option<&mut M> {
        let n = &mut self.nodes[node.0];
        // Anything may change the node's timers: re-read them after the next step. (Not for a
        // node that is down: no step would ever clear the timer, and the network would spin.)
        if n.machine.is_some() {
            n.next_timeout = Some(self.now);
        }
        n.machine.as_mut()
    }

    /// `a` dials `b` at `b`'s address. Panics if `a` is down or the dial is refused.
    pub fn dial(&mut self, a: NodeId, b: NodeId) {
        let (peer, addr, now) = (self.peer_id(b), self.addr(b), self.now);
        let span = self.nodes[a.0].span.clone();
        let _entered = span.enter();
        let manager = self.manager(a).expect("dialing node is down");
        manager.dial(now, peer, [addr]).expect("dial refused");
    }

    /// Everything the node's machines reported, with the time, across restarts.
    pub fn events(&self, node: NodeId) -> &[(Instant, M::Event)] {
        &self.nodes[node.0].events
    }

    /// Takes the node's events, leaving none.
    pub fn take_events(&mut self, node: NodeId) -> Vec<(Instant, M::Event)> {
        std::mem::take(&mut self.nodes[node.0].events)
    }

    /// Every datagram the node sent (when `record_sent` is on).
    pub fn sent(&self, node: NodeId) -> &[Sent] {
        &self.nodes[node.0].sent
    }

    /// Every datagram sent since `capture_payloads` was turned on, in the order sent.
    pub fn captured(&self) -> &[Captured] {
        &self.captured
    }

    /// How many times the node was restarted.
    pub fn generation(&self, node: NodeId) -> u32 {
        self.nodes[node.0].generation
    }

    /// Replaces a node's configuration; it takes effect at the next (re)start.
    pub fn set_config(&mut self, node: NodeId, config: M::Config) {
        self.nodes[node.0].config = config;
    }

    /// Takes a node down: its state is gone and packets to it are dropped.
    pub fn stop(&mut self, node: NodeId) {
        self.nodes[node.0].machine = None;
        self.nodes[node.0].next_timeout = None;
    }

    /// Brings a node up with a fresh machine (same identity, same address).
    pub fn start(&mut self, node: NodeId) {
        let now = self.now;
        let wall = self.wall_epoch + now.saturating_duration_since(self.start);
        let n = &mut self.nodes[node.0];
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&(node.0 as u64).to_le_bytes());
        seed[16..20].copy_from_slice(&n.generation.to_le_bytes());
        let _entered = n.span.enter();
        let mut machine = M::build(n.identity.clone(), n.config.clone(), seed, now, wall)
            .expect("manager construction failed");
        if self.max_datagrams > 1 {
            machine.set_max_datagrams(self.max_datagrams);
        }
        n.machine = Some(machine);
        // Poll the fresh machine at the next step: one that acts at start (a dial of its peer
        // book, a channel's redial) must not sleep until something else touches it.
        n.next_timeout = Some(now);
    }

    /// Restarts a node: drops its state, rebuilds it from the same identity on the same address.
    pub fn restart(&mut self, node: NodeId) {
        self.stop(node);
        self.nodes[node.0].generation += 1;
        self.start(node);
    }

    /// Restarts a node on a new port; its old address goes dark.
    pub fn restart_on_new_port(&mut self, node: NodeId) -> SocketAddr {
        self.stop(node);
        let old = self.nodes[node.0].addr;
        self.by_addr.remove(&old);
        let mut addr = old;
        addr.set_port(old.port().wrapping_add(1000));
        while self.by_addr.contains_key(&addr) {
            addr.set_port(addr.port().wrapping_add(1));
        }
        self.nodes[node.0].addr = addr;
        self.by_addr.insert(addr, node);
        self.nodes[node.0].generation += 1;
        self.start(node);
        addr
    }

    /// Advances to the next thing that happens (a delivery or a timer) and processes
    /// everything due then. Returns `false` when nothing is left to happen.
    ///
    /// Panics if the loop spins: more than a bound of steps without the clock moving.
    pub fn step(&mut self) -> bool {
        self.flush();
        let Some(next) = self.next_event_time() else {
            return false;
        };
        self.advance_to(next);
        true
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        self.run_until_time(deadline);
    }

    /// Runs until `deadline`; the clock ends there.
    pub fn run_until_time(&mut self, deadline: Instant) {
        loop {
            self.flush();
            match self.next_event_time() {
                Some(next) if next <= deadline => self.advance_to(next),
                _ => break,
            }
        }
        self.now = self.now.max(deadline);
        self.steps_at_now = 0;
    }

    /// Runs until `done` holds or `limit` of virtual time has passed; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            self.flush();
            match self.next_event_time() {
                Some(next) if next <= deadline => self.advance_to(next),
                _ => {
                    self.now = self.now.max(deadline);
                    return done(self);
                }
            }
        }
    }

    fn next_event_time(&mut self) -> Option<Instant> {
        let delivery = self.queue.peek().map(|Reverse(p)| p.deliver_at);
        let timer = self.nodes.iter().filter_map(|n| n.next_timeout).min();
        match (delivery, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Steps taken so far: a bound on it proves an idle network does not spin.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn advance_to(&mut self, next: Instant) {
        self.steps += 1;
        if next <= self.now {
            self.steps_at_now += 1;
            assert!(
                self.steps_at_now < SPIN_LIMIT,
                "the loop spins: {SPIN_LIMIT} steps without the clock moving"
            );
        } else {
            self.now = next;
            self.steps_at_now = 0;
        }
        let now = self.now;
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(p)| p.deliver_at <= now)
        {
            let Some(Reverse(packet)) = self.queue.pop() else {
                break;
            };
            let Some(&to) = self.by_addr.get(&packet.to) else {
                self.bounce(packet);
                continue;
            };
            let node = &mut self.nodes[to.0];
            let Some(machine) = node.machine.as_mut() else {
                self.bounce(packet);
                continue;
            };
            let _entered = node.span.enter();
            match &packet.data {
                Some(data) => machine.handle_datagram(now, packet.from, Some(packet.to.ip()), data),
                None => machine.handle_unreachable(now, packet.from),
            }
            node.next_timeout = Some(now);
        }
        for node in &mut self.nodes {
            if node.next_timeout.is_some_and(|t| t <= now) {
                if let Some(machine) = node.machine.as_mut() {
                    let _entered = node.span.enter();
                    if machine.poll_timeout().is_some_and(|t| t <= now) {
                        machine.handle_timeout(now);
                    }
                }
            }
        }
        self.flush();
    }

    /// Collects what every touched node has to send and to say.
    fn flush(&mut self) {
        let now = self.now;
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            if node.next_timeout.is_none_or(|t| t > now) {
                continue;
            }
            let Some(machine) = node.machine.as_mut() else {
                continue;
            };
            let _entered = node.span.enter();
            let from = node.addr;
            let mut outgoing = Vec::new();
            while let Some(transmit) = machine.poll_transmit(now, &mut self.buf) {
                let data = self.buf.get(..transmit.size).unwrap_or(&self.buf);
                let segment = transmit.segment_size.unwrap_or(data.len()).max(1);
                for datagram in data.chunks(segment) {
                    outgoing.push((transmit.destination, transmit.conn, datagram.to_vec()));
                }
            }
            while let Some(event) = machine.poll_event() {
                node.events.push((now, event));
            }
            node.next_timeout = machine.poll_timeout();
            drop(_entered);
            for (to, conn, data) in outgoing {
                if self.record_sent {
                    self.nodes[index].sent.push(Sent {
                        at: now,
                        conn,
                        to,
                        size: data.len(),
                    });
                }
                if self.capture_payloads {
                    self.captured.push(Captured {
                        at: now,
                        node: NodeId(index),
                        conn,
                        from,
                        to,
                        data: data.clone(),
                    });
                }
                self.send(NodeId(index), from, to, data);
            }
        }
    }

    /// A datagram found no one at its address: maybe an ICMP error goes back.
    fn bounce(&mut self, packet: InFlight) {
        if !self.icmp_unreachable || packet.data.is_none() {
            return;
        }
        let Some(&sender) = self.by_addr.get(&packet.from) else {
            return;
        };
        let delay = self.link(sender, sender).latency;
        self.seq += 1;
        self.queue.push(Reverse(InFlight {
            deliver_at: self.now + delay,
            seq: self.seq,
            from: packet.to,
            to: packet.from,
            data: None,
        }));
    }

    fn send(&mut self, from_node: NodeId, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let link = match self.by_addr.get(&to) {
            Some(&to_node) => self.link(from_node, to_node),
            None => self.default_link,
        };
        if !link.up || self.rng.random_bool(link.loss.clamp(0.0, 1.0)) {
            return;
        }
        let copies = if self.rng.random_bool(link.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = link.latency;
            if !link.jitter.is_zero() {
                delay += link.jitter.mul_f64(self.rng.random::<f64>());
            }
            if self.rng.random_bool(link.reorder.clamp(0.0, 1.0)) {
                delay += link.latency.mul_f64(self.rng.random::<f64>());
            }
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                deliver_at: self.now + delay,
                seq: self.seq,
                from,
                to,
                data: Some(data.clone()),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `ops` fuzz target: a dial "from" a stopped node asked for its manager, which
    /// left a timer due at once on the node that no step could clear; the next run spun.
    #[test]
    fn asking_a_stopped_node_for_its_manager_does_not_stall_the_network() {
        let mut net = Network::new(1);
        net.add_node("a", Identity::from_ed25519_seed([1; 32]), Config::default());
        let b = net.add_node("b", Identity::from_ed25519_seed([2; 32]), Config::default());
        net.stop(b);
        assert!(net.manager(b).is_none());
        let before = net.steps();
        net.run_for(Duration::from_secs(1));
        assert!(
            net.steps() - before < 10,
            "an idle network took {} steps",
            net.steps() - before
        );
    }
}
