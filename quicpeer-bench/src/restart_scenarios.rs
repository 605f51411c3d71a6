//! How long a restart of one peer stays unnoticed, scenario by scenario, in the simulator.
//!
//! A dials B and the link goes idle (keep-alive 5 s, nothing sent). Then B restarts, and each
//! scenario is one way it can come back:
//!
//! | scenario | what B does | how A can find out |
//! |---|---|---|
//! | idle, no peer book | restarts on its port and waits | A's next keep-alive draws a stateless reset |
//! | idle, peer book | restarts on its port and dials its peer book | the restart epoch: A sees B's new certificate key |
//! | new port, epoch | restarts on a new port and dials its peer book | the restart epoch |
//! | new port, epoch off | the same, with A's `Config::restart_epoch` off | A probes its old connection, which is silent |
//! | planned restart | closes with `close_all_restarting` first, and is down for 300 ms | A redials on a short schedule |
//!
//! Two times per trial, from B being up again, in simulated time: until A drops its old
//! connection (it knows B restarted), and until A is on a fresh connection alone (the new one
//! established and the old one gone: what A's traffic uses is then the new one). Each trial is
//! its own network with its own seed, and B restarts at a random phase of A's keep-alive.

use std::time::Duration;

use super::{percentile, BenchError, Cell, Report};
use quicpeer::sim::{Link, Network};
use quicpeer::{Config, Event, Identity};

/// A trial that has not reconnected after this long is stuck.
const LIMIT: Duration = Duration::from_secs(30);
/// How long B is down in the planned restart.
const PLANNED_DOWNTIME: Duration = Duration::from_millis(300);

/// One way B comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scenario {
    /// B restarts on its port and does nothing.
    IdleWithoutBook,
    /// B restarts on its port and dials its peer book.
    IdleWithBook,
    /// B restarts on a new port and dials its peer book.
    NewPortEpoch,
    /// The same, with A's restart epoch off.
    NewPortWithoutEpoch,
    /// B announces its restart, is down for [`PLANNED_DOWNTIME`], and comes back on its port.
    Planned,
}

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 5] = [
        Scenario::IdleWithoutBook,
        Scenario::IdleWithBook,
        Scenario::NewPortEpoch,
        Scenario::NewPortWithoutEpoch,
        Scenario::Planned,
    ];

    /// A label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::IdleWithoutBook => "idle, no peer book",
            Scenario::IdleWithBook => "idle, peer book",
            Scenario::NewPortEpoch => "new port, peer book, restart epoch",
            Scenario::NewPortWithoutEpoch => "new port, peer book, epoch off",
            Scenario::Planned => "planned restart (300 ms down)",
        }
    }
}

/// One trial's times, from B being up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Until A's old connection to B ended.
    pub detected: Duration,
    /// Until A held a fresh connection to B and the old one had ended.
    pub switched: Duration,
}

/// Runs one trial.
pub fn trial(scenario: Scenario, seed: u64, latency: Duration) -> Result<Sample, BenchError> {
    let mut net = Network::new(seed);
    net.record_sent = false;
    net.icmp_unreachable = true;
    net.set_default_link(Link::with_latency(latency));
    let mut config_a = Config::default();
    config_a.restart_epoch = scenario != Scenario::NewPortWithoutEpoch;
    let a = net.add_node("a", Identity::from_ed25519_seed([1; 32]), config_a);
    let b = net.add_node("b", Identity::from_ed25519_seed([2; 32]), Config::default());
    let peer_b = net.peer_id(b);
    net.dial(a, b);
    // Idle for a while and a random phase of the keep-alive.
    let phase = Duration::from_micros(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) % 5_000_000);
    net.run_for(Duration::from_secs(1) + phase);
    let book = net.manager(b).ok_or(stuck("b is down"))?.peer_book();
    let old = (net.manager(a).ok_or(stuck("a is down"))?)
        .connection(&peer_b)
        .ok_or(stuck("not connected before the restart"))?;

    let restart = net.now();
    match scenario {
        Scenario::Planned => {
            let now = net.now();
            let m = net.manager(b).ok_or(stuck("b is down"))?;
            m.close_all_restarting(now, PLANNED_DOWNTIME);
            net.run_for(latency * 2);
            net.stop(b);
            net.run_for(PLANNED_DOWNTIME);
            net.restart(b);
        }
        Scenario::NewPortEpoch | Scenario::NewPortWithoutEpoch => {
            net.restart_on_new_port(b);
        }
        Scenario::IdleWithoutBook | Scenario::IdleWithBook => net.restart(b),
    }
    let back = net.now();
    if scenario != Scenario::IdleWithoutBook && scenario != Scenario::Planned {
        let m = net.manager(b).ok_or(stuck("b is down"))?;
        m.dial_peer_book(back, book, 16);
    }
    let found = |net: &Network| {
        let events = net.events(a).iter().filter(|(at, _)| *at >= restart);
        let (mut lost, mut fresh) = (None, None);
        for (at, event) in events {
            match event {
                Event::ConnectionLost { conn, .. } if *conn == old => lost = lost.or(Some(*at)),
                Event::Connected { peer, .. } if *peer == peer_b => fresh = fresh.or(Some(*at)),
                _ => {}
            }
        }
        lost.zip(fresh)
    };
    net.run_until(LIMIT, |n| found(n).is_some());
    // The planned restart's close came before B was back.
    let (lost, fresh) = found(&net).ok_or(stuck("no fresh connection"))?;
    Ok(Sample {
        detected: lost.saturating_duration_since(back),
        switched: lost.max(fresh) - back,
    })
}

fn stuck(what: &'static str) -> BenchError {
    BenchError::Stuck(what)
}

/// `trials` trials per scenario, as a report.
pub fn run(trials: u64, latency: Duration) -> Result<Report, BenchError> {
    let mut report = Report::new(
        "restart-scenarios",
        &[
            "scenario",
            "old dropped p50 (ms)",
            "old dropped max (ms)",
            "on fresh p50 (ms)",
            "on fresh p90 (ms)",
            "on fresh max (ms)",
            "trials",
        ],
    );
    for scenario in Scenario::ALL {
        let samples = (1..=trials)
            .map(|seed| trial(scenario, seed, latency))
            .collect::<Result<Vec<_>, _>>()?;
        let mut detected: Vec<Duration> = samples.iter().map(|s| s.detected).collect();
        let mut switched: Vec<Duration> = samples.iter().map(|s| s.switched).collect();
        detected.sort();
        switched.sort();
        let pct = |v: &[Duration], p| percentile(v, p).map_or(Cell::Missing, Cell::millis);
        report.rows.push(vec![
            Cell::text(scenario.label()),
            pct(&detected, 50),
            pct(&detected, 100),
            pct(&switched, 50),
            pct(&switched, 90),
            pct(&switched, 100),
            Cell::num(trials as f64, 0),
        ]);
    }
    report.notes.push(format!(
        "simulated; link {} ms one way, ICMP errors delivered; default config (keep-alive 5 s); \
         times from B being up again (a planned restart's close, which comes earlier, counts \
         as 0)",
        latency.as_millis()
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_reconnects_and_the_peer_book_and_the_epoch_win() {
        let latency = Duration::from_millis(5);
        let run = |scenario| trial(scenario, 3, latency).expect("the trial ends");
        let idle = run(Scenario::IdleWithoutBook);
        let book = run(Scenario::IdleWithBook);
        let epoch = run(Scenario::NewPortEpoch);
        let probe = run(Scenario::NewPortWithoutEpoch);
        let planned = run(Scenario::Planned);
        for sample in [idle, book, epoch, probe, planned] {
            assert!(sample.detected <= sample.switched, "{sample:?}");
        }
        // The restarted node's dial completes 1.5 round trips after it is up, and replaces
        // the old connection in that call; without the epoch the old one is probed first.
        assert_eq!(book.switched, latency * 3);
        assert_eq!(epoch.switched, latency * 3);
        assert!(probe.switched > epoch.switched);
        assert!(idle.switched > book.switched);
        // A planned restart is known before the peer goes down.
        assert_eq!(planned.detected, Duration::ZERO);
    }
}
