//! A hub under hostile traffic on loopback: does it keep its peers, admit newcomers, stay
//! within its memory and within QUIC's amplification limit while a flood arrives?
//!
//! The hub is a [`Manager`] on the mio driver, on its own thread, holding connections to N
//! established peers (the loopback mass restart's fleet: one socket per peer, keep-alive 1 s,
//! so that they keep talking through the flood). An *attacker* thread then sends, as fast as
//! its one core can, from many source addresses (sockets bound to `127.1.x.y`: loopback
//! routes all of `127/8`, so the sources are real addresses that nobody else answers for,
//! like spoofed ones, and the benchmark can count what the hub sends back to them):
//!
//! - [`Attack::Initials`]: real client Initials (generated beforehand by throwaway managers,
//!   a fresh ClientHello each), each replayed from the next source: handshakes the hub must
//!   start or refuse, from addresses that never answer;
//! - [`Attack::ForgedShort`]: short-header packets with random connection IDs and payloads;
//! - [`Attack::Resets`]: short datagrams of random bytes, shaped as stateless resets;
//! - [`Attack::UnknownVersion`]: 1 200-byte long-header packets of an unknown version (the
//!   bait of version negotiation);
//! - [`Attack::All`]: the four in turn.
//!
//! Meanwhile *newcomers* (a second fleet, new identities) dial the hub at an even pace. The
//! outcome: the newcomers' handshake success and latency (dial to connected, retries and the
//! application's redials included), the established connections lost (the goal is none), the
//! process's heap growth during the flood (the hub's half-open handshakes dominate it), the
//! hub's live connections at most, and the bytes the hub sent per byte received from each
//! attacking source (QUIC's anti-amplification limit is 3, RFC 9000 §8).
//!
//! All of it runs on one machine: the attacker takes a core, and the hub, the fleets and the
//! kernel share the rest. The figures are this machine's under that contention.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use quicpeer::{Cause, Config, Direction, Identity, Manager};
use rand::{Rng, RngCore, SeedableRng};

use super::mass_restart_loopback::{
    bind_hub, count_causes, fleet_failed, load_average, lock, udp_counter, wait_for, Fleet, Hub,
    Shared,
};
use super::{percentile, BenchError, Cell, Report};

/// What the attacker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Attack {
    /// Nothing: the baseline.
    None,
    /// Real client Initials, each from the next source address.
    Initials,
    /// Short-header packets with random connection IDs and random payloads.
    ForgedShort,
    /// Short random datagrams shaped as stateless resets.
    Resets,
    /// Long-header packets of an unknown QUIC version.
    UnknownVersion,
    /// The four attacks in turn.
    All,
}

impl Attack {
    /// Every attack, the baseline first.
    pub const EVERY: [Attack; 6] = [
        Attack::None,
        Attack::Initials,
        Attack::ForgedShort,
        Attack::Resets,
        Attack::UnknownVersion,
        Attack::All,
    ];

    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::Initials => "initials",
            Attack::ForgedShort => "forged-short",
            Attack::Resets => "resets",
            Attack::UnknownVersion => "unknown-version",
            Attack::All => "all",
        }
    }
}

impl FromStr for Attack {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        (Attack::EVERY.into_iter())
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Attack::EVERY.iter().map(|a| a.name()).collect();
                format!("unknown attack {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Parameters of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Params {
    /// Established peers the hub holds before the flood (one socket each).
    pub peers: usize,
    /// What the attacker sends.
    pub attack: Attack,
    /// How long the flood lasts.
    pub duration: Duration,
    /// The attacker's pace in datagrams per second; `None`: as fast as it can.
    pub rate: Option<u64>,
    /// New clients that dial during the flood, evenly spread over it.
    pub newcomers: usize,
    /// Source addresses of the attacker (sockets on `127.1.x.y`).
    pub sources: usize,
    /// Distinct real Initials generated for [`Attack::Initials`], replayed in turn.
    pub initials: usize,
    /// The hub's `Limits::retry_above`; `None` keeps the default.
    pub hub_retry_above: Option<usize>,
    /// The hub's `Limits::max_inbound_handshakes`; `None` keeps the default.
    pub hub_max_inbound_handshakes: Option<usize>,
}

impl Params {
    /// 1 000 established peers, a 10 s flood, 100 newcomers, 1 024 sources, 20 000 Initials,
    /// the hub's default limits.
    pub fn new(attack: Attack) -> Self {
        Self {
            peers: 1000,
            attack,
            duration: Duration::from_secs(10),
            rate: None,
            newcomers: 100,
            sources: 1024,
            initials: 20_000,
            hub_retry_above: None,
            hub_max_inbound_handshakes: None,
        }
    }
}

/// What the attacker did and what came back to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flood {
    /// Datagrams sent to the hub.
    pub datagrams: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Sends the attacker's sockets refused (buffer full): not sent.
    pub refused: u64,
    /// Bytes the hub sent back to the attacking sources, during the flood and for two
    /// seconds after it (retransmissions of handshake flights included).
    pub answered_bytes: u64,
    /// Datagrams the hub sent back.
    pub answered_datagrams: u64,
    /// The most bytes the hub sent one source per byte received from it.
    pub max_amplification: f64,
    /// How long the flood lasted.
    pub elapsed: Duration,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Outcome {
    /// What was sent.
    pub attack: Attack,
    /// The flood's counts.
    pub flood: Flood,
    /// Newcomers that dialed.
    pub newcomers: usize,
    /// Newcomers connected by the end (the flood plus ten seconds).
    pub newcomers_connected: usize,
    /// Dial to connected, connected newcomers: median, 99th percentile, maximum.
    pub handshake: (Duration, Duration, Duration),
    /// Established peers whose connection to the hub was lost during the run, other than by
    /// a replacement (the goal is none).
    pub established_lost: usize,
    /// Established peers whose connection was replaced, make-before-break, by a fresh one
    /// their suspicion redial opened when the hub went silent for them (`Superseded`): still
    /// connected, on a new connection.
    pub established_replaced: usize,
    /// Established peers the hub held connections to at the end.
    pub established_connected: usize,
    /// Why, counted.
    pub lost_causes: BTreeMap<String, usize>,
    /// Heap bytes of the process before the flood, and its largest growth during it (sampled
    /// every 50 ms; `None` without the counting allocator).
    pub heap: Option<(usize, usize)>,
    /// Heap growth left two seconds after the flood.
    pub heap_after: Option<isize>,
    /// The hub's live connections at most (sampled every 200 ms).
    pub hub_max_live: usize,
    /// Inbound handshakes the hub started during the run.
    pub hub_handshakes: u64,
    /// Retry packets the hub sent.
    pub hub_retries: u64,
    /// Stateless resets the hub sent.
    pub hub_resets: u64,
    /// Inbound handshakes and responses the hub refused (limits, rates).
    pub hub_refusals: u64,
    /// The same, by reason.
    pub hub_refusals_by: String,
    /// CPU time of the hub's thread during the flood, as a fraction of one core.
    pub hub_cpu: Option<f64>,
    /// UDP datagrams the kernel dropped for want of receive-buffer space, all sockets
    /// (`RcvbufErrors`), during the run.
    pub recv_buffer_drops: Option<u64>,
}

/// Runs one flood.
pub fn measure(params: &Params) -> Result<Outcome, BenchError> {
    if params.peers == 0 || params.sources == 0 || params.duration.is_zero() {
        return Err(BenchError::Setup(
            "peers, sources and duration must be positive".into(),
        ));
    }
    let mut config = Config::default();
    config.keep_alive = Some(Duration::from_secs(1));
    config.limits.max_connections = (params.peers + params.newcomers)
        .saturating_mul(2)
        .saturating_add(64);
    let mut hub_config = config.clone();
    if let Some(max) = params.hub_max_inbound_handshakes {
        hub_config.limits.max_inbound_handshakes = max;
    }
    if let Some(above) = params.hub_retry_above {
        hub_config.limits.retry_above = Some(above);
    }
    let hub_identity = Identity::from_ed25519_seed([0; 32]);
    let hub_peer = hub_identity.peer_id();
    let (socket, _) = bind_hub(None, None)?;
    let hub_addr = socket
        .local_addr()
        .map_err(|e| BenchError::Setup(format!("hub socket: {e}")))?;
    let hub = Hub::spawn(hub_identity, hub_config, socket, 1)?;

    // The established peers, connected at 1 000 dials a second.
    let shared = Arc::new(Shared::default());
    let peers = params.peers;
    let fleet = spawn_fleet("fleet", peers, 0, &config, &shared, hub_peer, hub_addr, {
        Duration::from_millis(1)
    })?;
    let bound = Duration::from_millis(6) * peers as u32 + Duration::from_secs(10);
    if !wait_for(&shared.connected, peers, bound, &fleet) {
        shared.stop.store(true, Ordering::Relaxed);
        let _ = fleet.join();
        let _ = hub.crash();
        return Err(fleet_failed(
            &shared,
            format!("the established peers did not all connect within {bound:?}"),
        ));
    }

    let attacker = match params.attack {
        Attack::None => None,
        attack => Some(Attacker::new(params, attack, hub_addr)?),
    };
    std::thread::sleep(Duration::from_secs(1));

    // The flood, the newcomers, and the samples.
    let heap_before = crate::alloc::allocated();
    let drops_before = udp_counter("RcvbufErrors");
    let cpu_before = hub.cpu();
    let started = Instant::now();
    *lock(&shared.restart) = Some(started);
    shared.restarting.store(true, Ordering::Release);
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = match attacker {
        Some(attacker) => {
            let stop = stop.clone();
            Some(
                std::thread::Builder::new()
                    .name("attacker".into())
                    .spawn(move || attacker.run(&stop))
                    .map_err(|e| BenchError::Setup(format!("attacker thread: {e}")))?,
            )
        }
        None => None,
    };
    let newcomers = Arc::new(Shared::default());
    let newcomer_fleet = match params.newcomers {
        0 => None,
        n => Some(spawn_fleet(
            "newcomers",
            n,
            peers + 1000,
            &config,
            &newcomers,
            hub_peer,
            hub_addr,
            params.duration / n as u32,
        )?),
    };
    let mut heap_peak = 0;
    let mut hub_max_live = 0;
    let mut next_live = started;
    while started.elapsed() < params.duration {
        heap_peak = heap_peak.max(crate::alloc::allocated().saturating_sub(heap_before));
        if Instant::now() >= next_live {
            hub_max_live = hub_max_live.max(hub.query(|m| m.live_connections()).unwrap_or(0));
            next_live += Duration::from_millis(200);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let hub_cpu = cpu_before
        .zip(hub.cpu())
        .map(|(b, a)| a.saturating_sub(b).as_secs_f64() / started.elapsed().as_secs_f64());
    stop.store(true, Ordering::Release);
    let (flood, _sources) = match attacker {
        Some(thread) => thread
            .join()
            .map_err(|_| BenchError::Setup("the attacker thread panicked".into()))??,
        None => (Flood::default(), Vec::new()),
    };
    if let Some(thread) = &newcomer_fleet {
        wait_for(
            &newcomers.connected,
            params.newcomers,
            Duration::from_secs(10),
            thread,
        );
    }
    let heap_after = match heap_before {
        0 => None,
        before => Some(crate::alloc::allocated() as isize - before as isize),
    };
    let drops_after = udp_counter("RcvbufErrors");
    let metrics = hub.query(Manager::metrics).unwrap_or_default();
    let connected_at_end = hub.query(|m| m.connected_peers().len()).unwrap_or(0);
    hub_max_live = hub_max_live.max(hub.query(|m| m.live_connections()).unwrap_or(0));
    let _ = hub.crash()?;
    shared.stop.store(true, Ordering::Relaxed);
    newcomers.stop.store(true, Ordering::Relaxed);
    let established = fleet
        .join()
        .map_err(|_| BenchError::Setup("the fleet thread panicked".into()))??;
    let mut latencies = Vec::new();
    if let Some(thread) = newcomer_fleet {
        let report = thread
            .join()
            .map_err(|_| BenchError::Setup("the newcomers' thread panicked".into()))??;
        latencies = (report.records.iter())
            .filter_map(|r| Some(r.connected_at?.saturating_duration_since(r.dialed_at?)))
            .collect();
    }
    latencies.sort();
    let pct = |p| percentile(&latencies, p).unwrap_or_default();
    let lost: Vec<_> = (established.records.iter())
        .filter_map(|r| r.lost.as_ref().map(|(_, cause)| cause))
        .filter(|cause| !matches!(cause, Cause::Superseded { .. }))
        .collect();
    let replaced = (established.records.iter())
        .filter(|r| matches!(r.lost, Some((_, Cause::Superseded { .. }))))
        .count();
    let refusals = metrics.refusals.total();
    Ok(Outcome {
        attack: params.attack,
        flood,
        newcomers: params.newcomers,
        newcomers_connected: latencies.len(),
        handshake: (pct(50), pct(99), pct(100)),
        established_lost: lost.len(),
        established_replaced: replaced,
        established_connected: connected_at_end.saturating_sub(latencies.len()),
        lost_causes: count_causes(lost.into_iter()),
        heap: (heap_before > 0).then_some((heap_before, heap_peak)),
        heap_after,
        hub_max_live,
        hub_handshakes: metrics.handshakes_started.get(Direction::Inbound),
        hub_retries: metrics.retries_sent,
        hub_resets: metrics.stateless_resets_sent,
        hub_refusals: refusals,
        hub_refusals_by: format!("{:?}", metrics.refusals),
        hub_cpu,
        recv_buffer_drops: drops_before
            .zip(drops_after)
            .map(|(b, a)| a.saturating_sub(b)),
    })
}

/// One run per attack, each with `template`'s other parameters, as a report.
pub fn run(attacks: &[Attack], template: &Params) -> Result<Report, BenchError> {
    let mut report = Report::new(
        "hostile",
        &[
            "attack",
            "datagrams/s",
            "newcomers connected",
            "handshake p50 (ms)",
            "p99 (ms)",
            "max (ms)",
            "established lost",
            "replaced",
            "connected at end",
            "heap growth peak (MB)",
            "hub live max",
            "hub handshakes",
            "retries",
            "refused",
            "answered (bytes/byte, max per source)",
            "hub CPU",
            "drops",
        ],
    );
    let load = load_average();
    for attack in attacks {
        let mut params = template.clone();
        params.attack = *attack;
        let o = measure(&params)?;
        let rate = match o.flood.elapsed.as_secs_f64() {
            s if s > 0.0 => o.flood.datagrams as f64 / s,
            _ => 0.0,
        };
        report.rows.push(vec![
            Cell::text(attack.name()),
            Cell::num(rate, 0),
            Cell::text(format!("{}/{}", o.newcomers_connected, o.newcomers)),
            Cell::millis(o.handshake.0),
            Cell::millis(o.handshake.1),
            Cell::millis(o.handshake.2),
            Cell::num(o.established_lost as f64, 0),
            Cell::num(o.established_replaced as f64, 0),
            Cell::text(format!("{}/{}", o.established_connected, template.peers)),
            o.heap
                .map_or(Cell::Missing, |(_, peak)| Cell::num(peak as f64 / 1e6, 1)),
            Cell::num(o.hub_max_live as f64, 0),
            Cell::num(o.hub_handshakes as f64, 0),
            Cell::num(o.hub_retries as f64, 0),
            Cell::num(o.hub_refusals as f64, 0),
            match o.flood.datagrams {
                0 => Cell::Missing,
                _ => Cell::num(o.flood.max_amplification, 2),
            },
            o.hub_cpu
                .map_or(Cell::Missing, |c| Cell::text(format!("{:.0} %", c * 100.0))),
            o.recv_buffer_drops
                .map_or(Cell::Missing, |d| Cell::num(d as f64, 0)),
        ]);
        if !o.lost_causes.is_empty() {
            report.notes.push(format!(
                "{}: established connections lost: {:?}",
                attack.name(),
                o.lost_causes
            ));
        }
        if o.hub_refusals > 0 {
            report.notes.push(format!(
                "{}: the hub's refusals: {}",
                attack.name(),
                o.hub_refusals_by
            ));
        }
        if o.flood.datagrams > 0 {
            report.notes.push(format!(
                "{}: {} datagrams ({:.1} MB) in {:.1} s, {} refused by the attacker's sockets; \
                 the hub answered {} datagrams ({:.1} MB) to the attacking sources",
                attack.name(),
                o.flood.datagrams,
                o.flood.bytes as f64 / 1e6,
                o.flood.elapsed.as_secs_f64(),
                o.flood.refused,
                o.flood.answered_datagrams,
                o.flood.answered_bytes as f64 / 1e6,
            ));
        }
    }
    report.notes.push(format!(
        "{} established peers (keep-alive 1 s), a {:.0} s flood ({}) from {} sources ({} \
         distinct Initials), {} newcomers dialing evenly through it; hub limits: retry above {}, \
         at most {} inbound handshakes; load average {} before",
        template.peers,
        template.duration.as_secs_f64(),
        template
            .rate
            .map_or("as fast as one core sends".into(), |r| format!(
                "{r} datagrams/s"
            )),
        template.sources,
        template.initials,
        template.newcomers,
        template
            .hub_retry_above
            .or(quicpeer::Limits::default().retry_above)
            .map_or("never".into(), |n| n.to_string()),
        template
            .hub_max_inbound_handshakes
            .unwrap_or(quicpeer::Limits::default().max_inbound_handshakes),
        load.unwrap_or_else(|| "unknown".into()),
    ));
    report.notes.push(
        "answered: the most bytes the hub sent one attacking source per byte received from it \
         (QUIC's limit for unvalidated addresses is 3); heap growth: the process's heap above \
         its level before the flood, sampled every 50 ms"
            .into(),
    );
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn spawn_fleet(
    name: &str,
    count: usize,
    first: usize,
    config: &Config,
    shared: &Arc<Shared>,
    hub: quicpeer::PeerId,
    hub_addr: SocketAddr,
    interval: Duration,
) -> Result<JoinHandle<Result<super::mass_restart_loopback::FleetReport, BenchError>>, BenchError> {
    let (shared, config) = (shared.clone(), config.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || Fleet::build(count, first, &config, &shared)?.run(hub, hub_addr, interval))
        .map_err(|e| BenchError::Setup(format!("{name} thread: {e}")))
}

// ---- the attacker ----

/// How long the attacker goes on counting answers after the flood.
const ANSWER_WINDOW: Duration = Duration::from_secs(2);

struct Attacker {
    attack: Attack,
    hub: SocketAddr,
    duration: Duration,
    rate: Option<u64>,
    poll: Poll,
    sockets: Vec<UdpSocket>,
    initials: Vec<Vec<u8>>,
}

impl Attacker {
    fn new(params: &Params, attack: Attack, hub: SocketAddr) -> Result<Self, BenchError> {
        let poll = Poll::new().map_err(|e| BenchError::Setup(format!("poll: {e}")))?;
        let mut sockets = Vec::with_capacity(params.sources);
        for i in 0..params.sources {
            // 127.1.0.1, 127.1.0.2, …: loopback routes all of 127/8.
            let n = i + 1;
            let ip = Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250) as u8 + 1);
            let mut socket = std::net::UdpSocket::bind((ip, 0))
                .and_then(|s| s.set_nonblocking(true).map(|()| UdpSocket::from_std(s)))
                .map_err(|e| BenchError::Setup(format!("attacker socket on {ip}: {e}")))?;
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)
                .map_err(|e| BenchError::Setup(format!("registering attacker socket: {e}")))?;
            sockets.push(socket);
        }
        let initials = match attack {
            Attack::Initials | Attack::All => client_initials(params.initials, hub)?,
            _ => Vec::new(),
        };
        Ok(Self {
            attack,
            hub,
            duration: params.duration,
            rate: params.rate,
            poll,
            sockets,
            initials,
        })
    }

    /// Floods until `stop` (or twice the planned duration), counts the answers for
    /// [`ANSWER_WINDOW`] more, and returns the counts with the sockets, which stay open until
    /// the hub is gone (a closed one would draw ICMP errors to the hub's retransmissions).
    fn run(mut self, stop: &AtomicBool) -> Result<(Flood, Vec<UdpSocket>), BenchError> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut flood = Flood::default();
        let mut sent = vec![0u64; self.sockets.len()];
        let mut answered = vec![0u64; self.sockets.len()];
        let mut buf = vec![0u8; 1500];
        let mut events = Events::with_capacity(1024);
        let kinds: &[Attack] = match self.attack {
            Attack::All => &[
                Attack::Initials,
                Attack::ForgedShort,
                Attack::Resets,
                Attack::UnknownVersion,
            ],
            _ => std::slice::from_ref(&self.attack),
        };
        let started = Instant::now();
        let mut n: u64 = 0;
        while !stop.load(Ordering::Acquire) && started.elapsed() < self.duration * 2 {
            if let Some(rate) = self.rate {
                // Paced: no further ahead than the schedule allows.
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if n >= due {
                    drain(
                        &mut self.poll,
                        &self.sockets,
                        &mut events,
                        Duration::from_millis(1),
                        &mut answered,
                        &mut flood,
                        &mut buf,
                    )?;
                    continue;
                }
            }
            for _ in 0..256 {
                let source = (n % self.sockets.len() as u64) as usize;
                let kind = kinds[(n / self.sockets.len() as u64 % kinds.len() as u64) as usize];
                let len = match kind {
                    Attack::Initials => {
                        let initial = &self.initials[(n as usize) % self.initials.len()];
                        buf[..initial.len()].copy_from_slice(initial);
                        initial.len()
                    }
                    Attack::ForgedShort => {
                        let len = rng.random_range(40..=1200);
                        rng.fill_bytes(&mut buf[..len]);
                        buf[0] = 0x40 | (buf[0] & 0x3f);
                        len
                    }
                    Attack::Resets => {
                        let len = rng.random_range(21..=43);
                        rng.fill_bytes(&mut buf[..len]);
                        buf[0] = 0x40 | (buf[0] & 0x3f);
                        len
                    }
                    _ => {
                        // A long header of a reserved (greased) version, a random 8-byte
                        // DCID, padded to the 1 200 bytes a server answers.
                        let len = 1200;
                        rng.fill_bytes(&mut buf[..len]);
                        buf[0] = 0xc0 | (buf[0] & 0x3f);
                        buf[1..5].copy_from_slice(&[0x1a, 0x2a, 0x3a, 0x4a]);
                        buf[5] = 8;
                        buf[14] = 8;
                        len
                    }
                };
                match self.sockets[source].send_to(&buf[..len], self.hub) {
                    Ok(written) => {
                        flood.datagrams += 1;
                        flood.bytes += written as u64;
                        sent[source] += written as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => flood.refused += 1,
                    Err(_) => flood.refused += 1,
                }
                n += 1;
            }
            drain(
                &mut self.poll,
                &self.sockets,
                &mut events,
                Duration::ZERO,
                &mut answered,
                &mut flood,
                &mut buf,
            )?;
        }
        flood.elapsed = started.elapsed();
        let window = Instant::now() + ANSWER_WINDOW;
        while Instant::now() < window {
            let left = window.saturating_duration_since(Instant::now());
            drain(
                &mut self.poll,
                &self.sockets,
                &mut events,
                left,
                &mut answered,
                &mut flood,
                &mut buf,
            )?;
        }
        flood.max_amplification = (sent.iter().zip(&answered))
            .filter(|(s, _)| **s > 0)
            .map(|(s, a)| *a as f64 / *s as f64)
            .fold(0.0, f64::max);
        Ok((flood, self.sockets))
    }
}

/// Reads what the hub sent to the attacking sources.
#[allow(clippy::too_many_arguments)]
fn drain(
    poll: &mut Poll,
    sockets: &[UdpSocket],
    events: &mut Events,
    timeout: Duration,
    answered: &mut [u64],
    flood: &mut Flood,
    buf: &mut [u8],
) -> Result<(), BenchError> {
    match poll.poll(events, Some(timeout)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
        Err(e) => return Err(BenchError::Setup(format!("attacker poll: {e}"))),
    }
    for event in events.iter() {
        let i = event.token().0;
        let Some(socket) = sockets.get(i) else {
            continue;
        };
        loop {
            match socket.recv_from(buf) {
                Ok((len, _)) => {
                    answered[i] += len as u64;
                    flood.answered_bytes += len as u64;
                    flood.answered_datagrams += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    Ok(())
}

/// `count` distinct real client Initials to `hub`: the first datagram of as many dials, from
/// throwaway managers (a new ClientHello, keys and connection IDs each).
fn client_initials(count: usize, hub: SocketAddr) -> Result<Vec<Vec<u8>>, BenchError> {
    const PER_MANAGER: usize = 1000;
    let mut initials = Vec::with_capacity(count);
    let mut out = Vec::new();
    let mut batch = 0u64;
    while initials.len() < count {
        batch += 1;
        let mut config = Config::default();
        config.limits.max_connections = PER_MANAGER + 1;
        config.limits.max_pending_dials = PER_MANAGER + 1;
        let mut key = [0xa7; 32];
        key[..8].copy_from_slice(&batch.to_le_bytes());
        let now = Instant::now();
        let mut manager = Manager::new(
            now,
            SystemTime::now(),
            Identity::from_ed25519_seed(key),
            config,
            key,
        )
        .map_err(|e| BenchError::Setup(format!("Initial generator: {e}")))?;
        for _ in 0..PER_MANAGER.min(count - initials.len()) {
            manager
                .connect(now, hub, None)
                .map_err(|e| BenchError::Setup(format!("Initial generator: {e}")))?;
        }
        while let Some(t) = manager.poll_transmit(now, &mut out) {
            let datagram = out.get(..t.size).unwrap_or(&out);
            // A long-header Initial (type 0), padded to 1 200 bytes by the client.
            if datagram.first().is_some_and(|b| b & 0xf0 == 0xc0) {
                initials.push(datagram.to_vec());
            }
        }
    }
    initials.truncate(count);
    Ok(initials)
}
