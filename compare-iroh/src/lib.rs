//! iroh beside quicpeer, rust-libp2p and quinn on loopback: the `compare-iroh` binary's
//! workloads.
//!
//! The `compare` binary of quicpeer-bench measures quicpeer against rust-libp2p and quinn.
//! iroh is another QUIC stack peers use to reach each other by public key, so it belongs in
//! the same tables; but its tree (its quinn fork noq, its relay and DNS crates) is large, so it
//! lives in a crate and workspace of its own that CI does not build. Each workload here runs
//! the iroh rows and then calls quicpeer-bench's own workloads for the other rows, so every
//! table is measured in one run on one machine and prints alike ([`Report`]).
//!
//! | module | what it measures |
//! |---|---|
//! | [`reconnect`] | an iroh listener crashes and comes back under a pinging iroh dialer |
//! | [`handshake`] | completed iroh handshakes per second, both endpoints on one pinned thread |
//! | [`throughput`] | one stream of bulk data between two iroh endpoints |
//!
//! iroh is set up as a user who opts out of n0's infrastructure would: the `Minimal` preset
//! (rustls with ring, as every other stack here), relays disabled, no address lookup, one IPv4
//! socket on 127.0.0.1, iroh's own transport defaults; the dialer is given the listener's
//! address directly.

#![deny(missing_docs)]

pub mod handshake;
pub mod reconnect;
pub mod throughput;

use std::net::SocketAddr;
use std::time::Duration;

use iroh::endpoint::presets;
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};
pub use quicpeer_bench::compare::{CompareError, Report};

/// The ALPN of every iroh connection in these workloads.
pub const ALPN: &[u8] = b"quicpeer-compare/ping/1";

/// The listener's secret-key seed byte (as the other stacks' listeners).
pub const LISTENER_SEED: u8 = 2;
/// The dialer's secret-key seed byte.
pub const DIALER_SEED: u8 = 3;

/// The iroh secret key made of 32 `seed` bytes, so a restarted listener keeps its identity.
pub fn secret_key(seed: u8) -> SecretKey {
    SecretKey::from_bytes(&[seed; 32])
}

/// How an iroh endpoint of these workloads is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// The secret key's seed byte.
    pub seed: u8,
    /// The UDP port on 127.0.0.1 (0: any).
    pub port: u16,
    /// Whether it accepts connections (announces [`ALPN`]).
    pub accepts: bool,
    /// How many TLS session tickets the dialer keeps per remote (`None`: iroh's default).
    pub tls_tickets: Option<usize>,
}

impl Setup {
    /// A listener on `port` with the identity of `seed`.
    pub fn listener(seed: u8, port: u16) -> Self {
        Self {
            seed,
            port,
            accepts: true,
            tls_tickets: None,
        }
    }

    /// A dialer with the identity of `seed`, on any port.
    pub fn dialer(seed: u8) -> Self {
        Self {
            seed,
            port: 0,
            accepts: false,
            tls_tickets: None,
        }
    }
}

/// Binds an iroh endpoint (inside a tokio runtime): relays and address lookup off, one IPv4
/// socket on 127.0.0.1.
pub async fn bind(setup: Setup) -> Result<Endpoint, CompareError> {
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(secret_key(setup.seed))
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .clear_ip_transports()
        .bind_addr(SocketAddr::from(([127, 0, 0, 1], setup.port)))
        .map_err(|e| CompareError::Setup(format!("iroh bind address: {e}")))?;
    if setup.accepts {
        builder = builder.alpns(vec![ALPN.to_vec()]);
    }
    if let Some(tickets) = setup.tls_tickets {
        builder = builder.max_tls_tickets(tickets);
    }
    builder
        .bind()
        .await
        .map_err(|e| CompareError::Setup(format!("iroh endpoint on port {}: {e}", setup.port)))
}

/// The address a dialer is given: the endpoint's id and its one loopback socket.
pub fn direct_addr(endpoint: &Endpoint) -> Result<EndpointAddr, CompareError> {
    let socket = endpoint
        .bound_sockets()
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| CompareError::Setup("the iroh endpoint has no IPv4 socket".into()))?;
    Ok(EndpointAddr::new(endpoint.id()).with_ip_addr(socket))
}

/// A tokio current-thread runtime, as every tokio stack of the comparison runs on.
pub fn current_thread() -> Result<tokio::runtime::Runtime, CompareError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CompareError::Setup(format!("tokio runtime: {e}")))
}

/// CPU time of the whole process (user + system, every thread, those ended included), where
/// the platform tells (`getrusage(RUSAGE_SELF)`, microseconds). iroh may run work on threads
/// of its own, which a thread's clock would miss.
pub fn process_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `usage` is a plain struct owned by this frame, which getrusage fills in.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
                return None;
            }
            usage
        };
        let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Some(Duration::from_micros(
            micros(usage.ru_utime) + micros(usage.ru_stime),
        ))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Threads of this process right now (Linux: `/proc/self/task`), to tell whether iroh started
/// threads of its own.
pub fn thread_count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

/// A named thread, its spawn failure as a setup error.
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, CompareError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|e| CompareError::Setup(format!("thread: {e}")))
}

/// Joins a thread, its panic as a setup error.
pub(crate) fn join<T>(thread: std::thread::JoinHandle<T>, what: &str) -> Result<T, CompareError> {
    thread
        .join()
        .map_err(|_| CompareError::Setup(format!("{what} thread panicked")))
}
