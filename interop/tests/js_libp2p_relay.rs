//! js-libp2p 2.10 relay clients (`interop/js/relay-client.mjs`: `@libp2p/circuit-relay-v2`,
//! `@chainsafe/libp2p-quic`, noise, yamux, identify, ping; Node.js child processes) through
//! quicpeer's circuit relay v2 server over loopback: node A reserves and listens on
//! `<relay>/p2p-circuit`, node B dials A through the relay, both ping and identify each other.
//! The first js test to run installs the pinned dependencies (`npm ci`). Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quicpeer::protocols::relay::{RelayConfig, RelayEvent};
use quicpeer_interop::js;
use quicpeer_interop::relay_node::RelayNode;
use serde_json::Value;

/// How long the relay's thread may take to report what a client has already seen.
const RELAY_EVENTS: std::time::Duration = std::time::Duration::from_secs(10);

/// Node loads its modules slowly, and the machine may be loaded: a generous bound per step.
const STEP: Duration = Duration::from_secs(60);

/// A js relay client; killed when dropped.
struct JsClient {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl JsClient {
    fn spawn(args: &[&str]) -> Self {
        js::ensure_installed().expect("js dependencies");
        let mut child = Command::new("node")
            .arg("relay-client.mjs")
            .args(args)
            .current_dir(js::js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (seen before or arriving within `STEP`) for which `pick` holds.
    fn wait(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|v| pick(v)) {
            return found.clone();
        }
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(value) => {
                    self.seen.push(value.clone());
                    if pick(&value) {
                        return value;
                    }
                }
                Err(_) => panic!("no {what} within {STEP:?}; saw {:?}", self.seen),
            }
        }
    }
}

impl Drop for JsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event_is(value: &Value, event: &str, peer: &str) -> bool {
    value["event"] == event && value["peer"] == peer
}

fn peer_of(seed: u8) -> String {
    quicpeer::Identity::from_ed25519_seed([seed; 32])
        .peer_id()
        .to_string()
}

#[test]
fn js_libp2p_clients_reach_each_other_through_a_quicpeer_relay() {
    let relay = RelayNode::spawn(1, RelayConfig::default()).expect("relay");
    let (pa, pb) = (peer_of(2), peer_of(3));
    let mut a = JsClient::spawn(&["listen", "--seed", "2", "--relay", relay.addr()]);
    let reserved = a.wait("reservation", |v| {
        v["event"] == "reserved" || v["event"] == "error"
    });
    assert_eq!(reserved["event"], "reserved", "{reserved}");
    let through = format!("{}/p2p-circuit/p2p/{pa}", relay.addr());
    let mut b = JsClient::spawn(&["dial", "--seed", "3", "--addr", &through]);
    b.wait("B's ping of A", |v| {
        event_is(v, "ping", &pa) || v["event"] == "error"
    });
    assert!(
        b.seen.iter().any(|v| event_is(v, "ping", &pa)),
        "{:?}",
        b.seen
    );
    a.wait("A's ping of B", |v| event_is(v, "ping", &pb));
    a.wait("A's identify of B", |v| event_is(v, "identified", &pb));
    b.wait("B's identify of A", |v| event_is(v, "identified", &pa));
    let connected = b.wait("B's connection to A", |v| event_is(v, "connected", &pa));
    assert_eq!(connected["relayed"], true, "{connected}");
    let events = relay.relay_events_until(RELAY_EVENTS, |e| {
        matches!(e, RelayEvent::CircuitOpened { .. })
    });
    assert!(
        events.iter().any(
            |e| matches!(e, RelayEvent::ReservationAccepted { peer, .. } if peer.to_string() == pa)
        ),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RelayEvent::CircuitOpened { src, dst, .. }
            if src.to_string() == pb && dst.to_string() == pa)),
        "{events:?}"
    );
}

#[test]
fn a_refused_reservation_reaches_the_js_libp2p_client_as_its_status() {
    let mut config = RelayConfig::default();
    config.max_reservations = 0;
    let relay = RelayNode::spawn(1, config).expect("relay");
    let mut a = JsClient::spawn(&["listen", "--seed", "2", "--relay", relay.addr()]);
    let answer = a.wait("the reservation's answer", |v| {
        v["event"] == "reserved" || v["event"] == "error"
    });
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("reservation failed with status RESOURCE_LIMIT_EXCEEDED"),
        "{answer}"
    );
    let events = relay.relay_events_until(RELAY_EVENTS, |e| {
        matches!(e, RelayEvent::ReservationRefused { .. })
    });
    assert!(
        events.iter().any(|e| matches!(
            e,
            RelayEvent::ReservationRefused {
                status: quicpeer::protocols::relay::Status::ResourceLimitExceeded,
                ..
            }
        )),
        "{events:?}"
    );
}
