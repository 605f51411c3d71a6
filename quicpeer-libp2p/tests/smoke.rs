//! libp2p-quic's own smoke tests (rust-libp2p 0.57's `transports/quic/tests/smoke.rs`), ported
//! to quicpeer-libp2p: the transport alone, boxed as a Swarm would box it, on real loopback
//! sockets. The names are upstream's; where upstream's expectation differs from ours (it
//! describes libp2p-quic's behaviour), the test says what quicpeer-libp2p does instead.
//!
//! Ported: `smoke` (upstream `tokio_smoke`), `endpoint_reuse`, `ipv4_dial_ipv6`,
//! `wrapped_with_delay`, `wrong_peerid` (ignored upstream: libp2p-quic does not check the
//! PeerId; ours does, so the dial must fail), `concurrent_connections_and_streams` (upstream
//! draws the numbers of connections and streams with quickcheck, up to 10 each; here a fixed
//! set of cases covers the corners), `backpressure`, `read_after_peer_dropped_stream`,
//! `write_after_peer_dropped_stream` (upstream a `should_panic` after a fixed sleep; here the
//! write is awaited to fail with the peer's STOP_SENDING), `test_local_listener_reuse`.
//!
//! Not ported:
//! - `draft_29_support`: quicpeer speaks QUIC v1 only; that `/quic` (draft-29) addresses are
//!   refused to `listen_on` and `dial` with `MultiaddrNotSupported` is tested in `swarm.rs`
//!   (`addresses_that_are_not_quic_v1_are_not_supported`).
//! - `tcp_and_quic`: it tests libp2p-core's `OrTransport` with a TCP transport beside QUIC and
//!   would add libp2p's `tcp` to the dev-dependencies for nothing of ours; composing this
//!   transport with another one is what `relay.rs` runs (the relay client transport beside it).

mod support;

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::future::{self, poll_fn, BoxFuture, Either};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, SinkExt, StreamExt};
use libp2p::core::multiaddr::Protocol;
use libp2p::core::muxing::{StreamMuxerBox, StreamMuxerExt, SubstreamBox};
use libp2p::core::transport::{
    Boxed, DialOpts, ListenerId, PortUse, TransportError, TransportEvent,
};
use libp2p::core::{Endpoint, Transport};
use libp2p::{Multiaddr, PeerId};
use quicpeer_libp2p::{cause_of, Cause, Config};
use support::{init_logs, keypair, within};

type BoxedTransport = Boxed<(PeerId, StreamMuxerBox)>;

fn create_transport(seed: u8) -> (PeerId, BoxedTransport) {
    let key = keypair(seed);
    let config = Config::new(&key);
    let transport = quicpeer_libp2p::Transport::new(config)
        .map(|(p, c), _| (p, StreamMuxerBox::new(c)))
        .boxed();
    (key.public().to_peer_id(), transport)
}

async fn start_listening(transport: &mut BoxedTransport, addr: &str) -> Multiaddr {
    transport
        .listen_on(ListenerId::next(), addr.parse().unwrap())
        .unwrap();
    match within("a listen address", transport.next()).await {
        Some(TransportEvent::NewAddress { listen_addr, .. }) => listen_addr,
        e => panic!("{e:?}"),
    }
}

/// Drives two transports until the dialer's connection is established on both sides.
async fn connect(
    listener: &mut BoxedTransport,
    dialer: &mut BoxedTransport,
    addr: Multiaddr,
) -> (
    (PeerId, Multiaddr, StreamMuxerBox),
    (PeerId, StreamMuxerBox),
) {
    within(
        "a connection",
        future::join(
            async {
                let (upgrade, send_back_addr) =
                    listener.select_next_some().await.into_incoming().unwrap();
                let (peer_id, connection) = upgrade.await.unwrap();
                (peer_id, send_back_addr, connection)
            },
            async { dial(dialer, addr).await.unwrap() },
        ),
    )
    .await
}

/// Dials, polling the transport meanwhile (which must have nothing to say).
async fn dial(
    transport: &mut BoxedTransport,
    addr: Multiaddr,
) -> io::Result<(PeerId, StreamMuxerBox)> {
    let opts = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::Reuse,
    };
    match future::select(transport.dial(addr, opts).unwrap(), transport.next()).await {
        Either::Left((conn, _)) => conn,
        Either::Right((event, _)) => panic!("Unexpected event: {event:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    init_logs();
    let (a_peer_id, mut a_transport) = create_transport(60);
    let (b_peer_id, mut b_transport) = create_transport(61);

    let addr = start_listening(&mut a_transport, "/ip4/127.0.0.1/udp/0/quic-v1").await;
    let ((a_connected, _, _), (b_connected, _)) =
        connect(&mut a_transport, &mut b_transport, addr).await;

    assert_eq!(a_connected, b_peer_id);
    assert_eq!(b_connected, a_peer_id);
}

/// B dials A with no listener of its own (from a dial-only socket), so A cannot dial B back at
/// the address B came from; once B listens, its dials go out from its listening socket, and
/// that is the address A sees. (libp2p-quic's dial to the dial-only socket times out; ours
/// refuses new connections statelessly, so the dial fails at once, with the same result.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_reuse() {
    init_logs();
    let (_, mut a_transport) = create_transport(62);
    let (_, mut b_transport) = create_transport(63);

    let a_addr = start_listening(&mut a_transport, "/ip4/127.0.0.1/udp/0/quic-v1").await;
    let ((_, b_send_back_addr, _), _) =
        connect(&mut a_transport, &mut b_transport, a_addr.clone()).await;

    // Expect the dial to fail since b is not listening on an address.
    match within(
        "the dial to B's dial-only socket",
        dial(&mut a_transport, b_send_back_addr),
    )
    .await
    {
        Ok(_) => panic!("Expected dial to fail"),
        Err(error) => assert!(cause_of(&error).is_some(), "{error:?}"),
    }

    let b_addr = start_listening(&mut b_transport, "/ip4/127.0.0.1/udp/0/quic-v1").await;
    let ((_, a_send_back_addr, _), _) = connect(&mut b_transport, &mut a_transport, b_addr).await;

    assert_eq!(a_send_back_addr, a_addr);
}

/// A transport with no listener (no IPv6 socket) dials an IPv6 listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_dial_ipv6() {
    init_logs();
    let (a_peer_id, mut a_transport) = create_transport(64);
    let (b_peer_id, mut b_transport) = create_transport(65);

    let a_addr = start_listening(&mut a_transport, "/ip6/::1/udp/0/quic-v1").await;
    let ((a_connected, b_from, _), (b_connected, _)) =
        connect(&mut a_transport, &mut b_transport, a_addr).await;

    assert_eq!(a_connected, b_peer_id);
    assert_eq!(b_connected, a_peer_id);
    assert_eq!(
        b_from.iter().next(),
        Some(Protocol::Ip6([0, 0, 0, 0, 0, 0, 0, 1].into()))
    );
}

/// A dial made inside the dial future (as a DNS resolution would) after the transport's task
/// went to sleep still completes: the dial does not depend on the transport being polled
/// again. (Upstream: rust-libp2p pull request 3306.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapped_with_delay() {
    init_logs();

    struct DialDelay(Arc<Mutex<BoxedTransport>>);

    impl Transport for DialDelay {
        type Output = (PeerId, StreamMuxerBox);
        type Error = io::Error;
        type ListenerUpgrade = Pin<Box<dyn Future<Output = io::Result<Self::Output>> + Send>>;
        type Dial = BoxFuture<'static, Result<Self::Output, Self::Error>>;

        fn listen_on(
            &mut self,
            id: ListenerId,
            addr: Multiaddr,
        ) -> Result<(), TransportError<Self::Error>> {
            self.0.lock().unwrap().listen_on(id, addr)
        }

        fn remove_listener(&mut self, id: ListenerId) -> bool {
            self.0.lock().unwrap().remove_listener(id)
        }

        /// Calls the inner transport's `dial` inside the returned future, after a delay.
        fn dial(
            &mut self,
            addr: Multiaddr,
            dial_opts: DialOpts,
        ) -> Result<Self::Dial, TransportError<Self::Error>> {
            let t = self.0.clone();
            Ok(async move {
                // Lets the transport's task poll, find nothing, and sleep.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let dial = t
                    .lock()
                    .unwrap()
                    .dial(addr, dial_opts)
                    .map_err(|e| match e {
                        TransportError::MultiaddrNotSupported(a) => {
                            io::Error::other(format!("not supported: {a}"))
                        }
                        TransportError::Other(e) => e,
                    })?;
                dial.await
            }
            .boxed())
        }

        fn poll(
            self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
            Pin::new(&mut *self.0.lock().unwrap()).poll(cx)
        }
    }

    let (a_peer_id, mut a_transport) = create_transport(66);
    let (b_peer_id, mut b_transport) = {
        let (id, transport) = create_transport(67);
        (id, DialDelay(Arc::new(Mutex::new(transport))).boxed())
    };

    let a_addr = start_listening(&mut a_transport, "/ip6/::1/udp/0/quic-v1").await;
    let listener = tokio::spawn(async move {
        let (upgrade, _) = a_transport
            .select_next_some()
            .await
            .into_incoming()
            .unwrap();
        let (peer_id, _) = upgrade.await.unwrap();
        peer_id
    });

    // The dial runs in a task other than the transport's. It returns the connection too, which
    // lives until both ends are checked: quicpeer-tokio drops a connection that ends before
    // its listener took it (libp2p-quic reports it at its first packet).
    let dial = tokio::spawn({
        let dial = b_transport
            .dial(
                a_addr,
                DialOpts {
                    role: Endpoint::Dialer,
                    port_use: PortUse::Reuse,
                },
            )
            .unwrap();
        async { dial.await.unwrap() }
    });
    let driver = tokio::spawn(async move { b_transport.next().await });

    let (a_connected, b_connected) = within("both ends", future::join(listener, dial)).await;
    driver.abort();

    assert_eq!(a_connected.unwrap(), b_peer_id);
    assert_eq!(b_connected.unwrap().0, a_peer_id);
}

/// Upstream ignores this test: libp2p-quic does not check the PeerId of `/p2p/`. Ours does:
/// the dial fails with the mismatch, which names both PeerIds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_peerid() {
    init_logs();
    let (a_peer_id, mut a_transport) = create_transport(68);
    let (_, mut b_transport) = create_transport(69);
    let random_peer = keypair(70).public().to_peer_id();

    let a_addr = start_listening(&mut a_transport, "/ip6/::1/udp/0/quic-v1").await;
    let a_addr_random_peer = a_addr.with(Protocol::P2p(random_peer));

    let dialed = within("the dial", async {
        tokio::select! {
            dialed = dial(&mut b_transport, a_addr_random_peer) => dialed,
            // A's side of the handshake, which the dialer abandons.
            _ = async { loop { a_transport.next().await; } } => unreachable!(),
        }
    })
    .await;
    let Err(error) = dialed else {
        panic!("a dial to the wrong PeerId succeeded");
    };
    assert_eq!(
        cause_of(&error),
        Some(&Cause::PeerIdMismatch {
            expected: random_peer,
            actual: a_peer_id
        }),
        "{error:?}"
    );
}

/// Upstream's `concurrent_connections_and_streams_tokio` draws (connections, streams per
/// connection) at random up to 10 each; these cases cover its corners and a middle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_and_streams() {
    init_logs();
    for (listeners, streams) in [(1, 1), (1, 10), (10, 1), (3, 7), (10, 10)] {
        within(
            &format!("{streams} streams on each of {listeners} connections"),
            concurrent(listeners, streams),
        )
        .await;
    }
}

const BUFFER_SIZE: usize = 4096 * 10;

/// `listeners` listening transports; one dialer connects to each and opens `streams` streams
/// on each connection, each echoing 40 KiB of distinct data.
async fn concurrent(listeners: usize, streams: usize) {
    let (listeners_tx, mut listeners_rx) = mpsc::channel(listeners);
    let mut tasks = Vec::new();
    for i in 0..listeners {
        let mut listeners_tx = listeners_tx.clone();
        tasks.push(tokio::spawn(async move {
            let (peer_id, mut listener) = create_transport(80 + i as u8);
            let addr = start_listening(&mut listener, "/ip4/127.0.0.1/udp/0/quic-v1").await;
            listeners_tx.send((peer_id, addr)).await.unwrap();
            loop {
                if let TransportEvent::Incoming { upgrade, .. } = listener.select_next_some().await
                {
                    let (_, connection) = upgrade.await.unwrap();
                    tokio::spawn(answer_inbound_streams(connection));
                }
            }
        }));
    }

    let (completed_tx, completed_rx) = mpsc::channel(streams * listeners);
    tasks.push(tokio::spawn(async move {
        let (_, mut dialer) = create_transport(79);
        while let Some((peer, listener_addr)) = listeners_rx.next().await {
            let (connected, connection) = dial(&mut dialer, listener_addr.clone())
                .await
                .unwrap_or_else(|e| panic!("dial {listener_addr}: {e:?}"));
            assert_eq!(connected, peer);
            tokio::spawn(open_outbound_streams(
                connection,
                streams,
                completed_tx.clone(),
            ));
        }
    }));

    let completed: Vec<usize> = completed_rx.take(streams * listeners).collect().await;
    assert_eq!(completed.len(), streams * listeners);
    // Every stream carried its own data.
    assert_eq!(
        completed.iter().collect::<HashSet<_>>().len(),
        completed.len()
    );
    for task in tasks {
        task.abort();
    }
}

async fn answer_inbound_streams(mut connection: StreamMuxerBox) {
    loop {
        let Ok(mut inbound_stream) = poll_fn(|cx| {
            let _ = connection.poll_unpin(cx)?;
            connection.poll_inbound_unpin(cx)
        })
        .await
        else {
            return;
        };

        tokio::spawn(async move {
            // A ping-pong exchange first, as upstream's.
            let mut pong = [0u8; 4];
            inbound_stream.write_all(b"PING").await.unwrap();
            inbound_stream.flush().await.unwrap();
            inbound_stream.read_exact(&mut pong).await.unwrap();
            assert_eq!(&pong, b"PONG");

            let mut data = vec![0; BUFFER_SIZE];
            inbound_stream.read_exact(&mut data).await.unwrap();
            inbound_stream.write_all(&data).await.unwrap();
            inbound_stream.close().await.unwrap();
        });
    }
}

/// Data no other stream of the run carries: the stream's number, then a counter.
fn stream_data(n: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(BUFFER_SIZE);
    let mut i = 0u32;
    while data.len() < BUFFER_SIZE {
        data.extend_from_slice(&(n as u32).to_le_bytes());
        data.extend_from_slice(&i.to_le_bytes());
        i += 1;
    }
    data
}

async fn open_outbound_streams(
    mut connection: StreamMuxerBox,
    number_streams: usize,
    completed_tx: mpsc::Sender<usize>,
) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..number_streams {
        let mut outbound_stream = poll_fn(|cx| {
            let _ = connection.poll_unpin(cx)?;
            connection.poll_outbound_unpin(cx)
        })
        .await
        .unwrap();

        let mut completed_tx = completed_tx.clone();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let mut ping = [0u8; 4];
            outbound_stream.write_all(b"PONG").await.unwrap();
            outbound_stream.flush().await.unwrap();
            outbound_stream.read_exact(&mut ping).await.unwrap();
            assert_eq!(&ping, b"PING");

            let data = stream_data(n);
            let mut received = Vec::new();
            outbound_stream.write_all(&data).await.unwrap();
            outbound_stream.flush().await.unwrap();
            outbound_stream.read_to_end(&mut received).await.unwrap();
            assert_eq!(received, data);

            completed_tx.send(n).await.unwrap();
        });
    }

    // Keeps the connection polled (as a Swarm would) until it ends.
    while poll_fn(|cx| connection.poll_unpin(cx)).await.is_ok() {}
}

/// Two connected transports and one stream between them, A's outbound and B's inbound; a
/// task keeps both transports and both connections polled.
async fn build_streams(a_seed: u8, b_seed: u8) -> (SubstreamBox, SubstreamBox) {
    let (_, mut a_transport) = create_transport(a_seed);
    let (_, mut b_transport) = create_transport(b_seed);

    let addr = start_listening(&mut a_transport, "/ip4/127.0.0.1/udp/0/quic-v1").await;
    let ((_, _, mut conn_a), (_, mut conn_b)) =
        connect(&mut a_transport, &mut b_transport, addr).await;
    let (stream_a_tx, stream_a_rx) = oneshot::channel();
    let (stream_b_tx, stream_b_rx) = oneshot::channel();

    tokio::spawn(async move {
        let mut stream_a_tx = Some(stream_a_tx);
        let mut stream_b_tx = Some(stream_b_tx);
        poll_fn::<(), _>(move |cx| {
            let _ = a_transport.poll_next_unpin(cx);
            let _ = conn_a.poll_unpin(cx);
            let _ = b_transport.poll_next_unpin(cx);
            let _ = conn_b.poll_unpin(cx);
            if stream_a_tx.is_some() {
                if let Poll::Ready(stream) = conn_a.poll_outbound_unpin(cx) {
                    let tx = stream_a_tx.take().unwrap();
                    tx.send(stream.unwrap()).unwrap();
                }
            }
            if stream_b_tx.is_some() {
                if let Poll::Ready(stream) = conn_b.poll_inbound_unpin(cx) {
                    let tx = stream_b_tx.take().unwrap();
                    tx.send(stream.unwrap()).unwrap();
                }
            }
            Poll::Pending
        })
        .await
    });
    let mut stream_a = within("A's stream", stream_a_rx).await.unwrap();

    // A byte tells the peer of the new stream.
    let send_buf = [0];
    stream_a.write_all(&send_buf).await.unwrap();

    let mut stream_b = within("B's stream", stream_b_rx).await.unwrap();
    let mut recv_buf = [1];
    assert_eq!(
        within("the first byte", stream_b.read(&mut recv_buf))
            .await
            .unwrap(),
        1
    );
    assert_eq!(send_buf, recv_buf);

    (stream_a, stream_b)
}

/// A writer that fills the peer's stream window waits (no unbounded buffer) until the reader
/// reads. (Upstream asserts the write is ready at once after the read; here it is awaited,
/// since the reader's new credit takes a round trip to reach the writer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure() {
    init_logs();
    let max_stream_data = Config::new(&keypair(71)).quic.stream_receive_window as usize;

    let (mut stream_a, mut stream_b) = build_streams(71, 72).await;

    // With the byte of `build_streams`, the whole window.
    let data = vec![0; max_stream_data - 1];
    within("a window's worth of writing", stream_a.write_all(&data))
        .await
        .unwrap();

    let more_data = vec![0; 1];
    assert!(stream_a.write(&more_data).now_or_never().is_none());

    let mut buf = vec![1; max_stream_data - 1];
    within("reading the window", stream_b.read_exact(&mut buf))
        .await
        .unwrap();

    let mut buf = [0];
    assert!(stream_b.read(&mut buf).now_or_never().is_none());

    assert_eq!(
        within("the blocked write", stream_a.write(&more_data))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_after_peer_dropped_stream() {
    init_logs();
    let (mut stream_a, mut stream_b) = build_streams(73, 74).await;

    let data = vec![0; 10];

    stream_b.close().now_or_never();
    stream_a.write_all(&data).await.unwrap();
    stream_a.close().await.unwrap();
    drop(stream_a);

    stream_b.close().await.unwrap();
    let mut buf = Vec::new();
    within("the rest of the stream", stream_b.read_to_end(&mut buf))
        .await
        .unwrap();
    assert_eq!(data, buf)
}

/// Upstream expects the write (after a fixed sleep) to panic; here B writes until the peer's
/// STOP_SENDING arrives, which must fail the write with the peer's code (0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_after_peer_dropped_stream() {
    init_logs();
    let (stream_a, mut stream_b) = build_streams(75, 76).await;
    drop(stream_a);

    // A's end of its half comes with the drop; read it, then write until refused.
    let mut buf = Vec::new();
    within("A's end", stream_b.read_to_end(&mut buf))
        .await
        .unwrap();
    let data = vec![0; 10];
    let error = within("the refused write", async {
        loop {
            match stream_b.write_all(&data).await {
                Ok(()) => tokio::task::yield_now().await,
                Err(e) => return e,
            }
        }
    })
    .await;
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error:?}");
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<quicpeer_tokio::StreamError>());
    assert_eq!(
        inner,
        Some(&quicpeer_tokio::StreamError::Stopped(0)),
        "{error:?}"
    );
}

/// - A listens on 0.0.0.0:0
/// - B listens on 127.0.0.1:0
/// - A dials B
/// - Source port of A at B is the A's listen port
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_local_listener_reuse() {
    init_logs();
    let (_, mut a_transport) = create_transport(77);
    let (_, mut b_transport) = create_transport(78);

    a_transport
        .listen_on(
            ListenerId::next(),
            "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap(),
        )
        .unwrap();

    // Wait until the listener reports a loopback address.
    let a_listen_addr = within("a loopback listen address", async {
        loop {
            let ev = a_transport.next().await.unwrap();
            let listen_addr = ev.into_new_address().unwrap();
            if let Some(Protocol::Ip4(ip4)) = listen_addr.iter().next() {
                if ip4.is_loopback() {
                    return listen_addr;
                }
            }
        }
    })
    .await;
    // Takes the other addresses, so that `connect` below sees no event of A's listener.
    poll_fn(|cx| {
        let mut pinned = Pin::new(&mut a_transport);
        while pinned.as_mut().poll(cx).is_ready() {}
        Poll::Ready(())
    })
    .await;

    let b_addr = start_listening(&mut b_transport, "/ip4/127.0.0.1/udp/0/quic-v1").await;
    let (_, send_back_addr, _) = connect(&mut b_transport, &mut a_transport, b_addr).await.0;
    assert_eq!(send_back_addr, a_listen_addr);
}
