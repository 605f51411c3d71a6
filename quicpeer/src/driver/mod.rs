//! The real-socket driver: any [`SansIo`] machine of quicpeer on UDP sockets, with mio.
//!
//! The core never reads a clock and never touches a socket, so something has to; this module is
//! that something and nothing more (a *thin* driver: no protocol decision lives here). It owns
//! the UDP socket(s) and the clock, and runs the one loop of the sans-IO contract:
//!
//! 1. read every ready datagram and feed it to [`SansIo::handle_datagram`];
//! 2. call [`SansIo::handle_timeout`] when [`SansIo::poll_timeout`] is due;
//! 3. flush [`SansIo::poll_transmit`]; a datagram the kernel refuses with `WouldBlock` is kept
//!    and WRITABLE interest is registered until the socket drains (and only then);
//! 4. hand each event to the application's callback, which gets `&mut M` to issue commands;
//! 5. sleep until [`SansIo::poll_timeout`], a datagram, a writable socket or a command.
//!
//! It is generic over `M: SansIo`, so it hosts a bare [`Manager`](crate::Manager) or any layer
//! built on top of one.
//!
//! # Talking to the machine
//!
//! * **On the driver's thread**: the callback given to [`Driver::run`] / [`Driver::run_until`]
//!   receives each event with a [`Context`] that dereferences to `&mut M`, so the application
//!   reacts in place (open a stream, write, dial, close) with the `now` of that turn; between
//!   runs, [`Driver::machine_mut`] and [`Driver::now`] do the same. Application timers are
//!   the `deadline` of `run_until`: run until the next tick, do the tick's work, repeat.
//! * **From another thread**: [`Driver::handle`] gives a cloneable, `Send` [`Handle`] that
//!   queues boxed commands `FnOnce(&mut M, Instant)` on a channel and wakes the poll with a
//!   [`mio::Waker`]; [`Handle::stop`] makes `run` return (a signal handler's thread uses it).
//!   A command that must answer sends its answer on a channel of its own.
//!   [`Driver::spawn`] puts the run itself on a thread of its own and keeps its handle, for an
//!   application whose own thread does something else; stopping the [`DriverThread`] gives the
//!   driver back.
//!
//! The callback style keeps the driver single-threaded and lock-free: the machine is only ever
//! touched on the driver's thread, and the handle is the one door in from outside.
//!
//! # Sockets
//!
//! One socket per address family at most; each transmit goes out of the socket of its
//! destination's family (IPv4-mapped IPv6 destinations go out of the IPv4 socket). IPv6 sockets
//! are IPv6-only, so `0.0.0.0:P` and `[::]:P` can be bound side by side.
//!
//! # Shards: every core on one port
//!
//! One driver runs one machine on one thread. [`Sharded`] runs N of them on one UDP port
//! (`SO_REUSEPORT`, [`bind_reuse_port`]), each a manager of the same identity built with
//! `Config::for_shard(i, n)`: the kernel spreads remote addresses over the sockets, and a
//! datagram whose connection ID names another shard (its sender's address changed, or it
//! answers another shard's dial) is handed to that shard through a bounded queue
//! ([`FORWARD_QUEUE`]) and its waker, never answered with a stateless reset. Each shard knows
//! only its own connections and enforces its share of the limits; the [`Sharded`]
//! documentation says what that means for peers, limits, peer books and dials.
//!
//! # Batching
//!
//! Through quinn-udp: on Linux one `recvmmsg` returns up to a batch of datagrams, each buffer
//! possibly holding a GRO run of same-size datagrams; on send, consecutive datagrams to one
//! destination of equal size go out in one GSO `sendmsg` (up to the socket's segment count and
//! 64 000 bytes), whether the machine gave them one per transmit or already as a run: where
//! the sockets have GSO, the driver lets the machine batch up to 10 datagrams per transmit
//! ([`SansIo::set_max_datagrams`]), which saves the machine work per datagram. Elsewhere it
//! falls back to one datagram per syscall. A send blocked on one socket holds back all output until it drains
//! (head-of-line across families, which only matters when a socket buffer is full).
//!
//! # ICMP errors
//!
//! On Linux the sockets queue the ICMP errors their datagrams draw (`IP_RECVERR`); the driver
//! drains them on `EPOLLERR` and reports each unreachable destination with
//! [`SansIo::handle_unreachable`], so a dial to a closed port fails in a round trip instead of a
//! handshake timeout. Elsewhere such errors are not read.
//!
//! # Shutdown
//!
//! [`Driver::shutdown`] closes every connection (for machines implementing [`GracefulClose`])
//! and keeps driving until they are gone or a deadline passes, so the peers see a close instead
//! of waiting for their idle timeout. Dropping the driver without it is a crash, as far as the
//! peers can tell.
//!
//! ```no_run
//! use std::time::{Duration, Instant, SystemTime};
//! use quicpeer::driver::Driver;
//! use quicpeer::{Config, Event, Identity, Manager};
//!
//! let identity = Identity::from_ed25519_seed([1; 32]);
//! let manager = Manager::new(Instant::now(), SystemTime::now(), identity, Config::default(), rand::random())?;
//! let mut driver = Driver::bind(manager, &["127.0.0.1:4001".parse()?])?;
//! let stop = driver.handle();
//! // e.g. from a signal handler's thread: stop.stop()
//! driver.run(|cx, event| {
//!     if let Event::Connected { peer, .. } = event {
//!         println!("{peer} connected; {} connection(s)", cx.connection_count());
//!     }
//! })?;
//! driver.shutdown(Duration::from_secs(1), |_, _| {})?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod shards;
mod socket;
mod thread;

pub use shards::{Sharded, ShardedThreads, FORWARD_QUEUE};
pub use socket::{bind, bind_reuse_port, SOCKET_BUFFER};
pub use thread::{DriverThread, Stopped};

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use quinn_udp::RecvMeta;
use tracing::{debug, trace, warn};

use crate::{GracefulClose, SansIo};
use socket::{UdpSocket, MAX_GSO_BYTES, RECV_BATCH, RECV_CHUNK};

const WAKER: Token = Token(usize::MAX);
/// `recv` calls per socket per wake-up before output and timers get their turn.
const RECV_CALLS_PER_TURN: usize = 16;
/// Datagrams taken from the machine before they are sent (counted in datagrams, not
/// transmits: a larger batch only delays the first send and makes the burst the receiver's
/// socket buffer must absorb longer).
const OUT_BATCH: usize = 64;
/// Rounds of commands/timers/output/events per wake-up before the loop polls the sockets again.
const ROUNDS_PER_TURN: usize = 64;
/// Datagrams the machine may put in one transmit where the sockets have GSO
/// ([`SansIo::set_max_datagrams`]). quinn's own driver asks quinn-proto for at most 10 (larger
/// batches only grow the buffer quinn reserves up front); the driver merges consecutive
/// transmits into longer GSO runs anyway.
const MAX_TRANSMIT_DATAGRAMS: usize = 10;

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A socket could not be bound or set up. Pick another address or port.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// No address was given, or two of one family: the driver needs one socket per family.
    #[error("the driver needs one socket per address family, one or two in all; got {0:?}")]
    Sockets(Vec<SocketAddr>),
    /// [`Sharded`]: no machine, more than 256, as many sockets as machines not given, or a
    /// machine that is not the shard of its position (build shard `i` with
    /// `Config::for_shard(i, n)`).
    #[error("shard {index} of {count}: {problem}")]
    Shard {
        /// The position of the machine (or socket) at fault.
        index: usize,
        /// How many shards were asked for.
        count: usize,
        /// What is wrong.
        problem: String,
    },
    /// The poll (epoll, kqueue, ...) failed. The driver cannot go on.
    #[error("poll failed: {0}")]
    Poll(#[source] io::Error),
}

/// A command from another thread: runs on the driver's thread with the machine and `now`.
pub type Command<M> = Box<dyn FnOnce(&mut M, Instant) + Send>;

enum Message<M> {
    Run(Command<M>),
    Stop,
}

/// Errors of [`Handle`] calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The driver was dropped; nothing will run the command.
    #[error("the driver is gone")]
    DriverGone,
    /// The command is queued but the poll could not be woken; it runs at the next wake-up.
    #[error("cannot wake the driver: {0}")]
    Wake(#[source] io::Error),
}

/// A thread-safe door into a running [`Driver`]: queue commands, ask it to stop.
pub struct Handle<M> {
    tx: Sender<Message<M>>,
    waker: Arc<Waker>,
}

impl<M> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<M> fmt::Debug for Handle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl<M> Handle<M> {
    /// Runs `command` on the driver's thread at its next wake-up (which this call causes), with
    /// the machine and the current time. Its effects (transmits, events) are processed in the
    /// same turn.
    pub fn execute(
        &self,
        command: impl FnOnce(&mut M, Instant) + Send + 'static,
    ) -> Result<(), HandleError> {
        self.send(Message::Run(Box::new(command)))
    }

    /// Makes [`Driver::run`] (or `run_until`) return [`Exit::Stopped`] at its next wake-up.
    pub fn stop(&self) -> Result<(), HandleError> {
        self.send(Message::Stop)
    }

    fn send(&self, message: Message<M>) -> Result<(), HandleError> {
        self.tx.send(message).map_err(|_| HandleError::DriverGone)?;
        self.waker.wake().map_err(HandleError::Wake)
    }
}

/// What the event callback gets: the machine (through `Deref`), the time of this turn, and a
/// way to stop the run.
pub struct Context<'a, M> {
    machine: &'a mut M,
    now: Instant,
    stop: &'a mut bool,
}

impl<M> Context<'_, M> {
    /// The time of this turn: pass it to the machine's commands.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The machine.
    pub fn machine(&mut self) -> &mut M {
        self.machine
    }

    /// Makes the current `run`/`run_until` return [`Exit::Stopped`] once this turn is done.
    pub fn stop(&mut self) {
        *self.stop = true;
    }
}

impl<M> Deref for Context<'_, M> {
    type Target = M;

    fn deref(&self) -> &M {
        self.machine
    }
}

impl<M> DerefMut for Context<'_, M> {
    fn deref_mut(&mut self) -> &mut M {
        self.machine
    }
}

/// Why a run returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The deadline given to [`Driver::run_until`] passed.
    Deadline,
    /// [`Context::stop`] or [`Handle::stop`] was called.
    Stopped,
}

/// Counters of what the driver did, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Returns from the poll (each is one sleep ended by I/O, a timer, a command or a signal).
    pub wakeups: u64,
    /// `handle_timeout` calls.
    pub timeouts: u64,
    /// Receive syscalls that returned data.
    pub recv_calls: u64,
    /// Datagrams fed to the machine.
    pub datagrams_received: u64,
    /// Send syscalls that the kernel took.
    pub send_calls: u64,
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Sends refused with `WouldBlock` (each waited for WRITABLE).
    pub send_blocked: u64,
    /// Datagrams dropped for want of a socket of the destination's family.
    pub unroutable: u64,
    /// ICMP errors that declared a destination unreachable (Linux only).
    pub unreachable: u64,
    /// [`Sharded`]: datagrams that arrived here for a connection of another shard and were
    /// handed to it.
    pub forwarded_out: u64,
    /// [`Sharded`]: datagrams dropped because the owning shard's queue was full
    /// ([`FORWARD_QUEUE`]); QUIC recovers from them as from any loss.
    pub forward_dropped: u64,
    /// [`Sharded`]: datagrams other shards handed to this one.
    pub forwarded_in: u64,
}

/// A datagram that arrived on one shard's socket for a connection of another.
struct Forwarded {
    from: SocketAddr,
    local_ip: Option<IpAddr>,
    data: Vec<u8>,
}

/// The way into one shard: its queue of handed-over datagrams and the waker of its poll.
#[derive(Clone)]
struct ShardDoor {
    tx: SyncSender<Forwarded>,
    waker: Arc<Waker>,
}

/// What a driver that is one shard of a [`Sharded`] knows of the others.
struct ShardLink {
    index: u8,
    /// Every shard's door, this one's included, by index.
    doors: Vec<ShardDoor>,
    inbox: Receiver<Forwarded>,
}

impl ShardLink {
    /// The door of the shard that must handle `shard`'s datagram, if that is another shard.
    fn door_for(&self, shard: Option<u8>) -> Option<&ShardDoor> {
        let shard = shard.filter(|s| *s != self.index)?;
        self.doors.get(usize::from(shard))
    }
}

/// A datagram taken from the machine, waiting in `Outbox::buf`.
#[derive(Debug, Clone, Copy)]
struct Out {
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
    ecn: Option<u8>,
    start: usize,
    len: usize,
    segment_size: Option<usize>,
}

/// Datagrams taken from the machine and not yet sent, stored back to back so a run of them is
/// one contiguous GSO payload.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    items: VecDeque<Out>,
}

/// The mio driver. See the [module documentation](self).
pub struct Driver<M: SansIo> {
    machine: M,
    poll: Poll,
    events: Events,
    sockets: Vec<UdpSocket>,
    waker: Arc<Waker>,
    tx: Sender<Message<M>>,
    rx: Receiver<Message<M>>,
    stop: bool,
    /// The last round hit its bound: do not sleep before the next.
    more_work: bool,
    last_now: Instant,
    recv_buf: Vec<u8>,
    recv_meta: [RecvMeta; RECV_BATCH],
    scratch: Vec<u8>,
    outbox: Outbox,
    stats: DriverStats,
    /// Set when this driver is one shard of a [`Sharded`].
    shard: Option<ShardLink>,
}

impl<M: SansIo> Driver<M> {
    /// Binds one UDP socket per address (one or two: at most one IPv4 and one IPv6; port 0
    /// picks a free port, see [`Driver::local_addrs`]) and wraps `machine`.
    pub fn bind(machine: M, addrs: &[SocketAddr]) -> Result<Self, DriverError> {
        let mut sockets = Vec::new();
        for &addr in addrs {
            let socket = socket::bind(addr).map_err(|source| DriverError::Bind { addr, source })?;
            sockets.push((addr, socket));
        }
        Self::from_sockets(machine, sockets)
    }

    /// Wraps `machine` around sockets the application bound itself (made non-blocking here),
    /// each given with the address it was asked to bind, for error messages.
    pub fn from_sockets(
        machine: M,
        sockets: Vec<(SocketAddr, std::net::UdpSocket)>,
    ) -> Result<Self, DriverError> {
        let addrs: Vec<SocketAddr> = sockets.iter().map(|(a, _)| *a).collect();
        let v4 = addrs.iter().filter(|a| a.is_ipv4()).count();
        if addrs.is_empty() || v4 > 1 || addrs.len() - v4 > 1 {
            return Err(DriverError::Sockets(addrs));
        }
        let poll = Poll::new().map_err(DriverError::Poll)?;
        let mut bound = Vec::new();
        for (index, (addr, socket)) in sockets.into_iter().enumerate() {
            let mut socket =
                UdpSocket::new(socket).map_err(|source| DriverError::Bind { addr, source })?;
            poll.registry()
                .register(&mut socket.io, Token(index), Interest::READABLE)
                .map_err(|source| DriverError::Bind { addr, source })?;
            debug!(local = %socket.local, gso = socket.max_segments(), "socket bound");
            bound.push(socket);
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(DriverError::Poll)?);
        let (tx, rx) = mpsc::channel();
        let mut machine = machine;
        let segments = bound.iter().map(UdpSocket::max_segments).min().unwrap_or(1);
        if segments > 1 {
            machine.set_max_datagrams(segments.min(MAX_TRANSMIT_DATAGRAMS));
        }
        Ok(Self {
            machine,
            poll,
            events: Events::with_capacity(64),
            sockets: bound,
            waker,
            tx,
            rx,
            stop: false,
            more_work: false,
            last_now: Instant::now(),
            recv_buf: vec![0; RECV_CHUNK * RECV_BATCH],
            recv_meta: [RecvMeta::default(); RECV_BATCH],
            scratch: Vec::new(),
            outbox: Outbox::default(),
            stats: DriverStats::default(),
            shard: None,
        })
    }

    // ---- getters ----

    /// The machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, to issue commands between runs (use [`Driver::now`] as their `now`); their
    /// output goes out at the start of the next run.
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// The current time, never earlier than any `now` the machine was given.
    pub fn now(&mut self) -> Instant {
        self.last_now = self.last_now.max(Instant::now());
        self.last_now
    }

    /// The addresses the sockets are bound to, with the real port where 0 was asked.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|s| s.local).collect()
    }

    /// A thread-safe handle to queue commands and stop runs.
    pub fn handle(&self) -> Handle<M> {
        Handle {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }

    /// What the driver did so far.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Ends the driver (closing its sockets) and returns the machine.
    pub fn into_machine(self) -> M {
        self.machine
    }

    // ---- running ----

    /// Runs until [`Context::stop`] or [`Handle::stop`]. Each event goes to `on_event`.
    pub fn run(
        &mut self,
        on_event: impl FnMut(&mut Context<'_, M>, M::Event),
    ) -> Result<(), DriverError> {
        self.run_until(None, on_event).map(|_| ())
    }

    /// Runs until `deadline` passes, or until a stop. Each event goes to `on_event`. Commands
    /// given through [`Driver::machine_mut`] since the last run take effect first.
    pub fn run_until(
        &mut self,
        deadline: Option<Instant>,
        mut on_event: impl FnMut(&mut Context<'_, M>, M::Event),
    ) -> Result<Exit, DriverError> {
        self.process(&mut on_event);
        loop {
            if std::mem::take(&mut self.stop) {
                return Ok(Exit::Stopped);
            }
            if deadline.is_some_and(|d| self.now() >= d) {
                return Ok(Exit::Deadline);
            }
            self.wait(deadline)?;
            self.receive();
            self.process(&mut on_event);
        }
    }

    /// Sleeps until the machine's next timer, `deadline`, I/O or a command, and notes which
    /// sockets became ready.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<(), DriverError> {
        let now = self.now();
        // A command queued while the loop was not polling left the waker set: no check needed.
        let busy = std::mem::take(&mut self.more_work) || self.sockets.iter().any(|s| s.readable);
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            let wake = match (self.machine.poll_timeout(), deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            wake.map(|t| t.saturating_duration_since(now))
        };
        trace!(?timeout, "sleeping");
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DriverError::Poll(e)),
        }
        self.stats.wakeups += 1;
        for event in self.events.iter() {
            let Some(socket) = self.sockets.get_mut(event.token().0) else {
                continue; // the waker: commands are drained in `process`
            };
            if event.is_readable() || event.is_error() {
                socket.readable = true;
            }
            if event.is_error() {
                socket.errors = true;
            }
            if event.is_writable() && socket.blocked {
                socket.blocked = false;
                if let Err(e) = self.poll.registry().reregister(
                    &mut socket.io,
                    event.token(),
                    Interest::READABLE,
                ) {
                    warn!(local = %socket.local, "cannot drop WRITABLE interest: {e}");
                }
            }
        }
        Ok(())
    }

    /// Reads what the ready sockets hold (up to a budget) and feeds it to the machine.
    fn receive(&mut self) {
        for index in 0..self.sockets.len() {
            if std::mem::take(&mut self.sockets[index].errors) {
                self.receive_errors(index);
            }
            let mut calls = 0;
            while self.sockets[index].readable && calls < RECV_CALLS_PER_TURN {
                calls += 1;
                let socket = &self.sockets[index];
                match socket.recv(&mut self.recv_buf, &mut self.recv_meta) {
                    Ok(count) => {
                        self.stats.recv_calls += 1;
                        let now = {
                            self.last_now = self.last_now.max(Instant::now());
                            self.last_now
                        };
                        let local_ip = Some(socket.local.ip()).filter(|ip| !ip.is_unspecified());
                        let chunks = self.recv_buf.chunks(RECV_CHUNK);
                        for (meta, chunk) in self.recv_meta.iter().zip(chunks).take(count) {
                            let data = chunk.get(..meta.len).unwrap_or(chunk);
                            let stride = if meta.stride == 0 {
                                data.len()
                            } else {
                                meta.stride
                            };
                            for datagram in data.chunks(stride.max(1)) {
                                self.stats.datagrams_received += 1;
                                let local_ip = meta.dst_ip.or(local_ip);
                                if let Some(link) = &self.shard {
                                    let owner = self.machine.datagram_shard(datagram);
                                    if let Some(door) = link.door_for(owner) {
                                        forward(
                                            door,
                                            meta.addr,
                                            local_ip,
                                            datagram,
                                            &mut self.stats,
                                        );
                                        continue;
                                    }
                                }
                                self.machine
                                    .handle_datagram(now, meta.addr, local_ip, datagram);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.sockets[index].readable = false;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // ICMP errors surface here on some platforms (Windows: ECONNRESET).
                        // They name no connection we could act on; QUIC's timers do the rest.
                        debug!(local = %self.sockets[index].local, "recv error: {e}");
                    }
                }
            }
        }
        self.receive_forwarded();
    }

    /// Feeds the datagrams other shards handed over (up to a turn's budget).
    fn receive_forwarded(&mut self) {
        let Some(link) = &self.shard else {
            return;
        };
        for _ in 0..RECV_CALLS_PER_TURN * RECV_BATCH {
            let Ok(forwarded) = link.inbox.try_recv() else {
                return;
            };
            self.stats.forwarded_in += 1;
            let now = {
                self.last_now = self.last_now.max(Instant::now());
                self.last_now
            };
            let Forwarded {
                from,
                local_ip,
                data,
            } = forwarded;
            self.machine.handle_datagram(now, from, local_ip, &data);
        }
        // More than a turn's worth: come back for the rest without sleeping.
        self.more_work = true;
    }

    /// Drains the socket's ICMP errors (before anything is sent: a pending error would fail
    /// the next send) and reports unreachable destinations to the machine.
    fn receive_errors(&mut self, index: usize) {
        for _ in 0..RECV_CALLS_PER_TURN * RECV_BATCH {
            match self.sockets[index].take_error() {
                Ok(Some(addr)) => {
                    self.stats.unreachable += 1;
                    debug!(%addr, "ICMP: destination unreachable");
                    let now = self.now();
                    self.machine.handle_unreachable(now, addr);
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(local = %self.sockets[index].local, "error queue: {e}");
                    return;
                }
            }
        }
        // More than a turn's worth: come back for the rest.
        self.sockets[index].errors = true;
        self.more_work = true;
    }

    /// Commands, due timers, output and events, until nothing moves (or a bound).
    fn process(&mut self, on_event: &mut impl FnMut(&mut Context<'_, M>, M::Event)) {
        for _ in 0..ROUNDS_PER_TURN {
            let now = self.now();
            let mut moved = false;
            loop {
                match self.rx.try_recv() {
                    Ok(Message::Run(command)) => {
                        moved = true;
                        command(&mut self.machine, now);
                    }
                    Ok(Message::Stop) => self.stop = true,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if self.machine.poll_timeout().is_some_and(|t| t <= now) {
                self.stats.timeouts += 1;
                self.machine.handle_timeout(now);
            }
            self.flush(now);
            while let Some(event) = self.machine.poll_event() {
                moved = true;
                let mut cx = Context {
                    machine: &mut self.machine,
                    now,
                    stop: &mut self.stop,
                };
                on_event(&mut cx, event);
            }
            if !moved {
                return;
            }
        }
        self.more_work = true;
    }

    /// Sends what the machine has to send, until it has nothing more or a socket blocks.
    fn flush(&mut self, now: Instant) {
        loop {
            if self.outbox.items.is_empty() {
                self.outbox.buf.clear();
                let mut datagrams = 0;
                while datagrams < OUT_BATCH {
                    let Some(t) = self.machine.poll_transmit(now, &mut self.scratch) else {
                        break;
                    };
                    let payload = self.scratch.get(..t.size).unwrap_or(&self.scratch);
                    datagrams += payload
                        .len()
                        .div_ceil(t.segment_size.unwrap_or(t.size).max(1));
                    let start = self.outbox.buf.len();
                    self.outbox.buf.extend_from_slice(payload);
                    self.outbox.items.push_back(Out {
                        destination: t.destination,
                        src_ip: t.src_ip,
                        ecn: t.ecn,
                        start,
                        len: payload.len(),
                        segment_size: t.segment_size,
                    });
                }
                if self.outbox.items.is_empty() {
                    return;
                }
            }
            if !self.send_outbox() {
                return;
            }
        }
    }

    /// Sends queued datagrams in runs; returns `false` if a socket blocked.
    fn send_outbox(&mut self) -> bool {
        while let Some(&first) = self.outbox.items.front() {
            let Some((index, destination)) = self.route(first.destination) else {
                self.stats.unroutable += 1;
                debug!(to = %first.destination, "no socket of this address family: dropped");
                self.outbox.items.pop_front();
                continue;
            };
            let socket = &self.sockets[index];
            if socket.blocked {
                return false;
            }
            // A run: same destination, source and ECN; datagrams of one size but for a shorter
            // last one, whether they came one per transmit or already segmented.
            let seg = first.segment_size.unwrap_or(first.len).max(1);
            let max = socket.max_segments();
            let mut count = 1;
            let mut segments = first.len.div_ceil(seg);
            let mut end = first.start + first.len;
            if first.len % seg == 0 {
                for next in self.outbox.items.iter().skip(1) {
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
            let segment_size = (segments > 1).then_some(seg);
            let contents = self.outbox.buf.get(first.start..end).unwrap_or_default();
            match socket.send(destination, contents, segment_size, first.src_ip, first.ecn) {
                Ok(()) => {
                    self.stats.send_calls += 1;
                    self.stats.datagrams_sent += segments as u64;
                    trace!(to = %destination, bytes = contents.len(), count, "sent");
                    self.outbox.items.drain(..count);
                }
                Err(e) => {
                    // quinn-udp returns nothing but WouldBlock: wait until writable.
                    self.stats.send_blocked += 1;
                    trace!(local = %socket.local, "send blocked: {e}");
                    let socket = &mut self.sockets[index];
                    socket.blocked = true;
                    if let Err(e) = self.poll.registry().reregister(
                        &mut socket.io,
                        Token(index),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!(local = %socket.local, "cannot register WRITABLE interest: {e}");
                    }
                    return false;
                }
            }
        }
        true
    }

    /// The socket for `destination`, and the destination as that socket must see it.
    fn route(&self, destination: SocketAddr) -> Option<(usize, SocketAddr)> {
        let destination = match destination {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) if !self.sockets.iter().any(|s| !s.is_ipv4()) => {
                    SocketAddr::new(IpAddr::V4(v4), v6.port())
                }
                _ => destination,
            },
            v4 => v4,
        };
        let index = self
            .sockets
            .iter()
            .position(|s| s.is_ipv4() == destination.is_ipv4())?;
        Some((index, destination))
    }
}

/// Hands `datagram` to another shard: queued if its queue has room (dropped otherwise, as a
/// full socket buffer would), and that shard's poll woken.
fn forward(
    door: &ShardDoor,
    from: SocketAddr,
    local_ip: Option<IpAddr>,
    datagram: &[u8],
    stats: &mut DriverStats,
) {
    let forwarded = Forwarded {
        from,
        local_ip,
        data: datagram.to_vec(),
    };
    match door.tx.try_send(forwarded) {
        Ok(()) => {
            stats.forwarded_out += 1;
            if let Err(e) = door.waker.wake() {
                warn!("cannot wake a shard: {e}");
            }
        }
        Err(TrySendError::Full(_)) => {
            stats.forward_dropped += 1;
            trace!(%from, "the owning shard's queue is full: datagram dropped");
        }
        // The shard's driver is gone (stopped): nobody will handle its connections.
        Err(TrySendError::Disconnected(_)) => stats.forward_dropped += 1,
    }
}

impl<M: SansIo + GracefulClose> Driver<M> {
    /// Closes every connection and keeps driving until they are all gone or `grace` has passed.
    /// Returns whether everything closed in time. Events that the closing produces go to
    /// `on_event`.
    pub fn shutdown(
        &mut self,
        grace: Duration,
        mut on_event: impl FnMut(&mut Context<'_, M>, M::Event),
    ) -> Result<bool, DriverError> {
        let now = self.now();
        let deadline = now + grace;
        self.machine.close_all(now);
        self.process(&mut on_event);
        while !self.machine.is_closed() {
            if self.now() >= deadline {
                debug!("shutdown deadline passed with connections left");
                return Ok(false);
            }
            self.wait(Some(deadline))?;
            self.receive();
            self.process(&mut on_event);
        }
        self.stop = false;
        Ok(true)
    }
}
