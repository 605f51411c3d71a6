//! Smoke tests: the iroh stacks really complete their workloads at tiny sizes. No figure is
//! checked: benchmarks never run in `cargo test`.

use std::time::Duration;

use compare_iroh::{handshake, reconnect, throughput};
use quicpeer_bench::compare::reconnect as rc;

#[test]
fn iroh_handshakes_complete() {
    for tickets in [None, Some(0)] {
        let round = handshake::measure_iroh(1, 0, tickets).expect("iroh handshakes");
        assert_eq!(round.round.count, 1);
        assert!(!round.round.wall.is_zero());
    }
}

#[test]
fn iroh_transfer_completes() {
    let transfer = throughput::measure_iroh(1 << 20).expect("iroh transfer");
    assert_eq!(transfer.transfer.bytes, 1 << 20);
    assert!(transfer.transfer.datagrams.is_some_and(|d| d > 0));
}

/// One restart waits out iroh's idle timeout (about 30 s): `cargo test -- --ignored`.
#[test]
#[ignore]
fn iroh_listener_restart_recovers() {
    let settings = reconnect::Settings {
        iroh_restarts: 1,
        iroh_timeout: Duration::from_secs(90),
        others: rc::Settings {
            pairs: Vec::new(),
            spacing: Duration::from_millis(200),
            ..rc::Settings::default()
        },
    };
    let samples = reconnect::measure(&settings, &mut |_| {}).expect("iroh restarts");
    assert_eq!(samples.len(), 1);
    assert!(samples[0].first_ping.is_some(), "{:?}", samples[0]);
    assert_ne!(samples[0].how, "not detected");
}
