//! Simulated nodes whose certificates are built once per process.
//!
//! Generating a node's certificate (a P-256 key and an Ed25519 signature) is most of what
//! building a manager costs, and the network targets build one per node and per (re)start of
//! every input. [`Node`] builds its manager from the certificate [`certificates`] generated
//! for its identity at the first input, then puts the layer under test on it (a bare
//! [`Manager`], a [`Host`], a [`Relay`], [`Channels`]); everything else is the layer's own
//! `Simulated` behaviour.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use super::datagram::Crypto;
use quicpeer::identity::generate_certificate;
use quicpeer::internals::LoadedCertificate;
use quicpeer::protocols::channel::{ChannelConfig, Channels, MemoryStore};
use quicpeer::protocols::relay::{Relay, RelayConfig};
use quicpeer::protocols::{Host, HostConfig};
use quicpeer::sim::{Network, NodeId, Simulated};
use quicpeer::{Config, Identity, Manager, ManagerError, SansIo, Transmit};

/// Identities the network targets' nodes have, at most.
const MAX_NODES: usize = 4;

/// The identities of the network targets' nodes, built once for all inputs.
pub(super) fn identities() -> &'static [Identity; MAX_NODES] {
    static IDENTITIES: OnceLock<[Identity; MAX_NODES]> = OnceLock::new();
    IDENTITIES
        .get_or_init(|| std::array::from_fn(|i| Identity::from_ed25519_seed([i as u8 + 1; 32])))
}

/// Each identity's certificate and key, generated once per process.
fn certificates() -> &'static [LoadedCertificate; MAX_NODES] {
    static CERTIFICATES: OnceLock<[LoadedCertificate; MAX_NODES]> = OnceLock::new();
    CERTIFICATES.get_or_init(|| {
        std::array::from_fn(|i| {
            match generate_certificate(identities()[i].keypair())
                .map_err(|e| e.to_string())
                .and_then(|(c, k)| LoadedCertificate::load(c, k).map_err(|e| e.to_string()))
            {
                Ok(loaded) => loaded,
                Err(error) => panic!("harness: cannot generate a certificate: {error}"),
            }
        })
    })
}

/// A machine the network targets run on a manager: what it adds and how it is built.
pub(super) trait Layer: SansIo + Sized {
    /// Its own configuration (beside the manager's); kept across restarts.
    type Config: Clone;

    /// Puts the layer on `manager`, a fresh manager of `identity`.
    fn over(
        manager: Manager,
        identity: &Identity,
        config: Self::Config,
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
    ) -> Self;

    /// The manager inside.
    fn manager_mut(&mut self) -> &mut Manager;
}

/// A node of a simulated network: a [`Layer`] on a manager built from a certificate made once
/// per process.
pub(super) struct Node<L>(pub(super) L);

impl<L: Layer> SansIo for Node<L> {
    type Event = L::Event;

    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        data: &[u8],
    ) {
        self.0.handle_datagram(now, from, local_ip, data)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.0.handle_timeout(now)
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.0.poll_transmit(now, buf)
    }

    fn poll_event(&mut self) -> Option<L::Event> {
        self.0.poll_event()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr) {
        self.0.handle_unreachable(now, addr)
    }

    fn set_max_datagrams(&mut self, max: usize) {
        self.0.set_max_datagrams(max)
    }
}

impl<L: Layer> Simulated for Node<L> {
    type Config = (Config, L::Config);

    fn build(
        identity: Identity,
        (config, layer): (Config, L::Config),
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Self, ManagerError> {
        let Some(index) = identities()
            .iter()
            .position(|known| known.peer_id() == identity.peer_id())
        else {
            panic!("harness: a node with an identity not from identities()");
        };
        let manager = Manager::with_loaded_certificate(
            now,
            wall_now,
            identity.clone(),
            config,
            seed,
            &certificates()[index],
        )?;
        Ok(Node(L::over(
            manager, &identity, layer, seed, now, wall_now,
        )))
    }

    fn manager_mut(&mut self) -> &mut Manager {
        self.0.manager_mut()
    }
}

/// The managers' configuration of the network targets: keep-alive 1 s, idle timeout 5 s,
/// handshake timeout 2 s (short, so that an input's 30 s see them all fire), on the null
/// handshake unless `crypto` says TLS.
pub(super) fn manager_config(crypto: Crypto) -> Config {
    let mut config = Config::default();
    config.keep_alive = Some(Duration::from_secs(1));
    config.idle_timeout = Duration::from_secs(5);
    config.handshake_timeout = Duration::from_secs(2);
    config.null_crypto = (crypto == Crypto::Null).then(super::datagram::null_crypto);
    config
}

/// The hosts' configuration of the network targets: 2 s to negotiate a stream, 3 s for a ping.
pub(super) fn host_config() -> HostConfig {
    HostConfig::new(Duration::from_secs(2), Duration::from_secs(3))
}

/// Runs the network `millis` milliseconds on, or what is left of an input's budget of
/// simulated time (`left`) if less. An execution costs in proportion to the simulated time it
/// covers, so the sequence targets bound it per input.
pub(super) fn advance<M: Simulated>(net: &mut Network<M>, left: &mut Duration, millis: u16) {
    let run = Duration::from_millis(u64::from(millis)).min(*left);
    *left -= run;
    net.run_for(run);
}

/// A node's events since the last call, without their instants.
pub(super) fn take_events<M: Simulated>(net: &mut Network<M>, node: usize) -> Vec<M::Event> {
    (net.take_events(NodeId(node)).into_iter())
        .map(|(_, event)| event)
        .collect()
}

/// The seed of a layer's own randomness (ping payloads), apart from the manager's.
fn layer_seed(seed: [u8; 32]) -> [u8; 32] {
    let mut layer = seed;
    layer[0] ^= 0x55;
    layer
}

impl Layer for Manager {
    type Config = ();

    fn over(
        manager: Manager,
        _: &Identity,
        (): (),
        _: [u8; 32],
        _: Instant,
        _: SystemTime,
    ) -> Self {
        manager
    }

    fn manager_mut(&mut self) -> &mut Manager {
        self
    }
}

impl Layer for Host {
    type Config = HostConfig;

    fn over(
        manager: Manager,
        _: &Identity,
        config: HostConfig,
        seed: [u8; 32],
        now: Instant,
        _: SystemTime,
    ) -> Self {
        Host::new(now, manager, config, layer_seed(seed))
    }

    fn manager_mut(&mut self) -> &mut Manager {
        Host::manager_mut(self)
    }
}

impl Layer for Relay {
    type Config = (HostConfig, RelayConfig);

    fn over(
        manager: Manager,
        identity: &Identity,
        (host, relay): (HostConfig, RelayConfig),
        seed: [u8; 32],
        now: Instant,
        wall_now: SystemTime,
    ) -> Self {
        let host = Host::new(now, manager, host, layer_seed(seed));
        match Relay::new(now, wall_now, host, identity.keypair().clone(), relay) {
            Ok(relay) => relay,
            Err(error) => panic!("harness: cannot build a relay: {error}"),
        }
    }

    fn manager_mut(&mut self) -> &mut Manager {
        self.host_mut().manager_mut()
    }
}

impl Layer for Channels<MemoryStore> {
    /// The host's and the channels' configuration, and the store, which a restart keeps
    /// (clones share it).
    type Config = (HostConfig, ChannelConfig, MemoryStore);

    fn over(
        manager: Manager,
        _: &Identity,
        (host, channels, store): (HostConfig, ChannelConfig, MemoryStore),
        seed: [u8; 32],
        now: Instant,
        _: SystemTime,
    ) -> Self {
        let host = Host::new(now, manager, host, layer_seed(seed));
        match Channels::new(now, host, store, channels) {
            Ok(channels) => channels,
            Err(error) => panic!("harness: a memory store failed: {error}"),
        }
    }

    fn manager_mut(&mut self) -> &mut Manager {
        self.host_mut().manager_mut()
    }
}
