//! Completed handshakes per second on one core: quicpeer against bare quinn-proto.
//!
//! One thread runs both sides of each handshake over an instant in-memory link: A dials B, the
//! handshake completes on both sides, A closes, and the clock jumps two seconds so the closed
//! connection drains and is freed. The endpoints persist across handshakes, as a server's does.
//! quicpeer does mutual authentication with libp2p certificates (an Ed25519 host-key signature
//! to check on each side, on top of TLS); the baseline authenticates the server only, with a
//! self-signed P-256 certificate, so the ratio is the price of libp2p's handshake and of the
//! manager together. A third row has quicpeer resume the TLS session of the previous
//! handshake (`Config::tls_resumption`): what a reconnect to a peer it knew costs, restart or
//! not.

use std::time::{Duration, Instant};

use super::endpoint::{Endpoint, QuicpeerEnd, QuinnEnd, Wire};
use super::{timed, BenchError, Cell, Report};
use quicpeer::Config;

/// Which implementation runs the workload.
pub use super::per_datagram::Stack;

enum Pair {
    Quicpeer(Box<Wire<QuicpeerEnd>>),
    Quinn(Box<Wire<QuinnEnd>>),
}

/// Two endpoints of one stack, ready to shake hands over and over.
pub struct Handshakes {
    pair: Pair,
}

impl Handshakes {
    /// Builds the endpoints and completes one handshake to warm them up. quicpeer's are full
    /// handshakes (session resumption off).
    pub fn new(stack: Stack) -> Result<Self, BenchError> {
        Self::build(stack, false)
    }

    /// quicpeer's endpoints with session resumption on: after the warm-up, every handshake
    /// resumes the session of the one before.
    pub fn resumed() -> Result<Self, BenchError> {
        Self::build(Stack::Quicpeer, true)
    }

    fn build(stack: Stack, resumption: bool) -> Result<Self, BenchError> {
        let now = Instant::now();
        let pair = match stack {
            Stack::Quicpeer => {
                let mut config = Config::default();
                config.tls_resumption = resumption;
                // Dialing the same peer again and again is the workload, not flapping.
                config.limits.flap_grace = Duration::ZERO;
                let (a, b) = QuicpeerEnd::pair(&config, now)?;
                Pair::Quicpeer(Box::new(Wire::new(a, b, now)))
            }
            Stack::Quinn => {
                let (a, b) = QuinnEnd::pair()?;
                Pair::Quinn(Box::new(Wire::new(a, b, now)))
            }
        };
        let mut bench = Self { pair };
        bench.run(1)?;
        Ok(bench)
    }

    /// Completes `count` handshakes, each followed by a close.
    pub fn run(&mut self, count: u32) -> Result<(), BenchError> {
        match &mut self.pair {
            Pair::Quicpeer(wire) => cycles(wire, count),
            Pair::Quinn(wire) => cycles(wire, count),
        }
    }
}

/// Never inlined: `benches/handshake_profile.sh` counts instructions in here.
#[inline(never)]
fn cycles<E: Endpoint>(wire: &mut Wire<E>, count: u32) -> Result<(), BenchError> {
    for _ in 0..count {
        wire.connect()?;
        let now = wire.now;
        wire.a.close_all(now);
        wire.exchange();
        wire.advance(Duration::from_secs(2));
    }
    Ok(())
}

/// Runs both stacks `rounds` times, alternating, `count` handshakes each; reports the medians.
pub fn run(count: u32, rounds: usize) -> Result<Report, BenchError> {
    let labels = [
        "quicpeer Manager, full",
        "quicpeer Manager, resumed",
        Stack::Quinn.label(),
    ];
    let mut benches = [
        Handshakes::new(Stack::Quicpeer)?,
        Handshakes::resumed()?,
        Handshakes::new(Stack::Quinn)?,
    ];
    let mut rates: Vec<Vec<(f64, Option<f64>)>> = vec![Vec::new(); labels.len()];
    for _ in 0..rounds.max(1) {
        for (bench, rates) in benches.iter_mut().zip(&mut rates) {
            let (result, wall, cpu) = timed(|| bench.run(count));
            result?;
            let per_second = |d: Duration| f64::from(count) / d.as_secs_f64();
            rates.push((per_second(wall), cpu.map(per_second)));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let summary: Vec<(f64, Option<f64>)> = rates
        .iter()
        .map(|r| {
            let mut wall: Vec<f64> = r.iter().map(|(w, _)| *w).collect();
            let mut cpu: Vec<f64> = r.iter().filter_map(|(_, c)| *c).collect();
            (median(&mut wall).unwrap_or(0.0), median(&mut cpu))
        })
        .collect();
    // On a loaded machine CPU time is the fairer clock; wall time where the platform has none.
    let rate = |(wall, cpu): &(f64, Option<f64>)| cpu.unwrap_or(*wall);
    let base = summary.last().map_or(1.0, rate);
    let mut report = Report::new(
        "handshake",
        &[
            "stack",
            "handshakes/s (wall)",
            "handshakes/s (CPU)",
            "µs/handshake (CPU)",
            "ratio vs quinn (CPU)",
        ],
    );
    for (label, measured) in labels.iter().zip(&summary) {
        let (wall, cpu) = measured;
        report.rows.push(vec![
            Cell::text(*label),
            Cell::num(*wall, 0),
            cpu.map_or(Cell::Missing, |c| Cell::num(c, 0)),
            Cell::num(1e6 / rate(measured), 1),
            Cell::num(rate(measured) / base, 2),
        ]);
    }
    report.notes.push(format!(
        "median of {rounds} alternating rounds of {count} handshakes per stack; both sides of \
         every handshake (and its close) on this one thread"
    ));
    report.notes.push(
        "quicpeer: mutual libp2p TLS (Ed25519 host keys, P-256 certificate keys); resumed: a \
         TLS 1.3 PSK with a fresh key exchange, no certificates; baseline: server-only TLS 1.3 \
         with a self-signed P-256 certificate, no resumption"
            .into(),
    );
    Ok(report)
}
