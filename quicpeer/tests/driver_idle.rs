//! The driver sleeps when there is nothing to do: it wakes for I/O, timers and commands only.
#![cfg(feature = "mio")]

#[path = "support/loopback.rs"]
mod loopback;

use std::net::SocketAddr;
use std::time::Duration;

use loopback::{config, identity, init_tracing, Node};

#[test]
fn an_idle_driver_does_not_busy_loop() {
    init_tracing();
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    // No keep-alive: an idle connection has nothing to do for the idle timeout.
    let config = config(None, Duration::from_secs(30));
    let mut listener = Node::spawn(identity(1), config.clone(), &[any]).expect("bind");
    let mut dialer = Node::spawn(identity(2), config, &[any]).expect("bind");
    dialer.dial(listener.peer_id, vec![listener.addr()]);
    let (_, conn, _) = dialer
        .wait_connected(0, listener.peer_id, Duration::from_secs(5))
        .expect("connected");
    listener
        .wait_connected(0, dialer.peer_id, Duration::from_secs(5))
        .expect("listener connected");
    dialer.ping(conn, Duration::from_secs(5)).expect("ping");
    // Let the tail of the handshake settle (acknowledgements, path MTU probes).
    std::thread::sleep(Duration::from_millis(500));

    let before = (dialer.stats(), listener.stats());
    // The quiet period is what is measured; correctness does not depend on its length.
    std::thread::sleep(Duration::from_secs(1));
    let after = (dialer.stats(), listener.stats());
    for (name, b, a) in [
        ("dialer", before.0, after.0),
        ("listener", before.1, after.1),
    ] {
        let wakeups = a.wakeups - b.wakeups;
        let timeouts = a.timeouts - b.timeouts;
        println!(
            "{name}: {wakeups} wake-ups, {timeouts} timer runs in a quiet second \
             ({} datagrams in, {} out)",
            a.datagrams_received - b.datagrams_received,
            a.datagrams_sent - b.datagrams_sent
        );
        // One wake-up is the stats request itself; a few timers may still fire.
        assert!(
            wakeups <= 10,
            "{name} woke {wakeups} times in a quiet second"
        );
    }
}
