//! The harness behind `quicpeer bench mass-restart --loopback`, small and end to end: it
//! really crashes a hub under its peers on loopback UDP, and every peer really comes back on a
//! fresh connection. Counts are checked, no time is (benchmarks are not tests); every wait of
//! the harness has a bound.
#![cfg(feature = "mio")]

use std::time::Duration;

use quicpeer_bench::mass_restart_loopback::{measure, Params};

#[test]
fn every_peer_of_a_crashed_hub_reconnects_on_loopback() {
    let peers = 16;
    let params = Params {
        keep_alive: Duration::from_millis(300),
        timeout: Duration::from_secs(30),
        ..Params::new(peers)
    };
    let outcome = measure(&params).expect("the mass restart completes");
    assert_eq!(outcome.peers, peers);
    // Every peer lost its old connection and holds a fresh one, which the new hub knows.
    assert_eq!(outcome.by_reset + outcome.by_other, peers);
    assert_eq!(outcome.hub_connected, peers);
    // Idle peers learn of the crash from the new hub's stateless resets (suspicion could beat
    // one on a starved machine, not all of them).
    assert!(outcome.by_reset > 0, "{outcome:?}");
    // At this size nothing is refused and nothing times out: no dial failed, so none was
    // retried by the manager or given up on and redialed by the fleet.
    assert_eq!(outcome.failed_dials, 0, "{outcome:?}");
    assert_eq!(outcome.app_redials, 0, "{outcome:?}");
    // The new hub's driver heard every peer, and every datagram had a socket to go out of.
    assert!(
        outcome.hub_driver.datagrams_received >= peers as u64,
        "{outcome:?}"
    );
    assert_eq!(outcome.hub_driver.unroutable, 0, "{outcome:?}");
}

#[test]
fn a_hub_that_dials_its_peer_book_is_found_by_every_peer_through_the_restart_epoch() {
    let peers = 16;
    let params = Params {
        // Keep-alives far apart: a peer that finds the restart before its timer does so
        // through the hub's dial.
        keep_alive: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        hub_peer_book: true,
        ..Params::new(peers)
    };
    let outcome = measure(&params).expect("the mass restart completes");
    assert_eq!(outcome.peers, peers);
    assert_eq!(outcome.hub_connected, peers);
    // Every old connection ended as PeerRestarted (the new certificate key, or a reset if a
    // keep-alive happened to come first), and no peer had to dial.
    assert_eq!(outcome.by_reset, peers, "{outcome:?}");
    assert_eq!(outcome.failed_dials, 0, "{outcome:?}");
    assert_eq!(outcome.app_redials, 0, "{outcome:?}");
    assert_eq!(outcome.hub_driver.unroutable, 0, "{outcome:?}");
}

#[test]
fn a_sharded_hub_restarts_under_its_peers_and_hands_over_the_answers_to_its_dials() {
    let peers = 16;
    let params = Params {
        keep_alive: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        hub_peer_book: true,
        hub_threads: 2,
        ..Params::new(peers)
    };
    let outcome = measure(&params).expect("the mass restart completes");
    assert_eq!(outcome.peers, peers);
    // Each shard dials its share of the book; the answers come back to whichever socket the
    // kernel's hash picks, and those for the other shard are handed over, not reset: every
    // peer is found through the restart epoch and none has to dial.
    assert_eq!(outcome.by_reset, peers, "{outcome:?}");
    assert!(outcome.hub_connected >= peers, "{outcome:?}");
    assert_eq!(outcome.failed_dials, 0, "{outcome:?}");
    assert_eq!(outcome.app_redials, 0, "{outcome:?}");
    assert_eq!(outcome.hub_driver.forward_dropped, 0, "{outcome:?}");
}
