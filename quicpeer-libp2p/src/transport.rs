//! [`Transport`]: rust-libp2p's `Transport` over quicpeer-tokio endpoints. It exists to map
//! libp2p's listener and dial model onto quicpeer's: a listener is an endpoint (one socket, one
//! driver task) that accepts; a dial is one [`Endpoint::connect_addr`] attempt, from the
//! listening socket when the Swarm asks for `PortUse::Reuse` (so the observed address of the
//! dialer is its listen address), else from a dial-only endpoint.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{BoxFuture, Either, Ready};
use futures::FutureExt;
use libp2p_core::multiaddr::{Multiaddr, Protocol};
use libp2p_core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p_core::Endpoint as Role;
use libp2p_identity::PeerId;
use quicpeer::Identity;
use quicpeer_tokio::{Endpoint, PeerEvent};
use tracing::debug;

use crate::{Config, Connection, Error};

/// A QUIC v1 multiaddr's parts: `/ip4|ip6/<ip>/udp/<port>/quic-v1[/p2p/<peer>]`.
pub(crate) fn parse_quic_v1(addr: &Multiaddr) -> Option<(SocketAddr, Option<PeerId>)> {
    let mut iter = addr.iter();
    let ip: IpAddr = match iter.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Udp(port) = iter.next()? else {
        return None;
    };
    let Protocol::QuicV1 = iter.next()? else {
        return None;
    };
    let peer = match iter.next() {
        None => None,
        Some(Protocol::P2p(peer)) => Some(peer),
        Some(_) => return None,
    };
    if iter.next().is_some() {
        return None;
    }
    Some((SocketAddr::new(ip, port), peer))
}

/// The QUIC v1 multiaddr of a socket address.
pub(crate) fn to_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(addr.ip().into())
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

/// What a dial returns.
type DialFuture = BoxFuture<'static, Result<(PeerId, Connection), Error>>;

/// One `listen_on`: its endpoint, and the `accept` in flight.
struct Listener {
    id: ListenerId,
    endpoint: Arc<Endpoint>,
    accept: BoxFuture<'static, Option<quicpeer_tokio::Connection>>,
    /// The address inbound connections are reported on.
    local: Multiaddr,
}

fn accept_next(endpoint: &Arc<Endpoint>) -> BoxFuture<'static, Option<quicpeer_tokio::Connection>> {
    let endpoint = endpoint.clone();
    async move { endpoint.accept().await }.boxed()
}

/// The rust-libp2p transport of quicpeer: `/ip4|ip6/…/udp/<port>/quic-v1` addresses, TLS 1.3
/// with the libp2p certificate, connections that are their own stream muxers. Build it like
/// libp2p-quic's: `Transport::new(Config::new(&keypair))`.
///
/// Needs a tokio runtime: each socket is served by its own driver task.
pub struct Transport {
    config: Config,
    listeners: Vec<Listener>,
    /// Dial-only endpoints per address family, for `PortUse::Reuse` dials with no listener.
    dialers: HashMap<bool, Arc<Endpoint>>,
    /// Hole punches in progress: the inbound connection from the address completes the dial.
    /// An entry lives as long as its dial future (a dropped one is purged at the next punch).
    hole_punches: HashMap<SocketAddr, oneshot::Sender<(PeerId, Connection)>>,
    /// Events to report before polling the listeners.
    pending: VecDeque<TransportEvent<<Self as libp2p_core::Transport>::ListenerUpgrade, Error>>,
    waker: Option<Waker>,
}

impl Transport {
    /// A transport with no listener yet.
    pub fn new(config: Config) -> Self {
        Transport {
            config,
            listeners: Vec::new(),
            dialers: HashMap::new(),
            hole_punches: HashMap::new(),
            pending: VecDeque::new(),
            waker: None,
        }
    }

    // The error is large (a PeerId mismatch carries three PeerIds) but this one is rare and
    // returned once per bind.
    #[allow(clippy::result_large_err)]
    fn bind(&self, addr: SocketAddr, accepting: bool) -> Result<Arc<Endpoint>, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let identity = Identity::new(self.config.keypair.clone());
        let endpoint = Endpoint::bind(identity, self.config.quic.clone(), addr)?;
        endpoint.set_accepting(accepting);
        if let Some(signals) = &self.config.signals {
            // Tells the reconnect behaviour of silent connections; ends with the endpoint
            // (its event sender goes with the driver's state).
            let mut events = endpoint.events();
            let mut signals = signals.clone();
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match events.recv().await {
                        Ok(PeerEvent::Unresponsive { peer, .. }) => {
                            // A full channel drops the signal: the behaviour is behind anyway.
                            let _ = signals.try_send(peer);
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    }
                }
            });
        }
        Ok(Arc::new(endpoint))
    }

    /// The endpoint a dial to `remote` goes out from.
    #[allow(clippy::result_large_err)]
    fn dial_endpoint(
        &mut self,
        remote: SocketAddr,
        port_use: PortUse,
    ) -> Result<Arc<Endpoint>, Error> {
        let v6 = remote.is_ipv6();
        if port_use == PortUse::Reuse {
            let same_family = |l: &&Listener| l.endpoint.local_addr().is_ipv6() == v6;
            // Prefer a listener bound to the loopback for a loopback peer, and one bound to
            // anything else for other peers; any of the family will do.
            let preferred = self.listeners.iter().filter(same_family).find(|l| {
                l.endpoint.local_addr().ip().is_loopback() == remote.ip().is_loopback()
                    || l.endpoint.local_addr().ip().is_unspecified()
            });
            if let Some(l) = preferred.or_else(|| self.listeners.iter().find(same_family)) {
                return Ok(l.endpoint.clone());
            }
            if let Some(endpoint) = self.dialers.get(&v6) {
                return Ok(endpoint.clone());
            }
        }
        let any = if v6 {
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)
        } else {
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)
        };
        let endpoint = self.bind(any, false)?;
        if port_use == PortUse::Reuse {
            self.dialers.insert(v6, endpoint.clone());
        }
        Ok(endpoint)
    }

    /// A dial in the `Endpoint::Listener` role (DCUtR's listener side), as libp2p-quic does
    /// it: random datagrams from the listening socket to `remote` open the NAT binding the
    /// peer's connection comes in through, and that inbound connection completes the dial.
    #[allow(clippy::result_large_err)] // as `Transport::dial`'s, whose error this is
    fn hole_punch(
        &mut self,
        addr: Multiaddr,
        remote: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<DialFuture, TransportError<Error>> {
        let Some(expected) = expected else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let v6 = remote.is_ipv6();
        let endpoint = (self.listeners.iter())
            .find(|l| l.endpoint.local_addr().is_ipv6() == v6)
            .map(|l| l.endpoint.clone())
            .ok_or(TransportError::Other(Error::NoListenerForHolePunch))?;
        self.hole_punches.retain(|_, tx| !tx.is_canceled());
        if self.hole_punches.contains_key(&remote) {
            return Err(TransportError::Other(Error::HolePunchInProgress(remote)));
        }
        let (tx, rx) = oneshot::channel();
        self.hole_punches.insert(remote, tx);
        let timeout = self.config.quic.handshake_timeout;
        Ok(async move {
            let punch = Box::pin(async move {
                let deadline = tokio::time::Instant::now() + timeout;
                while tokio::time::Instant::now() < deadline {
                    endpoint.send_raw(remote, random_bytes(64));
                    let wait = 10 + random_bytes(1)[0] as u64 % 190;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            });
            match futures::future::select(rx, punch).await {
                Either::Left((Ok((peer, connection)), _)) if peer == expected => {
                    Ok((peer, connection))
                }
                Either::Left((Ok((actual, _)), _)) => Err(Error::PeerIdMismatch {
                    expected,
                    actual,
                    cause: quicpeer::Cause::PeerIdMismatch { expected, actual },
                }),
                Either::Left((Err(_), _)) => Err(Error::EndpointClosed),
                Either::Right(((), _)) => Err(Error::HolePunchTimedOut),
            }
        }
        .boxed())
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// The addresses a listener bound to `bound` is reachable at: the bound one, or for an
/// unspecified address the loopback and the address of the interface the default route
/// leaves from (found by routing a UDP socket, which sends nothing).
fn listen_addrs(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let (loopback, probe): (IpAddr, SocketAddr) = if bound.is_ipv6() {
        (
            Ipv6Addr::LOCALHOST.into(),
            SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(), 9),
        )
    } else {
        (
            Ipv4Addr::LOCALHOST.into(),
            SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 9),
        )
    };
    let mut addrs = vec![SocketAddr::new(loopback, bound.port())];
    let routed = UdpSocket::bind(SocketAddr::new(bound.ip(), 0))
        .and_then(|s| s.connect(probe).and_then(|()| s.local_addr()));
    if let Ok(local) = routed {
        if !local.ip().is_unspecified() && !local.ip().is_loopback() {
            addrs.push(SocketAddr::new(local.ip(), bound.port()));
        }
    }
    addrs
}

impl libp2p_core::Transport for Transport {
    type Output = (PeerId, Connection);
    type Error = Error;
    type ListenerUpgrade = Ready<Result<Self::Output, Self::Error>>;
    type Dial = DialFuture;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let (socket_addr, _) =
            parse_quic_v1(&addr).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        let endpoint = self
            .bind(socket_addr, true)
            .map_err(TransportError::Other)?;
        let bound = endpoint.local_addr();
        debug!(%bound, ?id, "listening");
        for a in listen_addrs(bound) {
            self.pending.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: to_multiaddr(a),
            });
        }
        // A listener of the family takes over dialing: the dial-only endpoint goes once its
        // connections are done.
        self.dialers.remove(&bound.is_ipv6());
        self.listeners.push(Listener {
            id,
            accept: accept_next(&endpoint),
            endpoint,
            local: to_multiaddr(bound),
        });
        self.wake();
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(index) = self.listeners.iter().position(|l| l.id == id) else {
            return false;
        };
        let listener = self.listeners.remove(index);
        // The connections it holds go on (they keep the endpoint); new ones are refused.
        listener.endpoint.set_accepting(false);
        self.pending.push_back(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Ok(()),
        });
        self.wake();
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some((remote, expected)) = parse_quic_v1(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        if opts.role == Role::Listener && opts.port_use == PortUse::New {
            return self.hole_punch(addr, remote, expected);
        }
        let endpoint = self
            .dial_endpoint(remote, opts.port_use)
            .map_err(TransportError::Other)?;
        Ok(async move {
            let conn = endpoint
                .connect_addr(remote, expected)
                .await
                .map_err(Error::from_connect)?;
            Ok((conn.peer_id(), Connection::new(endpoint, conn)))
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = &mut *self;
        if let Some(event) = this.pending.pop_front() {
            return Poll::Ready(event);
        }
        for index in 0..this.listeners.len() {
            let listener = &mut this.listeners[index];
            let Poll::Ready(accepted) = listener.accept.poll_unpin(cx) else {
                continue;
            };
            let listener_id = listener.id;
            let Some(conn) = accepted else {
                // The endpoint stopped (its socket failed).
                this.listeners.remove(index);
                return Poll::Ready(TransportEvent::ListenerClosed {
                    listener_id,
                    reason: Err(Error::EndpointClosed),
                });
            };
            listener.accept = accept_next(&listener.endpoint);
            let remote = conn.remote_addr();
            let send_back_addr = to_multiaddr(remote);
            let local_addr = listener.local.clone();
            let peer = conn.peer_id();
            let mut connection = Connection::new(listener.endpoint.clone(), conn);
            if let Some(punch) = this.hole_punches.remove(&remote) {
                match punch.send((peer, connection)) {
                    Ok(()) => {
                        // The listener's fresh accept has not been polled (no waker yet).
                        cx.waker().wake_by_ref();
                        continue;
                    }
                    // The hole punch gave up: an ordinary inbound connection.
                    Err((_, back)) => connection = back,
                }
            }
            return Poll::Ready(TransportEvent::Incoming {
                listener_id,
                upgrade: futures::future::ready(Ok((peer, connection))),
                local_addr,
                send_back_addr,
            });
        }
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// `n` bytes no one can predict, without a random-number dependency: std's `RandomState` is
/// keyed from the operating system's randomness.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n + 8);
    let state = std::collections::hash_map::RandomState::new();
    let mut i = 0u64;
    while bytes.len() < n {
        let mut hasher = state.build_hasher();
        hasher.write_u64(i);
        bytes.extend_from_slice(&hasher.finish().to_le_bytes());
        i += 1;
    }
    bytes.truncate(n);
    bytes
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}
