//! One node with a thousand connected dialers restarts; every dialer must detect it and hold a
//! fresh connection soon after. Simulated time, so the figures are machine-independent.

mod support;

use std::time::Duration;

use quicpeer::sim::Network;
use quicpeer::{Cause, Event};
use support::*;

const DIALERS: usize = 1000;

#[test]
fn a_thousand_dialers_detect_a_restart_and_reconnect() {
    init_tracing();
    let keep_alive = Duration::from_secs(1);
    let mut net = Network::new(42);
    net.record_sent = false;
    let hub = net.add_node(
        "hub",
        identity(0),
        config(keep_alive, Duration::from_secs(10)),
    );
    let dialers: Vec<_> = (0..DIALERS)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let identity = quicpeer::Identity::from_ed25519_seed(seed);
            net.add_node(
                &format!("d{i}"),
                identity,
                config(keep_alive, Duration::from_secs(10)),
            )
        })
        .collect();
    for &d in &dialers {
        net.dial(d, hub);
    }
    let hub_peer = net.peer_id(hub);
    let all_connected = |n: &Network, since| {
        dialers
            .iter()
            .all(|&d| connected(n, d, hub_peer, since).is_some())
    };
    let start = net.now();
    assert!(net.run_until(Duration::from_secs(10), |n| all_connected(n, start)));
    net.run_for(Duration::from_millis(500));

    net.restart(hub);
    let restarted = net.now();
    let reconnected = |n: &Network| {
        dialers.iter().all(|&d| {
            connected(n, d, hub_peer, restarted)
                .is_some_and(|(_, (_, replaced))| replaced.is_some())
        })
    };
    assert!(
        net.run_until(Duration::from_secs(10), reconnected),
        "not every dialer reconnected"
    );

    let mut detection = Vec::new();
    let mut recovery = Vec::new();
    for &d in &dialers {
        let (at, cause) = find(&net, d, restarted, |e| match e {
            Event::ConnectionLost { cause, .. } => Some(cause.clone()),
            _ => None,
        })
        .expect("loss reported");
        assert_eq!(cause, Cause::PeerRestarted);
        detection.push(at - restarted);
        recovery.push(
            connected(&net, d, hub_peer, restarted)
                .expect("reconnected")
                .0
                - restarted,
        );
    }
    detection.sort();
    recovery.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() - 1) * p / 100];
    let all = *recovery.last().expect("dialers");
    println!(
        "{DIALERS} dialers, keep-alive {}: detection p50 {} p99 {} max {}; reconnected p50 {} p99 {} all {}",
        ms(keep_alive),
        ms(pct(&detection, 50)),
        ms(pct(&detection, 99)),
        ms(pct(&detection, 100)),
        ms(pct(&recovery, 50)),
        ms(pct(&recovery, 99)),
        ms(all),
    );
    // Everyone hears of the restart at its next keep-alive, and the reset pacing does not hold
    // the last dialers back by more than a fraction of a second.
    assert!(pct(&detection, 100) <= keep_alive + Duration::from_millis(500));
    assert!(
        all <= keep_alive + Duration::from_secs(1),
        "all reconnected after {}",
        ms(all)
    );
    // The hub's side of the handshakes completes half a round trip later.
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.manager(hub).map(|m| m.connected_peers().len()),
        Some(DIALERS)
    );
}
