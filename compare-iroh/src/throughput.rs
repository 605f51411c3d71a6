//! Bulk throughput of one iroh stream over loopback, beside quicpeer-bench's throughput stacks
//! measured in the same run.
//!
//! As quicpeer-bench's workload: the sender and the receiver each run on a thread of their own
//! (not pinned) with a tokio current-thread runtime; the sender connects, opens one
//! bidirectional stream, writes `bytes` from a 64 KiB buffer (`write_all`), finishes the stream
//! and waits until the receiver has it all (`stopped`); the receiver reads every chunk as it
//! comes (`read_chunk`) and discards it. The time runs from the stream's opening on the sender
//! to the receiver reading its end; the handshake is not timed. iroh keeps its own TLS (raw
//! public keys, rustls with ring) and transport defaults.
//!
//! CPU time is each side's thread's; the process's CPU time over the sender's transfer is taken
//! too, so the report shows whether iroh ran work on threads of its own.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use quicpeer_bench::compare::throughput::{self as tp, Transfer};
use quicpeer_bench::compare::{median, thread_cpu_time, Cell, CompareError, Report};

use crate::{bind, current_thread, direct_addr, process_cpu_time, Setup, ALPN};
use crate::{DIALER_SEED, LISTENER_SEED};

/// Bytes handed to one write call (as quicpeer-bench's workload).
const WRITE_CHUNK: usize = 64 * 1024;
/// Bound on one transfer.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// A stack of the throughput table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// One of quicpeer-bench's stacks.
    Existing(tp::Stack),
    /// iroh on tokio current-thread runtimes.
    Iroh,
}

impl Stack {
    /// Every stack, in the order of the report.
    pub const ALL: [Stack; 4] = [
        Stack::Existing(tp::Stack::Quicpeer),
        Stack::Existing(tp::Stack::QuicpeerTokio),
        Stack::Existing(tp::Stack::Quinn),
        Stack::Iroh,
    ];

    /// The stack named `name` on the command line: `iroh`, or one of quicpeer-bench's.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "iroh" => Some(Stack::Iroh),
            other => tp::Stack::from_name(other).map(Stack::Existing),
        }
    }

    /// A short name.
    pub fn label(self) -> &'static str {
        match self {
            Stack::Existing(stack) => stack.label(),
            Stack::Iroh => "iroh 1.4.1 (tokio)",
        }
    }
}

/// An iroh transfer: its [`Transfer`], and the process's CPU time over the sender's part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IrohTransfer {
    /// What quicpeer-bench's stacks measure too (no send-call count: noq does not count them).
    pub transfer: Transfer,
    /// The whole process's CPU time from the stream's opening to its acknowledgement.
    pub process_cpu: Option<Duration>,
}

/// What the receiving thread reports: when it read the end, its CPU time, bytes read.
type Received = Result<(Instant, Option<Duration>, u64), CompareError>;
/// What the sending thread reports: when it opened the stream, its CPU time, the process's,
/// datagrams sent and packets lost.
type Sent = Result<(Instant, Option<Duration>, Option<Duration>, u64, u64), CompareError>;

/// Carries `bytes` over one iroh stream.
pub fn measure_iroh(bytes: u64) -> Result<IrohTransfer, CompareError> {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let receiver = crate::spawn("tp-iroh-receiver", move || -> Received {
        let runtime = current_thread()?;
        runtime.block_on(async move {
            let endpoint = match bind(Setup::listener(LISTENER_SEED, 0)).await {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    let _ = addr_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let _ = addr_tx.send(direct_addr(&endpoint));
            let result = async {
                let incoming = endpoint
                    .accept()
                    .await
                    .ok_or_else(|| CompareError::Stuck("iroh endpoint closed".into()))?;
                let connection = incoming
                    .await
                    .map_err(|e| CompareError::Stuck(format!("iroh accept: {e}")))?;
                let start = thread_cpu_time();
                let (_send, mut recv) = connection
                    .accept_bi()
                    .await
                    .map_err(|e| CompareError::Stuck(format!("iroh accept_bi: {e}")))?;
                let mut received = 0u64;
                while let Some(chunk) = recv
                    .read_chunk(usize::MAX)
                    .await
                    .map_err(|e| CompareError::Stuck(format!("iroh read: {e}")))?
                {
                    received += chunk.len() as u64;
                }
                let (at, end) = (Instant::now(), thread_cpu_time());
                // Keep acknowledging until the sender is done.
                let _ = stop_rx.await;
                let cpu = start.zip(end).map(|(a, b)| b.saturating_sub(a));
                Ok((at, cpu, received))
            }
            .await;
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.close()).await;
            result
        })
    })?;
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| CompareError::Setup("iroh receiver did not start".into()))??;

    let sender = crate::spawn("tp-iroh-sender", move || -> Sent {
        let runtime = current_thread()?;
        runtime.block_on(async move {
            let endpoint = bind(Setup::dialer(DIALER_SEED)).await?;
            let result = tokio::time::timeout(TRANSFER_TIMEOUT, async {
                let connection = endpoint
                    .connect(addr, ALPN)
                    .await
                    .map_err(|e| CompareError::Stuck(format!("iroh connect: {e}")))?;
                let before = connection.stats();
                let (mut send, _recv) = connection
                    .open_bi()
                    .await
                    .map_err(|e| CompareError::Stuck(format!("iroh open_bi: {e}")))?;
                let (t0, c0, p0) = (Instant::now(), thread_cpu_time(), process_cpu_time());
                let data = vec![0xa5u8; WRITE_CHUNK];
                let mut written = 0u64;
                while written < bytes {
                    let n = (bytes - written).min(WRITE_CHUNK as u64) as usize;
                    send.write_all(&data[..n])
                        .await
                        .map_err(|e| CompareError::Stuck(format!("iroh write: {e}")))?;
                    written += n as u64;
                }
                send.finish()
                    .map_err(|e| CompareError::Stuck(format!("iroh finish: {e}")))?;
                // Until every byte is acknowledged.
                send.stopped()
                    .await
                    .map_err(|e| CompareError::Stuck(format!("iroh stopped: {e}")))?;
                let (c1, p1) = (thread_cpu_time(), process_cpu_time());
                let after = connection.stats();
                connection.close(0u32.into(), b"");
                let since = |a: Option<Duration>, b: Option<Duration>| {
                    a.zip(b).map(|(a, b)| b.saturating_sub(a))
                };
                Ok((
                    t0,
                    since(c0, c1),
                    since(p0, p1),
                    after.udp_tx.datagrams - before.udp_tx.datagrams,
                    after.lost_packets - before.lost_packets,
                ))
            })
            .await
            .unwrap_or_else(|_| {
                Err(CompareError::Stuck(format!(
                    "the iroh transfer took over {TRANSFER_TIMEOUT:?}"
                )))
            });
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.close()).await;
            result
        })
    })?;
    let sent = crate::join(sender, "iroh sender");
    let _ = stop_tx.send(());
    let received = crate::join(receiver, "iroh receiver")?;
    let (t0, sender_cpu, process_cpu, datagrams, lost) = sent??;
    let (t1, receiver_cpu, got) = received?;
    if got != bytes {
        return Err(CompareError::Stuck(format!(
            "iroh: received {got} of {bytes} bytes"
        )));
    }
    Ok(IrohTransfer {
        transfer: Transfer {
            bytes,
            wall: t1.saturating_duration_since(t0),
            sender_cpu,
            receiver_cpu,
            datagrams: Some(datagrams),
            send_calls: None,
            lost: Some(lost),
        },
        process_cpu,
    })
}

/// CPU seconds per GiB carried.
fn per_gib(t: &Transfer, cpu: Option<Duration>) -> Option<f64> {
    cpu.map(|cpu| cpu.as_secs_f64() / (t.bytes as f64 / (1u64 << 30) as f64))
}

/// Runs `rounds` alternating transfers of each of `stacks` and reports the medians.
pub fn run(
    stacks: &[Stack],
    bytes: u64,
    rounds: usize,
    progress: &mut dyn FnMut(String),
) -> Result<Report, CompareError> {
    let load_before = quicpeer_bench::compare::load_note("before");
    let rounds = rounds.max(1);
    let mut results: Vec<Vec<Transfer>> = vec![Vec::new(); stacks.len()];
    let mut iroh_process: Vec<(f64, f64)> = Vec::new();
    for round in 0..rounds {
        for (stack, results) in stacks.iter().zip(&mut results) {
            let t = match stack {
                Stack::Existing(stack) => tp::measure(*stack, bytes)?,
                Stack::Iroh => {
                    let iroh = measure_iroh(bytes)?;
                    let t = iroh.transfer;
                    if let (Some(p), Some(s), Some(r)) = (
                        per_gib(&t, iroh.process_cpu),
                        per_gib(&t, t.sender_cpu),
                        per_gib(&t, t.receiver_cpu),
                    ) {
                        iroh_process.push((p, s + r));
                    }
                    t
                }
            };
            progress(format!(
                "throughput round {}/{rounds} {}: {:.0} MiB/s, sender CPU {:.2} s/GiB, receiver \
                 CPU {:.2} s/GiB, {} packets lost",
                round + 1,
                stack.label(),
                t.mib_per_second(),
                per_gib(&t, t.sender_cpu).unwrap_or(f64::NAN),
                per_gib(&t, t.receiver_cpu).unwrap_or(f64::NAN),
                t.lost.map_or("?".into(), |l| l.to_string()),
            ));
            results.push(t);
        }
    }
    let mut report = Report::new(
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
            "MiB/s vs iroh",
            "sender CPU vs iroh",
            "receiver CPU vs iroh",
        ],
    );
    let summary: Vec<[Option<f64>; 5]> = results
        .iter()
        .map(|ts| {
            let rate: Vec<f64> = ts.iter().map(Transfer::mib_per_second).collect();
            let sender: Vec<f64> = ts.iter().filter_map(|t| per_gib(t, t.sender_cpu)).collect();
            let receiver: Vec<f64> = ts
                .iter()
                .filter_map(|t| per_gib(t, t.receiver_cpu))
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
    let of = |stack: Stack| {
        stacks
            .iter()
            .position(|s| *s == stack)
            .map_or([None; 5], |i| summary[i])
    };
    let quinn = of(Stack::Existing(tp::Stack::Quinn));
    let iroh = of(Stack::Iroh);
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
            ratio(s[0], iroh[0]),
            ratio(s[1], iroh[1]),
            ratio(s[2], iroh[2]),
        ]);
    }
    report.notes.push(format!(
        "median of {rounds} alternating transfers of {bytes} bytes ({:.2} GiB) per stack over \
         one stream on 127.0.0.1; sender and receiver on two threads, not pinned; CPU: each \
         side's thread (/proc/thread-self/schedstat)",
        bytes as f64 / (1u64 << 30) as f64
    ));
    report.notes.push(
        "quicpeer, quicpeer-tokio, quinn: quicpeer's TLS (libp2p certificates, rustls with \
         ring) and the same transport settings; iroh 1.4.1: its own TLS (raw public keys, \
         rustls with ring) and transport defaults, presets::Minimal, relays disabled, no \
         address lookup, one IPv4 socket on 127.0.0.1 (noq counts no send calls)"
            .into(),
    );
    if let (Some(process), Some(threads)) = (
        median(&iroh_process.iter().map(|p| p.0).collect::<Vec<_>>()),
        median(&iroh_process.iter().map(|p| p.1).collect::<Vec<_>>()),
    ) {
        report.notes.push(format!(
            "iroh: the process's CPU time over the sender's transfer {process:.2} s/GiB against \
             {threads:.2} s/GiB of its sender and receiver threads (medians): whatever exceeds \
             them ran on other threads"
        ));
    }
    report.notes.push(load_before);
    report
        .notes
        .push(quicpeer_bench::compare::load_note("after"));
    Ok(report)
}
