//! The sharded driver on real loopback UDP: several shards on one port take clients from many
//! source ports; a datagram of one shard's connection that reaches another shard (its sender's
//! address changed) is handed over, not answered with a stateless reset.
#![cfg(all(feature = "mio", unix))]
//!
//! Which socket of a `SO_REUSEPORT` group the kernel picks is a hash nobody controls, so the
//! hand-over test does not rely on it: its two shards are bound to two ports, and a small UDP
//! relay in front of the hub sends the client's datagrams to shard 0, then, as an address
//! change would, to shard 1. Every wait has a deadline.

#[path = "support/loopback.rs"]
mod loopback;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use loopback::{config, identity, init_tracing, Echo, Node, Report};
use quicpeer::driver::{Context, Driver, DriverStats, Sharded, ShardedThreads};
use quicpeer::{Cause, Config, Event, Manager};

const WAIT: Duration = Duration::from_secs(5);

fn v4_any() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn hub_config() -> Config {
    config(Some(Duration::from_secs(5)), Duration::from_secs(10))
}

/// The managers of a hub of `shards` shards (identity 1), shard `i` at `i`.
fn hub_managers(shards: u8, sharded: bool) -> Vec<Manager> {
    (0..shards)
        .map(|i| {
            let config = if sharded {
                hub_config().for_shard(i, shards)
            } else {
                hub_config()
            };
            Manager::new(
                Instant::now(),
                SystemTime::now(),
                identity(1),
                config,
                rand::random(),
            )
            .expect("hub manager")
        })
        .collect()
}

/// The hub's events: (shard, event).
type HubEvents = Receiver<(usize, Event)>;

/// Runs the shards, each echoing what its peers send, reporting its events.
fn spawn_hub(sharded: Sharded<Manager>) -> (ShardedThreads<Manager>, HubEvents) {
    let (tx, rx) = mpsc::channel();
    let threads = sharded
        .spawn(|shard| {
            let tx = tx.clone();
            let (report_tx, reports) = mpsc::channel();
            let mut echo = Echo::default();
            move |cx: &mut Context<'_, Manager>, event| {
                echo.on_event(cx, event, &report_tx);
                while let Ok((_, report)) = reports.try_recv() {
                    if let Report::Event(event) = report {
                        let _ = tx.send((shard, event));
                    }
                }
            }
        })
        .expect("spawn the shards");
    (threads, rx)
}

/// Stops the shards; each one's counters and its count of stateless resets sent.
fn stop_hub(threads: ShardedThreads<Manager>) -> Vec<(DriverStats, u64)> {
    threads
        .stop()
        .into_iter()
        .map(|stopped| {
            let (driver, run) = stopped.expect("a shard panicked");
            run.expect("a shard's run failed");
            let resets = driver.machine().metrics().stateless_resets_sent;
            (driver.stats(), resets)
        })
        .collect()
}

#[test]
fn clients_from_many_source_ports_connect_to_two_shards_on_one_port_and_ping() {
    init_tracing();
    let sharded = Sharded::bind(hub_managers(2, true), v4_any()).expect("bind the shards");
    let hub_addr = sharded.local_addr().expect("bound");
    let (hub, hub_events) = spawn_hub(sharded);
    let hub_peer = identity(1).peer_id();

    // The kernel spreads 4-tuples over the two sockets by a hash: with 24 clients, every one
    // on one shard has a chance of 2^-23.
    let clients: Vec<Node> = (0..24)
        .map(|i| Node::spawn(identity(10 + i), hub_config(), &[v4_any()]).expect("client"))
        .collect();
    for client in &clients {
        client.dial(hub_peer, vec![hub_addr]);
    }
    for mut client in clients {
        let (_, conn, _) = client
            .wait_connected(0, hub_peer, WAIT)
            .expect("client connected");
        client.ping(conn, WAIT).expect("ping through its shard");
        assert!(
            !client.log.iter().any(|(_, r)| matches!(
                r,
                Report::Event(Event::ConnectionLost { .. } | Event::DialFailed { .. })
            )),
            "a client lost its connection: {:?}",
            client.log
        );
    }

    let mut connected = [0usize; 2];
    let deadline = Instant::now() + WAIT;
    while connected.iter().sum::<usize>() < 24 {
        let left = deadline.saturating_duration_since(Instant::now());
        match hub_events.recv_timeout(left) {
            Ok((shard, Event::Connected { .. })) => connected[shard] += 1,
            Ok(_) => {}
            Err(_) => panic!("the hub saw {connected:?} connections of 24"),
        }
    }
    let shards = stop_hub(hub);
    assert!(
        connected.iter().all(|&n| n > 0),
        "every client on one shard: {connected:?}"
    );
    for (i, (stats, resets)) in shards.iter().enumerate() {
        assert!(stats.datagrams_received > 0, "shard {i}: {stats:?}");
        assert_eq!(*resets, 0, "shard {i} sent stateless resets");
    }
}

/// A UDP relay in front of two hub sockets: the client's datagrams go to `hubs[0]` until
/// `switched`, then to `hubs[1]` (as if the client's address had changed and the kernel hashed
/// it to the other socket); whatever a hub socket sends goes back to the client.
struct Relay {
    addr: SocketAddr,
    switched: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(hubs: [SocketAddr; 2]) -> Relay {
        let socket = UdpSocket::bind(v4_any()).expect("relay socket");
        // Only to look at `stop` now and then; nothing waits on it for correctness.
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("relay address");
        let switched = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (switched, stop) = (switched.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let mut client = None;
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let to = if hubs.contains(&from) {
                        match client {
                            Some(client) => client,
                            None => continue,
                        }
                    } else {
                        client = Some(from);
                        hubs[usize::from(switched.load(Ordering::Relaxed))]
                    };
                    let _ = socket.send_to(&buf[..len], to);
                }
            })
        };
        Relay {
            addr,
            switched,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Two hub sockets on two ports, the relay in front, a client connected through the relay to
/// shard 0 and one ping answered; then the relay switches to shard 1.
fn connect_then_switch(
    hub_sockets: [SocketAddr; 2],
) -> (Relay, Node, quicpeer::ConnId, quicpeer::PeerId) {
    let relay = Relay::start(hub_sockets);
    let hub_peer = identity(1).peer_id();
    let mut client = Node::spawn(identity(2), hub_config(), &[v4_any()]).expect("client");
    client.dial(hub_peer, vec![relay.addr]);
    let (_, conn, _) = client
        .wait_connected(0, hub_peer, WAIT)
        .expect("connected through the relay");
    client.ping(conn, WAIT).expect("ping through shard 0");
    relay.switched.store(true, Ordering::Relaxed);
    (relay, client, conn, hub_peer)
}

fn bind_two() -> Vec<(SocketAddr, std::net::UdpSocket)> {
    (0..2)
        .map(|_| {
            let socket = quicpeer::driver::bind(v4_any()).expect("hub socket");
            (v4_any(), socket)
        })
        .collect()
}

#[test]
fn a_datagram_for_another_shards_connection_is_handed_over_not_reset() {
    init_tracing();
    let sockets = bind_two();
    let addrs = [0, 1].map(|i| sockets[i].1.local_addr().expect("bound"));
    let sharded = Sharded::from_sockets(hub_managers(2, true), sockets).expect("shards");
    let (hub, _events) = spawn_hub(sharded);
    let (relay, mut client, conn, _) = connect_then_switch(addrs);

    // Every datagram of the connection now reaches shard 1, which does not hold it.
    for _ in 0..3 {
        client
            .ping(conn, WAIT)
            .expect("ping after the switch: shard 1 hands the datagrams to shard 0");
    }
    drop(relay);
    let lost = client.log.iter().find_map(|(_, r)| match r {
        Report::Event(Event::ConnectionLost { cause, .. }) => Some(cause.clone()),
        _ => None,
    });
    assert_eq!(lost, None, "the connection was lost");
    let shards = stop_hub(hub);
    let ((owner, owner_resets), (other, other_resets)) = (shards[0], shards[1]);
    assert!(
        other.forwarded_out > 0,
        "shard 1 handed nothing over: {other:?}"
    );
    assert_eq!(other.forward_dropped, 0);
    assert_eq!(owner.forwarded_in, other.forwarded_out);
    assert_eq!(
        (owner_resets, other_resets),
        (0, 0),
        "stateless resets sent"
    );
}

/// The control: two managers of one identity on two sockets, but without shard IDs, as a
/// naive `SO_REUSEPORT` setup would run them. The switch kills the connection with a reset:
/// what the hand-over prevents.
#[test]
fn without_shard_ids_the_other_socket_resets_the_connection() {
    init_tracing();
    let sockets = bind_two();
    let addrs = [0, 1].map(|i| sockets[i].1.local_addr().expect("bound"));
    let threads: Vec<_> = hub_managers(2, false)
        .into_iter()
        .zip(sockets)
        .map(|(manager, socket)| {
            let driver = Driver::from_sockets(manager, vec![socket]).expect("driver");
            let mut echo = Echo::default();
            let (tx, _rx) = mpsc::channel();
            driver
                .spawn(move |cx, event| echo.on_event(cx, event, &tx))
                .expect("spawn")
        })
        .collect();
    let (_relay, mut client, conn, hub_peer) = connect_then_switch(addrs);

    let _ = client.ping(conn, Duration::from_millis(500));
    let (_, cause) = client
        .wait_event(0, WAIT, |e| match e {
            Event::ConnectionLost { conn: c, cause, .. } if *c == conn => Some(cause.clone()),
            _ => None,
        })
        .expect("the connection is lost");
    assert_eq!(cause, Cause::PeerRestarted);
    drop(threads);
    let _ = hub_peer;
}
