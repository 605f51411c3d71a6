//! Completed handshakes per second over loopback, with both peers pinned to one core.
//!
//! A dialer connects to a listener, and as soon as the connection is established it closes it
//! and dials again, `count` times in a row (after a warm-up of `count / 10`). Dialer and
//! listener each run on a thread of their own, both pinned to the same CPU, so the figure is
//! what one core does with both ends of every handshake. Stacks:
//!
//! - **quicpeer**: a `Manager` on the mio driver on each side (mutual libp2p TLS: P-256
//!   certificate keys, Ed25519 host keys, PeerIds verified on both sides).
//! - **quicpeer-tokio**: quicpeer's async API (an `Endpoint` of `quicpeer-tokio`) on a tokio
//!   current-thread runtime on each side: the same manager and TLS; the dialer awaits
//!   `Endpoint::connect` and closes, the listener accepts each connection.
//! - **rust-libp2p**: a `Swarm` with the QUIC transport and no protocols, on a tokio
//!   current-thread runtime on each side (the same libp2p TLS; its rustls uses aws-lc-rs).
//! - **quinn**: quinn 0.11 on tokio current-thread runtimes, given quicpeer's own rustls
//!   configurations (the same certificates and verifiers, ring), to separate the cost of
//!   quicpeer's manager and driver from the cost of the handshake itself.
//!
//! The time of a round is the dialer's, from the first measured dial to the last connection
//! established; CPU time is both threads' over the measured handshakes, read from
//! `/proc/thread-self/schedstat`. Stacks alternate over the rounds; medians are reported.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{dummy, SwarmEvent};
use libp2p::{Multiaddr, SwarmBuilder};
use quicpeer::driver::Driver;
use quicpeer::internals::{TlsContext, WallClock};
use quicpeer::{Config, Event, Identity, Manager};

use super::{median, pin_to_cpu, thread_cpu_time, Cell, CompareError, Report};

/// Bound on one round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);
/// Listener and dialer seed bytes.
const LISTENER_SEED: u8 = 2;
const DIALER_SEED: u8 = 3;

/// An implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// quicpeer's `Manager` on the mio driver.
    Quicpeer,
    /// quicpeer's async API (`quicpeer-tokio`), tokio current-thread.
    QuicpeerTokio,
    /// rust-libp2p's QUIC transport (libp2p-quic on quinn), tokio current-thread.
    Libp2p,
    /// quinn on tokio current-thread, with quicpeer's TLS configurations.
    Quinn,
    /// quicpeer's in-process workload (`quicpeer bench handshake`): two `Manager`s on one
    /// thread joined by an instant in-memory link, no sockets.
    SimQuicpeer,
    /// The same workload with two bare `quinn_proto` endpoints (server-only TLS).
    SimQuinnProto,
}

impl Stack {
    /// Every stack, in the order of the report.
    pub const ALL: [Stack; 6] = [
        Stack::Quicpeer,
        Stack::QuicpeerTokio,
        Stack::Libp2p,
        Stack::Quinn,
        Stack::SimQuicpeer,
        Stack::SimQuinnProto,
    ];

    /// A short name.
    pub fn label(self) -> &'static str {
        match self {
            Stack::Quicpeer => "quicpeer (mio driver)",
            Stack::QuicpeerTokio => "quicpeer-tokio",
            Stack::Libp2p => "rust-libp2p (tokio)",
            Stack::Quinn => "quinn + quicpeer TLS (tokio)",
            Stack::SimQuicpeer => "in-process: quicpeer Manager",
            Stack::SimQuinnProto => "in-process: bare quinn-proto",
        }
    }
}

/// What a round measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    /// Handshakes measured.
    pub count: u32,
    /// The dialer's wall-clock time for them.
    pub wall: Duration,
    /// Dialer and listener CPU time for them, where the platform tells.
    pub cpu: Option<Duration>,
    /// Whether both threads were pinned to the CPU asked for.
    pub pinned: bool,
}

impl Round {
    /// Handshakes per second of wall-clock time.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.wall.as_secs_f64().max(1e-9)
    }

    /// Handshakes per second of CPU time (both ends): what one core does when busy.
    pub fn per_cpu_second(&self) -> Option<f64> {
        self.cpu
            .map(|cpu| f64::from(self.count) / cpu.as_secs_f64().max(1e-9))
    }
}

/// Runs `count` measured handshakes of one loopback stack with both threads pinned to `cpu`
/// (the in-process stacks run on this thread, pinned too, through [`InProcess`]).
pub fn measure(stack: Stack, count: u32, cpu: usize) -> Result<Round, CompareError> {
    let warmup = (count / 10).max(1);
    match stack {
        Stack::Quicpeer => quicpeer_round(warmup, count, cpu),
        Stack::QuicpeerTokio => tokio_round(warmup, count, cpu),
        Stack::Libp2p => libp2p_round(warmup, count, cpu),
        Stack::Quinn => quinn_round(warmup, count, cpu),
        Stack::SimQuicpeer | Stack::SimQuinnProto => {
            let mut bench = InProcess::new(stack, cpu)?;
            bench.measure(count)
        }
    }
}

/// quicpeer's own in-process handshake workload, on a thread pinned to the same CPU, so its
/// figure sits in the same table, measured in the same run.
pub struct InProcess {
    thread: Option<Worker>,
}

/// The in-process bench's thread: counts go in, rounds come out.
type Worker = (
    mpsc::Sender<u32>,
    mpsc::Receiver<Result<Round, String>>,
    std::thread::JoinHandle<()>,
);

impl InProcess {
    /// Builds the endpoints (and warms them up) on a thread of their own pinned to `cpu`.
    pub fn new(stack: Stack, cpu: usize) -> Result<Self, CompareError> {
        use crate::handshake::{Handshakes, Stack as SimStack};
        let sim = match stack {
            Stack::SimQuicpeer => SimStack::Quicpeer,
            Stack::SimQuinnProto => SimStack::Quinn,
            other => {
                return Err(CompareError::Setup(format!(
                    "{} is not an in-process stack",
                    other.label()
                )))
            }
        };
        let (count_tx, count_rx) = mpsc::channel::<u32>();
        let (round_tx, round_rx) = mpsc::channel();
        let thread = pinned_thread("hs-in-process", cpu, move |pinned| {
            let mut bench = match Handshakes::new(sim) {
                Ok(bench) => bench,
                Err(e) => {
                    let _ = round_tx.send(Err(e.to_string()));
                    return;
                }
            };
            // Warm-up, as the loopback stacks get.
            let _ = bench.run(10);
            while let Ok(count) = count_rx.recv() {
                let (c0, t0) = (thread_cpu_time(), Instant::now());
                let result = bench.run(count);
                let (wall, cpu) = (t0.elapsed(), cpu_since(c0));
                let round = result.map_err(|e| e.to_string()).map(|()| Round {
                    count,
                    wall,
                    cpu,
                    pinned,
                });
                if round_tx.send(round).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self {
            thread: Some((count_tx, round_rx, thread)),
        })
    }

    /// Completes `count` handshakes and times them.
    pub fn measure(&mut self, count: u32) -> Result<Round, CompareError> {
        let (tx, rx, _) = self
            .thread
            .as_ref()
            .ok_or_else(|| CompareError::Setup("in-process bench gone".into()))?;
        tx.send(count)
            .map_err(|_| CompareError::Setup("in-process bench thread died".into()))?;
        rx.recv()
            .map_err(|_| CompareError::Setup("in-process bench thread died".into()))?
            .map_err(CompareError::Stuck)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some((tx, _, thread)) = self.thread.take() {
            drop(tx);
            let _ = thread.join();
        }
    }
}

/// Runs `rounds` alternating rounds of every stack and reports the medians.
pub fn run(
    count: u32,
    rounds: usize,
    cpu: usize,
    progress: &mut dyn FnMut(String),
) -> Result<Report, CompareError> {
    let load_before = super::load_note("before");
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); Stack::ALL.len()];
    let mut sim_quicpeer = InProcess::new(Stack::SimQuicpeer, cpu)?;
    let mut sim_quinn = InProcess::new(Stack::SimQuinnProto, cpu)?;
    for round in 0..rounds.max(1) {
        for (stack, results) in Stack::ALL.iter().zip(&mut results) {
            let measured = match stack {
                Stack::SimQuicpeer => sim_quicpeer.measure(count)?,
                Stack::SimQuinnProto => sim_quinn.measure(count)?,
                other => measure(*other, count, cpu)?,
            };
            progress(format!(
                "handshake round {}/{} {}: {:.0}/s wall, {}/s CPU",
                round + 1,
                rounds,
                stack.label(),
                measured.per_second(),
                measured
                    .per_cpu_second()
                    .map_or("?".into(), |r| format!("{r:.0}"))
            ));
            results.push(measured);
        }
    }
    let summary: Vec<(f64, Option<f64>, bool)> = results
        .iter()
        .map(|rounds| {
            let wall: Vec<f64> = rounds.iter().map(Round::per_second).collect();
            let cpu: Vec<f64> = rounds.iter().filter_map(Round::per_cpu_second).collect();
            let pinned = rounds.iter().all(|r| r.pinned);
            (median(&wall).unwrap_or(0.0), median(&cpu), pinned)
        })
        .collect();
    let rate = |(wall, cpu, _): &(f64, Option<f64>, bool)| cpu.unwrap_or(*wall);
    let base = rate(&summary[0]);
    let mut report = super::report(
        "handshake",
        &[
            "stack (loopback, one core)",
            "handshakes/s (wall)",
            "handshakes/s (CPU)",
            "µs/handshake (CPU, both ends)",
            "vs quicpeer (CPU)",
        ],
    );
    for (stack, measured) in Stack::ALL.iter().zip(&summary) {
        report.rows.push(vec![
            Cell::text(stack.label()),
            Cell::num(measured.0, 0),
            measured.1.map_or(Cell::Missing, |c| Cell::num(c, 0)),
            Cell::num(1e6 / rate(measured), 1),
            Cell::num(rate(measured) / base, 2),
        ]);
    }
    let pinned = summary.iter().all(|s| s.2);
    report.notes.push(format!(
        "median of {} alternating rounds of {count} handshakes per stack (after {} warm-up \
         handshakes); a handshake: dial, connection established on the dialer, close, dial \
         again; dialer and listener on two threads {}",
        rounds.max(1),
        (count / 10).max(1),
        if pinned {
            format!("pinned to CPU {cpu}")
        } else {
            "(pinning failed: not one core)".into()
        }
    ));
    report.notes.push(
        "wall: the dialer's time; CPU: dialer + listener thread CPU time (the fair figure on a \
         shared machine: what one busy core completes); in-process rows: quicpeer's own \
         `quicpeer bench handshake` workload (both ends on one thread, an instant in-memory \
         link, no sockets; its baseline authenticates the server only), run in the same rounds"
            .into(),
    );
    report.notes.push(load_before);
    report.notes.push(super::load_note("after"));
    Ok(report)
}

/// Spawns a pinned thread.
fn pinned_thread<T: Send + 'static>(
    name: &str,
    cpu: usize,
    body: impl FnOnce(bool) -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, CompareError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || body(pin_to_cpu(cpu)))
        .map_err(|e| CompareError::Setup(format!("thread: {e}")))
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(thread_cpu_time()?.saturating_sub(start?))
}

// ---- quicpeer ----

fn quicpeer_config() -> Config {
    let mut config = Config::default();
    // Dialing the same peer again and again is the workload, not flapping.
    config.limits.flap_grace = Duration::ZERO;
    config
}

fn quicpeer_round(warmup: u32, count: u32, cpu: usize) -> Result<Round, CompareError> {
    let listener_id = Identity::from_ed25519_seed([LISTENER_SEED; 32]);
    let peer = listener_id.peer_id();
    let (addr_tx, addr_rx) = mpsc::channel();
    let listener = pinned_thread("hs-quicpeer-listener", cpu, move |pinned| {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let built = Manager::new(now, wall, listener_id, quicpeer_config(), rand::random())
            .map_err(|e| e.to_string())
            .and_then(|m| Driver::bind(m, &[loopback()]).map_err(|e| e.to_string()));
        let mut driver = match built {
            Ok(driver) => driver,
            Err(e) => {
                let _ = addr_tx.send(Err(e));
                return (None, 0, pinned);
            }
        };
        let addr = driver.local_addrs().first().copied().unwrap_or(loopback());
        let _ = addr_tx.send(Ok((addr, driver.handle())));
        let mut seen = 0u32;
        let mut start = None;
        let _ = driver.run(|_, event| {
            if let Event::Connected { .. } = event {
                seen += 1;
                if seen == warmup {
                    start = thread_cpu_time();
                }
            }
        });
        (cpu_since(start), seen.saturating_sub(warmup), pinned)
    })?;
    let (addr, stop) = addr_rx
        .recv()
        .map_err(|_| CompareError::Setup("listener thread died".into()))?
        .map_err(CompareError::Setup)?;

    let dialer = pinned_thread("hs-quicpeer-dialer", cpu, move |pinned| {
        let identity = Identity::from_ed25519_seed([DIALER_SEED; 32]);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let manager = Manager::new(now, wall, identity, quicpeer_config(), rand::random())
            .map_err(|e| e.to_string())?;
        let mut driver = Driver::bind(manager, &[loopback()]).map_err(|e| e.to_string())?;
        let now = driver.now();
        driver
            .machine_mut()
            .dial(now, peer, [addr])
            .map_err(|e| e.to_string())?;
        let total = warmup + count;
        let mut done = 0u32;
        let mut start: Option<(Instant, Option<Duration>)> = None;
        let mut end = None;
        let mut failure = None;
        let deadline = Instant::now() + ROUND_TIMEOUT;
        driver
            .run_until(Some(deadline), |cx, event| match event {
                Event::Connected { conn, .. } => {
                    done += 1;
                    if done == warmup {
                        start = Some((Instant::now(), thread_cpu_time()));
                    }
                    let now = cx.now();
                    cx.close(now, conn);
                    if done == total {
                        end = Some((Instant::now(), thread_cpu_time()));
                        cx.stop();
                    } else if let Err(e) = cx.dial(now, peer, [addr]) {
                        failure = Some(e.to_string());
                        cx.stop();
                    }
                }
                Event::DialFailed { errors, .. } => {
                    failure = Some(format!("dial failed: {errors:?}"));
                    cx.stop();
                }
                _ => {}
            })
            .map_err(|e| e.to_string())?;
        // Let the last close go out.
        let _ = driver.shutdown(Duration::from_millis(200), |_, _| {});
        if let Some(failure) = failure {
            return Err(failure);
        }
        match (start, end) {
            (Some((t0, c0)), Some((t1, c1))) => {
                let cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
                Ok((t1 - t0, cpu, pinned))
            }
            _ => Err(format!(
                "only {done} of {total} handshakes within {ROUND_TIMEOUT:?}"
            )),
        }
    })?;
    let dialed = dialer
        .join()
        .map_err(|_| CompareError::Setup("dialer thread panicked".into()))?;
    // The listener drains the closed connections, then stops.
    std::thread::sleep(Duration::from_millis(100));
    let _ = stop.stop();
    let (listener_cpu, seen, listener_pinned) = listener
        .join()
        .map_err(|_| CompareError::Setup("listener thread panicked".into()))?;
    let (wall, dialer_cpu, dialer_pinned) = dialed.map_err(CompareError::Stuck)?;
    if seen < count {
        return Err(CompareError::Stuck(format!(
            "the quicpeer listener completed {seen} of {count} handshakes"
        )));
    }
    Ok(Round {
        count,
        wall,
        cpu: dialer_cpu.zip(listener_cpu).map(|(a, b)| a + b),
        pinned: dialer_pinned && listener_pinned,
    })
}

// ---- quicpeer-tokio ----

fn tokio_round(warmup: u32, count: u32, cpu: usize) -> Result<Round, CompareError> {
    let listener_id = Identity::from_ed25519_seed([LISTENER_SEED; 32]);
    let peer = listener_id.peer_id();
    let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = pinned_thread("hs-tokio-listener", cpu, move |pinned| {
        let result = (|| {
            let runtime = current_thread()?;
            runtime.block_on(async move {
                let endpoint = match quicpeer_tokio::Endpoint::bind(
                    listener_id,
                    quicpeer_config(),
                    loopback(),
                ) {
                    Ok(endpoint) => endpoint,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                        return Err(e.to_string());
                    }
                };
                // Counted from the events: a connection the dialer closed before this task
                // accepted it leaves the accept queue, but was established.
                let mut events = endpoint.events();
                let _ = addr_tx.send(Ok(endpoint.local_addr()));
                let mut seen = 0u32;
                let mut start = None;
                let mut stop_rx = stop_rx;
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = endpoint.accept() => if accepted.is_none() {
                            break;
                        },
                        event = events.recv() => match event {
                            Ok(quicpeer_tokio::PeerEvent::Connected { .. }) => {
                                seen += 1;
                                if seen == warmup {
                                    start = thread_cpu_time();
                                }
                            }
                            Ok(_) => {}
                            Err(e) => return Err(format!("events: {e}")),
                        },
                    }
                }
                Ok::<_, String>((cpu_since(start), seen.saturating_sub(warmup)))
            })
        })();
        (result, pinned)
    })?;
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| CompareError::Setup("quicpeer-tokio listener did not start".into()))?
        .map_err(CompareError::Setup)?;

    let dialer = pinned_thread("hs-tokio-dialer", cpu, move |pinned| {
        let runtime = current_thread()?;
        runtime.block_on(async move {
            let endpoint = quicpeer_tokio::Endpoint::bind(
                Identity::from_ed25519_seed([DIALER_SEED; 32]),
                quicpeer_config(),
                loopback(),
            )
            .map_err(|e| e.to_string())?;
            let total = warmup + count;
            let mut start: Option<(Instant, Option<Duration>)> = None;
            let mut previous = None;
            let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
            for done in 1..=total {
                let connection = tokio::time::timeout_at(deadline, endpoint.connect(peer, [addr]))
                    .await
                    .map_err(|_| format!("only {done} of {total} handshakes in {ROUND_TIMEOUT:?}"))?
                    .map_err(|e| format!("handshake failed: {e}"))?;
                // Every round trip is a fresh handshake, never the connection closed before.
                if previous == Some(connection.id()) {
                    return Err(format!("connect returned the closed {}", connection.id()));
                }
                previous = Some(connection.id());
                if done == warmup {
                    start = Some((Instant::now(), thread_cpu_time()));
                }
                connection.close();
            }
            let (t1, c1) = (Instant::now(), thread_cpu_time());
            // Let the last close go out.
            endpoint.close_within(Duration::from_millis(200)).await;
            let (t0, c0) = start.ok_or("no warm-up")?;
            let cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
            Ok::<_, String>((t1 - t0, cpu, pinned))
        })
    })?;
    finish_tokio_round("quicpeer-tokio", count, dialer, listener, stop_tx)
}

// ---- rust-libp2p ----

type Libp2pSwarm = libp2p::Swarm<dummy::Behaviour>;

fn libp2p_swarm(seed: u8) -> Result<Libp2pSwarm, String> {
    Ok(
        SwarmBuilder::with_existing_identity(quicpeer_interop::libp2p_peer::keypair(seed))
            .with_tokio()
            .with_quic()
            .with_behaviour(|_| dummy::Behaviour)
            .map_err(|e| e.to_string())?
            // The dialer closes each connection itself, as quicpeer's does.
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build(),
    )
}

/// What a tokio-stack round's dialer thread returns: wall time, CPU time, whether it was pinned.
type DialerResult = Result<(Duration, Option<Duration>, bool), String>;
/// What its listener thread returns: (CPU time, handshakes seen), and whether it was pinned.
type ListenerResult = (Result<(Option<Duration>, u32), String>, bool);

/// Ends a round of a tokio stack: waits for the dialer, stops the listener once the last close
/// had time to go out, and checks the listener saw every handshake.
fn finish_tokio_round(
    label: &str,
    count: u32,
    dialer: std::thread::JoinHandle<DialerResult>,
    listener: std::thread::JoinHandle<ListenerResult>,
    stop_tx: tokio::sync::oneshot::Sender<()>,
) -> Result<Round, CompareError> {
    let dialed = dialer
        .join()
        .map_err(|_| CompareError::Setup("dialer thread panicked".into()))?;
    std::thread::sleep(Duration::from_millis(100));
    let _ = stop_tx.send(());
    let (listened, listener_pinned) = listener
        .join()
        .map_err(|_| CompareError::Setup("listener thread panicked".into()))?;
    let (wall, dialer_cpu, dialer_pinned) = dialed.map_err(CompareError::Stuck)?;
    let (listener_cpu, seen) = listened.map_err(CompareError::Setup)?;
    if seen < count {
        return Err(CompareError::Stuck(format!(
            "the {label} listener completed {seen} of {count} handshakes"
        )));
    }
    Ok(Round {
        count,
        wall,
        cpu: dialer_cpu.zip(listener_cpu).map(|(a, b)| a + b),
        pinned: dialer_pinned && listener_pinned,
    })
}

fn current_thread() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn libp2p_round(warmup: u32, count: u32, cpu: usize) -> Result<Round, CompareError> {
    let (addr_tx, addr_rx) = mpsc::channel::<Result<Multiaddr, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = pinned_thread("hs-libp2p-listener", cpu, move |pinned| {
        let result = (|| {
            let runtime = current_thread()?;
            runtime.block_on(async move {
                let mut swarm = libp2p_swarm(LISTENER_SEED)?;
                let listen: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                swarm.listen_on(listen).map_err(|e| e.to_string())?;
                let mut addr_tx = Some(addr_tx);
                let mut seen = 0u32;
                let mut start = None;
                let mut stop_rx = stop_rx;
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        event = swarm.select_next_some() => match event {
                            SwarmEvent::NewListenAddr { address, .. } => {
                                if let Some(tx) = addr_tx.take() {
                                    let _ = tx.send(Ok(address));
                                }
                            }
                            SwarmEvent::ConnectionEstablished { .. } => {
                                seen += 1;
                                if seen == warmup {
                                    start = thread_cpu_time();
                                }
                            }
                            _ => {}
                        },
                    }
                }
                Ok::<_, String>((cpu_since(start), seen.saturating_sub(warmup)))
            })
        })();
        (result, pinned)
    })?;
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| CompareError::Setup("rust-libp2p listener did not start".into()))?
        .map_err(CompareError::Setup)?;
    let peer = quicpeer_interop::libp2p_peer::keypair(LISTENER_SEED)
        .public()
        .to_peer_id();

    let dialer = pinned_thread("hs-libp2p-dialer", cpu, move |pinned| {
        let runtime = current_thread()?;
        runtime.block_on(async move {
            let mut swarm = libp2p_swarm(DIALER_SEED)?;
            let dial = |swarm: &mut Libp2pSwarm| {
                swarm.dial(
                    DialOpts::peer_id(peer)
                        .addresses(vec![addr.clone()])
                        .condition(PeerCondition::Always)
                        .build(),
                )
            };
            dial(&mut swarm).map_err(|e| e.to_string())?;
            let total = warmup + count;
            let mut done = 0u32;
            let mut start: Option<(Instant, Option<Duration>)> = None;
            let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
            loop {
                let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                    .await
                    .map_err(|_| {
                        format!("only {done} of {total} handshakes in {ROUND_TIMEOUT:?}")
                    })?;
                match event {
                    SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                        done += 1;
                        if done == warmup {
                            start = Some((Instant::now(), thread_cpu_time()));
                        }
                        swarm.close_connection(connection_id);
                        if done == total {
                            let (t1, c1) = (Instant::now(), thread_cpu_time());
                            // Let the last close go out.
                            let linger = tokio::time::Instant::now() + Duration::from_millis(200);
                            while tokio::time::timeout_at(linger, swarm.select_next_some())
                                .await
                                .is_ok()
                            {}
                            let (t0, c0) = start.ok_or("no warm-up")?;
                            let cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
                            return Ok::<_, String>((t1 - t0, cpu, pinned));
                        }
                        dial(&mut swarm).map_err(|e| e.to_string())?;
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(format!("dial failed: {error}"));
                    }
                    _ => {}
                }
            }
        })
    })?;
    finish_tokio_round("rust-libp2p", count, dialer, listener, stop_tx)
}

// ---- quinn ----

/// quinn endpoint configurations made of quicpeer's TLS configurations (libp2p certificates,
/// mutual authentication, ring) and the transport settings quicpeer uses by default.
pub(crate) struct QuinnConfigs {
    /// For the listener.
    pub server: quinn::ServerConfig,
    /// For the dialer (pins the listener's PeerId).
    pub client: quinn::ClientConfig,
    /// For both endpoints: quicpeer's largest UDP payload.
    pub endpoint: quinn::EndpointConfig,
}

pub(crate) fn quinn_configs(listener_seed: u8, dialer_seed: u8) -> Result<QuinnConfigs, String> {
    let clock = WallClock::new(SystemTime::now());
    let listener = Identity::from_ed25519_seed([listener_seed; 32]);
    let dialer = Identity::from_ed25519_seed([dialer_seed; 32]);
    let server_tls = TlsContext::new(&listener, clock.clone()).map_err(|e| e.to_string())?;
    let client_tls = TlsContext::new(&dialer, clock).map_err(|e| e.to_string())?;
    let defaults = Config::default();
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(defaults.idle_timeout).map_err(|e| e.to_string())?,
        ))
        .keep_alive_interval(defaults.keep_alive);
    let transport = Arc::new(transport);
    let (server, _) = server_tls.server_config();
    let server =
        quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(|e| e.to_string())?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport.clone());
    let (client, _) = client_tls.client_config(Some(listener.peer_id()));
    let client =
        quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| e.to_string())?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport);
    let mut endpoint = quinn::EndpointConfig::default();
    endpoint
        .max_udp_payload_size(defaults.max_udp_payload)
        .map_err(|e| e.to_string())?;
    Ok(QuinnConfigs {
        server,
        client,
        endpoint,
    })
}

/// A quinn endpoint on a loopback socket of its own (which must be made inside a runtime).
pub(crate) fn quinn_endpoint(
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, String> {
    let socket = std::net::UdpSocket::bind(loopback()).map_err(|e| e.to_string())?;
    let runtime = quinn::default_runtime().ok_or("no async runtime for quinn")?;
    quinn::Endpoint::new(config, server, socket, runtime).map_err(|e| e.to_string())
}

fn quinn_round(warmup: u32, count: u32, cpu: usize) -> Result<Round, CompareError> {
    let configs = quinn_configs(LISTENER_SEED, DIALER_SEED).map_err(CompareError::Setup)?;
    let QuinnConfigs {
        server,
        client,
        endpoint,
    } = configs;
    let client_endpoint_config = endpoint.clone();
    let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = pinned_thread("hs-quinn-listener", cpu, move |pinned| {
        let result = (|| {
            let runtime = current_thread()?;
            runtime.block_on(async move {
                let endpoint = match quinn_endpoint(endpoint, Some(server)) {
                    Ok(endpoint) => endpoint,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                let _ = addr_tx.send(endpoint.local_addr().map_err(|e| e.to_string()));
                let mut seen = 0u32;
                let mut start = None;
                let mut stop_rx = stop_rx;
                let mut handshakes = futures::stream::FuturesUnordered::new();
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        Some(incoming) = endpoint.accept() => {
                            if let Ok(connecting) = incoming.accept() {
                                handshakes.push(connecting);
                            }
                        }
                        Some(result) = handshakes.next(), if !handshakes.is_empty() => {
                            if result.is_ok() {
                                seen += 1;
                                if seen == warmup {
                                    start = thread_cpu_time();
                                }
                            }
                        }
                    }
                }
                Ok::<_, String>((cpu_since(start), seen.saturating_sub(warmup)))
            })
        })();
        (result, pinned)
    })?;
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| CompareError::Setup("quinn listener did not start".into()))?
        .map_err(CompareError::Setup)?;

    let dialer = pinned_thread("hs-quinn-dialer", cpu, move |pinned| {
        let runtime = current_thread()?;
        runtime.block_on(async move {
            let endpoint = quinn_endpoint(client_endpoint_config, None)?;
            let total = warmup + count;
            let mut start: Option<(Instant, Option<Duration>)> = None;
            let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
            for done in 1..=total {
                let connecting = endpoint
                    .connect_with(client.clone(), addr, "l")
                    .map_err(|e| e.to_string())?;
                let connection = tokio::time::timeout_at(deadline, connecting)
                    .await
                    .map_err(|_| format!("only {done} of {total} handshakes in {ROUND_TIMEOUT:?}"))?
                    .map_err(|e| format!("handshake failed: {e}"))?;
                if done == warmup {
                    start = Some((Instant::now(), thread_cpu_time()));
                }
                connection.close(0u32.into(), b"");
            }
            let (t1, c1) = (Instant::now(), thread_cpu_time());
            // Let the last close go out.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (t0, c0) = start.ok_or("no warm-up")?;
            let cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
            Ok::<_, String>((t1 - t0, cpu, pinned))
        })
    })?;
    finish_tokio_round("quinn", count, dialer, listener, stop_tx)
}
