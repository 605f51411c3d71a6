//! The driver task: the one tokio task that owns the endpoint's UDP socket and runs the
//! manager's sans-IO loop (the crate doc of `quicpeer` is its tutorial). It exists so that
//! the API handles never touch the socket or the clock: they issue commands to the manager
//! under the lock and ring [`Shared::notify`]; the task does the I/O.
//!
//! Each turn: run the timers that are due, send every datagram the manager has (keeping the
//! ones that met a full socket buffer until the socket is writable again), dispatch the events,
//! then sleep in one `select!` on the socket being readable, the manager's next timer (one
//! `Sleep`, reset only when the deadline moves), the doorbell, (on Linux) an ICMP error queued
//! on the socket, and (only while datagrams wait) the socket being writable. Nothing wakes it
//! but those, so an idle endpoint costs nothing.
//!
//! # Batching
//!
//! As the mio driver does, through quinn-udp: on Linux one `recvmmsg` returns up to a batch of
//! datagrams, each buffer possibly a GRO run of same-size datagrams; on send, consecutive
//! datagrams to one destination of equal size go out in one GSO `sendmsg` (up to the socket's
//! segment count and 64 000 bytes), and the manager is let to build runs of up to 10 datagrams
//! per transmit ([`Manager::set_max_datagrams`](quicpeer::Manager::set_max_datagrams)). Where
//! the platform has no GSO, one datagram per syscall.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use quinn_udp::{EcnCodepoint, RecvMeta, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, trace, warn};

use crate::shared::{now, Shared, State};

/// Bytes per receive buffer: the largest UDP payload, which also bounds a GRO batch.
const RECV_CHUNK: usize = 64 * 1024;

/// Receive buffers handed to one `recv` call (recvmmsg's batch); quinn-udp's batch or less.
const RECV_BATCH: usize = if quinn_udp::BATCH_SIZE < 8 {
    quinn_udp::BATCH_SIZE
} else {
    8
};

/// `recv` calls per wake-up before output, timers and the API's tasks get their turn.
const RECV_CALLS_PER_TURN: usize = 16;

/// Datagrams taken from the manager before they are sent (counted in datagrams, not
/// transmits: a larger batch only delays the first send and lengthens the burst).
const OUT_BATCH: usize = 64;

/// Upper bound on the payload of one segmented send.
const MAX_GSO_BYTES: usize = 64_000;

/// Datagrams the manager may put in one transmit where the socket has GSO (quinn's own driver
/// asks quinn-proto for at most 10; the outbox merges consecutive transmits into longer runs).
const MAX_TRANSMIT_DATAGRAMS: usize = 10;

/// The receive and send buffers the socket asks the kernel for, in bytes: the mio driver's
/// (`quicpeer::driver::SOCKET_BUFFER`). The kernel caps the request at `net.core.rmem_max` /
/// `net.core.wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// The endpoint's socket and quinn-udp's state of it.
pub(crate) struct Socket {
    io: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
}

impl Socket {
    /// Binds a non-blocking UDP socket at `addr` with large buffers (IPv6 sockets are
    /// IPv6-only), sets it up for batching and ICMP errors, and registers it with the current
    /// runtime.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Socket> {
        use socket2::{Domain, Protocol, Type};
        let socket =
            socket2::Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
            debug!(error = %e, "cannot set the receive buffer");
        }
        if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
            debug!(error = %e, "cannot set the send buffer");
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let std_socket: std::net::UdpSocket = socket.into();
        let state = UdpSocketState::new(UdpSockRef::from(&std_socket))?;
        let io = UdpSocket::from_std(std_socket)?;
        let local = io.local_addr()?;
        #[cfg(target_os = "linux")]
        if let Err(e) = quicpeer::icmp::enable(&io, local.is_ipv6()) {
            debug!(error = %e, "ICMP errors will not be read");
        }
        debug!(%local, gso = state.max_gso_segments(), gro = state.gro_segments(), "socket bound");
        Ok(Socket { io, state, local })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagrams one send may carry, 1 where the platform has no segmentation offload.
    fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// Datagrams the manager may put in one transmit on this socket.
    pub(crate) fn transmit_datagrams(&self) -> usize {
        self.max_segments().min(MAX_TRANSMIT_DATAGRAMS)
    }
}

/// A datagram (or GSO run) taken from the manager, waiting in `Outbox::buf`.
#[derive(Debug, Clone, Copy)]
struct Out {
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
    ecn: Option<u8>,
    start: usize,
    len: usize,
    segment_size: Option<usize>,
}

/// Datagrams taken from the manager and not yet sent, stored back to back so that a run of
/// them is one contiguous GSO payload.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    items: VecDeque<Out>,
    /// A send met a full socket buffer: nothing more goes out until the socket is writable.
    blocked: bool,
}

impl Outbox {
    /// Queues one payload; a run longer than the socket can send at once is queued datagram
    /// by datagram (GSO was switched off after the manager built it).
    fn push(&mut self, out: Out, payload: &[u8], max_segments: usize) {
        let seg = out.segment_size.unwrap_or(payload.len()).max(1);
        if payload.len().div_ceil(seg) > max_segments {
            for datagram in payload.chunks(seg) {
                self.push_one(
                    Out {
                        segment_size: None,
                        ..out
                    },
                    datagram,
                );
            }
        } else {
            self.push_one(out, payload);
        }
    }

    fn push_one(&mut self, out: Out, payload: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(payload);
        self.items.push_back(Out {
            start,
            len: payload.len(),
            ..out
        });
    }
}

/// The driver's buffers, kept across turns.
struct Io {
    recv_buf: Vec<u8>,
    recv_meta: [RecvMeta; RECV_BATCH],
    scratch: Vec<u8>,
    outbox: Outbox,
}

/// Runs the endpoint until it is told to stop; then marks the state stopped.
pub(crate) async fn run(shared: Arc<Shared>, socket: Socket) {
    let mut io = Io {
        recv_buf: vec![0u8; RECV_CHUNK * RECV_BATCH],
        recv_meta: [RecvMeta::default(); RECV_BATCH],
        scratch: Vec::new(),
        outbox: Outbox::default(),
    };
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        let (timeout, stop) = {
            let mut state = shared.lock();
            let now = now();
            if state.manager.poll_timeout().is_some_and(|t| t <= now) {
                state.manager.handle_timeout(now);
            }
            flush(&mut state, &socket, &mut io, now);
            state.dispatch();
            // Dispatching does not touch the manager's output, but a last look is cheap.
            if !io.outbox.blocked {
                flush(&mut state, &socket, &mut io, now);
            }
            (state.manager.poll_timeout(), state.stop_requested)
        };
        if stop {
            break;
        }
        if timeout != armed {
            if let Some(at) = timeout {
                sleep.as_mut().reset(tokio::time::Instant::from_std(at));
            }
            armed = timeout;
        }
        let blocked = io.outbox.blocked;
        tokio::select! {
            ready = socket.io.readable() => match ready {
                Ok(()) => {
                    let mut state = shared.lock();
                    receive(&mut state, &socket, &mut io);
                    // Before the lock is released: a handle must never see the manager forget
                    // a connection whose loss it has not been told.
                    state.dispatch();
                }
                Err(e) => {
                    warn!(error = %e, "socket failed; stopping the endpoint");
                    break;
                }
            },
            () = &mut sleep, if armed.is_some() => {}
            () = shared.notify.notified() => {}
            () = icmp_errors(&shared, &socket.io) => {}
            writable = socket.io.writable(), if blocked => {
                if let Err(e) = writable {
                    warn!(error = %e, "socket failed; stopping the endpoint");
                    break;
                }
                io.outbox.blocked = false;
            }
        }
    }
    shared.lock().stop();
}

/// Reads what the socket holds (up to a budget) and feeds it to the manager.
fn receive(state: &mut State, socket: &Socket, io: &mut Io) {
    let local_ip = Some(socket.local.ip()).filter(|ip| !ip.is_unspecified());
    for _ in 0..RECV_CALLS_PER_TURN {
        let received = {
            let mut chunks = io.recv_buf.chunks_mut(RECV_CHUNK);
            let mut slices: [IoSliceMut<'_>; RECV_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            socket.io.try_io(Interest::READABLE, || {
                socket
                    .state
                    .recv(UdpSockRef::from(&socket.io), &mut slices, &mut io.recv_meta)
            })
        };
        match received {
            Ok(count) => {
                state.stats.recv_calls += 1;
                let now = now();
                let chunks = io.recv_buf.chunks(RECV_CHUNK);
                for (meta, chunk) in io.recv_meta.iter().zip(chunks).take(count) {
                    let data = chunk.get(..meta.len).unwrap_or(chunk);
                    let stride = if meta.stride == 0 {
                        data.len()
                    } else {
                        meta.stride
                    };
                    for datagram in data.chunks(stride.max(1)) {
                        state.stats.datagrams_received += 1;
                        state.manager.handle_datagram(
                            now,
                            meta.addr,
                            meta.dst_ip.or(local_ip),
                            datagram,
                        );
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // An ICMP error of an earlier send surfaces here too (Linux: the socket's pending
            // error, `ECONNREFUSED`); it names no address, but the error queue does, and the
            // error readiness that would have woken `icmp_errors` may have been taken with it:
            // read the queue now.
            Err(e) => {
                debug!(error = %e, "receive failed");
                drain_errors(state, &socket.io);
                return;
            }
        }
    }
}

/// Waits for ICMP errors on the socket's error queue (Linux) and hands each unreachable
/// destination to the manager, which fails the handshakes in flight to it.
#[cfg(target_os = "linux")]
async fn icmp_errors(shared: &Shared, socket: &UdpSocket) {
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

/// Sends the datagrams waiting in the outbox, then the raw datagrams and every datagram the
/// manager has, until there are no more or the socket buffer is full.
fn flush(state: &mut State, socket: &Socket, io: &mut Io, now: Instant) {
    let Io {
        outbox, scratch, ..
    } = io;
    if outbox.blocked {
        return;
    }
    loop {
        if outbox.items.is_empty() {
            outbox.buf.clear();
            let max = socket.max_segments();
            let mut datagrams = 0;
            // Datagrams outside QUIC (`Endpoint::send_raw`), first.
            while let Some((destination, payload)) = state.raw.pop_front() {
                let out = Out {
                    destination,
                    src_ip: None,
                    ecn: None,
                    start: 0,
                    len: 0,
                    segment_size: None,
                };
                outbox.push(out, &payload, max);
                datagrams += 1;
            }
            while datagrams < OUT_BATCH {
                let Some(t) = state.manager.poll_transmit(now, scratch) else {
                    break;
                };
                let payload = scratch.get(..t.size).unwrap_or(scratch);
                datagrams += payload
                    .len()
                    .div_ceil(t.segment_size.unwrap_or(t.size).max(1));
                let out = Out {
                    destination: t.destination,
                    src_ip: t.src_ip,
                    ecn: t.ecn,
                    start: 0,
                    len: 0,
                    segment_size: t.segment_size,
                };
                outbox.push(out, payload, max);
            }
            if outbox.items.is_empty() {
                return;
            }
        }
        if !send_outbox(state, socket, outbox) {
            return;
        }
    }
}

/// Sends the outbox in runs; returns `false` if the socket buffer is full.
fn send_outbox(state: &mut State, socket: &Socket, outbox: &mut Outbox) -> bool {
    while let Some(&first) = outbox.items.front() {
        // A run: same destination, source and ECN; datagrams of one size but for a shorter
        // last one, whether they came one per transmit or already segmented.
        let seg = first.segment_size.unwrap_or(first.len).max(1);
        let max = socket.max_segments();
        let mut count = 1;
        let mut segments = first.len.div_ceil(seg);
        let mut end = first.start + first.len;
        if first.len % seg == 0 {
            for next in outbox.items.iter().skip(1) {
                let next_segments = next
                    .len
                    .div_ceil(next.segment_size.unwrap_or(next.len).max(1));
                let fits = next.destination == first.destination
                    && next.src_ip == first.src_ip
                    && next.ecn == first.ecn
                    && next.len > 0
                    && match next.segment_size {
                        Some(size) => size == seg,
                        None => next.len <= seg,
                    }
                    && segments + next_segments <= max
                    && end - first.start + next.len <= MAX_GSO_BYTES;
                if !fits {
                    break;
                }
                count += 1;
                segments += next_segments;
                end += next.len;
                if next.len % seg != 0 {
                    break;
                }
            }
        }
        let contents = outbox.buf.get(first.start..end).unwrap_or_default();
        let transmit = quinn_udp::Transmit {
            destination: first.destination,
            ecn: first.ecn.and_then(EcnCodepoint::from_bits),
            contents,
            segment_size: (segments > 1).then_some(seg),
            src_ip: first.src_ip,
        };
        let sent = socket.io.try_io(Interest::WRITABLE, || {
            socket
                .state
                .try_send(UdpSockRef::from(&socket.io), &transmit)
        });
        match sent {
            Ok(()) => {
                state.stats.send_calls += 1;
                state.stats.datagrams_sent += segments as u64;
                trace!(to = %first.destination, bytes = contents.len(), count, "sent");
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                state.stats.send_blocked += 1;
                outbox.blocked = true;
                return false;
            }
            // A datagram that cannot be sent is a lost packet to QUIC, which recovers or times
            // out (EMSGSIZE: an MTU probe too large for the path); a pending ICMP error
            // (`ECONNREFUSED`) is read from the queue that names its destination.
            Err(e) => {
                debug!(error = %e, to = %first.destination, "send failed");
                drain_errors(state, &socket.io);
            }
        }
        outbox.items.drain(..count);
    }
    true
}
