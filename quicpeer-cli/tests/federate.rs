//! The channel checker on loopback with real processes: three `quicpeer federate` servers in
//! a star, stdin fed by the test, one leaf and then the hub killed with `kill -9` and started
//! again on the same store. At the end every accepted message is in every server's durable
//! log (read with `federate log --json` while the servers are down) exactly once, in
//! per-origin order. Counts only, never times; every wait is bounded by a generous deadline.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const QUICPEER: &str = env!("CARGO_BIN_EXE_quicpeer");
const DEADLINE: Duration = Duration::from_secs(90);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quicpeer-federate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket.local_addr().expect("local address").port()
}

fn peer_id(seed: u8) -> String {
    let out = Command::new(QUICPEER)
        .args(["id", "--seed", &seed.to_string()])
        .output()
        .expect("quicpeer id");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().last().expect("a PeerId").to_owned()
}

struct Spec {
    name: String,
    seed: u8,
    port: u16,
    peers: Vec<String>,
    store: PathBuf,
}

/// A running server, every JSON line its incarnations printed, and what its store held each
/// time it was started again.
///
/// `delivered` lines are printed after the commit that appends them to the log, so a
/// `kill -9` between the two loses the line, never the message: the log read while the server
/// is down (before each restart) is what completes the picture.
struct Server {
    spec: Spec,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// The JSON lines of each incarnation, in start order.
    incarnations: Vec<Arc<Mutex<Vec<Value>>>>,
    /// Lines written to the current incarnation's stdin.
    said: usize,
    /// Everything the store held at the last start: (origin, seq).
    logged: BTreeSet<(String, u64)>,
}

impl Server {
    fn new(name: String, seed: u8, port: u16, peers: Vec<String>, store: PathBuf) -> Server {
        Server {
            spec: Spec {
                name,
                seed,
                port,
                peers,
                store,
            },
            child: None,
            stdin: None,
            incarnations: Vec::new(),
            said: 0,
            logged: BTreeSet::new(),
        }
    }

    /// Reads the store (the server is down), then starts an incarnation; its stderr (logs,
    /// with `RUST_LOG` as set for the test) goes to `<name>.<n>.log` beside the store, kept
    /// when the test fails.
    fn start(&mut self) {
        if self.spec.store.exists() {
            self.logged = (log(&self.spec.store).into_iter())
                .map(|(origin, seq, _)| (origin, seq))
                .collect();
        }
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        self.incarnations.push(lines.clone());
        self.said = 0;
        let log_path = (self.spec.store.parent().expect("scratch directory")).join(format!(
            "{}.{}.log",
            self.spec.name,
            self.incarnations.len()
        ));
        let stderr = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new(QUICPEER)
            .args(["federate", "--json", "--topology", "star"])
            .args(["--seed", &self.spec.seed.to_string()])
            .args([
                "--listen",
                &format!("/ip4/127.0.0.1/udp/{}/quic-v1", self.spec.port),
            ])
            .arg("--store")
            .arg(&self.spec.store)
            .args(self.spec.peers.iter().flat_map(|p| ["--peer", p.as_str()]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("quicpeer federate starts");
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    lines.lock().expect("lines").push(value);
                }
            }
        });
        self.stdin = child.stdin.take();
        self.child = Some(child);
    }

    fn say(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("running");
        writeln!(stdin, "{text}").expect("write to stdin");
        stdin.flush().expect("flush stdin");
        self.said += 1;
    }

    /// `kill -9`, and wait until it is gone (its port free).
    fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The lines named `name` that incarnations from `from` on printed.
    fn events_from(&self, from: usize, name: &str) -> Vec<Value> {
        let mut events = Vec::new();
        for lines in self.incarnations.iter().skip(from) {
            let lines = lines.lock().expect("lines");
            events.extend(lines.iter().filter(|v| v["event"] == name).cloned());
        }
        events
    }

    fn events(&self, name: &str) -> Vec<Value> {
        self.events_from(0, name)
    }

    fn listening(&self) -> bool {
        (self.incarnations.last()).is_some_and(|lines| {
            (lines.lock().expect("lines").iter()).any(|v| v["event"] == "listen")
        })
    }

    /// Whether the current incarnation accepted every line written to it.
    fn accepted_all_said(&self) -> bool {
        self.events_from(self.incarnations.len().saturating_sub(1), "accepted")
            .len()
            == self.said
    }

    /// Its own messages it printed as accepted, or that its store held at a restart.
    fn accepted(&self, me: &str) -> BTreeSet<(String, u64)> {
        let printed = self.events("accepted");
        let printed = printed.iter().map(|v| {
            (
                v["origin"].as_str().unwrap_or("").to_owned(),
                v["seq"].as_u64().unwrap_or(0),
            )
        });
        let logged = (self.logged.iter())
            .filter(|(origin, _)| origin == me)
            .cloned();
        printed.chain(logged).collect()
    }

    /// What it printed as delivered, or its store held at a restart.
    fn delivered(&self) -> BTreeSet<(String, u64)> {
        let printed = self.events("delivered");
        let printed = printed.iter().map(|v| {
            (
                v["origin"].as_str().unwrap_or("").to_owned(),
                v["seq"].as_u64().unwrap_or(0),
            )
        });
        printed.chain(self.logged.iter().cloned()).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `federate log --json` of a store: (origin, seq, body) in delivery order.
fn log(store: &PathBuf) -> Vec<(String, u64, String)> {
    let out = Command::new(QUICPEER)
        .args(["federate", "log", "--json", "--store"])
        .arg(store)
        .output()
        .expect("federate log");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).lines())
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(v["event"], "delivered");
            (
                v["origin"].as_str().expect("origin").to_owned(),
                v["seq"].as_u64().expect("seq"),
                v["body"].as_str().expect("body").to_owned(),
            )
        })
        .collect()
}

#[test]
fn three_servers_lose_and_double_nothing_across_kill_9() {
    let dir = scratch("star");
    let seeds = [41u8, 42, 43];
    let ids: Vec<String> = seeds.iter().map(|s| peer_id(*s)).collect();
    let ports: Vec<u16> = seeds.iter().map(|_| free_udp_port()).collect();
    let addr = |i: usize| format!("/ip4/127.0.0.1/udp/{}/quic-v1/p2p/{}", ports[i], ids[i]);
    // Server 0 is the hub; 1 and 2 are leaves that reach each other only through it.
    let peers = [vec![addr(1), addr(2)], vec![addr(0)], vec![addr(0)]];
    let mut servers: Vec<Server> = (0..3)
        .map(|i| {
            let store = dir.join(format!("s{i}"));
            Server::new(format!("s{i}"), seeds[i], ports[i], peers[i].clone(), store)
        })
        .collect();
    for server in &mut servers {
        server.start();
    }
    wait("three LISTEN lines", || {
        servers.iter().all(Server::listening)
    });
    // The LISTEN line names the server's PeerId, as `quicpeer listen` does.
    for (i, server) in servers.iter().enumerate() {
        let listen = &server.events("listen")[0];
        assert_eq!(listen["addr"].as_str(), Some(addr(i).as_str()));
    }

    let mut said = 0;
    let mut round = |servers: &mut Vec<Server>, count: usize| {
        for _ in 0..count {
            for (i, server) in servers.iter_mut().enumerate() {
                if server.stdin.is_some() {
                    server.say(&format!("message {said} from s{i}"));
                    said += 1;
                }
            }
        }
    };
    round(&mut servers, 5);
    wait("the first messages accepted", || {
        (servers.iter().zip(&ids)).all(|(s, id)| s.accepted(id).len() >= 5)
    });
    // Kill a leaf in the middle of a burst, then the hub; start each again on its store.
    round(&mut servers, 5);
    servers[2].kill();
    round(&mut servers, 3);
    servers[2].start();
    servers[0].kill();
    round(&mut servers, 3);
    servers[0].start();
    wait("the restarted servers listening", || {
        servers.iter().all(Server::listening)
    });
    round(&mut servers, 4);
    // No kill from here on: every line of the running incarnations gets accepted.
    wait("the last lines accepted", || {
        servers.iter().all(Server::accepted_all_said)
    });

    // Everything accepted anywhere (printed, or in the origin's store at a restart) must
    // reach every server.
    let accepted: BTreeSet<(String, u64)> = (servers.iter().zip(&ids))
        .flat_map(|(s, id)| s.accepted(id))
        .collect();
    assert!(accepted.len() >= 15, "only {} accepted", accepted.len());
    let start = Instant::now();
    while !servers.iter().all(|s| accepted.is_subset(&s.delivered())) {
        if start.elapsed() > DEADLINE {
            for (i, server) in servers.iter().enumerate() {
                let delivered = server.delivered();
                let missing: Vec<_> = accepted.difference(&delivered).collect();
                eprintln!("s{i} lacks {} messages: {missing:?}", missing.len());
            }
            panic!(
                "not every accepted message was delivered everywhere; the servers' logs are in {}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for server in &mut servers {
        server.kill();
    }

    // The durable logs: each (origin, seq) once, per-origin order, the origin's body.
    let logs: Vec<_> = servers.iter().map(|s| log(&s.spec.store)).collect();
    let mut bodies: BTreeMap<(String, u64), String> = BTreeMap::new();
    for (i, log) in logs.iter().enumerate() {
        for (origin, seq, body) in log {
            if *origin == ids[i] {
                bodies.insert((origin.clone(), *seq), body.clone());
            }
        }
    }
    for (i, log) in logs.iter().enumerate() {
        let mut next: BTreeMap<&str, u64> = BTreeMap::new();
        for (origin, seq, body) in log {
            let expected = next.entry(origin.as_str()).or_insert(1);
            assert_eq!(*seq, *expected, "s{i}: {origin} out of order or duplicated");
            *expected += 1;
            assert_eq!(
                bodies.get(&(origin.clone(), *seq)),
                Some(body),
                "s{i}: body"
            );
        }
        let held: BTreeSet<(String, u64)> = log.iter().map(|(o, s, _)| (o.clone(), *s)).collect();
        assert!(accepted.is_subset(&held), "s{i} lacks accepted messages");
        // The accounting is exact: what the origin's store holds is what the test saw
        // accepted, no more.
        let own: BTreeSet<(String, u64)> = (held.iter())
            .filter(|(origin, _)| *origin == ids[i])
            .cloned()
            .collect();
        let seen: BTreeSet<(String, u64)> = (accepted.iter())
            .filter(|(origin, _)| *origin == ids[i])
            .cloned()
            .collect();
        assert_eq!(own, seen, "s{i}: its accepted messages");
        eprintln!("s{i}: {} messages in its log", log.len());
    }
    eprintln!(
        "{} accepted of {said} lines; 2 servers killed with -9 and restarted",
        accepted.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_store_in_use_or_not_a_store_is_refused_with_a_typed_error() {
    let dir = scratch("bad-stores");
    // A store held by a running server: another process is refused, the server goes on.
    let mut server = Server::new("held".into(), 44, free_udp_port(), vec![], dir.join("held"));
    server.start();
    wait("the server listening", || server.listening());
    let out = Command::new(QUICPEER)
        .args(["federate", "log", "--store"])
        .arg(dir.join("held"))
        .output()
        .expect("federate log");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked by another process"), "{stderr}");
    server.say("still here");
    wait("the server accepting after the refusal", || {
        server.accepted_all_said()
    });
    server.kill();

    // A file that is not a store: refused, and left as it was.
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).expect("directory");
    let garbage = vec![0x5a; 4096];
    std::fs::write(bad.join("channel.redb"), &garbage).expect("write");
    for args in [
        vec!["federate", "log", "--store"],
        vec!["federate", "--seed", "45", "--store"],
    ] {
        let out = Command::new(QUICPEER)
            .args(&args)
            .arg(&bad)
            .stdin(Stdio::null())
            .output()
            .expect("quicpeer federate");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("store corrupt"), "{args:?}: {stderr}");
    }
    assert_eq!(
        std::fs::read(bad.join("channel.redb")).expect("read"),
        garbage
    );
    let _ = std::fs::remove_dir_all(&dir);
}
