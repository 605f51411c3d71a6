//! A quicpeer circuit relay v2 server (`quicpeer::protocols::relay::Relay`) on a loopback
//! port, run by the mio driver in a thread of its own, for the relay interop tests.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use quicpeer::address;
use quicpeer::driver::{Driver, Exit, Handle};
use quicpeer::protocols::relay::{Relay, RelayConfig, RelayEvent};
use quicpeer::{Config, Host, HostConfig, Identity, Manager};

/// A running relay. Dropping it stops it.
pub struct RelayNode {
    addr: String,
    handle: Handle<Relay>,
    thread: Option<JoinHandle<()>>,
    events: mpsc::Receiver<RelayEvent>,
}

impl RelayNode {
    /// Starts a relay whose Ed25519 secret is `seed` repeated, on a free loopback port; its
    /// reservations carry that loopback address.
    pub fn spawn(seed: u8, config: RelayConfig) -> Result<Self, String> {
        let identity = Identity::from_ed25519_seed([seed; 32]);
        let (peer, keypair) = (identity.peer_id(), identity.keypair().clone());
        let (now, wall) = (Instant::now(), SystemTime::now());
        let manager = Manager::new(now, wall, identity, Config::default(), rand::random())
            .map_err(|e| format!("manager: {e}"))?;
        let host = Host::new(now, manager, HostConfig::default(), rand::random());
        let relay =
            Relay::new(now, wall, host, keypair, config).map_err(|e| format!("relay: {e}"))?;
        let bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut driver = Driver::bind(relay, &[bind]).map_err(|e| e.to_string())?;
        let local = *driver.local_addrs().first().ok_or("no socket bound")?;
        driver
            .machine_mut()
            .set_listen_addrs(vec![address::to_multiaddr(local, None)]);
        let handle = driver.handle();
        let (tx, events) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("quicpeer-relay".into())
            .spawn(move || loop {
                match driver.run_until(None, |_, event| {
                    let _ = tx.send(event);
                }) {
                    Ok(Exit::Stopped) | Err(_) => return,
                    Ok(_) => {}
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            addr: address::to_multiaddr(local, Some(peer)).to_string(),
            handle,
            thread: Some(thread),
            events,
        })
    }

    /// The relay's multiaddr, with `/p2p/<id>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The relay's own events (not its host's), each once, until one for which `last` holds
    /// (included) or `timeout` passes. A client may see the relay's answer before the relay's
    /// thread has reported its event: a test waits for it, bounded.
    pub fn relay_events_until(
        &self,
        timeout: Duration,
        last: impl Fn(&RelayEvent) -> bool,
    ) -> Vec<RelayEvent> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(RelayEvent::Host(_)) => {}
                Ok(event) => {
                    let done = last(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                Err(_) => return seen,
            }
        }
    }
}

impl Drop for RelayNode {
    fn drop(&mut self) {
        let _ = self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
