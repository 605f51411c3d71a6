//! Circuit relay v2 and the direct connection upgrade (DCUtR) with quicpeer-libp2p, on real
//! loopback sockets: a stock rust-libp2p relay server (libp2p-quic, `relay::Behaviour`) and two
//! clients whose QUIC transport is quicpeer-libp2p, combined with the relay client transport
//! (Noise and yamux on the circuit), running `relay::client`, `dcutr`, ping and identify.
//!
//! Client A listens on the relay (a reservation), client B dials A through it; DCUtR then
//! tries a direct connection at the addresses the relay observed (identify). The seed case
//! "keep the relayed connection when the upgrade fails":
//! - where the observed addresses are true (loopback), the upgrade succeeds: DCUtR reports the
//!   direct connection on both sides and pings flow on it;
//! - where the relay observes both clients at another IP (`127.0.0.2`, the public side of a
//!   NAT in this model) on whose ports every datagram is swallowed (a NAT that filters what
//!   does not come from the relay), the direct dials reach those addresses and time out,
//!   DCUtR gives up after its three attempts, and the relayed connection stays: pings keep
//!   flowing over it on both sides, and no direct connection appears. (Binding `127.0.0.2`
//!   needs Linux, where the whole of `127.0.0.0/8` is the loopback.)
//!
//! DCUtR in rust-libp2p 0.57 dials both ways with `PortUse::Reuse` (the hole-punch role
//! `Endpoint::Listener` dials as a dialer does, from the listening socket), so a simultaneous
//! open of two QUIC connections, not the random-datagram hole punch, is what these tests run.
//! Every wait is for swarm events, with a generous deadline; nothing asserts how fast.

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::Transport;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{dcutr, identify, noise, ping, relay, yamux, Multiaddr, PeerId, Swarm, SwarmBuilder};
use support::{init_logs, keypair, udp_port, within};
use tokio::task::JoinHandle;

/// Pings go out this often on every connection, relayed or direct.
const PING_INTERVAL: Duration = Duration::from_millis(200);

/// The clients' QUIC handshake timeout: a direct dial to the black hole fails after this long
/// (three times, DCUtR's attempts). Loopback handshakes take milliseconds.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Pings that must succeed on the relayed connection after DCUtR gave up.
const PINGS_AFTER_FAILURE: usize = 3;

#[derive(NetworkBehaviour)]
struct RelayServer {
    relay: relay::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

#[derive(NetworkBehaviour)]
struct Client {
    relay: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn identify(key: &libp2p::identity::Keypair) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new(
        "/quicpeer-libp2p-test/1".into(),
        key.public(),
    ))
}

fn ping() -> ping::Behaviour {
    ping::Behaviour::new(
        ping::Config::new()
            .with_interval(PING_INTERVAL)
            .with_timeout(Duration::from_secs(20)),
    )
}

/// A transport that reports every inbound connection as coming from the IP `seen_from` (same
/// port) when set: the relay's view of its clients behind a NAT. Identify tells each client
/// this address as its observed one, and DCUtR offers it to the other client. (The IP, not the
/// port: identify replaces an observed port that is none of the listen ports with a listen
/// port, assuming a port-preserving NAT.)
struct SeenFrom<T> {
    inner: T,
    seen_from: Option<IpAddr>,
}

/// `addr` with its IP replaced by `ip`.
fn with_ip(addr: Multiaddr, ip: IpAddr) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            Protocol::Ip4(_) | Protocol::Ip6(_) => ip.into(),
            p => p,
        })
        .collect()
}

impl<T: Transport + Unpin> Transport for SeenFrom<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner).poll(cx).map(|event| match event {
            TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr,
                send_back_addr,
            } => TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr,
                send_back_addr: match this.seen_from {
                    Some(ip) => with_ip(send_back_addr, ip),
                    None => send_back_addr,
                },
            },
            other => other,
        })
    }
}

/// The stock relay server (libp2p-quic), listening on the loopback; returns its address with
/// `/p2p/`. Its reservations carry its listen address (a confirmed external address: the
/// client refuses a reservation without addresses).
async fn relay_server(seen_from: Option<IpAddr>) -> Multiaddr {
    let key = keypair(40);
    let id = key.public().to_peer_id();
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|k| SeenFrom {
            inner: libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(k)),
            seen_from,
        })
        .unwrap()
        .with_behaviour(|k| RelayServer {
            relay: relay::Behaviour::new(k.public().to_peer_id(), relay::Config::default()),
            identify: identify(k),
            ping: ping(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let addr = within("the relay's listen address", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await;
    swarm.add_external_address(addr.clone());
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    addr.with(Protocol::P2p(id))
}

/// A client on quicpeer-libp2p: the one-line switch, then the relay client transport.
fn client(seed: u8) -> Swarm<Client> {
    SwarmBuilder::with_existing_identity(keypair(seed))
        .with_tokio()
        .with_other_transport(|k| {
            let mut config = quicpeer_libp2p::Config::new(k);
            config.quic.handshake_timeout = HANDSHAKE_TIMEOUT;
            quicpeer_libp2p::Transport::new(config)
        })
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|k, relay| Client {
            relay,
            dcutr: dcutr::Behaviour::new(k.public().to_peer_id()),
            identify: identify(k),
            ping: ping(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Listens on the loopback (quicpeer-libp2p); returns the address.
async fn listen(swarm: &mut Swarm<Client>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    within("a listen address", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
}

/// Dials the relay (from the listening socket) and waits for identify's observation of us:
/// the address candidate DCUtR will offer.
async fn join_relay(swarm: &mut Swarm<Client>, relay: &Multiaddr) {
    swarm.dial(relay.clone()).unwrap();
    within("the relay's observation of us", async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewExternalAddrCandidate { .. } => return,
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("dialing the relay: {error}")
                }
                _ => {}
            }
        }
    })
    .await;
}

/// A and B, each joined to the relay; A holds a reservation and listens through the relay.
struct Pair {
    a: Swarm<Client>,
    b: Swarm<Client>,
    a_id: PeerId,
    b_id: PeerId,
    a_listen: Multiaddr,
    b_listen: Multiaddr,
    relay: Multiaddr,
}

/// Datagrams a black hole swallowed: who sent them, to which hole.
type Swallowed = Arc<Mutex<HashSet<(SocketAddr, SocketAddr)>>>;

/// Sockets at `ip` on the ports of `listens` that read and drop every datagram, noting it.
async fn black_holes(ip: IpAddr, listens: &[&Multiaddr]) -> (Swallowed, Vec<JoinHandle<()>>) {
    let swallowed = Swallowed::default();
    let mut tasks = Vec::new();
    for listen in listens {
        let hole = SocketAddr::new(ip, udp_port(listen));
        let socket = tokio::net::UdpSocket::bind(hole).await.unwrap();
        let noted = swallowed.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0; 2048];
            while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                noted.lock().unwrap().insert((from, hole));
            }
        }));
    }
    (swallowed, tasks)
}

/// Makes the pair; with `nat`, black holes at that IP on the clients' ports first.
async fn pair(
    relay: Multiaddr,
    a_seed: u8,
    b_seed: u8,
    nat: Option<IpAddr>,
) -> (Pair, Option<(Swallowed, Vec<JoinHandle<()>>)>) {
    let mut a = client(a_seed);
    let mut b = client(b_seed);
    let a_listen = listen(&mut a).await;
    let b_listen = listen(&mut b).await;
    let holes = match nat {
        Some(ip) => Some(black_holes(ip, &[&a_listen, &b_listen]).await),
        None => None,
    };
    join_relay(&mut a, &relay).await;
    join_relay(&mut b, &relay).await;
    a.listen_on(relay.clone().with(Protocol::P2pCircuit))
        .unwrap();
    within("A's reservation", async {
        loop {
            match a.select_next_some().await {
                SwarmEvent::Behaviour(ClientEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { .. },
                )) => return,
                SwarmEvent::ListenerClosed { reason, .. } => {
                    panic!("A's relayed listener closed: {reason:?}")
                }
                _ => {}
            }
        }
    })
    .await;
    let pair = Pair {
        a_id: *a.local_peer_id(),
        b_id: *b.local_peer_id(),
        a,
        b,
        a_listen,
        b_listen,
        relay,
    };
    (pair, holes)
}

/// What one client saw of the other.
#[derive(Debug, Default)]
struct Seen {
    relayed: Option<ConnectionId>,
    relayed_closed: bool,
    direct: HashSet<ConnectionId>,
    /// DCUtR's verdicts: the direct connection, or its error's text.
    upgrades: Vec<Result<ConnectionId, String>>,
    pings_relayed: usize,
    pings_direct: HashSet<ConnectionId>,
}

impl Seen {
    fn record(&mut self, other: PeerId, event: SwarmEvent<ClientEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } if peer_id == other => {
                if endpoint.is_relayed() {
                    self.relayed.get_or_insert(connection_id);
                } else {
                    self.direct.insert(connection_id);
                }
            }
            SwarmEvent::ConnectionClosed { connection_id, .. }
                if Some(connection_id) == self.relayed =>
            {
                self.relayed_closed = true
            }
            SwarmEvent::Behaviour(ClientEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) if remote_peer_id == other => self.upgrades.push(result.map_err(|e| e.to_string())),
            SwarmEvent::Behaviour(ClientEvent::Ping(ping::Event {
                peer,
                connection,
                result: Ok(_),
            })) if peer == other => {
                if Some(connection) == self.relayed {
                    self.pings_relayed += 1;
                } else if self.direct.contains(&connection) {
                    self.pings_direct.insert(connection);
                }
            }
            _ => {}
        }
    }

    /// A direct connection that DCUtR reported and that carried a ping.
    fn upgraded(&self) -> bool {
        self.upgrades
            .iter()
            .any(|u| matches!(u, Ok(c) if self.pings_direct.contains(c)))
    }
}

/// Drives A and B (B dials A through the relay) until `done` says so.
async fn drive(
    p: &mut Pair,
    what: &str,
    mut done: impl FnMut(&Seen, &Seen) -> bool,
) -> (Seen, Seen) {
    let through = (p.relay.clone())
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(p.a_id));
    p.b.dial(through).unwrap();
    let (mut a, mut b) = (Seen::default(), Seen::default());
    within(what, async {
        while !done(&a, &b) {
            tokio::select! {
                e = p.a.select_next_some() => a.record(p.b_id, e),
                e = p.b.select_next_some() => b.record(p.a_id, e),
            }
        }
    })
    .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcutr_upgrades_a_relayed_connection_on_loopback() {
    init_logs();
    let relay = relay_server(None).await;
    let (mut p, _) = pair(relay, 41, 42, None).await;
    let (a, b) = drive(
        &mut p,
        "the direct upgrade, pinged on both sides",
        |a, b| a.upgraded() && b.upgraded(),
    )
    .await;
    assert!(a.relayed.is_some() && b.relayed.is_some(), "{a:?} {b:?}");
    assert!(a.upgrades.iter().all(Result::is_ok), "{a:?}");
    assert!(b.upgrades.iter().all(Result::is_ok), "{b:?}");
    assert!(!a.relayed_closed && !b.relayed_closed, "{a:?} {b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_keeps_the_relayed_connection() {
    init_logs();
    let nat: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
    let relay = relay_server(Some(nat)).await;
    let (mut p, holes) = pair(relay, 43, 44, Some(nat)).await;
    let (swallowed, holes) = holes.unwrap();

    let mut pings_at_failure = None;
    let (a, b) = drive(
        &mut p,
        "DCUtR's failure, then pings on the relayed connection",
        |a, b| {
            // A, whose relayed connection is inbound, runs the upgrade and reports its end.
            if pings_at_failure.is_none() && a.upgrades.iter().any(Result::is_err) {
                pings_at_failure = Some((a.pings_relayed, b.pings_relayed));
            }
            pings_at_failure.is_some_and(|(pa, pb)| {
                a.pings_relayed >= pa + PINGS_AFTER_FAILURE
                    && b.pings_relayed >= pb + PINGS_AFTER_FAILURE
            }) || a.relayed_closed
                || b.relayed_closed
        },
    )
    .await;
    for hole in holes {
        hole.abort();
    }

    assert!(!a.relayed_closed && !b.relayed_closed, "{a:?} {b:?}");
    assert!(a.direct.is_empty() && b.direct.is_empty(), "{a:?} {b:?}");
    assert!(
        a.upgrades.iter().all(Result::is_err) && b.upgrades.iter().all(Result::is_err),
        "{a:?} {b:?}"
    );
    assert!(
        a.upgrades
            .iter()
            .any(|u| matches!(u, Err(e) if e.contains("3 dial attempts"))),
        "{a:?}"
    );
    // Each client's direct dials went to the other's black hole, from its listening socket.
    let swallowed = swallowed.lock().unwrap().clone();
    let at = |listen: &Multiaddr, ip: IpAddr| SocketAddr::new(ip, udp_port(listen));
    let loopback: IpAddr = Ipv4Addr::LOCALHOST.into();
    for (from, to) in [(&p.a_listen, &p.b_listen), (&p.b_listen, &p.a_listen)] {
        assert!(
            swallowed.contains(&(at(from, loopback), at(to, nat))),
            "{swallowed:?}"
        );
    }
}
