//! `quicpeer bench federate`: the long run of the channel checker on loopback. Servers run
//! `quicpeer federate` (this binary), a driver feeds their stdin and kills random ones with
//! `kill -9` (SIGKILL) and starts them again on the same store, until `--kills` kills. Then
//! every server is started with nothing more to say, given time to catch up, and stopped, until
//! the durable logs agree (or `--settle-rounds` rounds passed); the logs are read from the
//! stores and checked: every message in any origin's log (accepted) must be in every log
//! (else lost), once (else duplicated), in per-origin order, with the origin's body. Progress
//! goes to stderr; the table (or with `--json` one JSON object) to stdout.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use quicpeer::protocols::channel::{RedbStore, Store};
use quicpeer::Identity;
use quicpeer_bench::{Cell, Report};
use rand::{Rng, SeedableRng};

use crate::output::Output;
use crate::UsageError;

/// Arguments of `quicpeer bench federate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Servers (the first is the hub with `--topology star`).
    #[arg(long, default_value_t = 3)]
    servers: usize,
    /// `kill -9`s to do.
    #[arg(long, default_value_t = 100)]
    kills: u64,
    /// Lines written to random servers between two kills, at most.
    #[arg(long, default_value_t = 10)]
    burst: u32,
    /// Milliseconds between two kills, at most (drawn uniformly from 0..this).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// `mesh` or `star`.
    #[arg(long, default_value = "star")]
    topology: String,
    /// Where the stores go (a scratch directory under the system's temporary one if absent;
    /// removed at the end when the run is clean).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Rounds of start, catch up for `--settle-ms`, stop, at the end.
    #[arg(long, default_value_t = 10)]
    settle_rounds: u32,
    /// Milliseconds each settle round gives the servers.
    #[arg(long, default_value_t = 3000)]
    settle_ms: u64,
    /// Seed of the driver's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

struct Server {
    seed: u8,
    port: u16,
    peers: Vec<String>,
    store: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Server {
    fn start(&mut self, exe: &Path, topology: &str, stdin: bool) -> Result<(), UsageError> {
        let mut child = Command::new(exe)
            .args(["federate", "--topology", topology])
            .args(["--seed", &self.seed.to_string()])
            .args([
                "--listen",
                &format!("/ip4/127.0.0.1/udp/{}/quic-v1", self.port),
            ])
            .arg("--store")
            .arg(&self.store)
            .args(self.peers.iter().flat_map(|p| ["--peer", p.as_str()]))
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| UsageError(format!("cannot start {}: {e}", exe.display())))?;
        self.stdin = child.stdin.take();
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and wait until the process is gone (its port and store free).
    fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the logs say.
#[derive(Debug, Default)]
struct Verdict {
    accepted: usize,
    lost: usize,
    duplicated: usize,
    out_of_order: usize,
    wrong_body: usize,
}

/// A durable log: (origin, seq, body) in delivery order.
type Log = Vec<(String, u64, Vec<u8>)>;

fn read_logs(servers: &[Server]) -> Result<Vec<Log>, UsageError> {
    let mut logs = Vec::new();
    for server in servers {
        let mut store = RedbStore::open(&server.store)
            .map_err(|e| UsageError(format!("{}: {e}", server.store.display())))?;
        let mut log = Vec::new();
        loop {
            let entries = store
                .read_log(log.len() as u64, 4096)
                .map_err(|e| UsageError(format!("{}: {e}", server.store.display())))?;
            if entries.is_empty() {
                break;
            }
            log.extend(
                (entries.into_iter()).map(|e| (e.origin.to_string(), e.seq, e.body.to_vec())),
            );
        }
        logs.push(log);
    }
    Ok(logs)
}

fn judge(ids: &[String], logs: &[Log]) -> Verdict {
    let mut verdict = Verdict::default();
    // Accepted: what each origin holds of its own.
    let mut bodies: BTreeMap<(String, u64), Vec<u8>> = BTreeMap::new();
    for (i, log) in logs.iter().enumerate() {
        for (origin, seq, body) in log {
            if *origin == ids[i] {
                bodies.insert((origin.clone(), *seq), body.clone());
            }
        }
    }
    verdict.accepted = bodies.len();
    for log in logs {
        let mut seen = BTreeSet::new();
        let mut next: BTreeMap<&str, u64> = BTreeMap::new();
        for (origin, seq, body) in log {
            if !seen.insert((origin.clone(), *seq)) {
                verdict.duplicated += 1;
                continue;
            }
            let expected = next.entry(origin.as_str()).or_insert(1);
            if *seq != *expected {
                verdict.out_of_order += 1;
            }
            *expected = seq + 1;
            if bodies.get(&(origin.clone(), *seq)) != Some(body) {
                verdict.wrong_body += 1;
            }
        }
        verdict.lost += bodies.keys().filter(|k| !seen.contains(*k)).count();
    }
    verdict
}

fn free_udp_port() -> Result<u16, UsageError> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| UsageError(format!("no free UDP port: {e}")))?;
    Ok(socket
        .local_addr()
        .map_err(|e| UsageError(e.to_string()))?
        .port())
}

pub fn run(args: &Args, out: Output) -> Result<ExitCode, UsageError> {
    if !(2..=16).contains(&args.servers) {
        return Err(UsageError("--servers must be 2 to 16".into()));
    }
    if args.topology != "mesh" && args.topology != "star" {
        return Err(UsageError("--topology is mesh or star".into()));
    }
    let exe = std::env::current_exe().map_err(|e| UsageError(e.to_string()))?;
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("quicpeer-bench-federate-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
    let n = args.servers;
    let seeds: Vec<u8> = (0..n).map(|i| 101 + i as u8).collect();
    let ids: Vec<String> = (seeds.iter())
        .map(|s| Identity::from_ed25519_seed([*s; 32]).peer_id().to_string())
        .collect();
    let ports = (0..n)
        .map(|_| free_udp_port())
        .collect::<Result<Vec<_>, _>>()?;
    let addr = |i: usize| format!("/ip4/127.0.0.1/udp/{}/quic-v1/p2p/{}", ports[i], ids[i]);
    let star = args.topology == "star";
    let mut servers: Vec<Server> = (0..n)
        .map(|i| Server {
            seed: seeds[i],
            port: ports[i],
            peers: (0..n)
                .filter(|&j| j != i && (!star || i == 0 || j == 0))
                .map(addr)
                .collect(),
            store: dir.join(format!("s{i}")),
            child: None,
            stdin: None,
        })
        .collect();
    for server in &mut servers {
        server.start(&exe, &args.topology, true)?;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let mut lines = 0u64;
    let mut kills = 0u64;
    while kills < args.kills {
        for _ in 0..rng.random_range(0..=args.burst) {
            let i = rng.random_range(0..n);
            if let Some(stdin) = servers[i].stdin.as_mut() {
                if writeln!(stdin, "line {lines} to s{i}").is_ok() {
                    lines += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(
            rng.random_range(0..=args.interval_ms),
        ));
        let victim = rng.random_range(0..n);
        servers[victim].kill();
        kills += 1;
        servers[victim].start(&exe, &args.topology, true)?;
        if kills.is_multiple_of(100) {
            eprintln!(
                "{kills} kills, {lines} lines written, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let chaos = started.elapsed();
    // Let the federation catch up, with nothing more to say, until the logs agree.
    let mut verdict = Verdict::default();
    let mut rounds = 0;
    for server in &mut servers {
        server.kill();
    }
    for round in 1..=args.settle_rounds {
        rounds = round;
        for server in &mut servers {
            server.start(&exe, &args.topology, false)?;
        }
        std::thread::sleep(Duration::from_millis(args.settle_ms));
        for server in &mut servers {
            server.kill();
        }
        verdict = judge(&ids, &read_logs(&servers)?);
        eprintln!(
            "settle round {round}: {} accepted, {} missing from some log",
            verdict.accepted, verdict.lost
        );
        if verdict.lost == 0 {
            break;
        }
    }
    let clean = verdict.lost == 0
        && verdict.duplicated == 0
        && verdict.out_of_order == 0
        && verdict.wrong_body == 0;
    let mut report = Report::new(
        "federate",
        &[
            "servers",
            "topology",
            "kills",
            "lines written",
            "accepted",
            "lost",
            "duplicated",
            "out of order",
            "wrong body",
            "chaos (s)",
        ],
    );
    report.rows.push(vec![
        Cell::num(n as f64, 0),
        Cell::text(&args.topology),
        Cell::num(kills as f64, 0),
        Cell::num(lines as f64, 0),
        Cell::num(verdict.accepted as f64, 0),
        Cell::num(verdict.lost as f64, 0),
        Cell::num(verdict.duplicated as f64, 0),
        Cell::num(verdict.out_of_order as f64, 0),
        Cell::num(verdict.wrong_body as f64, 0),
        Cell::num(chaos.as_secs_f64(), 1),
    ]);
    report.notes.push(format!(
        "kill -9 of a random server every 0..{} ms, restarted at once on its store; up to {} lines between kills; {} settle round(s) of {} ms",
        args.interval_ms, args.burst, rounds, args.settle_ms
    ));
    report.notes.push(
        "accepted: messages in their origin's durable log; lost: (accepted, log) pairs missing after settling".into(),
    );
    if out.is_json() {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if clean {
        let _ = std::fs::remove_dir_all(&dir);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("stores kept in {}", dir.display());
        Ok(ExitCode::FAILURE)
    }
}
