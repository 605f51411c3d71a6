//! A quicpeer node on real loopback UDP for the driver tests: a `Driver<Manager>` on its own
//! thread, steered from the test thread through the driver's `Handle`.
//!
//! Each node echoes whatever arrives on streams the peer opened (a stand-in for a ping
//! responder) and forwards its events, and the data it reads on its own streams, to the test.
//! Waits are bounded by deadlines; nothing sleeps for correctness.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use quicpeer::driver::{Driver, DriverStats, Exit, Handle};
use quicpeer::{Config, ConnId, Event, Identity, Manager, PeerId, Read, StreamId};

/// What a node tells the test.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a test channel: size does not matter
pub enum Report {
    /// A manager event.
    Event(Event),
    /// Bytes read on a stream this node opened.
    Data(StreamId, Bytes),
}

/// Control messages, delivered after `Handle::stop` interrupts `Driver::run`.
enum Control {
    Stats(Sender<DriverStats>),
    /// Drop the driver without closing anything: a crash.
    Kill,
    /// Close gracefully, then stop; answers whether everything closed within the grace period.
    Shutdown(Duration, Sender<bool>),
}

/// A node running on its own thread.
pub struct Node {
    pub peer_id: PeerId,
    pub addrs: Vec<SocketAddr>,
    handle: Handle<Manager>,
    control: Sender<Control>,
    reports: Receiver<(Instant, Report)>,
    /// Everything reported so far, in order.
    pub log: Vec<(Instant, Report)>,
    thread: Option<JoinHandle<()>>,
}

/// A configuration for loopback tests.
pub fn config(keep_alive: Option<Duration>, idle: Duration) -> Config {
    let mut config = Config::default();
    config.keep_alive = keep_alive;
    config.idle_timeout = idle;
    config
}

/// The Ed25519 identity whose secret is `n` repeated.
pub fn identity(n: u8) -> Identity {
    Identity::from_ed25519_seed([n; 32])
}

/// Installs a tracing subscriber once, for `RUST_LOG=...` debugging of a failing test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl Node {
    /// Starts a node bound to `bind`; `Err` if a socket cannot be bound.
    pub fn spawn(identity: Identity, config: Config, bind: &[SocketAddr]) -> Result<Node, String> {
        let peer_id = identity.peer_id();
        let bind = bind.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (report_tx, reports) = mpsc::channel();
        let (control, control_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let manager = Manager::new(
                Instant::now(),
                SystemTime::now(),
                identity,
                config,
                rand::random(),
            )
            .expect("manager");
            let mut driver = match Driver::bind(manager, &bind) {
                Ok(driver) => driver,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok((driver.local_addrs(), driver.handle())));
            let mut echo = Echo::default();
            loop {
                let exit = driver
                    .run_until(None, |cx, event| echo.on_event(cx, event, &report_tx))
                    .expect("driver failed");
                assert_eq!(exit, Exit::Stopped);
                match control_rx.recv() {
                    Ok(Control::Stats(tx)) => {
                        let _ = tx.send(driver.stats());
                    }
                    Ok(Control::Kill) | Err(_) => return,
                    Ok(Control::Shutdown(grace, tx)) => {
                        let closed = driver
                            .shutdown(grace, |cx, event| echo.on_event(cx, event, &report_tx))
                            .expect("shutdown failed");
                        let _ = tx.send(closed);
                        return;
                    }
                }
            }
        });
        let (addrs, handle) = ready_rx
            .recv()
            .map_err(|_| "node thread died".to_owned())??;
        Ok(Node {
            peer_id,
            addrs,
            handle,
            control,
            reports,
            log: Vec::new(),
            thread: Some(thread),
        })
    }

    /// The first bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Runs `f` on the node's thread and returns its result.
    pub fn exec<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Manager, Instant) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = mpsc::channel();
        self.handle
            .execute(move |m, now| {
                let _ = tx.send(f(m, now));
            })
            .expect("node is running");
        rx.recv_timeout(Duration::from_secs(5))
            .expect("command answered")
    }

    /// The driver's counters now.
    pub fn stats(&self) -> DriverStats {
        let (tx, rx) = mpsc::channel();
        self.control.send(Control::Stats(tx)).expect("node alive");
        self.handle.stop().expect("node alive");
        rx.recv_timeout(Duration::from_secs(5)).expect("stats")
    }

    /// Crashes the node: its socket closes, nothing is sent to its peers.
    pub fn kill(mut self) {
        let _ = self.control.send(Control::Kill);
        let _ = self.handle.stop();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("node thread panicked");
        }
    }

    /// Closes every connection and stops; whether all closed within `grace`.
    pub fn shutdown(mut self, grace: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        let _ = self.control.send(Control::Shutdown(grace, tx));
        let _ = self.handle.stop();
        let closed = rx
            .recv_timeout(grace + Duration::from_secs(5))
            .unwrap_or(false);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("node thread panicked");
        }
        closed
    }

    /// Dials `peer` at `addrs`.
    pub fn dial(&self, peer: PeerId, addrs: Vec<SocketAddr>) {
        self.exec(move |m, now| m.dial(now, peer, addrs))
            .expect("dial accepted");
    }

    /// Waits until `pick` matches a report after index `from` of the log, for at most
    /// `timeout`; returns the time and what `pick` returned.
    pub fn wait_for<T>(
        &mut self,
        from: usize,
        timeout: Duration,
        mut pick: impl FnMut(&Report) -> Option<T>,
    ) -> Option<(Instant, T)> {
        let deadline = Instant::now() + timeout;
        let mut seen = from;
        loop {
            while seen < self.log.len() {
                let (at, report) = &self.log[seen];
                seen += 1;
                if let Some(t) = pick(report) {
                    return Some((*at, t));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(report) => self.log.push(report),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits for an event `pick` matches, after index `from` of the log.
    pub fn wait_event<T>(
        &mut self,
        from: usize,
        timeout: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<(Instant, T)> {
        self.wait_for(from, timeout, |r| match r {
            Report::Event(e) => pick(e),
            Report::Data(..) => None,
        })
    }

    /// Waits for a `Connected` to `peer`; returns the connection and what it replaced.
    pub fn wait_connected(
        &mut self,
        from: usize,
        peer: PeerId,
        timeout: Duration,
    ) -> Option<(Instant, ConnId, Option<ConnId>)> {
        self.wait_event(from, timeout, |e| match e {
            Event::Connected {
                peer: p,
                conn,
                replaced,
                ..
            } if *p == peer => Some((*conn, *replaced)),
            _ => None,
        })
        .map(|(at, (conn, replaced))| (at, conn, replaced))
    }

    /// Sends 32 bytes on a new stream of `conn` and waits for them to come back; the RTT.
    pub fn ping(&mut self, conn: ConnId, timeout: Duration) -> Result<Duration, String> {
        let payload: [u8; 32] = rand::random();
        let from = self.log.len();
        let start = Instant::now();
        let stream = self.exec(move |m, _| -> Result<StreamId, String> {
            let stream = m.open_stream(conn).map_err(|e| e.to_string())?;
            m.stream_write(stream, &payload)
                .map_err(|e| e.to_string())?;
            Ok(stream)
        })?;
        let mut echoed = Vec::new();
        let done = self.wait_for(from, timeout, |r| match r {
            Report::Data(s, data) if *s == stream => {
                echoed.extend_from_slice(data);
                (echoed.len() >= payload.len()).then_some(())
            }
            _ => None,
        });
        match done {
            Some((at, ())) if echoed[..] == payload[..] => Ok(at - start),
            Some(_) => Err("echo differs".into()),
            None => Err(format!("no echo within {timeout:?}")),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.control.send(Control::Kill);
            let _ = self.handle.stop();
            let _ = thread.join();
        }
    }
}

/// Echoes data on streams the peer opened; forwards data on our own streams and every event.
#[derive(Default)]
pub struct Echo {
    inbound: HashSet<StreamId>,
}

impl Echo {
    pub fn on_event(
        &mut self,
        cx: &mut quicpeer::driver::Context<'_, Manager>,
        event: Event,
        reports: &Sender<(Instant, Report)>,
    ) {
        let now = cx.now();
        match &event {
            Event::StreamOpened { stream, .. } => {
                self.inbound.insert(*stream);
                self.read(cx.machine(), *stream, now, reports);
            }
            Event::StreamReadable { stream } => self.read(cx.machine(), *stream, now, reports),
            Event::ConnectionLost {
                unfinished_streams, ..
            } => {
                for s in unfinished_streams {
                    self.inbound.remove(s);
                }
            }
            _ => {}
        }
        let _ = reports.send((now, Report::Event(event)));
    }

    fn read(
        &mut self,
        m: &mut Manager,
        stream: StreamId,
        now: Instant,
        reports: &Sender<(Instant, Report)>,
    ) {
        loop {
            match m.stream_read(stream, 64 * 1024) {
                Ok(Read::Data(data)) => {
                    if self.inbound.contains(&stream) {
                        let _ = m.stream_write(stream, &data);
                    } else {
                        let _ = reports.send((now, Report::Data(stream, data)));
                    }
                }
                Ok(Read::Finished) => {
                    if self.inbound.remove(&stream) {
                        let _ = m.stream_finish(stream);
                    }
                    return;
                }
                Err(_) => return,
            }
        }
    }
}
