//! [`Sharded`]: several drivers on one UDP port (`SO_REUSEPORT`), one machine and one thread
//! each, so that a node uses every core.
//! See [`Sharded`] for how datagrams find their shard and what a shard does not know.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;

use super::socket;
use super::{Context, Driver, DriverError, DriverThread, Handle, ShardDoor, ShardLink, Stopped};
use crate::SansIo;

/// Datagrams one shard's queue of handed-over datagrams holds; more are dropped (QUIC
/// recovers from it as from any loss). About what a receive buffer holds of small packets.
pub const FORWARD_QUEUE: usize = 4096;

/// The most shards: the shard index is one byte of the connection ID.
const MAX_SHARDS: usize = 256;

/// N drivers on one UDP port, machine `i` the shard `i`.
///
/// # How datagrams find their shard
///
/// The kernel spreads the remote addresses over the sockets of a `SO_REUSEPORT` group by a hash
/// of the 4-tuple, so a remote address stays on one socket, and a new client's Initial lands on
/// the shard the kernel picked, which accepts it. But a connection is not an address: when the
/// peer's address changes (NAT rebinding, migration), or when a shard dialed out and the answer
/// hashes to another socket, a datagram of a live connection reaches a shard that does not hold
/// it. Every shard shares the identity's connection-ID key, so it would find the CID valid,
/// find no connection for it, and answer with a stateless reset: killing a live connection of
/// another shard.
///
/// So each shard's connection IDs name the shard (`Config::shard`, the first byte, covered by
/// the identity's tag). On every datagram the driver asks its machine which shard owns it
/// ([`SansIo::datagram_shard`]); one that names another shard is handed to that shard through
/// a bounded queue ([`FORWARD_QUEUE`] datagrams; when full, the datagram is dropped, as a full
/// socket buffer would drop it) and that shard's poll is woken. The owner answers from its own
/// socket, bound to the same address and port, so the peer sees nothing. Only datagrams naming
/// this shard, or no live shard (a CID of an earlier process that had more shards), take the
/// stateless-reset path, on the shard that received them.
///
/// # What a shard does not know
///
/// Each shard is a whole [`Manager`](crate::Manager) of its own; nothing else is shared:
///
/// * **Peers.** A shard knows only the connections it holds. A peer connected through one
///   shard that dials again from an address the kernel hashes to another has two connections
///   to the node; quicpeer peers keep one of them (make-before-break, tie-break by PeerId),
///   but the node's shards each see their own. Dial a peer from one shard only, and ask every
///   shard when looking for a peer (each driver's handle runs commands on its shard).
/// * **Limits.** Each shard enforces its own [`Limits`](crate::Limits). Build shard `i` of `n`
///   with [`Config::for_shard`](crate::Config::for_shard), which splits the global bounds
///   (connections, handshakes in flight, pending dials, the peer book, the stateless-response
///   rate) so that the shards together stay within them; the price is that a shard at its
///   share refuses while another has room (the kernel's hash is even enough for this to
///   matter only near the limit). The pace of peer-book dials is not split: it is what one
///   core completes, and each shard has its own.
/// * **Peer book, metrics, events.** Per shard: each shard's events go to its own callback,
///   with its own `now`; a peer book to persist is the union of the shards' books.
/// * **Outbound dials.** A dial goes out of its shard's socket, but the answers come back to
///   whichever socket the kernel's hash picks, so half of them (with two shards) are handed
///   over, for the connection's whole life. Inbound connections pay this only after an
///   address change.
///
/// # Example
///
/// ```no_run
/// use std::time::{Instant, SystemTime};
/// use quicpeer::driver::Sharded;
/// use quicpeer::{Config, Event, Identity, Manager};
///
/// let identity = Identity::from_ed25519_seed([1; 32]);
/// let shards = 2;
/// let managers = (0..shards)
///     .map(|i| {
///         let config = Config::default().for_shard(i, shards);
///         Manager::new(Instant::now(), SystemTime::now(), identity.clone(), config, rand::random())
///     })
///     .collect::<Result<Vec<_>, _>>()?;
/// let sharded = Sharded::bind(managers, "0.0.0.0:4001".parse()?)?;
/// let running = sharded.spawn(|shard| {
///     move |_cx: &mut quicpeer::driver::Context<'_, Manager>, event| {
///         if let Event::Connected { peer, .. } = event {
///             println!("{peer} connected to shard {shard}");
///         }
///     }
/// })?;
/// // Later: stop every shard.
/// for stopped in running.stop() {
///     let (_driver, run) = stopped.expect("a shard's thread panicked");
///     run?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Sharded<M: SansIo> {
    drivers: Vec<Driver<M>>,
}

impl<M: SansIo> Sharded<M> {
    /// Binds one socket per machine to `addr` with `SO_REUSEPORT` (port 0: the first socket
    /// picks a free port, the others join it; see [`bind_reuse_port`](super::bind_reuse_port)),
    /// machine `i` on socket `i`.
    pub fn bind(machines: Vec<M>, addr: SocketAddr) -> Result<Self, DriverError> {
        check_count(machines.len())?;
        let mut sockets = Vec::with_capacity(machines.len());
        let mut port_addr = addr;
        for _ in 0..machines.len() {
            let socket =
                socket::bind_reuse_port(port_addr).map_err(|source| DriverError::Bind {
                    addr: port_addr,
                    source,
                })?;
            if sockets.is_empty() {
                port_addr = socket.local_addr().map_err(|source| DriverError::Bind {
                    addr: port_addr,
                    source,
                })?;
            }
            sockets.push((addr, socket));
        }
        Self::from_sockets(machines, sockets)
    }

    /// Wraps each machine around the socket of the same position, bound by the application
    /// (with [`bind_reuse_port`](super::bind_reuse_port) to share a port; sockets on separate
    /// ports work too, for tests). With more than one machine, machine `i` must be shard `i`
    /// ([`SansIo::shard`]; `Config::for_shard(i, n)` for a [`Manager`](crate::Manager)).
    pub fn from_sockets(
        machines: Vec<M>,
        sockets: Vec<(SocketAddr, std::net::UdpSocket)>,
    ) -> Result<Self, DriverError> {
        let count = machines.len();
        check_count(count)?;
        if sockets.len() != count {
            return Err(DriverError::Shard {
                index: sockets.len().min(count),
                count,
                problem: format!("{} socket(s) for {count} machine(s)", sockets.len()),
            });
        }
        if count > 1 {
            for (index, machine) in machines.iter().enumerate() {
                let shard = machine.shard();
                if shard.map(usize::from) != Some(index) {
                    return Err(DriverError::Shard {
                        index,
                        count,
                        problem: format!("the machine is shard {shard:?}"),
                    });
                }
            }
        }
        let mut drivers = Vec::with_capacity(count);
        for (machine, socket) in machines.into_iter().zip(sockets) {
            drivers.push(Driver::from_sockets(machine, vec![socket])?);
        }
        if count > 1 {
            let (doors, inboxes): (Vec<ShardDoor>, Vec<_>) = (drivers.iter())
                .map(|driver| {
                    let (tx, rx) = mpsc::sync_channel(FORWARD_QUEUE);
                    let door = ShardDoor {
                        tx,
                        waker: driver.waker.clone(),
                    };
                    (door, rx)
                })
                .unzip();
            for (index, (driver, inbox)) in drivers.iter_mut().zip(inboxes).enumerate() {
                driver.shard = Some(ShardLink {
                    // `check_count` bounds the shards to 256.
                    index: u8::try_from(index).unwrap_or(u8::MAX),
                    doors: doors.clone(),
                    inbox,
                });
            }
        }
        Ok(Self { drivers })
    }

    /// How many shards.
    pub fn len(&self) -> usize {
        self.drivers.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.drivers.is_empty()
    }

    /// The address the shards share (shard 0's, with the real port where 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.drivers.first()?.local_addrs().first().copied()
    }

    /// The drivers, shard `i` at `i`: to issue commands between runs, or to run them on
    /// threads of the application's own (each must be driven, or the datagrams handed to it
    /// wait in its queue).
    pub fn drivers_mut(&mut self) -> &mut [Driver<M>] {
        &mut self.drivers
    }

    /// The drivers, shard `i` at `i`.
    pub fn into_drivers(self) -> Vec<Driver<M>> {
        self.drivers
    }
}

impl<M: SansIo + Send + 'static> Sharded<M> {
    /// Runs every shard on a thread of its own ([`Driver::spawn`]); shard `i`'s events go to
    /// the callback `on_event(i)` made. If a thread cannot be started, the shards already
    /// started are stopped and the error returned.
    pub fn spawn<F>(self, mut on_event: impl FnMut(usize) -> F) -> io::Result<ShardedThreads<M>>
    where
        F: FnMut(&mut Context<'_, M>, M::Event) + Send + 'static,
    {
        let mut threads = Vec::with_capacity(self.drivers.len());
        for (index, driver) in self.drivers.into_iter().enumerate() {
            threads.push(driver.spawn(on_event(index))?);
        }
        Ok(ShardedThreads { threads })
    }
}

fn check_count(count: usize) -> Result<(), DriverError> {
    if count == 0 || count > MAX_SHARDS {
        return Err(DriverError::Shard {
            index: 0,
            count,
            problem: format!("between 1 and {MAX_SHARDS} shards"),
        });
    }
    Ok(())
}

/// The shards of a [`Sharded`], each running on its thread.
pub struct ShardedThreads<M: SansIo> {
    threads: Vec<DriverThread<M>>,
}

impl<M: SansIo> ShardedThreads<M> {
    /// The handle of each shard, shard `i` at `i`: commands run on that shard's thread.
    pub fn handles(&self) -> Vec<Handle<M>> {
        self.threads.iter().map(|t| t.handle().clone()).collect()
    }

    /// Stops every shard (all are told before any is waited for) and gives back each driver
    /// and how its run ended, or its thread's panic; shard `i` at `i`.
    pub fn stop(self) -> Vec<thread::Result<Stopped<M>>> {
        for thread in &self.threads {
            // A shard whose run ended already has nothing to stop.
            let _ = thread.handle().stop();
        }
        self.threads.into_iter().map(DriverThread::stop).collect()
    }
}

impl<M: SansIo> std::fmt::Debug for ShardedThreads<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedThreads")
            .field("shards", &self.threads.len())
            .finish()
    }
}

impl<M: SansIo> std::fmt::Debug for Sharded<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharded")
            .field("shards", &self.drivers.len())
            .finish()
    }
}
