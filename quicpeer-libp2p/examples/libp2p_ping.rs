//! rust-libp2p's ping example with quicpeer as its QUIC transport: the one-line switch.
//!
//! ```text
//! cargo run -p quicpeer-libp2p --example libp2p_ping                       # listens, prints its address
//! cargo run -p quicpeer-libp2p --example libp2p_ping -- /ip4/127.0.0.1/udp/<port>/quic-v1/p2p/<id>
//! ```
//!
//! Either side may be a stock rust-libp2p node (`.with_quic()`); they speak the same protocol.
//! Stop the listener and start it again with the same key (`SEED=<n>`, default 1) on the same
//! port (`PORT=<n>`) while the dialer runs: the dialer's reconnect behaviour has a fresh
//! connection within moments.

use std::error::Error;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identity, ping, Multiaddr, SwarmBuilder};
use quicpeer_libp2p::reconnect;

#[derive(NetworkBehaviour)]
struct Behaviour {
    ping: ping::Behaviour,
    reconnect: reconnect::Behaviour,
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let seed: u8 = env_number("SEED").unwrap_or(1);
    let port: u16 = env_number("PORT").unwrap_or(0);
    let keypair = identity::Keypair::ed25519_from_bytes([seed; 32])?;
    let reconnect = reconnect::Behaviour::new();
    let signals = reconnect.signals();

    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        // The one-line switch; stock rust-libp2p has `.with_quic()` here.
        .with_other_transport(|k| {
            quicpeer_libp2p::Transport::new(quicpeer_libp2p::Config::new(k).with_signals(signals))
        })?
        .with_behaviour(|_| Behaviour {
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(1))),
            reconnect,
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();

    swarm.listen_on(format!("/ip4/0.0.0.0/udp/{port}/quic-v1").parse()?)?;
    if let Some(addr) = std::env::args().nth(1) {
        let addr: Multiaddr = addr.parse()?;
        swarm.dial(addr)?;
    }
    println!("peer id {}", swarm.local_peer_id());
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => println!("listening on {address}"),
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                println!(
                    "connected to {peer_id} at {}",
                    endpoint.get_remote_address()
                )
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                let why = cause
                    .as_ref()
                    .and_then(|e| quicpeer_libp2p::cause_of(e))
                    .map(|c| c.to_string());
                println!("connection to {peer_id} closed: {why:?}");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result, .. })) => {
                match result {
                    Ok(rtt) => println!("ping {peer}: {rtt:?}"),
                    Err(e) => println!("ping {peer} failed: {e}"),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Reconnect(event)) => println!("{event:?}"),
            _ => {}
        }
    }
}
