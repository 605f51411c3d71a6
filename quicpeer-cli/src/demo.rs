//! `quicpeer demo`: the point of quicpeer in about ten seconds, measured on real UDP.
//!
//! In one process on loopback, node A listens and node B dials it and pings it every 50 ms. A
//! is killed (its state dropped, no close sent) and rebuilt with the same identity on the same
//! port. Run 1 uses quicpeer's restart keys, derived from the identity: the new A recognises
//! B's connection IDs and answers B's next packet with a stateless reset, so B sees
//! `PeerRestarted` one round trip after it next sends and reconnects at once. Run 2 uses
//! quinn's default (random per process) keys and, like a plain quinn or libp2p stack, no
//! suspicion redial: the new A drops B's packets silently and B only notices at its idle
//! timeout. Run 3 keeps quinn's keys but turns quicpeer's suspicion redial back on: the
//! fallback for peers that do not reset (today's libp2p nodes) races a fresh dial after a few
//! unanswered probe timeouts. Every figure printed is measured in this run.
//!
//! A runs on a thread of its own (a `Driver` started with `Driver::spawn`), B on the main
//! thread, each with its own sockets, exactly as two processes would. Both are [`Host`]s, so
//! the pings are libp2p's `/ipfs/ping/1.0.0`, negotiated with multistream-select.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use quicpeer::driver::{Context, Driver, DriverThread};
use quicpeer::{
    Config, ConnId, Event, Host, HostConfig, HostEvent, Identity, KeyMode, Manager, PeerId,
};

use crate::output::{ms, Json, Output};
use crate::pinger::{PingOutcome, Pinger};
use crate::report::cause_name;
use crate::{addr, UsageError};

/// Successful pings before A is killed.
const WARMUP_PINGS: u64 = 10;
/// A ping without an echo after this long fails.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Keep-alive of both nodes in both runs (B's pings keep the connection busy anyway).
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// How long B may take to recover beyond its idle timeout before the run is declared failed.
const RECOVERY_SLACK: Duration = Duration::from_secs(5);

/// Arguments of `quicpeer demo` (none are needed).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Idle timeout of both nodes, in milliseconds: how long run 2 waits. rust-libp2p uses
    /// 10 000, quic-go 30 000; the default keeps the demo short.
    #[arg(long, value_name = "MS", default_value_t = 3_000)]
    idle_timeout_ms: u64,
    /// Milliseconds between B's pings.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    interval_ms: u64,
}

/// What one run measured, from the moment A was killed.
#[derive(Debug, Default)]
struct Measured {
    /// A's rebuild: kill to listening again.
    down: Duration,
    /// Kill to B's first sign of trouble on the stale connection: its `ConnectionLost`, or
    /// `Unresponsive` (suspicion).
    detection: Option<Duration>,
    /// How B noticed: the loss's cause name, or `unresponsive`.
    how: String,
    /// Kill to B's first successful ping on a new connection.
    first_ping: Option<Duration>,
}

struct Run {
    name: &'static str,
    title: &'static str,
    label: &'static str,
    keys: KeyMode,
    suspicion: bool,
    tags_a: &'static [(&'static str, &'static str)],
    tags_b: &'static [(&'static str, &'static str)],
}

pub fn run(args: &Args, out: Output) -> Result<ExitCode, UsageError> {
    if args.idle_timeout_ms == 0 || args.interval_ms == 0 {
        return Err(UsageError(
            "--idle-timeout-ms and --interval-ms must be positive".into(),
        ));
    }
    let idle = Duration::from_millis(args.idle_timeout_ms);
    let interval = Duration::from_millis(args.interval_ms);
    out.human(|| {
        format!(
            "quicpeer demo: node A listens on loopback, node B dials it and pings every {} ms.\n\
             A is killed (state gone, no close sent) and restarted with the same identity on the\n\
             same port. How long until B notices, and until B's pings get through again?\n\
             All runs: keep-alive {} ms, idle timeout {} ms (rust-libp2p uses 10 s, quic-go 30 s).",
            interval.as_millis(),
            KEEP_ALIVE.as_millis(),
            idle.as_millis()
        )
    });
    let runs = [
        Run {
            name: "derived_keys",
            title: "restart keys derived from the identity (quicpeer's default)",
            label: "derived keys (quicpeer)",
            keys: KeyMode::DerivedFromIdentity,
            suspicion: true,
            tags_a: &[("run", "derived_keys"), ("node", "A")],
            tags_b: &[("run", "derived_keys"), ("node", "B")],
        },
        Run {
            name: "default_keys",
            title: "quinn's default keys, no suspicion redial (a plain quinn/libp2p stack)",
            label: "quinn's default keys",
            keys: KeyMode::RandomPerProcess,
            suspicion: false,
            tags_a: &[("run", "default_keys"), ("node", "A")],
            tags_b: &[("run", "default_keys"), ("node", "B")],
        },
        Run {
            name: "default_keys_suspicion",
            title: "quinn's default keys, with quicpeer's suspicion redial",
            label: "  + suspicion redial",
            keys: KeyMode::RandomPerProcess,
            suspicion: true,
            tags_a: &[("run", "default_keys_suspicion"), ("node", "A")],
            tags_b: &[("run", "default_keys_suspicion"), ("node", "B")],
        },
    ];
    let mut results = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        out.human(|| format!("\nRun {}/{}: {}", index + 1, runs.len(), run.title));
        let mut config = Config::default();
        config.keys = run.keys.clone();
        config.idle_timeout = idle;
        config.keep_alive = Some(KEEP_ALIVE);
        if !run.suspicion {
            config.suspicion_ptos = None;
        }
        out.json(
            Instant::now(),
            Json::event("run")
                .str("run", run.name)
                .str(
                    "keys",
                    if run.keys == KeyMode::RandomPerProcess {
                        "random_per_process"
                    } else {
                        "derived_from_identity"
                    },
                )
                .num("interval_ms", ms(interval))
                .num("keep_alive_ms", ms(KEEP_ALIVE))
                .num("idle_timeout_ms", ms(idle))
                .bool("suspicion_redial", run.suspicion),
        );
        let measured = scenario(run, config, interval, out).map_err(UsageError)?;
        let mut json = Json::event("result")
            .str("run", run.name)
            .num("restart_ms", ms(measured.down));
        json = match measured.detection {
            Some(d) => json.num("detection_ms", ms(d)),
            None => json.num("detection_ms", f64::NAN),
        };
        json = match measured.first_ping {
            Some(d) => json.num("first_ping_ms", ms(d)),
            None => json.num("first_ping_ms", f64::NAN),
        };
        json = json.str(
            "cause",
            if measured.how.is_empty() {
                "none"
            } else {
                &measured.how
            },
        );
        out.json(Instant::now(), json);
        results.push((run, measured));
    }
    table(&results, interval, idle, out);
    let recovered = results.iter().all(|(_, m)| m.first_ping.is_some());
    Ok(if recovered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn table(results: &[(&Run, Measured)], interval: Duration, idle: Duration, out: Output) {
    let cell = |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{:.1} ms", ms(d)));
    out.human(|| {
        let mut text = format!(
            "\nMeasured from the kill of A: {:<30}{}\n",
            "B notices the restart", "B's pings get through again"
        );
        for (run, m) in results {
            let label = run.label;
            let how = m.how.replace('_', " ");
            text.push_str(&format!(
                "  {label:<26}{:>10} ({how}){:pad$}{:>10}\n",
                cell(m.detection),
                "",
                cell(m.first_ping),
                pad = 18usize.saturating_sub(how.len()),
            ));
        }
        text.push_str(&format!(
            "\nWith derived keys the restarted A still recognises B's connection IDs and answers\n\
             the next packet B sends (B pings every {} ms) with a stateless reset: B knows A\n\
             restarted and reconnects at once. With quinn's default keys A drops those packets\n\
             silently, and a plain stack waits out its idle timeout ({} ms here; 10 s in\n\
             rust-libp2p, 30 s in quic-go). quicpeer's suspicion redial narrows that gap for peers\n\
             that do not reset, by guessing from a few unanswered probe timeouts.",
            interval.as_millis(),
            idle.as_millis()
        ));
        text
    });
    if let [(_, derived), (_, default), ..] = results {
        let mut json = Json::event("summary");
        if let (Some(a), Some(b)) = (derived.detection, default.detection) {
            json = json
                .num("derived_detection_ms", ms(a))
                .num("default_detection_ms", ms(b))
                .num(
                    "detection_speedup",
                    b.as_secs_f64() / a.as_secs_f64().max(1e-9),
                );
        }
        out.json(Instant::now(), json);
    }
}

/// One run: start A, connect B, warm up, kill and restart A, wait for B to recover.
fn scenario(
    run: &Run,
    config: Config,
    interval: Duration,
    out: Output,
) -> Result<Measured, String> {
    let start = Instant::now();
    let out_a = out.tagged(run.tags_a);
    let out_b = out.tagged(run.tags_b);
    let say =
        |out: Output, at: Instant, who: &str, kill: Option<Instant>, text: String, json: Json| {
            out.emit(at, json, || {
                let since = at.saturating_duration_since(start);
                let mark = kill
                    .filter(|k| at >= *k)
                    .map(|k| format!("  [kill +{:.1} ms]", ms(at - k)))
                    .unwrap_or_default();
                format!("  {:>9.1} ms  {who}  {text}{mark}", ms(since))
            });
        };

    // A: a fixed identity, so the rebuilt node is the same peer.
    let identity_a = Identity::from_ed25519_seed([0xa1; 32]);
    let peer_a = identity_a.peer_id();
    let a = Listener::spawn(
        identity_a.clone(),
        config.clone(),
        "127.0.0.1:0".parse().map_err(|_| "address")?,
    )?;
    let addr_a = a.addr;
    let full = addr::format(addr_a, Some(&peer_a));
    say(
        out_a,
        Instant::now(),
        "A",
        None,
        format!("listening on {full}"),
        Json::event("listen").str("addr", &full),
    );

    // B: on the main thread.
    let identity_b = Identity::from_ed25519_seed([0xb2; 32]);
    let manager = Manager::new(
        Instant::now(),
        SystemTime::now(),
        identity_b,
        config.clone(),
        rand::random(),
    )
    .map_err(|e| format!("cannot build node B: {e}"))?;
    let mut host_config = HostConfig::default();
    host_config.ping_timeout = PING_TIMEOUT;
    let host = Host::new(Instant::now(), manager, host_config, rand::random());
    let mut b = Driver::bind(host, &["127.0.0.1:0".parse().map_err(|_| "address")?])
        .map_err(|e| format!("node B: {e}"))?;
    let now = b.now();
    b.machine_mut()
        .manager_mut()
        .dial(now, peer_a, [addr_a])
        .map_err(|e| format!("B cannot dial A: {e}"))?;
    let mut app = DemoB {
        peer: peer_a,
        pinger: Pinger::new(peer_a),
        out: out_b,
        kill: None,
        lost_at: None,
        old_conn: None,
        warmup_rtts: Vec::new(),
        measured: Measured::default(),
        say: &say,
    };

    // Warm-up: connect and ping until WARMUP_PINGS went through.
    let mut next_tick = now + interval;
    let warmup_deadline = now + Duration::from_secs(5);
    while (app.warmup_rtts.len() as u64) < WARMUP_PINGS {
        if b.now() >= warmup_deadline {
            return Err("B could not connect to and ping A within 5 s".into());
        }
        tick(&mut b, &mut app, next_tick);
        next_tick = (next_tick + interval).max(b.now());
    }
    let mut rtts = app.warmup_rtts.clone();
    rtts.sort();
    let median = rtts.get(rtts.len() / 2).copied().unwrap_or_default();
    app.old_conn = b.machine().manager().connection(&peer_a);
    say(
        out_b,
        b.now(),
        "B",
        None,
        format!(
            "{} pings ok on {}, median RTT {:.3} ms",
            rtts.len(),
            app.old_conn.map_or("?".into(), |c| c.to_string()),
            ms(median)
        ),
        Json::event("warmed_up")
            .int("pings", rtts.len() as u64)
            .num("rtt_median_ms", ms(median)),
    );

    // Kill A half-way between two pings, and bring it back on the same port.
    let mid = next_tick.checked_sub(interval / 2).unwrap_or(next_tick);
    let _ = b.run_until(Some(mid), |cx, event| app.on_event(cx, event));
    let kill = Instant::now();
    a.kill();
    app.kill = Some(kill);
    say(
        out_a,
        kill,
        "A",
        Some(kill),
        "killed: state dropped, socket closed, no close sent".into(),
        Json::event("killed"),
    );
    let a = Listener::spawn(identity_a, config.clone(), addr_a)?;
    let up = Instant::now();
    app.measured.down = up - kill;
    say(
        out_a,
        up,
        "A",
        Some(kill),
        "restarted: same identity, same port".into(),
        Json::event("restarted").num("down_ms", ms(up - kill)),
    );

    // Until B's first successful ping after the restart.
    let deadline = kill + config.idle_timeout + RECOVERY_SLACK;
    while app.measured.first_ping.is_none() && b.now() < deadline {
        tick(&mut b, &mut app, next_tick.min(deadline));
        next_tick = (next_tick + interval).max(b.now());
    }
    if app.measured.first_ping.is_none() {
        say(
            out_b,
            b.now(),
            "B",
            Some(kill),
            "gave up waiting for a ping to get through".into(),
            Json::event("gave_up"),
        );
    }
    let measured = std::mem::take(&mut app.measured);
    // Tidy up: B closes its connection, then A goes.
    let _ = b.shutdown(Duration::from_millis(500), |_, _| {});
    a.kill();
    Ok(measured)
}

/// Runs B until `until`, then does a ping tick.
fn tick(b: &mut Driver<Host>, app: &mut DemoB<'_>, until: Instant) {
    let _ = b.run_until(Some(until), |cx, event| app.on_event(cx, event));
    let now = b.now();
    if let Some(outcome) = app.pinger.send(b.machine_mut(), now) {
        app.ping_outcome(now, outcome);
    }
}

type Say<'a> = dyn Fn(Output, Instant, &str, Option<Instant>, String, Json) + 'a;

/// Node B's side of the demo: pings, and notes when things happen.
struct DemoB<'a> {
    peer: PeerId,
    pinger: Pinger,
    out: Output,
    kill: Option<Instant>,
    lost_at: Option<Instant>,
    old_conn: Option<ConnId>,
    warmup_rtts: Vec<Duration>,
    measured: Measured,
    say: &'a Say<'a>,
}

impl DemoB<'_> {
    fn line(&self, at: Instant, text: String, json: Json) {
        (self.say)(self.out, at, "B", self.kill, text, json);
    }

    fn on_event(&mut self, cx: &mut Context<'_, Host>, event: HostEvent) {
        let now = cx.now();
        if let Some(outcome) = self.pinger.on_event(now, &event) {
            self.ping_outcome(now, outcome);
        }
        let HostEvent::Manager(event) = event else {
            return;
        };
        match &event {
            Event::Connected {
                peer,
                conn,
                addr,
                replaced,
                ..
            } if *peer == self.peer => {
                match self.lost_at.take() {
                    Some(lost) => {
                        let after = now.saturating_duration_since(lost);
                        self.line(
                            now,
                            format!("reconnected ({conn}), {:.1} ms after the loss", ms(after)),
                            Json::event("reconnected")
                                .str("conn", &conn.to_string())
                                .str("addr", &addr.to_string())
                                .num("reconnect_ms", ms(after)),
                        );
                    }
                    None => match replaced {
                        // Make-before-break: the new connection took over from a live one.
                        Some(old) => self.line(
                            now,
                            format!("reconnected ({conn}), replacing {old}"),
                            Json::event("reconnected")
                                .str("conn", &conn.to_string())
                                .str("addr", &addr.to_string())
                                .str("replaced", &old.to_string()),
                        ),
                        None => self.line(
                            now,
                            format!("connected to A ({conn})"),
                            Json::event("connected")
                                .str("conn", &conn.to_string())
                                .str("addr", &addr.to_string()),
                        ),
                    },
                }
                self.ping_now(cx, now);
            }
            Event::ConnectionLost {
                peer, conn, cause, ..
            } if *peer == self.peer => {
                if cx.manager().connection(peer).is_none() {
                    self.lost_at.get_or_insert(now);
                }
                if Some(*conn) == self.old_conn {
                    self.detected(now, cause_name(cause));
                }
                // A ping lost with the old connection is resent at once on the new one.
                self.ping_now(cx, now);
                self.line(
                    now,
                    format!("connection {conn} lost: {cause}"),
                    Json::event("connection_lost")
                        .str("conn", &conn.to_string())
                        .str("cause", cause_name(cause))
                        .str("detail", &cause.to_string()),
                );
            }
            Event::Unresponsive { conn, since, .. } => {
                if Some(*conn) == self.old_conn {
                    self.detected(now, "unresponsive");
                }
                let silent = now.saturating_duration_since(*since);
                self.line(
                    now,
                    format!(
                        "{conn} unresponsive for {:.1} ms: racing a fresh dial",
                        ms(silent)
                    ),
                    Json::event("unresponsive")
                        .str("conn", &conn.to_string())
                        .num("silent_ms", ms(silent)),
                );
            }
            Event::Reconnecting { attempt, lost, .. } => self.line(
                now,
                format!("reconnecting (attempt {attempt})"),
                Json::event("reconnecting")
                    .str("lost", &lost.to_string())
                    .int("attempt", u64::from(*attempt)),
            ),
            Event::DialFailed { errors, .. } => {
                let detail = errors
                    .iter()
                    .map(|(a, c)| format!("{a}: {c}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                self.line(
                    now,
                    format!("dial failed: {detail}"),
                    Json::event("dial_failed").str("detail", &detail),
                );
            }
            _ => {}
        }
    }

    /// Pings at once if the peer is connected and no ping is outstanding.
    fn ping_now(&mut self, cx: &mut Context<'_, Host>, now: Instant) {
        if let Some(outcome) = self.pinger.send(cx.machine(), now) {
            self.ping_outcome(now, outcome);
        }
    }

    /// B noticed trouble on the stale connection (the first sign counts).
    fn detected(&mut self, now: Instant, how: &str) {
        if let (Some(kill), None) = (self.kill, self.measured.detection) {
            self.measured.detection = Some(now.saturating_duration_since(kill));
            self.measured.how = how.to_owned();
        }
    }

    fn ping_outcome(&mut self, at: Instant, outcome: PingOutcome) {
        match outcome {
            PingOutcome::Ok { seq, rtt } => {
                let json = Json::event("ping").int("seq", seq).num("rtt_ms", ms(rtt));
                match self.kill {
                    None => {
                        self.warmup_rtts.push(rtt);
                        // Warm-up pings: JSON lists them, the human timeline sums them up.
                        if self.out.is_json() {
                            self.line(at, String::new(), json);
                        }
                    }
                    Some(kill) => {
                        if self.measured.first_ping.is_none() {
                            self.measured.first_ping = Some(at.saturating_duration_since(kill));
                        }
                        self.line(
                            at,
                            format!("ping {seq} ok, RTT {:.3} ms: A answers again", ms(rtt)),
                            json,
                        );
                    }
                }
            }
            PingOutcome::Failed { seq, reason } => {
                self.line(
                    at,
                    format!("ping {seq} failed: {reason}"),
                    Json::event("ping_failed")
                        .int("seq", seq)
                        .str("reason", &reason),
                );
            }
        }
    }
}

/// Node A on a thread of its own: a driver that answers pings until killed.
struct Listener {
    addr: SocketAddr,
    thread: DriverThread<Host>,
}

impl Listener {
    fn spawn(identity: Identity, config: Config, bind: SocketAddr) -> Result<Self, String> {
        let manager = Manager::new(
            Instant::now(),
            SystemTime::now(),
            identity,
            config,
            rand::random(),
        )
        .map_err(|e| format!("node A: {e}"))?;
        // The host answers /ipfs/ping/1.0.0 by itself.
        let host = Host::new(
            Instant::now(),
            manager,
            HostConfig::default(),
            rand::random(),
        );
        let driver = Driver::bind(host, &[bind]).map_err(|e| format!("node A: {e}"))?;
        let addr = driver.local_addrs().first().copied().unwrap_or(bind);
        // Runs until `kill`; then the driver is dropped without closing anything.
        let thread = driver
            .spawn(|_, _| {})
            .map_err(|e| format!("cannot start node A: {e}"))?;
        Ok(Self { addr, thread })
    }

    /// A crash: the node's state and socket are gone, its peers are told nothing.
    fn kill(self) {
        drop(self.thread);
    }
}
