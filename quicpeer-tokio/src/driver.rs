//! The driver task: the one tokio task that owns the endpoint's UDP socket and runs the
//! manager's sans-IO loop (the crate doc of `quicpeer` is its tutorial). It exists so that
//! the API handles never touch the socket or the clock: they issue commands to the manager
//! under the lock and ring [`Shared::notify`]; the task does the I/O.
//!
//! Each turn: run the timers that are due, send every datagram the manager has (keeping one
//! that met a full socket buffer until the socket is writable again), dispatch the events, then
//! sleep in one `select!` on the socket being readable, the manager's next timer, the doorbell,
//! (on Linux) an ICMP error queued on the socket, and (only while a datagram waits) the socket
//! being writable. Nothing wakes it but those, so an idle endpoint costs nothing.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::shared::{now, Shared, State};

/// Datagrams read in one turn after the one that woke the task, before the manager's output is
/// drained: enough to batch a burst, few enough to keep answering.
const RECV_BATCH: usize = 64;

/// The largest UDP payload there is; the manager sends at most `Config::max_udp_payload`.
const RECV_BUF: usize = 65_535;

/// A datagram the socket could not take yet (its buffer is full).
struct Blocked {
    destination: SocketAddr,
    payload: Vec<u8>,
}

/// Runs the endpoint until it is told to stop; then marks the state stopped.
pub(crate) async fn run(shared: Arc<Shared>, socket: UdpSocket) {
    let mut recv_buf = vec![0u8; RECV_BUF];
    let mut send_buf = Vec::new();
    let mut blocked: Option<Blocked> = None;
    loop {
        let (timeout, stop) = {
            let mut state = shared.lock();
            let now = now();
            if state.manager.poll_timeout().is_some_and(|t| t <= now) {
                state.manager.handle_timeout(now);
            }
            flush(&mut state, &socket, &mut send_buf, &mut blocked, now);
            state.dispatch();
            // Dispatching does not touch the manager's output, but a last look is cheap.
            if blocked.is_none() {
                flush(&mut state, &socket, &mut send_buf, &mut blocked, now);
            }
            (state.manager.poll_timeout(), state.stop_requested)
        };
        if stop {
            break;
        }
        let sleep = timeout.map(tokio::time::Instant::from_std);
        tokio::select! {
            received = socket.recv_from(&mut recv_buf) => match received {
                Ok((len, from)) => {
                    let mut state = shared.lock();
                    let now = now();
                    state.manager.handle_datagram(now, from, None, &recv_buf[..len]);
                    for _ in 0..RECV_BATCH {
                        match socket.try_recv_from(&mut recv_buf) {
                            Ok((len, from)) => {
                                state.manager.handle_datagram(now, from, None, &recv_buf[..len]);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                debug!(error = %e, "receive failed");
                                break;
                            }
                        }
                    }
                    // Before the lock is released: a handle must never see the manager forget
                    // a connection whose loss it has not been told.
                    state.dispatch();
                }
                // An ICMP error of an earlier send surfaces here too (Linux: the socket's
                // pending error, `ECONNREFUSED`); it names no address, but the error queue
                // does, and the error readiness that would have woken `icmp_errors` may have
                // been taken with it: read the queue now.
                Err(e) => {
                    debug!(error = %e, "receive failed");
                    let mut state = shared.lock();
                    if drain_errors(&mut state, &socket) {
                        state.dispatch();
                    }
                }
            },
            () = async {
                match sleep {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            () = shared.notify.notified() => {}
            () = icmp_errors(&shared, &socket) => {}
            writable = socket.writable(), if blocked.is_some() => {
                if let Err(e) = writable {
                    warn!(error = %e, "socket failed; stopping the endpoint");
                    break;
                }
            }
        }
    }
    shared.lock().stop();
}

/// Waits for ICMP errors on the socket's error queue (Linux) and hands each unreachable
/// destination to the manager, which fails the handshakes in flight to it.
#[cfg(target_os = "linux")]
async fn icmp_errors(shared: &Shared, socket: &UdpSocket) {
    use tokio::io::Interest;
    if socket.ready(Interest::ERROR).await.is_err() {
        return std::future::pending().await;
    }
    let mut state = shared.lock();
    loop {
        match socket.try_io(Interest::ERROR, || quicpeer::icmp::read(socket)) {
            Ok(Some(unreachable)) => state.manager.handle_unreachable(now(), unreachable),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                debug!(error = %e, "reading the error queue failed");
                break;
            }
        }
    }
    state.dispatch();
}

/// Reads every error queued on the socket into the manager, outside tokio's readiness: for a
/// send or receive that reported a pending error (`ECONNREFUSED`). Returns whether any
/// destination was unreachable. Under load, one in about thirty dials to a closed port missed
/// its first ICMP error without this (the error readiness never reached `icmp_errors`) and
/// failed a probe timeout later.
#[cfg(target_os = "linux")]
fn drain_errors(state: &mut State, socket: &UdpSocket) -> bool {
    let mut any = false;
    loop {
        match quicpeer::icmp::read(socket) {
            Ok(Some(unreachable)) => {
                state.manager.handle_unreachable(now(), unreachable);
                any = true;
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                debug!(error = %e, "reading the error queue failed");
                break;
            }
        }
    }
    any
}

/// Elsewhere ICMP errors are not read.
#[cfg(not(target_os = "linux"))]
fn drain_errors(_: &mut State, _: &UdpSocket) -> bool {
    false
}

/// Elsewhere ICMP errors are not read.
#[cfg(not(target_os = "linux"))]
async fn icmp_errors(_: &Shared, _: &UdpSocket) {
    std::future::pending().await
}

/// Sends the datagram that was blocked, then the raw datagrams, then every datagram the manager
/// has, until the socket buffer is full.
fn flush(
    state: &mut State,
    socket: &UdpSocket,
    buf: &mut Vec<u8>,
    blocked: &mut Option<Blocked>,
    now: std::time::Instant,
) {
    if let Some(b) = blocked.take() {
        match socket.try_send_to(&b.payload, b.destination) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *blocked = Some(b);
                return;
            }
            Err(e) => {
                debug!(error = %e, to = %b.destination, "send failed");
                drain_errors(state, socket);
            }
            Ok(_) => {}
        }
    }
    // Datagrams outside QUIC (`Endpoint::send_raw`), first.
    while let Some((destination, payload)) = state.raw.pop_front() {
        match socket.try_send_to(&payload, destination) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *blocked = Some(Blocked {
                    destination,
                    payload,
                });
                return;
            }
            Err(e) => debug!(error = %e, to = %destination, "raw datagram not sent"),
        }
    }
    while let Some(transmit) = state.manager.poll_transmit(now, buf) {
        let payload = &buf[..transmit.size];
        match socket.try_send_to(payload, transmit.destination) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *blocked = Some(Blocked {
                    destination: transmit.destination,
                    payload: payload.to_vec(),
                });
                return;
            }
            // A datagram that cannot be sent (unreachable network, ...) is a lost packet to
            // QUIC, which recovers or times out; a pending ICMP error (`ECONNREFUSED`) is read
            // from the queue that names its destination.
            Err(e) => {
                debug!(error = %e, to = %transmit.destination, "send failed");
                drain_errors(state, socket);
            }
        }
    }
}
