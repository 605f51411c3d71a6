//! Reconnect latency on loopback: a listener restarts under a dialer that pings it.
//!
//! The dialer pings the listener every `ping_interval` (and at once on a new connection, as
//! rust-libp2p's ping does). At a random phase of that rhythm the listener is crashed (its
//! state and socket dropped, no close sent) and rebuilt with the same identity on the same
//! port. Each sample is measured from the crash: when the listener was back, when the dialer
//! first noticed (its connection lost, or declared unresponsive), and when its first ping on a
//! fresh connection was answered. Both sides run in this process, each on a thread of its own
//! with its own socket, as two processes would.
//!
//! Pairs, dialer → listener:
//! - **quicpeer → quicpeer**: the restarted listener's keys are derived from its identity, so
//!   it answers the stale connection's next packet with a stateless reset.
//! - **rust-libp2p → rust-libp2p**, with rust-libp2p's QUIC defaults (idle timeout 10 s,
//!   keep-alive 5 s): its restarted listener drops the stale packets silently (its
//!   connection-ID key is random per process), so the dialer waits out its idle timeout.
//! - **quicpeer → rust-libp2p**: the same silence; quicpeer's suspicion redial races a fresh
//!   dial after a few unanswered probe timeouts.
//! - **rust-libp2p → quicpeer**: the restarted quicpeer resets the rust-libp2p dialer.
//! - **rust-libp2p/quicpeer → rust-libp2p** and **rust-libp2p → rust-libp2p/quicpeer**: a
//!   rust-libp2p Swarm switched to quicpeer-libp2p (the one-line switch, with its reconnect
//!   behaviour) against a stock one, both ways: the stock listener's silence is met by the
//!   behaviour's make-before-break dial on quicpeer's suspicion; the restarted quicpeer-libp2p
//!   listener resets the stock dialer.

use std::time::{Duration, Instant};

use quicpeer::{Cause, ConnId, Event, HostEvent};

use super::{median, ms, percentile, Cell, CompareError, Report};
use crate::plot::{Plot, YAxis};
use quicpeer_interop::libp2p_peer::{Libp2pConfig, Libp2pPeer};
use quicpeer_interop::quicpeer_node::{NodeConfig, QuicpeerNode};
use quicpeer_interop::PeerEvent;

/// The listener's Ed25519 seed byte (the same PeerId in both implementations).
const LISTENER_SEED: u8 = 2;
/// The dialer's seed byte.
const DIALER_SEED: u8 = 3;
/// Bound on starting a node and on its first ping.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// rust-libp2p's default ping timeout (`ping::Config::new()`).
const LIBP2P_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// An implementation on one side of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// quicpeer's `Host` on the mio driver.
    Quicpeer,
    /// rust-libp2p 0.57 (QUIC + ping) on a tokio current-thread runtime.
    Libp2p,
    /// The same rust-libp2p Swarm on quicpeer-libp2p (with its reconnect behaviour).
    Libp2pOnQuicpeer,
}

impl Stack {
    /// A short name.
    pub fn label(self) -> &'static str {
        match self {
            Stack::Quicpeer => "quicpeer",
            Stack::Libp2p => "rust-libp2p",
            Stack::Libp2pOnQuicpeer => "rust-libp2p/quicpeer",
        }
    }
}

/// A dialer and the listener that restarts under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// The side that keeps the connection and pings.
    pub dialer: Stack,
    /// The side that restarts.
    pub listener: Stack,
}

impl Pair {
    /// Every pair, in the order of the report.
    pub const ALL: [Pair; 6] = [
        Pair::new(Stack::Quicpeer, Stack::Quicpeer),
        Pair::new(Stack::Libp2p, Stack::Libp2p),
        Pair::new(Stack::Quicpeer, Stack::Libp2p),
        Pair::new(Stack::Libp2p, Stack::Quicpeer),
        Pair::new(Stack::Libp2pOnQuicpeer, Stack::Libp2p),
        Pair::new(Stack::Libp2p, Stack::Libp2pOnQuicpeer),
    ];

    /// A pair.
    pub const fn new(dialer: Stack, listener: Stack) -> Self {
        Self { dialer, listener }
    }

    /// `dialer → listener`.
    pub fn label(self) -> String {
        format!("{} → {}", self.dialer.label(), self.listener.label())
    }

    /// The pair's name on the command line: `qq`, `ll`, `ql`, `lq`, `sl` or `ls` (dialer
    /// first; `s` is the rust-libp2p Swarm switched to quicpeer-libp2p); other combinations
    /// have none and are not run.
    pub fn code(self) -> &'static str {
        match (self.dialer, self.listener) {
            (Stack::Quicpeer, Stack::Quicpeer) => "qq",
            (Stack::Libp2p, Stack::Libp2p) => "ll",
            (Stack::Quicpeer, Stack::Libp2p) => "ql",
            (Stack::Libp2p, Stack::Quicpeer) => "lq",
            (Stack::Libp2pOnQuicpeer, Stack::Libp2p) => "sl",
            (Stack::Libp2p, Stack::Libp2pOnQuicpeer) => "ls",
            _ => "",
        }
    }

    /// The pair named `code` (see [`Pair::code`]).
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The pairs, each run on its own.
    pub pairs: Vec<Pair>,
    /// Restarts per pair.
    pub restarts: usize,
    /// The dialer's (and the listener's) ping interval.
    pub ping_interval: Duration,
    /// How long a restart may take to recover before it counts as not recovered.
    pub timeout: Duration,
    /// Least time between a recovery and the next crash. It no longer needs to exceed
    /// quicpeer's `Limits::flap_grace` (1 s): connections that die of a stateless reset
    /// (`Cause::PeerRestarted`) do not count toward flapping.
    pub spacing: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            pairs: Pair::ALL.to_vec(),
            restarts: 20,
            ping_interval: Duration::from_millis(100),
            timeout: Duration::from_secs(15),
            spacing: Duration::from_millis(1500),
        }
    }
}

/// What one restart measured, each figure from the crash of the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When the rebuilt listener was listening again.
    pub back_up: Duration,
    /// When the dialer first noticed: its connection lost, or declared unresponsive.
    pub detection: Option<Duration>,
    /// How it noticed.
    pub how: String,
    /// When its first ping on a fresh connection was answered.
    pub first_ping: Option<Duration>,
}

/// Runs `restarts` restarts of one pair; `progress` gets a line per restart.
pub fn measure(
    pair: Pair,
    settings: &Settings,
    progress: &mut dyn FnMut(String),
) -> Result<Vec<Sample>, CompareError> {
    let interval = settings.ping_interval;
    let (mut listener, _) = Listener::start(pair.listener, 0, interval)?;
    let addr = listener.multiaddr.clone();
    let port = listener.port;
    let mut dialer = Dialer::start(pair.dialer, &addr, interval)?;
    let t0 = Instant::now();
    if dialer.fresh_ping(t0, None, t0 + START_TIMEOUT).is_none() {
        return Err(CompareError::Stuck(format!(
            "{}: the dialer's first ping was not answered within {START_TIMEOUT:?}",
            pair.label()
        )));
    }
    let mut samples = Vec::new();
    for index in 0..settings.restarts {
        // Pings on the connection, then the crash at a random phase of the rhythm.
        let phase = interval.mul_f64(rand::random::<f64>());
        std::thread::sleep(settings.spacing + phase);
        let old = dialer.current_connection();
        let crash = Instant::now();
        listener.crash();
        let (rebuilt, up) = Listener::start(pair.listener, port, interval)?;
        listener = rebuilt;
        let deadline = crash + settings.timeout;
        let (detection, how) = match dialer.detection(crash, old, deadline) {
            Some((at, how)) => (Some(at - crash), how),
            None => (None, "not detected".to_owned()),
        };
        let first_ping = dialer.fresh_ping(crash, old, deadline).map(|at| at - crash);
        let sample = Sample {
            back_up: up.saturating_duration_since(crash),
            detection,
            how,
            first_ping,
        };
        progress(format!(
            "{} restart {}/{}: back up {:.1} ms, detected {} ({}), first ping {}",
            pair.label(),
            index + 1,
            settings.restarts,
            ms(sample.back_up),
            sample
                .detection
                .map_or("never".into(), |d| format!("{:.1} ms", ms(d))),
            sample.how,
            sample
                .first_ping
                .map_or("never".into(), |d| format!("{:.1} ms", ms(d))),
        ));
        let recovered = sample.first_ping.is_some();
        samples.push(sample);
        if !recovered {
            // Start over with a fresh dialer so the next restart measures the same thing.
            drop(dialer);
            dialer = Dialer::start(pair.dialer, &addr, interval)?;
            let t = Instant::now();
            if dialer.fresh_ping(t, None, t + START_TIMEOUT).is_none() {
                return Err(CompareError::Stuck(format!(
                    "{}: a fresh dialer could not ping the listener",
                    pair.label()
                )));
            }
        }
    }
    Ok(samples)
}

/// Runs every pair of `settings` and reports percentiles and ratios.
pub fn run(settings: &Settings, progress: &mut dyn FnMut(String)) -> Result<Report, CompareError> {
    let load_before = super::load_note("before");
    let mut results = Vec::new();
    for &pair in &settings.pairs {
        let samples = measure(pair, settings, progress)?;
        results.push((pair, samples));
    }
    let mut report = super::report("reconnect", &COLUMNS);
    let labelled: Vec<(String, Vec<Sample>)> = (results.iter())
        .map(|(pair, samples)| (pair.label(), samples.clone()))
        .collect();
    report.rows = rows(
        &labelled,
        &Pair::new(Stack::Quicpeer, Stack::Quicpeer).label(),
    );
    let mut plot = Plot::new(
        "A listener restarts under a pinging dialer",
        "ms after the listener's crash",
        YAxis::Fraction,
    );
    for (label, samples) in &labelled {
        plot.series(
            format!("{label}: detection"),
            sorted(samples, |s| s.detection),
        );
        plot.series(
            format!("{label}: first ping"),
            sorted(samples, |s| s.first_ping),
        );
    }
    report.notes.push(format!(
        "each sample from the crash of the listener (state and socket dropped, no close sent; \
         rebuilt with the same identity on the same port) at a random phase of the dialer's \
         {} ms ping rhythm, at least {} ms after the previous recovery; both peers in this \
         process, each on its own thread and socket",
        settings.ping_interval.as_millis(),
        settings.spacing.as_millis()
    ));
    report.notes.push(
        "quicpeer: Host on the mio driver, Config::default() (derived keys, suspicion redial \
         after 3 probe timeouts, keep-alive 5 s, idle timeout 10 s); rust-libp2p 0.57: QUIC \
         transport defaults (keep-alive 5 s, idle timeout 10 s), ping timeout 20 s, the dialer \
         dials again as soon as its connection closes; rust-libp2p/quicpeer: the same Swarm \
         on quicpeer-libp2p (its Config::new: libp2p mode, keep-alive 5 s, idle timeout 10 s) \
         with its reconnect behaviour"
            .into(),
    );
    report.notes.push(
        "detection: the dialer's first sign of trouble (quicpeer: ConnectionLost or \
         Unresponsive of the old connection; rust-libp2p: ConnectionClosed); first ping: the \
         first answered ping on a fresh connection"
            .into(),
    );
    report.notes.push(load_before);
    report.notes.push(super::load_note("after"));
    report.plot = Some(plot);
    Ok(report)
}

/// The columns of the reconnect report, one row per dialer → listener pair ([`rows`]).
pub const COLUMNS: [&str; 13] = [
    "dialer → listener",
    "restarts",
    "recovered",
    "detected by",
    "detection p50 (ms)",
    "detection p90 (ms)",
    "detection max (ms)",
    "first ping p50 (ms)",
    "first ping p90 (ms)",
    "first ping max (ms)",
    "first ping mean (ms)",
    "p50 vs quicpeer → quicpeer",
    "listener back up p50 (ms)",
];

/// One row of [`COLUMNS`] per labelled run of samples; the first-ping median is also given
/// relative to the run labelled `reference` (quicpeer → quicpeer). Other benchmarks that add
/// their own pairs (the iroh comparison) build their rows with it too.
pub fn rows(results: &[(String, Vec<Sample>)], reference: &str) -> Vec<Vec<Cell>> {
    let reference = (results.iter())
        .find(|(label, _)| label == reference)
        .and_then(|(_, s)| percentile(&sorted(s, |s| s.first_ping), 50));
    let mut rows = Vec::new();
    for (label, samples) in results {
        let detection = sorted(samples, |s| s.detection);
        let first = sorted(samples, |s| s.first_ping);
        let back_up: Vec<f64> = samples.iter().map(|s| ms(s.back_up)).collect();
        let mean = (!first.is_empty()).then(|| first.iter().sum::<Duration>() / first.len() as u32);
        let ratio = match (percentile(&first, 50), reference) {
            (Some(p50), Some(reference)) if !reference.is_zero() => {
                Cell::num(p50.as_secs_f64() / reference.as_secs_f64(), 1)
            }
            _ => Cell::Missing,
        };
        rows.push(vec![
            Cell::text(label.clone()),
            Cell::num(samples.len() as f64, 0),
            Cell::num(first.len() as f64, 0),
            Cell::text(ways(samples)),
            super::millis(percentile(&detection, 50), 1),
            super::millis(percentile(&detection, 90), 1),
            super::millis(detection.last().copied(), 1),
            super::millis(percentile(&first, 50), 1),
            super::millis(percentile(&first, 90), 1),
            super::millis(first.last().copied(), 1),
            super::millis(mean, 1),
            ratio,
            median(&back_up).map_or(Cell::Missing, |m| Cell::num(m, 1)),
        ]);
    }
    rows
}

/// One measure of the samples, sorted (the samples that have it).
fn sorted(samples: &[Sample], f: fn(&Sample) -> Option<Duration>) -> Vec<Duration> {
    let mut v: Vec<Duration> = samples.iter().filter_map(f).collect();
    v.sort();
    v
}

/// How the restarts were detected, most common first: "stateless reset 20/20".
fn ways(samples: &[Sample]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in samples {
        match counts.iter_mut().find(|(how, _)| *how == s.how) {
            Some((_, n)) => *n += 1,
            None => counts.push((s.how.clone(), 1)),
        }
    }
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    counts
        .iter()
        .map(|(how, n)| format!("{how} {n}/{}", samples.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The listener of a pair.
struct Listener {
    node: ListenerNode,
    multiaddr: String,
    port: u16,
}

enum ListenerNode {
    Quicpeer(QuicpeerNode),
    Libp2p(Libp2pPeer),
}

impl Listener {
    /// Starts a listener on 127.0.0.1:`port` (0: any); returns it and when it was listening.
    fn start(stack: Stack, port: u16, interval: Duration) -> Result<(Self, Instant), CompareError> {
        match stack {
            Stack::Quicpeer => {
                let node = QuicpeerNode::spawn(NodeConfig {
                    bind: ([127, 0, 0, 1], port).into(),
                    ping_interval: Some(interval),
                    ping_on_connect: true,
                    ..NodeConfig::new(LISTENER_SEED)
                })
                .map_err(|e| CompareError::Setup(format!("quicpeer listener: {e}")))?;
                let up = Instant::now();
                let listener = Self {
                    multiaddr: node.multiaddr().to_string(),
                    port: node.local_addr().port(),
                    node: ListenerNode::Quicpeer(node),
                };
                Ok((listener, up))
            }
            Stack::Libp2p | Stack::Libp2pOnQuicpeer => {
                let listen = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
                    .parse()
                    .map_err(|e| CompareError::Setup(format!("multiaddr: {e}")))?;
                let started = Instant::now();
                let mut node = Libp2pPeer::spawn(libp2p_config(
                    Libp2pConfig::listener(LISTENER_SEED, listen),
                    interval,
                    stack,
                ))
                .map_err(|e| CompareError::Setup(format!("rust-libp2p listener: {e}")))?;
                let (up, addrs) = node
                    .events
                    .wait_for(started, START_TIMEOUT, |e| match e {
                        PeerEvent::Listening { addrs, .. } => Some(addrs.clone()),
                        PeerEvent::ListenFailed { error } => Some(vec![format!("!{error}")]),
                        _ => None,
                    })
                    .ok_or_else(|| CompareError::Stuck("rust-libp2p listener not up".into()))?;
                let multiaddr = addrs
                    .first()
                    .filter(|a| !a.starts_with('!'))
                    .cloned()
                    .ok_or_else(|| {
                        CompareError::Setup(format!("rust-libp2p cannot listen: {addrs:?}"))
                    })?;
                let (socket, _) = quicpeer::address::parse_str(&multiaddr)
                    .map_err(|e| CompareError::Setup(format!("{multiaddr}: {e}")))?;
                let listener = Self {
                    multiaddr,
                    port: socket.port(),
                    node: ListenerNode::Libp2p(node),
                };
                Ok((listener, up))
            }
        }
    }

    fn crash(self) {
        match self.node {
            ListenerNode::Quicpeer(node) => node.crash(),
            ListenerNode::Libp2p(node) => node.crash(),
        }
    }
}

fn libp2p_config(mut config: Libp2pConfig, interval: Duration, stack: Stack) -> Libp2pConfig {
    config.ping_interval = interval;
    config.ping_timeout = LIBP2P_PING_TIMEOUT;
    config.quicpeer_transport = stack == Stack::Libp2pOnQuicpeer;
    config
}

/// The dialer of a pair.
enum Dialer {
    Quicpeer(QuicpeerNode),
    Libp2p(Libp2pPeer),
}

impl Dialer {
    fn start(stack: Stack, addr: &str, interval: Duration) -> Result<Self, CompareError> {
        match stack {
            Stack::Quicpeer => {
                let node = QuicpeerNode::spawn(NodeConfig {
                    ping_interval: Some(interval),
                    ping_on_connect: true,
                    ..NodeConfig::new(DIALER_SEED)
                })
                .map_err(|e| CompareError::Setup(format!("quicpeer dialer: {e}")))?;
                node.dial(addr).map_err(CompareError::Setup)?;
                Ok(Dialer::Quicpeer(node))
            }
            Stack::Libp2p | Stack::Libp2pOnQuicpeer => {
                let addr = addr
                    .parse()
                    .map_err(|e| CompareError::Setup(format!("{addr}: {e}")))?;
                let node = Libp2pPeer::spawn(libp2p_config(
                    Libp2pConfig::dialer(DIALER_SEED, addr),
                    interval,
                    stack,
                ))
                .map_err(|e| CompareError::Setup(format!("rust-libp2p dialer: {e}")))?;
                Ok(Dialer::Libp2p(node))
            }
        }
    }

    /// The connection the latest answered ping went over (quicpeer only; rust-libp2p's events
    /// do not name connections, and are told apart by time instead).
    fn current_connection(&mut self) -> Option<ConnId> {
        match self {
            Dialer::Quicpeer(node) => {
                node.events.drain();
                node.events.seen().iter().rev().find_map(|s| match s.event {
                    HostEvent::PingResult { conn, .. } => Some(conn),
                    _ => None,
                })
            }
            Dialer::Libp2p(_) => None,
        }
    }

    /// When (at or after `since`) and how the dialer first noticed that `old` is gone.
    fn detection(
        &mut self,
        since: Instant,
        old: Option<ConnId>,
        deadline: Instant,
    ) -> Option<(Instant, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self {
            Dialer::Quicpeer(node) => node.events.wait_for(since, left, |e| match e {
                HostEvent::Manager(Event::Unresponsive { conn, .. }) if Some(*conn) == old => {
                    Some("suspicion redial".to_owned())
                }
                HostEvent::Manager(Event::ConnectionLost { conn, cause, .. })
                    if Some(*conn) == old =>
                {
                    Some(cause_name(cause))
                }
                _ => None,
            }),
            Dialer::Libp2p(node) => node.events.wait_for(since, left, |e| match e {
                PeerEvent::Closed { cause, .. } => Some(libp2p_cause_name(e, cause.as_deref())),
                // quicpeer-libp2p's reconnect behaviour, on quicpeer's suspicion.
                PeerEvent::Redialing { reason, .. } if reason == "Unresponsive" => {
                    Some("suspicion redial".to_owned())
                }
                _ => None,
            }),
        }
    }

    /// When (at or after `since`) the first ping on a connection other than `old` was
    /// answered.
    fn fresh_ping(
        &mut self,
        since: Instant,
        old: Option<ConnId>,
        deadline: Instant,
    ) -> Option<Instant> {
        let left = || deadline.saturating_duration_since(Instant::now());
        match self {
            Dialer::Quicpeer(node) => node
                .events
                .wait_for(since, left(), |e| match e {
                    HostEvent::PingResult { conn, .. } if Some(*conn) != old => Some(()),
                    _ => None,
                })
                .map(|(at, ())| at),
            Dialer::Libp2p(node) => {
                // The first ping after a new connection: the old one cannot answer any more.
                let (connected, ()) = node.events.wait_for(since, left(), |e| {
                    matches!(e, PeerEvent::Connected { .. }).then_some(())
                })?;
                node.events
                    .wait_for(connected, left(), |e| {
                        matches!(e, PeerEvent::Ping { .. }).then_some(())
                    })
                    .map(|(at, ())| at)
            }
        }
    }
}

fn cause_name(cause: &Cause) -> String {
    match cause {
        Cause::PeerRestarted => "stateless reset".into(),
        Cause::IdleTimeout => "idle timeout".into(),
        other => other.to_string(),
    }
}

fn libp2p_cause_name(event: &PeerEvent, cause: Option<&str>) -> String {
    if event.is_stateless_reset() {
        return "stateless reset".into();
    }
    match cause {
        Some(text) if text.ends_with("timed out") => "idle timeout".into(),
        Some(text) => text.to_owned(),
        None => "closed".into(),
    }
}
