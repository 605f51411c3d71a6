//! The async API on real loopback sockets. Every wait has a generous deadline (`WAIT`), and
//! the tests assert what happens, never how fast, so that a loaded machine slows them down
//! without failing them.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use quicpeer::{Cause, Config, Direction, Identity};
use quicpeer_tokio::{ConnectError, Connection, Endpoint, PeerEvent, StreamError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// A deadline no healthy run comes near.
const WAIT: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing after {WAIT:?}"),
    }
}

fn identity(n: u8) -> Identity {
    Identity::from_ed25519_seed([n; 32])
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Echoes every stream of every inbound connection: each chunk back as it comes, and the
/// stream's end. The endpoint lives as long as the returned task.
fn serve(endpoint: Endpoint) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(connection) = endpoint.accept().await {
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    tokio::spawn(async move {
                        let mut buf = vec![0; 4096];
                        loop {
                            match recv.read(&mut buf).await {
                                Ok(0) => {
                                    let _ = send.shutdown().await;
                                    break;
                                }
                                Ok(n) => {
                                    if send.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                    });
                }
            });
        }
    })
}

/// Writes `data` on a fresh stream, finishes it, and reads the echo to its end.
async fn echo(connection: &Connection, data: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = within("open_bi", connection.open_bi()).await.unwrap();
    within("write", send.write_all(data)).await.unwrap();
    within("finish", send.shutdown()).await.unwrap();
    let mut back = Vec::new();
    within("read to end", recv.read_to_end(&mut back))
        .await
        .unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_by_peer_id_and_echo() {
    init_logs();
    let server = Endpoint::bind(identity(2), Config::default(), loopback()).unwrap();
    let (server_id, server_addr) = (server.peer_id(), server.local_addr());
    let _server = serve(server);

    let client = Endpoint::bind(identity(1), Config::default(), loopback()).unwrap();
    let connection = within("connect", client.connect(server_id, [server_addr]))
        .await
        .unwrap();
    assert_eq!(connection.peer_id(), server_id);
    assert_eq!(connection.remote_addr(), server_addr);

    assert_eq!(echo(&connection, b"hello").await, b"hello");
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    assert_eq!(echo(&connection, &big).await, big);

    // A second connect finds the connection there is.
    let again = within("connect again", client.connect(server_id, []))
        .await
        .unwrap();
    assert_eq!(again.id(), connection.id());
    assert!(within("close", client.close()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_gives_the_inbound_connection_and_its_streams() {
    init_logs();
    let server = Endpoint::bind(identity(4), Config::default(), loopback()).unwrap();
    let client = Endpoint::bind(identity(3), Config::default(), loopback()).unwrap();
    let connection = within(
        "connect",
        client.connect(server.peer_id(), [server.local_addr()]),
    )
    .await
    .unwrap();
    let inbound = within("accept", server.accept()).await.unwrap();
    assert_eq!(inbound.peer_id(), client.peer_id());

    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(b"ping").await.unwrap();
    send.shutdown().await.unwrap();
    let (_send, mut recv) = within("accept_bi", inbound.accept_bi()).await.unwrap();
    let mut got = Vec::new();
    within("read", recv.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"ping");

    // Closing the client tells the server, whose connection ends as closed by the peer.
    assert!(within("close", client.close()).await);
    let cause = within("closed", inbound.closed()).await;
    assert!(
        matches!(cause, Cause::ClosedByPeer { .. }),
        "closed by {cause:?}"
    );
    assert!(within("accept after close", client.accept())
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_peer_id_fails_with_its_cause() {
    init_logs();
    let server = Endpoint::bind(identity(6), Config::default(), loopback()).unwrap();
    let server_addr = server.local_addr();
    let _server = serve(server);
    let client = Endpoint::bind(identity(5), Config::default(), loopback()).unwrap();
    let impostor = identity(7).peer_id();

    let err = within("connect", client.connect(impostor, [server_addr]))
        .await
        .unwrap_err();
    match &err {
        ConnectError::DialFailed { peer, errors } => {
            assert_eq!(*peer, impostor);
            assert!(
                errors.iter().any(|(addr, cause)| *addr == server_addr
                    && matches!(cause, Cause::PeerIdMismatch { expected, .. } if *expected == impostor)),
                "{err}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_fails_old_streams_and_is_reconnected() {
    init_logs();
    let server = Endpoint::bind(identity(9), Config::default(), loopback()).unwrap();
    let (server_id, server_addr) = (server.peer_id(), server.local_addr());
    let server_task = serve(server);

    let client = Endpoint::bind(identity(8), Config::default(), loopback()).unwrap();
    let mut events = client.events();
    let old = within("connect", client.connect(server_id, [server_addr]))
        .await
        .unwrap();
    let (mut send, mut recv) = within("open_bi", old.open_bi()).await.unwrap();
    send.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    within("echo before", recv.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"before");

    // The server dies without a word (its task, and with it the endpoint, is dropped) and
    // comes back with the same identity on the same port.
    server_task.abort();
    let _ = server_task.await;
    let restarted = within("rebind", async {
        loop {
            match Endpoint::bind(identity(9), Config::default(), server_addr) {
                Ok(endpoint) => break endpoint,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    let _restarted = serve(restarted);

    // The old stream learns that the peer restarted: the packet it sends is answered with a
    // stateless reset.
    let _ = within("write after the restart", send.write_all(b"after")).await;
    let err = within("old stream fails", async {
        let mut buf = [0u8; 64];
        loop {
            match recv.read(&mut buf).await {
                Ok(0) => panic!("the old stream ended cleanly"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        }
    })
    .await;
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<StreamError>());
    assert_eq!(
        inner,
        Some(&StreamError::ConnectionLost(Cause::PeerRestarted)),
        "{err}"
    );
    assert_eq!(within("closed", old.closed()).await, Cause::PeerRestarted);

    // The endpoint redialed by itself: the events say the connection was lost to a restart,
    // that a reconnect started, and that the peer is connected again.
    let (mut lost, mut reconnecting) = (false, false);
    let fresh_conn = within("reconnected", async {
        loop {
            match events.recv().await {
                Ok(PeerEvent::ConnectionLost {
                    peer, conn, cause, ..
                }) if conn == old.id() => {
                    assert_eq!((peer, cause), (server_id, Cause::PeerRestarted));
                    lost = true;
                }
                Ok(PeerEvent::Reconnecting { peer, lost, .. }) if lost == old.id() => {
                    assert_eq!(peer, server_id);
                    reconnecting = true;
                }
                Ok(PeerEvent::Connected {
                    peer,
                    conn,
                    direction,
                    ..
                }) if peer == server_id && conn != old.id() => {
                    assert_eq!(direction, Direction::Outbound);
                    break conn;
                }
                Ok(_) => continue,
                Err(e) => panic!("events: {e}"),
            }
        }
    })
    .await;
    assert!(
        lost && reconnecting,
        "lost: {lost}, reconnecting: {reconnecting}"
    );
    let fresh = within(
        "connect to the fresh connection",
        client.connect(server_id, []),
    )
    .await
    .unwrap();
    assert_eq!(fresh.id(), fresh_conn);
    assert_eq!(echo(&fresh, b"again").await, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_the_peer_to_read() {
    init_logs();
    let mut small_window = Config::default();
    small_window.stream_receive_window = 16 * 1024;
    let server = Endpoint::bind(identity(11), small_window, loopback()).unwrap();
    let client = Endpoint::bind(identity(10), Config::default(), loopback()).unwrap();
    let connection = within(
        "connect",
        client.connect(server.peer_id(), [server.local_addr()]),
    )
    .await
    .unwrap();
    let inbound = within("accept", server.accept()).await.unwrap();

    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    let reader = {
        let mut write = pin!(send.write_all(&data));
        // Sixty times the window cannot go out while nobody reads: the write waits.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut write)
                .await
                .is_err(),
            "a write beyond the peer's window completed without the peer reading"
        );
        let reader = tokio::spawn(async move {
            let (_send, mut recv) = inbound.accept_bi().await.unwrap();
            let mut got = Vec::new();
            recv.read_to_end(&mut got).await.unwrap();
            got
        });
        within("write once the peer reads", write).await.unwrap();
        reader
    };
    send.shutdown().await.unwrap();
    let got = within("reader", reader).await.unwrap();
    assert!(
        got == data,
        "read {} bytes, not what was written",
        got.len()
    );
    assert!(within("close", client.close()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_bi_waits_for_the_peers_stream_credit() {
    init_logs();
    let mut one_stream = Config::default();
    one_stream.max_concurrent_bidi_streams = 1;
    let server = Endpoint::bind(identity(13), one_stream, loopback()).unwrap();
    let (server_id, server_addr) = (server.peer_id(), server.local_addr());
    let _server = serve(server);
    let client = Endpoint::bind(identity(12), Config::default(), loopback()).unwrap();
    let connection = within("connect", client.connect(server_id, [server_addr]))
        .await
        .unwrap();

    let (mut send, mut recv) = within("first open_bi", connection.open_bi()).await.unwrap();
    {
        let mut second = pin!(connection.open_bi());
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut second)
                .await
                .is_err(),
            "a second stream opened beyond the peer's limit of one"
        );
        // The first stream ends both ways; the peer grants another.
        send.write_all(b"one").await.unwrap();
        send.shutdown().await.unwrap();
        let mut back = Vec::new();
        within("first echo", recv.read_to_end(&mut back))
            .await
            .unwrap();
        assert_eq!(back, b"one");
        drop((send, recv));
        let (mut send, mut recv) = within("second open_bi", second).await.unwrap();
        send.write_all(b"two").await.unwrap();
        send.shutdown().await.unwrap();
        let mut back = Vec::new();
        within("second echo", recv.read_to_end(&mut back))
            .await
            .unwrap();
        assert_eq!(back, b"two");
    }
    assert!(within("close", client.close()).await);
}

/// CPU time this process has used (user and system), from /proc.
#[cfg(target_os = "linux")]
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux configuration that matters here.
    Duration::from_millis(ticks * 10)
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_endpoints_do_not_spin() {
    init_logs();
    let server = Endpoint::bind(identity(15), Config::default(), loopback()).unwrap();
    let client = Endpoint::bind(identity(14), Config::default(), loopback()).unwrap();
    let _connection = within(
        "connect",
        client.connect(server.peer_id(), [server.local_addr()]),
    )
    .await
    .unwrap();
    let _inbound = within("accept", server.accept()).await.unwrap();
    // Other tests run in this process at the same time; each of them is short and keeps its
    // own CPU use low, so a driver that spun (a core for each of the two, three seconds)
    // would still stand far above the bound.
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(1500),
        "{used:?} of CPU in 3 s idle"
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Endpoint>();
    send_sync::<Connection>();
    send_sync::<quicpeer_tokio::SendStream>();
    send_sync::<quicpeer_tokio::RecvStream>();
    send_sync::<ConnectError>();
    send_sync::<StreamError>();
}

/// The `StreamError` inside an I/O error of a stream.
fn stream_error(e: &std::io::Error) -> Option<&StreamError> {
    e.get_ref().and_then(|e| e.downcast_ref::<StreamError>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_stop_reach_the_peer_as_typed_errors() {
    init_logs();
    let server = Endpoint::bind(identity(17), Config::default(), loopback()).unwrap();
    let client = Endpoint::bind(identity(16), Config::default(), loopback()).unwrap();
    let connection = within(
        "connect",
        client.connect(server.peer_id(), [server.local_addr()]),
    )
    .await
    .unwrap();
    let inbound = within("accept", server.accept()).await.unwrap();

    // We reset: the peer's reads fail with the code, and keep failing.
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(b"abandoned").await.unwrap();
    send.reset(7).unwrap();
    let (_their_send, mut their_recv) = within("accept_bi", inbound.accept_bi()).await.unwrap();
    let err = within("reset seen", async {
        let mut buf = [0u8; 64];
        loop {
            match their_recv.read(&mut buf).await {
                Ok(0) => panic!("a reset stream ended cleanly"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        }
    })
    .await;
    assert_eq!(stream_error(&err), Some(&StreamError::Reset(7)), "{err}");
    let again = their_recv.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(stream_error(&again), Some(&StreamError::Reset(7)));

    // The peer stops: our writes fail with its code.
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(b"unwanted").await.unwrap();
    let (_their_send, mut their_recv) = within("accept_bi", inbound.accept_bi()).await.unwrap();
    their_recv.stop(9).unwrap();
    let read_after_stop = their_recv.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(stream_error(&read_after_stop), Some(&StreamError::Closed));
    let err = within("stop seen", async {
        loop {
            if let Err(e) = send.write_all(&[0u8; 1024]).await {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(stream_error(&err), Some(&StreamError::Stopped(9)), "{err}");
    assert!(within("close", client.close()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_endpoint_fails_what_waits_on_it() {
    init_logs();
    let server = Endpoint::bind(identity(19), Config::default(), loopback()).unwrap();
    let (server_id, server_addr) = (server.peer_id(), server.local_addr());
    let _server = serve(server);
    let client = Endpoint::bind(identity(18), Config::default(), loopback()).unwrap();
    let connection = within("connect", client.connect(server_id, [server_addr]))
        .await
        .unwrap();
    let (_send, mut recv) = within("open_bi", connection.open_bi()).await.unwrap();
    let reader = tokio::spawn(async move { recv.read(&mut [0u8; 16]).await });
    let accepter = {
        let connection = connection.clone();
        tokio::spawn(async move { connection.accept_bi().await.map(|_| ()) })
    };
    // Let both wait (how long does not matter: they fail either way, before or after).
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);

    let err = within("reader", reader).await.unwrap().unwrap_err();
    assert_eq!(
        stream_error(&err),
        Some(&StreamError::EndpointClosed),
        "{err}"
    );
    assert_eq!(
        within("accepter", accepter).await.unwrap(),
        Err(quicpeer_tokio::ConnectionError::EndpointClosed)
    );
    assert_eq!(
        within("open_bi", connection.open_bi()).await.unwrap_err(),
        quicpeer_tokio::ConnectionError::EndpointClosed
    );
}

/// Linux delivers the ICMP port-unreachable of a dial to a closed port; the driver reads it and
/// the dial fails with that cause instead of waiting for the handshake timeout.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_to_a_closed_port_fails_on_the_icmp_error() {
    init_logs();
    let closed = {
        let socket = std::net::UdpSocket::bind(loopback()).unwrap();
        socket.local_addr().unwrap()
    };
    let client = Endpoint::bind(identity(41), Config::default(), loopback()).unwrap();
    let nobody = identity(42).peer_id();
    let err = within("connect", client.connect(nobody, [closed]))
        .await
        .unwrap_err();
    match &err {
        ConnectError::DialFailed { errors, .. } => assert_eq!(
            errors,
            &vec![(
                closed,
                Cause::HandshakeFailed(quicpeer::HandshakeFailure::Unreachable)
            )]
        ),
        other => panic!("unexpected error {other:?}"),
    }
}

/// The same streams through futures-io's traits (feature `futures-io`): a write, a close that
/// finishes the stream, the echo read to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_speak_futures_io_too() {
    use futures::io::AsyncWriteExt as _;
    init_logs();
    let server = Endpoint::bind(identity(2), Config::default(), loopback()).unwrap();
    let (server_id, server_addr) = (server.peer_id(), server.local_addr());
    let _server = serve(server);
    let client = Endpoint::bind(identity(1), Config::default(), loopback()).unwrap();
    let connection = within("connect", client.connect(server_id, [server_addr]))
        .await
        .unwrap();
    let (mut send, mut recv) = within("open_bi", connection.open_bi()).await.unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    within(
        "write",
        futures::io::AsyncWriteExt::write_all(&mut send, &data),
    )
    .await
    .unwrap();
    within("close", send.close()).await.unwrap();
    let mut back = Vec::new();
    within(
        "read to end",
        futures::io::AsyncReadExt::read_to_end(&mut recv, &mut back),
    )
    .await
    .unwrap();
    assert_eq!(back, data);
    assert!(within("close", client.close()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_addr_learns_or_checks_the_peer_and_fails_alone() {
    init_logs();
    // The libp2p mode: several connections per peer, none closed by a tie-break.
    let mut config = Config::default();
    config.tie_break = false;
    config.suspicion_redial = false;
    let server = Endpoint::bind(identity(1), config.clone(), loopback()).unwrap();
    let server_addr = server.local_addr();
    let server_id = server.peer_id();
    let _serving = serve(server);
    let client = Endpoint::bind(identity(2), config, loopback()).unwrap();

    // Without an expected PeerId: the handshake names the peer.
    let connection = within("connect_addr", client.connect_addr(server_addr, None))
        .await
        .unwrap();
    assert_eq!(connection.peer_id(), server_id);
    assert_eq!(echo(&connection, b"anyone").await, b"anyone");

    // A second attempt to the same address is a second connection (never joined).
    let second = within(
        "connect_addr",
        client.connect_addr(server_addr, Some(server_id)),
    )
    .await
    .unwrap();
    assert_ne!(second.id(), connection.id());
    assert_eq!(echo(&second, b"second").await, b"second");

    // A wrong expected PeerId fails this attempt only, with the mismatch.
    let wrong = identity(3).peer_id();
    match within(
        "connect_addr",
        client.connect_addr(server_addr, Some(wrong)),
    )
    .await
    {
        Err(ConnectError::Failed {
            addr,
            cause: Cause::PeerIdMismatch { expected, actual },
        }) => {
            assert_eq!(addr, server_addr);
            assert_eq!(expected, wrong);
            assert_eq!(actual, server_id);
        }
        other => panic!("expected a PeerId mismatch, got {other:?}"),
    }
    assert_eq!(echo(&connection, b"still").await, b"still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connect_addr_closes_its_attempt() {
    init_logs();
    // A socket that never answers: the attempt stays in its handshake until dropped, and
    // retransmits its Initial (after about a second, then with backoff) while it lives.
    let silent = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
    let client = Endpoint::bind(identity(2), Config::default(), loopback()).unwrap();
    let mut buf = vec![0; 2048];
    {
        let attempt = pin!(client.connect_addr(silent.local_addr().unwrap(), None));
        let mut attempt = attempt;
        tokio::select! {
            _ = &mut attempt => panic!("a silent address cannot complete a handshake"),
            received = silent.recv_from(&mut buf) => { received.unwrap(); }
        }
        // Dropped here, with its handshake in flight.
    }
    // A closed attempt sends its close, one datagram, at most; a live one retransmits its
    // Initial (after about 1 s, then 2 s later: at least two datagrams in these 5 s). Counted,
    // not timed, so that a slow machine cannot fail it.
    let mut sent = 0;
    let window = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(received) = tokio::time::timeout_at(window, silent.recv_from(&mut buf)).await {
        received.unwrap();
        sent += 1;
    }
    assert!(
        sent <= 1,
        "the dropped attempt is still sending ({sent} datagrams)"
    );
    assert!(within("close", client.close()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_stops_accepting_keeps_its_connections() {
    init_logs();
    let server = Endpoint::bind(identity(1), Config::default(), loopback()).unwrap();
    let server_addr = server.local_addr();
    let server_id = server.peer_id();
    let server = std::sync::Arc::new(server);
    let accepting = server.clone();
    let _serving = tokio::spawn(async move {
        while let Some(connection) = accepting.accept().await {
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    let mut data = Vec::new();
                    if recv.read_to_end(&mut data).await.is_ok() {
                        let _ = send.write_all(&data).await;
                        let _ = send.shutdown().await;
                    }
                }
            });
        }
    });
    let first = Endpoint::bind(identity(2), Config::default(), loopback()).unwrap();
    let connection = within("connect", first.connect_addr(server_addr, Some(server_id)))
        .await
        .unwrap();
    server.set_accepting(false);
    assert!(!server.is_accepting());
    let second = Endpoint::bind(identity(3), Config::default(), loopback()).unwrap();
    match within(
        "refused connect",
        second.connect_addr(server_addr, Some(server_id)),
    )
    .await
    {
        Err(ConnectError::Failed { cause, .. }) => {
            assert!(matches!(cause, Cause::HandshakeFailed(_)), "{cause:?}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(echo(&connection, b"kept").await, b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_raw_sends_a_datagram_from_the_endpoints_socket() {
    init_logs();
    let endpoint = Endpoint::bind(identity(1), Config::default(), loopback()).unwrap();
    let receiver = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
    assert!(endpoint.send_raw(receiver.local_addr().unwrap(), b"punch".to_vec()));
    let mut buf = [0u8; 64];
    let (len, from) = within("the datagram", receiver.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..len], b"punch");
    assert_eq!(from, endpoint.local_addr());
    assert!(within("close", endpoint.close()).await);
    assert!(!endpoint.send_raw(receiver.local_addr().unwrap(), b"late".to_vec()));
}

/// A bulk transfer through the batching driver: 8 MiB of a pattern echoed back intact (GSO runs
/// out, GRO batches in, reads taking several chunks at once), and the socket counters agree
/// with what was carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_echo_arrives_intact_and_is_counted() {
    init_logs();
    let server = Endpoint::bind(identity(2), Config::default(), loopback()).unwrap();
    let (server_id, server_addr) = (server.peer_id(), server.local_addr());
    let _server = serve(server);
    let client = Endpoint::bind(identity(1), Config::default(), loopback()).unwrap();
    let connection = within("connect", client.connect(server_id, [server_addr]))
        .await
        .unwrap();
    let before = client.stats();
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let (mut send, mut recv) = within("open_bi", connection.open_bi()).await.unwrap();
    // Write and read at once: the echo's flow control would stall a writer that never reads.
    let writer = async {
        send.write_all(&data).await?;
        send.shutdown().await
    };
    let mut back = Vec::with_capacity(data.len());
    let reader = async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = recv.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            back.extend_from_slice(&buf[..n]);
        }
    };
    let (written, read) = within("bulk echo", async { tokio::join!(writer, reader) }).await;
    written.unwrap();
    read.unwrap();
    assert!(back == data, "the echo differs from what was sent");

    let after = client.stats();
    let sent = after.datagrams_sent - before.datagrams_sent;
    let received = after.datagrams_received - before.datagrams_received;
    // 8 MiB each way, in datagrams of at most 1452 bytes.
    assert!(sent >= (8 << 20) / 1452, "{after:?}");
    assert!(received >= (8 << 20) / 1452, "{after:?}");
    assert!(after.send_calls - before.send_calls <= sent, "{after:?}");
    assert!(
        after.recv_calls - before.recv_calls <= received,
        "{after:?}"
    );
    // Every datagram the connection sent went through the socket, counted once per segment.
    let stats = connection.stats().expect("the connection is live");
    assert!(
        stats.datagrams_sent <= after.datagrams_sent,
        "{stats:?} {after:?}"
    );
    assert!(stats.datagrams_sent >= sent, "{stats:?} {after:?}");
    assert!(within("close", client.close()).await);
}
