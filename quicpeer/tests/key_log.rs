//! `Config::key_log`, the `SSLKEYLOGFILE` hook: both sides of a connection log the same TLS
//! secrets, on the dialer's and on the listener's rustls configuration.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quicpeer::sim::{Link, Network};
use support::*;

/// Secrets by label and client random.
type Secrets = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// The secrets one node logged.
#[derive(Debug, Default)]
struct Recorded(Mutex<Secrets>);

impl rustls::KeyLog for Recorded {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        self.0
            .lock()
            .expect("not poisoned")
            .insert((label.to_owned(), client_random.to_vec()), secret.to_vec());
    }
}

#[test]
fn both_sides_log_the_same_secrets() {
    init_tracing();
    let mut net = Network::new(31);
    net.set_default_link(Link::with_latency(Duration::from_millis(5)));
    let (dialer_log, listener_log) = (Arc::new(Recorded::default()), Arc::new(Recorded::default()));
    let mut cfg = config(Duration::from_millis(300), Duration::from_secs(10));
    cfg.key_log = Some(dialer_log.clone());
    let a = net.add_node("dialer", identity(1), cfg.clone());
    cfg.key_log = Some(listener_log.clone());
    let b = net.add_node("listener", identity(2), cfg);
    connect(&mut net, a, b);
    let dialer = dialer_log.0.lock().expect("not poisoned").clone();
    let listener = listener_log.0.lock().expect("not poisoned").clone();
    for label in [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    ] {
        assert!(
            dialer.keys().any(|(l, _)| l == label),
            "the dialer did not log {label}: {:?}",
            dialer.keys().map(|(l, _)| l).collect::<Vec<_>>()
        );
    }
    assert_eq!(dialer, listener, "the two sides logged different secrets");
}
