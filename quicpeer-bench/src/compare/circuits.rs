//! Throughput through one relayed circuit, and the relay's memory per reservation and per
//! circuit: quicpeer's relay against rust-libp2p 0.57's `relay::Behaviour`, in the same run.
//!
//! Each relay runs in a process of its own, the `compare-relay` binary (built beside
//! `compare`), so that its memory is its own: that binary counts the bytes its heap holds (a
//! counting global allocator) and reads its resident set (`VmRSS` in `/proc/self/status`)
//! when asked on stdin. The clients are the same for both relays, rust-libp2p 0.57 over QUIC
//! with noise and yamux on circuits, so only the relay differs. Both relays run with the same
//! limits ([`relay_limits`]): no rate limiter, counts far above the load, and circuits of
//! [`CIRCUIT_BYTES`] and [`CIRCUIT_DURATION`] (the defaults, 128 KiB and 2 min, would cut a
//! transfer of a few MiB).
//!
//! - [`throughput`]: client A reserves, B dials `<relay>/p2p-circuit/p2p/A`, opens one stream
//!   and writes N bytes; timed from the stream opened to A having read the last byte.
//! - [`memory`]: K clients connect to the relay, then reserve, then M of them dial M others
//!   through it; the relay's heap and RSS after each step give bytes per connection, per
//!   reservation and per circuit.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, ping, relay, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder};
use quicpeer::address;
use quicpeer::driver::{Driver, Exit};
use quicpeer::protocols::relay::{Relay, RelayConfig, RelayEvent};
use quicpeer::{Config, Host, HostConfig, Identity, Manager};

use super::{load_note, median, report, CompareError, Report};
use crate::Cell;

/// Bytes a circuit may carry each way, on both relays: far above any transfer here.
pub const CIRCUIT_BYTES: u64 = 1 << 40;
/// How long a circuit may last, on both relays.
pub const CIRCUIT_DURATION: Duration = Duration::from_secs(3600);
/// Reservations and circuits each relay allows: far above the load.
pub const MAX_COUNT: usize = 100_000;
/// Clients that connect to the relay at once in [`memory`].
pub const BATCH: usize = 100;
/// The protocol of the bulk stream between the two clients.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/quicpeer-bench/relay-bulk/1.0.0");

/// The relay servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `quicpeer::protocols::relay::Relay` on the mio driver.
    Quicpeer,
    /// rust-libp2p 0.57's `relay::Behaviour`, on a tokio current-thread runtime.
    RustLibp2p,
}

impl Server {
    /// `quicpeer` or `rust-libp2p`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "quicpeer" => Some(Self::Quicpeer),
            "rust-libp2p" => Some(Self::RustLibp2p),
            _ => None,
        }
    }

    /// The name `from_name` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Quicpeer => "quicpeer",
            Self::RustLibp2p => "rust-libp2p",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Quicpeer => "quicpeer relay",
            Self::RustLibp2p => "rust-libp2p relay",
        }
    }
}

// ---- the relay process ----

/// quicpeer's relay configuration for these runs: see the module docs.
pub fn relay_limits() -> RelayConfig {
    let mut config = RelayConfig::default();
    config.max_reservations = MAX_COUNT;
    config.max_reservations_per_ip = MAX_COUNT;
    config.max_circuits = MAX_COUNT;
    config.max_pending = MAX_COUNT;
    config.circuit_bytes = CIRCUIT_BYTES;
    config.circuit_duration = CIRCUIT_DURATION;
    config
}

/// Runs a relay server on the calling thread until the process exits: the body of the
/// `compare-relay` binary. `on_listen` gets its address (with `/p2p/`) once it listens.
pub fn serve(server: Server, on_listen: impl FnOnce(&Multiaddr)) -> Result<(), CompareError> {
    let setup = |e: String| CompareError::Setup(e);
    match server {
        Server::Quicpeer => {
            let identity = Identity::from_ed25519_seed([1; 32]);
            let (peer, keypair) = (identity.peer_id(), identity.keypair().clone());
            let (now, wall) = (Instant::now(), SystemTime::now());
            let manager = Manager::new(now, wall, identity, Config::default(), rand::random())
                .map_err(|e| setup(e.to_string()))?;
            let host = Host::new(now, manager, HostConfig::default(), rand::random());
            let relay = Relay::new(now, wall, host, keypair, relay_limits())
                .map_err(|e| setup(e.to_string()))?;
            let bind = "127.0.0.1:0".parse().map_err(|_| setup("address".into()))?;
            let mut driver = Driver::bind(relay, &[bind]).map_err(|e| setup(e.to_string()))?;
            let local = driver.local_addrs()[0];
            driver
                .machine_mut()
                .set_listen_addrs(vec![address::to_multiaddr(local, None)]);
            let addr: Multiaddr = address::to_multiaddr(local, Some(peer))
                .to_string()
                .parse()
                .map_err(|_| setup("multiaddr".into()))?;
            on_listen(&addr);
            loop {
                match driver.run_until(None, |_, _: RelayEvent| {}) {
                    Ok(Exit::Stopped) => return Ok(()),
                    Err(e) => return Err(setup(e.to_string())),
                    Ok(_) => {}
                }
            }
        }
        Server::RustLibp2p => {
            let runtime = runtime().map_err(|e| setup(e.to_string()))?;
            runtime.block_on(rust_relay(on_listen))
        }
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct ServerBehaviour {
    relay: relay::Behaviour,
    ping: ping::Behaviour,
}

/// rust-libp2p's relay server with the limits of [`relay_limits`].
async fn rust_relay(on_listen: impl FnOnce(&Multiaddr)) -> Result<(), CompareError> {
    let built = SwarmBuilder::with_existing_identity(quicpeer_interop::libp2p_peer::keypair(1))
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let config = relay::Config {
                max_reservations: MAX_COUNT,
                max_reservations_per_peer: 4,
                reservation_duration: Duration::from_secs(3600),
                reservation_rate_limiters: Vec::new(),
                max_circuits: MAX_COUNT,
                max_circuits_per_peer: 4,
                max_circuit_duration: CIRCUIT_DURATION,
                max_circuit_bytes: CIRCUIT_BYTES,
                circuit_src_rate_limiters: Vec::new(),
            };
            ServerBehaviour {
                relay: relay::Behaviour::new(key.public().to_peer_id(), config),
                ping: ping::Behaviour::default(),
            }
        });
    let Ok(builder) = built;
    let mut swarm = builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    let listen: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1"
        .parse()
        .map_err(|_| CompareError::Setup("multiaddr".into()))?;
    swarm
        .listen_on(listen)
        .map_err(|e| CompareError::Setup(e.to_string()))?;
    let local = *swarm.local_peer_id();
    let mut on_listen = Some(on_listen);
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            // Its reservations carry its external addresses: loopback here.
            swarm.add_external_address(address.clone());
            if let Some(on_listen) = on_listen.take() {
                on_listen(&address.with(Protocol::P2p(local)));
            }
        }
    }
}

/// A relay server in a `compare-relay` process.
struct RelayProcess {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl RelayProcess {
    /// Starts the relay; its multiaddr with `/p2p/`.
    fn spawn(server: Server) -> Result<(Self, Multiaddr), CompareError> {
        let setup = |e: String| CompareError::Setup(e);
        let exe = relay_exe().map_err(|e| setup(format!("no compare-relay binary: {e}")))?;
        let mut child = Command::new(&exe)
            .arg(server.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| setup(format!("cannot start {}: {e}", exe.display())))?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => (stdin, stdout),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(setup("no pipes to compare-relay".into()));
            }
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut process = Self {
            child,
            stdin,
            lines,
        };
        let line = process.line(Duration::from_secs(30))?;
        let addr = line
            .strip_prefix("LISTEN ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| setup(format!("compare-relay said {line:?}")))?;
        Ok((process, addr))
    }

    fn line(&mut self, timeout: Duration) -> Result<String, CompareError> {
        self.lines
            .recv_timeout(timeout)
            .map_err(|_| CompareError::Stuck("compare-relay did not answer".into()))
    }

    /// The relay process's (resident set, heap in use), in bytes.
    fn memory(&mut self) -> Result<(u64, u64), CompareError> {
        writeln!(self.stdin, "mem")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| CompareError::Stuck(format!("compare-relay: {e}")))?;
        let line = self.line(Duration::from_secs(10))?;
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some("MEM"), Some(rss), Some(heap)) => match (rss.parse(), heap.parse()) {
                (Ok(rss), Ok(heap)) => Ok((rss, heap)),
                _ => Err(CompareError::Stuck(format!("compare-relay said {line:?}"))),
            },
            _ => Err(CompareError::Stuck(format!("compare-relay said {line:?}"))),
        }
    }

    /// CPU time the relay process has used.
    fn cpu(&self) -> Option<Duration> {
        process_cpu(&self.child.id().to_string())
    }
}

/// CPU time (user and system) process `pid` (or `self`) has used, from `/proc/<pid>/stat`
/// (Linux).
fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here, in ticks.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = clock_ticks()?;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
#[cfg(target_os = "linux")]
fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0)
}

#[cfg(not(target_os = "linux"))]
fn clock_ticks() -> Option<u64> {
    None
}

/// The `compare-relay` binary: `$QUICPEER_COMPARE_RELAY`, else beside the running one.
fn relay_exe() -> std::io::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("QUICPEER_COMPARE_RELAY") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(format!("compare-relay{}", std::env::consts::EXE_SUFFIX));
    if path.exists() {
        Ok(path)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} (build it: cargo build --features compare --bin compare-relay)",
                path.display()
            ),
        ))
    }
}

/// The resident set of the calling process (`VmRSS`, Linux), in bytes.
pub fn own_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// ---- the clients ----

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Client `i`'s identity (distinct from the relays', which use seed 1).
fn client_key(i: u32) -> Keypair {
    let mut secret = [0x5a; 32];
    secret[..4].copy_from_slice(&i.to_le_bytes());
    // Only a wrong length is refused, and the length is fixed here.
    match Keypair::ed25519_from_bytes(&mut secret) {
        Ok(keypair) => keypair,
        Err(_) => unreachable!("a 32-byte Ed25519 secret is always accepted"),
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct ClientBehaviour {
    relay: relay::client::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

fn client_swarm(key: Keypair) -> Option<Swarm<ClientBehaviour>> {
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .ok()?
        .with_behaviour(|_, relay| ClientBehaviour {
            relay,
            ping: ping::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
        })
        .ok()?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Some(swarm)
}

/// What a client reports.
#[derive(Debug)]
enum Seen {
    /// Its connection to the relay is up.
    Connected,
    /// Its reservation was accepted.
    Reserved,
    /// Its dial through the relay connected.
    CircuitUp,
    /// The bulk stream is open: the clock starts.
    Started(Instant),
    /// The listener read this many bytes, the last at this instant.
    Received(u64, Instant),
    /// Something failed.
    Failed(String),
}

/// What a client is told to do.
#[derive(Debug)]
enum Order {
    /// Connect to the relay.
    Connect,
    /// Reserve on the relay and listen on its circuit address.
    Reserve,
    /// Dial this peer through the relay; with `Some(n)`, then write `n` bytes to it.
    Dial(PeerId, Option<u64>),
}

/// A client's event loop: follows orders, reports what it sees (tagged with `index`), reads
/// and counts every bulk stream it is given.
async fn client(
    index: usize,
    key: Keypair,
    relay_addr: Multiaddr,
    mut orders: tokio::sync::mpsc::UnboundedReceiver<Order>,
    seen: mpsc::Sender<(usize, Seen)>,
) {
    let say = move |s: Seen| {
        let _ = seen.send((index, s));
    };
    let Some(mut swarm) = client_swarm(key) else {
        say(Seen::Failed("no swarm".into()));
        return;
    };
    let relay_peer = match relay_addr.iter().last() {
        Some(Protocol::P2p(peer)) => peer,
        _ => return say(Seen::Failed("relay address without /p2p".into())),
    };
    let circuit = relay_addr.clone().with(Protocol::P2pCircuit);
    let mut control = swarm.behaviour().stream.new_control();
    let Ok(mut incoming) = control.accept(PROTOCOL) else {
        return say(Seen::Failed("protocol taken".into()));
    };
    let reader_say = say.clone();
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let say = reader_say.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(e) => return say(Seen::Failed(format!("read: {e}"))),
                    }
                }
                say(Seen::Received(total, Instant::now()));
            });
        }
    });
    let mut target: Option<(PeerId, Option<u64>)> = None;
    let mut connected = false;
    loop {
        tokio::select! {
            order = orders.recv() => match order {
                None => return,
                Some(Order::Connect) => {
                    if let Err(e) = swarm.dial(relay_addr.clone()) {
                        say(Seen::Failed(format!("dial the relay: {e}")));
                    }
                }
                Some(Order::Reserve) => {
                    if let Err(e) = swarm.listen_on(circuit.clone()) {
                        say(Seen::Failed(format!("listen on the circuit: {e}")));
                    }
                }
                Some(Order::Dial(peer, bytes)) => {
                    target = Some((peer, bytes));
                    if let Err(e) = swarm.dial(circuit.clone().with(Protocol::P2p(peer))) {
                        say(Seen::Failed(format!("dial through the relay: {e}")));
                    }
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    if peer_id == relay_peer && !connected {
                        connected = true;
                        say(Seen::Connected);
                    }
                    if let Some((peer, bytes)) = target.filter(|(p, _)| *p == peer_id) {
                        target = None;
                        say(Seen::CircuitUp);
                        if let Some(bytes) = bytes {
                            tokio::spawn(write(control.clone(), peer, bytes, say.clone()));
                        }
                    }
                }
                SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { renewal: false, .. },
                )) => say(Seen::Reserved),
                SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
                    say(Seen::Failed(format!("reservation: {e}")));
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    say(Seen::Failed(format!("dial: {error}")));
                }
                _ => {}
            },
        }
    }
}

/// Opens the bulk stream to `peer` and writes `bytes` bytes on it.
async fn write(mut control: libp2p_stream::Control, peer: PeerId, bytes: u64, say: impl Fn(Seen)) {
    let mut stream = match control.open_stream(peer, PROTOCOL).await {
        Ok(stream) => stream,
        Err(e) => return say(Seen::Failed(format!("open the stream: {e}"))),
    };
    say(Seen::Started(Instant::now()));
    let chunk = vec![0x42u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if let Err(e) = stream.write_all(&chunk[..n]).await {
            return say(Seen::Failed(format!("write: {e}")));
        }
        left -= n as u64;
    }
    if let Err(e) = stream.close().await {
        say(Seen::Failed(format!("close: {e}")));
    }
}

/// Clients on one tokio runtime: `threads` workers (1: a current-thread runtime on a thread
/// of its own).
struct Fleet {
    runtime: Option<tokio::runtime::Runtime>,
    orders: Vec<tokio::sync::mpsc::UnboundedSender<Order>>,
    peers: Vec<PeerId>,
    seen: mpsc::Receiver<(usize, Seen)>,
}

impl Fleet {
    /// Starts `count` clients, with identities `first..first + count`.
    fn spawn(
        first: u32,
        count: usize,
        threads: usize,
        relay_addr: &Multiaddr,
    ) -> Result<Self, CompareError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
            .map_err(|e| CompareError::Setup(e.to_string()))?;
        let (tx, seen) = mpsc::channel();
        let mut orders = Vec::new();
        let mut peers = Vec::new();
        for (index, id) in (first..).take(count).enumerate() {
            let key = client_key(id);
            peers.push(key.public().to_peer_id());
            let (order_tx, order_rx) = tokio::sync::mpsc::unbounded_channel();
            orders.push(order_tx);
            runtime.spawn(client(index, key, relay_addr.clone(), order_rx, tx.clone()));
        }
        Ok(Self {
            runtime: Some(runtime),
            orders,
            peers,
            seen,
        })
    }

    fn order(&self, index: usize, order: Order) {
        if let Some(tx) = self.orders.get(index) {
            let _ = tx.send(order);
        }
    }

    /// Waits until `count` reports match `pick`, or the first failure, or `timeout`.
    fn wait_for<T>(
        &self,
        count: usize,
        timeout: Duration,
        what: &str,
        mut pick: impl FnMut(usize, &Seen) -> Option<T>,
    ) -> Result<Vec<T>, CompareError> {
        let deadline = Instant::now() + timeout;
        let mut found = Vec::new();
        while found.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok((index, Seen::Failed(e))) => {
                    return Err(CompareError::Stuck(format!("{what}: client {index}: {e}")))
                }
                Ok((index, seen)) => found.extend(pick(index, &seen)),
                Err(_) => {
                    return Err(CompareError::Stuck(format!(
                        "{what}: {} of {count} within {timeout:?}",
                        found.len()
                    )))
                }
            }
        }
        Ok(found)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.orders.clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

// ---- throughput ----

/// One transfer through a fresh relay process: (seconds, relay CPU seconds, clients' CPU
/// seconds).
fn transfer(
    server: Server,
    bytes: u64,
    timeout: Duration,
) -> Result<(f64, Option<f64>, Option<f64>), CompareError> {
    let (relay, relay_addr) = RelayProcess::spawn(server)?;
    // Listener A and dialer B, a worker thread each.
    let fleet = Fleet::spawn(0, 2, 2, &relay_addr)?;
    fleet.order(0, Order::Reserve);
    fleet.wait_for(1, timeout, "reservation", |_, s| {
        matches!(s, Seen::Reserved).then_some(())
    })?;
    let cpu_before = (relay.cpu(), process_cpu("self"));
    fleet.order(1, Order::Dial(fleet.peers[0], Some(bytes)));
    let mut started = None;
    let mut received = None;
    fleet.wait_for(2, timeout, "transfer", |_, s| match s {
        Seen::Started(at) => {
            started = Some(*at);
            Some(())
        }
        Seen::Received(n, at) => {
            received = Some((*n, *at));
            Some(())
        }
        _ => None,
    })?;
    let spent = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
        _ => None,
    };
    let cpu = spent(cpu_before.0, relay.cpu());
    let clients_cpu = spent(cpu_before.1, process_cpu("self"));
    match (started, received) {
        (Some(start), Some((n, end))) if n == bytes => Ok((
            end.saturating_duration_since(start).as_secs_f64(),
            cpu,
            clients_cpu,
        )),
        (_, Some((n, _))) => Err(CompareError::Stuck(format!("{n} of {bytes} bytes arrived"))),
        _ => Err(CompareError::Stuck("no transfer".into())),
    }
}

/// Bytes per second through one circuit, per relay, `rounds` transfers each, alternating.
pub fn throughput(
    servers: &[Server],
    bytes: u64,
    rounds: usize,
    progress: &mut dyn FnMut(String),
) -> Result<Report, CompareError> {
    let mut report = report(
        "relay-throughput",
        &[
            "relay",
            "MiB/s (median)",
            "MiB/s per round",
            "relay CPU s/GiB (median)",
            "clients' CPU s/GiB (median)",
            "MiB/s vs rust-libp2p relay",
        ],
    );
    report.notes.push(load_note("before"));
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut client_cpus: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let timeout = Duration::from_secs(60).max(Duration::from_secs(bytes / (1 << 20)));
    for round in 0..rounds {
        for (i, &server) in servers.iter().enumerate() {
            let (secs, cpu, clients_cpu) = transfer(server, bytes, timeout)?;
            let rate = bytes as f64 / (1 << 20) as f64 / secs.max(1e-9);
            progress(format!(
                "round {}: {}: {bytes} B in {:.3} s: {rate:.1} MiB/s, relay CPU {}",
                round + 1,
                server.label(),
                secs,
                cpu.map_or("unknown".into(), |c| format!("{c:.2} s"))
            ));
            rates[i].push(rate);
            let gib = bytes as f64 / (1u64 << 30) as f64;
            cpus[i].extend(cpu.map(|c| c / gib));
            client_cpus[i].extend(clients_cpu.map(|c| c / gib));
        }
    }
    let baseline = servers
        .iter()
        .position(|&s| s == Server::RustLibp2p)
        .and_then(|i| median(&rates[i]));
    for (i, &server) in servers.iter().enumerate() {
        let rate = median(&rates[i]);
        report.rows.push(vec![
            Cell::text(server.label()),
            rate.map_or(Cell::Missing, |r| Cell::num(r, 1)),
            Cell::text(
                rates[i]
                    .iter()
                    .map(|r| format!("{r:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            median(&cpus[i]).map_or(Cell::Missing, |c| Cell::num(c, 2)),
            median(&client_cpus[i]).map_or(Cell::Missing, |c| Cell::num(c, 2)),
            match (rate, baseline) {
                (Some(r), Some(b)) if b > 0.0 => Cell::num(r / b, 2),
                _ => Cell::Missing,
            },
        ]);
    }
    report.notes.push(format!(
        "{bytes} bytes per transfer on one stream (yamux over noise, inside the circuit's \
         QUIC streams), from a rust-libp2p 0.57 client to another through the relay (each \
         client on a tokio worker thread, the relay a process of its own), timed from the \
         stream opened to the last byte read; a fresh relay per transfer; {rounds} rounds, \
         alternating; both relays allow {CIRCUIT_BYTES} bytes and {} s per circuit; relay \
         CPU and the clients' (the compare process) from /proc/<pid>/stat (10 ms ticks)",
        CIRCUIT_DURATION.as_secs()
    ));
    report.notes.push(load_note("after"));
    Ok(report)
}

// ---- memory ----

/// The relay's (RSS, heap) after each step of one memory run.
#[derive(Debug, Clone, Copy)]
struct Steps {
    idle: (u64, u64),
    connected: (u64, u64),
    reserved: (u64, u64),
    circuits: (u64, u64),
}

fn memory_run(
    server: Server,
    clients: usize,
    circuits: usize,
    settle: Duration,
    progress: &mut dyn FnMut(String),
) -> Result<Steps, CompareError> {
    let timeout = Duration::from_secs(120);
    let (mut relay, relay_addr) = RelayProcess::spawn(server)?;
    let fleet = Fleet::spawn(1_000, clients, 2, &relay_addr)?;
    std::thread::sleep(settle);
    let idle = relay.memory()?;
    // In batches: a thousand handshakes at once overran rust-libp2p's relay (its 5 s
    // handshake timeout, on a loaded machine).
    for batch in (0..clients).collect::<Vec<_>>().chunks(BATCH) {
        for &i in batch {
            fleet.order(i, Order::Connect);
        }
        fleet.wait_for(batch.len(), timeout, "connections", |_, s| {
            matches!(s, Seen::Connected).then_some(())
        })?;
    }
    std::thread::sleep(settle);
    let connected = relay.memory()?;
    for i in 0..clients {
        fleet.order(i, Order::Reserve);
    }
    fleet.wait_for(clients, timeout, "reservations", |_, s| {
        matches!(s, Seen::Reserved).then_some(())
    })?;
    std::thread::sleep(settle);
    let reserved = relay.memory()?;
    // Client i dials client (clients - 1 - i): every client in one circuit at most, over the
    // connection to the relay it has.
    for i in 0..circuits {
        fleet.order(i, Order::Dial(fleet.peers[clients - 1 - i], None));
    }
    fleet.wait_for(circuits, timeout, "circuits", |_, s| {
        matches!(s, Seen::CircuitUp).then_some(())
    })?;
    std::thread::sleep(settle);
    let with_circuits = relay.memory()?;
    progress(format!(
        "{}: heap idle {} B, connected {} B, reserved {} B, with circuits {} B",
        server.label(),
        idle.1,
        connected.1,
        reserved.1,
        with_circuits.1
    ));
    drop(fleet);
    drop(relay);
    Ok(Steps {
        idle,
        connected,
        reserved,
        circuits: with_circuits,
    })
}

/// The relay's memory per connection, reservation and circuit, per relay, `rounds` runs
/// each, alternating.
pub fn memory(
    servers: &[Server],
    clients: usize,
    circuits: usize,
    rounds: usize,
    settle: Duration,
    progress: &mut dyn FnMut(String),
) -> Result<Report, CompareError> {
    let circuits = circuits.min(clients / 2);
    let mut report = report(
        "relay-memory",
        &[
            "relay",
            "clients",
            "circuits",
            "heap idle (B)",
            "heap B/connection",
            "heap B/reservation",
            "heap B/circuit",
            "RSS idle (B)",
            "RSS B/connection",
            "RSS B/reservation",
            "RSS B/circuit",
        ],
    );
    report.notes.push(load_note("before"));
    let mut runs: Vec<Vec<Steps>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for (i, &server) in servers.iter().enumerate() {
            progress(format!(
                "round {}: {}: {clients} clients, {circuits} circuits",
                round + 1,
                server.label()
            ));
            runs[i].push(memory_run(server, clients, circuits, settle, progress)?);
        }
    }
    let per = |from: u64, to: u64, n: usize| (to as f64 - from as f64) / n.max(1) as f64;
    for (i, &server) in servers.iter().enumerate() {
        let col = |f: &dyn Fn(&Steps) -> f64| median(&runs[i].iter().map(f).collect::<Vec<_>>());
        let cell = |v: Option<f64>| v.map_or(Cell::Missing, |v| Cell::num(v, 0));
        report.rows.push(vec![
            Cell::text(server.label()),
            Cell::num(clients as f64, 0),
            Cell::num(circuits as f64, 0),
            cell(col(&|s| s.idle.1 as f64)),
            cell(col(&|s| per(s.idle.1, s.connected.1, clients))),
            cell(col(&|s| per(s.connected.1, s.reserved.1, clients))),
            cell(col(&|s| per(s.reserved.1, s.circuits.1, circuits))),
            cell(col(&|s| s.idle.0 as f64)),
            cell(col(&|s| per(s.idle.0, s.connected.0, clients))),
            cell(col(&|s| per(s.connected.0, s.reserved.0, clients))),
            cell(col(&|s| per(s.reserved.0, s.circuits.0, circuits))),
        ]);
    }
    report.notes.push(format!(
        "each relay a process of its own (compare-relay): heap = bytes its allocations hold \
         (a counting global allocator), RSS = its VmRSS (page-granular, and the allocator \
         keeps freed pages: growth only, coarse); {clients} rust-libp2p 0.57 clients connect \
         to the relay ({BATCH} at a time), then each reserves, then {circuits} of them each dial another through \
         it (noise and yamux up; no data); {} ms settle before each reading; medians of \
         {rounds} round(s), alternating",
        settle.as_millis()
    ));
    report.notes.push(load_note("after"));
    Ok(report)
}
