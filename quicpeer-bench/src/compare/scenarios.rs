//! The restart scenarios of `bench restart-scenarios`, on loopback with real sockets: an idle
//! quicpeer pair whose listener restarts, with and without the listener's peer book, on a new
//! port with and without the dialer's restart epoch, and a planned restart.
//!
//! Both nodes are quicpeer `Host`s on the mio driver, each on its own thread and socket. The
//! dialer does not ping by itself (the link is idle: only keep-alives, every 5 s), but pings a
//! connection the moment it is established. Each trial: the dialer connects and pings once,
//! the link idles, the listener is crashed (state and socket dropped, nothing sent; or, for the
//! planned restart, it first closes its connections announcing the restart) and started again
//! with the same identity, and the figure is the time from the new listener being up to the
//! dialer's first ping answered on a fresh connection: the physical limit is one round trip.
//!
//! - **idle**: the restart is found at the dialer's next keep-alive (up to 5 s).
//! - **idle, peer book**: the restarted listener dials the peers of its predecessor's book at
//!   once; the dialer sees an inbound connection from the listener's PeerId under a new
//!   certificate key and takes it (restart epoch).
//! - **new port, peer book** (epoch on / off): the listener comes back on another port, which
//!   the dialer cannot know; only its dial reaches the dialer. With the epoch off, the dialer
//!   probes its old connection before it switches.
//! - **planned**: the listener closes with `close_all_restarting` (100 ms announced) and is
//!   back 100 ms later; the dialer redials every 20 ms meanwhile. With the peer book the
//!   restarted listener also dials the dialer at once.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use quicpeer::{ConnId, Event, HostEvent, PeerRecord};
use quicpeer_interop::quicpeer_node::{NodeConfig, QuicpeerNode};

use super::{ms, percentile, Cell, CompareError, Report};
use crate::plot::{Plot, YAxis};

const LISTENER_SEED: u8 = 2;
const DIALER_SEED: u8 = 3;
/// How long the link idles before the restart.
const IDLE: Duration = Duration::from_millis(300);
/// The downtime a planned restart announces, and takes.
const PLANNED_DOWNTIME: Duration = Duration::from_millis(100);
/// Bound on one trial's recovery: a keep-alive interval (5 s) and then some.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(12);

/// One restart scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Idle link, no peer book.
    Idle,
    /// Idle link, the restarted listener dials its peer book.
    IdleBook,
    /// A new port, the peer book, the dialer's restart epoch on.
    NewPortBook,
    /// A new port, the peer book, the dialer's restart epoch off.
    NewPortBookNoEpoch,
    /// `close_all_restarting`, then back after the announced downtime.
    Planned,
    /// The same, and the restarted node dials its peer book.
    PlannedBook,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Idle,
        Scenario::IdleBook,
        Scenario::NewPortBook,
        Scenario::NewPortBookNoEpoch,
        Scenario::Planned,
        Scenario::PlannedBook,
    ];

    /// A label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::Idle => "idle, no peer book",
            Scenario::IdleBook => "idle, peer book",
            Scenario::NewPortBook => "new port, peer book, restart epoch",
            Scenario::NewPortBookNoEpoch => "new port, peer book, epoch off",
            Scenario::Planned => "planned restart (100 ms down)",
            Scenario::PlannedBook => "planned restart, peer book",
        }
    }

    fn book(self) -> bool {
        matches!(
            self,
            Scenario::IdleBook
                | Scenario::NewPortBook
                | Scenario::NewPortBookNoEpoch
                | Scenario::PlannedBook
        )
    }

    fn new_port(self) -> bool {
        matches!(self, Scenario::NewPortBook | Scenario::NewPortBookNoEpoch)
    }
}

fn listener(port: u16) -> Result<QuicpeerNode, CompareError> {
    QuicpeerNode::spawn(NodeConfig {
        bind: ([127, 0, 0, 1], port).into(),
        ping_interval: None,
        ping_on_connect: false,
        ..NodeConfig::new(LISTENER_SEED)
    })
    .map_err(|e| CompareError::Setup(format!("quicpeer listener: {e}")))
}

/// One trial: from the new listener up to the dialer's first ping on a fresh connection.
fn trial(scenario: Scenario) -> Result<Option<Duration>, CompareError> {
    let old_listener = listener(0)?;
    let port = old_listener.local_addr().port();
    let addr = old_listener.multiaddr().to_string();
    let mut config = NodeConfig {
        ping_interval: None,
        ping_on_connect: true,
        ..NodeConfig::new(DIALER_SEED)
    };
    config.config.restart_epoch = scenario != Scenario::NewPortBookNoEpoch;
    let mut dialer = QuicpeerNode::spawn(config)
        .map_err(|e| CompareError::Setup(format!("quicpeer dialer: {e}")))?;
    let t0 = Instant::now();
    dialer.dial(&addr).map_err(CompareError::Setup)?;
    let old: ConnId = dialer
        .events
        .wait_for(t0, TRIAL_TIMEOUT, |e| match e {
            HostEvent::PingResult { conn, .. } => Some(*conn),
            _ => None,
        })
        .map(|(_, conn)| conn)
        .ok_or_else(|| CompareError::Stuck("the dialer's first ping".into()))?;
    std::thread::sleep(IDLE);

    let records = if scenario.book() {
        let (tx, rx) = mpsc::channel();
        old_listener.execute(move |host, _| {
            let _ = tx.send(host.manager().peer_book());
        });
        rx.recv_timeout(TRIAL_TIMEOUT)
            .map_err(|_| CompareError::Stuck("the listener's peer book".into()))?
    } else {
        Vec::<PeerRecord>::new()
    };
    let planned = matches!(scenario, Scenario::Planned | Scenario::PlannedBook);
    if planned {
        old_listener.execute(|host, now| {
            host.manager_mut()
                .close_all_restarting(now, PLANNED_DOWNTIME)
        });
        // Let the closes go out before the process "exits".
        std::thread::sleep(Duration::from_millis(30));
    }
    old_listener.crash();
    if planned {
        std::thread::sleep(PLANNED_DOWNTIME);
    }
    let new_listener = listener(if scenario.new_port() { 0 } else { port })?;
    let up = Instant::now();
    if !records.is_empty() {
        new_listener.execute(move |host, now| {
            host.manager_mut().dial_peer_book(now, records, 64);
        });
    }
    // The fresh ping comes when the new connection is established, or (the old connection
    // superseded after a probe, with the epoch off) when the application pings again on the
    // loss, as one resends at once.
    let deadline = up + TRIAL_TIMEOUT;
    let peer = new_listener.peer_id();
    let mut since = up;
    let mut repinged = false;
    let fresh = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = dialer.events.wait_for(since, left, |e| match e {
            HostEvent::PingResult { conn, .. } if *conn != old => Some(true),
            HostEvent::Manager(Event::ConnectionLost { conn, .. }) if *conn == old && !repinged => {
                Some(false)
            }
            _ => None,
        });
        match seen {
            Some((at, true)) => break Some(at.saturating_duration_since(up)),
            Some((at, false)) => {
                repinged = true;
                since = at;
                dialer.execute(move |host, now| {
                    let _ = host.ping(now, peer);
                });
            }
            None => break None,
        }
    };
    dialer.crash();
    new_listener.crash();
    Ok(fresh)
}

/// Runs `trials` trials of every scenario, in rounds, and reports percentiles from the
/// listener being up.
pub fn run(trials: usize, progress: &mut dyn FnMut(String)) -> Result<Report, CompareError> {
    let load_before = super::load_note("before");
    let mut results: Vec<(Scenario, Vec<Duration>, usize)> =
        Scenario::ALL.iter().map(|s| (*s, Vec::new(), 0)).collect();
    for round in 0..trials.max(1) {
        for (scenario, times, failed) in &mut results {
            match trial(*scenario)? {
                Some(t) => {
                    progress(format!(
                        "{} trial {}/{}: fresh ping {:.1} ms after the listener was up",
                        scenario.label(),
                        round + 1,
                        trials,
                        ms(t)
                    ));
                    times.push(t);
                }
                None => {
                    progress(format!(
                        "{} trial {}: not recovered",
                        scenario.label(),
                        round + 1
                    ));
                    *failed += 1;
                }
            }
        }
    }
    let mut report = super::report(
        "restart-scenarios",
        &[
            "scenario",
            "trials",
            "recovered",
            "fresh ping p50 (ms)",
            "p90 (ms)",
            "max (ms)",
            "mean (ms)",
        ],
    );
    let mut plot = Plot::new(
        "An idle peer restarts (loopback): from it being up to a fresh ping",
        "ms after the restarted listener was up",
        YAxis::Fraction,
    );
    for (scenario, times, failed) in &mut results {
        times.sort();
        let mean = (!times.is_empty()).then(|| times.iter().sum::<Duration>() / times.len() as u32);
        report.rows.push(vec![
            Cell::text(scenario.label()),
            Cell::num((times.len() + *failed) as f64, 0),
            Cell::num(times.len() as f64, 0),
            super::millis(percentile(times, 50), 1),
            super::millis(percentile(times, 90), 1),
            super::millis(times.last().copied(), 1),
            super::millis(mean, 1),
        ]);
        plot.series(scenario.label(), times.clone());
    }
    report.notes.push(format!(
        "quicpeer Hosts on the mio driver over loopback, Config::default() (keep-alive 5 s); the \
         dialer pings only when a connection is established; the link idles {} ms, then the \
         listener is crashed (nothing sent; the planned restart first closes announcing {} ms) \
         and started again; times from the new listener being up to the dialer's first ping \
         answered on a fresh connection",
        IDLE.as_millis(),
        PLANNED_DOWNTIME.as_millis()
    ));
    report.notes.push(load_before);
    report.notes.push(super::load_note("after"));
    report.plot = Some(plot);
    Ok(report)
}
