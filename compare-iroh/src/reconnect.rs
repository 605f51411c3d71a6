//! Reconnect latency of iroh on loopback: an iroh listener crashes and comes back under an
//! iroh dialer that pings it, beside quicpeer-bench's pairs measured in the same run.
//!
//! The dialer pings every `ping_interval` (and at once on a new connection): a bidirectional
//! stream carrying 32 bytes that the listener echoes. It behaves as an iroh user would: it
//! connects again as soon as its connection ends, with no ping timeout of its own (a ping
//! waits as long as the connection lives). At a random phase of that rhythm the listener is
//! crashed: its tokio runtime, on a thread of its own, is shut down without waiting
//! (`shutdown_background`), which drops its tasks, connections and socket without sending a
//! close, as a killed process would; it is then rebuilt with the same secret key on the same
//! port. Each sample is measured from the crash: when the listener was back, when the dialer's
//! connection ended (detection, with iroh's reason: a close from the peer would mean the crash
//! was not silent, and stops the run), and when the first ping on a fresh connection was
//! answered.
//!
//! iroh's stateless-reset and connection-ID keys are random per endpoint, so the rebuilt
//! listener cannot reset the stale connection: the dialer learns of the crash only from its
//! idle timeout.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use iroh::endpoint::{Connection, ConnectionError};
use iroh::{Endpoint, EndpointAddr};
use quicpeer_bench::compare::reconnect::{self as rc, Pair, Sample};
use quicpeer_bench::compare::{CompareError, Report};

use crate::{bind, current_thread, direct_addr, Setup, ALPN, DIALER_SEED, LISTENER_SEED};

/// Bytes of a ping (and of its echo).
const PING_BYTES: usize = 32;
/// Bound on starting a listener or a dialer, and on the first ping.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Restarts of the iroh listener.
    pub iroh_restarts: usize,
    /// How long an iroh restart may take to recover.
    pub iroh_timeout: Duration,
    /// quicpeer-bench's pairs, run first in the same process, with their own restarts and
    /// timeout; `ping_interval` and `spacing` are shared.
    pub others: rc::Settings,
}

/// Runs quicpeer-bench's pairs, then the iroh pair, and reports them in one table.
pub fn run(settings: &Settings, progress: &mut dyn FnMut(String)) -> Result<Report, CompareError> {
    let load_before = quicpeer_bench::compare::load_note("before");
    let mut results: Vec<(String, Vec<Sample>)> = Vec::new();
    for &pair in &settings.others.pairs {
        let samples = rc::measure(pair, &settings.others, progress)?;
        results.push((pair.label(), samples));
    }
    if settings.iroh_restarts > 0 {
        let samples = measure(settings, progress)?;
        results.push(("iroh → iroh".into(), samples));
    }
    let mut report = Report::new("reconnect", &rc::COLUMNS);
    let qq = Pair::new(rc::Stack::Quicpeer, rc::Stack::Quicpeer).label();
    report.rows = rc::rows(&results, &qq);
    report.notes.push(format!(
        "each sample from the crash of the listener (state and socket dropped, no close sent; \
         rebuilt with the same identity on the same port) at a random phase of the dialer's \
         {} ms ping rhythm, at least {} ms after the previous recovery; both peers in this \
         process, each on its own thread and socket",
        settings.others.ping_interval.as_millis(),
        settings.others.spacing.as_millis()
    ));
    if !settings.others.pairs.is_empty() {
        let labels: Vec<String> = settings.others.pairs.iter().map(|p| p.label()).collect();
        report.notes.push(format!(
            "{}: quicpeer-bench's `compare reconnect` pairs with their settings (quicpeer: \
             Config::default(), keep-alive 5 s, idle timeout 10 s; rust-libp2p 0.57: QUIC \
             defaults, keep-alive 5 s, idle timeout 10 s, ping timeout 20 s), {} restarts each, \
             bound per restart {} s",
            labels.join(", "),
            settings.others.restarts,
            settings.others.timeout.as_secs()
        ));
    }
    report.notes.push(format!(
        "iroh → iroh: iroh 1.4.1 (presets::Minimal, relays disabled, no address lookup, one \
         IPv4 socket on 127.0.0.1, iroh's transport defaults); the listener crashes by its tokio \
         runtime's shutdown_background, and is rebuilt with the same secret key on the same \
         port; the dialer pings over a fresh bidirectional stream (32 bytes echoed), with no \
         ping timeout, and connects again as soon as its connection ends (bound per restart \
         {} s); detection: the end of the dialer's connection, by iroh's reason (a close from \
         the crashed listener would stop the run)",
        settings.iroh_timeout.as_secs()
    ));
    report.notes.push(load_before);
    report
        .notes
        .push(quicpeer_bench::compare::load_note("after"));
    Ok(report)
}

/// Runs the iroh pair's restarts; `progress` gets a line per restart.
pub fn measure(
    settings: &Settings,
    progress: &mut dyn FnMut(String),
) -> Result<Vec<Sample>, CompareError> {
    let interval = settings.others.ping_interval;
    let mut listener = Listener::start(0)?;
    let port = listener.port;
    let addr = listener.addr.clone();
    let mut dialer = Dialer::start(addr.clone(), interval)?;
    let t0 = Instant::now();
    if dialer.fresh_ping(t0, 0, t0 + START_TIMEOUT)?.is_none() {
        return Err(CompareError::Stuck(format!(
            "iroh: the dialer's first ping was not answered within {START_TIMEOUT:?}"
        )));
    }
    let mut samples = Vec::new();
    for index in 0..settings.iroh_restarts {
        let phase = interval.mul_f64(rand_fraction());
        std::thread::sleep(settings.others.spacing + phase);
        let old = dialer.generation()?;
        let crash = Instant::now();
        listener.crash()?;
        listener = Listener::start(port)?;
        let up = listener.up;
        let deadline = crash + settings.iroh_timeout;
        let (detection, how) = match dialer.lost(crash, old, deadline)? {
            Some((at, reason)) => {
                if matches!(
                    reason,
                    ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_)
                ) {
                    return Err(CompareError::Setup(format!(
                        "iroh: the crashed listener's close reached the dialer ({reason}): \
                         the crash was not silent"
                    )));
                }
                (
                    Some(at.saturating_duration_since(crash)),
                    reason_name(&reason),
                )
            }
            None => (None, "not detected".to_owned()),
        };
        let first_ping = dialer
            .fresh_ping(crash, old, deadline)?
            .map(|at| at.saturating_duration_since(crash));
        let sample = Sample {
            back_up: up.saturating_duration_since(crash),
            detection,
            how,
            first_ping,
        };
        progress(format!(
            "iroh → iroh restart {}/{}: back up {:.1} ms, detected {} ({}), first ping {}",
            index + 1,
            settings.iroh_restarts,
            ms(sample.back_up),
            sample
                .detection
                .map_or("never".into(), |d| format!("{:.1} ms", ms(d))),
            sample.how,
            sample
                .first_ping
                .map_or("never".into(), |d| format!("{:.1} ms", ms(d))),
        ));
        let recovered = sample.first_ping.is_some();
        samples.push(sample);
        if !recovered {
            // Start over with a fresh dialer so the next restart measures the same thing.
            dialer.stop();
            dialer = Dialer::start(addr.clone(), interval)?;
            let t = Instant::now();
            let old = dialer.generation()?;
            if dialer.fresh_ping(t, old, t + START_TIMEOUT)?.is_none() {
                return Err(CompareError::Stuck(
                    "iroh: a fresh dialer could not ping the listener".into(),
                ));
            }
        }
    }
    dialer.stop();
    listener.crash()?;
    Ok(samples)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A fraction in [0, 1) from the clock's nanoseconds: the crash's phase in the ping rhythm.
fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1e6
}

fn reason_name(reason: &ConnectionError) -> String {
    match reason {
        ConnectionError::TimedOut => "idle timeout".into(),
        ConnectionError::Reset => "stateless reset".into(),
        other => other.to_string(),
    }
}

// ---- the listener ----

/// An iroh listener on a thread of its own, with its own tokio runtime.
struct Listener {
    crash_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: EndpointAddr,
    port: u16,
    /// When it was listening.
    up: Instant,
}

impl Listener {
    /// Starts a listener on 127.0.0.1:`port` (0: any), retrying a port still held for up to a
    /// second.
    fn start(port: u16) -> Result<Self, CompareError> {
        let give_up = Instant::now() + Duration::from_secs(1);
        loop {
            match Self::try_start(port) {
                Ok(listener) => return Ok(listener),
                Err(CompareError::Setup(_)) if port != 0 && Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_start(port: u16) -> Result<Self, CompareError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(EndpointAddr, Instant), CompareError>>();
        let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = crate::spawn("rc-iroh-listener", move || {
            let runtime = match current_thread() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let endpoint = runtime.block_on(async move {
                let endpoint = match bind(Setup::listener(LISTENER_SEED, port)).await {
                    Ok(endpoint) => endpoint,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return None;
                    }
                };
                let addr = direct_addr(&endpoint);
                let ok = addr.is_ok();
                let _ = ready_tx.send(addr.map(|a| (a, Instant::now())));
                if !ok {
                    return Some(endpoint);
                }
                tokio::spawn(serve(endpoint.clone()));
                // Until the crash (or the bench dropping its handle).
                let _ = crash_rx.await;
                Some(endpoint)
            });
            // The crash: every task (connections, socket actor) dropped where it stands,
            // nothing more sent; then the endpoint handle, with no runtime left to send on.
            runtime.shutdown_background();
            drop(endpoint);
        })?;
        let (addr, up) = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                return Err(CompareError::Stuck(
                    "the iroh listener did not start".into(),
                ))
            }
        };
        let port = addr.ip_addrs().next().map_or(port, |a| a.port());
        Ok(Self {
            crash_tx: Some(crash_tx),
            thread: Some(thread),
            addr,
            port,
            up,
        })
    }

    /// Crashes the listener and waits until its socket is gone.
    fn crash(&mut self) -> Result<(), CompareError> {
        if let Some(tx) = self.crash_tx.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(thread) => crate::join(thread, "iroh listener"),
            None => Ok(()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}

/// Echoes every ping on every connection.
async fn serve(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; PING_BYTES];
                    if recv.read_exact(&mut buf).await.is_ok() && send.write_all(&buf).await.is_ok()
                    {
                        let _ = send.finish();
                    }
                });
            }
        });
    }
}

// ---- the dialer ----

/// What the dialer saw, stamped when it saw it.
#[derive(Debug, Clone)]
enum Seen {
    /// Connection number `generation` established.
    Connected { generation: u64 },
    /// A ping answered on connection `generation`.
    Ping { generation: u64 },
    /// Connection `generation` ended.
    Lost {
        generation: u64,
        reason: ConnectionError,
    },
}

/// An iroh dialer on a thread of its own, with its own tokio runtime.
struct Dialer {
    events: mpsc::Receiver<(Instant, Seen)>,
    seen: Vec<(Instant, Seen)>,
    stop_tx: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<Result<(), CompareError>>>,
}

impl Dialer {
    fn start(addr: EndpointAddr, interval: Duration) -> Result<Self, CompareError> {
        let (events_tx, events) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let thread = crate::spawn("rc-iroh-dialer", move || {
            let runtime = current_thread()?;
            runtime.block_on(dial_loop(addr, interval, events_tx, stop_rx))
        })?;
        Ok(Self {
            events,
            seen: Vec::new(),
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Takes what has arrived, without waiting.
    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
    }

    /// The latest connection's generation (0: none yet).
    fn generation(&mut self) -> Result<u64, CompareError> {
        self.drain();
        Ok(self
            .seen
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Seen::Connected { generation } => Some(*generation),
                _ => None,
            })
            .unwrap_or(0))
    }

    /// The first event at or after `since` that `pick` takes, waiting until `deadline`.
    fn wait_for<T>(
        &mut self,
        since: Instant,
        deadline: Instant,
        pick: impl Fn(&Seen) -> Option<T>,
    ) -> Result<Option<(Instant, T)>, CompareError> {
        let mut next = 0;
        loop {
            self.drain();
            if let Some(found) = self.seen[next..]
                .iter()
                .filter(|(at, _)| *at >= since)
                .find_map(|(at, e)| pick(e).map(|t| (*at, t)))
            {
                return Ok(Some(found));
            }
            next = self.seen.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.events.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let ended = self.thread.take().map(|t| crate::join(t, "iroh dialer"));
                    return Err(match ended {
                        Some(Ok(Err(e))) | Some(Err(e)) => e,
                        _ => CompareError::Stuck("the iroh dialer stopped".into()),
                    });
                }
            }
        }
    }

    /// When connection `old` ended, and why.
    fn lost(
        &mut self,
        since: Instant,
        old: u64,
        deadline: Instant,
    ) -> Result<Option<(Instant, ConnectionError)>, CompareError> {
        self.wait_for(since, deadline, |e| match e {
            Seen::Lost { generation, reason } if *generation == old => Some(reason.clone()),
            _ => None,
        })
    }

    /// When the first ping on a connection after `old` was answered.
    fn fresh_ping(
        &mut self,
        since: Instant,
        old: u64,
        deadline: Instant,
    ) -> Result<Option<Instant>, CompareError> {
        Ok(self
            .wait_for(since, deadline, |e| match e {
                Seen::Ping { generation } if *generation > old => Some(()),
                _ => None,
            })?
            .map(|(at, ())| at))
    }
}

impl Drop for Dialer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The dialer's life: connect, ping until the connection ends, connect again; until stopped.
async fn dial_loop(
    addr: EndpointAddr,
    interval: Duration,
    events: mpsc::Sender<(Instant, Seen)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), CompareError> {
    let endpoint = bind(Setup::dialer(DIALER_SEED)).await?;
    let mut generation = 0u64;
    let result = loop {
        let connected = tokio::select! {
            _ = stop.changed() => break Ok(()),
            connected = endpoint.connect(addr.clone(), ALPN) => connected,
        };
        let connection = match connected {
            Ok(connection) => connection,
            Err(_) => {
                // Not back yet: try again a ping interval later.
                tokio::select! {
                    _ = stop.changed() => break Ok(()),
                    _ = tokio::time::sleep(interval) => continue,
                }
            }
        };
        generation += 1;
        if events
            .send((Instant::now(), Seen::Connected { generation }))
            .is_err()
        {
            break Ok(());
        }
        let reason = tokio::select! {
            _ = stop.changed() => break Ok(()),
            reason = connection.closed() => reason,
            () = ping_until_error(&connection, interval, generation, &events) => {
                tokio::select! {
                    _ = stop.changed() => break Ok(()),
                    reason = connection.closed() => reason,
                }
            }
        };
        let seen = Seen::Lost { generation, reason };
        if events.send((Instant::now(), seen)).is_err() {
            break Ok(());
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.close()).await;
    result
}

/// Pings at once and then every `interval`, each ping waiting for its echo as long as it
/// takes; returns when a ping fails.
async fn ping_until_error(
    connection: &Connection,
    interval: Duration,
    generation: u64,
    events: &mpsc::Sender<(Instant, Seen)>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if ping(connection).await.is_err() {
            return;
        }
        if events
            .send((Instant::now(), Seen::Ping { generation }))
            .is_err()
        {
            return;
        }
    }
}

/// One ping: 32 bytes on a fresh bidirectional stream, echoed.
async fn ping(connection: &Connection) -> Result<(), String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let payload = [0x5au8; PING_BYTES];
    send.write_all(&payload).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let mut echo = [0u8; PING_BYTES];
    recv.read_exact(&mut echo)
        .await
        .map_err(|e| e.to_string())?;
    if echo != payload {
        return Err("the echo differs".into());
    }
    Ok(())
}
