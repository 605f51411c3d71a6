//! Embedding quicpeer as a libp2p-compatible transport, in one file.
//!
//! Two nodes on loopback, each a [`Host`] (the manager plus multistream-select and ping) on the
//! mio [`Driver`], each on a thread of its own (the server on one that [`Driver::spawn`]
//! starts). The server registers `/echo/1.0.0` and sends back whatever a stream brings, then
//! finishes it. The client dials the server's multiaddr
//! (the `/p2p/` part names the PeerId the handshake must prove), opens an echo stream, writes
//! a message, finishes, and reads the echo until the stream ends.
//!
//! ```text
//! cargo run --example echo
//! ```
//!
//! `cargo test` runs it too (as the test at the bottom), so it cannot rot.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use quicpeer::address;
use quicpeer::driver::{Context, Driver, Exit};
use quicpeer::{
    Config, Event, Host, HostConfig, HostEvent, Identity, Manager, ReadStatus, StreamError,
    StreamId,
};

const PROTOCOL: &str = "/echo/1.0.0";

fn main() -> Result<(), Box<dyn Error>> {
    let message = b"hello over libp2p QUIC";
    let echo = run(message)?;
    println!(
        "sent {} bytes, echoed: {:?}",
        message.len(),
        String::from_utf8_lossy(&echo)
    );
    Ok(())
}

/// Starts a server, has a client send `message` through it, returns what came back.
fn run(message: &[u8]) -> Result<Vec<u8>, Box<dyn Error>> {
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;

    // The server: registers the protocol and echoes on every stream that negotiates it.
    let mut server_host = host(1)?;
    server_host.register(PROTOCOL)?;
    let server = Driver::bind(server_host, &[loopback])?;
    let server_addr = address::to_multiaddr(
        server.local_addrs()[0],
        Some(server.machine().manager().local_peer_id()),
    );
    let mut outbox = Outbox::default();
    let server = server.spawn(move |cx, event| match event {
        HostEvent::InboundStream {
            stream, leftover, ..
        } => {
            outbox.push(stream, &leftover);
            outbox.flush(cx, stream);
        }
        HostEvent::Manager(Event::StreamReadable { stream }) => {
            let mut chunks = Vec::new();
            let read = cx
                .manager_mut()
                .stream_read_chunks(stream, 64 * 1024, &mut chunks);
            for chunk in &chunks {
                outbox.push(stream, chunk);
            }
            if let Ok(read) = read {
                if read.status == ReadStatus::Finished {
                    outbox.finish(stream);
                }
            }
            outbox.flush(cx, stream);
        }
        HostEvent::Manager(Event::StreamWritable { stream }) => outbox.flush(cx, stream),
        _ => {}
    })?;

    // The client: dials, opens an echo stream once connected, reads the echo to its end.
    let mut client = Driver::bind(host(2)?, &[loopback])?;
    let now = client.now();
    client.machine_mut().dial_addrs(now, &[server_addr])?;
    let mut outbox = Outbox::default();
    let mut echo = Vec::new();
    let mut failure: Option<String> = None;

    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = client.run_until(Some(deadline), |cx, event| match event {
        HostEvent::Manager(Event::Connected { peer, .. }) => {
            let now = cx.now();
            if let Err(e) = cx.open_stream(now, peer, [PROTOCOL]) {
                failure = Some(format!("cannot open a stream: {e}"));
                cx.stop();
            }
        }
        HostEvent::OutboundStream {
            stream, leftover, ..
        } => {
            echo.extend_from_slice(&leftover);
            outbox.push(stream, message);
            outbox.finish(stream);
            outbox.flush(cx, stream);
        }
        HostEvent::OutboundFailed { error, .. } => {
            failure = Some(format!("the server refused {PROTOCOL}: {error:?}"));
            cx.stop();
        }
        HostEvent::Manager(Event::StreamWritable { stream }) => outbox.flush(cx, stream),
        HostEvent::Manager(Event::StreamReadable { stream }) => {
            let mut chunks: Vec<Bytes> = Vec::new();
            match cx
                .manager_mut()
                .stream_read_chunks(stream, usize::MAX, &mut chunks)
            {
                Ok(read) => {
                    chunks.iter().for_each(|c| echo.extend_from_slice(c));
                    if read.status == ReadStatus::Finished {
                        cx.stop(); // the echo is complete
                    }
                }
                Err(e) => {
                    failure = Some(format!("reading the echo: {e}"));
                    cx.stop();
                }
            }
        }
        HostEvent::Manager(Event::DialFailed { errors, .. }) => {
            failure = Some(format!("cannot reach the server: {errors:?}"));
            cx.stop();
        }
        _ => {}
    })?;
    client.shutdown(Duration::from_secs(1), |_, _| {})?;
    // Take the server back from its thread and close its connections, so that no peer is
    // left waiting for its idle timeout.
    let (mut server, run) = server.stop().map_err(|_| "the server thread panicked")?;
    run?;
    server.shutdown(Duration::from_secs(1), |_, _| {})?;

    if let Some(failure) = failure {
        return Err(failure.into());
    }
    if exit == Exit::Deadline {
        return Err("no echo within 10 s".into());
    }
    Ok(echo)
}

/// A host with the Ed25519 identity whose secret is `seed` repeated, default settings.
fn host(seed: u8) -> Result<Host, Box<dyn Error>> {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let identity = Identity::from_ed25519_seed([seed; 32]);
    let manager = Manager::new(now, wall, identity, Config::default(), rand::random())?;
    Ok(Host::new(
        now,
        manager,
        HostConfig::default(),
        rand::random(),
    ))
}

/// Bytes waiting for flow control, per stream, and whether to finish the stream after them.
#[derive(Default)]
struct Outbox {
    pending: BTreeMap<StreamId, (Vec<u8>, bool)>,
}

impl Outbox {
    fn push(&mut self, stream: StreamId, data: &[u8]) {
        self.pending
            .entry(stream)
            .or_default()
            .0
            .extend_from_slice(data);
    }

    fn finish(&mut self, stream: StreamId) {
        self.pending.entry(stream).or_default().1 = true;
    }

    /// Writes what the stream takes now; the rest waits for `StreamWritable`.
    fn flush(&mut self, cx: &mut Context<'_, Host>, stream: StreamId) {
        let Some((data, finish)) = self.pending.get_mut(&stream) else {
            return;
        };
        while !data.is_empty() {
            match cx.manager_mut().stream_write(stream, data) {
                Ok(written) => {
                    data.drain(..written);
                }
                Err(StreamError::Blocked) => return,
                Err(_) => {
                    // The stream is gone (reset, or its connection closed): drop what waits.
                    self.pending.remove(&stream);
                    return;
                }
            }
        }
        if *finish {
            let _ = cx.manager_mut().stream_finish(stream);
            self.pending.remove(&stream);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_server_echoes_what_the_client_sends() {
        // Larger than one stream's initial window chunk, so flow control and several reads
        // take part.
        let message: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let echo = super::run(&message).expect("the echo completes");
        assert_eq!(echo.len(), message.len());
        assert!(echo == message, "the echo differs from the message");
    }
}
