//! `quicpeer bench restart`: how long a node's peers stay cut off when it restarts, measured
//! against any libp2p QUIC node and a command that restarts it.
//!
//! Per trial: ping the target (`/ipfs/ping/1.0.0`) until `--steady` pings in a row are answered
//! on one connection, run the restart command (`sh -c`), and measure from the command's start
//! the first sign of the restart on that connection (its loss, with the cause: stateless reset,
//! planned restart, idle timeout, closed by the peer, a suspicion redial that won; or silence
//! reported as unresponsive) and the first ping answered on a fresh connection (pinged the moment
//! it is established, as an application resends at once). A restart
//! command that fails, or a node that is not back within `--trial-timeout-s`, ends the trial with
//! that reason and the run goes on. Progress goes to stderr: a progress bar on a terminal, a
//! line per trial otherwise; the table (or, with `--json`, one JSON object) to stdout at the
//! end.

use std::io::IsTerminal;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use quicpeer::driver::Exit;
use quicpeer::{Cause, ConnId, Event, HostEvent, PeerId};
use quicpeer_bench::plot::{self, Plot, YAxis};
use quicpeer_bench::{percentile, Cell, Report};

use crate::output::Output;
use crate::pinger::{PingOutcome, Pinger};
use crate::transport_args::TransportArgs;
use crate::{addr, identity_args::IdentityArgs, ping, UsageError};

/// Arguments of `quicpeer bench restart`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node: /ip4/<ip>/udp/<port>/quic-v1/p2p/<PeerId> (or /ip6/...).
    #[arg(long, value_name = "MULTIADDR")]
    target: String,
    /// The shell command that restarts the node (run with `sh -c`; it may return at once and
    /// leave the node starting in the background).
    #[arg(long, value_name = "COMMAND")]
    restart_cmd: String,
    /// Restarts to measure.
    #[arg(long, default_value_t = 10)]
    trials: u32,
    /// Milliseconds between pings.
    #[arg(long, default_value_t = 100)]
    ping_interval_ms: u64,
    /// Pings answered in a row on one connection before a restart.
    #[arg(long, default_value_t = 5)]
    steady: u32,
    /// A trial whose node is not back (a ping answered on a fresh connection) within this many
    /// seconds of the restart command ends as failed.
    #[arg(long, default_value_t = 30)]
    trial_timeout_s: u64,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    transport: TransportArgs,
}

/// How one trial ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Trial {
    /// The node came back.
    Recovered {
        /// From the restart command's start to the first sign of the restart, and which.
        detected: Option<(Duration, &'static str)>,
        /// From the restart command's start to the first ping answered on a fresh connection.
        recovered: Duration,
    },
    /// The trial could not be measured, and why.
    Failed(String),
}

/// Where the run stands.
enum Phase {
    /// Waiting for `steady` answered pings in a row on one connection, until a deadline (set
    /// at the first tick).
    Settling {
        conn: Option<ConnId>,
        answered: u32,
        until: Option<Instant>,
    },
    /// The restart command runs (or ran); waiting for the node to come back.
    Restarting {
        started: Instant,
        child: Option<Child>,
        old: ConnId,
        detected: Option<(Duration, &'static str)>,
    },
}

/// Runs the trials; with `plot_to`, draws the distributions of the first sign of the restart and
/// of the first ping on a fresh connection (cumulative curves) to that SVG file.
pub fn run(args: &Args, plot_to: Option<&Path>, out: Output) -> Result<ExitCode, UsageError> {
    let (target, peer) = addr::parse_dial(&args.target)?;
    if args.ping_interval_ms == 0 || args.trials == 0 || args.steady == 0 {
        return Err(UsageError(
            "--ping-interval-ms, --trials and --steady must be positive".into(),
        ));
    }
    let interval = Duration::from_millis(args.ping_interval_ms);
    let trial_timeout = Duration::from_secs(args.trial_timeout_s);
    let identity = args.identity.load_or_generate()?;
    let mut driver = ping::node(
        identity,
        &args.transport,
        target,
        interval.max(ping_floor()),
    )?;
    let now = driver.now();
    if let Err(e) = driver.machine_mut().manager_mut().dial(now, peer, [target]) {
        return Err(UsageError(format!("cannot dial: {e}")));
    }

    let mut pinger = Pinger::new(peer);
    let mut phase = settling(None, 0);
    let mut trials: Vec<Trial> = Vec::new();
    let mut next_tick = now;
    let progress = Progress::new(args.trials);
    while trials.len() < args.trials as usize {
        let exit = driver
            .run_until(Some(next_tick), |cx, event| {
                let fresh = matches!(
                    &event,
                    HostEvent::Manager(Event::Connected { peer: p, .. }) if *p == peer
                );
                if let Some(trial) = on_event(cx.now(), &event, peer, &mut pinger, &mut phase) {
                    progress.trial(trials.len() + 1, &trial);
                    trials.push(trial);
                }
                if fresh && matches!(phase, Phase::Restarting { .. }) {
                    // Ping a fresh connection at once, as an application resends at once.
                    let now = cx.now();
                    let _ = pinger.send(cx, now);
                }
            })
            .map_err(|e| UsageError(e.to_string()))?;
        if exit == Exit::Stopped {
            break;
        }
        let now = driver.now();
        if now < next_tick {
            continue;
        }
        next_tick = now + interval;
        if let Some(trial) = step(now, args, &mut phase, trial_timeout) {
            progress.trial(trials.len() + 1, &trial);
            trials.push(trial);
        }
        let host = driver.machine_mut();
        let manager = host.manager_mut();
        if manager.connection(&peer).is_none() && !manager.is_dialing(&peer) {
            // The manager does not redial a node that closed on us or a dial that gave up.
            let _ = manager.dial(now, peer, [target]);
        }
        if let Some(PingOutcome::Failed { seq: 0, reason }) = pinger.send(host, now) {
            eprintln!("ping could not start: {reason}");
        }
    }
    if let Phase::Restarting {
        child: Some(child), ..
    } = &mut phase
    {
        let _ = child.wait();
    }
    progress.finish();
    let _ = driver.shutdown(Duration::from_secs(1), |_, _| {});
    let report = table(&trials, args, peer);
    if let Some(path) = plot_to {
        if let Err(e) = plot::write_svg(&report, path) {
            eprintln!("no plot: {e}");
        }
    }
    if out.is_json() {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    let recovered = trials.iter().any(|t| matches!(t, Trial::Recovered { .. }));
    Ok(if recovered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The shortest ping timeout: a ping that takes longer is a failed one, and the next starts.
fn ping_floor() -> Duration {
    Duration::from_secs(1)
}

/// Moves the run on at a tick: starts a restart once steady, ends a trial that failed.
fn step(now: Instant, args: &Args, phase: &mut Phase, trial_timeout: Duration) -> Option<Trial> {
    match phase {
        Phase::Settling {
            conn,
            answered,
            until,
        } => {
            let until = *until.get_or_insert(now + trial_timeout);
            if let (Some(old), true) = (*conn, *answered >= args.steady) {
                let child = Command::new("sh")
                    .args(["-c", &args.restart_cmd])
                    .stdin(Stdio::null())
                    .spawn();
                let child = match child {
                    Ok(child) => child,
                    Err(e) => return Some(Trial::Failed(format!("cannot run the command: {e}"))),
                };
                *phase = Phase::Restarting {
                    started: now,
                    child: Some(child),
                    old,
                    detected: None,
                };
            } else if now >= until {
                *phase = settling(None, 0);
                return Some(Trial::Failed(format!(
                    "the node did not answer {} pings in a row within {trial_timeout:?}",
                    args.steady
                )));
            }
            None
        }
        Phase::Restarting { started, child, .. } => {
            if let Some(running) = child {
                match running.try_wait() {
                    Ok(Some(status)) if !status.success() => {
                        let failed = format!("the restart command failed ({status})");
                        *phase = settling(None, 0);
                        return Some(Trial::Failed(failed));
                    }
                    Ok(Some(_)) => *child = None,
                    Ok(None) => {}
                    Err(e) => {
                        *phase = settling(None, 0);
                        return Some(Trial::Failed(format!("the restart command: {e}")));
                    }
                }
            }
            if now.saturating_duration_since(*started) >= trial_timeout {
                *phase = settling(None, 0);
                return Some(Trial::Failed(format!(
                    "the node was not back within {trial_timeout:?}"
                )));
            }
            None
        }
    }
}

fn settling(conn: Option<ConnId>, answered: u32) -> Phase {
    Phase::Settling {
        conn,
        answered,
        until: None,
    }
}

/// Feeds one event of the host to the pinger and the trial; returns the trial it ended.
fn on_event(
    now: Instant,
    event: &HostEvent,
    peer: PeerId,
    pinger: &mut Pinger,
    phase: &mut Phase,
) -> Option<Trial> {
    let answered_on = match event {
        HostEvent::PingResult { peer: p, conn, .. } if *p == peer => Some(*conn),
        _ => None,
    };
    let outcome = pinger.on_event(now, event);
    match phase {
        Phase::Settling { conn, answered, .. } => match (answered_on, outcome) {
            (Some(on), Some(PingOutcome::Ok { .. })) => {
                if *conn == Some(on) {
                    *answered += 1;
                } else {
                    (*conn, *answered) = (Some(on), 1);
                }
            }
            (_, Some(PingOutcome::Failed { .. })) => *answered = 0,
            _ => {}
        },
        Phase::Restarting {
            started,
            child,
            old,
            detected,
        } => {
            let since = now.saturating_duration_since(*started);
            if detected.is_none() {
                *detected = match event {
                    HostEvent::Manager(Event::ConnectionLost { conn, cause, .. })
                        if conn == old =>
                    {
                        Some((since, cause_label(cause)))
                    }
                    HostEvent::Manager(Event::Unresponsive { conn, .. }) if conn == old => {
                        Some((since, "unresponsive (suspicion)"))
                    }
                    _ => None,
                };
            }
            if let (Some(on), Some(PingOutcome::Ok { .. })) = (answered_on, outcome) {
                if on != *old {
                    if let Some(mut running) = child.take() {
                        // The node is back; the command may still be winding down.
                        let _ = running.wait();
                    }
                    let trial = Trial::Recovered {
                        detected: *detected,
                        recovered: since,
                    };
                    *phase = settling(Some(on), 1);
                    return Some(trial);
                }
            }
        }
    }
    None
}

fn cause_label(cause: &Cause) -> &'static str {
    match cause {
        Cause::PeerRestarted => "peer restarted (stateless reset or new certificate key)",
        Cause::PeerRestarting { .. } => "planned restart announced",
        Cause::IdleTimeout => "idle timeout",
        Cause::ClosedByPeer { .. } => "closed by peer",
        Cause::Superseded { .. } => "suspicion redial won",
        _ => "other",
    }
}

/// What a finished trial prints: a line, and the bar's short message.
fn trial_line(n: usize, of: u32, trial: &Trial) -> (String, String) {
    match trial {
        Trial::Recovered {
            detected,
            recovered,
        } => {
            let detected = match detected {
                Some((at, how)) => format!("detected after {} ms ({how})", ms(*at)),
                None => "no sign before the fresh connection".into(),
            };
            (
                format!(
                    "trial {n}/{of}: {detected}, first ping on a fresh connection after {} ms",
                    ms(*recovered)
                ),
                format!("last: fresh ping after {} ms", ms(*recovered)),
            )
        }
        Trial::Failed(why) => (
            format!("trial {n}/{of}: failed: {why}"),
            format!("last: failed ({why})"),
        ),
    }
}

/// Progress on stderr while the trials run: a bar on a terminal (with each trial's line
/// printed above it), a plain line per trial otherwise (a log, a pipe, CI).
struct Progress {
    bar: Option<ProgressBar>,
    of: u32,
}

impl Progress {
    fn new(trials: u32) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(u64::from(trials));
            if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} trials  {msg}") {
                bar.set_style(style);
            }
            bar.set_message("pinging until steady");
            bar
        });
        Self { bar, of: trials }
    }

    /// Reports trial number `n` (from 1).
    fn trial(&self, n: usize, trial: &Trial) {
        let (line, short) = trial_line(n, self.of, trial);
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
                bar.set_message(short);
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// The table of percentiles, the causes, and the failures.
fn table(trials: &[Trial], args: &Args, peer: PeerId) -> Report {
    let mut report = Report::new(
        "restart",
        &[
            "measure",
            "p50 (ms)",
            "p90 (ms)",
            "max (ms)",
            "mean (ms)",
            "trials",
        ],
    );
    let mut detected: Vec<Duration> = Vec::new();
    let mut recovered: Vec<Duration> = Vec::new();
    let mut causes: Vec<&'static str> = Vec::new();
    for trial in trials {
        if let Trial::Recovered {
            detected: d,
            recovered: r,
        } = trial
        {
            recovered.push(*r);
            if let Some((at, how)) = d {
                detected.push(*at);
                causes.push(how);
            }
        }
    }
    let mut curves = Plot::new(
        format!("{} restarted {} times", args.target, trials.len()),
        "ms after the restart command started",
        YAxis::Fraction,
    );
    curves.series("first sign of the restart", detected.clone());
    curves.series("first ping on a fresh connection", recovered.clone());
    report.plot = Some(curves);
    for (label, values) in [
        ("first sign of the restart", &mut detected),
        ("first ping on a fresh connection", &mut recovered),
    ] {
        values.sort();
        let pct = |p| percentile(values, p).map_or(Cell::Missing, Cell::millis);
        let mean = match values.len() {
            0 => Cell::Missing,
            n => Cell::millis(values.iter().sum::<Duration>() / n as u32),
        };
        report.rows.push(vec![
            Cell::text(label),
            pct(50),
            pct(90),
            pct(100),
            mean,
            Cell::num(values.len() as f64, 0),
        ]);
    }
    causes.sort();
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for cause in causes {
        match counted.last_mut() {
            Some((c, n)) if *c == cause => *n += 1,
            _ => counted.push((cause, 1)),
        }
    }
    for (cause, n) in counted {
        report.notes.push(format!("detected by {cause}: {n}"));
    }
    for (i, trial) in trials.iter().enumerate() {
        if let Trial::Failed(why) = trial {
            report.notes.push(format!("trial {}: failed: {why}", i + 1));
        }
    }
    report.notes.push(format!(
        "target {peer} ({}); restart command: {}; a ping every {} ms; times from the command's start",
        args.target, args.restart_cmd, args.ping_interval_ms
    ));
    report
}
