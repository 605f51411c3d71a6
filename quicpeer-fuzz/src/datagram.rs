//! The `datagram` target: what a remote can do to a [`Manager`] with UDP datagrams alone.
//!
//! A target manager and an honest peer (another manager) sit on two addresses. Depending on
//! the input's [`Mode`] the target starts listening and unconnected, or connected to the peer
//! (as listener or as dialer) by a real handshake. Then each [`Step`] of the input does one
//! thing: inject arbitrary bytes from an arbitrary address, deliver, drop, duplicate, truncate,
//! corrupt or replay the peer's real datagrams, let time pass on a monotonic virtual clock, or
//! make one side send, close, redial or restart. After every step both managers' timers run as a
//! driver would run them, every drain is bounded, and the invariants of
//! [`invariants`](super::invariants) are checked.
//!
//! The handshake's key exchange takes its randomness from the operating system (rustls), so the
//! bytes of real packets differ between runs; the control flow an input drives does not.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use arbitrary::{Arbitrary, Unstructured};

use super::invariants::{check_response, check_state, drain, run_timers, EventLog};
use quicpeer::identity::generate_certificate;
use quicpeer::identity::null_crypto::NullCrypto;
use quicpeer::internals::LoadedCertificate;
use quicpeer::{Config, Identity, Manager, PeerId, Transmit};

/// Steps run from one input at most; the rest of a longer input is ignored.
const MAX_STEPS: usize = 256;
/// Datagrams held in flight per direction; the oldest are dropped beyond it.
const MAX_IN_FLIGHT: usize = 256;
/// Delivered datagrams of the peer kept for [`Step::Replay`].
const HISTORY: usize = 32;
/// Streams each side may open concurrently, each way.
const STREAMS: u32 = 16;

/// Where the target starts.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Listening, no connection yet.
    Listening,
    /// Connected: the peer dialed the target.
    ConnectedAsListener,
    /// Connected: the target dialed the peer.
    ConnectedAsDialer,
}

/// The source address of an injected datagram.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The honest peer's address (spoofed, or the peer's own middlebox).
    Peer,
    /// One of eight fixed stranger addresses, so that a stranger can come back.
    Stranger(u8),
    /// Any IPv4 address and port.
    V4([u8; 4], u16),
    /// Any IPv6 address and port.
    V6([u8; 16], u16),
}

/// The local address an injected datagram was received on, as a driver may report it.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalIp {
    /// Not reported.
    Unknown,
    /// The target's own address.
    Ours,
    /// Any IPv4 address.
    Other([u8; 4]),
}

/// The bytes of a datagram: a little-endian `u16` length, then that many bytes (fewer if the
/// input ends first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Payload {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = usize::from(u16::arbitrary(u)?).min(u.len());
        Ok(Self(u.bytes(len)?.to_vec()))
    }
}

/// One step of a `datagram` input.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Arbitrary bytes into the target.
    Inject {
        /// Where they claim to come from.
        from: Source,
        /// Where they arrived.
        local: LocalIp,
        /// The datagram.
        data: Payload,
    },
    /// The peer's oldest datagram in flight reaches the target.
    Deliver,
    /// The peer's oldest datagram in flight reaches the target with one byte changed.
    Corrupt {
        /// Which byte (modulo the length).
        at: u16,
        /// XORed into it (0 becomes 0xff).
        xor: u8,
    },
    /// The peer's oldest datagram in flight reaches the target cut short.
    Truncate {
        /// Bytes kept (modulo the length).
        keep: u16,
    },
    /// The peer's oldest datagram in flight is lost.
    Drop,
    /// The peer's oldest datagram in flight reaches the target twice.
    Duplicate,
    /// One of the peer's recently delivered datagrams reaches the target again.
    Replay {
        /// Which one, counted back from the newest.
        back: u8,
    },
    /// The target's oldest datagram to the peer reaches it, or is lost.
    Reply {
        /// Lost instead of delivered.
        lose: bool,
    },
    /// Everything in flight both ways is delivered, until nothing is.
    Flush,
    /// Time passes.
    Wait {
        /// Milliseconds.
        millis: u16,
    },
    /// The peer writes on a fresh stream to the target, and finishes it.
    PeerSends {
        /// Bytes written.
        len: u8,
    },
    /// The target writes on a fresh stream to the peer, and finishes it.
    TargetSends {
        /// Bytes written.
        len: u8,
    },
    /// The peer restarts: same identity, same address, state lost.
    PeerRestarts,
    /// The peer closes its connection to the target.
    PeerCloses,
    /// The target closes its connection to the peer.
    TargetCloses,
    /// The peer dials the target.
    PeerDials,
    /// The target dials the peer.
    TargetDials,
    /// The target replaces its connection to the peer (make-before-break).
    TargetRedials,
}

/// A whole `datagram` input: the mode, the address-validation switch, then steps until the
/// bytes run out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramInput {
    /// Where the target starts.
    pub mode: Mode,
    /// The target asks for address validation (a Retry) beyond one inbound handshake in
    /// flight; otherwise it refuses inbound handshakes beyond three.
    pub retry: bool,
    /// What happens then.
    pub steps: Vec<Step>,
}

impl DatagramInput {
    /// Decodes an input; every byte string decodes to something.
    pub fn decode(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let mode = super::decode(&mut u).unwrap_or(Mode::Listening);
        let retry = super::decode(&mut u).unwrap_or(false);
        let mut steps = Vec::new();
        while !u.is_empty() && steps.len() < MAX_STEPS {
            match super::decode(&mut u) {
                Some(step) => steps.push(step),
                None => break,
            }
        }
        Self { mode, retry, steps }
    }
}

/// How the harness's managers protect their packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crypto {
    /// TLS 1.3, as on a real network: each connected input pays a real handshake, and almost
    /// no injected bytes get past packet protection.
    Tls,
    /// quicpeer's null handshake (`Config::null_crypto`): certificates still checked, packets
    /// in the clear, so injected bytes reach the frame decoder and the handshake costs little.
    Null,
}

/// The `datagram` fuzz target, on the null handshake. Panics only when an invariant fails.
pub fn datagram(data: &[u8]) {
    datagram_with(Crypto::Null, data);
}

/// The `datagram_tls` fuzz target: the same inputs on real TLS, whose handshakes, captured
/// packets and packet protection the null handshake leaves out.
pub fn datagram_tls(data: &[u8]) {
    datagram_with(Crypto::Tls, data);
}

fn datagram_with(crypto: Crypto, data: &[u8]) {
    let input = DatagramInput::decode(data);
    let mut harness = Harness::new(input.mode, input.retry, crypto);
    for step in &input.steps {
        harness.step(step);
    }
}

/// Where the target and the peer live.
pub(super) fn target_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 4001)
}

/// The honest peer's address.
pub(super) fn peer_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 4001)
}

/// An identity with a certificate made, and its key loaded, once per process: generating the
/// certificate and loading its key are most of what building a manager costs, and the harness
/// builds two or more per input.
pub(super) struct Credentials {
    identity: Identity,
    certificate: LoadedCertificate,
}

impl Credentials {
    fn new(seed: u8) -> Self {
        let identity = Identity::from_ed25519_seed([seed; 32]);
        let loaded = generate_certificate(identity.keypair())
            .map_err(|e| e.to_string())
            .and_then(|(c, k)| LoadedCertificate::load(c, k).map_err(|e| e.to_string()));
        match loaded {
            Ok(certificate) => Self {
                identity,
                certificate,
            },
            Err(error) => panic!("harness: cannot generate a certificate: {error}"),
        }
    }
}

/// The target's and the peer's credentials, built once per process.
fn credentials() -> &'static (Credentials, Credentials) {
    static CREDENTIALS: OnceLock<(Credentials, Credentials)> = OnceLock::new();
    CREDENTIALS.get_or_init(|| (Credentials::new(1), Credentials::new(2)))
}

/// The null handshake every manager of the process shares, so that each certificate's
/// signatures are checked once per process, not once per handshake.
pub(super) fn null_crypto() -> NullCrypto {
    static NULL: OnceLock<NullCrypto> = OnceLock::new();
    NULL.get_or_init(NullCrypto::new).clone()
}

/// The origin of the virtual clock; only differences from it matter.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The wall clock the managers see at the origin: 2026-01-01T00:00:00Z.
pub(super) fn wall_origin() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// The target's configuration: short timers, and limits small enough for an input to reach.
pub(super) fn target_config(retry: bool, crypto: Crypto) -> Config {
    let mut config = peer_config(crypto);
    config.limits.max_connections = 8;
    config.limits.max_inbound_handshakes = 3;
    config.limits.max_pending_dials = 4;
    config.limits.retry_above = retry.then_some(1);
    config
}

pub(super) fn peer_config(crypto: Crypto) -> Config {
    let mut config = Config::default();
    config.null_crypto = (crypto == Crypto::Null).then(null_crypto);
    config.keep_alive = Some(Duration::from_secs(1));
    config.idle_timeout = Duration::from_secs(5);
    config.handshake_timeout = Duration::from_secs(2);
    // Few enough streams for an input to reach the limit; and quinn prepares the state of
    // every stream the peer may open, which at the default 100 each way was a seventh of an
    // execution.
    config.max_concurrent_bidi_streams = STREAMS;
    config.max_concurrent_uni_streams = STREAMS;
    config
}

/// A manager for the harness. Construction only fails on a bad configuration, and these are
/// fixed: a failure is a bug of the harness, not a finding.
fn manager(credentials: &Credentials, config: Config, seed: u8, now: Instant) -> Manager {
    let elapsed = now.saturating_duration_since(origin());
    match Manager::with_loaded_certificate(
        now,
        wall_origin() + elapsed,
        credentials.identity.clone(),
        config,
        [seed; 32],
        &credentials.certificate,
    ) {
        Ok(manager) => manager,
        Err(error) => panic!("harness: the fixed configuration does not build: {error}"),
    }
}

/// One side of the harness: a manager, its event log, and its incarnation.
pub(super) struct Side {
    pub(super) manager: Manager,
    pub(super) log: EventLog,
    credentials: &'static Credentials,
    pub(super) addr: SocketAddr,
}

impl Side {
    pub(super) fn peer_id(&self) -> PeerId {
        self.credentials.identity.peer_id()
    }
}

/// A target and an honest peer, the datagrams in flight between them, and a virtual clock.
pub(super) struct Harness {
    pub(super) now: Instant,
    pub(super) target: Side,
    pub(super) peer: Side,
    peer_seed: u8,
    /// The peer's configuration, for its restarts too.
    peer_config: Config,
    /// Datagrams from the peer on their way to the target.
    pub(super) to_target: VecDeque<Vec<u8>>,
    /// Datagrams from the target on their way to the peer.
    pub(super) to_peer: VecDeque<Vec<u8>>,
    /// The peer's datagrams delivered so far (the newest [`HISTORY`]).
    history: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
}

impl Harness {
    fn new(mode: Mode, retry: bool, crypto: Crypto) -> Self {
        Self::with_configs(mode, target_config(retry, crypto), peer_config(crypto))
    }

    /// A harness whose target and honest peer run these configurations (the `frames` target
    /// gives the peer a key log, and both the default stream limits).
    pub(super) fn with_configs(mode: Mode, target_config: Config, peer_config: Config) -> Self {
        let now = origin();
        let (target, peer) = credentials();
        let mut harness = Self {
            now,
            target: Side {
                manager: manager(target, target_config, 7, now),
                log: EventLog::default(),
                credentials: target,
                addr: target_addr(),
            },
            peer: Side {
                manager: manager(peer, peer_config.clone(), 8, now),
                log: EventLog::default(),
                credentials: peer,
                addr: peer_addr(),
            },
            peer_seed: 8,
            peer_config,
            to_target: VecDeque::new(),
            to_peer: VecDeque::new(),
            history: VecDeque::new(),
            buf: Vec::new(),
        };
        let dialed = match mode {
            Mode::Listening => return harness,
            Mode::ConnectedAsListener => harness.peer_dials(),
            Mode::ConnectedAsDialer => harness.target_dials(),
        };
        assert!(dialed, "harness: the setup dial was refused");
        for _ in 0..64 {
            harness.flush();
            let target = harness.target.peer_id();
            let peer = harness.peer.peer_id();
            if harness.target.manager.connection(&peer).is_some()
                && harness.peer.manager.connection(&target).is_some()
            {
                return harness;
            }
            harness.wait(Duration::from_millis(1));
        }
        panic!("harness: the setup handshake did not complete");
    }

    pub(super) fn step(&mut self, step: &Step) {
        match step {
            Step::Inject { from, local, data } => {
                let from = source(*from);
                let local = match local {
                    LocalIp::Unknown => None,
                    LocalIp::Ours => Some(self.target.addr.ip()),
                    LocalIp::Other(ip) => Some(IpAddr::V4(Ipv4Addr::from(*ip))),
                };
                self.inject_into_target(from, local, &data.0);
            }
            Step::Deliver => {
                if let Some(data) = self.to_target.pop_front() {
                    self.deliver_to_target(data);
                }
            }
            Step::Corrupt { at, xor } => {
                if let Some(mut data) = self.to_target.pop_front() {
                    if !data.is_empty() {
                        let at = usize::from(*at) % data.len();
                        data[at] ^= if *xor == 0 { 0xff } else { *xor };
                    }
                    let from = self.peer.addr;
                    self.inject_into_target(from, None, &data);
                }
            }
            Step::Truncate { keep } => {
                if let Some(mut data) = self.to_target.pop_front() {
                    data.truncate(usize::from(*keep) % data.len().max(1));
                    let from = self.peer.addr;
                    self.inject_into_target(from, None, &data);
                }
            }
            Step::Drop => {
                self.to_target.pop_front();
            }
            Step::Duplicate => {
                if let Some(data) = self.to_target.pop_front() {
                    self.deliver_to_target(data.clone());
                    self.deliver_to_target(data);
                }
            }
            Step::Replay { back } => {
                let len = self.history.len();
                if len > 0 {
                    let data = self.history[len - 1 - usize::from(*back) % len].clone();
                    let from = self.peer.addr;
                    self.inject_into_target(from, None, &data);
                }
            }
            Step::Reply { lose } => {
                if let Some(data) = self.to_peer.pop_front() {
                    if !lose {
                        self.deliver_to_peer(&data);
                    }
                }
            }
            Step::Flush => self.flush(),
            Step::Wait { millis } => self.wait(Duration::from_millis(u64::from(*millis))),
            Step::PeerSends { len } => {
                let target = self.target.peer_id();
                send(&mut self.peer.manager, &target, usize::from(*len));
            }
            Step::TargetSends { len } => {
                let peer = self.peer.peer_id();
                send(&mut self.target.manager, &peer, usize::from(*len));
            }
            Step::PeerRestarts => {
                self.peer_seed = self.peer_seed.wrapping_add(1);
                self.peer.manager = manager(
                    self.peer.credentials,
                    self.peer_config.clone(),
                    self.peer_seed,
                    self.now,
                );
                self.peer.log = EventLog::default();
                // What was in flight to the old incarnation is lost with it.
                self.to_peer.clear();
            }
            Step::PeerCloses => {
                let target = self.target.peer_id();
                if let Some(conn) = self.peer.manager.connection(&target) {
                    self.peer.manager.close(self.now, conn);
                }
            }
            Step::TargetCloses => {
                let peer = self.peer.peer_id();
                if let Some(conn) = self.target.manager.connection(&peer) {
                    self.target.manager.close(self.now, conn);
                }
            }
            Step::PeerDials => {
                self.peer_dials();
            }
            Step::TargetDials => {
                self.target_dials();
            }
            Step::TargetRedials => {
                let peer = self.peer.peer_id();
                let _ = self.target.manager.redial(self.now, peer);
            }
        }
        self.settle();
    }

    fn peer_dials(&mut self) -> bool {
        let (target, addr) = (self.target.peer_id(), self.target.addr);
        let dialed = self.peer.manager.dial(self.now, target, [addr]).is_ok();
        self.settle();
        dialed
    }

    fn target_dials(&mut self) -> bool {
        let (peer, addr) = (self.peer.peer_id(), self.peer.addr);
        let dialed = self.target.manager.dial(self.now, peer, [addr]).is_ok();
        self.settle();
        dialed
    }

    /// A datagram into the target, with the checks on what it answers statelessly.
    fn inject_into_target(&mut self, from: SocketAddr, local: Option<IpAddr>, data: &[u8]) {
        self.target
            .manager
            .handle_datagram(self.now, from, local, data);
        let peer_addr = self.peer.addr;
        let to_peer = &mut self.to_peer;
        drain(
            &mut self.target.manager,
            self.now,
            &mut self.target.log,
            &mut self.buf,
            |transmit, bytes| {
                check_response(transmit, data.len(), from);
                route(transmit, bytes, peer_addr, to_peer);
            },
        );
    }

    pub(super) fn deliver_to_target(&mut self, data: Vec<u8>) {
        let from = self.peer.addr;
        self.inject_into_target(from, Some(self.target.addr.ip()), &data);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(data);
    }

    fn deliver_to_peer(&mut self, data: &[u8]) {
        let from = self.target.addr;
        self.peer
            .manager
            .handle_datagram(self.now, from, Some(self.peer.addr.ip()), data);
        let target_addr = self.target.addr;
        let to_target = &mut self.to_target;
        drain(
            &mut self.peer.manager,
            self.now,
            &mut self.peer.log,
            &mut self.buf,
            |transmit, bytes| route(transmit, bytes, target_addr, to_target),
        );
    }

    /// Delivers everything in flight both ways until nothing is (bounded).
    fn flush(&mut self) {
        for _ in 0..64 {
            if self.to_target.is_empty() && self.to_peer.is_empty() {
                return;
            }
            while let Some(data) = self.to_target.pop_front() {
                self.deliver_to_target(data);
            }
            while let Some(data) = self.to_peer.pop_front() {
                self.deliver_to_peer(&data);
            }
            self.settle();
        }
    }

    fn wait(&mut self, by: Duration) {
        self.now += by;
        self.settle();
    }

    /// Runs both sides' timers at `now` and checks the invariants.
    pub(super) fn settle(&mut self) {
        let now = self.now;
        let (peer_addr, target_addr) = (self.peer.addr, self.target.addr);
        let to_peer = &mut self.to_peer;
        run_timers(
            &mut self.target.manager,
            now,
            &mut self.target.log,
            &mut self.buf,
            |transmit, bytes| {
                assert!(
                    transmit.conn.is_some(),
                    "invariant: a stateless response without a datagram to answer"
                );
                route(transmit, bytes, peer_addr, to_peer);
            },
        );
        let to_target = &mut self.to_target;
        run_timers(
            &mut self.peer.manager,
            now,
            &mut self.peer.log,
            &mut self.buf,
            |transmit, bytes| route(transmit, bytes, target_addr, to_target),
        );
        check_state(&self.target.manager, &self.target.log);
        check_state(&self.peer.manager, &self.peer.log);
    }
}

/// Queues a transmit for `to` if it goes there; datagrams to anyone else vanish.
fn route(transmit: &Transmit, bytes: &[u8], to: SocketAddr, queue: &mut VecDeque<Vec<u8>>) {
    if transmit.destination != to {
        return;
    }
    if queue.len() == MAX_IN_FLIGHT {
        queue.pop_front();
    }
    let segment = transmit.segment_size.unwrap_or(bytes.len()).max(1);
    queue.extend(bytes.chunks(segment).map(<[u8]>::to_vec));
}

/// Opens a stream to `peer`, writes `len` bytes and finishes it; errors are fine.
fn send(manager: &mut Manager, peer: &PeerId, len: usize) {
    if let Ok(stream) = manager.open_stream_to(peer) {
        let data = vec![0x5a; len];
        let _ = manager.stream_write(stream, &data);
        let _ = manager.stream_finish(stream);
    }
}

fn source(source: Source) -> SocketAddr {
    match source {
        Source::Peer => peer_addr(),
        Source::Stranger(n) => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1 + n % 8)), 5000)
        }
        Source::V4(ip, port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port),
        Source::V6(ip, port) => SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port),
    }
}
