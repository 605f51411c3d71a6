//! Comparison benchmarks on real loopback sockets: quicpeer against rust-libp2p and quinn, in
//! the same run, on the same machine.
//!
//! quicpeer's own benchmarks (`quicpeer bench`) run the sans-IO core on a virtual clock. These
//! run whole stacks over 127.0.0.1, each peer on a thread of its own: quicpeer on its mio
//! driver, quicpeer-tokio, rust-libp2p and quinn on tokio current-thread runtimes. They live in this crate
//! because the core crate must not depend on libp2p or tokio; the `compare` binary runs them.
//!
//! | workload | what it measures |
//! |---|---|
//! | [`reconnect`] | a listener restarts: time to detect it, and to the first ping on a fresh connection |
//! | [`handshake`] | completed handshakes per second with both peers pinned to one core |
//! | [`throughput`] | one stream of bulk data, quicpeer's mio driver and quicpeer-tokio against quinn |
//! | [`scenarios`] | an idle quicpeer peer restarts (peer book, new port, restart epoch, planned): from it being up to a fresh ping |
//! | [`slots`] | a relay client crashes and comes back, reserving each time: quicpeer's relay against rust-libp2p's |
//! | [`circuits`] | bytes per second through one relayed circuit, and the relay's memory per reservation and per circuit: quicpeer's relay against rust-libp2p's |
//!
//! The machine may be shared, so every report gives CPU time (per thread, from
//! `/proc/thread-self/schedstat`) beside wall time, takes its ratios from CPU time where the
//! workload is CPU-bound, and notes the load average before and after the run.

pub mod circuits;
pub mod handshake;
pub mod reconnect;
pub mod scenarios;
pub mod slots;
pub mod throughput;

use std::time::Duration;

/// The report, percentile and CPU-time helpers of quicpeer's own benchmarks, so both kinds
/// print (and serialise) alike.
pub use crate::{percentile, thread_cpu_time, Cell, Report};

/// Why a comparison could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// A node, endpoint or configuration could not be built, or a socket bound.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The workload did not reach the state it waits for within its bound: a regression or a
    /// bug (the interop tests should fail too), or a machine too loaded to run it.
    #[error("stuck: {0}")]
    Stuck(String),
}

/// The median of some figures (the upper one of an even count); `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

/// The 1-, 5- and 15-minute load averages, where the platform tells (Linux: `/proc/loadavg`).
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// The load average as a note: "load average 1.23 (1 min) / 1.50 (5 min)".
pub fn load_note(when: &str) -> String {
    match load_average() {
        Some([one, five, _]) => format!(
            "load average {when}: {one:.2} (1 min), {five:.2} (5 min), on {} CPUs",
            cpus()
        ),
        None => format!("load average {when}: unknown on this platform"),
    }
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to one CPU (Linux), so two peers share one core. Returns whether it
/// worked; elsewhere it does nothing and returns `false`.
pub fn pin_to_cpu(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `set` is a plain bitmask owned by this frame; CPU_SET bounds-checks `cpu`
        // against the mask's size, and pid 0 is the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if cpu >= libc::CPU_SETSIZE as usize {
                return false;
            }
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

/// Milliseconds of a duration, for tables.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A duration in milliseconds with `decimals` decimals; `Missing` for `None`.
pub(crate) fn millis(d: Option<Duration>, decimals: usize) -> Cell {
    d.map_or(Cell::Missing, |d| Cell::num(ms(d), decimals))
}

/// An empty report with these columns.
pub(crate) fn report(name: &str, columns: &[&str]) -> Report {
    Report::new(name, columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 90), Some(Duration::from_millis(18)));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }
}
