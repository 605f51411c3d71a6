//! The two kinds of endpoint the benchmarks compare, behind one interface, and a zero-latency
//! in-memory wire between two of them.
//!
//! [`QuicpeerEnd`] is a [`Manager`]; [`QuinnEnd`] is a bare `quinn_proto::Endpoint` with its
//! connections, driven the way any quinn-proto user must drive it (shuttling endpoint and
//! connection events), with a minimal rustls configuration: TLS 1.3, a self-signed P-256 server
//! certificate the client trusts, no client authentication, and no session resumption (quicpeer
//! never resumes, so a resumed baseline handshake would compare unlike with unlike). Both read
//! every stream to its end as soon as it is readable, as an application would.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{ConnectionHandle, DatagramEvent, Dir, EndpointConfig, StreamEvent, VarInt};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::BenchError;
use quicpeer::{Config, Event, Identity, Manager, PeerId, StreamId};

/// The address of side A of a [`Wire`].
pub(crate) const ADDR_A: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 4001);
/// The address of side B of a [`Wire`].
pub(crate) const ADDR_B: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 4001);

/// What a benchmark needs of an endpoint.
pub(crate) trait Endpoint {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// The next datagram, written into `buf`: its destination and length.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(SocketAddr, usize)>;
    /// Handles the application events: counts connections, reads readable streams.
    fn process_events(&mut self);
    /// Handshakes completed so far.
    fn connected(&self) -> u64;
    /// Stream bytes read so far.
    fn received(&self) -> u64;
    /// Starts a connection to the other side at `to`.
    fn dial(&mut self, now: Instant, to: SocketAddr) -> Result<(), BenchError>;
    /// Closes every connection.
    fn close_all(&mut self, now: Instant);
    /// Writes what flow control takes of `data` on the endpoint's one outgoing stream, opening
    /// it on the newest connection first.
    fn write(&mut self, data: &[u8]) -> usize;
}

/// The wall clock the benchmarks' managers start at: 2026-01-01T00:00:00Z.
pub(crate) fn wall_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// A quicpeer [`Manager`] talking to one remote peer.
pub(crate) struct QuicpeerEnd {
    manager: Manager,
    remote: PeerId,
    connected: u64,
    received: u64,
    stream: Option<StreamId>,
}

impl QuicpeerEnd {
    /// A pair of managers (seeds 1 and 2) that know each other's PeerId.
    pub(crate) fn pair(config: &Config, now: Instant) -> Result<(Self, Self), BenchError> {
        let a = Identity::from_ed25519_seed([1; 32]);
        let b = Identity::from_ed25519_seed([2; 32]);
        let (peer_a, peer_b) = (a.peer_id(), b.peer_id());
        let end = |identity: Identity, remote, seed| {
            Manager::new(now, wall_start(), identity, config.clone(), [seed; 32])
                .map(|manager| Self {
                    manager,
                    remote,
                    connected: 0,
                    received: 0,
                    stream: None,
                })
                .map_err(|e| BenchError::Setup(e.to_string()))
        };
        Ok((end(a, peer_b, 1)?, end(b, peer_a, 2)?))
    }

    fn read(&mut self, stream: StreamId) {
        // Everything there in one call: no budget, so it ends at the end, a reset, or when
        // nothing more has arrived (`Blocked`).
        if let Ok(read) = self
            .manager
            .stream_read_chunks(stream, usize::MAX, &mut Discard)
        {
            self.received += read.bytes as u64;
        }
    }
}

/// Drops the chunks it is given: the benchmarks count bytes and keep none, as the baseline's
/// reader does.
struct Discard;

impl Extend<Bytes> for Discard {
    fn extend<I: IntoIterator<Item = Bytes>>(&mut self, chunks: I) {
        chunks.into_iter().for_each(drop);
    }
}

impl Endpoint for QuicpeerEnd {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.manager.handle_datagram(now, from, None, data);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.manager.handle_timeout(now);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.manager.poll_timeout()
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(SocketAddr, usize)> {
        self.manager
            .poll_transmit(now, buf)
            .map(|t| (t.destination, t.size))
    }

    fn process_events(&mut self) {
        while let Some(event) = self.manager.poll_event() {
            match event {
                Event::Connected { .. } => self.connected += 1,
                Event::ConnectionLost { conn, .. }
                    if self.stream.is_some_and(|s| s.conn() == conn) =>
                {
                    self.stream = None;
                }
                Event::StreamOpened { stream, .. } | Event::StreamReadable { stream } => {
                    self.read(stream)
                }
                _ => {}
            }
        }
    }

    fn connected(&self) -> u64 {
        self.connected
    }

    fn received(&self) -> u64 {
        self.received
    }

    fn dial(&mut self, now: Instant, to: SocketAddr) -> Result<(), BenchError> {
        self.manager
            .dial(now, self.remote, [to])
            .map(|_| ())
            .map_err(|e| BenchError::Setup(format!("dial: {e}")))
    }

    fn close_all(&mut self, now: Instant) {
        // Not `Manager::close_all`: that shuts the manager down for good.
        self.manager.disconnect(now, self.remote);
        self.stream = None;
    }

    fn write(&mut self, data: &[u8]) -> usize {
        if self.stream.is_none() {
            self.stream = self.manager.open_stream_to(&self.remote).ok();
        }
        match self.stream {
            Some(stream) => self.manager.stream_write(stream, data).unwrap_or(0),
            None => 0,
        }
    }
}

/// A bare `quinn_proto::Endpoint` and its connections.
pub(crate) struct QuinnEnd {
    endpoint: quinn_proto::Endpoint,
    client: Option<quinn_proto::ClientConfig>,
    /// Boxed, as quinn's own async layer holds each connection in its own allocation (and as
    /// the manager does): inline, a B-tree node of eleven 6 KB connections would be what the
    /// memory benchmark weighs.
    conns: BTreeMap<ConnectionHandle, Box<quinn_proto::Connection>>,
    /// Connections that may have something to send.
    dirty: BTreeSet<ConnectionHandle>,
    responses: VecDeque<(SocketAddr, Vec<u8>)>,
    connected: u64,
    received: u64,
    stream: Option<(ConnectionHandle, quinn_proto::StreamId)>,
    newest: Option<ConnectionHandle>,
    buf: Vec<u8>,
}

impl QuinnEnd {
    /// A client (A) and a server (B) with a minimal TLS configuration (see the module docs).
    pub(crate) fn pair() -> Result<(Self, Self), BenchError> {
        Self::pair_with(quinn_proto::TransportConfig::default())
    }

    /// [`pair`](Self::pair) with this transport configuration on both sides.
    pub(crate) fn pair_with(
        transport: quinn_proto::TransportConfig,
    ) -> Result<(Self, Self), BenchError> {
        let transport = Arc::new(transport);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = &[&rustls::version::TLS13];
        let setup = |e: &dyn std::fmt::Display| BenchError::Setup(format!("baseline TLS: {e}"));
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .map_err(|e| setup(&e))?;
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));

        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| setup(&e))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .map_err(|e| setup(&e))?;
        server.alpn_protocols = vec![b"bench".to_vec()];
        server.send_tls13_tickets = 0;
        server.max_early_data_size = 0;
        let server = QuicServerConfig::try_from(server).map_err(|e| setup(&e))?;
        let mut server = quinn_proto::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(transport.clone());

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).map_err(|e| setup(&e))?;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| setup(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"bench".to_vec()];
        client.resumption = Resumption::disabled();
        let client = QuicClientConfig::try_from(client).map_err(|e| setup(&e))?;
        let mut client = quinn_proto::ClientConfig::new(Arc::new(client));
        client.transport_config(transport);

        let end = |server: Option<quinn_proto::ServerConfig>, client, seed| Self {
            endpoint: quinn_proto::Endpoint::new(
                Arc::new(EndpointConfig::default()),
                server.map(Arc::new),
                false,
                Some([seed; 32]),
            ),
            client,
            conns: BTreeMap::new(),
            dirty: BTreeSet::new(),
            responses: VecDeque::new(),
            connected: 0,
            received: 0,
            stream: None,
            newest: None,
            buf: Vec::new(),
        };
        Ok((end(None, Some(client), 1), end(Some(server), None, 2)))
    }

    fn insert(&mut self, handle: ConnectionHandle, conn: quinn_proto::Connection) {
        self.conns.insert(handle, Box::new(conn));
        self.newest = Some(handle);
        self.drive(handle);
    }

    /// Shuttles a connection's endpoint events and handles its application events.
    fn drive(&mut self, handle: ConnectionHandle) {
        let Some(conn) = self.conns.get_mut(&handle) else {
            return;
        };
        let mut drained = false;
        while let Some(event) = conn.poll_endpoint_events() {
            drained |= event.is_drained();
            if let Some(event) = self.endpoint.handle_event(handle, event) {
                conn.handle_event(event);
            }
        }
        while let Some(event) = conn.poll() {
            match event {
                quinn_proto::Event::Connected => self.connected += 1,
                quinn_proto::Event::Stream(StreamEvent::Opened { dir }) => {
                    while let Some(id) = conn.streams().accept(dir) {
                        self.received += read_all(conn, id);
                    }
                }
                quinn_proto::Event::Stream(StreamEvent::Readable { id }) => {
                    self.received += read_all(conn, id);
                }
                _ => {}
            }
        }
        self.dirty.insert(handle);
        if drained {
            self.conns.remove(&handle);
            self.dirty.remove(&handle);
            if self.stream.is_some_and(|(h, _)| h == handle) {
                self.stream = None;
            }
        }
    }
}

/// Reads a quinn stream until nothing is left; returns the bytes read.
fn read_all(conn: &mut quinn_proto::Connection, id: quinn_proto::StreamId) -> u64 {
    let mut total = 0;
    let mut stream = conn.recv_stream(id);
    if let Ok(mut chunks) = stream.read(true) {
        while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
            total += chunk.bytes.len() as u64;
        }
        let _ = chunks.finalize();
    }
    total
}

impl Endpoint for QuinnEnd {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match self
            .endpoint
            .handle(now, from, None, None, BytesMut::from(data), &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.handle_event(event);
                    self.drive(handle);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                buf.clear();
                match self.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok((handle, conn)) => self.insert(handle, conn),
                    Err(e) => {
                        if let Some(t) = e.response {
                            self.responses
                                .push_back((t.destination, buf[..t.size].to_vec()));
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.responses
                    .push_back((t.destination, buf[..t.size].to_vec()));
            }
            None => {}
        }
        self.buf = buf;
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnectionHandle> = self
            .conns
            .iter_mut()
            .filter_map(|(h, c)| c.poll_timeout().filter(|t| *t <= now).map(|_| *h))
            .collect();
        for handle in due {
            if let Some(conn) = self.conns.get_mut(&handle) {
                conn.handle_timeout(now);
            }
            self.drive(handle);
        }
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.conns
            .values_mut()
            .filter_map(|c| c.poll_timeout())
            .min()
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(SocketAddr, usize)> {
        buf.clear();
        if let Some((to, data)) = self.responses.pop_front() {
            buf.extend_from_slice(&data);
            return Some((to, data.len()));
        }
        while let Some(&handle) = self.dirty.first() {
            let Some(conn) = self.conns.get_mut(&handle) else {
                self.dirty.remove(&handle);
                continue;
            };
            match conn.poll_transmit(now, 1, buf) {
                Some(t) => {
                    self.drive(handle);
                    return Some((t.destination, t.size));
                }
                None => {
                    self.dirty.remove(&handle);
                }
            }
        }
        None
    }

    fn process_events(&mut self) {
        // Application events are handled as they arise, in `drive`.
    }

    fn connected(&self) -> u64 {
        self.connected
    }

    fn received(&self) -> u64 {
        self.received
    }

    fn dial(&mut self, now: Instant, to: SocketAddr) -> Result<(), BenchError> {
        let client = self
            .client
            .clone()
            .ok_or_else(|| BenchError::Setup("the baseline server cannot dial".into()))?;
        let (handle, conn) = self
            .endpoint
            .connect(now, client, to, "localhost")
            .map_err(|e| BenchError::Setup(format!("baseline connect: {e}")))?;
        self.insert(handle, conn);
        Ok(())
    }

    fn close_all(&mut self, now: Instant) {
        let handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for handle in handles {
            if let Some(conn) = self.conns.get_mut(&handle) {
                conn.close(now, VarInt::from_u32(0), bytes::Bytes::new());
            }
            self.drive(handle);
        }
        self.stream = None;
    }

    fn write(&mut self, data: &[u8]) -> usize {
        if self.stream.is_none() {
            let Some(handle) = self.newest.filter(|h| self.conns.contains_key(h)) else {
                return 0;
            };
            let Some(conn) = self.conns.get_mut(&handle) else {
                return 0;
            };
            self.stream = conn.streams().open(Dir::Bi).map(|id| (handle, id));
        }
        let Some((handle, id)) = self.stream else {
            return 0;
        };
        let Some(conn) = self.conns.get_mut(&handle) else {
            return 0;
        };
        let written = conn.send_stream(id).write(data).unwrap_or(0);
        self.dirty.insert(handle);
        written
    }
}

/// Two endpoints joined by an instant, lossless link, on a virtual clock.
pub(crate) struct Wire<E> {
    pub(crate) a: E,
    pub(crate) b: E,
    pub(crate) now: Instant,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    to_a: VecDeque<Vec<u8>>,
}

impl<E: Endpoint> Wire<E> {
    pub(crate) fn new(a: E, b: E, now: Instant) -> Self {
        Self {
            a,
            b,
            now,
            buf: Vec::new(),
            scratch: Vec::new(),
            to_a: VecDeque::new(),
        }
    }

    /// The two endpoints, A first.
    pub(crate) fn into_ends(self) -> (E, E) {
        (self.a, self.b)
    }

    /// Delivers datagrams both ways at the current time until neither side sends more.
    pub(crate) fn exchange(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some((to, len)) = self.a.poll_transmit(self.now, &mut self.buf) {
                moved = true;
                if to == ADDR_B {
                    self.b.handle_datagram(self.now, ADDR_A, &self.buf[..len]);
                }
            }
            self.a.process_events();
            self.b.process_events();
            while let Some((to, len)) = self.b.poll_transmit(self.now, &mut self.buf) {
                moved = true;
                if to == ADDR_A {
                    self.a.handle_datagram(self.now, ADDR_B, &self.buf[..len]);
                }
            }
            self.a.process_events();
            self.b.process_events();
            if !moved {
                return;
            }
        }
    }

    /// Runs both sides' due timers.
    pub(crate) fn run_timers(&mut self) {
        let now = self.now;
        if self.a.poll_timeout().is_some_and(|t| t <= now) {
            self.a.handle_timeout(now);
        }
        if self.b.poll_timeout().is_some_and(|t| t <= now) {
            self.b.handle_timeout(now);
        }
    }

    /// Moves the clock by `by`, runs timers and exchanges what they sent.
    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.run_timers();
        self.exchange();
    }

    /// Connects A to B; returns once both sides report the connection.
    pub(crate) fn connect(&mut self) -> Result<(), BenchError> {
        let (a0, b0) = (self.a.connected(), self.b.connected());
        self.a.dial(self.now, ADDR_B)?;
        for _ in 0..1000 {
            self.exchange();
            if self.a.connected() > a0 && self.b.connected() > b0 {
                return Ok(());
            }
            self.advance(Duration::from_micros(100));
        }
        Err(BenchError::Stuck("handshake did not complete"))
    }

    /// One datagram of A's stream data to B, with B's answers back to A. The part B spends
    /// receiving (handling the datagram, reading the stream, sending its acknowledgements) is
    /// in the never-inlined [`receive`], so a profiler can single it out; it is timed when
    /// `timed`. Returns `None` (after moving the clock) when A has nothing to send.
    pub(crate) fn data_datagram(&mut self, chunk: &[u8], timed: bool) -> Option<Duration> {
        while let Some(data) = self.to_a.pop_front() {
            self.a.handle_datagram(self.now, ADDR_B, &data);
        }
        self.a.process_events();
        self.a.write(chunk);
        let Some((_, len)) = self.a.poll_transmit(self.now, &mut self.buf) else {
            self.advance(Duration::from_micros(50));
            return None;
        };
        let start = timed.then(Instant::now);
        receive(
            &mut self.b,
            self.now,
            &self.buf[..len],
            &mut self.scratch,
            &mut self.to_a,
        );
        Some(start.map_or(Duration::ZERO, |s| s.elapsed()))
    }
}

/// B's side of one datagram: handle it, read the stream, queue what B sends back, and ask
/// when to wake up next (as a driver does after every turn).
#[inline(never)]
pub(crate) fn receive<E: Endpoint>(
    b: &mut E,
    now: Instant,
    datagram: &[u8],
    scratch: &mut Vec<u8>,
    replies: &mut VecDeque<Vec<u8>>,
) {
    b.handle_datagram(now, ADDR_A, datagram);
    b.process_events();
    while let Some((_, len)) = b.poll_transmit(now, scratch) {
        replies.push_back(scratch[..len].to_vec());
    }
    // A driver asks when to wake up after every turn; so does this workload.
    std::hint::black_box(b.poll_timeout());
}
