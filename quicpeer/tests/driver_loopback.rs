//! The mio driver on real loopback UDP: dial and ping, graceful close, restart of the listener
#![cfg(feature = "mio")]
//! on the same port (stateless reset) and on a new port (redial), IPv6.
//!
//! Each node runs on its own thread (see `support/loopback.rs`); every wait has a deadline.

#[path = "support/loopback.rs"]
mod loopback;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use loopback::{config, identity, init_tracing, Node};
use quicpeer::driver::Driver;
use quicpeer::{Cause, Event, Manager};

const WAIT: Duration = Duration::from_secs(5);

fn v4_any() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn pair(keep_alive: Option<Duration>, idle: Duration) -> (Node, Node) {
    init_tracing();
    let listener = Node::spawn(identity(1), config(keep_alive, idle), &[v4_any()]).expect("bind");
    let dialer = Node::spawn(identity(2), config(keep_alive, idle), &[v4_any()]).expect("bind");
    (listener, dialer)
}

#[test]
fn dial_and_ping() {
    let (mut listener, mut dialer) = pair(Some(Duration::from_secs(5)), Duration::from_secs(10));
    dialer.dial(listener.peer_id, vec![listener.addr()]);
    let (_, conn, replaced) = dialer
        .wait_connected(0, listener.peer_id, WAIT)
        .expect("dialer connected");
    assert_eq!(replaced, None);
    listener
        .wait_connected(0, dialer.peer_id, WAIT)
        .expect("listener saw the dialer");
    for _ in 0..5 {
        let rtt = dialer.ping(conn, WAIT).expect("ping");
        assert!(rtt < Duration::from_secs(1), "rtt {rtt:?}");
    }
    let stats = dialer.stats();
    assert!(stats.datagrams_sent > 0 && stats.datagrams_received > 0);
    println!("dialer: {stats:?}");
}

#[test]
fn graceful_close_is_seen_as_closed_by_peer() {
    let (mut listener, mut dialer) = pair(Some(Duration::from_secs(5)), Duration::from_secs(10));
    dialer.dial(listener.peer_id, vec![listener.addr()]);
    let (_, conn, _) = dialer
        .wait_connected(0, listener.peer_id, WAIT)
        .expect("connected");
    listener
        .wait_connected(0, dialer.peer_id, WAIT)
        .expect("listener connected");
    dialer.ping(conn, WAIT).expect("ping");

    let start = Instant::now();
    assert!(
        listener.shutdown(Duration::from_secs(2)),
        "the listener's connections did not drain within the grace period"
    );
    let (at, cause) = dialer
        .wait_event(0, WAIT, |e| match e {
            Event::ConnectionLost { conn: c, cause, .. } if *c == conn => Some(cause.clone()),
            _ => None,
        })
        .expect("the dialer saw the close");
    assert!(
        matches!(cause, Cause::ClosedByPeer { code: 0, .. }),
        "cause {cause:?}"
    );
    println!("close seen after {:?}", at.saturating_duration_since(start));
    // A close by the peer is not redialed.
    let peer = identity(1).peer_id();
    assert!(!dialer.exec(move |m, _| m.is_dialing(&peer)));
}

#[test]
fn listener_restart_on_the_same_port_is_detected_by_stateless_reset() {
    let (listener, mut dialer) = pair(Some(Duration::from_secs(5)), Duration::from_secs(10));
    let (peer, addr) = (listener.peer_id, listener.addr());
    dialer.dial(peer, vec![addr]);
    let (_, old, _) = dialer.wait_connected(0, peer, WAIT).expect("connected");
    dialer.ping(old, WAIT).expect("ping before the restart");

    // Crash the listener and bring it back with the same identity on the same port.
    let killed = Instant::now();
    listener.kill();
    let config = config(Some(Duration::from_secs(5)), Duration::from_secs(10));
    let _listener = Node::spawn(identity(1), config, &[addr]).expect("rebind the same port");
    let restarted = Instant::now();

    // The next packet on the stale connection draws a stateless reset.
    let from = dialer.log.len();
    let _ = dialer.ping(old, Duration::from_millis(500));
    let (detected, cause) = dialer
        .wait_event(from, WAIT, |e| match e {
            Event::ConnectionLost { conn, cause, .. } if *conn == old => Some(cause.clone()),
            _ => None,
        })
        .expect("the stale connection was lost");
    assert_eq!(cause, Cause::PeerRestarted);
    dialer
        .wait_event(from, WAIT, |e| match e {
            Event::Reconnecting { lost, .. } if *lost == old => Some(()),
            _ => None,
        })
        .expect("reconnecting");
    let (reconnected, new, replaced) = dialer
        .wait_connected(from, peer, WAIT)
        .expect("reconnected");
    assert_ne!(new, old);
    assert_eq!(replaced, Some(old));
    let rtt = dialer.ping(new, WAIT).expect("ping after the restart");
    println!(
        "restart: listener back after {:?}, reset detected {:?} after the kill, reconnected {:?} \
         after the kill, ping {rtt:?}",
        restarted - killed,
        detected.saturating_duration_since(killed),
        reconnected.saturating_duration_since(killed),
    );
    // Recovery took round trips, not an idle timeout.
    assert!(reconnected.saturating_duration_since(killed) < Duration::from_secs(2));
}

#[test]
fn listener_restart_on_a_new_port_is_found_by_redial() {
    let keep_alive = Some(Duration::from_millis(200));
    let idle = Duration::from_secs(10);
    let (listener, mut dialer) = pair(keep_alive, idle);
    let (peer, old_addr) = (listener.peer_id, listener.addr());
    dialer.dial(peer, vec![old_addr]);
    let (_, old, _) = dialer.wait_connected(0, peer, WAIT).expect("connected");
    dialer.ping(old, WAIT).expect("ping");

    listener.kill();
    let listener = Node::spawn(identity(1), config(keep_alive, idle), &[v4_any()]).expect("bind");
    let new_addr = listener.addr();
    assert_ne!(new_addr, old_addr);
    // The application learns the new address (from discovery, say) and hands it over: the
    // manager keeps it for the peer while the stale connection is still preferred ...
    let from = dialer.log.len();
    dialer.dial(peer, vec![new_addr]);
    // ... and the suspicion redial (no answer for a few probe timeouts) races the silent
    // connection over both addresses; the new port wins.
    let (_, cause) = dialer
        .wait_event(from, WAIT, |e| match e {
            Event::ConnectionLost { conn, cause, .. } if *conn == old => Some(cause.clone()),
            _ => None,
        })
        .expect("the stale connection was replaced");
    let (_, (new, addr, replaced)) = dialer
        .wait_event(from, WAIT, |e| match e {
            Event::Connected {
                peer: p,
                conn,
                addr,
                replaced,
                ..
            } if *p == peer => Some((*conn, *addr, *replaced)),
            _ => None,
        })
        .expect("reconnected at the new address");
    assert_eq!(addr, new_addr);
    assert_eq!(cause, Cause::Superseded { by: Some(new) });
    assert_eq!(replaced, Some(old));
    dialer.ping(new, WAIT).expect("ping at the new address");
    drop(listener);
}

#[test]
fn dialer_restart_on_a_new_port_is_found_by_its_new_certificate_key() {
    // Keep-alives far apart and no traffic: only the new connection can tell the listener.
    let keep_alive = Some(Duration::from_secs(5));
    let idle = Duration::from_secs(10);
    let (mut listener, dialer) = pair(keep_alive, idle);
    let peer = dialer.peer_id;
    dialer.dial(listener.peer_id, vec![listener.addr()]);
    let (_, old, _) = listener
        .wait_connected(0, peer, WAIT)
        .expect("listener saw the dialer");
    let old_addr = dialer.addr();

    dialer.kill();
    let dialer = Node::spawn(identity(2), config(keep_alive, idle), &[v4_any()]).expect("bind");
    assert_ne!(dialer.addr(), old_addr);
    let from = listener.log.len();
    dialer.dial(listener.peer_id, vec![listener.addr()]);
    let (_, (new, replaced)) = listener
        .wait_event(from, WAIT, |e| match e {
            Event::Connected {
                peer: p,
                conn,
                replaced,
                ..
            } if *p == peer => Some((*conn, *replaced)),
            _ => None,
        })
        .expect("the restarted dialer connected");
    assert_eq!(
        replaced,
        Some(old),
        "the new incarnation takes over at once"
    );
    let (_, cause) = listener
        .wait_event(from, WAIT, |e| match e {
            Event::ConnectionLost { conn, cause, .. } if *conn == old => Some(cause.clone()),
            _ => None,
        })
        .expect("the stale connection was dropped");
    assert_eq!(cause, Cause::PeerRestarted);
    listener
        .ping(new, WAIT)
        .expect("ping over the new connection");
    drop(dialer);
}

#[test]
fn ipv6_loopback() {
    init_tracing();
    let any6: SocketAddr = "[::1]:0".parse().expect("address");
    let config = config(Some(Duration::from_secs(5)), Duration::from_secs(10));
    let listener = match Node::spawn(identity(1), config.clone(), &[any6]) {
        Ok(node) => node,
        Err(e) => {
            println!("SKIPPED: this machine has no IPv6 loopback ({e})");
            return;
        }
    };
    // The dialer has a socket per family; the transmit to [::1] must leave by the IPv6 one.
    let mut dialer =
        Node::spawn(identity(2), config, &[v4_any(), any6]).expect("bind both families");
    assert_eq!(dialer.addrs.len(), 2);
    dialer.dial(listener.peer_id, vec![listener.addr()]);
    let (_, conn, _) = dialer
        .wait_connected(0, listener.peer_id, WAIT)
        .expect("connected over IPv6");
    let rtt = dialer.ping(conn, WAIT).expect("ping over IPv6");
    println!("IPv6 ping {rtt:?}");
    assert_eq!(dialer.stats().unroutable, 0);
}

/// On Linux the driver reads the ICMP port-unreachable a dial to a closed port draws, and the
/// dial fails at once instead of after the handshake timeout.
#[cfg(target_os = "linux")]
#[test]
fn a_dial_to_a_closed_port_fails_fast_on_icmp() {
    init_tracing();
    let closed = {
        let socket = std::net::UdpSocket::bind(v4_any()).expect("bind");
        socket.local_addr().expect("address")
    }; // dropped: nothing listens there now
    let mut dialer = Node::spawn(
        identity(2),
        config(Some(Duration::from_secs(5)), Duration::from_secs(10)),
        &[v4_any()],
    )
    .expect("bind");
    let start = Instant::now();
    dialer.dial(identity(1).peer_id(), vec![closed]);
    let (at, errors) = dialer
        .wait_event(0, WAIT, |e| match e {
            Event::DialFailed { errors, .. } => Some(errors.clone()),
            _ => None,
        })
        .expect("the dial failed");
    assert_eq!(
        errors,
        vec![(
            closed,
            Cause::HandshakeFailed(quicpeer::HandshakeFailure::Unreachable)
        )]
    );
    let took = at.saturating_duration_since(start);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(dialer.stats().unreachable >= 1);
    println!("dial to a closed port failed after {took:?}");
}

/// Bulk data over the driver: where the sockets have GSO, the manager hands out runs of up to
/// ten datagrams per transmit and the driver sends longer runs in one system call; the data
/// arrives intact either way.
#[test]
fn bulk_data_arrives_intact_and_goes_out_in_runs() {
    const LEN: usize = 1 << 20; // below the stream window, so the echo never blocks
    let (mut listener, mut dialer) = pair(Some(Duration::from_secs(5)), Duration::from_secs(10));
    dialer.dial(listener.peer_id, vec![listener.addr()]);
    let (_, conn, _) = dialer
        .wait_connected(0, listener.peer_id, WAIT)
        .expect("connected");
    listener
        .wait_connected(0, dialer.peer_id, WAIT)
        .expect("listener connected");
    let max = dialer.exec(|m, _| m.max_datagrams());
    assert!(max == 1 || max == 10, "max_datagrams {max}");
    let before = dialer.stats();

    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 1021) as u8).collect();
    let sent = data.clone();
    let from = dialer.log.len();
    let stream = dialer
        .exec(move |m, _| -> Result<_, String> {
            let stream = m.open_stream(conn).map_err(|e| e.to_string())?;
            let n = m.stream_write(stream, &sent).map_err(|e| e.to_string())?;
            m.stream_finish(stream).map_err(|e| e.to_string())?;
            Ok((stream, n))
        })
        .expect("write");
    assert_eq!(stream.1, LEN, "the whole buffer fits the stream window");
    let mut echoed = Vec::with_capacity(LEN);
    let done = dialer.wait_for(from, WAIT, |r| match r {
        loopback::Report::Data(s, bytes) if *s == stream.0 => {
            echoed.extend_from_slice(bytes);
            (echoed.len() >= LEN).then_some(())
        }
        _ => None,
    });
    assert!(done.is_some(), "{} of {LEN} bytes echoed", echoed.len());
    assert!(echoed == data, "the echo differs");

    let stats = dialer.stats();
    let (datagrams, calls) = (
        stats.datagrams_sent - before.datagrams_sent,
        stats.send_calls - before.send_calls,
    );
    println!("max_datagrams {max}: {datagrams} datagrams in {calls} send calls");
    if max > 1 {
        assert!(
            datagrams > 4 * calls,
            "{datagrams} datagrams in {calls} calls"
        );
    }
}

#[test]
fn a_spawned_driver_runs_on_its_thread_until_stopped_and_gives_the_driver_back() {
    init_tracing();
    let manager = |n| {
        let config = config(None, Duration::from_secs(10));
        Manager::new(
            Instant::now(),
            SystemTime::now(),
            identity(n),
            config,
            rand::random(),
        )
        .expect("manager")
    };
    let listener = Driver::bind(manager(1), &[v4_any()]).expect("bind");
    let listener_addr = listener.local_addrs()[0];
    let listener_peer = identity(1).peer_id();
    let (connected, seen) = mpsc::channel();
    let listener = listener
        .spawn(move |_, event| {
            if let Event::Connected { peer, .. } = event {
                let _ = connected.send(peer);
            }
        })
        .expect("listener thread");
    // The dialer's run ends by itself once it is connected.
    let dialer = Driver::bind(manager(2), &[v4_any()])
        .expect("bind")
        .spawn(|cx, event| {
            if let Event::Connected { .. } = event {
                cx.stop();
            }
        })
        .expect("dialer thread");
    dialer
        .handle()
        .execute(move |m, now| {
            let _ = m.dial(now, listener_peer, [listener_addr]);
        })
        .expect("the dialer runs");
    assert_eq!(seen.recv_timeout(WAIT), Ok(identity(2).peer_id()));

    // Back from their threads, both drivers still hold the connection.
    let (dialer, run) = dialer.stop().expect("the dialer's thread ended");
    run.expect("the dialer's run");
    assert_eq!(dialer.machine().connected_peers(), [listener_peer]);
    let (mut listener, run) = listener.stop().expect("the listener's thread ended");
    run.expect("the listener's run");
    assert_eq!(
        listener.machine().connected_peers(),
        [identity(2).peer_id()]
    );
    // The driver taken back is whole: it can still close gracefully.
    assert!(listener
        .shutdown(Duration::from_secs(2), |_, _| {})
        .expect("shutdown"));

    // Dropping a driver thread ends it and drops its driver: the port is free again.
    drop(listener);
    let again = Driver::bind(manager(1), &[listener_addr]).expect("bind the port again");
    drop(again.spawn(|_, _| {}).expect("thread"));
    Driver::bind(manager(1), &[listener_addr]).expect("the port is free after the drop");
}
