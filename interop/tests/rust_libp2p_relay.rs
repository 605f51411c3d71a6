//! rust-libp2p 0.57 relay clients through quicpeer's circuit relay v2 server
//! (`quicpeer::protocols::relay::Relay` on the mio driver), over QUIC on loopback: node A
//! reserves and listens on `<relay>/p2p-circuit`, node B dials A through the relay, both
//! ping and identify each other over the relayed connection (noise + yamux on the circuit).
//! A refusal reaches the client as its STATUS. Every wait is bounded.

use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, relay, yamux, Multiaddr, PeerId, Swarm, SwarmBuilder};
use quicpeer::protocols::relay::{RelayConfig, RelayEvent, Status};
use quicpeer_interop::libp2p_peer::keypair;
use quicpeer_interop::relay_node::RelayNode;

/// How long the relay's thread may take to report what a client has already seen.
const RELAY_EVENTS: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest any step may take, however loaded the machine.
const STEP: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Client {
    relay: relay::client::Behaviour,
    ping: ping::Behaviour,
    identify: identify::Behaviour,
}

fn client(seed: u8) -> Swarm<Client> {
    SwarmBuilder::with_existing_identity(keypair(seed))
        .with_tokio()
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .expect("relay client transport")
        .with_behaviour(|key, relay| Client {
            relay,
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/quicpeer-interop/1.0.0".into(),
                key.public(),
            )),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// What each client saw of the other over the relayed connection.
#[derive(Debug, Default)]
struct Seen {
    reserved: bool,
    circuit_listen_addr: bool,
    b_connected: bool,
    a_pinged_b: bool,
    b_pinged_a: bool,
    a_identified_b: bool,
    b_identified_a: bool,
}

impl Seen {
    fn all(&self) -> bool {
        self.b_connected
            && self.a_pinged_b
            && self.b_pinged_a
            && self.a_identified_b
            && self.b_identified_a
    }
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

#[test]
fn rust_libp2p_clients_reach_each_other_through_a_quicpeer_relay() {
    let relay = RelayNode::spawn(1, RelayConfig::default()).expect("relay");
    let relay_addr: Multiaddr = relay.addr().parse().expect("multiaddr");
    let mut a = client(2);
    let mut b = client(3);
    let (pa, pb): (PeerId, PeerId) = (*a.local_peer_id(), *b.local_peer_id());
    let mut seen = Seen::default();
    runtime().block_on(async {
        a.listen_on(relay_addr.clone().with(Protocol::P2pCircuit))
            .expect("listen on the circuit address");
        let done = tokio::time::timeout(STEP, async {
            let mut dialed = false;
            loop {
                tokio::select! {
                    event = a.select_next_some() => match event {
                        SwarmEvent::Behaviour(ClientEvent::Relay(
                            relay::client::Event::ReservationReqAccepted { .. },
                        )) => seen.reserved = true,
                        SwarmEvent::NewListenAddr { address, .. } if is_relayed(&address) => {
                            seen.circuit_listen_addr = true;
                        }
                        SwarmEvent::Behaviour(ClientEvent::Ping(ping::Event { peer, result: Ok(_), .. }))
                            if peer == pb => seen.a_pinged_b = true,
                        SwarmEvent::Behaviour(ClientEvent::Identify(identify::Event::Received { peer_id, .. }))
                            if peer_id == pb => seen.a_identified_b = true,
                        SwarmEvent::ListenerClosed { reason, .. } => panic!("A's listener closed: {reason:?}"),
                        _ => {}
                    },
                    event = b.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } if peer_id == pa => {
                            assert!(is_relayed(endpoint.get_remote_address()), "{endpoint:?}");
                            seen.b_connected = true;
                        }
                        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("B's dial failed: {error}"),
                        SwarmEvent::Behaviour(ClientEvent::Ping(ping::Event { peer, result: Ok(_), .. }))
                            if peer == pa => seen.b_pinged_a = true,
                        SwarmEvent::Behaviour(ClientEvent::Identify(identify::Event::Received { peer_id, .. }))
                            if peer_id == pa => seen.b_identified_a = true,
                        _ => {}
                    },
                }
                if seen.reserved && seen.circuit_listen_addr && !dialed {
                    dialed = true;
                    let through = relay_addr.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(pa));
                    b.dial(through).expect("dial through the relay");
                }
                if seen.all() {
                    return;
                }
            }
        })
        .await;
        assert!(done.is_ok(), "not everything happened within {STEP:?}: {seen:?}");
    });
    let events = relay.relay_events_until(RELAY_EVENTS, |e| {
        matches!(e, RelayEvent::CircuitOpened { .. })
    });
    assert!(
        events.iter().any(|e| matches!(e, RelayEvent::ReservationAccepted { peer, .. } if peer.to_string() == pa.to_string())),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RelayEvent::CircuitOpened { src, dst, .. }
            if src.to_string() == pb.to_string() && dst.to_string() == pa.to_string())),
        "{events:?}"
    );
}

#[test]
fn a_refused_reservation_reaches_the_rust_libp2p_client_as_its_status() {
    let mut config = RelayConfig::default();
    config.max_reservations = 0;
    let relay = RelayNode::spawn(1, config).expect("relay");
    let relay_addr: Multiaddr = relay.addr().parse().expect("multiaddr");
    let mut a = client(2);
    let reason = runtime().block_on(async {
        a.listen_on(relay_addr.clone().with(Protocol::P2pCircuit))
            .expect("listen on the circuit address");
        tokio::time::timeout(STEP, async {
            loop {
                if let SwarmEvent::ListenerClosed { reason, .. } = a.select_next_some().await {
                    return format!("{reason:?}");
                }
            }
        })
        .await
        .expect("the circuit listener closes")
    });
    assert!(reason.contains("ResourceLimitExceeded"), "{reason}");
    let events = relay.relay_events_until(RELAY_EVENTS, |e| {
        matches!(e, RelayEvent::ReservationRefused { .. })
    });
    assert!(
        events.iter().any(|e| matches!(
            e,
            RelayEvent::ReservationRefused {
                status: Status::ResourceLimitExceeded,
                ..
            }
        )),
        "{events:?}"
    );
}
