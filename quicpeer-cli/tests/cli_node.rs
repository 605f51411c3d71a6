//! `quicpeer demo`, `listen` and `ping` run as a user would: separate processes, real UDP on
//! loopback, JSON lines read from their stdout. Every wait has a deadline.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

fn quicpeer(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quicpeer"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// The value of `key` in a JSON line (`null` if it has none); panics on a line that is not a
/// JSON object, since with `--json` every line must be one.
fn field(line: &str, key: &str) -> Value {
    let object: serde_json::Map<String, Value> =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
    object.get(key).cloned().unwrap_or(Value::Null)
}

fn number(line: &str, key: &str) -> Option<f64> {
    field(line, key).as_f64()
}

/// The stdout lines of a child, read on a thread so that waits can have deadlines.
struct Lines {
    rx: Receiver<(Instant, String)>,
    seen: Vec<String>,
    /// When each line of `seen` was read from the pipe.
    read_at: Vec<Instant>,
}

impl Lines {
    fn new(stdout: ChildStdout) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
            read_at: Vec::new(),
        }
    }

    /// The first line after index `from` for which `pick` holds, within `timeout`.
    fn wait(
        &mut self,
        from: usize,
        timeout: Duration,
        pick: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let index = self.wait_index(from, timeout, pick)?;
        Some(self.seen[index].clone())
    }

    /// The index of the first line after index `from` for which `pick` holds, within
    /// `timeout`.
    fn wait_index(
        &mut self,
        from: usize,
        timeout: Duration,
        pick: impl Fn(&str) -> bool,
    ) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let mut index = from;
        loop {
            while index < self.seen.len() {
                if pick(&self.seen[index]) {
                    return Some(index);
                }
                index += 1;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line);
                    self.read_at.push(at);
                }
                Err(_) => return None,
            }
        }
    }
}

/// A child process that is killed if the test ends early.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Proc, Lines) {
    let mut child = quicpeer(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start quicpeer");
    let stdout = child.stdout.take().expect("piped stdout");
    (Proc(child), Lines::new(stdout))
}

fn listen(seed: &str, at: &str) -> (Proc, Lines, String) {
    let (proc, mut lines) = spawn(&["listen", "--json", "--seed", seed, "--listen", at]);
    let line = lines
        .wait(0, Duration::from_secs(10), |l| {
            field(l, "event") == "listen"
        })
        .expect("the listener prints its address");
    let addr = field(&line, "addr").as_str().expect("addr").to_owned();
    (proc, lines, addr)
}

/// The main job: both runs recover, and the derived-key one notices the restart by a stateless
/// reset far sooner than the default-key one does by its idle timeout. Takes about 5 s.
#[test]
fn demo_shows_derived_keys_detect_a_restart_far_sooner() {
    let output = quicpeer(&["demo", "--json"])
        .output()
        .expect("run quicpeer demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed:\n{stdout}");
    let result = |run: &str| {
        stdout
            .lines()
            .find(|l| field(l, "event") == "result" && field(l, "run") == run)
            .unwrap_or_else(|| panic!("no result for {run}:\n{stdout}"))
            .to_owned()
    };
    let (derived, default) = (result("derived_keys"), result("default_keys"));
    assert_eq!(field(&derived, "cause"), "peer_restarted", "{derived}");
    assert_eq!(field(&default, "cause"), "idle_timeout", "{default}");
    let fast = number(&derived, "detection_ms").expect("derived detection");
    let slow = number(&default, "detection_ms").expect("default detection");
    assert!(fast * 10.0 < slow, "derived {fast} ms, default {slow} ms");
    // The default-key run waits out the demo's 3 s idle timeout.
    assert!(slow >= 2_500.0, "default {slow} ms");
    for line in [&derived, &default] {
        let first_ping = number(line, "first_ping_ms").expect("first ping");
        assert!(first_ping >= number(line, "detection_ms").unwrap_or(f64::MAX));
    }
    println!("derived keys: detected after {fast} ms; default keys: after {slow} ms");
}

#[test]
fn ping_a_listener_then_it_restarts_and_ping_carries_on() {
    let (listener, _, addr) = listen("21", "/ip4/127.0.0.1/udp/0/quic-v1");
    assert!(addr.starts_with("/ip4/127.0.0.1/udp/") && addr.contains("/quic-v1/p2p/12D3KooW"));

    // A bounded ping first.
    let output = quicpeer(&[
        "ping",
        &addr,
        "--json",
        "--count",
        "3",
        "--interval-ms",
        "20",
    ])
    .output()
    .expect("run ping");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let pings = stdout
        .lines()
        .filter(|l| field(l, "event") == "ping")
        .count();
    assert_eq!(pings, 3, "{stdout}");
    assert!(stdout.lines().any(|l| field(l, "event") == "connected"));

    // Then a ping that runs on while the listener is killed and started again.
    let (_pinger, mut lines) = spawn(&["ping", &addr, "--json", "--interval-ms", "50"]);
    assert!(lines
        .wait(0, Duration::from_secs(10), |l| field(l, "event") == "ping")
        .is_some());
    drop(listener); // SIGKILL: nothing is sent to the pinger
    let port = addr
        .split('/')
        .nth(4)
        .expect("port in the address")
        .to_owned();
    let (_listener, _, again) = listen("21", &format!("/ip4/127.0.0.1/udp/{port}/quic-v1"));
    assert_eq!(again, addr, "same identity, same port");

    let from = lines.seen.len();
    let lost = lines
        .wait(from, Duration::from_secs(10), |l| {
            field(l, "event") == "connection_lost"
        })
        .expect("the pinger saw the connection die");
    assert_eq!(field(&lost, "cause"), "peer_restarted", "{lost}");
    let reconnected = lines
        .wait(from, Duration::from_secs(10), |l| {
            field(l, "event") == "reconnected"
        })
        .expect("the pinger reconnected");
    assert!(number(&reconnected, "reconnect_ms").is_some_and(|ms| ms < 1_000.0));
    let index = lines
        .seen
        .iter()
        .position(|l| l == &reconnected)
        .unwrap_or(from);
    assert!(lines
        .wait(index, Duration::from_secs(10), |l| field(l, "event")
            == "ping")
        .is_some());
}

#[cfg(unix)]
#[test]
fn sigterm_closes_the_listeners_connections_gracefully() {
    let (listener, mut listener_lines, addr) = listen("22", "/ip4/127.0.0.1/udp/0/quic-v1");
    let (_pinger, mut lines) = pinging(&addr);
    terminate(&listener);
    let stopped = listener_lines
        .wait(0, Duration::from_secs(10), |l| {
            field(l, "event") == "stopped"
        })
        .expect("the listener stopped");
    assert_eq!(field(&stopped, "closed_cleanly"), true, "{stopped}");
    let lost = lines
        .wait(0, Duration::from_secs(10), |l| {
            field(l, "event") == "connection_lost"
        })
        .expect("the pinger saw the close");
    assert_eq!(field(&lost, "cause"), "closed_by_peer", "{lost}");
}

#[cfg(unix)]
#[test]
fn sigterm_with_a_restart_downtime_tells_the_pinger_to_redial_until_the_listener_is_back() {
    let port = free_udp_port();
    let at = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
    let restarting = ["--restart-downtime-ms", "2000"];
    let (listener, mut listener_lines) = spawn(
        &[
            &["listen", "--json", "--seed", "23", "--listen", &at][..],
            &restarting[..],
        ]
        .concat(),
    );
    let listening = listener_lines
        .wait(0, Duration::from_secs(10), |l| {
            field(l, "event") == "listen"
        })
        .expect("LISTEN line");
    let addr = field(&listening, "addr").as_str().expect("addr").to_owned();
    let (_pinger, mut lines) = pinging(&addr);
    terminate(&listener);
    let lost = lines
        .wait(0, Duration::from_secs(10), |l| {
            field(l, "event") == "connection_lost"
        })
        .expect("the pinger saw the close");
    assert_eq!(field(&lost, "cause"), "peer_restarting", "{lost}");
    listener_lines
        .wait(0, Duration::from_secs(10), |l| {
            field(l, "event") == "stopped"
        })
        .expect("the listener stopped");
    drop(listener);
    // Back on the same port: the pinger, which kept redialing, reconnects by itself.
    let (_listener, mut listener_lines) = spawn(
        &[
            &["listen", "--json", "--seed", "23", "--listen", &at][..],
            &restarting[..],
        ]
        .concat(),
    );
    assert!(listener_lines
        .wait(0, Duration::from_secs(10), |l| field(l, "event")
            == "listen")
        .is_some());
    let lost_at = lines.seen.len();
    assert!(
        lines
            .wait(lost_at, Duration::from_secs(10), |l| {
                field(l, "event") == "reconnected"
            })
            .is_some(),
        "the pinger reconnected"
    );
}

#[test]
fn ping_with_a_count_gives_up_on_an_unreachable_peer_with_a_failure_exit() {
    let port = free_udp_port();
    let id = quicpeer(&["id", "--seed", "24"])
        .output()
        .expect("quicpeer id");
    let id = String::from_utf8_lossy(&id.stdout);
    let id = id.split_whitespace().last().expect("a PeerId").to_owned();
    let target = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{id}");
    // Nothing listens there. The dial fails (at once on the ICMP error, or at the handshake
    // timeout), which with a count is a failed ping: the run ends, as ping(8)'s does.
    let output = quicpeer(&["ping", &target, "--count", "1", "--json"])
        .output()
        .expect("ping runs");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let failed = (text.lines())
        .find(|l| field(l, "event") == "ping_failed")
        .unwrap_or_else(|| panic!("a ping_failed line: {text}"));
    assert!(
        field(failed, "reason")
            .as_str()
            .is_some_and(|r| r.starts_with("dial failed")),
        "{failed}"
    );
    let summary = (text.lines())
        .find(|l| field(l, "event") == "summary")
        .unwrap_or_else(|| panic!("a summary: {text}"));
    assert_eq!(field(summary, "ok"), 0, "{summary}");
}

/// A pinger of `addr` every 50 ms, once its first ping is answered.
fn pinging(addr: &str) -> (Proc, Lines) {
    let (pinger, mut lines) = spawn(&["ping", addr, "--json", "--interval-ms", "50"]);
    assert!(lines
        .wait(0, Duration::from_secs(10), |l| field(l, "event") == "ping")
        .is_some());
    (pinger, lines)
}

/// Sends SIGTERM to a node.
#[cfg(unix)]
fn terminate(node: &Proc) {
    let status = Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// A path under the temp directory unique to this test process and `name`, not there yet.
fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("quicpeer-cli-{}-{name}", std::process::id()));
    let _ = fs::remove_file(&path);
    path
}

/// A UDP port on loopback free a moment ago.
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket.local_addr().expect("local address").port()
}

/// The peers the records of the peer book at `path` name (none while there is no such file).
fn book_peers(path: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let book: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a peer book is written whole ({e}): {text}"));
    assert_eq!(book["format"], "quicpeer-peer-book", "{text}");
    (book["records"].as_array().into_iter().flatten())
        .filter_map(|record| record["peer"].as_str().map(str::to_owned))
        .collect()
}

/// Polls `ready` every 10 ms until it holds or `timeout` passes.
fn poll_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn event(line: &str) -> String {
    field(line, "event").as_str().unwrap_or_default().to_owned()
}

/// The issue's scenario: a listener killed with SIGKILL and restarted with its peer book dials
/// its pinger back at once, and the pinger, on an idle link, is on a fresh connection well
/// before its next ping or keep-alive (5 s away) would have found the restart. What is asserted
/// is what holds however the processes are scheduled: the listener dials its book and connects
/// to the pinger, the pinger's old connection ends as the restarted peer's and a fresh one takes
/// over, and pings are answered on it. (When a packet the pinger sent just before the kill
/// reaches the restarted listener, the pinger finds the restart by itself too and both
/// reconnections race; the tie-break keeps one and a ping may fail on the other: that race is
/// allowed here.) Prints the time from reading the restarted listener's LISTEN line to reading
/// the pinger's line about the fresh connection (not asserted: how fast depends on the machine).
#[test]
fn a_listener_restarted_with_its_peer_book_dials_its_pinger_back_at_once() {
    let book = temp_path("restart-book.json");
    let book_arg = book.to_str().expect("a UTF-8 temp path").to_owned();
    let at = format!("/ip4/127.0.0.1/udp/{}/quic-v1", free_udp_port());
    let args = [
        "listen",
        "--seed",
        "1",
        "--listen",
        &at,
        "--peer-book",
        &book_arg,
        "--json",
    ];
    let (listener, mut listener_lines) = spawn(&args);
    let line = (listener_lines.wait(0, Duration::from_secs(10), |l| event(l) == "listen"))
        .expect("the listener prints its address");
    let addr = field(&line, "addr").as_str().expect("addr").to_owned();

    // Idle once connected: the next ping, and the keep-alive, are 5 s away. The settling and the
    // restart below must be over before then (they take about a second).
    let (_pinger, mut lines) = spawn(&["ping", &addr, "--interval-ms", "5000", "--json"]);
    let wait = Duration::from_secs(10);
    let pinging = (lines.wait(0, wait, |l| event(l) == "pinging")).expect("the pinger starts");
    let pinger_id = field(&pinging, "local_peer")
        .as_str()
        .expect("id")
        .to_owned();
    let connected = (lines.wait(0, wait, |l| event(l) == "connected")).expect("connected");
    let old = field(&connected, "conn");
    let first = lines.wait(0, wait, |l| event(l) == "ping" || event(l) == "ping_failed");
    let first = first.expect("the first ping, sent at once on the new connection");
    assert_eq!(field(&first, "seq"), 1, "{first}");
    assert_eq!(event(&first), "ping", "{first}");
    assert!(
        poll_until(wait, || book_peers(&book).contains(&pinger_id)),
        "the listener's peer book names the pinger: {:?}",
        fs::read_to_string(&book)
    );
    // Let the link go idle: the pinger's last packets acknowledged (the listener delays its
    // ACKs up to 25 ms). A retransmission of the pinger reaching the restarted listener would
    // draw a stateless reset and find the restart by itself, before the listener's dial does.
    std::thread::sleep(Duration::from_secs(1));

    drop(listener); // SIGKILL: nothing is sent to the pinger
    let from = lines.seen.len();
    let (_listener, mut listener_lines) = spawn(&args);
    let book_line = listener_lines.wait(0, wait, |l| event(l) == "peer_book");
    let book_line = book_line.expect("the restarted listener reads its peer book");
    assert_eq!(field(&book_line, "dialing"), 1, "{book_line}");
    let listen = listener_lines.wait_index(0, wait, |l| event(l) == "listen");
    let listen = listen.expect("the restarted listener prints its address");
    assert_eq!(field(&listener_lines.seen[listen], "addr"), addr.as_str());

    let fresh = lines.wait_index(from, wait, |l| {
        matches!(event(l).as_str(), "connected" | "reconnected")
    });
    let fresh = fresh.expect("the pinger holds a fresh connection");
    let fresh_line = lines.seen[fresh].clone();
    let all = lines.seen.join("\n");
    assert_eq!(
        field(&fresh_line, "replaced"),
        old,
        "{fresh_line} in\n{all}"
    );
    // The listener's dial from its book reached the pinger.
    let dialed_pinger = listener_lines.wait(listen, wait, |l| {
        event(l) == "connected" && field(l, "peer") == pinger_id.as_str()
    });
    assert!(
        dialed_pinger.is_some_and(|l| field(&l, "direction") == "outbound"),
        "the restarted listener dialed the pinger from its book"
    );
    let lost = lines.wait(from, wait, |l| event(l) == "connection_lost");
    let lost = lost.expect("the old connection ends");
    assert_eq!(field(&lost, "conn"), old, "{lost}");
    let cause = field(&lost, "cause");
    assert!(
        cause == "peer_restarted" || cause == "superseded",
        "{lost} in\n{all}"
    );
    let answered = lines.wait(fresh, wait, |l| event(l) == "ping");
    assert!(
        answered.is_some(),
        "a ping answered after the fresh connection:\n{all}"
    );

    let read_gap = lines.read_at[fresh].saturating_duration_since(listener_lines.read_at[listen]);
    let dialed = listener_lines.wait(listen, wait, |l| event(l) == "connected");
    let dialed = dialed.expect("the listener reports its connection");
    let listen_t = number(&listener_lines.seen[listen], "t_ms").unwrap_or(f64::NAN);
    let dialed_t = number(&dialed, "t_ms").unwrap_or(f64::NAN);
    println!(
        "restart: pinger's fresh connection read {:.3} ms after the listener's LISTEN line \
         (listener's own clock: LISTEN at {listen_t} ms, its dial connected at {dialed_t} ms)",
        read_gap.as_secs_f64() * 1e3
    );
    let _ = fs::remove_file(&book);
}

/// A listener started with a spoiled or foreign peer book reports it, starts without it, answers
/// pings, and leaves the file as it was.
#[test]
fn a_listener_with_an_unusable_peer_book_starts_without_it() {
    let id = |seed: &str| {
        let output = quicpeer(&["id", "--seed", seed]).output().expect("run id");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let foreign = format!(
        r#"{{"format":"quicpeer-peer-book","version":1,"peer":"{}","records":[
            {{"peer":"{}","addrs":["127.0.0.1:9"],"direction":"outbound","last_seen_ms":1}}]}}"#,
        id("25"),
        id("26")
    );
    let cases = [
        ("corrupt", b"\x00\xff\xfegarbage{".to_vec(), "malformed"),
        ("foreign", foreign.into_bytes(), "foreign"),
    ];
    for (name, contents, kind) in cases {
        let path = temp_path(&format!("{name}-book.json"));
        fs::write(&path, &contents).expect("write the book");
        let path_arg = path.to_str().expect("a UTF-8 temp path");
        let mut child = quicpeer(&["listen", "--seed", "24", "--json", "--peer-book", path_arg])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start quicpeer");
        let mut lines = Lines::new(child.stdout.take().expect("piped stdout"));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let listener = Proc(child);

        let wait = Duration::from_secs(10);
        let error = lines.wait(0, wait, |l| event(l) == "peer_book_error");
        let error = error.unwrap_or_else(|| panic!("{name}: no peer_book_error line"));
        assert_eq!(field(&error, "error"), kind, "{error}");
        let listen = lines.wait(0, wait, |l| event(l) == "listen");
        let listen = listen.unwrap_or_else(|| panic!("{name}: the listener did not start"));
        let addr = field(&listen, "addr").as_str().expect("addr").to_owned();
        let ping = quicpeer(&["ping", &addr, "--json", "--count", "1"])
            .output()
            .expect("run ping");
        let stdout = String::from_utf8_lossy(&ping.stdout);
        assert!(ping.status.success(), "{name}: {stdout}");
        assert!(stdout.lines().any(|l| event(l) == "ping"), "{stdout}");

        drop(listener);
        let stderr = stderr.join().expect("stderr reader");
        let said = stderr.lines().filter(|l| l.contains("peer book")).count();
        assert_eq!(said, 1, "{name}: one line on stderr:\n{stderr}");
        assert!(stderr.contains(path_arg), "{stderr}");
        assert_eq!(
            fs::read(&path).ok(),
            Some(contents),
            "{name}: left as it was"
        );
        let _ = fs::remove_file(&path);
    }
}

/// `ping --peer-book` keeps a book too: the peer it pinged, dialed by it.
#[test]
fn ping_keeps_a_peer_book_too() {
    let (_listener, _, addr) = listen("27", "/ip4/127.0.0.1/udp/0/quic-v1");
    let book = temp_path("ping-book.json");
    let book_arg = book.to_str().expect("a UTF-8 temp path");
    let output = quicpeer(&[
        "ping",
        &addr,
        "--seed",
        "28",
        "--count",
        "1",
        "--json",
        "--peer-book",
        book_arg,
    ])
    .output()
    .expect("run ping");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let line = stdout.lines().find(|l| event(l) == "peer_book");
    let line = line.unwrap_or_else(|| panic!("no peer_book line: {stdout}"));
    assert_eq!(field(line, "peers"), 0, "{line}");

    let text = fs::read_to_string(&book).expect("the book was written");
    let book_json: Value = serde_json::from_str(&text).expect("JSON");
    let records = book_json["records"].as_array().expect("records");
    let listener_id = addr.rsplit('/').next().expect("PeerId");
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(records[0]["peer"], listener_id, "{text}");
    assert_eq!(records[0]["direction"], "outbound", "{text}");
    let _ = fs::remove_file(&book);
}

/// `GET /metrics` from a node's `--metrics` endpoint: the body, or `None` on any failure.
fn scrape(url: &str) -> Option<String> {
    use std::io::Write;
    let host = url.strip_prefix("http://")?.strip_suffix("/metrics")?;
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of one sample line (`name{labels} value`) of a scrape.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The issue's check: the pinger's metrics endpoint shows the listener's restart counted (a
/// stateless reset, the loss, the redial and the recovery), and the listener's shows the
/// pinger's connection.
#[test]
fn metrics_count_a_restart_seen_by_the_pinger() {
    let port = free_udp_port();
    let at = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
    let (listener, mut listener_lines) = spawn(&[
        "listen",
        "--json",
        "--seed",
        "24",
        "--listen",
        &at,
        "--metrics",
        "127.0.0.1:0",
    ]);
    let addr = listener_lines
        .wait(0, Duration::from_secs(10), |l| event(l) == "listen")
        .map(|l| field(&l, "addr").as_str().unwrap_or_default().to_owned())
        .expect("LISTEN line");
    let listener_url = listener_lines
        .wait(0, Duration::from_secs(10), |l| event(l) == "metrics")
        .map(|l| field(&l, "url").as_str().unwrap_or_default().to_owned())
        .expect("METRICS line");
    let (_pinger, mut lines) = spawn(&[
        "ping",
        &addr,
        "--json",
        "--interval-ms",
        "50",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let url = lines
        .wait(0, Duration::from_secs(10), |l| event(l) == "metrics")
        .map(|l| field(&l, "url").as_str().unwrap_or_default().to_owned())
        .expect("the pinger prints its METRICS line");
    assert!(lines
        .wait(0, Duration::from_secs(10), |l| event(l) == "ping")
        .is_some());
    let body = scrape(&listener_url).expect("scrape the listener");
    assert_eq!(
        sample(
            &body,
            "quicpeer_handshakes_completed_total{direction=\"inbound\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "quicpeer_peers_connected"),
        Some(1.0),
        "{body}"
    );
    let before = scrape(&url).expect("scrape the pinger");
    assert_eq!(
        sample(
            &before,
            "quicpeer_restarts_detected_total{signal=\"stateless_reset\"}"
        ),
        Some(0.0),
        "{before}"
    );

    drop(listener); // SIGKILL
    let (_listener, _) = spawn(&["listen", "--json", "--seed", "24", "--listen", &at]);
    let from = lines.seen.len();
    assert!(lines
        .wait(from, Duration::from_secs(10), |l| event(l) == "reconnected")
        .is_some());
    let after = scrape(&url).expect("scrape the pinger again");
    let value = |name: &str| sample(&after, name).unwrap_or(-1.0);
    assert_eq!(
        value("quicpeer_restarts_detected_total{signal=\"stateless_reset\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(value("quicpeer_stateless_resets_received_total"), 1.0);
    assert_eq!(
        value("quicpeer_connections_lost_total{cause=\"peer_restarted\"}"),
        1.0
    );
    assert_eq!(value("quicpeer_redials_total{reason=\"reconnect\"}"), 1.0);
    assert_eq!(value("quicpeer_recovery_seconds_count"), 1.0);
    assert_eq!(
        value("quicpeer_handshakes_completed_total{direction=\"outbound\"}"),
        2.0
    );
    println!(
        "recovery after the restart: {} s",
        value("quicpeer_recovery_seconds_sum")
    );
}

/// `listen --threads 2` with `--peer-book` and `--metrics`: the shards keep one book, which
/// names every pinger whichever shard the kernel gave it, a scrape adds up the shards' metrics,
/// and the listener restarted with that book (SIGTERM, then the same command) dials them all.
#[cfg(unix)]
#[test]
fn a_sharded_listener_keeps_one_peer_book_and_serves_every_shards_metrics() {
    const PINGERS: usize = 4;
    let book = temp_path("sharded-book.json");
    let book_arg = book.to_str().expect("a UTF-8 temp path").to_owned();
    let at = format!("/ip4/127.0.0.1/udp/{}/quic-v1", free_udp_port());
    let args = [
        "listen",
        "--seed",
        "33",
        "--listen",
        &at,
        "--threads",
        "2",
        "--peer-book",
        &book_arg,
        "--metrics",
        "127.0.0.1:0",
        "--json",
    ];
    let wait = Duration::from_secs(10);
    let (listener, mut listener_lines) = spawn(&args);
    let line = (listener_lines.wait(0, wait, |l| event(l) == "listen")).expect("LISTEN line");
    let addr = field(&line, "addr").as_str().expect("addr").to_owned();
    let url = (listener_lines.wait(0, wait, |l| event(l) == "metrics"))
        .map(|l| field(&l, "url").as_str().unwrap_or_default().to_owned())
        .expect("METRICS line");

    // Each pinger its own process and source port: the kernel spreads them over the shards.
    let mut pingers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..PINGERS {
        let (pinger, mut lines) = pinging(&addr);
        let id = (lines.wait(0, wait, |l| event(l) == "pinging"))
            .map(|l| {
                field(&l, "local_peer")
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .expect("the pinger names itself");
        ids.push(id);
        pingers.push((pinger, lines));
    }
    let body = scrape(&url).expect("scrape the sharded listener");
    assert_eq!(
        sample(
            &body,
            "quicpeer_handshakes_completed_total{direction=\"inbound\"}"
        ),
        Some(PINGERS as f64),
        "{body}"
    );
    assert_eq!(
        sample(&body, "quicpeer_connections_established"),
        Some(PINGERS as f64),
        "{body}"
    );
    assert!(
        poll_until(wait, || {
            let named = book_peers(&book);
            ids.iter().all(|id| named.contains(id))
        }),
        "the book names every pinger {ids:?}: {:?}",
        fs::read_to_string(&book)
    );

    // A graceful stop writes the book once more; the restarted listener dials every pinger.
    terminate(&listener);
    assert!(
        (listener_lines.wait(0, wait, |l| event(l) == "stopped")).is_some(),
        "the listener stops"
    );
    drop(listener);
    drop(pingers);
    let (_listener, mut lines) = spawn(&args);
    let book_line = (lines.wait(0, wait, |l| event(l) == "peer_book"))
        .expect("the restarted listener reads its book");
    assert_eq!(field(&book_line, "peers"), PINGERS, "{book_line}");
    assert_eq!(field(&book_line, "dialing"), PINGERS, "{book_line}");
    let _ = fs::remove_file(&book);
}
