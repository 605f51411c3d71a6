//! Handshakes between two in-memory `quinn_proto::Endpoint`s with the identity layer's TLS
//! configurations: a tiny sans-IO loop shuttles datagrams and advances a fake clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use quicpeer::identity::certificate::CertificateParams;
use quicpeer::identity::{generate_certificate, CertificateError, Identity, Keypair, PeerId, ALPN};
use quicpeer::internals::{TlsContext, VerificationSlot, WallClock};
use quinn_proto::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, Event,
    ServerConfig,
};
use rustls::pki_types::CertificateDer;

/// 2026-01-01T00:00:00Z.
fn wall_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// Far after every generated certificate's end (4096-01-01).
fn year_5000() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(95_617_584_000)
}

/// One side: an endpoint with at most one connection, and what happened to it.
struct Node {
    endpoint: Endpoint,
    addr: SocketAddr,
    tls: TlsContext,
    clock: WallClock,
    connection: Option<(ConnectionHandle, Connection)>,
    slot: Option<VerificationSlot>,
    inbound: VecDeque<BytesMut>,
    connected: bool,
    lost: bool,
    handshake: Option<HandshakeData>,
}

impl Node {
    fn new(tls: TlsContext, clock: WallClock, port: u16) -> Self {
        let (crypto, _) = tls.server_config();
        let server = server_config(crypto, &clock);
        Self {
            endpoint: Endpoint::new(
                Arc::new(EndpointConfig::default()),
                Some(server),
                true,
                None,
            ),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls,
            clock,
            connection: None,
            slot: None,
            inbound: VecDeque::new(),
            connected: false,
            lost: false,
            handshake: None,
        }
    }

    fn with_identity(identity: &Identity, clock: WallClock, port: u16) -> Self {
        let tls = TlsContext::new(identity, clock.clone()).expect("TLS context");
        Self::new(tls, clock, port)
    }

    fn dial(&mut self, now: Instant, to: SocketAddr, expected: Option<PeerId>) {
        let (crypto, slot) = self.tls.client_config(expected);
        let crypto = QuicClientConfig::try_from(crypto).expect("quinn accepts the client config");
        let (handle, connection) = self
            .endpoint
            .connect(now, ClientConfig::new(Arc::new(crypto)), to, "peer")
            .expect("connect");
        self.connection = Some((handle, connection));
        self.slot = Some(slot);
    }

    /// Handles inbound datagrams, timers and events; returns the datagrams to send.
    fn drive(&mut self, now: Instant, peer: SocketAddr) -> Vec<BytesMut> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(datagram) = self.inbound.pop_front() {
            match self
                .endpoint
                .handle(now, peer, None, None, datagram, &mut buf)
            {
                Some(DatagramEvent::NewConnection(incoming)) => {
                    let (crypto, slot) = self.tls.server_config();
                    let config = server_config(crypto, &self.clock);
                    match self.endpoint.accept(incoming, now, &mut buf, Some(config)) {
                        Ok(accepted) => {
                            self.connection = Some(accepted);
                            self.slot = Some(slot);
                        }
                        Err(error) => panic!("accept failed: {}", error.cause),
                    }
                }
                Some(DatagramEvent::ConnectionEvent(_, event)) => {
                    if let Some((_, connection)) = &mut self.connection {
                        connection.handle_event(event);
                    }
                }
                Some(DatagramEvent::Response(transmit)) => {
                    out.push(BytesMut::from(&buf[..transmit.size]));
                }
                None => {}
            }
            buf.clear();
        }

        let Some((handle, connection)) = &mut self.connection else {
            return out;
        };
        if connection.poll_timeout().is_some_and(|t| t <= now) {
            connection.handle_timeout(now);
        }
        while let Some(transmit) = connection.poll_transmit(now, 1, &mut buf) {
            out.push(BytesMut::from(&buf[..transmit.size]));
            buf.clear();
        }
        while let Some(event) = connection.poll_endpoint_events() {
            if let Some(event) = self.endpoint.handle_event(*handle, event) {
                connection.handle_event(event);
            }
        }
        while let Some(event) = connection.poll() {
            match event {
                Event::HandshakeDataReady => {
                    let data = connection.crypto_session().handshake_data().expect("data");
                    self.handshake = Some(*data.downcast::<HandshakeData>().expect("rustls"));
                }
                Event::Connected => {
                    self.connected = true;
                    // A resumed session ran no verifier: read the peer back, as the manager does.
                    if let Some(slot) = self.slot.as_ref().filter(|s| s.outcome().is_none()) {
                        let certificates = (connection.crypto_session().peer_identity())
                            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
                        let certificates = certificates.as_deref().map(Vec::as_slice);
                        slot.complete_resumption(self.clock.get(), certificates);
                    }
                }
                Event::ConnectionLost { .. } => self.lost = true,
                _ => {}
            }
        }
        out
    }

    fn timeout(&mut self) -> Option<Instant> {
        self.connection.as_mut().and_then(|(_, c)| c.poll_timeout())
    }

    fn settled(&self) -> bool {
        self.connected || self.lost
    }

    fn outcome(&self) -> Option<Result<PeerId, CertificateError>> {
        self.slot.as_ref().and_then(VerificationSlot::outcome)
    }
}

fn server_config(crypto: Arc<rustls::ServerConfig>, clock: &WallClock) -> Arc<ServerConfig> {
    let crypto = QuicServerConfig::try_from(crypto).expect("quinn accepts the server config");
    let mut config = ServerConfig::with_crypto(Arc::new(crypto));
    config.time_source(Arc::new(clock.clone()));
    Arc::new(config)
}

/// The client dials the server (expecting `expected`) and the loop runs until both sides have
/// connected or given up and nothing is in flight.
fn handshake(client: &mut Node, server: &mut Node, expected: Option<PeerId>) {
    let mut now = Instant::now();
    client.dial(now, server.addr, expected);
    for _ in 0..1000 {
        let to_server = client.drive(now, server.addr);
        server.inbound.extend(to_server);
        let to_client = server.drive(now, client.addr);
        client.inbound.extend(to_client);
        if !client.inbound.is_empty() || !server.inbound.is_empty() {
            continue;
        }
        if client.settled() && server.settled() {
            return;
        }
        match [client.timeout(), server.timeout()]
            .into_iter()
            .flatten()
            .min()
        {
            Some(next) => now = now.max(next),
            None => return,
        }
    }
    panic!("handshake loop did not settle");
}

fn rsa_keypair() -> Keypair {
    let mut pkcs8 = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rsa-2048.pk8"
    ))
    .expect("read RSA key");
    Keypair::rsa_from_pkcs8(&mut pkcs8).expect("RSA key")
}

fn keypairs() -> [(&'static str, Keypair); 4] {
    [
        ("ed25519", Keypair::generate_ed25519()),
        ("ecdsa", Keypair::generate_ecdsa()),
        ("secp256k1", Keypair::generate_secp256k1()),
        ("rsa", rsa_keypair()),
    ]
}

#[test]
fn handshake_proves_both_peer_ids_for_every_key_type() {
    for ((name, client_key), (_, server_key)) in keypairs().into_iter().zip(keypairs()) {
        let (client_id, server_id) = (Identity::new(client_key), Identity::new(server_key));
        let clock = WallClock::new(wall_time());
        let mut client = Node::with_identity(&client_id, clock.clone(), 1000);
        let mut server = Node::with_identity(&server_id, clock, 2000);

        handshake(&mut client, &mut server, Some(server_id.peer_id()));

        assert!(
            client.connected && server.connected,
            "{name}: handshake completes"
        );
        assert_eq!(client.outcome(), Some(Ok(server_id.peer_id())), "{name}");
        assert_eq!(server.outcome(), Some(Ok(client_id.peer_id())), "{name}");
        let server_saw = server.handshake.as_ref().expect("handshake data");
        assert_eq!(server_saw.protocol.as_deref(), Some(ALPN), "{name}: ALPN");
        assert_eq!(server_saw.server_name, None, "{name}: no SNI sent");
    }
}

#[test]
fn dialing_without_an_expected_peer_id_learns_it() {
    let (client_id, server_id) = (
        Identity::from_ed25519_seed([1; 32]),
        Identity::from_ed25519_seed([2; 32]),
    );
    let clock = WallClock::new(wall_time());
    let mut client = Node::with_identity(&client_id, clock.clone(), 1000);
    let mut server = Node::with_identity(&server_id, clock, 2000);
    handshake(&mut client, &mut server, None);
    assert!(client.connected && server.connected);
    assert_eq!(client.outcome(), Some(Ok(server_id.peer_id())));
}

#[test]
fn wrong_peer_id_fails_the_handshake() {
    let (client_id, server_id) = (
        Identity::from_ed25519_seed([1; 32]),
        Identity::from_ed25519_seed([2; 32]),
    );
    let expected = Identity::from_ed25519_seed([3; 32]).peer_id();
    let clock = WallClock::new(wall_time());
    let mut client = Node::with_identity(&client_id, clock.clone(), 1000);
    let mut server = Node::with_identity(&server_id, clock, 2000);

    handshake(&mut client, &mut server, Some(expected));

    assert!(
        !client.connected && !server.connected,
        "the handshake does not complete"
    );
    assert!(client.lost && server.lost);
    assert_eq!(
        client.outcome(),
        Some(Err(CertificateError::PeerIdMismatch {
            expected,
            actual: server_id.peer_id()
        }))
    );
}

#[test]
fn client_rejects_a_certificate_expired_at_its_wall_clock() {
    let (client_id, server_id) = (
        Identity::from_ed25519_seed([1; 32]),
        Identity::from_ed25519_seed([2; 32]),
    );
    // The system clock would accept the server's certificate; the client's WallClock does not.
    let mut client = Node::with_identity(&client_id, WallClock::new(year_5000()), 1000);
    let mut server = Node::with_identity(&server_id, WallClock::new(wall_time()), 2000);

    handshake(&mut client, &mut server, Some(server_id.peer_id()));

    assert!(!client.connected && !server.connected);
    assert_eq!(client.outcome(), Some(Err(CertificateError::Expired)));
}

#[test]
fn server_rejects_a_client_certificate_not_yet_valid_at_its_wall_clock() {
    let (client_id, server_id) = (
        Identity::from_ed25519_seed([1; 32]),
        Identity::from_ed25519_seed([2; 32]),
    );
    let mut client = Node::with_identity(&client_id, WallClock::new(wall_time()), 1000);
    // 1970: before every generated certificate's start (1975).
    let mut server = Node::with_identity(&server_id, WallClock::new(UNIX_EPOCH), 2000);

    handshake(&mut client, &mut server, Some(server_id.peer_id()));

    assert!(!server.connected, "the server never accepts the client");
    assert!(client.lost, "the client learns of the rejection");
    assert_eq!(server.outcome(), Some(Err(CertificateError::NotYetValid)));
}

#[test]
fn critical_libp2p_extension_works_in_our_own_certificate() {
    // rustls' `with_single_cert` would refuse this certificate on our own side.
    let server_id = Identity::from_ed25519_seed([2; 32]);
    let params = CertificateParams {
        critical: true,
        ..CertificateParams::new(server_id.keypair())
    };
    let (certificate, key) = params.generate().expect("generate");
    let clock = WallClock::new(wall_time());
    let tls = TlsContext::with_certificate(certificate, key, clock.clone()).expect("context");
    let mut server = Node::new(tls, clock.clone(), 2000);
    let mut client = Node::with_identity(&Identity::from_ed25519_seed([1; 32]), clock, 1000);

    handshake(&mut client, &mut server, Some(server_id.peer_id()));

    assert!(client.connected && server.connected);
    assert_eq!(client.outcome(), Some(Ok(server_id.peer_id())));
}

#[test]
fn forged_extension_is_rejected_in_the_handshake() {
    let server_id = Identity::from_ed25519_seed([2; 32]);
    let forger = Keypair::generate_ed25519();
    let params = CertificateParams {
        extension_signer: &forger,
        ..CertificateParams::new(server_id.keypair())
    };
    let (certificate, key) = params.generate().expect("generate");
    let clock = WallClock::new(wall_time());
    let tls = TlsContext::with_certificate(certificate, key, clock.clone()).expect("context");
    let mut server = Node::new(tls, clock.clone(), 2000);
    let mut client = Node::with_identity(&Identity::from_ed25519_seed([1; 32]), clock, 1000);

    handshake(&mut client, &mut server, Some(server_id.peer_id()));

    assert!(!client.connected && !server.connected);
    assert_eq!(
        client.outcome(),
        Some(Err(CertificateError::BadExtensionSignature))
    );
}

#[test]
fn certificate_verify_is_checked_with_the_certificate_key() {
    // The server presents a valid certificate but signs the handshake with another key: it
    // replays someone's certificate without holding its key.
    let server_id = Identity::from_ed25519_seed([2; 32]);
    let (certificate, _) = generate_certificate(server_id.keypair()).expect("generate");
    let (_, other_key) = generate_certificate(server_id.keypair()).expect("generate");
    let clock = WallClock::new(wall_time());
    let tls = TlsContext::with_certificate(certificate, other_key, clock.clone()).expect("context");
    let mut server = Node::new(tls, clock.clone(), 2000);
    let mut client = Node::with_identity(&Identity::from_ed25519_seed([1; 32]), clock, 1000);

    handshake(&mut client, &mut server, Some(server_id.peer_id()));

    assert!(!client.connected && !server.connected);
    assert_eq!(
        client.outcome(),
        Some(Err(CertificateError::BadHandshakeSignature))
    );
}

// ---- session resumption ----

/// A context for `identity` with resumption on, its ticket keys from `secret`.
fn resuming(identity: &Identity, clock: &WallClock, secret: u8) -> TlsContext {
    let mut tls = TlsContext::new(identity, clock.clone()).expect("TLS context");
    tls.enable_resumption([secret; 32]);
    tls
}

/// A client (seed 1) and a server (seed 2) with resumption on, neither connected yet.
fn resumable() -> (Identity, Identity, WallClock, TlsContext, TlsContext) {
    let (client_id, server_id) = (
        Identity::from_ed25519_seed([1; 32]),
        Identity::from_ed25519_seed([2; 32]),
    );
    let clock = WallClock::new(wall_time());
    let (c, s) = (
        resuming(&client_id, &clock, 1),
        resuming(&server_id, &clock, 2),
    );
    (client_id, server_id, clock, c, s)
}

/// One handshake between fresh endpoints over `client_tls` and `server_tls`; returns both
/// contexts (with whatever tickets they now hold) and the two nodes' verdicts.
fn connect_once(
    client_tls: TlsContext,
    server_tls: TlsContext,
    clock: &WallClock,
    expected: PeerId,
) -> (TlsContext, TlsContext, Node, Node) {
    let mut client = Node::new(client_tls, clock.clone(), 1000);
    let mut server = Node::new(server_tls, clock.clone(), 2000);
    handshake(&mut client, &mut server, Some(expected));
    let client_tls = std::mem::replace(
        &mut client.tls,
        TlsContext::new(&Identity::from_ed25519_seed([99; 32]), clock.clone()).expect("spare"),
    );
    let server_tls = std::mem::replace(
        &mut server.tls,
        TlsContext::new(&Identity::from_ed25519_seed([98; 32]), clock.clone()).expect("spare"),
    );
    (client_tls, server_tls, client, server)
}

fn resumed(node: &Node) -> bool {
    node.slot.as_ref().is_some_and(VerificationSlot::resumed)
}

#[test]
fn a_second_handshake_resumes_and_still_names_both_peers() {
    let (client_id, server_id, clock, c, s) = resumable();
    let (c, s, client, server) = connect_once(c, s, &clock, server_id.peer_id());
    assert!(client.connected && server.connected);
    assert!(
        !resumed(&client) && !resumed(&server),
        "the first handshake is a full one"
    );

    let (c, s, client, server) = connect_once(c, s, &clock, server_id.peer_id());
    assert!(client.connected && server.connected);
    assert!(resumed(&client) && resumed(&server), "the second resumes");
    assert_eq!(client.outcome(), Some(Ok(server_id.peer_id())));
    assert_eq!(server.outcome(), Some(Ok(client_id.peer_id())));
    // A resumed session says nothing of the peer's current certificate key.
    assert_eq!(
        client
            .slot
            .as_ref()
            .and_then(VerificationSlot::certificate_key),
        None
    );

    // The resumed session brought a new ticket: the third resumes too.
    let (_, _, client, server) = connect_once(c, s, &clock, server_id.peer_id());
    assert!(resumed(&client) && resumed(&server));
}

#[test]
fn a_restarted_server_resumes_its_predecessors_sessions() {
    let (client_id, server_id, clock, c, s) = resumable();
    let (c, _old, _, _) = connect_once(c, s, &clock, server_id.peer_id());
    // A new process: a new certificate, the same identity, the same derived ticket secret.
    let restarted = resuming(&server_id, &clock, 2);
    let (_, _, client, server) = connect_once(c, restarted, &clock, server_id.peer_id());
    assert!(client.connected && server.connected);
    assert!(resumed(&client) && resumed(&server));
    assert_eq!(server.outcome(), Some(Ok(client_id.peer_id())));
}

#[test]
fn a_ticket_is_refused_by_another_identity_and_the_full_handshake_catches_the_impostor() {
    let (client_id, server_id) = (
        Identity::from_ed25519_seed([1; 32]),
        Identity::from_ed25519_seed([2; 32]),
    );
    let impostor_id = Identity::from_ed25519_seed([3; 32]);
    let clock = WallClock::new(wall_time());
    let (c, s) = (
        resuming(&client_id, &clock, 1),
        resuming(&server_id, &clock, 2),
    );
    let (c, _, _, _) = connect_once(c, s, &clock, server_id.peer_id());
    // Another node at the server's address, with its own ticket keys: it cannot open the
    // ticket, the handshake is a full one, and the client's verifier names it.
    let impostor = resuming(&impostor_id, &clock, 3);
    let (_, _, client, server) = connect_once(c, impostor, &clock, server_id.peer_id());
    assert!(!client.connected);
    assert!(!resumed(&client) && !resumed(&server));
    assert_eq!(
        client.outcome(),
        Some(Err(CertificateError::PeerIdMismatch {
            expected: server_id.peer_id(),
            actual: impostor_id.peer_id(),
        }))
    );
}

#[test]
fn a_dial_of_another_peer_id_offers_no_ticket() {
    let (client_id, server_id) = (
        Identity::from_ed25519_seed([1; 32]),
        Identity::from_ed25519_seed([2; 32]),
    );
    let other = Identity::from_ed25519_seed([4; 32]);
    let clock = WallClock::new(wall_time());
    let (c, s) = (
        resuming(&client_id, &clock, 1),
        resuming(&server_id, &clock, 2),
    );
    let (c, s, _, _) = connect_once(c, s, &clock, server_id.peer_id());
    // The same server, dialed as if it were `other`: the ticket is kept for the server's
    // PeerId only, so none is offered, and the full handshake refuses the server.
    let (c, s, client, _) = connect_once(c, s, &clock, other.peer_id());
    assert!(!client.connected && !resumed(&client));
    assert!(matches!(
        client.outcome(),
        Some(Err(CertificateError::PeerIdMismatch { .. }))
    ));
    // The ticket is still there for a dial of the right PeerId.
    let (_, _, client, _) = connect_once(c, s, &clock, server_id.peer_id());
    assert!(client.connected && resumed(&client));
}

#[test]
fn an_expired_ticket_gives_a_full_handshake() {
    let (_, server_id, clock, c, s) = resumable();
    let (c, s, _, _) = connect_once(c, s, &clock, server_id.peer_id());
    clock.set(wall_time() + Duration::from_secs(25 * 3600));
    let (_, _, client, server) = connect_once(c, s, &clock, server_id.peer_id());
    assert!(client.connected && server.connected);
    assert!(!resumed(&client) && !resumed(&server));
    assert_eq!(client.outcome(), Some(Ok(server_id.peer_id())));
}

#[test]
fn a_server_without_quicpeers_marker_gets_full_handshakes() {
    // A stock libp2p server may issue tickets of its own; the client keeps none from a server
    // whose certificate lacks quicpeer's serial marker.
    let (client_id, server_id) = (
        Identity::from_ed25519_seed([1; 32]),
        Identity::from_ed25519_seed([2; 32]),
    );
    let params = CertificateParams {
        serial_marker: false,
        ..CertificateParams::new(server_id.keypair())
    };
    let clock = WallClock::new(wall_time());
    let tls = || {
        let (certificate, key) = params.generate().expect("generate");
        let mut tls =
            TlsContext::with_certificate(certificate, key, clock.clone()).expect("context");
        tls.enable_resumption([2; 32]);
        tls
    };
    let c = resuming(&client_id, &clock, 1);
    let (c, s, client, _) = connect_once(c, tls(), &clock, server_id.peer_id());
    assert!(client.connected);
    let (_, _, client, server) = connect_once(c, s, &clock, server_id.peer_id());
    assert!(client.connected && server.connected);
    assert!(!resumed(&client) && !resumed(&server));
}

#[test]
fn a_client_without_quicpeers_marker_gets_no_ticket() {
    let (client_id, server_id) = (
        Identity::from_ed25519_seed([1; 32]),
        Identity::from_ed25519_seed([2; 32]),
    );
    let params = CertificateParams {
        serial_marker: false,
        ..CertificateParams::new(client_id.keypair())
    };
    let clock = WallClock::new(wall_time());
    let (certificate, key) = params.generate().expect("generate");
    let mut c = TlsContext::with_certificate(certificate, key, clock.clone()).expect("context");
    c.enable_resumption([1; 32]);
    let s = resuming(&server_id, &clock, 2);
    let (c, s, client, server) = connect_once(c, s, &clock, server_id.peer_id());
    assert!(client.connected && server.connected);
    let (_, _, client, server) = connect_once(c, s, &clock, server_id.peer_id());
    assert!(client.connected && server.connected);
    assert!(!resumed(&client) && !resumed(&server));
}
