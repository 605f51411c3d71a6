//! Benchmark workloads, shared by `quicpeer bench` and the criterion benches in `benches/`.
//!
//! Every workload runs the sans-IO core on a virtual clock, so what is measured is CPU work,
//! never waiting: handshakes and datagrams between two endpoints joined by an instant in-memory
//! link, or whole [`sim`](quicpeer::sim) networks for restarts and reconnects. Comparisons with a
//! bare `quinn_proto` endpoint run in the same process, in the same run, on the same machine,
//! and each report gives ratios as well as times. Simulated durations are machine-independent;
//! wall-clock and CPU times are not. Like the driver, and unlike the core, this module reads the
//! system clock (`Instant::now`, to time the work); the core it measures only sees the virtual
//! clock.
//!
//! | workload | what it measures |
//! |---|---|
//! | [`channel`] | peer channels over one link: msgs/s in memory and durable, accept→delivery latency, restart to first resent message |
//! | [`per_datagram`] | CPU per datagram of established-connection stream traffic |
//! | [`handshake`] | completed handshakes per second on one core |
//! | `hostile` | a hub with established peers under a flood of Initials and forged packets on loopback: newcomers, losses, memory, amplification |
//! | [`mass_restart`] | a hub with N peers restarts: simulated time until all are reconnected |
//! | `mass_restart_loopback` | the same on loopback UDP, through the mio driver, as many peers as the machine allows |
//! | [`memory`] | bytes per idle connection, at 10 000 connections |
//! | [`reconnect`] | restart to first message on a fresh connection, per key and redial mode |
//! | [`relay_memory`] | bytes per reservation and per circuit of the circuit relay v2 server |
//! | [`restart_scenarios`] | an idle peer restarts: with and without a peer book, on a new port with and without the restart epoch, planned |

pub mod alloc;
pub mod channel;
#[cfg(feature = "compare")]
pub mod compare;
mod endpoint;
pub mod handshake;
#[cfg(feature = "mio")]
pub mod hostile;
pub mod mass_restart;
#[cfg(feature = "mio")]
pub mod mass_restart_loopback;
pub mod memory;
pub mod per_datagram;
pub mod plot;
pub mod reconnect;
pub mod relay_memory;
pub mod restart_scenarios;

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// The arguments of the callgrind workloads (`benches/*_callgrind.rs`): `[quicpeer|quinn]
/// [COUNT]`, quicpeer and `default` when absent; anything else (such as the `--bench` that
/// `cargo bench` passes) is ignored.
pub fn workload_args<T: std::str::FromStr>(default: T) -> (per_datagram::Stack, T) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stack = match args.iter().any(|a| a == "quinn") {
        true => per_datagram::Stack::Quinn,
        false => per_datagram::Stack::Quicpeer,
    };
    let count = args.iter().find_map(|a| a.parse().ok()).unwrap_or(default);
    (stack, count)
}

/// Why a benchmark could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A manager, endpoint or TLS configuration could not be built (a bug of the benchmark).
    #[error("benchmark setup failed: {0}")]
    Setup(String),
    /// The workload did not reach the state it waits for within its bound (a regression or a
    /// bug: the equivalent simulation tests should fail too).
    #[error("benchmark stuck: {0}")]
    Stuck(&'static str),
    /// The memory benchmark needs the process's allocations counted, and they are not.
    #[error("allocations are not counted in this process (install a counting global allocator)")]
    NoAllocationCounter,
}

/// One cell of a [`Report`].
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A number, shown with this many decimals in tables (JSON gets it in full).
    Number(f64, usize),
    /// Not measured (yet): a slot for a later measurement.
    Missing,
}

impl Cell {
    /// Text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// A number with `decimals` decimals.
    pub fn num(value: f64, decimals: usize) -> Self {
        Self::Number(value, decimals)
    }

    /// A duration in milliseconds, three decimals.
    pub fn millis(d: Duration) -> Self {
        Self::Number(d.as_secs_f64() * 1e3, 3)
    }

    fn display(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Number(value, decimals) => format!("{value:.decimals$}"),
            Self::Missing => "—".into(),
        }
    }
}

impl Serialize for Cell {
    /// Text as a string, a finite number as a number (a whole one without a fraction, as
    /// Rust's `Display` prints it: counts stay `16`, not `16.0`), anything else as `null`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Number(value, _) if value.fract() == 0.0 && value.abs() < 1e15 => {
                serializer.serialize_i64(*value as i64)
            }
            Self::Number(value, _) if value.is_finite() => serializer.serialize_f64(*value),
            Self::Number(..) | Self::Missing => serializer.serialize_none(),
        }
    }
}

/// The result of one benchmark: a table, and notes on how to read it. Serialized (see
/// [`Report::json`]) as `{"bench", "columns", "rows", "notes"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The benchmark's name, as on the command line.
    #[serde(rename = "bench")]
    pub name: String,
    /// Column headers, units included.
    pub columns: Vec<String>,
    /// Rows, as many cells as columns.
    pub rows: Vec<Vec<Cell>>,
    /// Method, parameters, and what is not measured yet.
    pub notes: Vec<String>,
    /// The samples behind the table, for `--plot` ([`plot::write_svg`]); not serialized.
    #[serde(skip)]
    pub plot: Option<plot::Plot>,
}

impl Report {
    /// An empty report named `name` with these columns.
    pub fn new(name: &str, columns: &[&str]) -> Self {
        Self {
            name: name.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
            plot: None,
        }
    }

    /// The report as an aligned plain-text table, notes below.
    pub fn table(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(Cell::display).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                cells
                    .iter()
                    .filter_map(|row| row.get(i))
                    .chain([&self.columns[i]])
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| {
            let mut out = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                let pad = width.saturating_sub(cell.chars().count());
                if i == 0 {
                    let _ = write!(out, "{cell}{}", " ".repeat(pad));
                } else {
                    let _ = write!(out, "  {}{cell}", " ".repeat(pad));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = format!("{}\n", line(&self.columns));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out += &format!("{}\n", line(&rule));
        for row in &cells {
            out += &format!("{}\n", line(row));
        }
        for note in &self.notes {
            out += &format!("note: {note}\n");
        }
        out
    }

    /// The report as one JSON object: `{"bench", "columns", "rows", "notes"}`; numbers stay
    /// numbers, unmeasured cells are `null`.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("strings and numbers always serialize")
    }
}

/// CPU time this thread has used, where the platform tells (Linux: `/proc/thread-self`).
pub fn thread_cpu_time() -> Option<Duration> {
    schedstat_cpu_time("/proc/thread-self/schedstat")
}

/// The CPU time a Linux `schedstat` file reports (its first field, in nanoseconds): this
/// thread's, or another's (`/proc/self/task/<tid>/schedstat`).
fn schedstat_cpu_time(path: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The `p`th percentile (0–100) of sorted values, by the nearest-rank method.
pub fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * p.min(100)).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Wall-clock and CPU time of a closure.
/// A simulated network of a hub and `peers` other nodes (not yet dialing), each with its own
/// Ed25519 identity, all with `config`; datagrams are not recorded. Shared by the workloads that
/// put many connections on one node.
fn hub_and_peers(
    seed: u64,
    peers: usize,
    config: &quicpeer::Config,
) -> (
    quicpeer::sim::Network,
    quicpeer::sim::NodeId,
    Vec<quicpeer::sim::NodeId>,
) {
    let mut net = quicpeer::sim::Network::new(seed);
    net.record_sent = false;
    let hub = net.add_node(
        "hub",
        quicpeer::Identity::from_ed25519_seed([0; 32]),
        config.clone(),
    );
    let nodes = (0..peers)
        .map(|i| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            net.add_node(
                &format!("p{i}"),
                quicpeer::Identity::from_ed25519_seed(key),
                config.clone(),
            )
        })
        .collect();
    (net, hub, nodes)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Option<Duration>) {
    let cpu = thread_cpu_time();
    let start = std::time::Instant::now();
    let value = f();
    let wall = start.elapsed();
    let cpu = cpu.and_then(|before| Some(thread_cpu_time()?.saturating_sub(before)));
    (value, wall, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&v, 90), Some(Duration::from_millis(18)));
        assert_eq!(percentile(&v, 100), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&v, 0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn reports_render_as_tables_and_json() {
        let mut report = Report::new("demo", &["what", "value (ms)"]);
        report
            .rows
            .push(vec![Cell::text("a \"b\""), Cell::num(1.23456, 2)]);
        report.rows.push(vec![Cell::text("later"), Cell::Missing]);
        report.notes.push("n".into());
        assert_eq!(
            report.table(),
            "what   value (ms)\n\
             -----  ----------\n\
             a \"b\"        1.23\n\
             later           —\n\
             note: n\n"
        );
        assert_eq!(
            report.json(),
            r#"{"bench":"demo","columns":["what","value (ms)"],"rows":[["a \"b\"",1.23456],["later",null]],"notes":["n"]}"#
        );
        // Whole numbers as `Display` prints them; what is not a number as `null`.
        let cells = [
            Cell::num(16.0, 0),
            Cell::num(0.5, 1),
            Cell::num(f64::NAN, 1),
        ];
        assert_eq!(serde_json::to_string(&cells).unwrap(), "[16,0.5,null]");
    }
}
