//! The one loop shape every sans-IO state machine of quicpeer shares.
//!
//! A driver (the mio one in `driver`, a simulator, a fuzzer, an application's own runtime)
//! needs five calls from the state machine it hosts and nothing else. [`Manager`] implements it,
//! and so does every layer stacked on top of the manager, so one driver serves them all.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::{Event, Host, Manager, Transmit};

/// A sans-IO state machine fed with datagrams and time.
///
/// Call order: after any `handle_*` call or command, drain [`SansIo::poll_transmit`] until
/// `None` and [`SansIo::poll_event`] until `None`, then wait until [`SansIo::poll_timeout`] or
/// the next datagram. `now` never goes backwards.
pub trait SansIo {
    /// What the machine reports to its application.
    type Event;

    /// Feeds one received UDP datagram.
    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        data: &[u8],
    );
    /// Runs the timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next datagram to send, its payload written into `buf`.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit>;
    /// The next event for the application.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When `handle_timeout` must be called next.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// Reports that the network declared `addr` unreachable (an ICMP error). Optional on both
    /// sides: a driver that cannot read ICMP errors never calls it, and a machine with no use
    /// for it keeps this default, which ignores it.
    fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr) {
        let _ = (now, addr);
    }
    /// Tells the machine that one transmit may carry up to `max` datagrams of one size back to
    /// back (`Transmit::segment_size`), because the driver sends such a run in one system call
    /// (GSO). Optional on both sides: a driver without segmentation offload never calls it,
    /// and a machine that keeps this default ignores it and returns one datagram per transmit.
    fn set_max_datagrams(&mut self, max: usize) {
        let _ = max;
    }
    /// The shard this machine is, if it is one of several on one port (`Config::shard`).
    /// A driver running shards checks it against the shard it gives the machine's socket.
    /// The default: not a shard.
    fn shard(&self) -> Option<u8> {
        None
    }
    /// The shard that owns the connection `datagram` is addressed to, for a driver running
    /// several shards on one port ([`Manager::datagram_shard`]). The default: none, every
    /// datagram is fed to the machine whose socket received it.
    fn datagram_shard(&self, datagram: &[u8]) -> Option<u8> {
        let _ = datagram;
        None
    }
}

impl SansIo for Manager {
    type Event = Event;

    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        data: &[u8],
    ) {
        Manager::handle_datagram(self, now, from, local_ip, data)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Manager::handle_timeout(self, now)
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        Manager::poll_transmit(self, now, buf)
    }

    fn poll_event(&mut self) -> Option<Event> {
        Manager::poll_event(self)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        Manager::poll_timeout(self)
    }

    fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr) {
        Manager::handle_unreachable(self, now, addr)
    }

    fn set_max_datagrams(&mut self, max: usize) {
        Manager::set_max_datagrams(self, max)
    }

    fn shard(&self) -> Option<u8> {
        Manager::shard(self)
    }

    fn datagram_shard(&self, datagram: &[u8]) -> Option<u8> {
        Manager::datagram_shard(self, datagram)
    }
}

/// A machine that can close all its connections for a graceful shutdown: what a driver needs
/// beside [`SansIo`] to stop without leaving its peers to their idle timeouts
/// (`Driver::shutdown` in the mio driver).
pub trait GracefulClose {
    /// Closes every connection and cancels every dial.
    fn close_all(&mut self, now: Instant);
    /// Whether every connection is gone (its close sent and its draining over).
    fn is_closed(&self) -> bool;
}

impl GracefulClose for Manager {
    fn close_all(&mut self, now: Instant) {
        Manager::close_all(self, now);
    }

    fn is_closed(&self) -> bool {
        self.connection_count() == 0
    }
}

impl GracefulClose for Host {
    fn close_all(&mut self, now: Instant) {
        self.manager_mut().close_all(now);
    }

    fn is_closed(&self) -> bool {
        self.manager().connection_count() == 0
    }
}
