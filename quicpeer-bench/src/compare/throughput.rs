//! Bulk throughput over loopback: one stream of `bytes` from a sender to a receiver, quicpeer's
//! mio driver and its async API on tokio against quinn on tokio.
//!
//! Each side runs on a thread of its own (not pinned: sender and receiver may use both cores).
//! The sender dials, opens one bidirectional stream, writes `bytes` from a 64 KiB buffer as
//! fast as flow control takes them, and finishes the stream; the receiver reads every chunk as
//! it becomes readable and discards it. The time is from the stream's opening on the sender to
//! the receiver reading its end. Both stacks use the same TLS configuration (quicpeer's
//! libp2p certificates with ring, so the same cipher suite) and the same transport settings
//! (quinn's defaults, quicpeer's idle timeout, keep-alive and largest UDP payload); the
//! handshake is not timed.
//!
//! - **quicpeer**: a `Manager` on the mio driver on each side (`stream_write`,
//!   `stream_read_chunks`).
//! - **quicpeer-tokio**: an `Endpoint` of `quicpeer-tokio` on a tokio current-thread runtime on
//!   each side (`write_all` on the `SendStream`, `read` into a 64 KiB buffer from the
//!   `RecvStream`: tokio's `AsyncWrite` and `AsyncRead`). Its API has no future for the
//!   acknowledgement of a finished stream, so the sender's CPU time ends when the receiver has
//!   read the end (told over a channel; at most a loopback round trip earlier).
//! - **quinn**: quinn 0.11 on a tokio current-thread runtime on each side (`write_all`,
//!   `read_chunk`).

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use quicpeer::driver::{Driver, DriverStats};
use quicpeer::{Config, Event, Identity, Manager, ReadStatus, StreamError};

use super::handshake::{quinn_configs, quinn_endpoint, QuinnConfigs};
use super::{median, thread_cpu_time, Cell, CompareError, Report};

/// Bytes handed to one write call.
const WRITE_CHUNK: usize = 64 * 1024;
/// Receiver and sender seed bytes.
const RECEIVER_SEED: u8 = 2;
const SENDER_SEED: u8 = 3;

/// An implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// quicpeer's `Manager` on the mio driver.
    Quicpeer,
    /// quicpeer's async API (`quicpeer-tokio`) on tokio current-thread runtimes.
    QuicpeerTokio,
    /// quinn on tokio current-thread runtimes.
    Quinn,
}

impl Stack {
    /// Every stack, in the order of the report.
    pub const ALL: [Stack; 3] = [Stack::Quicpeer, Stack::QuicpeerTokio, Stack::Quinn];

    /// The stack named `name` on the command line: `quicpeer`, `quicpeer-tokio` or `quinn`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "quicpeer" => Some(Stack::Quicpeer),
            "quicpeer-tokio" => Some(Stack::QuicpeerTokio),
            "quinn" => Some(Stack::Quinn),
            _ => None,
        }
    }

    /// A short name.
    pub fn label(self) -> &'static str {
        match self {
            Stack::Quicpeer => "quicpeer (mio driver)",
            Stack::QuicpeerTokio => "quicpeer-tokio",
            Stack::Quinn => "quinn (tokio)",
        }
    }
}

/// What one transfer measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    /// Bytes carried.
    pub bytes: u64,
    /// From the stream's opening to the receiver reading its end.
    pub wall: Duration,
    /// The sender's CPU time, from the opening until all its data was acknowledged.
    pub sender_cpu: Option<Duration>,
    /// The receiver's CPU time, from the connection until it read the end.
    pub receiver_cpu: Option<Duration>,
    /// UDP datagrams the sender sent, where the stack tells.
    pub datagrams: Option<u64>,
    /// Send system calls those took (each may carry a GSO batch), where the stack tells.
    pub send_calls: Option<u64>,
    /// Packets the sender declared lost (quinn's path statistics), where the stack tells.
    pub lost: Option<u64>,
}

impl Transfer {
    /// MiB per second of wall-clock time.
    pub fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.wall.as_secs_f64().max(1e-9)
    }

    /// UDP datagrams per send system call, where the stack tells.
    pub fn datagrams_per_send(&self) -> Option<f64> {
        let (datagrams, calls) = (self.datagrams?, self.send_calls?);
        Some(datagrams as f64 / calls.max(1) as f64)
    }

    /// CPU seconds per GiB carried.
    fn cpu_per_gib(&self, cpu: Option<Duration>) -> Option<f64> {
        cpu.map(|cpu| cpu.as_secs_f64() / (self.bytes as f64 / (1u64 << 30) as f64))
    }
}

/// Carries `bytes` over one stream with `stack`.
pub fn measure(stack: Stack, bytes: u64) -> Result<Transfer, CompareError> {
    match stack {
        Stack::Quicpeer => quicpeer_transfer(bytes),
        Stack::QuicpeerTokio => tokio_transfer(bytes),
        Stack::Quinn => quinn_transfer(bytes),
    }
}

/// Runs `rounds` alternating transfers of each of `stacks` and reports the medians.
pub fn run(
    stacks: &[Stack],
    bytes: u64,
    rounds: usize,
    progress: &mut dyn FnMut(String),
) -> Result<Report, CompareError> {
    let load_before = super::load_note("before");
    let mut results: Vec<Vec<Transfer>> = vec![Vec::new(); stacks.len()];
    for round in 0..rounds.max(1) {
        for (stack, results) in stacks.iter().zip(&mut results) {
            let t = measure(*stack, bytes)?;
            progress(format!(
                "throughput round {}/{} {}: {:.0} MiB/s, sender CPU {:.2} s/GiB, receiver CPU \
                 {:.2} s/GiB, {:.1} datagrams per send call, {} packets lost",
                round + 1,
                rounds,
                stack.label(),
                t.mib_per_second(),
                t.cpu_per_gib(t.sender_cpu).unwrap_or(f64::NAN),
                t.cpu_per_gib(t.receiver_cpu).unwrap_or(f64::NAN),
                t.datagrams_per_send().unwrap_or(f64::NAN),
                t.lost.map_or("?".into(), |l| l.to_string()),
            ));
            results.push(t);
        }
    }
    let mut report = super::report(
        "throughput",
        &[
            "stack",
            "MiB/s",
            "Gbit/s",
            "sender CPU s/GiB",
            "receiver CPU s/GiB",
            "datagrams/send call",
            "packets lost",
            "MiB/s vs quinn",
            "sender CPU vs quinn",
            "receiver CPU vs quinn",
            "sender CPU vs mio driver",
            "receiver CPU vs mio driver",
        ],
    );
    let summary: Vec<[Option<f64>; 5]> = results
        .iter()
        .map(|ts| {
            let rate: Vec<f64> = ts.iter().map(Transfer::mib_per_second).collect();
            let sender: Vec<f64> = ts
                .iter()
                .filter_map(|t| t.cpu_per_gib(t.sender_cpu))
                .collect();
            let receiver: Vec<f64> = ts
                .iter()
                .filter_map(|t| t.cpu_per_gib(t.receiver_cpu))
                .collect();
            let batch: Vec<f64> = ts.iter().filter_map(Transfer::datagrams_per_send).collect();
            let lost: Vec<f64> = ts.iter().filter_map(|t| t.lost).map(|l| l as f64).collect();
            [
                median(&rate),
                median(&sender),
                median(&receiver),
                median(&batch),
                median(&lost),
            ]
        })
        .collect();
    let quinn = stacks
        .iter()
        .position(|s| *s == Stack::Quinn)
        .map_or([None; 5], |i| summary[i]);
    let mio = stacks
        .iter()
        .position(|s| *s == Stack::Quicpeer)
        .map_or([None; 5], |i| summary[i]);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Cell::num(a / b, 2),
        _ => Cell::Missing,
    };
    let num = |v: Option<f64>, d: usize| v.map_or(Cell::Missing, |v| Cell::num(v, d));
    for (stack, s) in stacks.iter().zip(&summary) {
        report.rows.push(vec![
            Cell::text(stack.label()),
            num(s[0], 0),
            num(s[0].map(|m| m * 1024.0 * 1024.0 * 8.0 / 1e9), 2),
            num(s[1], 2),
            num(s[2], 2),
            num(s[3], 1),
            num(s[4], 0),
            ratio(s[0], quinn[0]),
            ratio(s[1], quinn[1]),
            ratio(s[2], quinn[2]),
            ratio(s[1], mio[1]),
            ratio(s[2], mio[2]),
        ]);
    }
    report.notes.push(format!(
        "median of {} alternating transfers of {bytes} bytes ({:.2} GiB) per stack over one \
         stream on 127.0.0.1; sender and receiver on two threads, not pinned",
        rounds.max(1),
        bytes as f64 / (1u64 << 30) as f64
    ));
    report.notes.push(
        "same TLS (quicpeer's libp2p certificates, rustls with ring) and transport settings \
         on both stacks; time from the stream's opening to the receiver reading its end"
            .into(),
    );
    report.notes.push(load_before);
    report.notes.push(super::load_note("after"));
    Ok(report)
}

// ---- quicpeer ----

/// What the receiving thread reports: CPU time to the end of the stream, bytes read.
type Received = Result<(Instant, Option<Duration>, u64), String>;

fn quicpeer_transfer(bytes: u64) -> Result<Transfer, CompareError> {
    let receiver_id = Identity::from_ed25519_seed([RECEIVER_SEED; 32]);
    let peer = receiver_id.peer_id();
    let (addr_tx, addr_rx) = mpsc::channel();
    let receiver = std::thread::Builder::new()
        .name("tp-quicpeer-receiver".into())
        .spawn(move || -> Received {
            let (now, wall) = (Instant::now(), SystemTime::now());
            let built = Manager::new(now, wall, receiver_id, Config::default(), rand::random())
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    Driver::bind(m, &[([127, 0, 0, 1], 0).into()]).map_err(|e| e.to_string())
                });
            let mut driver = match built {
                Ok(driver) => driver,
                Err(e) => {
                    let _ = addr_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let addr = driver.local_addrs().first().copied();
            let _ = addr_tx.send(addr.map(|a| (a, driver.handle())).ok_or("no socket".into()));
            let mut received = 0u64;
            let mut start = None;
            let mut end = None;
            let mut failure = None;
            let mut chunks = Vec::new();
            let _ = driver.run(|cx, event| {
                let stream = match event {
                    Event::Connected { .. } => {
                        start = thread_cpu_time();
                        return;
                    }
                    Event::StreamOpened { stream, .. } | Event::StreamReadable { stream }
                        if end.is_none() =>
                    {
                        stream
                    }
                    _ => return,
                };
                // No budget: one call reads everything that has arrived.
                match cx.stream_read_chunks(stream, usize::MAX, &mut chunks) {
                    Ok(read) => {
                        received += read.bytes as u64;
                        chunks.clear();
                        if read.status == ReadStatus::Finished {
                            end = Some((Instant::now(), thread_cpu_time()));
                        }
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        cx.stop();
                    }
                }
            });
            if let Some(failure) = failure {
                return Err(failure);
            }
            let (at, cpu_end) = end.ok_or("the stream did not end")?;
            let cpu = start.zip(cpu_end).map(|(a, b)| b.saturating_sub(a));
            Ok((at, cpu, received))
        })
        .map_err(|e| CompareError::Setup(format!("thread: {e}")))?;
    let (addr, receiver_handle) = addr_rx
        .recv()
        .map_err(|_| CompareError::Setup("receiver thread died".into()))?
        .map_err(CompareError::Setup)?;

    let sender = std::thread::Builder::new()
        .name("tp-quicpeer-sender".into())
        .spawn(
            move || -> Result<(Instant, Option<Duration>, DriverStats, u64), String> {
                let identity = Identity::from_ed25519_seed([SENDER_SEED; 32]);
                let (now, wall) = (Instant::now(), SystemTime::now());
                let manager = Manager::new(now, wall, identity, Config::default(), rand::random())
                    .map_err(|e| e.to_string())?;
                let mut driver = Driver::bind(manager, &[([127, 0, 0, 1], 0).into()])
                    .map_err(|e| e.to_string())?;
                let now = driver.now();
                driver
                    .machine_mut()
                    .dial(now, peer, [addr])
                    .map_err(|e| e.to_string())?;
                let data = vec![0xa5u8; WRITE_CHUNK];
                let mut written = 0u64;
                let mut stream = None;
                let mut connection = None;
                let mut start: Option<(Instant, Option<Duration>)> = None;
                let mut end = None;
                let mut failure = None;
                let mut finished = false;
                let deadline = Instant::now() + Duration::from_secs(600);
                driver
                    .run_until(Some(deadline), |cx, event| {
                        match event {
                            Event::Connected { conn, .. } => match cx.open_stream(conn) {
                                Ok(s) => {
                                    stream = Some(s);
                                    connection = Some(conn);
                                    start = Some((Instant::now(), thread_cpu_time()));
                                }
                                Err(e) => {
                                    failure = Some(format!("open_stream: {e}"));
                                    cx.stop();
                                    return;
                                }
                            },
                            Event::StreamWritable { .. } => {}
                            Event::StreamFinished { .. } => {
                                end = Some(thread_cpu_time());
                                cx.stop();
                                return;
                            }
                            Event::ConnectionLost { cause, .. } => {
                                failure = Some(format!("connection lost: {cause}"));
                                cx.stop();
                                return;
                            }
                            _ => return,
                        }
                        let Some(s) = stream else { return };
                        while written < bytes {
                            let n = (bytes - written).min(WRITE_CHUNK as u64) as usize;
                            match cx.stream_write(s, &data[..n]) {
                                Ok(taken) => written += taken as u64,
                                Err(StreamError::Blocked) => return,
                                Err(e) => {
                                    failure = Some(format!("write: {e}"));
                                    cx.stop();
                                    return;
                                }
                            }
                        }
                        if !finished {
                            finished = true;
                            if let Err(e) = cx.stream_finish(s) {
                                failure = Some(format!("finish: {e}"));
                                cx.stop();
                            }
                        }
                    })
                    .map_err(|e| e.to_string())?;
                if let Some(failure) = failure {
                    return Err(failure);
                }
                let (t0, c0) = start.ok_or("no connection")?;
                let c1 = end.ok_or("the stream was not acknowledged in time")?;
                let cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
                let stats = driver.stats();
                let lost = connection
                    .and_then(|c| driver.machine().stats(c))
                    .map_or(0, |s| s.lost_packets);
                let _ = driver.shutdown(Duration::from_millis(200), |_, _| {});
                Ok((t0, cpu, stats, lost))
            },
        )
        .map_err(|e| CompareError::Setup(format!("thread: {e}")))?;
    let sent = sender
        .join()
        .map_err(|_| CompareError::Setup("sender thread panicked".into()))?;
    let _ = receiver_handle.stop();
    let received = receiver
        .join()
        .map_err(|_| CompareError::Setup("receiver thread panicked".into()))?;
    let (t0, sender_cpu, stats, lost) = sent.map_err(CompareError::Stuck)?;
    let (t1, receiver_cpu, got) = received.map_err(CompareError::Stuck)?;
    if got != bytes {
        return Err(CompareError::Stuck(format!(
            "received {got} of {bytes} bytes"
        )));
    }
    Ok(Transfer {
        bytes,
        wall: t1.saturating_duration_since(t0),
        sender_cpu,
        receiver_cpu,
        datagrams: Some(stats.datagrams_sent),
        send_calls: Some(stats.send_calls),
        lost: Some(lost),
    })
}

// ---- quicpeer-tokio ----

fn tokio_transfer(bytes: u64) -> Result<Transfer, CompareError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let receiver_id = Identity::from_ed25519_seed([RECEIVER_SEED; 32]);
    let peer = receiver_id.peer_id();
    let (addr_tx, addr_rx) = mpsc::channel::<Result<std::net::SocketAddr, String>>();
    // The receiver tells the sender it read the end; the sender tells the receiver it is done.
    let (read_tx, read_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let receiver = std::thread::Builder::new()
        .name("tp-tokio-receiver".into())
        .spawn(move || -> Received {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let bound = quicpeer_tokio::Endpoint::bind(
                    receiver_id,
                    Config::default(),
                    ([127, 0, 0, 1], 0).into(),
                )
                .map_err(|e| e.to_string());
                let endpoint = match bound {
                    Ok(endpoint) => endpoint,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                let _ = addr_tx.send(Ok(endpoint.local_addr()));
                let connection = endpoint.accept().await.ok_or("endpoint closed")?;
                let start = thread_cpu_time();
                let (_send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; WRITE_CHUNK];
                let mut received = 0u64;
                loop {
                    let n = recv.read(&mut buf).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    received += n as u64;
                }
                let (at, end) = (Instant::now(), thread_cpu_time());
                let _ = read_tx.send(());
                // Keep acknowledging until the sender is done.
                let _ = stop_rx.await;
                let cpu = start.zip(end).map(|(a, b)| b.saturating_sub(a));
                Ok((at, cpu, received))
            })
        })
        .map_err(|e| CompareError::Setup(format!("thread: {e}")))?;
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| CompareError::Setup("quicpeer-tokio receiver did not start".into()))?
        .map_err(CompareError::Setup)?;

    type Sent = Result<(Instant, Option<Duration>, Option<TokioStats>), String>;
    let sender = std::thread::Builder::new()
        .name("tp-tokio-sender".into())
        .spawn(move || -> Sent {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let endpoint = quicpeer_tokio::Endpoint::bind(
                    Identity::from_ed25519_seed([SENDER_SEED; 32]),
                    Config::default(),
                    ([127, 0, 0, 1], 0).into(),
                )
                .map_err(|e| e.to_string())?;
                let connection = endpoint
                    .connect(peer, [addr])
                    .await
                    .map_err(|e| e.to_string())?;
                let before = tokio_stats(&endpoint, &connection);
                let (mut send, _recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
                let (t0, c0) = (Instant::now(), thread_cpu_time());
                let data = vec![0xa5u8; WRITE_CHUNK];
                let mut written = 0u64;
                while written < bytes {
                    let n = (bytes - written).min(WRITE_CHUNK as u64) as usize;
                    send.write_all(&data[..n])
                        .await
                        .map_err(|e| e.to_string())?;
                    written += n as u64;
                }
                send.shutdown().await.map_err(|e| e.to_string())?;
                // The API has no acknowledgement future: until the receiver read the end.
                tokio::time::timeout(Duration::from_secs(600), read_rx)
                    .await
                    .map_err(|_| "the receiver did not read the end in time")?
                    .map_err(|_| "the receiver failed")?;
                let c1 = thread_cpu_time();
                let after = tokio_stats(&endpoint, &connection);
                endpoint.close_within(Duration::from_millis(200)).await;
                let cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
                let stats = before.zip(after).map(|(b, a)| TokioStats {
                    datagrams: a.datagrams - b.datagrams,
                    send_calls: a.send_calls - b.send_calls,
                    lost: a.lost - b.lost,
                });
                Ok((t0, cpu, stats))
            })
        })
        .map_err(|e| CompareError::Setup(format!("thread: {e}")))?;
    let sent = sender
        .join()
        .map_err(|_| CompareError::Setup("sender thread panicked".into()))?;
    let _ = stop_tx.send(());
    let received = receiver
        .join()
        .map_err(|_| CompareError::Setup("receiver thread panicked".into()))?;
    let (t0, sender_cpu, stats) = sent.map_err(CompareError::Stuck)?;
    let (t1, receiver_cpu, got) = received.map_err(CompareError::Stuck)?;
    if got != bytes {
        return Err(CompareError::Stuck(format!(
            "received {got} of {bytes} bytes"
        )));
    }
    Ok(Transfer {
        bytes,
        wall: t1.saturating_duration_since(t0),
        sender_cpu,
        receiver_cpu,
        datagrams: stats.map(|s| s.datagrams),
        send_calls: stats.map(|s| s.send_calls),
        lost: stats.map(|s| s.lost),
    })
}

/// The sender's counters on quicpeer-tokio.
#[derive(Debug, Clone, Copy)]
struct TokioStats {
    datagrams: u64,
    send_calls: u64,
    lost: u64,
}

fn tokio_stats(
    endpoint: &quicpeer_tokio::Endpoint,
    connection: &quicpeer_tokio::Connection,
) -> Option<TokioStats> {
    let socket = endpoint.stats();
    Some(TokioStats {
        datagrams: socket.datagrams_sent,
        send_calls: socket.send_calls,
        lost: connection.stats()?.lost_packets,
    })
}

// ---- quinn ----

fn quinn_transfer(bytes: u64) -> Result<Transfer, CompareError> {
    let QuinnConfigs {
        server,
        client,
        endpoint,
    } = quinn_configs(RECEIVER_SEED, SENDER_SEED).map_err(CompareError::Setup)?;
    let client_endpoint_config = endpoint.clone();
    let (addr_tx, addr_rx) = mpsc::channel::<Result<std::net::SocketAddr, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let receiver = std::thread::Builder::new()
        .name("tp-quinn-receiver".into())
        .spawn(move || -> Received {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let endpoint = match quinn_endpoint(endpoint, Some(server)) {
                    Ok(endpoint) => endpoint,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                let _ = addr_tx.send(endpoint.local_addr().map_err(|e| e.to_string()));
                let incoming = endpoint.accept().await.ok_or("endpoint closed")?;
                let connection = incoming.await.map_err(|e| e.to_string())?;
                let start = thread_cpu_time();
                let (_send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
                let mut received = 0u64;
                while let Some(chunk) = recv
                    .read_chunk(usize::MAX, true)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    received += chunk.bytes.len() as u64;
                }
                let (at, end) = (Instant::now(), thread_cpu_time());
                // Keep acknowledging until the sender is done.
                let _ = stop_rx.await;
                let cpu = start.zip(end).map(|(a, b)| b.saturating_sub(a));
                Ok((at, cpu, received))
            })
        })
        .map_err(|e| CompareError::Setup(format!("thread: {e}")))?;
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| CompareError::Setup("quinn receiver did not start".into()))?
        .map_err(CompareError::Setup)?;

    type Sent = Result<(Instant, Option<Duration>, u64, u64, u64), String>;
    let sender = std::thread::Builder::new()
        .name("tp-quinn-sender".into())
        .spawn(move || -> Sent {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let endpoint = quinn_endpoint(client_endpoint_config, None)?;
                let connection = endpoint
                    .connect_with(client, addr, "l")
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
                let before = connection.stats();
                let (mut send, _recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
                let (t0, c0) = (Instant::now(), thread_cpu_time());
                let data = vec![0xa5u8; WRITE_CHUNK];
                let mut written = 0u64;
                while written < bytes {
                    let n = (bytes - written).min(WRITE_CHUNK as u64) as usize;
                    send.write_all(&data[..n])
                        .await
                        .map_err(|e| e.to_string())?;
                    written += n as u64;
                }
                send.finish().map_err(|e| e.to_string())?;
                // Until every byte is acknowledged.
                send.stopped().await.map_err(|e| e.to_string())?;
                let c1 = thread_cpu_time();
                let after = connection.stats();
                connection.close(0u32.into(), b"");
                endpoint.wait_idle().await;
                let cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
                Ok((
                    t0,
                    cpu,
                    after.udp_tx.datagrams - before.udp_tx.datagrams,
                    after.udp_tx.ios - before.udp_tx.ios,
                    after.path.lost_packets - before.path.lost_packets,
                ))
            })
        })
        .map_err(|e| CompareError::Setup(format!("thread: {e}")))?;
    let sent = sender
        .join()
        .map_err(|_| CompareError::Setup("sender thread panicked".into()))?;
    let _ = stop_tx.send(());
    let received = receiver
        .join()
        .map_err(|_| CompareError::Setup("receiver thread panicked".into()))?;
    let (t0, sender_cpu, datagrams, send_calls, lost) = sent.map_err(CompareError::Stuck)?;
    let (t1, receiver_cpu, got) = received.map_err(CompareError::Stuck)?;
    if got != bytes {
        return Err(CompareError::Stuck(format!(
            "received {got} of {bytes} bytes"
        )));
    }
    Ok(Transfer {
        bytes,
        wall: t1.saturating_duration_since(t0),
        sender_cpu,
        receiver_cpu,
        datagrams: Some(datagrams),
        send_calls: Some(send_calls),
        lost: Some(lost),
    })
}
