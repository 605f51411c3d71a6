//! The channel checker, in the deterministic simulation: a federation of servers on a lossy,
//! reordering, duplicating network, restarted at random (state dropped, identity and store
//! kept), thousands of messages accepted at random servers. At the end every accepted message
//! is in every server's log exactly once, in per-origin order, with the body its origin
//! accepted.
//!
//! A failing seed replays: `CHANNEL_SEED=<n> cargo test -p quicpeer --test channel_checker`.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use quicpeer::protocols::channel::{ChannelConfig, ChannelEvent, Channels, MemoryStore};
use quicpeer::protocols::HostConfig;
use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{Config, PeerId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::*;

type Net = Network<Channels<MemoryStore>>;

/// Crashes per run, at least.
const CRASHES: usize = 40;

#[derive(Debug, Clone, Copy)]
enum Topology {
    /// Every server linked to every other; no forwarding.
    Mesh,
    /// Server 0 linked to all, the others only to it; forwarding.
    Star,
    /// Each server linked to its two neighbours on a ring; forwarding (two paths to each).
    Ring,
}

/// The address the simulator gives the `i`th node.
fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + i as u8)), 4001)
}

fn linked(topology: Topology, n: usize, i: usize, j: usize) -> bool {
    i != j
        && match topology {
            Topology::Mesh => true,
            Topology::Star => i == 0 || j == 0,
            Topology::Ring => (i + 1) % n == j || (j + 1) % n == i,
        }
}

struct Run {
    net: Net,
    nodes: Vec<NodeId>,
    stores: Vec<MemoryStore>,
    peers: Vec<PeerId>,
}

fn build(seed: u64, topology: Topology, n: usize) -> Run {
    init_tracing();
    let mut net = Net::with_seed(seed);
    let mut link = Link::with_latency(Duration::from_millis(5));
    link.jitter = Duration::from_millis(2);
    link.loss = 0.02;
    link.duplicate = 0.02;
    link.reorder = 0.05;
    net.set_default_link(link);
    let peers: Vec<PeerId> = (0..n).map(|i| identity(i as u8 + 1).peer_id()).collect();
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    for i in 0..n {
        let links = (0..n)
            .filter(|&j| linked(topology, n, i, j))
            .map(|j| (peers[j], vec![sim_addr(j)]))
            .collect();
        let mut channels = ChannelConfig::new("federation", links);
        channels.forward = !matches!(topology, Topology::Mesh);
        channels.redial_interval = Duration::from_millis(200);
        channels.retry_delay = Duration::from_millis(100);
        let mut config = Config::default();
        config.keep_alive = Some(Duration::from_millis(500));
        config.idle_timeout = Duration::from_secs(3);
        let store = MemoryStore::new();
        let node = net.add_node(
            &format!("s{i}"),
            identity(i as u8 + 1),
            (config, HostConfig::default(), channels, store.clone()),
        );
        assert_eq!(net.addr(node), sim_addr(i));
        nodes.push(node);
        stores.push(store);
    }
    Run {
        net,
        nodes,
        stores,
        peers,
    }
}

/// Collects `Accepted` events into `accepted` (origin -> seqs).
fn collect(run: &mut Run, accepted: &mut BTreeMap<PeerId, Vec<u64>>) {
    for (i, &node) in run.nodes.iter().enumerate() {
        for (_, event) in run.net.take_events(node) {
            if let ChannelEvent::Accepted { seq } = event {
                accepted.entry(run.peers[i]).or_default().push(seq);
            }
        }
    }
}

/// Every accepted message in every log once, in per-origin order, with its origin's body.
/// Returns the first violation.
fn check(run: &Run, accepted: &BTreeMap<PeerId, Vec<u64>>) -> Result<usize, String> {
    // The bodies as each origin logged them.
    let mut bodies: BTreeMap<(PeerId, u64), Bytes> = BTreeMap::new();
    for (i, store) in run.stores.iter().enumerate() {
        for entry in store.log() {
            if entry.origin == run.peers[i] {
                bodies.insert((entry.origin, entry.seq), entry.body.clone());
            }
        }
    }
    let mut total = 0;
    for (origin, seqs) in accepted {
        for (k, seq) in seqs.iter().enumerate() {
            if *seq != k as u64 + 1 {
                return Err(format!("{origin} accepted seq {seq} as its {}th", k + 1));
            }
        }
        total += seqs.len();
    }
    for (i, store) in run.stores.iter().enumerate() {
        let mut next: BTreeMap<PeerId, u64> = BTreeMap::new();
        for entry in store.log() {
            let expected = next.entry(entry.origin).or_insert(1);
            if entry.seq != *expected {
                return Err(format!(
                    "s{i}: {} seq {} where {} was next (duplicate or out of order)",
                    entry.origin, entry.seq, expected
                ));
            }
            *expected += 1;
            if bodies.get(&(entry.origin, entry.seq)) != Some(&entry.body) {
                return Err(format!(
                    "s{i}: body of {} #{} differs",
                    entry.origin, entry.seq
                ));
            }
        }
        for (origin, seqs) in accepted {
            let have = next.get(origin).map_or(0, |n| n - 1);
            if have < seqs.len() as u64 {
                return Err(format!(
                    "s{i}: has {have} of {origin}'s {} accepted messages",
                    seqs.len()
                ));
            }
        }
    }
    Ok(total)
}

/// Runs the chaos phase, then heals the network and waits for every log to be complete.
fn chaos(seed: u64, topology: Topology, n: usize, messages: usize) -> usize {
    let mut run = build(seed, topology, n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut accepted: BTreeMap<PeerId, Vec<u64>> = BTreeMap::new();
    let mut down: Vec<(NodeId, std::time::Instant)> = Vec::new();
    let mut offered = 0;
    let mut restarts = 0;
    run.net.run_for(Duration::from_millis(300));
    while offered < messages || restarts < CRASHES {
        // A burst of messages at random live servers.
        for _ in 0..rng.random_range(1..12) {
            let i = rng.random_range(0..n);
            let now = run.net.now();
            if let Some(machine) = run.net.machine(run.nodes[i]) {
                let body = format!("s{i} says {offered} at {now:?}");
                if machine.accept(Bytes::from(body)).is_ok() {
                    offered += 1;
                }
            }
        }
        // Sometimes a crash: at once back (a restart), or down for a while.
        if rng.random_bool(0.06) {
            let node = run.nodes[rng.random_range(0..n)];
            if run.net.machine(node).is_some() {
                restarts += 1;
                if rng.random_bool(0.5) {
                    run.net.restart(node);
                } else {
                    run.net.stop(node);
                    let back = run.net.now() + Duration::from_millis(rng.random_range(50..1500));
                    down.push((node, back));
                }
            }
        }
        let now = run.net.now();
        down.retain(|(node, back)| {
            if *back <= now {
                run.net.start(*node);
                false
            } else {
                true
            }
        });
        run.net
            .run_for(Duration::from_millis(rng.random_range(1..60)));
        collect(&mut run, &mut accepted);
    }
    for (node, _) in down.drain(..) {
        run.net.start(node);
    }
    // Heal, and let the federation catch up.
    run.net
        .set_default_link(Link::with_latency(Duration::from_millis(5)));
    let mut result = Err(String::from("not checked"));
    for _ in 0..120 {
        run.net.run_for(Duration::from_millis(500));
        collect(&mut run, &mut accepted);
        result = check(&run, &accepted);
        if result.is_ok() {
            break;
        }
    }
    let total = result.unwrap_or_else(|e| panic!("seed {seed} {topology:?}: {e}"));
    assert!(restarts >= CRASHES, "seed {seed}: only {restarts} crashes");
    assert!(
        total * 10 >= messages * 8,
        "seed {seed}: only {total} of {messages} offered were accepted"
    );
    eprintln!(
        "seed {seed} {topology:?} x{n}: {total} messages accepted, {restarts} crashes, all logs complete at {:?}",
        run.net.elapsed()
    );
    total
}

fn seed() -> u64 {
    std::env::var("CHANNEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

#[test]
fn mesh_of_four_loses_and_doubles_nothing_across_crashes() {
    chaos(seed(), Topology::Mesh, 4, 2000);
}

#[test]
fn star_of_five_forwards_everything_exactly_once_across_crashes() {
    chaos(seed() + 100, Topology::Star, 5, 2000);
}

#[test]
fn ring_of_four_delivers_over_two_paths_exactly_once() {
    chaos(seed() + 200, Topology::Ring, 4, 1500);
}

#[test]
fn a_hub_with_a_full_outbox_pauses_its_inbound_link_and_resumes_without_loss() {
    init_tracing();
    let mut net = Net::with_seed(7);
    let peers: Vec<PeerId> = (0..3).map(|i| identity(i as u8 + 1).peer_id()).collect();
    let stores: Vec<MemoryStore> = (0..3).map(|_| MemoryStore::new()).collect();
    let mut nodes = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let links = (0..3)
            .filter(|&j| linked(Topology::Star, 3, i, j))
            .map(|j| (peers[j], vec![sim_addr(j)]))
            .collect();
        let mut channels = ChannelConfig::new("federation", links);
        channels.redial_interval = Duration::from_millis(200);
        if i == 0 {
            // The hub holds at most 4 messages for a leaf that is away.
            channels.max_outbox = 2;
        }
        let config = (
            Config::default(),
            HostConfig::default(),
            channels,
            store.clone(),
        );
        nodes.push(net.add_node(&format!("s{i}"), identity(i as u8 + 1), config));
    }
    net.stop(nodes[2]);
    for k in 0..20u32 {
        let leaf = net.machine(nodes[1]).expect("leaf up");
        leaf.accept(Bytes::from(k.to_string())).expect("accepted");
    }
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        stores[0].log().len(),
        4,
        "the hub took what it could forward"
    );
    net.start(nodes[2]);
    let done = net.run_until(Duration::from_secs(30), |_| {
        stores.iter().all(|s| s.log().len() == 20)
    });
    assert!(
        done,
        "logs: {:?}",
        stores.iter().map(|s| s.log().len()).collect::<Vec<_>>()
    );
    for store in &stores {
        let seqs: Vec<u64> = store.log().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    }
}
