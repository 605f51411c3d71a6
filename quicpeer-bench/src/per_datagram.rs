//! CPU cost per datagram of established-connection traffic, quicpeer against bare quinn-proto.
//!
//! A connected pair on an instant link; A writes one endless stream, B reads it. Each step
//! takes one datagram from A's `poll_transmit` to B, and B's answers (acknowledgements, flow
//! control credit) back to A. *Receive* is B's share, timed around the never-inlined
//! `receive` function: `handle_datagram`, reading the stream, and draining `poll_transmit`.
//! *Round* is the wall time of whole steps divided by datagrams: sender, receiver, and the
//! acknowledgements' way back. For instruction counts of the same workload, see
//! `benches/callgrind.sh`.

use std::time::{Duration, Instant};

use super::endpoint::{QuicpeerEnd, QuinnEnd, Wire};
use super::{BenchError, Cell, Report};
use quicpeer::Config;

/// Bytes A offers its stream at each step (it takes what flow control allows).
const CHUNK: usize = 16 * 1024;
/// Datagrams exchanged before measuring: congestion window and buffers settle.
const WARM_UP: u64 = 2000;

/// Which implementation runs the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// Two quicpeer [`Manager`](quicpeer::Manager)s, libp2p TLS.
    Quicpeer,
    /// Two bare `quinn_proto` endpoints, minimal rustls configuration.
    Quinn,
}

impl Stack {
    /// A label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Quicpeer => "quicpeer Manager",
            Self::Quinn => "bare quinn-proto",
        }
    }
}

/// What one measured run took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Data datagrams delivered from A to B.
    pub datagrams: u64,
    /// Time in B's receive path, summed (zero when not timed).
    pub receive: Duration,
    /// Wall time of the whole run.
    pub total: Duration,
    /// CPU time of the whole run, where the platform tells (robust on a loaded machine).
    pub cpu: Option<Duration>,
    /// Stream bytes B read.
    pub bytes: u64,
}

enum Pair {
    Quicpeer(Box<Wire<QuicpeerEnd>>),
    Quinn(Box<Wire<QuinnEnd>>),
}

/// A connected pair streaming data, ready to be measured.
pub struct PerDatagram {
    pair: Pair,
    chunk: Vec<u8>,
}

impl PerDatagram {
    /// Builds a connected pair of `stack` and warms it up.
    pub fn new(stack: Stack) -> Result<Self, BenchError> {
        let now = Instant::now();
        let pair = match stack {
            Stack::Quicpeer => {
                let (a, b) = QuicpeerEnd::pair(&Config::default(), now)?;
                let mut wire = Wire::new(a, b, now);
                wire.connect()?;
                Pair::Quicpeer(Box::new(wire))
            }
            Stack::Quinn => {
                let (a, b) = QuinnEnd::pair()?;
                let mut wire = Wire::new(a, b, now);
                wire.connect()?;
                Pair::Quinn(Box::new(wire))
            }
        };
        let mut bench = Self {
            pair,
            chunk: vec![0x42; CHUNK],
        };
        bench.run(WARM_UP, false)?;
        Ok(bench)
    }

    /// Sends `datagrams` data datagrams from A to B; times B's receive path if `timed`.
    pub fn run(&mut self, datagrams: u64, timed: bool) -> Result<Timing, BenchError> {
        match &mut self.pair {
            Pair::Quicpeer(wire) => drive(wire, &self.chunk, datagrams, timed),
            Pair::Quinn(wire) => drive(wire, &self.chunk, datagrams, timed),
        }
    }
}

fn drive<E: super::endpoint::Endpoint>(
    wire: &mut Wire<E>,
    chunk: &[u8],
    datagrams: u64,
    timed: bool,
) -> Result<Timing, BenchError> {
    let start = Instant::now();
    let bytes_before = wire.b.received();
    let mut timing = Timing {
        datagrams: 0,
        receive: Duration::ZERO,
        total: Duration::ZERO,
        cpu: None,
        bytes: 0,
    };
    let cpu_start = super::thread_cpu_time();
    let mut idle = 0;
    while timing.datagrams < datagrams {
        match wire.data_datagram(chunk, timed) {
            Some(spent) => {
                timing.datagrams += 1;
                timing.receive += spent;
                idle = 0;
            }
            None => {
                idle += 1;
                if idle > 100_000 {
                    return Err(BenchError::Stuck("the sender stopped sending"));
                }
            }
        }
    }
    timing.total = start.elapsed();
    timing.cpu = cpu_start.and_then(|s| Some(super::thread_cpu_time()?.saturating_sub(s)));
    timing.bytes = wire.b.received() - bytes_before;
    Ok(timing)
}

/// Runs both stacks `rounds` times, alternating, `datagrams` each time; reports the medians.
pub fn run(datagrams: u64, rounds: usize) -> Result<Report, BenchError> {
    let stacks = [Stack::Quicpeer, Stack::Quinn];
    let mut benches = Vec::new();
    for stack in stacks {
        benches.push(PerDatagram::new(stack)?);
    }
    let mut timings: Vec<Vec<Timing>> = vec![Vec::new(); stacks.len()];
    for _ in 0..rounds.max(1) {
        for (bench, timings) in benches.iter_mut().zip(&mut timings) {
            timings.push(bench.run(datagrams, true)?);
        }
    }
    let per = |d: Duration, n: u64| d.as_secs_f64() * 1e9 / n.max(1) as f64;
    let median = |timings: &[Timing], f: &dyn Fn(&Timing) -> f64| {
        let mut v: Vec<f64> = timings.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let summary: Vec<(f64, f64, f64, f64)> = timings
        .iter()
        .map(|t| {
            (
                median(t, &|t| per(t.receive, t.datagrams)),
                median(t, &|t| per(t.total, t.datagrams)),
                median(t, &|t| per(t.cpu.unwrap_or(t.total), t.datagrams)),
                median(t, &|t| t.bytes as f64 / t.datagrams.max(1) as f64),
            )
        })
        .collect();
    let (base_receive, _, base_cpu, _) = summary[1];
    let mut report = Report::new(
        "per-datagram",
        &[
            "stack",
            "receive ns/datagram",
            "round ns/datagram",
            "round CPU ns/datagram",
            "payload B/datagram",
            "receive ratio",
            "round CPU ratio",
        ],
    );
    for (stack, (receive, round, cpu, payload)) in stacks.iter().zip(&summary) {
        report.rows.push(vec![
            Cell::text(stack.label()),
            Cell::num(*receive, 0),
            Cell::num(*round, 0),
            Cell::num(*cpu, 0),
            Cell::num(*payload, 0),
            Cell::num(receive / base_receive, 2),
            Cell::num(cpu / base_cpu, 2),
        ]);
    }
    report.notes.push(format!(
        "median of {rounds} alternating rounds of {datagrams} datagrams per stack, after \
         {WARM_UP} warm-up datagrams; one stream A->B on an instant in-memory link"
    ));
    report.notes.push(
        "receive: B handles the datagram, reads the stream, sends its ACKs, asks for its next \
         timeout (wall time, timed \
         around each call); round: sender + receiver + ACKs back per datagram, wall and this \
         thread's CPU time (the CPU figure holds on a loaded machine); ratios: against bare \
         quinn-proto"
            .into(),
    );
    Ok(report)
}
