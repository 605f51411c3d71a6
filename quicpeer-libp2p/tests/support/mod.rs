//! Swarms for the tests: ping + identify (+ the reconnect behaviour), on quicpeer-libp2p or on
//! stock libp2p-quic, on real loopback sockets.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, ping, Multiaddr, Swarm, SwarmBuilder};
use quicpeer_libp2p::reconnect;

/// A deadline no healthy run comes near.
pub const WAIT: Duration = Duration::from_secs(30);

/// Pings go out this often, so that a connection's silence or reset shows soon.
pub const PING_INTERVAL: Duration = Duration::from_millis(100);

pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing after {WAIT:?}"),
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The Ed25519 keypair whose secret is `seed` repeated 32 times.
pub fn keypair(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

#[derive(NetworkBehaviour)]
pub struct Node {
    pub ping: ping::Behaviour,
    pub identify: identify::Behaviour,
    pub reconnect: Toggle<reconnect::Behaviour>,
}

fn node(key: &Keypair, reconnect: Option<reconnect::Behaviour>) -> Node {
    Node {
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(PING_INTERVAL)
                .with_timeout(Duration::from_secs(20)),
        ),
        identify: identify::Behaviour::new(identify::Config::new(
            "/quicpeer-libp2p-test/1".into(),
            key.public(),
        )),
        reconnect: reconnect.into(),
    }
}

/// A Swarm on quicpeer-libp2p: the one-line switch, with the reconnect behaviour if asked.
pub fn quicpeer_swarm(key: Keypair, with_reconnect: bool) -> Swarm<Node> {
    let reconnect = with_reconnect.then(reconnect::Behaviour::new);
    let signals = reconnect.as_ref().map(|r| r.signals());
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|k| {
            let config = quicpeer_libp2p::Config::new(k);
            quicpeer_libp2p::Transport::new(match signals {
                Some(s) => config.with_signals(s),
                None => config,
            })
        })
        .unwrap()
        .with_behaviour(|k| node(k, reconnect))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// A stock Swarm: libp2p-quic.
pub fn stock_swarm(key: Keypair) -> Swarm<Node> {
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_behaviour(|k| node(k, None))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Listens on `addr` and returns the first address reported.
pub async fn listen(swarm: &mut Swarm<Node>, addr: &str) -> Multiaddr {
    swarm.listen_on(addr.parse().unwrap()).unwrap();
    within("listen address", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } =
                futures::StreamExt::select_next_some(swarm).await
            {
                return address;
            }
        }
    })
    .await
}

/// The UDP port of a QUIC multiaddr.
pub fn udp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Udp(port) => Some(port),
            _ => None,
        })
        .expect("a udp address")
}

/// Drives a Swarm in a task of its own until aborted; aborting drops it with everything it
/// holds, sending nothing (a crash, as far as its peers can tell).
pub fn run(mut swarm: Swarm<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = futures::StreamExt::select_next_some(&mut swarm).await;
        }
    })
}

/// A node on a runtime of its own, so that it can crash: shutting the runtime down drops every
/// task of the node (its Swarm, its connections, its socket drivers) without polling any of them
/// again, so nothing is sent, not even a close.
pub struct Crashable {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Crashable {
    /// Starts the Swarm `make` builds on a fresh one-thread runtime, listening on `addr`
    /// (retried while the port is still held by a node that just crashed); returns the
    /// address it listens on.
    pub async fn start(
        make: impl FnOnce() -> Swarm<Node> + Send + 'static,
        addr: String,
    ) -> (Self, Multiaddr) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let mut swarm = make();
            let mut tries = 0;
            while let Err(e) = swarm.listen_on(addr.parse().unwrap()) {
                tries += 1;
                assert!(tries < 100, "listen on {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } =
                    futures::StreamExt::select_next_some(&mut swarm).await
                {
                    let _ = tx.send(address);
                    break;
                }
            }
            loop {
                let _ = futures::StreamExt::select_next_some(&mut swarm).await;
            }
        });
        let addr = within("the node's listen address", rx).await.unwrap();
        (
            Crashable {
                runtime: Some(runtime),
            },
            addr,
        )
    }

    /// Crashes the node.
    pub fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Crashable {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
