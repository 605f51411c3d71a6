//! A hub with N connected peers restarts in the simulator: how long until every peer holds a
//! fresh connection, in simulated time, and what the run costs in CPU time.
//!
//! The peers dial the hub, everyone settles, the hub restarts (same identity, same address).
//! Each peer learns of the restart from the stateless reset that answers its next packet
//! (here: its next keep-alive) and redials at once. Simulated times are machine-independent;
//! the CPU and wall-clock times are this machine's.

use std::time::{Duration, Instant};

use super::{hub_and_peers, percentile, timed, BenchError, Cell, Report};
use quicpeer::sim::NodeId;
use quicpeer::{Cause, Config, Event};

/// The outcome of one mass restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Peers connected to the hub.
    pub peers: usize,
    /// From the restart to the last peer's fresh connection (simulated).
    pub all_reconnected: Duration,
    /// From the restart to each peer's `ConnectionLost`: median and maximum (simulated).
    pub detection: (Duration, Duration),
    /// From the restart to each peer's fresh connection: median and 99th percentile.
    pub recovery: (Duration, Duration),
    /// Peers whose loss was classified `PeerRestarted` (the rest timed out).
    pub by_reset: usize,
    /// Wall-clock time of the restart phase, and of the whole run (setup included).
    pub wall: (Duration, Duration),
    /// CPU time of the restart phase and of the whole run, where the platform tells.
    pub cpu: (Option<Duration>, Option<Duration>),
}

/// Runs one mass restart of a hub with `peers` peers whose keep-alive is `keep_alive`. With
/// `staggered`, the peers dial one after the other across one keep-alive interval, so their
/// keep-alives (and their detections of the restart) are spread out as in a real network;
/// otherwise they all dial at once and all hit the restarted hub in the same instant.
pub fn measure(
    peers: usize,
    keep_alive: Duration,
    staggered: bool,
    seed: u64,
) -> Result<Outcome, BenchError> {
    let (result, wall, cpu) = timed(|| measure_inner(peers, keep_alive, staggered, seed));
    let mut outcome = result?;
    outcome.wall.1 = wall;
    outcome.cpu.1 = cpu;
    Ok(outcome)
}

fn measure_inner(
    peers: usize,
    keep_alive: Duration,
    staggered: bool,
    seed: u64,
) -> Result<Outcome, BenchError> {
    let mut config = Config::default();
    config.keep_alive = Some(keep_alive);
    let (mut net, hub, dialers) = hub_and_peers(seed, peers, &config);
    let (hub_peer, hub_addr) = (net.peer_id(hub), net.addr(hub));
    let start = net.now();
    for (i, &d) in dialers.iter().enumerate() {
        if staggered {
            net.run_until_time(start + keep_alive * i as u32 / peers.max(1) as u32);
        }
        let now = net.now();
        if let Some(manager) = net.manager(d) {
            manager
                .dial(now, hub_peer, [hub_addr])
                .map_err(|e| BenchError::Setup(format!("dial: {e}")))?;
        }
    }
    net.run_for(Duration::from_secs(2) + keep_alive);
    let connected = net.manager(hub).map_or(0, |m| m.connected_peers().len());
    if connected != peers {
        return Err(BenchError::Stuck("not every peer connected to the hub"));
    }
    for node in 0..=peers {
        net.take_events(NodeId(node));
    }

    let ((detections, recoveries, by_reset), wall, cpu) = timed(|| {
        net.restart(hub);
        let restarted = net.now();
        let mut lost: Vec<Option<(Instant, bool)>> = vec![None; peers];
        let mut fresh: Vec<Option<Instant>> = vec![None; peers];
        let limit = restarted + keep_alive * 2 + config.idle_timeout * 2;
        while fresh.iter().any(Option::is_none) && net.now() < limit {
            net.run_for(Duration::from_millis(10));
            for (i, &d) in dialers.iter().enumerate() {
                for (at, event) in net.take_events(d) {
                    match event {
                        Event::ConnectionLost { cause, .. } if lost[i].is_none() => {
                            lost[i] = Some((at, cause == Cause::PeerRestarted));
                        }
                        Event::Connected {
                            replaced: Some(_), ..
                        } if fresh[i].is_none() => fresh[i] = Some(at),
                        _ => {}
                    }
                }
            }
        }
        let detections: Option<Vec<Duration>> = lost
            .iter()
            .map(|l| l.map(|(at, _)| at - restarted))
            .collect();
        let recoveries: Option<Vec<Duration>> =
            fresh.iter().map(|f| f.map(|at| at - restarted)).collect();
        let by_reset = lost.iter().filter(|l| l.is_some_and(|(_, r)| r)).count();
        (detections, recoveries, by_reset)
    });
    let (Some(mut detections), Some(mut recoveries)) = (detections, recoveries) else {
        return Err(BenchError::Stuck(
            "not every peer reconnected after the restart",
        ));
    };
    detections.sort();
    recoveries.sort();
    let pct = |v: &[Duration], p| percentile(v, p).unwrap_or_default();
    Ok(Outcome {
        peers,
        all_reconnected: pct(&recoveries, 100),
        detection: (pct(&detections, 50), pct(&detections, 100)),
        recovery: (pct(&recoveries, 50), pct(&recoveries, 99)),
        by_reset,
        wall: (wall, Duration::ZERO),
        cpu: (cpu, None),
    })
}

/// One mass restart per entry of `peer_counts`, as a report.
pub fn run(peer_counts: &[usize], keep_alive: Duration) -> Result<Report, BenchError> {
    let mut report = Report::new(
        "mass-restart",
        &[
            "peers",
            "dials",
            "all fresh (sim ms)",
            "fresh p50 (sim ms)",
            "fresh p99 (sim ms)",
            "detect max (sim ms)",
            "by reset",
            "restart CPU (ms)",
            "restart wall (ms)",
            "run CPU (ms)",
            "run wall (ms)",
        ],
    );
    for &peers in peer_counts {
        for staggered in [true, false] {
            let o = measure(peers, keep_alive, staggered, 42)?;
            report.rows.push(row(&o, staggered));
        }
    }
    report.notes.push(format!(
        "simulated network, 5 ms one-way latency, keep-alive {} ms, idle peers: each learns of \
         the restart at its next keep-alive; dials 'spread' over one keep-alive interval (phases \
         as in a real network) or 'at once' (every peer hits the restarted hub in the same \
         instant: the burst case); 'restart' columns time the phase from the restart to the \
         last fresh connection, 'run' columns include building and connecting the network",
        keep_alive.as_millis()
    ));
    Ok(report)
}

fn row(o: &Outcome, staggered: bool) -> Vec<Cell> {
    let cpu = |c: Option<Duration>| c.map_or(Cell::Missing, Cell::millis);
    vec![
        Cell::num(o.peers as f64, 0),
        Cell::text(if staggered { "spread" } else { "at once" }),
        Cell::millis(o.all_reconnected),
        Cell::millis(o.recovery.0),
        Cell::millis(o.recovery.1),
        Cell::millis(o.detection.1),
        Cell::text(format!("{}/{}", o.by_reset, o.peers)),
        cpu(o.cpu.0),
        Cell::millis(o.wall.0),
        cpu(o.cpu.1),
        Cell::millis(o.wall.1),
    ]
}
