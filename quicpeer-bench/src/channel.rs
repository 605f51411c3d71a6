//! Peer channels over one link: messages per second with the memory store and with the redb
//! store (one flush per group commit), the latency from `accept` to delivery at the peer, and
//! (simulated) the time from a restart to the first resent message delivered.
//!
//! Throughput: two [`Channels`] joined by an instant in-memory link, on a virtual clock, so
//! what is measured is the CPU work of both ends (QUIC, TLS, framing, the store) and, with
//! redb, the flushes to disk: the wall-clock time to deliver N messages of B bytes. The sender
//! accepts up to a window of messages per turn of its loop, as an application fed by a queue
//! would. Latency is wall-clock from the `accept` call to the receiver's `Delivered` event,
//! per message, under that load. Restart: two nodes in the simulator, 5 ms one way; the
//! receiver (or the sender) is down while the sender accepts 10 messages, then comes back; the
//! sample is the simulated time from its start to the first of them delivered.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use quicpeer::protocols::channel::{
    ChannelConfig, ChannelEvent, Channels, MemoryStore, RedbStore, Store,
};
use quicpeer::protocols::HostConfig;
use quicpeer::sim::{Link, Network};
use quicpeer::{Config, Host, Identity, Manager, PeerId, SansIo};

use super::{percentile, BenchError, Cell, Report};

/// Messages the sender keeps accepted and unacknowledged at most.
const WINDOW: usize = 4096;
/// Loop turns after which a throughput run is stuck.
const MAX_TURNS: u64 = 50_000_000;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i], 4001))
}

fn channels<S: Store>(
    seed: u8,
    other: u8,
    store: S,
    now: Instant,
) -> Result<Channels<S>, BenchError> {
    let identity = Identity::from_ed25519_seed([seed; 32]);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let manager = Manager::new(now, wall, identity, Config::default(), [seed; 32])
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let host = Host::new(now, manager, HostConfig::default(), [seed; 32]);
    let peer = Identity::from_ed25519_seed([other; 32]).peer_id();
    let mut config = ChannelConfig::new("bench", vec![(peer, vec![addr(other)])]);
    config.max_outbox = WINDOW * 2;
    Channels::new(now, host, store, config).map_err(|e| BenchError::Setup(e.to_string()))
}

/// One throughput run's figures.
struct Throughput {
    elapsed: Duration,
    latencies: Vec<Duration>,
    commits: u64,
}

fn throughput<S: Store>(
    a_store: S,
    b_store: S,
    messages: u64,
    body: usize,
) -> Result<Throughput, BenchError> {
    let mut now = Instant::now();
    let mut a = channels(1, 2, a_store, now)?;
    let mut b = channels(2, 1, b_store, now)?;
    let peer_b: PeerId = Identity::from_ed25519_seed([2; 32]).peer_id();
    let body = Bytes::from(vec![b'x'; body]);
    let mut buf = Vec::new();
    let mut accepted_at: Vec<Instant> = Vec::with_capacity(messages as usize + 1);
    let mut latencies = Vec::with_capacity(messages as usize);
    // The first message, untimed, opens the connection and the stream.
    let mut sent = 0u64;
    let mut delivered = 0u64;
    let mut started: Option<Instant> = None;
    let mut turns = 0u64;
    while delivered < messages + 1 {
        turns += 1;
        if turns > MAX_TURNS {
            return Err(BenchError::Stuck("channel throughput"));
        }
        if sent == 0 || (delivered > 0 && sent <= messages) {
            if started.is_none() && delivered > 0 {
                started = Some(Instant::now());
            }
            while sent <= messages && a.outbox_len(&peer_b) < WINDOW {
                a.accept(body.clone())
                    .map_err(|_| BenchError::Stuck("accept refused"))?;
                accepted_at.push(Instant::now());
                sent += 1;
                if sent == 1 {
                    break;
                }
            }
        }
        let mut moved = false;
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            b.handle_datagram(now, addr(1), None, &buf[..t.size]);
            moved = true;
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            a.handle_datagram(now, addr(2), None, &buf[..t.size]);
            moved = true;
        }
        while a.poll_event().is_some() {}
        while let Some(event) = b.poll_event() {
            if let ChannelEvent::Delivered { entry, .. } = event {
                let at = Instant::now();
                if let Some(t0) = accepted_at.get(entry.seq as usize - 1) {
                    if entry.seq > 1 {
                        latencies.push(at.duration_since(*t0));
                    }
                }
                delivered += 1;
            }
        }
        if !moved {
            let next = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            if let Some(next) = next {
                now = now.max(next);
            }
            if a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
            }
            if b.poll_timeout().is_some_and(|t| t <= now) {
                b.handle_timeout(now);
            }
        }
    }
    let elapsed = started.map_or(Duration::ZERO, |s| s.elapsed());
    latencies.sort();
    Ok(Throughput {
        elapsed,
        latencies,
        commits: a.stats().commits + b.stats().commits,
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "quicpeer-bench-channel-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Simulated time from a node's start to the first resent message delivered; `sender`: the
/// sender was the one down.
fn restart_sample(seed: u64, sender: bool) -> Result<Duration, BenchError> {
    let mut net: Network<Channels<MemoryStore>> = Network::with_seed(seed);
    net.set_default_link(Link::with_latency(Duration::from_millis(5)));
    let ids = [1u8, 2];
    let peers: Vec<PeerId> = (ids.iter())
        .map(|s| Identity::from_ed25519_seed([*s; 32]).peer_id())
        .collect();
    let mut nodes = Vec::new();
    for (i, seed) in ids.iter().enumerate() {
        let other = 1 - i;
        let config = ChannelConfig::new("bench", vec![(peers[other], vec![addr(ids[other])])]);
        let node = net.add_node(
            &format!("n{i}"),
            Identity::from_ed25519_seed([*seed; 32]),
            (
                Config::default(),
                HostConfig::default(),
                config,
                MemoryStore::new(),
            ),
        );
        nodes.push(node);
    }
    let (a, b) = (nodes[0], nodes[1]);
    net.run_for(Duration::from_millis(200));
    let down = if sender { a } else { b };
    if sender {
        net.set_link(a, b, Link::down());
    } else {
        net.stop(b);
    }
    for i in 0..10u32 {
        let machine = net.machine(a).ok_or(BenchError::Stuck("sender gone"))?;
        machine
            .accept(Bytes::from(i.to_string()))
            .map_err(|_| BenchError::Stuck("accept refused"))?;
    }
    // Committed (and, with the receiver down, sent into the void).
    net.run_for(Duration::from_millis(50));
    if sender {
        net.stop(a);
        net.set_link(a, b, Link::with_latency(Duration::from_millis(5)));
    }
    net.run_for(Duration::from_millis(500));
    let _ = net.take_events(b);
    let start = net.now();
    net.start(down);
    let found = net.run_until(Duration::from_secs(30), |net| {
        (net.events(b).iter())
            .any(|(_, e)| matches!(e, ChannelEvent::Delivered { from: Some(_), .. }))
    });
    if !found {
        return Err(BenchError::Stuck("no resent message delivered"));
    }
    let at = (net.events(b).iter())
        .find(|(_, e)| matches!(e, ChannelEvent::Delivered { from: Some(_), .. }))
        .map(|(at, _)| *at)
        .ok_or(BenchError::Stuck("no delivery"))?;
    Ok(at.duration_since(start))
}

/// Runs the channel benchmark: `messages` messages of `body` bytes per store, `trials`
/// restarts per side.
pub fn run(messages: u64, body: usize, trials: u64) -> Result<Report, BenchError> {
    let mut report = Report::new(
        "channel",
        &[
            "case",
            "messages",
            "msgs/s",
            "commits",
            "p50 accept→delivery (ms)",
            "p99 accept→delivery (ms)",
        ],
    );
    let memory = throughput(MemoryStore::new(), MemoryStore::new(), messages, body)?;
    let (da, db) = (scratch("a"), scratch("b"));
    let open = |dir: &PathBuf| RedbStore::open(dir).map_err(|e| BenchError::Setup(e.to_string()));
    let durable = throughput(open(&da)?, open(&db)?, messages, body);
    let _ = std::fs::remove_dir_all(&da);
    let _ = std::fs::remove_dir_all(&db);
    let durable = durable?;
    for (label, run) in [
        ("memory store", memory),
        ("redb store (fsync per commit)", durable),
    ] {
        let rate = messages as f64 / run.elapsed.as_secs_f64().max(1e-9);
        report.rows.push(vec![
            Cell::text(label),
            Cell::num(messages as f64, 0),
            Cell::num(rate, 0),
            Cell::num(run.commits as f64, 0),
            percentile(&run.latencies, 50).map_or(Cell::Missing, Cell::millis),
            percentile(&run.latencies, 99).map_or(Cell::Missing, Cell::millis),
        ]);
    }
    for (label, sender) in [
        (
            "restart: receiver back → first resent delivered (sim)",
            false,
        ),
        ("restart: sender back → first resent delivered (sim)", true),
    ] {
        let mut samples = Vec::new();
        for trial in 0..trials {
            samples.push(restart_sample(trial + 1, sender)?);
        }
        samples.sort();
        report.rows.push(vec![
            Cell::text(label),
            Cell::num(trials as f64, 0),
            Cell::Missing,
            Cell::Missing,
            percentile(&samples, 50).map_or(Cell::Missing, Cell::millis),
            percentile(&samples, 99).map_or(Cell::Missing, Cell::millis),
        ]);
    }
    report.notes.push(format!(
        "one link, {body}-byte bodies, an instant in-memory link on a virtual clock: CPU of both ends plus, with redb, its flushes; at most {WINDOW} messages unacknowledged"
    ));
    report.notes.push(
        "restart rows: simulated ms (5 ms one way) from the node's start to the first of 10 messages accepted while it was down delivered; messages column = trials".into(),
    );
    Ok(report)
}
