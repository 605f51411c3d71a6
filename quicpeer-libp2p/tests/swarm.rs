//! Swarms (ping + identify) on quicpeer-libp2p against stock libp2p-quic Swarms, both ways,
//! on real loopback sockets; and the bad-input cases of the transport. Every wait has a
//! generous deadline and nothing asserts how fast.

mod support;

use std::collections::HashSet;

use futures::StreamExt;
use libp2p::core::transport::{DialOpts as CoreDialOpts, PortUse, TransportError};
use libp2p::core::{Endpoint, Transport as _};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{identify, ping, Multiaddr, PeerId, Swarm};
use quicpeer_libp2p::{cause_of, Cause, Config, Error, Transport};
use support::*;

#[derive(Default)]
struct Seen {
    connected: Option<PeerId>,
    pinged: bool,
    /// identify's observed address of this side, as the other side saw it.
    observed: Option<Multiaddr>,
}

impl Seen {
    fn record(&mut self, event: SwarmEvent<NodeEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => self.connected = Some(peer_id),
            SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event { result: Ok(_), .. })) => {
                self.pinged = true
            }
            SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received {
                info, ..
            })) => self.observed = Some(info.observed_addr),
            _ => {}
        }
    }

    fn done(&self) -> bool {
        self.connected.is_some() && self.pinged && self.observed.is_some()
    }
}

/// The listener listens, the dialer listens too (so that identify's observed address can
/// show its listen port) and dials the listener, with or without `/p2p/`; both sides must
/// verify each other, ping, and observe the other's listen port.
async fn ping_and_identify(listener: Swarm<Node>, dialer: Swarm<Node>, with_p2p: bool) {
    ping_and_identify_on(listener, dialer, with_p2p, "/ip4/127.0.0.1/udp/0/quic-v1").await
}

/// [`ping_and_identify`] with both sides listening on `addr`.
async fn ping_and_identify_on(
    mut listener: Swarm<Node>,
    mut dialer: Swarm<Node>,
    with_p2p: bool,
    addr: &str,
) {
    let listener_id = *listener.local_peer_id();
    let dialer_id = *dialer.local_peer_id();
    let listen_addr = listen(&mut listener, addr).await;
    let dialer_listen = listen(&mut dialer, addr).await;
    let target = if with_p2p {
        listen_addr.clone().with(Protocol::P2p(listener_id))
    } else {
        listen_addr.clone()
    };
    dialer.dial(target).unwrap();
    let (mut l, mut d) = (Seen::default(), Seen::default());
    within("ping and identify both ways", async {
        while !(l.done() && d.done()) {
            tokio::select! {
                e = listener.select_next_some() => l.record(e),
                e = dialer.select_next_some() => d.record(e),
            }
        }
    })
    .await;
    assert_eq!(l.connected, Some(dialer_id));
    assert_eq!(d.connected, Some(listener_id));
    // The dialer dialed from its listening socket (PortUse::Reuse): the listener saw its
    // listen port, and the dialer saw the listener's.
    assert_eq!(
        udp_port(d.observed.as_ref().unwrap()),
        udp_port(&dialer_listen),
        "observed {:?}",
        d.observed
    );
    assert_eq!(
        udp_port(l.observed.as_ref().unwrap()),
        udp_port(&listen_addr)
    );
    // And in the family listened on.
    let v6 = |a: &Multiaddr| matches!(a.iter().next(), Some(Protocol::Ip6(_)));
    assert_eq!(v6(d.observed.as_ref().unwrap()), v6(&listen_addr));
    assert_eq!(v6(l.observed.as_ref().unwrap()), v6(&listen_addr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quicpeer_dialer_to_stock_listener() {
    init_logs();
    for with_p2p in [true, false] {
        ping_and_identify(
            stock_swarm(keypair(1)),
            quicpeer_swarm(keypair(2), false),
            with_p2p,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_dialer_to_quicpeer_listener() {
    init_logs();
    for with_p2p in [true, false] {
        ping_and_identify(
            quicpeer_swarm(keypair(3), false),
            stock_swarm(keypair(4)),
            with_p2p,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quicpeer_to_quicpeer() {
    init_logs();
    ping_and_identify(
        quicpeer_swarm(keypair(5), false),
        quicpeer_swarm(keypair(6), false),
        true,
    )
    .await;
}

/// IPv6: both sides listen on `::1` and dial it, stock peers included; identify's observed
/// addresses are IPv6 ones with the listen ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_both_ways() {
    init_logs();
    const IP6: &str = "/ip6/::1/udp/0/quic-v1";
    ping_and_identify_on(
        quicpeer_swarm(keypair(30), false),
        quicpeer_swarm(keypair(31), false),
        true,
        IP6,
    )
    .await;
    ping_and_identify_on(
        stock_swarm(keypair(32)),
        quicpeer_swarm(keypair(33), false),
        false,
        IP6,
    )
    .await;
    ping_and_identify_on(
        quicpeer_swarm(keypair(34), false),
        stock_swarm(keypair(35)),
        true,
        IP6,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_listener_reports_the_loopback_with_its_port() {
    init_logs();
    let mut swarm = quicpeer_swarm(keypair(7), false);
    swarm
        .listen_on("/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let mut addrs = HashSet::new();
    within("the loopback address", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                let loopback = address.iter().next() == Some(Protocol::Ip4([127, 0, 0, 1].into()));
                addrs.insert(address);
                if loopback {
                    break;
                }
            }
        }
    })
    .await;
    let ports: HashSet<u16> = addrs.iter().map(udp_port).collect();
    assert_eq!(ports.len(), 1, "{addrs:?}");
    assert_ne!(ports.into_iter().next(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_refuses_new_connections_and_keeps_its_own() {
    init_logs();
    let mut listener = quicpeer_swarm(keypair(8), false);
    let listener_id = *listener.local_peer_id();
    let id = listener
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let addr = within("listen address", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = listener.select_next_some().await {
                return address;
            }
        }
    })
    .await;
    let mut first = stock_swarm(keypair(9));
    first.dial(addr.clone()).unwrap();
    let mut pinged = false;
    within("first connection", async {
        while !pinged {
            tokio::select! {
                _ = listener.select_next_some() => {}
                e = first.select_next_some() => if let SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event { result: Ok(_), .. })) = e {
                    pinged = true;
                },
            }
        }
    })
    .await;
    assert!(listener.remove_listener(id));
    let mut second = stock_swarm(keypair(10));
    second.dial(addr.with(Protocol::P2p(listener_id))).unwrap();
    let mut closed = false;
    let mut refused = false;
    let mut pings_after = 0;
    within("refusal of the second, pings on the first", async {
        while !(closed && refused && pings_after >= 3) {
            tokio::select! {
                e = listener.select_next_some() => if let SwarmEvent::ListenerClosed { .. } = e {
                    closed = true;
                },
                e = first.select_next_some() => if let SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event { result: Ok(_), .. })) = e {
                    pings_after += 1;
                },
                e = second.select_next_some() => match e {
                    SwarmEvent::OutgoingConnectionError { .. } => refused = true,
                    SwarmEvent::ConnectionEstablished { .. } => panic!("a removed listener accepted"),
                    _ => {}
                },
            }
        }
    })
    .await;
}

// ---- bad input, on the transport itself ----

fn transport(seed: u8) -> Transport {
    Transport::new(Config::new(&keypair(seed)))
}

fn dialer_opts() -> CoreDialOpts {
    CoreDialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::Reuse,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_that_are_not_quic_v1_are_not_supported() {
    let mut t = transport(11);
    for addr in [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/127.0.0.1/udp/4001/quic",
        "/ip4/127.0.0.1/udp/4001/quic-v1/webtransport",
        "/dns4/localhost/udp/4001/quic-v1",
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        "/ip4/127.0.0.1/udp/0/quic-v1",
    ] {
        let addr: Multiaddr = addr.parse().unwrap();
        match t.dial(addr.clone(), dialer_opts()) {
            Err(TransportError::MultiaddrNotSupported(a)) => assert_eq!(a, addr),
            Err(e) => panic!("{addr}: {e:?}"),
            Ok(_) => panic!("{addr}: dial accepted"),
        }
    }
    for addr in ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic"] {
        let addr: Multiaddr = addr.parse().unwrap();
        assert!(matches!(
            t.listen_on(libp2p::core::transport::ListenerId::next(), addr),
            Err(TransportError::MultiaddrNotSupported(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_p2p_fails_the_dial_with_the_mismatch() {
    init_logs();
    let mut listener = stock_swarm(keypair(12));
    let actual = *listener.local_peer_id();
    let listen_addr = listen(&mut listener, "/ip4/127.0.0.1/udp/0/quic-v1").await;
    let _listener = run(listener);
    let expected = keypair(13).public().to_peer_id();
    let mut t = transport(14);
    let dial = t
        .dial(
            listen_addr.clone().with(Protocol::P2p(expected)),
            dialer_opts(),
        )
        .unwrap();
    match within("the dial", dial).await {
        Err(Error::PeerIdMismatch {
            expected: e,
            actual: a,
            ..
        }) => {
            assert_eq!(e, expected);
            assert_eq!(a, actual);
        }
        Err(e) => panic!("expected a mismatch, got {e}"),
        Ok(_) => panic!("the dial succeeded"),
    }

    // Through a Swarm: the dial's transport error is ours, inside an io::Error.
    let mut swarm = quicpeer_swarm(keypair(15), false);
    swarm
        .dial(listen_addr.with(Protocol::P2p(expected)))
        .unwrap();
    let error = within("the Swarm's dial error", async {
        loop {
            if let SwarmEvent::OutgoingConnectionError { error, .. } =
                swarm.select_next_some().await
            {
                return error;
            }
        }
    })
    .await;
    let DialError::Transport(errors) = &error else {
        panic!("expected a transport error, got {error:?}");
    };
    // The Swarm wraps the error in an `Either` of its transports, which hides it but not its
    // source: quicpeer's cause.
    let mismatch = errors.iter().any(|(_, e)| match e {
        TransportError::Other(io) => matches!(
            cause_of(io),
            Some(Cause::PeerIdMismatch { expected: e, actual: a }) if *e == expected && *a == actual
        ),
        _ => false,
    });
    assert!(mismatch, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_dial_closes_its_attempt() {
    init_logs();
    // A socket that never answers: the attempt retransmits its Initial while it lives.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut t = transport(16);
    let mut buf = vec![0; 2048];
    {
        let mut dial = t
            .dial(
                format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
                    .parse()
                    .unwrap(),
                dialer_opts(),
            )
            .unwrap();
        tokio::select! {
            _ = &mut dial => panic!("a silent address cannot complete a handshake"),
            received = silent.recv_from(&mut buf) => { received.unwrap(); }
        }
    }
    // A closed attempt sends its close, one datagram, at most; a live one retransmits its
    // Initial (after about 1 s, then 2 s later: at least two datagrams in these 5 s). Counted,
    // not timed, so that a slow machine cannot fail it.
    let mut sent = 0;
    let window = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(received) = tokio::time::timeout_at(window, silent.recv_from(&mut buf)).await {
        received.unwrap();
        sent += 1;
    }
    assert!(
        sent <= 1,
        "the dropped dial is still sending ({sent} datagrams)"
    );
}

/// The next event of a transport that no Swarm drives.
async fn next_event(
    t: &mut Transport,
) -> libp2p::core::transport::TransportEvent<
    <Transport as libp2p::core::Transport>::ListenerUpgrade,
    Error,
> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *t).poll(cx)).await
}

async fn listen_transport(t: &mut Transport) -> Multiaddr {
    t.listen_on(
        libp2p::core::transport::ListenerId::next(),
        "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
    )
    .unwrap();
    match within("a listen address", next_event(t)).await {
        libp2p::core::transport::TransportEvent::NewAddress { listen_addr, .. } => listen_addr,
        other => panic!("expected a listen address, got {other:?}"),
    }
}

/// The hole punch's listener side (DCUtR's `Endpoint::Listener` role with a new port, as
/// libp2p-quic handles it): its dial punches from the listening socket and is completed by
/// the inbound connection from the punched address, which is not reported as an ordinary
/// inbound connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_punch_is_completed_by_the_peers_inbound_connection() {
    init_logs();
    let (mut a, mut b) = (transport(17), transport(18));
    let a_id = keypair(17).public().to_peer_id();
    let b_id = keypair(18).public().to_peer_id();
    let a_addr = listen_transport(&mut a).await;
    let b_addr = listen_transport(&mut b).await;
    let punch = a
        .dial(
            b_addr.clone().with(Protocol::P2p(b_id)),
            CoreDialOpts {
                role: Endpoint::Listener,
                port_use: PortUse::New,
            },
        )
        .unwrap();
    // Driving A's listener, as its Swarm would; any inbound connection it reports is one the
    // hole punch did not take.
    let a_events = tokio::spawn(async move {
        let mut incoming = 0;
        while let Ok(event) =
            tokio::time::timeout(std::time::Duration::from_secs(2), next_event(&mut a)).await
        {
            if event.is_upgrade() {
                incoming += 1;
            }
        }
        incoming
    });
    let dial = b
        .dial(a_addr.with(Protocol::P2p(a_id)), dialer_opts())
        .unwrap();
    let (punched, dialed) =
        within("the punch and the dial", futures::future::join(punch, dial)).await;
    let (peer, _a_side) = punched.expect("the hole punch completes");
    assert_eq!(peer, b_id);
    let (peer, _b_side) = dialed.expect("the dial completes");
    assert_eq!(peer, a_id);
    assert_eq!(
        a_events.await.unwrap(),
        0,
        "the punched connection was reported as inbound"
    );

    // Without a listener there is nothing to punch from.
    let mut lone = transport(19);
    assert!(matches!(
        lone.dial(
            b_addr.with(Protocol::P2p(b_id)),
            CoreDialOpts {
                role: Endpoint::Listener,
                port_use: PortUse::New,
            },
        ),
        Err(TransportError::Other(Error::NoListenerForHolePunch))
    ));
}
