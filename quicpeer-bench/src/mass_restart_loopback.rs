//! A hub with N connected peers restarts on loopback UDP: the real-socket counterpart of
//! [`mass_restart`](super::mass_restart), with as many peers as the machine allows.
//!
//! The hub is a [`Manager`] on the mio [`Driver`], on a thread of its own, bound to
//! `127.0.0.1`. The peers are N managers, each with its own UDP socket (so the kernel, not a
//! shared endpoint, demultiplexes them), hosted together by one *fleet* thread with one
//! `epoll` set and one timer heap: N threads or N processes would measure the scheduler, not
//! quicpeer. The peers dial the hub one after the other, at a fixed rate (handshakes cost CPU,
//! and a burst would only measure the hub's socket buffer) and over one keep-alive interval at
//! least (so that their keep-alives, which reveal the restart, come at every phase, as in a
//! real network). Everyone settles, and the hub is crashed: its driver
//! is dropped without sending anything, and a new hub with the same identity is bound to the
//! same port at once. Each peer learns of the restart from the stateless reset that answers its
//! next packet (its next keep-alive) and redials at once.
//!
//! What bounds N on a machine: one file descriptor per peer socket (`ulimit -n`), about 130 KB
//! of memory per peer (its manager, plus the hub's state for its connection) and the CPU of the
//! initial handshakes. The restart itself costs the new hub one handshake per peer, on one
//! core: that, not detection, is what the time to "all fresh" measures once the peers are many.
//!
//! Wall-clock times are this machine's, under its load; the report notes the load average.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use quicpeer::PeerId;

use super::plot::{Plot, YAxis};
use super::{percentile, schedstat_cpu_time, thread_cpu_time, BenchError, Cell, Report};
use quicpeer::driver::{Context, DriverStats, Handle, Sharded, ShardedThreads};
use quicpeer::{Cause, Config, Event, Identity, Manager};

/// More peers than any open-file limit lets one process bind sockets for.
pub const MAX_PEERS: usize = 1 << 20;

/// Parameters of one loopback mass restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Peers connected to the hub (one UDP socket each).
    pub peers: usize,
    /// Keep-alive interval of every connection: an idle peer detects the restart at its next
    /// keep-alive.
    pub keep_alive: Duration,
    /// Dials per second while the peers connect (they connect one after the other, spread
    /// over one keep-alive interval at least).
    pub dial_rate: u32,
    /// Receive buffer asked for the hub's socket (`SO_RCVBUF`; Linux caps it at
    /// `net.core.rmem_max` and doubles it); `None` keeps the driver's
    /// ([`SOCKET_BUFFER`](quicpeer::driver::SOCKET_BUFFER)).
    pub hub_recv_buffer: Option<usize>,
    /// How long after the restart the benchmark waits for every peer to reconnect.
    pub timeout: Duration,
    /// The hub's `Limits::max_inbound_handshakes`; `None` keeps the default.
    pub hub_max_inbound_handshakes: Option<usize>,
    /// The hub's `Limits::retry_above` (`Some(0)`: always validate addresses with a Retry);
    /// `None` keeps the default.
    pub hub_retry_above: Option<usize>,
    /// The restarted hub dials the old hub's peer book at once (`Manager::dial_peer_book`):
    /// each peer then finds the restart when the hub's handshake reaches it (the restart
    /// epoch), not at its next keep-alive.
    pub hub_peer_book: bool,
    /// Shards of the hub: one manager per thread, all on the hub's port (`SO_REUSEPORT`,
    /// [`Sharded`]); 1 is the plain driver.
    pub hub_threads: usize,
}

impl Params {
    /// `peers` peers with a 1 s keep-alive, 1 000 dials per second, the driver's socket buffer
    /// and a 60 s timeout.
    pub fn new(peers: usize) -> Self {
        Self {
            peers,
            keep_alive: Duration::from_secs(1),
            dial_rate: 1000,
            hub_recv_buffer: None,
            timeout: Duration::from_secs(60),
            hub_max_inbound_handshakes: None,
            hub_retry_above: None,
            hub_peer_book: false,
            hub_threads: 1,
        }
    }
}

/// The outcome of one loopback mass restart. Durations are wall-clock, from the moment the old
/// hub's socket was closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Peers connected to the hub.
    pub peers: usize,
    /// Building the peers and connecting them all (wall-clock).
    pub setup: Duration,
    /// From the crash to the new hub's socket being bound and driven.
    pub hub_back_up: Duration,
    /// From the crash to the last peer's fresh connection.
    pub all_fresh: Duration,
    /// From the crash to each peer's fresh connection: median and 99th percentile.
    pub fresh: (Duration, Duration),
    /// From the crash to each peer's fresh connection, every peer, in order.
    pub fresh_each: Vec<Duration>,
    /// From the crash to each peer's `ConnectionLost`: median and maximum.
    pub detection: (Duration, Duration),
    /// Peers whose loss was classified `PeerRestarted` (a stateless reset, or, when the hub
    /// dials its peer book, the restart epoch).
    pub by_reset: usize,
    /// Peers whose old connection ended otherwise (timed out, superseded by a suspicion redial).
    pub by_other: usize,
    /// The causes of those other losses, counted.
    pub other_causes: BTreeMap<String, usize>,
    /// Dials that failed during the restart phase (a peer's manager redials with backoff).
    pub failed_dials: usize,
    /// Why they failed: each failed attempt's cause, counted.
    pub failure_causes: BTreeMap<String, usize>,
    /// Dials the peers' application made again after the manager gave up (initial dials
    /// included).
    pub app_redials: usize,
    /// The hub's CPU use while the peers were connected and idle (keep-alives only), as a
    /// fraction of one core, where the platform tells.
    pub hub_idle_cpu: Option<f64>,
    /// Peers the new hub reported connected at the end.
    pub hub_connected: usize,
    /// Of the new hub's inbound handshakes, those that resumed a TLS session (tickets the
    /// old hub issued: the ticket key is derived from the identity).
    pub hub_resumed: u64,
    /// CPU time of the new hub's thread until every peer was back, where the platform tells.
    pub hub_cpu: Option<Duration>,
    /// CPU time of the fleet thread (all the peers) over the same phase.
    pub fleet_cpu: Option<Duration>,
    /// UDP datagrams the kernel dropped for want of receive-buffer space during the restart
    /// phase, all sockets of the machine (`RcvbufErrors` of `/proc/net/snmp`), where readable.
    pub recv_buffer_drops: Option<u64>,
    /// What the new hub's driver did (wake-ups, datagrams, system calls).
    pub hub_driver: DriverStats,
    /// The hub socket's receive buffer as the kernel granted it (Linux reports twice the
    /// payload it holds).
    pub hub_recv_buffer: usize,
}

/// Runs one mass restart on loopback.
pub fn measure(params: &Params) -> Result<Outcome, BenchError> {
    if params.peers == 0 || params.dial_rate == 0 {
        return Err(BenchError::Setup(
            "peers and dial rate must be positive".into(),
        ));
    }
    if params.peers > MAX_PEERS {
        return Err(BenchError::Setup(format!(
            "{} peers: at most {MAX_PEERS} (one socket each; the open-file limit comes first)",
            params.peers
        )));
    }
    if params.hub_threads == 0 || params.hub_threads > 255 {
        return Err(BenchError::Setup("hub threads: 1 to 255".into()));
    }
    let peers = params.peers;
    let mut config = Config::default();
    config.keep_alive = Some(params.keep_alive);
    config.limits.max_connections = peers.saturating_mul(2).saturating_add(64);
    let hub_identity = Identity::from_ed25519_seed([0; 32]);
    let hub_peer = hub_identity.peer_id();
    let (sockets, hub_recv_buffer) =
        bind_hub_shards(None, params.hub_threads, params.hub_recv_buffer)?;
    let hub_addr = sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .ok_or_else(|| BenchError::Setup("hub socket without an address".into()))?;
    let mut hub_config = config.clone();
    if let Some(max) = params.hub_max_inbound_handshakes {
        hub_config.limits.max_inbound_handshakes = max;
    }
    if let Some(above) = params.hub_retry_above {
        hub_config.limits.retry_above = Some(above);
    }
    let hub = Hub::spawn_shards(hub_identity.clone(), hub_config.clone(), sockets, 1)?;

    let started = Instant::now();
    let shared = Arc::new(Shared::default());
    let fleet = {
        let (shared, config) = (shared.clone(), config.clone());
        // At the dial rate, and spread over one keep-alive interval at least: the peers'
        // keep-alives then come at every phase, as in a real network, wherever the crash falls.
        let interval =
            (Duration::from_secs(1) / params.dial_rate).max(params.keep_alive / peers as u32);
        std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || {
                Fleet::build(peers, 0, &config, &shared)?.run(hub_peer, hub_addr, interval)
            })
            .map_err(|e| BenchError::Setup(format!("fleet thread: {e}")))?
    };
    // Building a manager makes its certificate (about a millisecond); then the dials.
    let setup_bound = Duration::from_millis(5) * peers as u32
        + (Duration::from_secs(1) / params.dial_rate * peers as u32).max(params.keep_alive)
        + Duration::from_secs(10);
    if !wait_for(&shared.connected, peers, setup_bound, &fleet) {
        shared.stop.store(true, Ordering::Relaxed);
        let _ = fleet.join();
        let _ = hub.crash();
        return Err(fleet_failed(
            &shared,
            format!(
                "{} of {peers} peers connected to the hub within {setup_bound:?} ({} built)",
                shared.connected.load(Ordering::Relaxed),
                shared.built.load(Ordering::Relaxed),
            ),
        ));
    }
    let setup = started.elapsed();
    // Let every connection go idle, so that each peer detects the restart at its keep-alive;
    // meanwhile, weigh the hub's cost of keeping them.
    let settle = params
        .keep_alive
        .clamp(Duration::from_secs(2), Duration::from_secs(10));
    let idle_before = (hub.cpu(), Instant::now());
    std::thread::sleep(settle);
    let hub_idle_cpu = idle_before.0.zip(hub.cpu()).map(|(before, after)| {
        after.saturating_sub(before).as_secs_f64() / idle_before.1.elapsed().as_secs_f64()
    });

    // What the old hub would have saved on disk, a moment before its crash.
    let book = match params.hub_peer_book {
        true => hub.peer_book(),
        false => Vec::new(),
    };
    let drops_before = udp_counter("RcvbufErrors");
    *lock(&shared.restart) = Some(Instant::now());
    shared.restarting.store(true, Ordering::Release);
    let _old = hub.crash()?;
    let crashed = Instant::now();
    let (sockets, _) = bind_hub_shards(Some(hub_addr), params.hub_threads, params.hub_recv_buffer)?;
    let hub = Hub::spawn_shards(hub_identity, hub_config, sockets, 2)?;
    let hub_back_up = crashed.elapsed();
    if !book.is_empty() {
        // Each shard dials its share of the book (every n-th record).
        let (book, shards) = (Arc::new(book), params.hub_threads);
        hub.execute_all(move |shard, manager, now| {
            let share: Vec<_> = (book.iter().skip(shard).step_by(shards).cloned()).collect();
            manager.dial_peer_book(now, share, usize::MAX);
        })?;
    }
    let reconnected = wait_for(&shared.fresh, peers, params.timeout, &fleet);
    let drops_after = udp_counter("RcvbufErrors");
    // The hub counts a peer once the peer's last handshake flight arrives: shortly after the
    // peer itself does.
    let mut hub_connected = hub.connected_peers();
    let counted = Instant::now();
    while reconnected && hub_connected < peers && counted.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        hub_connected = hub.connected_peers();
    }
    let hub_resumed = hub
        .query_all(|m| {
            m.metrics()
                .handshakes_resumed
                .get(quicpeer::Direction::Inbound)
        })
        .iter()
        .sum();
    // The hub first: peers that vanish first would draw ICMP errors to the hub's sends.
    let new_hub = hub.crash()?;
    shared.stop.store(true, Ordering::Relaxed);
    let fleet = fleet
        .join()
        .map_err(|_| BenchError::Setup("the fleet thread panicked".into()))??;
    if !reconnected {
        return Err(BenchError::Stuck(
            "not every peer reconnected after the restart",
        ));
    }

    let since = |at: Instant| at.saturating_duration_since(crashed);
    let mut fresh: Vec<Duration> = fleet
        .records
        .iter()
        .filter_map(|r| r.fresh)
        .map(since)
        .collect();
    let mut detections: Vec<Duration> = fleet
        .records
        .iter()
        .filter_map(|r| r.lost.as_ref().map(|(at, _)| since(*at)))
        .collect();
    fresh.sort();
    detections.sort();
    let pct = |v: &[Duration], p| percentile(v, p).unwrap_or_default();
    let by_reset = (fleet.records.iter())
        .filter(|r| matches!(r.lost, Some((_, Cause::PeerRestarted))))
        .count();
    let lost = fleet.records.iter().filter(|r| r.lost.is_some()).count();
    Ok(Outcome {
        peers,
        setup,
        hub_back_up,
        all_fresh: pct(&fresh, 100),
        fresh: (pct(&fresh, 50), pct(&fresh, 99)),
        fresh_each: fresh.clone(),
        detection: (pct(&detections, 50), pct(&detections, 100)),
        by_reset,
        by_other: lost - by_reset,
        other_causes: count_causes(
            fleet
                .records
                .iter()
                .filter_map(|r| r.lost.as_ref().map(|(_, cause)| cause))
                .filter(|cause| **cause != Cause::PeerRestarted),
        ),
        failed_dials: fleet.records.iter().map(|r| r.failed_dials).sum(),
        failure_causes: count_causes(fleet.records.iter().flat_map(|r| &r.failures)),
        app_redials: fleet.records.iter().map(|r| r.app_redials).sum(),
        hub_idle_cpu,
        hub_connected,
        hub_resumed,
        hub_cpu: new_hub.cpu,
        fleet_cpu: fleet.restart_cpu,
        recv_buffer_drops: drops_before
            .zip(drops_after)
            .map(|(b, a)| a.saturating_sub(b)),
        hub_driver: new_hub.stats,
        hub_recv_buffer,
    })
}

/// One loopback mass restart per entry of `peer_counts`, each with `template`'s other
/// parameters, as a report.
pub fn run(peer_counts: &[usize], template: &Params) -> Result<Report, BenchError> {
    let (keep_alive, dial_rate) = (template.keep_alive, template.dial_rate);
    let mut report = Report::new(
        "mass-restart-loopback",
        &[
            "peers",
            "hub threads",
            "hub peer book",
            "setup (s)",
            "hub back up (ms)",
            "all fresh (ms)",
            "fresh p50 (ms)",
            "fresh p99 (ms)",
            "detect p50 (ms)",
            "detect max (ms)",
            "peer restarted",
            "failed dials",
            "timed out",
            "app redials",
            "hub connected",
            "resumed",
            "hub idle CPU (%)",
            "hub CPU (ms)",
            "peers CPU (ms)",
            "hub rcvbuf (KiB)",
            "rcvbuf drops",
            "handed over",
        ],
    );
    let load_before = load_average();
    let mut plot = Plot::new(
        "A hub restarts: its peers back on fresh connections",
        "ms after the hub's crash",
        YAxis::Count,
    );
    for &peers in peer_counts {
        let o = measure(&Params {
            peers,
            ..template.clone()
        })?;
        let book = if template.hub_peer_book {
            ", hub peer book"
        } else {
            ""
        };
        let threads = template.hub_threads;
        plot.series(
            format!("{peers} peers{book}, hub threads {threads}"),
            o.fresh_each.clone(),
        );
        let timed_out = (o.failure_causes.iter())
            .chain(&o.other_causes)
            .filter(|(cause, _)| cause.contains("TimedOut"))
            .map(|(_, n)| n)
            .sum::<usize>();
        let cpu = |c: Option<Duration>| c.map_or(Cell::Missing, Cell::millis);
        report.rows.push(vec![
            Cell::num(o.peers as f64, 0),
            Cell::num(threads as f64, 0),
            Cell::text(if template.hub_peer_book { "yes" } else { "no" }),
            Cell::num(o.setup.as_secs_f64(), 1),
            Cell::millis(o.hub_back_up),
            Cell::millis(o.all_fresh),
            Cell::millis(o.fresh.0),
            Cell::millis(o.fresh.1),
            Cell::millis(o.detection.0),
            Cell::millis(o.detection.1),
            Cell::text(format!("{}/{}", o.by_reset, o.peers)),
            Cell::num(o.failed_dials as f64, 0),
            Cell::num(timed_out as f64, 0),
            Cell::num(o.app_redials as f64, 0),
            Cell::num(o.hub_connected as f64, 0),
            Cell::num(o.hub_resumed as f64, 0),
            o.hub_idle_cpu
                .map_or(Cell::Missing, |f| Cell::num(f * 100.0, 1)),
            cpu(o.hub_cpu),
            cpu(o.fleet_cpu),
            Cell::num(o.hub_recv_buffer as f64 / 1024.0, 0),
            o.recv_buffer_drops
                .map_or(Cell::Missing, |d| Cell::num(d as f64, 0)),
            Cell::num(o.hub_driver.forwarded_out as f64, 0),
        ]);
        if !o.other_causes.is_empty() {
            let causes: Vec<String> = (o.other_causes.iter())
                .map(|(cause, n)| format!("{cause} x{n}"))
                .collect();
            report.notes.push(format!(
                "{} peers: old connections that ended otherwise than by a reset: {}",
                o.peers,
                causes.join(", ")
            ));
        }
        if !o.failure_causes.is_empty() {
            let causes: Vec<String> = (o.failure_causes.iter())
                .map(|(cause, n)| format!("{cause} x{n}"))
                .collect();
            report.notes.push(format!(
                "{} peers: failed dial attempts after the restart: {}",
                o.peers,
                causes.join(", ")
            ));
        }
    }
    report.notes.push(format!(
        "loopback UDP on 127.0.0.1: the hub on the mio driver ('hub threads' shards on one port \
         with SO_REUSEPORT, one thread each), the peers each with \
         its own socket, all on one other thread; keep-alive {} ms; peers dialed at {dial_rate}/s, \
         then idle; the hub is crashed (dropped, nothing sent) and rebound on the same port at \
         once; times are wall-clock from the crash; 'hub CPU' and 'peers CPU' cover the restart \
         phase (all hub threads together); 'timed out' counts handshakes and old connections \
         that ended HandshakeFailed(TimedOut); 'hub rcvbuf' is each hub socket's receive buffer \
         as Linux reports it (twice what was asked); 'rcvbuf drops' counts every UDP socket of \
         the machine; 'handed over' counts the new hub's datagrams that reached a shard other \
         than their connection's and were handed to it",
        keep_alive.as_millis(),
    ));
    report.notes.push(format!(
        "load average before: {}, after: {}",
        load_before.unwrap_or_else(|| "?".into()),
        load_average().unwrap_or_else(|| "?".into())
    ));
    report.plot = Some(plot);
    Ok(report)
}

// ---- the hub ----

/// The hub: managers of one identity on the mio driver, one shard per thread, all on one
/// port ([`Sharded`]; a single shard is the plain driver on its own thread).
pub(crate) struct Hub {
    shards: Vec<Handle<Manager>>,
    threads: ShardedThreads<Manager>,
    /// Each shard thread's `schedstat` file, to read its CPU time from outside (Linux).
    schedstat: Vec<Option<String>>,
    /// The shards' CPU time when they started.
    cpu_start: Option<Duration>,
}

/// What a hub reports when it ends.
pub(crate) struct HubReport {
    pub(crate) cpu: Option<Duration>,
    /// Every shard's counters, added up.
    pub(crate) stats: DriverStats,
}

impl Hub {
    /// A hub of one shard on `socket`.
    pub(crate) fn spawn(
        identity: Identity,
        config: Config,
        socket: std::net::UdpSocket,
        seed: u8,
    ) -> Result<Self, BenchError> {
        Self::spawn_shards(identity, config, vec![socket], seed)
    }

    /// A hub of one shard per socket (sockets sharing a port with `SO_REUSEPORT`; see
    /// [`bind_hub_shards`]); with several, shard `i` gets `config.for_shard(i, n)`.
    pub(crate) fn spawn_shards(
        identity: Identity,
        config: Config,
        sockets: Vec<std::net::UdpSocket>,
        seed: u8,
    ) -> Result<Self, BenchError> {
        let count = u8::try_from(sockets.len())
            .map_err(|_| BenchError::Setup("at most 255 hub shards".into()))?;
        let mut managers = Vec::new();
        let mut bound = Vec::new();
        for (i, socket) in (0..count).zip(sockets) {
            let config = match count {
                1 => config.clone(),
                _ => config.for_shard(i, count),
            };
            let manager = Manager::new(
                Instant::now(),
                SystemTime::now(),
                identity.clone(),
                config,
                [seed.wrapping_add(i.wrapping_mul(16)); 32],
            )
            .map_err(|e| BenchError::Setup(format!("hub manager: {e}")))?;
            let addr = socket
                .local_addr()
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            managers.push(manager);
            bound.push((addr, socket));
        }
        let threads = Sharded::from_sockets(managers, bound)
            .map_err(|e| BenchError::Setup(format!("hub driver: {e}")))?
            .spawn(|_| |_: &mut Context<'_, Manager>, _| {})
            .map_err(|e| BenchError::Setup(format!("hub thread: {e}")))?;
        let shards = threads.handles();
        let mut hub = Self {
            shards,
            threads,
            schedstat: Vec::new(),
            cpu_start: None,
        };
        // Each shard names its thread's schedstat file from that thread.
        hub.schedstat = hub.query_all(|_| {
            std::fs::read_link("/proc/thread-self").ok().and_then(|p| {
                let tid = p.file_name()?.to_str()?.to_owned();
                Some(format!("/proc/self/task/{tid}/schedstat"))
            })
        });
        if hub.schedstat.len() != usize::from(count) {
            return Err(BenchError::Setup("a hub shard did not answer".into()));
        }
        hub.cpu_start = hub.cpu();
        Ok(hub)
    }

    /// Runs `command` on every shard's thread (with its manager and `now`).
    pub(crate) fn execute_all(
        &self,
        command: impl Fn(usize, &mut Manager, Instant) + Clone + Send + 'static,
    ) -> Result<(), BenchError> {
        for (i, handle) in self.shards.iter().enumerate() {
            let command = command.clone();
            handle
                .execute(move |manager, now| command(i, manager, now))
                .map_err(|e| BenchError::Setup(format!("hub shard {i}: {e}")))?;
        }
        Ok(())
    }

    /// CPU time the hub's threads have used so far, all shards together.
    pub(crate) fn cpu(&self) -> Option<Duration> {
        self.schedstat
            .iter()
            .map(|path| schedstat_cpu_time(path.as_deref()?))
            .sum()
    }

    /// Asks every shard's manager on its own thread, shard `i` at `i`; shards that do not
    /// answer within 10 s (stopped, or stuck) are left out.
    pub(crate) fn query_all<T: Send + 'static>(
        &self,
        ask: impl Fn(&Manager) -> T + Clone + Send + 'static,
    ) -> Vec<T> {
        let receivers: Vec<_> = (self.shards.iter())
            .filter_map(|handle| {
                let (tx, rx) = mpsc::channel();
                let ask = ask.clone();
                let asked = handle.execute(move |manager, _| {
                    let _ = tx.send(ask(manager));
                });
                asked.ok().map(|()| rx)
            })
            .collect();
        (receivers.into_iter())
            .filter_map(|rx| rx.recv_timeout(Duration::from_secs(10)).ok())
            .collect()
    }

    /// Asks the (first) shard's manager on its own thread; `None` if it does not answer
    /// within 10 s (stopped, or stuck).
    pub(crate) fn query<T: Send + 'static>(
        &self,
        ask: impl FnOnce(&Manager) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        let asked = self.shards.first()?.execute(move |manager, _| {
            let _ = tx.send(ask(manager));
        });
        asked
            .ok()
            .and_then(|()| rx.recv_timeout(Duration::from_secs(10)).ok())
    }

    /// How many peers the hub holds connections to, all shards together (a peer connected
    /// to two shards counts twice).
    fn connected_peers(&self) -> usize {
        self.query_all(|m| m.connected_peers().len()).iter().sum()
    }

    /// The hub's peer book: every shard's.
    fn peer_book(&self) -> Vec<quicpeer::PeerRecord> {
        self.query_all(Manager::peer_book).concat()
    }

    /// Stops the hub's threads, which drop their drivers without closing anything.
    pub(crate) fn crash(self) -> Result<HubReport, BenchError> {
        let cpu = self
            .cpu()
            .zip(self.cpu_start)
            .map(|(now, start)| now.saturating_sub(start));
        let mut stats = DriverStats::default();
        for stopped in self.threads.stop() {
            let (driver, run) =
                stopped.map_err(|_| BenchError::Setup("a hub thread panicked".into()))?;
            if let Err(e) = run {
                tracing::warn!("hub driver failed: {e}");
            }
            let s = driver.stats();
            stats.wakeups += s.wakeups;
            stats.timeouts += s.timeouts;
            stats.recv_calls += s.recv_calls;
            stats.datagrams_received += s.datagrams_received;
            stats.send_calls += s.send_calls;
            stats.datagrams_sent += s.datagrams_sent;
            stats.send_blocked += s.send_blocked;
            stats.unroutable += s.unroutable;
            stats.unreachable += s.unreachable;
            stats.forwarded_out += s.forwarded_out;
            stats.forward_dropped += s.forward_dropped;
            stats.forwarded_in += s.forwarded_in;
            // A crash: the driver and its socket go without a word to the peers.
            drop(driver);
        }
        Ok(HubReport { cpu, stats })
    }
}

/// Binds `shards` hub sockets on one loopback port (`addr`, or a free one) as
/// [`Sharded::bind`] does (`SO_REUSEPORT` where more than one), then sets the receive buffer
/// asked, if any; returns them with the receive buffer granted to each.
pub(crate) fn bind_hub_shards(
    addr: Option<SocketAddr>,
    shards: usize,
    recv_buffer: Option<usize>,
) -> Result<(Vec<std::net::UdpSocket>, usize), BenchError> {
    if shards <= 1 {
        let (socket, granted) = bind_hub(addr, recv_buffer)?;
        return Ok((vec![socket], granted));
    }
    let mut addr = addr.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let mut sockets = Vec::new();
    let mut granted = 0;
    for _ in 0..shards {
        let socket = quicpeer::driver::bind_reuse_port(addr)
            .map_err(|e| BenchError::Setup(format!("binding a hub shard to {addr}: {e}")))?;
        addr = socket
            .local_addr()
            .map_err(|e| BenchError::Setup(format!("hub socket: {e}")))?;
        let socket = socket2::Socket::from(socket);
        if let Some(bytes) = recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(|e| BenchError::Setup(format!("hub receive buffer: {e}")))?;
        }
        granted = socket.recv_buffer_size().unwrap_or(0);
        sockets.push(socket.into());
    }
    Ok((sockets, granted))
}

/// Binds the hub's socket on loopback (`addr`, or a free port) as the driver binds its own,
/// then sets the receive buffer asked, if any; returns it with the receive buffer granted.
pub(crate) fn bind_hub(
    addr: Option<SocketAddr>,
    recv_buffer: Option<usize>,
) -> Result<(std::net::UdpSocket, usize), BenchError> {
    let addr = addr.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let socket = quicpeer::driver::bind(addr)
        .map_err(|e| BenchError::Setup(format!("binding the hub to {addr}: {e}")))?;
    let socket = socket2::Socket::from(socket);
    if let Some(bytes) = recv_buffer {
        socket
            .set_recv_buffer_size(bytes)
            .map_err(|e| BenchError::Setup(format!("hub receive buffer: {e}")))?;
    }
    let granted = socket.recv_buffer_size().unwrap_or(0);
    Ok((socket.into(), granted))
}

// ---- the fleet of peers ----

/// What the main thread and the fleet thread share.
#[derive(Default)]
pub(crate) struct Shared {
    /// Peers built (manager and socket).
    pub(crate) built: AtomicUsize,
    /// Peers that completed their first connection.
    pub(crate) connected: AtomicUsize,
    /// Peers that completed a connection after the restart began.
    pub(crate) fresh: AtomicUsize,
    /// Set (after `restart`) when the hub is about to be crashed.
    pub(crate) restarting: AtomicBool,
    pub(crate) restart: Mutex<Option<Instant>>,
    pub(crate) stop: AtomicBool,
    /// Why the fleet gave up, if it did.
    pub(crate) error: Mutex<Option<String>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one peer saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    pub(crate) connected: bool,
    /// When the fleet first dialed, and when that first connection completed.
    pub(crate) dialed_at: Option<Instant>,
    pub(crate) connected_at: Option<Instant>,
    pub(crate) lost: Option<(Instant, Cause)>,
    pub(crate) fresh: Option<Instant>,
    pub(crate) failed_dials: usize,
    /// Why dial attempts failed (the cause of each address's failure), after the restart.
    failures: Vec<Cause>,
    /// Dials the fleet made again itself, after the manager stopped trying.
    pub(crate) app_redials: usize,
}

struct Peer {
    manager: Manager,
    socket: UdpSocket,
    /// The deadline in the timer heap for this peer, if any.
    deadline: Option<Instant>,
    record: Record,
}

/// All the peers, on one thread: one poll, one timer heap.
pub(crate) struct Fleet<'a> {
    poll: Poll,
    peers: Vec<Peer>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    shared: &'a Shared,
    restart: Option<Instant>,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Datagrams the peers' sockets refused (`WouldBlock`): lost, as QUIC allows.
    send_drops: usize,
    /// Peers to dial again (after a dial failed for good), in time order.
    redials: VecDeque<(Instant, usize)>,
}

/// How long the fleet waits before dialing again a peer whose dial failed for good.
const APP_REDIAL_DELAY: Duration = Duration::from_millis(500);

/// What the fleet thread returns.
pub(crate) struct FleetReport {
    pub(crate) records: Vec<Record>,
    /// CPU time of the fleet from the restart to its end.
    pub(crate) restart_cpu: Option<Duration>,
}

impl<'a> Fleet<'a> {
    /// `count` peers, whose identities are the ones numbered `first + 1` on.
    pub(crate) fn build(
        count: usize,
        first: usize,
        config: &Config,
        shared: &'a Shared,
    ) -> Result<Self, BenchError> {
        let fail = |what: String| {
            *lock(&shared.error) = Some(what.clone());
            BenchError::Setup(what)
        };
        let poll = Poll::new().map_err(|e| fail(format!("poll: {e}")))?;
        let mut peers = Vec::with_capacity(count);
        for i in 0..count {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&((first + i) as u64 + 1).to_le_bytes());
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&((first + i) as u64 + 1).to_be_bytes());
            let manager = Manager::new(
                Instant::now(),
                SystemTime::now(),
                Identity::from_ed25519_seed(key),
                config.clone(),
                seed,
            )
            .map_err(|e| fail(format!("peer manager: {e}")))?;
            let mut socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|s| s.set_nonblocking(true).map(|()| UdpSocket::from_std(s)))
                .map_err(|e| fail(bind_error(i, &e)))?;
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)
                .map_err(|e| fail(format!("registering peer socket {i}: {e}")))?;
            shared.built.fetch_add(1, Ordering::Relaxed);
            peers.push(Peer {
                manager,
                socket,
                deadline: None,
                record: Record::default(),
            });
        }
        Ok(Self {
            poll,
            peers,
            timers: BinaryHeap::new(),
            shared,
            restart: None,
            buf: vec![0; 65_536],
            out: Vec::new(),
            send_drops: 0,
            redials: VecDeque::new(),
        })
    }

    /// Dials the hub from each peer in turn, one per `interval`, then drives every peer until
    /// told to stop.
    pub(crate) fn run(
        mut self,
        hub: PeerId,
        hub_addr: SocketAddr,
        interval: Duration,
    ) -> Result<FleetReport, BenchError> {
        let mut events = Events::with_capacity(1024);
        let start = Instant::now();
        let mut dialed = 0;
        let mut restart_cpu = None;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self.restart.is_none() && self.shared.restarting.load(Ordering::Acquire) {
                self.restart = *lock(&self.shared.restart);
                restart_cpu = thread_cpu_time();
            }
            while dialed < self.peers.len() && now >= start + interval * dialed as u32 {
                let peer = &mut self.peers[dialed];
                if let Err(e) = peer.manager.dial(now, hub, [hub_addr]) {
                    let what = format!("peer {dialed} cannot dial: {e}");
                    *lock(&self.shared.error) = Some(what.clone());
                    return Err(BenchError::Setup(what));
                }
                peer.record.dialed_at = Some(now);
                self.service(dialed, now);
                dialed += 1;
            }
            while let Some(&(at, i)) = self.redials.front() {
                if at > now {
                    break;
                }
                self.redials.pop_front();
                let peer = &mut self.peers[i];
                let connected = !peer.manager.connected_peers().is_empty();
                if !connected && peer.manager.dial(now, hub, [hub_addr]).is_ok() {
                    peer.record.app_redials += 1;
                }
                self.service(i, now);
            }
            while let Some(&Reverse((at, i))) = self.timers.peek() {
                if at > now {
                    break;
                }
                self.timers.pop();
                if self.peers[i].deadline != Some(at) {
                    continue; // superseded by a later poll_timeout
                }
                self.peers[i].deadline = None;
                self.peers[i].manager.handle_timeout(now);
                self.service(i, now);
            }

            // Sleep until the next timer or dial, and at most 5 ms (to see `stop`).
            let mut wake = now + Duration::from_millis(5);
            if let Some(&Reverse((at, _))) = self.timers.peek() {
                wake = wake.min(at);
            }
            if dialed < self.peers.len() {
                wake = wake.min(start + interval * dialed as u32);
            }
            if let Some(&(at, _)) = self.redials.front() {
                wake = wake.min(at);
            }
            match self
                .poll
                .poll(&mut events, Some(wake.saturating_duration_since(now)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BenchError::Setup(format!("poll: {e}"))),
            }
            for event in events.iter() {
                self.receive(event.token().0);
            }
        }
        let restart_cpu =
            restart_cpu.and_then(|before| Some(thread_cpu_time()?.saturating_sub(before)));
        if self.send_drops > 0 {
            tracing::debug!(drops = self.send_drops, "peer sockets refused datagrams");
        }
        Ok(FleetReport {
            records: self.peers.into_iter().map(|p| p.record).collect(),
            restart_cpu,
        })
    }

    /// Reads everything peer `i`'s socket holds (mio is edge-triggered) into its manager.
    fn receive(&mut self, i: usize) {
        let Some(peer) = self.peers.get_mut(i) else {
            return;
        };
        loop {
            match peer.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    peer.manager
                        .handle_datagram(Instant::now(), from, None, &self.buf[..len]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error reported on the socket; the datagram is simply gone.
                Err(_) => {}
            }
        }
        self.service(i, Instant::now());
    }

    /// Sends what peer `i`'s manager has to send, records its events, re-arms its timer.
    fn service(&mut self, i: usize, now: Instant) {
        let restart = self.restart;
        let Some(peer) = self.peers.get_mut(i) else {
            return;
        };
        let out = &mut self.out;
        while let Some(t) = peer.manager.poll_transmit(now, out) {
            // One datagram per transmit: the fleet never offers segmentation offload.
            let payload = out.get(..t.size).unwrap_or(out);
            if peer.socket.send_to(payload, t.destination).is_err() {
                self.send_drops += 1;
            }
        }
        while let Some(event) = peer.manager.poll_event() {
            let after_restart = restart.is_some_and(|r| now >= r);
            match event {
                Event::Connected { .. } if !after_restart && !peer.record.connected => {
                    peer.record.connected = true;
                    peer.record.connected_at = Some(now);
                    self.shared.connected.fetch_add(1, Ordering::Relaxed);
                }
                Event::Connected { .. } if after_restart && peer.record.fresh.is_none() => {
                    peer.record.fresh = Some(now);
                    self.shared.fresh.fetch_add(1, Ordering::Relaxed);
                }
                Event::ConnectionLost { cause, .. }
                    if after_restart && peer.record.lost.is_none() =>
                {
                    peer.record.lost = Some((now, cause));
                }
                Event::DialFailed {
                    errors, retry_at, ..
                } => {
                    if after_restart {
                        peer.record.failed_dials += 1;
                        peer.record
                            .failures
                            .extend(errors.into_iter().map(|(_, c)| c));
                    }
                    // The manager retries reconnects itself; a first dial (or a reconnect it
                    // gave up on) is the application's to retry, as a real one would.
                    if retry_at.is_none() {
                        self.redials.push_back((now + APP_REDIAL_DELAY, i));
                    }
                }
                _ => {}
            }
        }
        let next = peer.manager.poll_timeout();
        if next != peer.deadline {
            peer.deadline = next;
            if let Some(at) = next {
                self.timers.push(Reverse((at, i)));
            }
        }
    }
}

fn bind_error(i: usize, e: &io::Error) -> String {
    if e.raw_os_error() == Some(24) {
        format!(
            "binding peer socket {i}: {e}: every peer needs a socket, and the open-file limit \
             (`ulimit -n`) is reached; ask for fewer peers or raise the limit"
        )
    } else {
        format!("binding peer socket {i}: {e}")
    }
}

// ---- helpers ----

/// Counts causes by [`cause_name`].
pub(crate) fn count_causes<'a>(causes: impl Iterator<Item = &'a Cause>) -> BTreeMap<String, usize> {
    causes.fold(BTreeMap::new(), |mut counts, cause| {
        *counts.entry(cause_name(cause)).or_insert(0) += 1;
        counts
    })
}

/// A short name of a dial failure's cause, for counting.
fn cause_name(cause: &Cause) -> String {
    match cause {
        Cause::HandshakeFailed(failure) => format!("HandshakeFailed({failure:?})"),
        other => {
            let name = format!("{other:?}");
            name.split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    }
}

/// Waits (polling every 10 ms) until `counter` reaches `target`, the fleet thread ends, or
/// `bound` passes; true if the target was reached.
pub(crate) fn wait_for<T>(
    counter: &AtomicUsize,
    target: usize,
    bound: Duration,
    fleet: &JoinHandle<T>,
) -> bool {
    let deadline = Instant::now() + bound;
    let mut report_at = Instant::now();
    loop {
        let reached = counter.load(Ordering::Relaxed);
        if reached >= target {
            return true;
        }
        if Instant::now() >= report_at {
            tracing::info!(reached, target, "waiting");
            report_at += Duration::from_secs(1);
        }
        if fleet.is_finished() || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn fleet_failed(shared: &Shared, otherwise: String) -> BenchError {
    match lock(&shared.error).take() {
        Some(error) => BenchError::Setup(error),
        None => BenchError::Setup(otherwise),
    }
}

/// A counter of the `Udp:` lines of `/proc/net/snmp` (Linux).
pub(crate) fn udp_counter(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// The 1-minute load average (Linux).
pub(crate) fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_owned)
}
