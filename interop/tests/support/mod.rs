//! Helpers shared by the interop tests: waits on a quicpeer node's events, and figures.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use quicpeer::{Cause, ConnId, Direction, Event, HostEvent, PeerId};
use quicpeer_interop::quicpeer_node::{NodeConfig, QuicpeerNode};
use quicpeer_interop::{ChildPeer, PeerEvent};

/// The bound on every single wait of the tests. Nothing here takes more than a fraction of it
/// when things work; 10 s is also the idle timeout, so no wait can pass by timing out.
pub const STEP: Duration = Duration::from_secs(10);

/// rust-libp2p's and js-libp2p's idle timeout: the recovery time without quicpeer's help.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs a tracing subscriber once, for `RUST_LOG=...` debugging of a failing test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A PeerId of another libp2p implementation, as quicpeer's type.
pub fn peer_id(text: &str) -> PeerId {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The `/udp/<port>` of a multiaddr.
pub fn udp_port(addr: &str) -> u16 {
    let (socket, _) = quicpeer::address::parse_str(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    socket.port()
}

/// Waits for a connection to `peer` since `since`: (when, connection, direction, replaced).
pub fn connected(
    node: &mut QuicpeerNode,
    peer: PeerId,
    since: Instant,
) -> Option<(Instant, ConnId, quicpeer::Direction, Option<ConnId>)> {
    let (at, (conn, direction, replaced)) = node.events.wait_for(since, STEP, |e| match e {
        HostEvent::Manager(Event::Connected {
            peer: p,
            conn,
            direction,
            replaced,
            ..
        }) if *p == peer => Some((*conn, *direction, *replaced)),
        _ => None,
    })?;
    Some((at, conn, direction, replaced))
}

/// Waits for a ping answered by `peer` since `since`: (when, connection, RTT).
pub fn pinged(
    node: &mut QuicpeerNode,
    peer: PeerId,
    since: Instant,
) -> Option<(Instant, ConnId, Duration)> {
    let (at, (conn, rtt)) = node.events.wait_for(since, STEP, |e| match e {
        HostEvent::PingResult { peer: p, conn, rtt } if *p == peer => Some((*conn, *rtt)),
        _ => None,
    })?;
    Some((at, conn, rtt))
}

/// Waits for `conn` to be reported unresponsive.
pub fn unresponsive(node: &mut QuicpeerNode, conn: ConnId, since: Instant) -> Option<Instant> {
    let (at, ()) = node.events.wait_for(since, STEP, |e| match e {
        HostEvent::Manager(Event::Unresponsive { conn: c, .. }) if *c == conn => Some(()),
        _ => None,
    })?;
    Some(at)
}

/// Waits for the loss of `conn`: (when, cause).
pub fn lost(node: &mut QuicpeerNode, conn: ConnId, since: Instant) -> Option<(Instant, Cause)> {
    node.events.wait_for(since, STEP, |e| match e {
        HostEvent::Manager(Event::ConnectionLost { conn: c, cause, .. }) if *c == conn => {
            Some(cause.clone())
        }
        _ => None,
    })
}

/// Everything a node reported, for a failing assertion.
pub fn report(node: &mut QuicpeerNode, t0: Instant) -> String {
    node.events.drain();
    node.events
        .seen()
        .iter()
        .map(|s| {
            format!(
                "  +{} {:?}",
                ms(s.at.saturating_duration_since(t0)),
                s.event
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Restart case B, for a libp2p listener run as a child process: quicpeer dials and pings it;
/// the listener is killed (SIGKILL) and started again on its port by `listener(port)` (port 0:
/// any). Asserts that quicpeer suspects the stale connection, replaces it with a new one it
/// pings, well before the idle timeout, and prints the times, each from the kill. `start`
/// bounds how long the listener may take to start.
pub fn listener_restarts_under_quicpeer(
    name: &str,
    start: Duration,
    mut listener: impl FnMut(u16) -> ChildPeer,
) {
    let mut remote = listener(0);
    let (id, addrs) = remote
        .listening(start)
        .unwrap_or_else(|| panic!("{name} did not start:\n{}", remote.report()));
    let addr = addrs.first().expect("a listen address").clone();
    let remote_id = peer_id(&id);

    let mut node = QuicpeerNode::spawn(NodeConfig::new(1)).unwrap();
    let t0 = Instant::now();
    node.dial(&addr).unwrap();
    let (_, old, _, _) = connected(&mut node, remote_id, t0)
        .unwrap_or_else(|| panic!("no connection:\n{}", report(&mut node, t0)));
    pinged(&mut node, remote_id, t0).expect("pinging before the restart");

    let crashed = Instant::now();
    remote.crash();
    let mut remote = listener(udp_port(&addr));
    let (up, _) = remote
        .events
        .wait_for(crashed, start, |e| {
            matches!(e, PeerEvent::Listening { .. }).then_some(())
        })
        .unwrap_or_else(|| panic!("{name} did not restart:\n{}", remote.report()));

    let suspected = unresponsive(&mut node, old, crashed)
        .unwrap_or_else(|| panic!("not suspected:\n{}", report(&mut node, crashed)));
    let (reconnected, new, direction, replaced) = connected(&mut node, remote_id, crashed)
        .unwrap_or_else(|| panic!("no reconnect:\n{}", report(&mut node, crashed)));
    assert_eq!(direction, Direction::Outbound);
    assert_eq!(replaced, Some(old));
    let (_, cause) = lost(&mut node, old, crashed).expect("the stale connection ended");
    assert_eq!(cause, Cause::Superseded { by: Some(new) });
    let (pinged_at, ping_conn, _) = pinged(&mut node, remote_id, reconnected).expect("ping after");
    assert_eq!(ping_conn, new);
    assert!(
        reconnected - crashed < IDLE_TIMEOUT / 2,
        "recovery took {}:\n{}",
        ms(reconnected - crashed),
        report(&mut node, crashed)
    );
    println!(
        "restart B ({name} listener restarts under a quicpeer dialer): back up after {}; \
         quicpeer suspected the stale connection after {}, replaced it after {}, pinged after \
         {} (all from the kill; quicpeer pings every 200 ms)",
        ms(up - crashed),
        ms(suspected - crashed),
        ms(reconnected - crashed),
        ms(pinged_at - crashed),
    );
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A libp2p implementation run as a child process (js-libp2p, py-libp2p): how to start one,
/// with the seeds the tests use (2: a listener, 3: a dialer), and how long it may take.
pub struct ChildImpl {
    /// Its name in messages ("js-libp2p").
    pub name: &'static str,
    /// Starts it with these arguments (`interop::js::spawn`, `interop::py::spawn`).
    pub spawn: fn(&str, &[&str]) -> Result<ChildPeer, String>,
    /// How long its first `listening` line may take (interpreters start slowly).
    pub start: Duration,
}

impl ChildImpl {
    pub fn peer(&self, args: &[&str]) -> ChildPeer {
        (self.spawn)(self.name, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A listener with seed 2 on `port` (0: any).
    pub fn listener(&self, port: u16) -> ChildPeer {
        self.peer(&["listen", "--seed", "2", "--port", &port.to_string()])
    }

    /// A dialer with seed 3 of `addr`.
    pub fn dialer(&self, addr: &str) -> ChildPeer {
        self.peer(&["dial", "--seed", "3", "--addr", addr])
    }

    /// The `(PeerId, first address)` the peer reports when it is up.
    pub fn listening(&self, remote: &mut ChildPeer) -> (String, String) {
        let (id, addrs) = remote.listening(self.start).unwrap_or_else(|| {
            panic!("the {} peer did not start:\n{}", self.name, remote.report())
        });
        let addr = addrs.first().cloned().unwrap_or_default();
        (id, addr)
    }

    /// Waits until the peer reports a connection to `quicpeer_id` in `direction` ("inbound" or
    /// "outbound"): it verified quicpeer's certificate and took its PeerId from it.
    pub fn saw_quicpeer(
        &self,
        remote: &mut ChildPeer,
        quicpeer_id: &str,
        direction: &str,
        since: Instant,
    ) {
        remote
            .events
            .wait_for(since, STEP, |e| match e {
                PeerEvent::Connected {
                    peer,
                    direction: seen,
                    ..
                } if peer == quicpeer_id => {
                    assert_eq!(seen, direction);
                    Some(())
                }
                _ => None,
            })
            .unwrap_or_else(|| {
                panic!(
                    "{} never saw quicpeer's PeerId:\n{}",
                    self.name,
                    remote.report()
                )
            });
    }
}

/// A quicpeer listener under a dialer of `kind` that pings it; then quicpeer is crashed and
/// rebuilt with the same identity on the same port (restart case A of every child
/// implementation). The fields are what the assertions on the dialer's reaction need.
pub struct QuicpeerRestarted {
    /// The rebuilt quicpeer.
    pub node: QuicpeerNode,
    /// The dialer.
    pub remote: ChildPeer,
    /// The dialer's PeerId, as it reported it.
    pub remote_id: String,
    pub quicpeer_id: String,
    pub crashed: Instant,
    /// When the rebuilt quicpeer was listening again.
    pub up: Instant,
}

impl ChildImpl {
    /// A dialer of this kind connects to a quicpeer listener and pings it, then quicpeer
    /// restarts under it.
    pub fn dialer_under_restarting_quicpeer(&self) -> QuicpeerRestarted {
        let node = QuicpeerNode::spawn(NodeConfig::new(1)).unwrap();
        let bind = node.local_addr();
        let quicpeer_id = node.peer_id().to_string();
        let start = Instant::now();
        let mut remote = self.dialer(&node.multiaddr().to_string());
        let (remote_id, _) = self.listening(&mut remote);
        remote_pinged(&mut remote, &quicpeer_id, start)
            .unwrap_or_else(|| panic!("not pinging before the restart:\n{}", remote.report()));

        let crashed = Instant::now();
        node.crash();
        let node = QuicpeerNode::spawn(NodeConfig {
            bind,
            ..NodeConfig::new(1)
        })
        .unwrap();
        let up = Instant::now();
        QuicpeerRestarted {
            node,
            remote,
            remote_id,
            quicpeer_id,
            crashed,
            up,
        }
    }

    /// A dialer of this kind (seed 3) connects to a quicpeer listener: both sides verify the
    /// other's PeerId, and quicpeer answers the dialer's pings. Returns the RTT the dialer saw.
    pub fn dials_and_pings_quicpeer(&self) -> f64 {
        let mut node = QuicpeerNode::spawn(NodeConfig::new(1)).unwrap();
        let quicpeer_id = node.peer_id().to_string();
        let start = Instant::now();
        let mut remote = self.dialer(&node.multiaddr().to_string());
        let (id, _) = self.listening(&mut remote);
        assert_eq!(
            peer_id(&id),
            quicpeer::Identity::from_ed25519_seed([3; 32]).peer_id()
        );
        // The dialer verified quicpeer's certificate and reports quicpeer's PeerId...
        self.saw_quicpeer(&mut remote, &quicpeer_id, "outbound", start);
        // ...quicpeer answers its pings, and quicpeer verified the dialer's PeerId.
        let (_, rtt) = remote_pinged(&mut remote, &quicpeer_id, start).unwrap_or_else(|| {
            panic!(
                "quicpeer did not answer {}'s ping:\n{}",
                self.name,
                remote.report()
            )
        });
        let (_, _, direction, _) = connected(&mut node, peer_id(&id), start)
            .unwrap_or_else(|| panic!("no connection:\n{}", report(&mut node, start)));
        assert_eq!(direction, Direction::Inbound);
        rtt
    }
}

/// The first ping of `quicpeer_id` that `remote` reports after `since`: when, and its RTT in ms.
pub fn remote_pinged(
    remote: &mut ChildPeer,
    quicpeer_id: &str,
    since: Instant,
) -> Option<(Instant, f64)> {
    remote.events.wait_for(since, STEP, |e| match e {
        PeerEvent::Ping { peer, rtt_ms } if peer == quicpeer_id => Some(*rtt_ms),
        _ => None,
    })
}
