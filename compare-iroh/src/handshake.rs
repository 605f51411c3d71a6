//! Completed iroh handshakes per second over loopback on one core, beside quicpeer-bench's
//! handshake stacks measured in the same rounds.
//!
//! Both iroh endpoints (listener and dialer) run on one tokio current-thread runtime on one
//! thread pinned to one CPU, so the figure is what one core does with both ends of every
//! handshake (the other stacks put their two ends on two threads pinned to the same CPU: the
//! same core). The dialer connects, and as soon as the connection is established closes it and
//! connects again, `count` times in a row after a warm-up of `count / 10`; the listener accepts
//! each connection and keeps it until the dialer's close arrives.
//!
//! iroh may run work on threads of its own, which a thread's CPU clock would miss, so the iroh
//! rows take the process's CPU time (`getrusage`); the round's own thread CPU time and the
//! process's thread count are given beside it, so the report shows whether any work ran
//! elsewhere. Two iroh rows: iroh's defaults (the dialer keeps TLS session tickets, so a
//! repeated connection to the same endpoint may resume), and no session tickets (every
//! handshake a full one, as the other stacks').

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quicpeer_bench::compare::handshake::{self as hs, Round};
use quicpeer_bench::compare::{median, pin_to_cpu, thread_cpu_time, Cell, CompareError, Report};

use crate::{bind, current_thread, direct_addr, process_cpu_time, thread_count, Setup, ALPN};
use crate::{DIALER_SEED, LISTENER_SEED};

/// Bound on one round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

/// A stack of the handshake table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// One of quicpeer-bench's loopback stacks (its thread CPU clock).
    Existing(hs::Stack),
    /// iroh, with iroh's defaults (TLS session tickets kept).
    Iroh,
    /// iroh with no TLS session tickets kept: every handshake a full one.
    IrohNoTickets,
}

impl Stack {
    /// Every stack, in the order of the report.
    pub const ALL: [Stack; 6] = [
        Stack::Existing(hs::Stack::Quicpeer),
        Stack::Existing(hs::Stack::QuicpeerTokio),
        Stack::Existing(hs::Stack::Libp2p),
        Stack::Existing(hs::Stack::Quinn),
        Stack::Iroh,
        Stack::IrohNoTickets,
    ];

    /// A short name.
    pub fn label(self) -> &'static str {
        match self {
            Stack::Existing(stack) => stack.label(),
            Stack::Iroh => "iroh 1.4.1 (tokio, one thread)",
            Stack::IrohNoTickets => "iroh 1.4.1, no session tickets",
        }
    }

    /// Which CPU clock its figure comes from.
    pub fn clock(self) -> &'static str {
        match self {
            Stack::Existing(_) => "both threads",
            Stack::Iroh | Stack::IrohNoTickets => "process",
        }
    }
}

/// What an iroh round measured besides its [`Round`] (whose CPU time is the process's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IrohRound {
    /// Handshakes, wall time, process CPU time, pinning.
    pub round: Round,
    /// The round thread's own CPU time over the same handshakes.
    pub thread_cpu: Option<Duration>,
    /// Threads the process gained while the endpoints were up (beyond the round's own).
    pub extra_threads: Option<usize>,
}

/// Runs `count` measured iroh handshakes (after `count / 10` of warm-up) with both endpoints
/// on one thread pinned to `cpu`; `tickets`: the dialer's TLS session tickets per remote
/// (`None`: iroh's default).
pub fn measure_iroh(
    count: u32,
    cpu: usize,
    tickets: Option<usize>,
) -> Result<IrohRound, CompareError> {
    let warmup = (count / 10).max(1);
    let thread = crate::spawn("hs-iroh", move || {
        let pinned = pin_to_cpu(cpu);
        let threads_before = thread_count();
        let runtime = current_thread()?;
        runtime.block_on(iroh_round(warmup, count, tickets, pinned, threads_before))
    })?;
    crate::join(thread, "iroh handshake")?
}

async fn iroh_round(
    warmup: u32,
    count: u32,
    tickets: Option<usize>,
    pinned: bool,
    threads_before: Option<usize>,
) -> Result<IrohRound, CompareError> {
    let listener = bind(Setup::listener(LISTENER_SEED, 0)).await?;
    let addr = direct_addr(&listener)?;
    let dialer = bind(Setup {
        tls_tickets: tickets,
        ..Setup::dialer(DIALER_SEED)
    })
    .await?;
    let accepted = Arc::new(AtomicU32::new(0));
    let acceptor = tokio::spawn({
        let (listener, accepted) = (listener.clone(), accepted.clone());
        async move {
            while let Some(incoming) = listener.accept().await {
                let accepted = accepted.clone();
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        connection.closed().await;
                    }
                });
            }
        }
    });
    // Counted on this thread before the runtime and the endpoints: whatever is new is theirs.
    let extra_threads = thread_count()
        .zip(threads_before)
        .map(|(now, before)| now.saturating_sub(before));
    let total = warmup + count;
    let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
    let mut start: Option<(Instant, Option<Duration>, Option<Duration>)> = None;
    let mut failure = None;
    for done in 1..=total {
        let connected = tokio::time::timeout_at(deadline, dialer.connect(addr.clone(), ALPN)).await;
        let connection = match connected {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                failure = Some(CompareError::Stuck(format!("iroh handshake failed: {e}")));
                break;
            }
            Err(_) => {
                failure = Some(CompareError::Stuck(format!(
                    "only {done} of {total} iroh handshakes in {ROUND_TIMEOUT:?}"
                )));
                break;
            }
        };
        if done == warmup {
            start = Some((Instant::now(), process_cpu_time(), thread_cpu_time()));
        }
        connection.close(0u32.into(), b"");
    }
    let (t1, p1, c1) = (Instant::now(), process_cpu_time(), thread_cpu_time());
    // Let the listener see the last handshakes, then close both ends.
    let settle = Instant::now() + Duration::from_secs(10);
    while failure.is_none() && accepted.load(Ordering::Relaxed) < total && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), dialer.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), listener.close()).await;
    acceptor.abort();
    if let Some(failure) = failure {
        return Err(failure);
    }
    let seen = accepted.load(Ordering::Relaxed);
    if seen < total {
        return Err(CompareError::Stuck(format!(
            "the iroh listener completed {seen} of {total} handshakes"
        )));
    }
    let (t0, p0, c0) = start.ok_or_else(|| CompareError::Stuck("no warm-up".into()))?;
    let since = |a: Option<Duration>, b: Option<Duration>| a.zip(b).map(|(a, b)| b - a);
    Ok(IrohRound {
        round: Round {
            count,
            wall: t1 - t0,
            cpu: since(p0, p1),
            pinned,
        },
        thread_cpu: since(c0, c1),
        extra_threads,
    })
}

/// Runs `rounds` rounds alternating every stack of `stacks` and reports the medians.
pub fn run(
    stacks: &[Stack],
    count: u32,
    rounds: usize,
    cpu: usize,
    progress: &mut dyn FnMut(String),
) -> Result<Report, CompareError> {
    let load_before = quicpeer_bench::compare::load_note("before");
    let rounds = rounds.max(1);
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); stacks.len()];
    let mut iroh_threads: Vec<(Duration, Duration, usize)> = Vec::new();
    for round in 0..rounds {
        for (stack, results) in stacks.iter().zip(&mut results) {
            let measured = match stack {
                Stack::Existing(stack) => hs::measure(*stack, count, cpu)?,
                Stack::Iroh | Stack::IrohNoTickets => {
                    let tickets = (*stack == Stack::IrohNoTickets).then_some(0);
                    let iroh = measure_iroh(count, cpu, tickets)?;
                    if let (Some(process), Some(thread)) = (iroh.round.cpu, iroh.thread_cpu) {
                        iroh_threads.push((process, thread, iroh.extra_threads.unwrap_or(0)));
                    }
                    iroh.round
                }
            };
            progress(format!(
                "handshake round {}/{rounds} {}: {:.0}/s wall, {}/s CPU ({})",
                round + 1,
                stack.label(),
                measured.per_second(),
                measured
                    .per_cpu_second()
                    .map_or("?".into(), |r| format!("{r:.0}")),
                stack.clock(),
            ));
            results.push(measured);
        }
    }
    let summary: Vec<(f64, Option<f64>, bool)> = results
        .iter()
        .map(|rounds| {
            let wall: Vec<f64> = rounds.iter().map(Round::per_second).collect();
            let cpu: Vec<f64> = rounds.iter().filter_map(Round::per_cpu_second).collect();
            (
                median(&wall).unwrap_or(0.0),
                median(&cpu),
                rounds.iter().all(|r| r.pinned),
            )
        })
        .collect();
    let rate = |(wall, cpu, _): &(f64, Option<f64>, bool)| cpu.unwrap_or(*wall);
    let base = stacks
        .iter()
        .position(|s| *s == Stack::Existing(hs::Stack::Quicpeer))
        .map(|i| rate(&summary[i]));
    let mut report = Report::new(
        "handshake",
        &[
            "stack (loopback, one core)",
            "handshakes/s (wall)",
            "handshakes/s (CPU)",
            "µs/handshake (CPU, both ends)",
            "vs quicpeer (CPU)",
            "CPU clock",
        ],
    );
    for (stack, measured) in stacks.iter().zip(&summary) {
        report.rows.push(vec![
            Cell::text(stack.label()),
            Cell::num(measured.0, 0),
            measured.1.map_or(Cell::Missing, |c| Cell::num(c, 0)),
            Cell::num(1e6 / rate(measured), 1),
            base.map_or(Cell::Missing, |b| Cell::num(rate(measured) / b, 2)),
            Cell::text(stack.clock()),
        ]);
    }
    let pinned = summary.iter().all(|s| s.2);
    report.notes.push(format!(
        "median of {rounds} alternating rounds of {count} handshakes per stack (after {} \
         warm-up handshakes); a handshake: connect, connection established on the dialer, \
         close, connect again; {}",
        (count / 10).max(1),
        if pinned {
            format!("every stack pinned to CPU {cpu}")
        } else {
            "(pinning failed: not one core)".into()
        }
    ));
    report.notes.push(
        "quicpeer-bench stacks: dialer and listener on two threads pinned to the same CPU, CPU \
         time of both threads (/proc/thread-self/schedstat); iroh: both endpoints on one tokio \
         current-thread runtime on one pinned thread, CPU time of the whole process \
         (getrusage(RUSAGE_SELF), user + system)"
            .into(),
    );
    if !iroh_threads.is_empty() {
        let process: Duration = iroh_threads.iter().map(|t| t.0).sum();
        let thread: Duration = iroh_threads.iter().map(|t| t.1).sum();
        let extra = iroh_threads.iter().map(|t| t.2).max().unwrap_or(0);
        report.notes.push(format!(
            "iroh rounds: process CPU {:.3} s against the round thread's own {:.3} s; {extra} \
             thread(s) started by the round's runtime and endpoints (idle if the two CPU times agree)",
            process.as_secs_f64(),
            thread.as_secs_f64()
        ));
    }
    report.notes.push(
        "iroh 1.4.1: presets::Minimal (rustls with ring), relays disabled, no address lookup, \
         one IPv4 socket on 127.0.0.1, iroh's transport defaults, the dialer given the \
         listener's id and socket address; its own TLS (raw public keys), not libp2p's"
            .into(),
    );
    report.notes.push(load_before);
    report
        .notes
        .push(quicpeer_bench::compare::load_note("after"));
    Ok(report)
}
