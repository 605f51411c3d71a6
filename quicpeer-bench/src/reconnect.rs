//! Reconnect latency: from a peer's restart to the first message it receives on a fresh
//! connection, per key mode and redial policy, in the simulator.
//!
//! Two nodes on a jittery link; A sends B a short message on a fresh stream every 100 ms, and
//! at once whenever a connection to B completes (an application resending what was lost). B
//! restarts at a random phase of that rhythm; the time until B's new incarnation sees A's first
//! stream is one sample. Each trial is its own network with its own seed.
//!
//! This is the simulated part of the reconnect benchmark. The same measurement over loopback
//! UDP, through the mio driver and against rust-libp2p, is `compare reconnect`
//! (`cargo run -p quicpeer-bench --features compare --release --bin compare -- reconnect`).

use std::time::Duration;

use super::{percentile, BenchError, Cell, Report};
use quicpeer::sim::{Link, Network, NodeId};
use quicpeer::{Cause, Config, Event, Identity, KeyMode};

/// How often A sends a message.
const TICK: Duration = Duration::from_millis(100);
/// Resolution at which A reacts to a completed connection.
const STEP: Duration = Duration::from_millis(1);
/// A trial that has not reconnected after this long is stuck.
const LIMIT: Duration = Duration::from_secs(60);

/// Keys and redial policy of one configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Keys derived from the identity (quicpeer's default) rather than quinn's random ones.
    pub derived_keys: bool,
    /// Suspicion redial on.
    pub suspicion: bool,
}

impl Mode {
    /// The four combinations, quicpeer's default first.
    pub const ALL: [Mode; 4] = [
        Mode {
            derived_keys: true,
            suspicion: true,
        },
        Mode {
            derived_keys: true,
            suspicion: false,
        },
        Mode {
            derived_keys: false,
            suspicion: true,
        },
        Mode {
            derived_keys: false,
            suspicion: false,
        },
    ];

    /// A label for tables.
    pub fn label(self) -> String {
        format!(
            "{} keys, suspicion {}",
            if self.derived_keys {
                "derived"
            } else {
                "quinn default (random)"
            },
            if self.suspicion { "on" } else { "off" }
        )
    }

    fn config(self) -> Config {
        let mut config = Config::default();
        if !self.derived_keys {
            config.keys = KeyMode::RandomPerProcess;
        }
        if !self.suspicion {
            config.suspicion_ptos = None;
        }
        config
    }
}

/// One trial's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// From the restart to B's first stream on a fresh connection (simulated).
    pub latency: Duration,
    /// Why A's old connection ended.
    pub cause: Option<Cause>,
}

/// Runs one simulated trial of `mode` on a link of `latency` ± `jitter`.
pub fn simulated(
    mode: Mode,
    seed: u64,
    latency: Duration,
    jitter: Duration,
) -> Result<Sample, BenchError> {
    let mut net = Network::new(seed);
    net.record_sent = false;
    net.set_default_link({
        let mut link = Link::default();
        link.latency = latency;
        link.jitter = jitter;
        link
    });
    let a = net.add_node("a", Identity::from_ed25519_seed([1; 32]), mode.config());
    let b = net.add_node("b", Identity::from_ed25519_seed([2; 32]), mode.config());
    let (peer_b, addr_b) = (net.peer_id(b), net.addr(b));
    let now = net.now();
    net.manager(a)
        .ok_or(BenchError::Setup("node a is down".into()))?
        .dial(now, peer_b, [addr_b])
        .map_err(|e| BenchError::Setup(format!("dial: {e}")))?;
    // Warm up: connected, a second of messages, then a random phase of the send rhythm.
    let phase = Duration::from_micros(seed.wrapping_mul(7_919) % TICK.as_micros() as u64);
    let mut next_tick = net.now();
    let warm_up = net.now() + Duration::from_secs(1) + phase;
    while net.now() < warm_up {
        step(&mut net, a, b, &mut next_tick);
    }
    net.take_events(a);
    net.take_events(b);

    net.restart(b);
    let restarted = net.now();
    let mut cause = None;
    while net.now() < restarted + LIMIT {
        for (_, event) in step(&mut net, a, b, &mut next_tick) {
            if let Event::ConnectionLost { cause: c, .. } = event {
                cause.get_or_insert(c);
            }
        }
        let received = net.events(b).iter().find_map(|(at, e)| match e {
            Event::StreamOpened { .. } => Some(*at),
            _ => None,
        });
        if let Some(at) = received {
            return Ok(Sample {
                latency: at - restarted,
                cause,
            });
        }
    }
    Err(BenchError::Stuck("no message on a fresh connection"))
}

/// Advances the network by [`STEP`]; A sends at its ticks and when a connection completes.
/// Returns A's events of the step.
fn step(
    net: &mut Network,
    a: NodeId,
    b: NodeId,
    next_tick: &mut std::time::Instant,
) -> Vec<(std::time::Instant, Event)> {
    net.run_for(STEP);
    let events = net.take_events(a);
    let connected = events
        .iter()
        .any(|(_, e)| matches!(e, Event::Connected { .. }));
    if connected || net.now() >= *next_tick {
        if net.now() >= *next_tick {
            *next_tick += TICK;
        }
        let peer = net.peer_id(b);
        if let Some(manager) = net.manager(a) {
            if let Ok(stream) = manager.open_stream_to(&peer) {
                let _ = manager.stream_write(stream, b"message");
                let _ = manager.stream_finish(stream);
            }
        }
    }
    events
}

/// `trials` simulated restarts per mode, as a report (the loopback and rust-libp2p
/// measurements are the interop crate's `compare reconnect`).
pub fn run(trials: u64, latency: Duration, jitter: Duration) -> Result<Report, BenchError> {
    let mut report = Report::new(
        "reconnect",
        &[
            "environment",
            "mode",
            "p50 (ms)",
            "p90 (ms)",
            "max (ms)",
            "mean (ms)",
            "p50 vs default",
            "detected by",
            "trials",
        ],
    );
    let mut default_p50 = None;
    for mode in Mode::ALL {
        let mut latencies = Vec::new();
        let mut causes: Vec<String> = Vec::new();
        for seed in 1..=trials {
            let sample = simulated(mode, seed, latency, jitter)?;
            latencies.push(sample.latency);
            let cause = match sample.cause {
                Some(Cause::PeerRestarted) => "reset",
                Some(Cause::IdleTimeout) => "idle timeout",
                Some(Cause::Superseded { .. }) => "suspicion redial",
                Some(_) => "other",
                None => "none",
            };
            causes.push(cause.into());
        }
        latencies.sort();
        let mean = latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32;
        causes.sort();
        causes.dedup();
        let pct = |p| percentile(&latencies, p).map_or(Cell::Missing, Cell::millis);
        let p50 = percentile(&latencies, 50).unwrap_or_default();
        let base = *default_p50.get_or_insert(p50);
        let ratio = p50.as_secs_f64() / base.as_secs_f64().max(f64::MIN_POSITIVE);
        report.rows.push(vec![
            Cell::text("simulated"),
            Cell::text(mode.label()),
            pct(50),
            pct(90),
            pct(100),
            Cell::millis(mean),
            Cell::num(ratio, 2),
            Cell::text(causes.join(", ")),
            Cell::num(trials as f64, 0),
        ]);
    }
    report.notes.push(format!(
        "link {} ms ± {} ms jitter one way; A sends every {} ms and at once on a new \
         connection (reaction within {} ms); default config (keep-alive 5 s, idle 10 s); \
         'p50 vs default': against quicpeer's default (derived keys, suspicion on); over \
         loopback and against rust-libp2p: `cargo run -p quicpeer-bench --features compare \
         --release --bin compare -- reconnect`",
        latency.as_millis(),
        jitter.as_millis(),
        TICK.as_millis(),
        STEP.as_millis()
    ));
    Ok(report)
}
