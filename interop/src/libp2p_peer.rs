//! A rust-libp2p node: a `Swarm` with the QUIC transport (`/quic-v1`) and `/ipfs/ping/1.0.0`,
//! nothing else, to hold quicpeer against.
//!
//! [`Libp2pPeer::spawn`] runs it on a tokio runtime in a thread of its own and reports
//! [`PeerEvent`]s over a channel; the `libp2p-peer` binary prints the same events as JSON lines
//! for benches and scripts. A dialer keeps its connection: when it is lost, it dials again at
//! once (a plain libp2p application would do the same; the swarm itself never redials).

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{ping, Multiaddr, PeerId, Swarm, SwarmBuilder};
use tracing::{debug, warn};

use crate::events::{EventLog, PeerEvent, Stamped};

/// How a [`Libp2pPeer`] runs.
#[derive(Debug, Clone)]
pub struct Libp2pConfig {
    /// The Ed25519 secret key is this byte repeated 32 times (quicpeer's test identities use the
    /// same convention).
    pub seed: u8,
    /// Listen here, e.g. `/ip4/127.0.0.1/udp/0/quic-v1`.
    pub listen: Option<Multiaddr>,
    /// Dial this address (with `/p2p/<id>`) at start, and again whenever the connection is lost.
    pub dial: Option<Multiaddr>,
    /// Interval of outbound pings on every connection.
    pub ping_interval: Duration,
    /// How long an outbound ping may take before it counts as failed.
    pub ping_timeout: Duration,
    /// Wait before dialing again after a failed dial.
    pub redial_delay: Duration,
    /// Run the Swarm on quicpeer-libp2p (the one-line switch), with its reconnect behaviour,
    /// instead of libp2p-quic.
    pub quicpeer_transport: bool,
}

impl Libp2pConfig {
    /// A listener on `addr`.
    pub fn listener(seed: u8, addr: Multiaddr) -> Self {
        Self {
            listen: Some(addr),
            ..Self::new(seed)
        }
    }

    /// A dialer of `addr` (which must end in `/p2p/<id>`).
    pub fn dialer(seed: u8, addr: Multiaddr) -> Self {
        Self {
            dial: Some(addr),
            ..Self::new(seed)
        }
    }

    fn new(seed: u8) -> Self {
        Self {
            seed,
            listen: None,
            dial: None,
            ping_interval: Duration::from_millis(200),
            ping_timeout: Duration::from_secs(5),
            redial_delay: Duration::from_millis(100),
            quicpeer_transport: false,
        }
    }
}

/// The Ed25519 keypair whose secret is `seed` repeated 32 times.
pub fn keypair(seed: u8) -> Keypair {
    let mut secret = [seed; 32];
    // Only a wrong length is refused, and the length is fixed here.
    match Keypair::ed25519_from_bytes(&mut secret) {
        Ok(keypair) => keypair,
        Err(_) => unreachable!("a 32-byte Ed25519 secret is always accepted"),
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    ping: ping::Behaviour,
    /// quicpeer-libp2p's redials (with `quicpeer_transport` only).
    reconnect: Toggle<quicpeer_libp2p::reconnect::Behaviour>,
}

/// How the node's task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Close every connection first.
    Graceful,
    /// Return at once: the swarm and the runtime are dropped without another poll, so nothing
    /// more goes out, as in a crash.
    Crash,
}

/// A running rust-libp2p node. Dropping it closes its connections and stops it;
/// [`Libp2pPeer::crash`] stops it as a crash would. (For a crash of a whole process, run the
/// `libp2p-peer` binary in a [`ChildPeer`](crate::ChildPeer) and kill it.)
pub struct Libp2pPeer {
    peer_id: PeerId,
    started: Instant,
    /// Sent (or dropped, which counts as graceful) to stop the node.
    stop: Option<tokio::sync::oneshot::Sender<Ending>>,
    thread: Option<JoinHandle<()>>,
    /// What the node reported.
    pub events: EventLog,
}

impl Libp2pPeer {
    /// Starts the node in a thread of its own. Its first event is `Listening` (once its listen
    /// address is bound, or at once for a dialer).
    pub fn spawn(config: Libp2pConfig) -> io::Result<Self> {
        let started = Instant::now();
        let keypair = keypair(config.seed);
        let peer_id = keypair.public().to_peer_id();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (event_tx, event_rx) = mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let swarm = runtime.block_on(async { build_swarm(keypair, &config) })?;
        let thread = std::thread::Builder::new()
            .name(format!("libp2p-{}", config.seed))
            .spawn(move || runtime.block_on(run(swarm, config, stop_rx, event_tx)))?;
        Ok(Self {
            peer_id,
            started,
            stop: Some(stop),
            thread: Some(thread),
            events: EventLog::new(event_rx),
        })
    }

    /// The node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Waits (at most `timeout`) for the `Listening` event and returns the first listen address.
    pub fn listen_addr(&mut self, timeout: Duration) -> Option<Multiaddr> {
        let (_, addrs) = self.events.listening(self.started, timeout)?;
        addrs.first()?.parse().ok()
    }

    /// Stops the node as a crash would: the swarm (its socket, every connection) and the
    /// runtime are dropped without another poll, so no close goes out and no peer is told.
    /// Returns once the socket is closed.
    pub fn crash(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Ending::Crash);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Libp2pPeer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Ending::Graceful);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn build_swarm(keypair: Keypair, config: &Libp2pConfig) -> io::Result<Swarm<Behaviour>> {
    let ping = ping::Config::new()
        .with_interval(config.ping_interval)
        .with_timeout(config.ping_timeout);
    let builder = SwarmBuilder::with_existing_identity(keypair).with_tokio();
    // Ping alone does not keep a connection open; the tests want it kept.
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(3600));
    let swarm = if config.quicpeer_transport {
        let reconnect = quicpeer_libp2p::reconnect::Behaviour::new();
        let signals = reconnect.signals();
        builder
            .with_other_transport(|k| {
                quicpeer_libp2p::Transport::new(
                    quicpeer_libp2p::Config::new(k).with_signals(signals),
                )
            })
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_behaviour(|_| Behaviour {
                ping: ping::Behaviour::new(ping),
                reconnect: Some(reconnect).into(),
            })
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_swarm_config(idle)
            .build()
    } else {
        builder
            .with_quic()
            .with_behaviour(|_| Behaviour {
                ping: ping::Behaviour::new(ping),
                reconnect: None.into(),
            })
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_swarm_config(idle)
            .build()
    };
    Ok(swarm)
}

/// The PeerId at the end of a multiaddr, if any.
fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    config: Libp2pConfig,
    mut stop: tokio::sync::oneshot::Receiver<Ending>,
    events: mpsc::Sender<Stamped>,
) {
    let emit = |event: PeerEvent| {
        let _ = events.send(Stamped {
            at: Instant::now(),
            event,
        });
    };
    let local = *swarm.local_peer_id();
    match &config.listen {
        Some(addr) => {
            if let Err(e) = swarm.listen_on(addr.clone()) {
                warn!(%addr, "cannot listen: {e}");
                emit(PeerEvent::ListenFailed {
                    error: format!("{addr}: {e}"),
                });
            }
        }
        None => emit(PeerEvent::Listening {
            peer_id: local.to_string(),
            addrs: Vec::new(),
        }),
    }
    let target = config
        .dial
        .as_ref()
        .map(|addr| (addr.clone(), peer_in(addr)));
    let mut redial_at = target.as_ref().map(|_| tokio::time::Instant::now());

    loop {
        let redial = async {
            match redial_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ending = &mut stop => {
                if ending != Ok(Ending::Crash) {
                    close_all(&mut swarm).await;
                }
                return;
            }
            () = redial => {
                redial_at = None;
                if let Some((addr, _)) = &target {
                    debug!(%addr, "dialing");
                    if let Err(e) = swarm.dial(addr.clone()) {
                        emit(PeerEvent::DialFailed { peer: None, error: e.to_string() });
                        redial_at = Some(tokio::time::Instant::now() + config.redial_delay);
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => emit(PeerEvent::Listening {
                    peer_id: local.to_string(),
                    addrs: vec![address.with(Protocol::P2p(local)).to_string()],
                }),
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                    emit(PeerEvent::Connected {
                        peer: peer_id.to_string(),
                        addr: remote_addr(&endpoint).to_string(),
                        direction: direction(&endpoint).into(),
                    });
                }
                SwarmEvent::ConnectionClosed { peer_id, endpoint, num_established, cause, .. } => {
                    emit(PeerEvent::Closed {
                        peer: peer_id.to_string(),
                        addr: remote_addr(&endpoint).to_string(),
                        direction: direction(&endpoint).into(),
                        cause: cause.map(|c| c.to_string()),
                    });
                    let ours = target.as_ref().is_some_and(|(_, p)| *p == Some(peer_id));
                    if ours && num_established == 0 {
                        redial_at = Some(tokio::time::Instant::now());
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                    emit(PeerEvent::DialFailed {
                        peer: peer_id.map(|p| p.to_string()),
                        error: error.to_string(),
                    });
                    if target.is_some() && swarm.connected_peers().next().is_none() {
                        redial_at = Some(tokio::time::Instant::now() + config.redial_delay);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result, .. })) => {
                    match result {
                        Ok(rtt) => emit(PeerEvent::Ping {
                            peer: peer.to_string(),
                            rtt_ms: rtt.as_secs_f64() * 1e3,
                        }),
                        Err(e) => emit(PeerEvent::PingFailed {
                            peer: Some(peer.to_string()),
                            error: e.to_string(),
                        }),
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Reconnect(
                    quicpeer_libp2p::reconnect::Event::Redialing { peer, reason, .. },
                )) => emit(PeerEvent::Redialing {
                    peer: peer.to_string(),
                    reason: format!("{reason:?}"),
                }),
                other => debug!(?other, "swarm event"),
            },
        }
    }
}

/// Closes every connection and waits (briefly) for the closes to go out.
async fn close_all(swarm: &mut Swarm<Behaviour>) {
    let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
    for peer in peers {
        let _ = swarm.disconnect_peer_id(peer);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while swarm.connected_peers().next().is_some() {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

fn remote_addr(endpoint: &ConnectedPoint) -> &Multiaddr {
    match endpoint {
        ConnectedPoint::Dialer { address, .. } => address,
        ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
    }
}

fn direction(endpoint: &ConnectedPoint) -> &'static str {
    match endpoint {
        ConnectedPoint::Dialer { .. } => "outbound",
        ConnectedPoint::Listener { .. } => "inbound",
    }
}
