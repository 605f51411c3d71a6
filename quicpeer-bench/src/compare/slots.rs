//! The relay slot scenario: a circuit relay v2 client with a fixed identity crashes (state
//! dropped, nothing sent) and comes back, again and again, each time reserving again on a
//! relay that allows one reservation per peer; then a second client dials the last
//! incarnation (the survivor) through the relay and pings it. Run against quicpeer's relay
//! and rust-libp2p's and js-libp2p's relay servers in the same run, with rust-libp2p 0.57
//! clients over QUIC on loopback.
//!
//! Each incarnation but the last lives until its reservation is answered (accepted or
//! refused, at most [`Settings::answer_timeout`]) plus [`Settings::spacing`], then crashes; the
//! next starts at once on a new port. The survivor asks again every
//! [`RETRY`] while it is refused, until accepted or [`Settings::survivor_timeout`]. Reported
//! per relay: reservations accepted and refused (the survivor's first answer counted, not its
//! retries), the time from an incarnation's start to its reservation accepted, the survivor's
//! (retries included), the relay's slots in use at the end, and whether the dial through the
//! relay pinged at its first attempt.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, relay, yamux, Multiaddr, PeerId, Swarm, SwarmBuilder};
use quicpeer::address;
use quicpeer::driver::{Driver, Exit, Handle};
use quicpeer::protocols::relay::{Relay, RelayConfig, RelayEvent};
use quicpeer::{Config, Host, HostConfig, Identity, Manager};
use quicpeer_interop::libp2p_peer::keypair;

use super::{load_note, median, millis, report, CompareError, Report};
use crate::Cell;

/// How often the survivor asks again while it is refused.
pub const RETRY: Duration = Duration::from_millis(250);

/// The relay servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `quicpeer::protocols::relay::Relay` on the mio driver.
    Quicpeer,
    /// rust-libp2p 0.57's `relay::Behaviour`, on tokio.
    RustLibp2p,
    /// js-libp2p 2.10's `circuitRelayServer` (`interop/js/relay-server.mjs`, a Node.js
    /// process; its defaults: a reservation is kept per PeerId).
    JsLibp2p,
}

impl Server {
    /// `quicpeer` or `rust-libp2p`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "quicpeer" => Some(Self::Quicpeer),
            "rust-libp2p" => Some(Self::RustLibp2p),
            "js-libp2p" => Some(Self::JsLibp2p),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Quicpeer => "quicpeer relay",
            Self::RustLibp2p => "rust-libp2p relay",
            Self::JsLibp2p => "js-libp2p relay",
        }
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The relays, in order.
    pub servers: Vec<Server>,
    /// Crashes of the client (incarnations: one more).
    pub restarts: usize,
    /// How long an incarnation lives after its answer.
    pub spacing: Duration,
    /// How long an incarnation waits for its answer.
    pub answer_timeout: Duration,
    /// How long the survivor may take to be accepted.
    pub survivor_timeout: Duration,
}

/// What one relay's run measured.
#[derive(Debug, Default)]
struct Outcome {
    accepted: usize,
    refused: usize,
    unanswered: usize,
    to_accepted: Vec<Duration>,
    survivor: Option<Duration>,
    slots: Option<usize>,
    first_dial_pinged: Option<bool>,
    to_ping: Option<Duration>,
}

/// Runs the scenario against each relay.
pub fn run(settings: &Settings, progress: &mut dyn FnMut(String)) -> Result<Report, CompareError> {
    let mut report = report(
        "slots",
        &[
            "relay",
            "accepted",
            "refused",
            "unanswered",
            "start → accepted median (ms)",
            "start → accepted max (ms)",
            "survivor start → accepted (ms)",
            "slots in use at the end",
            "dial through pinged at once",
            "dial → ping (ms)",
        ],
    );
    report.notes.push(load_note("before"));
    for &server in &settings.servers {
        progress(format!(
            "{}: {} restarts",
            server.label(),
            settings.restarts
        ));
        let outcome = scenario(server, settings, progress)?;
        let median_ms = median(
            &(outcome.to_accepted.iter())
                .map(|d| d.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        );
        report.rows.push(vec![
            Cell::text(server.label()),
            Cell::num(outcome.accepted as f64, 0),
            Cell::num(outcome.refused as f64, 0),
            Cell::num(outcome.unanswered as f64, 0),
            median_ms.map_or(Cell::Missing, |m| Cell::num(m, 1)),
            millis(outcome.to_accepted.iter().max().copied(), 1),
            millis(outcome.survivor, 1),
            outcome
                .slots
                .map_or(Cell::Missing, |s| Cell::num(s as f64, 0)),
            outcome
                .first_dial_pinged
                .map_or(Cell::Missing, |p| Cell::text(if p { "yes" } else { "no" })),
            millis(outcome.to_ping, 1),
        ]);
    }
    report.notes.push(format!(
        "{} crashes of a rust-libp2p 0.57 client (fixed identity, QUIC, nothing sent at the \
         crash, a new port each time), each incarnation living {} ms after its answer; 1 \
         reservation per peer on quicpeer's and rust-libp2p's relays (js-libp2p's keeps one per \
         PeerId by design); the survivor asks again every {} ms while refused; \
         quicpeer's grace period 2 s (its default)",
        settings.restarts,
        settings.spacing.as_millis(),
        RETRY.as_millis()
    ));
    report.notes.push(
        "slots in use: quicpeer's Relay::slots_in_use (live reservations plus slots held in the \
         grace period); rust-libp2p's: reservations accepted minus closed and timed out, from \
         its events; js-libp2p's: not known (—)"
            .into(),
    );
    report.notes.push(load_note("after"));
    Ok(report)
}

// ---- the relays ----

enum RelayNode {
    Quicpeer {
        handle: Handle<Relay>,
        thread: Option<JoinHandle<()>>,
    },
    RustLibp2p {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<JoinHandle<()>>,
        live: mpsc::Receiver<usize>,
    },
    JsLibp2p(std::process::Child),
}

impl RelayNode {
    /// Starts the relay; its multiaddr with `/p2p/`.
    fn spawn(server: Server) -> Result<(Self, Multiaddr), CompareError> {
        let setup = |e: String| CompareError::Setup(e);
        match server {
            Server::Quicpeer => {
                let identity = Identity::from_ed25519_seed([1; 32]);
                let (peer, keypair) = (identity.peer_id(), identity.keypair().clone());
                let (now, wall) = (Instant::now(), SystemTime::now());
                let manager = Manager::new(now, wall, identity, Config::default(), rand::random())
                    .map_err(|e| setup(e.to_string()))?;
                let host = Host::new(now, manager, HostConfig::default(), rand::random());
                let mut config = RelayConfig::default();
                config.max_reservations_per_peer = 1;
                let relay = Relay::new(now, wall, host, keypair, config)
                    .map_err(|e| setup(e.to_string()))?;
                let bind = "127.0.0.1:0".parse().map_err(|_| setup("address".into()))?;
                let mut driver = Driver::bind(relay, &[bind]).map_err(|e| setup(e.to_string()))?;
                let local = driver.local_addrs()[0];
                let listen = address::to_multiaddr(local, None);
                driver.machine_mut().set_listen_addrs(vec![listen]);
                let handle = driver.handle();
                let thread = std::thread::spawn(move || loop {
                    match driver.run_until(None, |_, _: RelayEvent| {}) {
                        Ok(Exit::Stopped) | Err(_) => return,
                        Ok(_) => {}
                    }
                });
                let addr = address::to_multiaddr(local, Some(peer))
                    .to_string()
                    .parse()
                    .map_err(|_| setup("multiaddr".into()))?;
                let node = RelayNode::Quicpeer {
                    handle,
                    thread: Some(thread),
                };
                Ok((node, addr))
            }
            Server::RustLibp2p => {
                let (stop, stop_rx) = tokio::sync::oneshot::channel();
                let (addr_tx, addr_rx) = mpsc::channel();
                let (live_tx, live) = mpsc::channel();
                let thread = std::thread::spawn(move || {
                    let Ok(runtime) = runtime() else { return };
                    runtime.block_on(rust_relay(addr_tx, live_tx, stop_rx));
                });
                let addr = addr_rx
                    .recv_timeout(Duration::from_secs(10))
                    .map_err(|_| setup("the rust-libp2p relay did not listen".into()))?;
                let node = RelayNode::RustLibp2p {
                    stop: Some(stop),
                    thread: Some(thread),
                    live,
                };
                Ok((node, addr))
            }
            Server::JsLibp2p => {
                use std::io::BufRead;
                quicpeer_interop::js::ensure_installed().map_err(setup)?;
                let mut child = std::process::Command::new("node")
                    .args(["relay-server.mjs", "--seed", "1"])
                    .current_dir(quicpeer_interop::js::js_dir())
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| setup(format!("cannot start node: {e}")))?;
                let stdout = child.stdout.take().ok_or(setup("no stdout".into()))?;
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
                    let _ = tx.send(line);
                });
                let node = RelayNode::JsLibp2p(child);
                let line = rx
                    .recv_timeout(Duration::from_secs(60))
                    .map_err(|_| setup("the js-libp2p relay did not listen".into()))?;
                let value: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| setup(format!("{e}: {line}")))?;
                let addr = value["addrs"][0]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or(setup(format!("no address in {line}")))?;
                Ok((node, addr))
            }
        }
    }

    /// The relay's slots in use now.
    fn slots(&self) -> Option<usize> {
        match self {
            RelayNode::Quicpeer { handle, .. } => {
                let (tx, rx) = mpsc::channel();
                handle
                    .execute(move |relay, _| {
                        let _ = tx.send(relay.slots_in_use());
                    })
                    .ok()?;
                rx.recv_timeout(Duration::from_secs(5)).ok()
            }
            RelayNode::RustLibp2p { live, .. } => live.try_iter().last(),
            RelayNode::JsLibp2p(_) => None,
        }
    }
}

impl Drop for RelayNode {
    fn drop(&mut self) {
        match self {
            RelayNode::Quicpeer { handle, thread } => {
                let _ = handle.stop();
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
            RelayNode::RustLibp2p { stop, thread, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
            RelayNode::JsLibp2p(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct ServerBehaviour {
    relay: relay::Behaviour,
    ping: ping::Behaviour,
}

/// rust-libp2p's relay server, 1 reservation per peer, reporting its live reservations.
async fn rust_relay(
    addr_tx: mpsc::Sender<Multiaddr>,
    live_tx: mpsc::Sender<usize>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let built = SwarmBuilder::with_existing_identity(keypair(1))
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let config = relay::Config {
                max_reservations_per_peer: 1,
                ..Default::default()
            };
            ServerBehaviour {
                relay: relay::Behaviour::new(key.public().to_peer_id(), config),
                ping: ping::Behaviour::default(),
            }
        });
    let Ok(builder) = built;
    let mut swarm = builder.build();
    let Ok(listen) = "/ip4/127.0.0.1/udp/0/quic-v1".parse::<Multiaddr>() else {
        return;
    };
    if swarm.listen_on(listen).is_err() {
        return;
    }
    let local = *swarm.local_peer_id();
    let mut live: usize = 0;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    // Its reservations carry its external addresses: loopback here.
                    swarm.add_external_address(address.clone());
                    let _ = addr_tx.send(address.with(Protocol::P2p(local)));
                }
                SwarmEvent::Behaviour(ServerBehaviourEvent::Relay(event)) => {
                    match event {
                        relay::Event::ReservationReqAccepted { renewed: false, .. } => live += 1,
                        relay::Event::ReservationClosed { .. }
                        | relay::Event::ReservationTimedOut { .. } => live = live.saturating_sub(1),
                        _ => {}
                    }
                    let _ = live_tx.send(live);
                }
                _ => {}
            },
        }
    }
}

// ---- the clients ----

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct ClientBehaviour {
    relay: relay::client::Behaviour,
    ping: ping::Behaviour,
    identify: identify::Behaviour,
}

/// What a client reports.
#[derive(Debug)]
enum Seen {
    Accepted(Instant),
    Refused(Instant),
    DialFailed,
    Pinged(Instant),
}

/// What a client does.
#[derive(Debug, Clone)]
enum Role {
    /// Reserve on the relay and listen on its circuit address; ask again while refused when
    /// `retry`.
    Listen { retry: bool },
    /// Dial `target` through the relay, once.
    Dial { target: PeerId },
}

struct Client {
    started: Instant,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    seen: mpsc::Receiver<Seen>,
}

impl Client {
    fn spawn(seed: u8, relay_addr: Multiaddr, role: Role) -> Self {
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (tx, seen) = mpsc::channel();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = runtime() else { return };
            runtime.block_on(client(seed, relay_addr, role, tx, stop_rx));
            // Nothing more is polled: what the swarm would still send is never sent.
        });
        Self {
            started,
            stop: Some(stop),
            thread: Some(thread),
            seen,
        }
    }

    /// Waits for the first report that `pick` maps to something, until `deadline`.
    fn wait<T>(&self, deadline: Instant, mut pick: impl FnMut(&Seen) -> Option<T>) -> Option<T> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let seen = self.seen.recv_timeout(left).ok()?;
            if let Some(found) = pick(&seen) {
                return Some(found);
            }
        }
    }

    /// Stops the client as a crash would: its task returns at once, and the runtime is
    /// dropped without another poll.
    fn crash(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn client_swarm(seed: u8) -> Option<Swarm<ClientBehaviour>> {
    let swarm = SwarmBuilder::with_existing_identity(keypair(seed))
        .with_tokio()
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .ok()?
        .with_behaviour(|key, relay| ClientBehaviour {
            relay,
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(100)),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/quicpeer-bench/1.0.0".into(),
                key.public(),
            )),
        })
        .ok()?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Some(swarm)
}

async fn client(
    seed: u8,
    relay_addr: Multiaddr,
    role: Role,
    tx: mpsc::Sender<Seen>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Some(mut swarm) = client_swarm(seed) else {
        return;
    };
    let circuit = relay_addr.with(Protocol::P2pCircuit);
    let target = match &role {
        Role::Listen { .. } => {
            if swarm.listen_on(circuit.clone()).is_err() {
                return;
            }
            None
        }
        Role::Dial { target } => {
            if swarm
                .dial(circuit.clone().with(Protocol::P2p(*target)))
                .is_err()
            {
                let _ = tx.send(Seen::DialFailed);
                return;
            }
            Some(*target)
        }
    };
    let retry = matches!(role, Role::Listen { retry: true });
    let mut again: Option<tokio::time::Instant> = None;
    loop {
        let wait = async {
            match again {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            () = wait => {
                again = None;
                let _ = swarm.listen_on(circuit.clone());
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { .. },
                )) => {
                    let _ = tx.send(Seen::Accepted(Instant::now()));
                }
                SwarmEvent::ListenerClosed { reason: Err(_), .. } => {
                    let _ = tx.send(Seen::Refused(Instant::now()));
                    if retry {
                        again = Some(tokio::time::Instant::now() + RETRY);
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id, .. } if peer_id == target => {
                    let _ = tx.send(Seen::DialFailed);
                }
                SwarmEvent::Behaviour(ClientBehaviourEvent::Ping(ping::Event {
                    peer,
                    result: Ok(_),
                    ..
                })) if Some(peer) == target => {
                    let _ = tx.send(Seen::Pinged(Instant::now()));
                }
                _ => {}
            },
        }
    }
}

// ---- the scenario ----

fn scenario(
    server: Server,
    settings: &Settings,
    progress: &mut dyn FnMut(String),
) -> Result<Outcome, CompareError> {
    let (relay, relay_addr) = RelayNode::spawn(server)?;
    let mut outcome = Outcome::default();
    for incarnation in 0..=settings.restarts {
        let survivor = incarnation == settings.restarts;
        let client = Client::spawn(2, relay_addr.clone(), Role::Listen { retry: survivor });
        let deadline = client.started + settings.answer_timeout;
        let first = client.wait(deadline, |seen| match seen {
            Seen::Accepted(at) => Some(Ok(*at)),
            Seen::Refused(at) => Some(Err(*at)),
            _ => None,
        });
        match first {
            Some(Ok(at)) => {
                outcome.accepted += 1;
                outcome.to_accepted.push(at - client.started);
                if survivor {
                    outcome.survivor = Some(at - client.started);
                }
            }
            Some(Err(_)) => {
                outcome.refused += 1;
                if survivor {
                    let deadline = client.started + settings.survivor_timeout;
                    let accepted = client.wait(deadline, |seen| match seen {
                        Seen::Accepted(at) => Some(*at),
                        _ => None,
                    });
                    outcome.survivor = accepted.map(|at| at - client.started);
                }
            }
            None => outcome.unanswered += 1,
        }
        if !survivor {
            std::thread::sleep(settings.spacing);
            client.crash();
            continue;
        }
        progress(format!(
            "{}: {} accepted, {} refused, {} unanswered; survivor accepted after {:?}",
            server.label(),
            outcome.accepted,
            outcome.refused,
            outcome.unanswered,
            outcome.survivor
        ));
        // Let the relay's view settle (a server event may trail the client's).
        std::thread::sleep(Duration::from_millis(100));
        outcome.slots = relay.slots();
        if outcome.survivor.is_some() {
            let target = keypair(2).public().to_peer_id();
            let dialer = Client::spawn(3, relay_addr.clone(), Role::Dial { target });
            let deadline = dialer.started + settings.answer_timeout;
            let pinged = dialer.wait(deadline, |seen| match seen {
                Seen::Pinged(at) => Some(Some(*at)),
                Seen::DialFailed => Some(None),
                _ => None,
            });
            outcome.first_dial_pinged = Some(matches!(pinged, Some(Some(_))));
            outcome.to_ping = pinged.flatten().map(|at| at - dialer.started);
        }
        drop(client);
    }
    drop(relay);
    Ok(outcome)
}
