//! One UDP socket of the driver: binding, batched receive and (segmented) send.
//!
//! This is the only place that knows how datagrams reach the kernel. quinn-udp does the
//! platform work: `recvmmsg` with GRO on Linux (one syscall returns many datagrams), GSO on
//! send (one syscall sends a run of equal-size datagrams), ECN marks, and the local address a
//! datagram arrived on (`IP_PKTINFO`), which the manager needs when the socket is bound to an
//! unspecified address. socket2 creates the socket so that an IPv6 socket can be IPv6-only
//! and share its port number with an IPv4 socket.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use mio::net::UdpSocket as MioSocket;
use quinn_udp::{EcnCodepoint, RecvMeta, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

/// Bytes per receive buffer: the largest UDP payload, which also bounds a GRO batch.
pub(crate) const RECV_CHUNK: usize = 64 * 1024;
/// Receive buffers handed to one `recv` call (recvmmsg's batch); quinn-udp's batch or less.
pub(crate) const RECV_BATCH: usize = if quinn_udp::BATCH_SIZE < 8 {
    quinn_udp::BATCH_SIZE
} else {
    8
};
/// Upper bound on the payload of one segmented send.
pub(crate) const MAX_GSO_BYTES: usize = 64_000;

/// The receive and send buffers [`bind`] asks the kernel for, in bytes.
///
/// A node serving many peers receives in bursts: after it restarts, every peer's handshake
/// arrives within one keep-alive interval. Linux's default receive buffer (208 KiB) holds about
/// a hundred Initial packets; the rest are dropped, and each dropped Initial costs its client
/// a probe timeout (1 s, then 2 s, ...) or the whole handshake. 4 MiB holds a restart's burst
/// from thousands of peers (`docs/benchmarks.md`, mass restart on loopback). The kernel caps
/// the request at `net.core.rmem_max` / `net.core.wmem_max`; raise those to let it through.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Creates a non-blocking UDP socket bound to `addr`, as the driver binds its own: IPv6
/// sockets are IPv6-only, and the buffers are [`SOCKET_BUFFER`] where the kernel allows.
/// For [`Driver::from_sockets`](super::Driver::from_sockets) when the application must own
/// the socket (to rebind the same port, say) but wants the driver's settings.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind_with(addr, false)
}

/// Like [`bind`], with `SO_REUSEPORT` set before binding, so that several sockets (of this
/// process, or of any process of the same user that sets it too) share `addr`'s port and the
/// kernel spreads the remote addresses over them by a hash of the 4-tuple: what
/// [`Sharded`](super::Sharded) binds. Unix only (`Unsupported` elsewhere); on Linux every
/// socket of the group must set it.
pub fn bind_reuse_port(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind_with(addr, true)
}

fn bind_with(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    grow_buffers(&socket);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(unix)]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(unix))]
fn set_reuse_port(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_REUSEPORT is a Unix socket option",
    ))
}

/// Asks for [`SOCKET_BUFFER`]-sized buffers; what the kernel grants is logged, and a receive
/// buffer far smaller than asked is worth a warning (bursts will be dropped).
fn grow_buffers(socket: &Socket) {
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!("cannot set the receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!("cannot set the send buffer: {e}");
    }
    let recv = socket.recv_buffer_size().unwrap_or(0);
    let send = socket.send_buffer_size().unwrap_or(0);
    tracing::debug!(recv, send, asked = SOCKET_BUFFER, "socket buffers");
    if recv < SOCKET_BUFFER / 4 {
        tracing::warn!(
            recv,
            asked = SOCKET_BUFFER,
            "the kernel granted a small UDP receive buffer: bursts of packets (handshakes after \
             a restart) may be dropped; raise net.core.rmem_max"
        );
    }
}

/// A bound socket registered with the driver's poll.
pub(crate) struct UdpSocket {
    pub(crate) io: MioSocket,
    state: UdpSocketState,
    pub(crate) local: SocketAddr,
    /// mio is edge-triggered: set by a readable event, cleared by `WouldBlock`.
    pub(crate) readable: bool,
    /// A send hit `WouldBlock`; WRITABLE interest is registered until the socket drains.
    pub(crate) blocked: bool,
    /// ICMP errors may be queued (Linux, see `icmp`).
    pub(crate) errors: bool,
}

impl UdpSocket {
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let io = MioSocket::from_std(socket);
        let state = UdpSocketState::new(UdpSockRef::from(&io))?;
        #[cfg(target_os = "linux")]
        if let Err(e) = crate::icmp::enable(&io, local.is_ipv6()) {
            tracing::debug!(%local, "ICMP errors will not be read: {e}");
        }
        Ok(Self {
            io,
            state,
            local,
            // Datagrams may have arrived before registration: look once.
            readable: true,
            blocked: false,
            errors: false,
        })
    }

    /// The next destination an ICMP error declared unreachable; `Ok(None)` for an error of
    /// another kind, `Err(WouldBlock)` once no error is queued.
    pub(crate) fn take_error(&self) -> io::Result<Option<SocketAddr>> {
        #[cfg(target_os = "linux")]
        return crate::icmp::read(&self.io);
        #[cfg(not(target_os = "linux"))]
        Err(io::ErrorKind::WouldBlock.into())
    }

    pub(crate) fn is_ipv4(&self) -> bool {
        self.local.is_ipv4()
    }

    /// Datagrams one send may carry, 1 where the platform has no segmentation offload.
    pub(crate) fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// Receives into `buf` (split in `RECV_CHUNK` pieces); returns how many `meta` were filled.
    pub(crate) fn recv(&self, buf: &mut [u8], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let mut chunks = buf.chunks_mut(RECV_CHUNK);
        let mut slices: [IoSliceMut<'_>; RECV_BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        self.state
            .recv(UdpSockRef::from(&self.io), &mut slices, meta)
    }

    /// Sends `contents` (one datagram, or a run of `segment_size` datagrams) to `destination`.
    /// Only `WouldBlock` is returned as an error; quinn-udp logs and drops the others, as a
    /// lost datagram is something QUIC recovers from anyway.
    pub(crate) fn send(
        &self,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
        src_ip: Option<IpAddr>,
        ecn: Option<u8>,
    ) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination,
            ecn: ecn.and_then(EcnCodepoint::from_bits),
            contents,
            segment_size,
            src_ip,
        };
        self.state.send(UdpSockRef::from(&self.io), &transmit)
    }
}
