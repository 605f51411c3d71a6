//! A quicpeer node on a real UDP socket: a [`Host`] (manager, multistream-select, ping) run by
//! the mio [`Driver`] in a thread of its own, reporting its [`HostEvent`]s over a channel.
//!
//! Like a libp2p node, it pings every connected peer at an interval, so a dead connection is
//! noticed the way an application would notice it: by traffic that gets no answer.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use quicpeer::address::{self, Multiaddr};
use quicpeer::driver::{Context, Driver, Exit, Handle};
use quicpeer::{Config, Event, Host, HostConfig, HostEvent, Identity, Manager, PeerId};
use tracing::warn;

use crate::events::{EventLog, Stamped};

/// How a [`QuicpeerNode`] runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Ed25519 secret key is this byte repeated 32 times.
    pub seed: u8,
    /// The UDP address to bind (port 0 picks one).
    pub bind: SocketAddr,
    /// The manager's configuration.
    pub config: Config,
    /// Ping every connected peer at this interval; `None`: never by itself.
    pub ping_interval: Option<Duration>,
    /// Also ping a peer the moment a connection to it completes, as rust-libp2p's ping does.
    pub ping_on_connect: bool,
}

impl NodeConfig {
    /// A node on a free loopback port, pinging its peers every 200 ms.
    pub fn new(seed: u8) -> Self {
        Self {
            seed,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            config: Config::default(),
            ping_interval: Some(Duration::from_millis(200)),
            ping_on_connect: false,
        }
    }
}

/// How the node's thread ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Close every connection first.
    Graceful,
    /// Drop everything: nothing goes out, as in a crash.
    Crash,
}

/// A running quicpeer node. Dropping it closes its connections and stops it.
pub struct QuicpeerNode {
    peer_id: PeerId,
    local_addr: SocketAddr,
    handle: Handle<Host>,
    ending: mpsc::Sender<Ending>,
    thread: Option<JoinHandle<()>>,
    /// What the host reported.
    pub events: EventLog<HostEvent>,
}

impl QuicpeerNode {
    /// Binds the socket and starts the node in a thread of its own.
    pub fn spawn(config: NodeConfig) -> Result<Self, String> {
        let identity = Identity::from_ed25519_seed([config.seed; 32]);
        let peer_id = identity.peer_id();
        let (now, wall) = (Instant::now(), SystemTime::now());
        let manager = Manager::new(now, wall, identity, config.config.clone(), rand::random())
            .map_err(|e| format!("manager: {e}"))?;
        let host = Host::new(now, manager, HostConfig::default(), rand::random());
        let driver = Driver::bind(host, &[config.bind]).map_err(|e| e.to_string())?;
        let local_addr = driver
            .local_addrs()
            .first()
            .copied()
            .ok_or("the driver bound no socket")?;
        let handle = driver.handle();
        let (event_tx, event_rx) = mpsc::channel();
        let (ending_tx, ending_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("quicpeer-{}", config.seed))
            .spawn(move || {
                run(
                    driver,
                    config.ping_interval,
                    config.ping_on_connect,
                    event_tx,
                    ending_rx,
                )
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            peer_id,
            local_addr,
            handle,
            ending: ending_tx,
            thread: Some(thread),
            events: EventLog::new(event_rx),
        })
    }

    /// The node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's multiaddr, with `/p2p/<id>`.
    pub fn multiaddr(&self) -> Multiaddr {
        address::to_multiaddr(self.local_addr, Some(self.peer_id))
    }

    /// Runs `command` on the node's thread with the host and the current time.
    pub fn execute(&self, command: impl FnOnce(&mut Host, Instant) + Send + 'static) {
        if let Err(e) = self.handle.execute(command) {
            warn!("command not delivered: {e}");
        }
    }

    /// Dials the peer at `addr` (a libp2p QUIC multiaddr with `/p2p/<id>`).
    pub fn dial(&self, addr: &str) -> Result<(), String> {
        let addr: Multiaddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        self.execute(move |host, now| {
            if let Err(e) = host.dial_addrs(now, &[addr]) {
                warn!("dial: {e}");
            }
        });
        Ok(())
    }

    /// Stops the node as a crash would: its socket closes, and no peer is told.
    pub fn crash(mut self) {
        self.stop(Ending::Crash);
    }

    fn stop(&mut self, ending: Ending) {
        let _ = self.ending.send(ending);
        let _ = self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for QuicpeerNode {
    fn drop(&mut self) {
        self.stop(Ending::Graceful);
    }
}

fn run(
    mut driver: Driver<Host>,
    ping_interval: Option<Duration>,
    ping_on_connect: bool,
    events: mpsc::Sender<Stamped<HostEvent>>,
    ending: mpsc::Receiver<Ending>,
) {
    let mut on_event = |cx: &mut Context<'_, Host>, event: HostEvent| {
        if let HostEvent::Manager(Event::Connected { peer, .. }) = &event {
            if ping_on_connect {
                let now = cx.now();
                let _ = cx.ping(now, *peer);
            }
        }
        let _ = events.send(Stamped {
            at: Instant::now(),
            event,
        });
    };
    let mut next_ping = ping_interval.map(|i| Instant::now() + i);
    loop {
        match driver.run_until(next_ping, &mut on_event) {
            Ok(Exit::Deadline) => {
                let now = driver.now();
                let host = driver.machine_mut();
                for peer in host.manager().connected_peers() {
                    // A ping still in flight is fine: its answer or its timeout will come.
                    let _ = host.ping(now, peer);
                }
                next_ping = ping_interval.map(|i| now + i);
            }
            Ok(Exit::Stopped) => break,
            Err(e) => {
                warn!("driver failed: {e}");
                break;
            }
        }
    }
    if ending.try_recv() != Ok(Ending::Crash) {
        if let Err(e) = driver.shutdown(Duration::from_millis(500), &mut on_event) {
            warn!("shutdown failed: {e}");
        }
    }
}
