//! `quicpeer ping`: dial a peer and ping it at an interval, across its restarts.
//!
//! Every ping's RTT and every connection event is printed. When the peer restarts, the
//! manager's `ConnectionLost { cause: PeerRestarted }` and its reconnect show up as
//! `connection_lost`, `reconnecting` and `reconnected` (with the time since the loss). A peer
//! that restarts and dials us from its peer book shows up as a `connected` (or `reconnected`)
//! line with `direction` `inbound` and `replaced` naming the old connection.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use quicpeer::driver::{Context, Driver, Exit};
use quicpeer::{Event, Host, HostConfig, HostEvent, Identity, Manager, PeerId};

use crate::identity_args::IdentityArgs;
use crate::metrics_server::MetricsArgs;
use crate::output::{ms, Json, Output};
use crate::peer_book_args::{self, BookKeeper, PeerBookArgs};
use crate::pinger::{PingOutcome, Pinger};
use crate::transport_args::TransportArgs;
use crate::{addr, report, signals, UsageError};

/// After the peer closed the connection itself (or a dial failed for good), wait this long
/// before dialing again: a node shutting down is not kept busy by our redials.
const REDIAL_AFTER_CLOSE: Duration = Duration::from_secs(1);

/// Arguments of `quicpeer ping`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The peer: /ip4/<ip>/udp/<port>/quic-v1/p2p/<PeerId> (or /ip6/...).
    #[arg(value_name = "MULTIADDR")]
    target: String,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Pings to send before exiting; 0 pings forever.
    #[arg(long, value_name = "N", default_value_t = 0)]
    count: u64,
    /// Milliseconds between pings.
    #[arg(long, value_name = "I", default_value_t = 1000)]
    interval_ms: u64,
    /// A ping without an echo after this many milliseconds fails.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    timeout_ms: u64,
    /// Stop after this many seconds, however many pings went out (as ping(8)'s -w); the exit
    /// status is non-zero if none was answered.
    #[arg(long, value_name = "S")]
    deadline_s: Option<u64>,
    #[command(flatten)]
    peer_book: PeerBookArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    transport: TransportArgs,
}

pub fn run(args: &Args, out: Output) -> Result<ExitCode, UsageError> {
    let (target, peer) = addr::parse_dial(&args.target)?;
    if args.interval_ms == 0 || args.timeout_ms == 0 {
        return Err(UsageError(
            "--interval-ms and --timeout-ms must be positive".into(),
        ));
    }
    let interval = Duration::from_millis(args.interval_ms);
    let identity = args.identity.load_or_generate()?;
    if identity.peer_id() == peer {
        return Err(UsageError("cannot ping our own PeerId".into()));
    }
    let local_id = identity.peer_id();
    let (mut book, records) = args.peer_book.load(local_id, &out);
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut driver = node(identity, &args.transport, target, timeout)?;
    signals::stop_on_termination(driver.handle())
        .map_err(|e| UsageError(format!("cannot install signal handlers: {e}")))?;
    out.emit(
        Instant::now(),
        Json::event("pinging")
            .str("peer", &peer.to_string())
            .str("addr", &target.to_string())
            .str("local_peer", &local_id.to_string()),
        || format!("PING {peer} at {target} from {local_id}"),
    );

    args.metrics.start(driver.handle(), &out)?;
    let mut app = PingApp::new(out, peer, args.count);
    let now = driver.now();
    let manager = driver.machine_mut().manager_mut();
    if let Err(e) = manager.dial(now, peer, [target]) {
        return Err(UsageError(format!("cannot dial: {e}")));
    }
    peer_book_args::dial(manager, now, book.as_ref(), records, &out);
    let mut next_tick = now + interval;
    let stop_at = args.deadline_s.map(|s| now + Duration::from_secs(s));
    loop {
        let due = book.as_ref().and_then(|b| b.due());
        let deadline = due.map_or(next_tick, |due| due.min(next_tick));
        let deadline = stop_at.map_or(deadline, |stop| stop.min(deadline));
        let exit = driver
            .run_until(Some(deadline), |cx, event| {
                let changes = BookKeeper::changes(&event);
                app.on_event(cx, event);
                if let Some(book) = book.as_mut().filter(|_| changes) {
                    book.changed(cx.now(), cx.manager());
                }
            })
            .map_err(|e| UsageError(e.to_string()))?;
        if exit == Exit::Stopped || app.done() {
            break;
        }
        let now = driver.now();
        if stop_at.is_some_and(|stop| now >= stop) {
            break;
        }
        if let Some(book) = &mut book {
            book.save_if_due(now, driver.machine().manager());
        }
        if now < next_tick {
            continue;
        }
        let host = driver.machine_mut();
        let m = host.manager_mut();
        if m.connection(&peer).is_none()
            && !m.is_dialing(&peer)
            && app
                .quiet_since
                .is_none_or(|t| now >= t + REDIAL_AFTER_CLOSE)
        {
            // The manager does not redial (a close by the peer, a dial that gave up): keep
            // trying, as ping does.
            app.quiet_since = None;
            let _ = m.dial(now, peer, [target]);
        }
        if let Some(outcome) = app.pinger.send(host, now) {
            app.print(now, outcome);
        }
        if app.done() {
            break;
        }
        next_tick = (next_tick + interval).max(now);
    }
    app.summary();
    let _ = driver.shutdown(Duration::from_secs(1), |cx, event| {
        report::host_event(&out, cx.now(), &event);
    });
    if let Some(book) = &mut book {
        let now = driver.now();
        book.save(now, driver.machine().manager());
    }
    Ok(if app.ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A driver with a socket of the target's family on an ephemeral port.
pub(crate) fn node(
    identity: Identity,
    transport: &TransportArgs,
    target: std::net::SocketAddr,
    ping_timeout: Duration,
) -> Result<Driver<Host>, UsageError> {
    let manager = Manager::new(
        Instant::now(),
        SystemTime::now(),
        identity,
        transport.config()?,
        rand::random(),
    )
    .map_err(|e| UsageError(format!("cannot start the node: {e}")))?;
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let local = local
        .parse()
        .map_err(|_| UsageError("bad local address".into()))?;
    let mut config = HostConfig::default();
    config.ping_timeout = ping_timeout;
    let host = Host::new(Instant::now(), manager, config, rand::random());
    Driver::bind(host, &[local]).map_err(|e| UsageError(e.to_string()))
}

/// The pinger plus what it takes to print a ping session.
pub struct PingApp {
    out: Output,
    peer: PeerId,
    pub pinger: Pinger,
    /// When the connection to the peer was lost (or found unresponsive), until a new one is up.
    lost_at: Option<Instant>,
    /// When the last connection or dial ended in a way the manager does not redial.
    quiet_since: Option<Instant>,
    count: u64,
    results: u64,
    pub ok: u64,
    rtts: Vec<Duration>,
}

impl PingApp {
    fn new(out: Output, peer: PeerId, count: u64) -> Self {
        Self {
            out,
            peer,
            pinger: Pinger::new(peer),
            lost_at: None,
            quiet_since: None,
            count,
            results: 0,
            ok: 0,
            rtts: Vec::new(),
        }
    }

    fn done(&self) -> bool {
        self.count > 0 && self.results >= self.count
    }

    fn on_event(&mut self, cx: &mut Context<'_, Host>, event: HostEvent) {
        let now = cx.now();
        if let Some(outcome) = self.pinger.on_event(now, &event) {
            self.print(now, outcome);
        }
        let HostEvent::Manager(event) = event else {
            return;
        };
        match &event {
            Event::Connected {
                peer,
                conn,
                addr,
                direction,
                replaced,
                ..
            } if *peer == self.peer => {
                self.quiet_since = None;
                if let Some(lost) = self.lost_at.take() {
                    let after = now.saturating_duration_since(lost);
                    let json = Json::event("reconnected")
                        .str("peer", &peer.to_string())
                        .str("conn", &conn.to_string())
                        .str("addr", &addr.to_string())
                        .num("reconnect_ms", ms(after));
                    let json = match replaced {
                        Some(old) => json.str("replaced", &old.to_string()),
                        None => json,
                    };
                    let json = json.str("direction", report::direction_name(*direction));
                    self.out.emit(now, json, || {
                        format!(
                            "RECONNECTED {peer} at {addr} ({conn}) {:.3} ms after the loss",
                            ms(after)
                        )
                    });
                } else {
                    report::connection_event(&self.out, now, &event);
                }
                // Ping at once on a new connection rather than at the next tick.
                self.ping_now(cx, now);
            }
            Event::ConnectionLost { peer, .. } if *peer == self.peer => {
                let m = cx.manager();
                if m.connection(peer).is_none() {
                    self.lost_at.get_or_insert(now);
                    if !m.is_dialing(peer) {
                        self.quiet_since = Some(now);
                    }
                }
                report::connection_event(&self.out, now, &event);
                // A ping lost with the old connection is resent at once on a surviving one.
                self.ping_now(cx, now);
            }
            Event::Unresponsive { peer, .. } if *peer == self.peer => {
                self.lost_at.get_or_insert(now);
                report::connection_event(&self.out, now, &event);
            }
            Event::DialFailed {
                peer,
                retry_at,
                errors,
            } if *peer == self.peer => {
                report::connection_event(&self.out, now, &event);
                if retry_at.is_none() {
                    self.quiet_since = Some(now);
                    if self.count > 0 {
                        // As ping(8): with a count, a ping that cannot go out for want of a
                        // connection is a failed one, so an unreachable peer ends the run.
                        let causes: Vec<String> = (errors.iter())
                            .map(|(addr, cause)| format!("{addr}: {cause}"))
                            .collect();
                        let reason = format!("dial failed ({})", causes.join(", "));
                        self.print(now, PingOutcome::Failed { seq: 0, reason });
                    }
                }
            }
            _ => {
                report::connection_event(&self.out, now, &event);
            }
        }
        if self.done() {
            cx.stop();
        }
    }

    /// Pings at once if the peer is connected and no ping is outstanding.
    fn ping_now(&mut self, cx: &mut Context<'_, Host>, now: Instant) {
        if let Some(outcome) = self.pinger.send(cx.machine(), now) {
            self.print(now, outcome);
        }
    }

    fn print(&mut self, at: Instant, outcome: PingOutcome) {
        self.results += 1;
        match outcome {
            PingOutcome::Ok { seq, rtt } => {
                self.ok += 1;
                self.rtts.push(rtt);
                let json = Json::event("ping").int("seq", seq).num("rtt_ms", ms(rtt));
                self.out
                    .emit(at, json, || format!("PING seq={seq} rtt={:.3} ms", ms(rtt)));
            }
            PingOutcome::Failed { seq, reason } => self.print_failure(at, seq, &reason),
        }
    }

    fn print_failure(&self, at: Instant, seq: u64, reason: &str) {
        let json = Json::event("ping_failed")
            .int("seq", seq)
            .str("reason", reason);
        self.out
            .emit(at, json, || format!("PING seq={seq} failed: {reason}"));
    }

    fn summary(&self) {
        let failed = self.results - self.ok;
        let mut json = Json::event("summary")
            .int("pings", self.results)
            .int("ok", self.ok)
            .int("failed", failed);
        let mut human = format!("{} pings: {} ok, {failed} failed", self.results, self.ok);
        if let (Some(min), Some(max)) = (self.rtts.iter().min(), self.rtts.iter().max()) {
            let avg = self.rtts.iter().sum::<Duration>() / self.rtts.len() as u32;
            json = json
                .num("rtt_min_ms", ms(*min))
                .num("rtt_avg_ms", ms(avg))
                .num("rtt_max_ms", ms(*max));
            human.push_str(&format!(
                "; rtt min/avg/max {:.3}/{:.3}/{:.3} ms",
                ms(*min),
                ms(avg),
                ms(*max)
            ));
        }
        self.out.emit(Instant::now(), json, || human);
    }
}
