//! Seed corpora for the fuzz targets, built from real packets and real certificates.
//!
//! The inputs are encoded in exactly the byte format the targets decode (`arbitrary`'s: an
//! enum is a little-endian `u32` scaled onto its variants, integers are little-endian, a
//! `bool` is one byte, and a [`Payload`] is a `u16` length and its bytes). The corpus replay
//! test checks that every seed decodes back to what was encoded.

use std::net::SocketAddr;
use std::time::Duration;

use super::datagram::{DatagramInput, LocalIp, Mode, Payload, Source, Step};
use super::federation::{FederationInput, FederationOp, Topology};
use super::host::{HostInput, HostLink, HostOp};
use super::multistream::{Role, PING_PAYLOAD, PROPOSALS, SUPPORTED};
use super::ops::{LinkChange, Op, OpsInput, Setup};
use super::relay_server::{RelayInput, RelayOp};
use quicpeer::identity::generate_certificate;
use quicpeer::protocols::multistream::{Dialer, Listener, Progress};
use quicpeer::sim::Network;
use quicpeer::{Config, Identity};

/// One seed: the target it is for, a file name, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// `datagram`, `frames`, `ops`, `host`, `relay_server`, `federation`, `certificate`, `multistream`, `relay`, `channel`,
    /// `address` or `peer_book`.
    pub target: &'static str,
    /// A descriptive file name.
    pub name: String,
    /// The input.
    pub data: Vec<u8>,
}

/// Every seed of every target. Certificates come from `vectors` (the spec's test vectors, as
/// (name, DER) pairs) and from our own generator; packets from a simulated handshake, a
/// restart and a stateless reset.
pub fn all(vectors: &[(String, Vec<u8>)]) -> Vec<Seed> {
    let mut seeds = certificate_seeds(vectors);
    seeds.extend(datagram_seeds());
    seeds.extend(frames_seeds());
    seeds.extend(ops_seeds());
    seeds.extend(host_seeds());
    seeds.extend(relay_server_seeds());
    seeds.extend(federation_seeds());
    seeds.extend(multistream_seeds());
    seeds.extend(relay_seeds());
    seeds.extend(channel_seeds());
    seeds.extend(address_seeds());
    seeds.extend(peer_book_seeds());
    seeds
}

/// Books of the target's node: written by `book_file::encode` (none, one, several records, an
/// IPv6 address, the most addresses a record may have), and hand-written ones the reader must
/// refuse or tolerate (unknown fields, another version, another node's book, a bad address).
fn peer_book_seeds() -> Vec<Seed> {
    use quicpeer::book_file::{encode, MAX_ADDRS};
    use quicpeer::{Direction, PeerId, PeerRecord};
    use std::time::SystemTime;

    let owner = crate::book_owner();
    let peer = |seed: u8| Identity::from_ed25519_seed([seed; 32]).peer_id();
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let many: Vec<SocketAddr> = (0..MAX_ADDRS as u16)
        .map(|i| SocketAddr::from(([10, 0, 0, 1], 4000 + i)))
        .collect();
    let books = [
        ("empty", Vec::new()),
        (
            "one",
            vec![PeerRecord::new(
                peer(2),
                vec![SocketAddr::from(([127, 0, 0, 1], 4001))],
                Direction::Outbound,
                at(1_700_000_000_123),
            )],
        ),
        (
            "several",
            vec![
                PeerRecord::new(
                    peer(3),
                    vec!["[::1]:4002"
                        .parse()
                        .unwrap_or(SocketAddr::from(([0; 4], 0)))],
                    Direction::Inbound,
                    at(1_700_000_000_000),
                ),
                PeerRecord::new(peer(4), many, Direction::Inbound, at(5)),
                PeerRecord::new(peer(5), Vec::new(), Direction::Outbound, at(0)),
            ],
        ),
    ];
    let mut seeds: Vec<Seed> = books
        .into_iter()
        .filter_map(|(name, records)| {
            Some(Seed {
                target: "peer_book",
                name: format!("written-{name}"),
                data: encode(owner, &records).ok()?,
            })
        })
        .collect();
    let head = |version: u64, book_peer: PeerId| {
        format!(r#"{{"format":"quicpeer-peer-book","version":{version},"peer":"{book_peer}""#)
    };
    let texts = [
        (
            "unknown-fields",
            format!(
                r#"{},"extra":[1,2,{{}}],"records":[{{"peer":"{}","addrs":["127.0.0.1:1"],"direction":"inbound","last_seen_ms":18446744073709551615,"note":null}}]}}"#,
                head(1, owner),
                peer(6)
            ),
        ),
        (
            "later-version",
            format!(r#"{},"records":[]}}"#, head(2, owner)),
        ),
        ("foreign", format!(r#"{},"records":[]}}"#, head(1, peer(7)))),
        (
            "bad-addr",
            format!(
                r#"{},"records":[{{"peer":"{}","addrs":["localhost:80"],"direction":"outbound","last_seen_ms":1}}]}}"#,
                head(1, owner),
                peer(8)
            ),
        ),
        (
            "cut-short",
            format!(r#"{},"records":[{{"peer":"#, head(1, owner)),
        ),
    ];
    seeds.extend(texts.into_iter().map(|(name, text)| Seed {
        target: "peer_book",
        name: format!("text-{name}"),
        data: text.into_bytes(),
    }));
    seeds
}

fn address_seeds() -> Vec<Seed> {
    let peer = Identity::from_ed25519_seed([1; 32]).peer_id();
    let texts = [
        (
            "ip4-p2p",
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer}"),
        ),
        ("ip6", "/ip6/::1/udp/4001/quic-v1".to_owned()),
        ("tcp", "/ip4/127.0.0.1/tcp/4001".to_owned()),
        ("dns", "/dns4/example.com/udp/4001/quic-v1".to_owned()),
        ("draft29", "/ip4/127.0.0.1/udp/4001/quic".to_owned()),
        (
            "p2p-not-last",
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer}/p2p-circuit"),
        ),
        ("not-a-multiaddr", "ip4 127.0.0.1".to_owned()),
    ];
    let mut seeds: Vec<Seed> = texts
        .into_iter()
        .map(|(name, text)| {
            let mut data = vec![0];
            data.extend_from_slice(text.as_bytes());
            Seed {
                target: "address",
                name: format!("text-{name}"),
                data,
            }
        })
        .collect();
    let binary = quicpeer::address::to_multiaddr(([192, 0, 2, 1], 4001).into(), Some(peer));
    let mut data = vec![1];
    data.extend_from_slice(&binary.to_vec());
    seeds.push(Seed {
        target: "address",
        name: "bytes-ip4-p2p".into(),
        data,
    });
    seeds
}

fn channel_seeds() -> Vec<Seed> {
    use quicpeer::protocols::channel::codec::{Frame, MAX_FRAME};
    let origin = Identity::from_ed25519_seed([1; 32]).peer_id();
    let mut stream = Vec::new();
    Frame::Hello {
        channel: "federation".into(),
        incarnation: 3,
    }
    .encode(&mut stream);
    for seq in 1..=3u64 {
        Frame::Msg {
            qseq: seq + 10,
            origin,
            seq,
            body: format!("message {seq}").into_bytes().into(),
        }
        .encode(&mut stream);
    }
    let mut acks = Vec::new();
    Frame::Ack { upto: 13 }.encode(&mut acks);
    Frame::Ack { upto: 300 }.encode(&mut acks);
    let mut oversize = vec![0x80 | (((MAX_FRAME + 1) & 0x7f) as u8)];
    oversize.push(0x80 | ((((MAX_FRAME + 1) >> 7) & 0x7f) as u8));
    oversize.push(((MAX_FRAME + 1) >> 14) as u8);
    let mut truncated = stream.clone();
    truncated.truncate(stream.len() - 4);
    let with = |split: u8, bytes: &[u8]| {
        let mut data = vec![split];
        data.extend_from_slice(bytes);
        data
    };
    [
        ("sender-stream", with(0, &stream)),
        ("sender-stream-fragmented", with(3, &stream)),
        ("receiver-acks", with(1, &acks)),
        ("oversize-prefix", with(0, &oversize)),
        ("truncated", with(5, &truncated)),
        ("unknown-kind", with(0, b"\x02\x09\x00")),
    ]
    .into_iter()
    .map(|(name, data)| Seed {
        target: "channel",
        name: name.into(),
        data,
    })
    .collect()
}

fn certificate_seeds(vectors: &[(String, Vec<u8>)]) -> Vec<Seed> {
    let mut seeds: Vec<Seed> = vectors
        .iter()
        .map(|(name, der)| Seed {
            target: "certificate",
            name: format!("vector-{name}"),
            data: der.clone(),
        })
        .collect();
    if let Ok((der, _)) = generate_certificate(Identity::from_ed25519_seed([9; 32]).keypair()) {
        seeds.push(Seed {
            target: "certificate",
            name: "quicpeer-ed25519".into(),
            data: der.to_vec(),
        });
    }
    seeds
}

/// Datagrams of a simulated handshake, a message, and a restart with its stateless reset.
struct Capture {
    /// What the dialer sent to the listener, in order.
    from_dialer: Vec<Vec<u8>>,
    /// What the listener sent back during the handshake.
    from_listener: Vec<Vec<u8>>,
    /// The restarted listener's stateless reset(s).
    resets: Vec<Vec<u8>>,
}

fn capture() -> Capture {
    let mut net = Network::new(7);
    net.capture_payloads = true;
    let a = net.add_node(
        "dialer",
        Identity::from_ed25519_seed([1; 32]),
        Config::default(),
    );
    let b = net.add_node(
        "listener",
        Identity::from_ed25519_seed([2; 32]),
        Config::default(),
    );
    net.dial(a, b);
    net.run_for(Duration::from_millis(100));
    let peer = net.peer_id(b);
    if let Some(manager) = net.manager(a) {
        if let Ok(stream) = manager.open_stream_to(&peer) {
            let _ = manager.stream_write(stream, b"hello");
            let _ = manager.stream_finish(stream);
        }
    }
    net.run_for(Duration::from_millis(100));
    let handshake_end = net.captured().len();
    net.restart(b);
    net.run_for(Duration::from_secs(6));
    let (addr_a, addr_b): (SocketAddr, SocketAddr) = (net.addr(a), net.addr(b));
    let captured = net.captured();
    let between = |from, to| {
        captured[..handshake_end]
            .iter()
            .filter(move |c| c.from == from && c.to == to)
            .map(|c| c.data.clone())
    };
    Capture {
        from_dialer: between(addr_a, addr_b).collect(),
        from_listener: between(addr_b, addr_a).collect(),
        resets: captured[handshake_end..]
            .iter()
            .filter(|c| c.from == addr_b && c.conn.is_none())
            .map(|c| c.data.clone())
            .collect(),
    }
}

/// `frames` seeds: typed steps (the harness makes the packets), one family of frames each,
/// between honest traffic; the last crosses quinn's first key updates.
fn frames_seeds() -> Vec<Seed> {
    use super::frames::{Data, Frame, FramesInput, Step as F, Value, VARINT_MAX};
    let v = Value;
    let stream =
        |index: u64, dialer: bool, offset: Option<u64>, fin: bool, data: &[u8]| Frame::Stream {
            id: v(4 * index + u64::from(dialer)),
            offset: offset.map(v),
            explicit_len: true,
            fin,
            data: Data(data.to_vec()),
        };
    let forged = |keep, frames| F::Frames { keep, frames };
    let around = |frames: Vec<Frame>, dialer: bool| FramesInput {
        target_dialed: dialer,
        steps: vec![
            F::PeerSends { len: 16 },
            forged(true, frames),
            F::Flush,
            F::TargetReads,
            F::TargetSends { len: 32 },
            F::Flush,
            F::Wait { millis: 300 },
            F::Flush,
        ],
    };
    let mut inputs = vec![
        (
            "streams",
            FramesInput {
                target_dialed: false,
                steps: vec![
                    F::PeerSends { len: 8 },
                    forged(
                        true,
                        vec![
                            stream(2, false, Some(5), true, b"world"),
                            stream(2, false, None, false, b"hello"),
                            stream(3, false, None, false, b""),
                        ],
                    ),
                    F::Deliver,
                    F::TargetReads,
                    forged(
                        false,
                        vec![
                            Frame::StreamDataBlocked {
                                id: v(12),
                                limit: v(0),
                            },
                            Frame::ResetStream {
                                id: v(12),
                                code: v(7),
                                final_size: v(3),
                            },
                            Frame::StopSending {
                                id: v(8),
                                code: v(1),
                            },
                        ],
                    ),
                    F::Flush,
                    F::TargetReads,
                ],
            },
        ),
        (
            "stream-without-length",
            around(
                vec![Frame::Stream {
                    id: v(5),
                    offset: Some(v(1 << 20)),
                    explicit_len: false,
                    fin: true,
                    data: Data(b"to the packet's end".to_vec()),
                }],
                true,
            ),
        ),
        (
            "acks",
            around(
                vec![
                    Frame::Ack {
                        largest: v(3),
                        delay: v(10),
                        first: v(1),
                        ranges: vec![(v(0), v(0))],
                        ecn: Some((v(1), v(0), v(0))),
                    },
                    Frame::Ack {
                        largest: v(VARINT_MAX),
                        delay: v(VARINT_MAX),
                        first: v(VARINT_MAX),
                        ranges: vec![],
                        ecn: None,
                    },
                ],
                false,
            ),
        ),
        (
            "flow-control",
            around(
                vec![
                    Frame::MaxData(v(1 << 40)),
                    Frame::MaxStreamData {
                        id: v(1),
                        max: v(VARINT_MAX),
                    },
                    Frame::MaxStreams {
                        bidi: true,
                        max: v(1 << 60),
                    },
                    Frame::MaxStreams {
                        bidi: false,
                        max: v(0),
                    },
                    Frame::DataBlocked(v(0)),
                    Frame::StreamsBlocked {
                        bidi: true,
                        limit: v(100),
                    },
                    Frame::StreamsBlocked {
                        bidi: false,
                        limit: v(VARINT_MAX),
                    },
                ],
                true,
            ),
        ),
        (
            "connection-ids",
            around(
                vec![
                    Frame::NewConnectionId {
                        seq: v(1),
                        retire_prior_to: v(0),
                        cid: Data(vec![0x11; 16]),
                        token: [0x22; 16],
                    },
                    Frame::NewConnectionId {
                        seq: v(9),
                        retire_prior_to: v(5),
                        cid: Data(vec![0x33; 8]),
                        token: [0x44; 16],
                    },
                    Frame::RetireConnectionId { seq: v(0) },
                    Frame::NewConnectionId {
                        seq: v(2),
                        retire_prior_to: v(3),
                        cid: Data(vec![0x55; 21]),
                        token: [0; 16],
                    },
                ],
                false,
            ),
        ),
        (
            "paths",
            around(
                vec![
                    Frame::PathChallenge(*b"chalenge"),
                    Frame::PathResponse(*b"response"),
                    Frame::Ping,
                    Frame::ImmediateAck,
                    Frame::AckFrequency {
                        seq: v(1),
                        threshold: v(10),
                        max_delay: v(1_000),
                        reordering: v(0),
                    },
                ],
                true,
            ),
        ),
        (
            "crypto-token-done",
            around(
                vec![
                    Frame::Crypto {
                        offset: v(0),
                        data: Data(vec![4, 0, 0, 2, 0, 0]),
                    },
                    Frame::NewToken {
                        token: Data(vec![0xab; 24]),
                    },
                    Frame::HandshakeDone,
                    Frame::Datagram {
                        explicit_len: true,
                        data: Data(b"datagram".to_vec()),
                    },
                    Frame::Padding { len: 40 },
                ],
                true,
            ),
        ),
        (
            "close-transport",
            around(
                vec![Frame::ConnectionClose {
                    app: false,
                    code: v(0x0a),
                    frame_type: v(0x08),
                    reason: Data(b"protocol violation".to_vec()),
                }],
                false,
            ),
        ),
        (
            "close-application",
            around(
                vec![Frame::ConnectionClose {
                    app: true,
                    code: v(0),
                    frame_type: v(0),
                    reason: Data(vec![0xff, 0xfe]),
                }],
                true,
            ),
        ),
        (
            "raw",
            around(
                vec![
                    Frame::Raw(Data(vec![0x40, 0x01])),
                    Frame::Raw(Data(vec![0x21])),
                    Frame::Raw(Data(vec![0x08, 0x00])),
                ],
                false,
            ),
        ),
    ];
    let mut long = Vec::new();
    for round in 0..32u16 {
        long.push(F::Burst { kib: 64 });
        long.push(F::Flush);
        long.push(F::TargetReads);
        long.push(forged(true, vec![Frame::Ping]));
        long.push(F::Reply {
            lose: round % 7 == 0,
        });
        long.push(F::Flush);
        long.push(F::TargetReads);
    }
    inputs.push((
        "key-updates",
        FramesInput {
            target_dialed: true,
            steps: long,
        },
    ));
    inputs
        .into_iter()
        .map(|(name, input)| Seed {
            target: "frames",
            name: name.into(),
            data: input.encode(),
        })
        .collect()
}

fn datagram_seeds() -> Vec<Seed> {
    let capture = capture();
    let mut inputs: Vec<(&str, DatagramInput)> = Vec::new();
    let inject = |from, data: &[u8]| Step::Inject {
        from,
        local: LocalIp::Ours,
        data: Payload(data.to_vec()),
    };
    if let Some(initial) = capture.from_dialer.first() {
        inputs.push((
            "listening-client-initial",
            DatagramInput {
                mode: Mode::Listening,
                retry: false,
                steps: vec![inject(Source::Stranger(0), initial)],
            },
        ));
        // The same Initial from many addresses: the inbound-handshake limit, then Retry.
        inputs.push((
            "listening-initial-flood",
            DatagramInput {
                mode: Mode::Listening,
                retry: false,
                steps: (0..4)
                    .map(|i| inject(Source::Stranger(i), initial))
                    .chain([Step::Wait { millis: 2500 }])
                    .collect(),
            },
        ));
        inputs.push((
            "listening-initials-retry",
            DatagramInput {
                mode: Mode::Listening,
                retry: true,
                steps: (0..3)
                    .map(|i| inject(Source::Stranger(i), initial))
                    .collect(),
            },
        ));
    }
    inputs.push((
        "listening-whole-dialer-flight",
        DatagramInput {
            mode: Mode::Listening,
            retry: false,
            steps: capture
                .from_dialer
                .iter()
                .flat_map(|d| [inject(Source::Peer, d), Step::Wait { millis: 5 }])
                .collect(),
        },
    ));
    inputs.push((
        "connected-listener-replies",
        DatagramInput {
            mode: Mode::ConnectedAsDialer,
            retry: false,
            steps: capture
                .from_listener
                .iter()
                .map(|d| inject(Source::Peer, d))
                .collect(),
        },
    ));
    if let Some(reset) = capture.resets.first() {
        inputs.push((
            "connected-stateless-reset",
            DatagramInput {
                mode: Mode::ConnectedAsDialer,
                retry: false,
                steps: vec![inject(Source::Peer, reset), Step::Flush],
            },
        ));
    }
    inputs.push((
        "connected-peer-restarts",
        DatagramInput {
            mode: Mode::ConnectedAsDialer,
            retry: false,
            steps: vec![
                Step::PeerRestarts,
                Step::TargetSends { len: 32 },
                Step::Reply { lose: false },
                Step::Deliver,
                Step::Flush,
                Step::Wait { millis: 100 },
                Step::Flush,
            ],
        },
    ));
    inputs.push((
        "connected-lossy-streams",
        DatagramInput {
            mode: Mode::ConnectedAsListener,
            retry: false,
            steps: vec![
                Step::PeerSends { len: 200 },
                Step::Corrupt { at: 30, xor: 1 },
                Step::Drop,
                Step::Duplicate,
                Step::Truncate { keep: 40 },
                Step::Replay { back: 0 },
                Step::Wait { millis: 300 },
                Step::Flush,
                Step::TargetSends { len: 100 },
                Step::Flush,
                Step::TargetRedials,
                Step::Flush,
                Step::Wait { millis: 1200 },
                Step::Flush,
                Step::PeerCloses,
                Step::Flush,
            ],
        },
    ));
    inputs.push((
        "connected-silence-and-idle-timeout",
        DatagramInput {
            mode: Mode::ConnectedAsDialer,
            retry: false,
            steps: vec![
                Step::Wait { millis: 1000 },
                Step::Reply { lose: true },
                Step::Wait { millis: 3000 },
                Step::Reply { lose: true },
                Step::Wait { millis: 3000 },
                Step::TargetDials,
                Step::Flush,
            ],
        },
    ));
    inputs
        .into_iter()
        .map(|(name, input)| Seed {
            target: "datagram",
            name: name.into(),
            data: encode_datagram(&input),
        })
        .collect()
}

fn ops_seeds() -> Vec<Seed> {
    let setup = |nodes, random_keys, suspicion| Setup {
        nodes,
        random_keys,
        suspicion,
        icmp: false,
        seed: 1,
    };
    let wait = |millis| Op::Advance { millis };
    let inputs = [
        (
            "restart-after-connect",
            setup(0, false, true),
            vec![
                Op::Dial { from: 0, to: 1 },
                wait(200),
                Op::Send {
                    node: 0,
                    peer: 1,
                    len: 100,
                    finish: true,
                },
                wait(50),
                Op::Read { node: 1 },
                Op::Restart { node: 1 },
                wait(2000),
            ],
        ),
        (
            "simultaneous-dial",
            setup(1, false, true),
            vec![
                Op::Dial { from: 0, to: 1 },
                Op::Dial { from: 1, to: 0 },
                Op::Dial { from: 2, to: 0 },
                wait(500),
                Op::Redial { node: 0, peer: 1 },
                wait(500),
                Op::Close { node: 2, peer: 0 },
                wait(100),
            ],
        ),
        (
            "new-port-and-stop-start",
            setup(2, false, false),
            vec![
                Op::Dial { from: 0, to: 1 },
                Op::Dial { from: 2, to: 1 },
                Op::Dial { from: 3, to: 1 },
                wait(300),
                Op::RestartOnNewPort { node: 1 },
                wait(100),
                Op::Dial { from: 0, to: 1 },
                Op::Stop { node: 3 },
                wait(3000),
                Op::Start { node: 3 },
                Op::Dial { from: 3, to: 1 },
                wait(500),
                Op::Disconnect { node: 2, peer: 1 },
            ],
        ),
        (
            "random-keys-lossy-link",
            setup(0, true, true),
            vec![
                Op::Dial { from: 0, to: 1 },
                wait(300),
                Op::SetLink {
                    a: 0,
                    b: 1,
                    change: LinkChange::Lossy(30),
                },
                Op::Send {
                    node: 1,
                    peer: 0,
                    len: 4000,
                    finish: false,
                },
                wait(1000),
                Op::Restart { node: 1 },
                Op::SetLink {
                    a: 0,
                    b: 1,
                    change: LinkChange::Jittery(20, 40),
                },
                wait(4000),
                Op::SetLink {
                    a: 0,
                    b: 1,
                    change: LinkChange::Down,
                },
                wait(2000),
                Op::SetLink {
                    a: 0,
                    b: 1,
                    change: LinkChange::Messy(20),
                },
                wait(2000),
            ],
        ),
    ];
    inputs
        .into_iter()
        .map(|(name, setup, ops)| Seed {
            target: "ops",
            name: name.into(),
            data: encode_ops(&OpsInput { setup, ops }),
        })
        .collect()
}

/// What a real dialer (proposing `proposals`) and listener (supporting [`SUPPORTED`]) send each
/// other in a negotiation: (dialer's bytes, listener's bytes).
fn negotiate(proposals: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let (mut to_listener, mut to_dialer) = (Vec::new(), Vec::new());
    let (Ok(mut dialer), mut listener) = (Dialer::new(proposals.iter().copied()), Listener::new())
    else {
        return (to_listener, to_dialer);
    };
    for _ in 0..8 {
        let out = dialer.take_output();
        to_listener.extend_from_slice(&out);
        let heard = listener.handle_data(&out, |p| SUPPORTED.contains(&p));
        let back = listener.take_output();
        to_dialer.extend_from_slice(&back);
        if !matches!(heard, Ok(Progress::Pending)) {
            break;
        }
        if !matches!(dialer.handle_data(&back), Ok(Progress::Pending)) {
            break;
        }
    }
    (to_listener, to_dialer)
}

fn multistream_seeds() -> Vec<Seed> {
    let input = |role: Role, split: u8, bytes: &[u8]| {
        let mut data = vec![role.byte(), split];
        data.extend_from_slice(bytes);
        data
    };
    let (dialer_bytes, listener_bytes) = negotiate(&PROPOSALS);
    let (lazy, _) = negotiate(&["/ipfs/ping/1.0.0"]);
    let mut lazy_with_data = lazy.clone();
    lazy_with_data.extend_from_slice(&PING_PAYLOAD);
    let mut listing = Vec::new();
    listing.extend_from_slice(b"\x13/multistream/1.0.0\n\x03ls\n");
    let mut wrong_echo = PING_PAYLOAD;
    wrong_echo[31] ^= 1;
    let mut three_pings = PING_PAYLOAD.repeat(3);
    three_pings.extend_from_slice(&PING_PAYLOAD[..7]);
    [
        (
            "listener-refuses-then-accepts",
            input(Role::Listener, 0, &dialer_bytes),
        ),
        (
            "listener-fragmented",
            input(Role::Listener, 5, &dialer_bytes),
        ),
        (
            "listener-lazy-dialer-with-data",
            input(Role::Listener, 0, &lazy_with_data),
        ),
        ("listener-ls", input(Role::Listener, 0, &listing)),
        ("dialer-answers", input(Role::Dialer, 0, &listener_bytes)),
        (
            "dialer-answers-fragmented",
            input(Role::Dialer, 3, &listener_bytes),
        ),
        (
            "responder-payloads",
            input(Role::Responder, 9, &three_pings),
        ),
        ("pinger-echo", input(Role::Pinger, 4, &PING_PAYLOAD)),
        ("pinger-wrong-echo", input(Role::Pinger, 0, &wrong_echo)),
    ]
    .into_iter()
    .map(|(name, data)| Seed {
        target: "multistream",
        name: name.into(),
        data,
    })
    .collect()
}

/// The bytes `arbitrary` decodes into the same values; see the module docs.
#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn variant(&mut self, index: u32, count: u32) -> &mut Self {
        // The decoder maps a u32 `v` to `(v * count) >> 32`; the smallest `v` that lands on
        // `index` is the ceiling of `index * 2^32 / count`.
        let v = (u64::from(index) << 32).div_ceil(u64::from(count));
        self.u32(v as u32)
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }

    fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }

    fn host_link(&mut self, change: &HostLink) -> &mut Self {
        match change {
            HostLink::Healthy => self.variant(0, 4),
            HostLink::Down => self.variant(1, 4),
            HostLink::Lossy(p) => self.variant(2, 4).u8(*p),
            HostLink::Jittery(l, j) => self.variant(3, 4).u8(*l).u8(*j),
        }
    }

    fn payload(&mut self, v: &Payload) -> &mut Self {
        let len = u16::try_from(v.0.len()).unwrap_or(u16::MAX);
        self.u16(len).bytes(&v.0[..usize::from(len)])
    }
}

/// Encodes a `datagram` input.
pub fn encode_datagram(input: &DatagramInput) -> Vec<u8> {
    let mut e = Encoder::default();
    let mode = match input.mode {
        Mode::Listening => 0,
        Mode::ConnectedAsListener => 1,
        Mode::ConnectedAsDialer => 2,
    };
    e.variant(mode, 3).bool(input.retry);
    const STEPS: u32 = 18;
    for step in &input.steps {
        match step {
            Step::Inject { from, local, data } => {
                e.variant(0, STEPS);
                match from {
                    Source::Peer => e.variant(0, 4),
                    Source::Stranger(n) => e.variant(1, 4).u8(*n),
                    Source::V4(ip, port) => e.variant(2, 4).bytes(ip).u16(*port),
                    Source::V6(ip, port) => e.variant(3, 4).bytes(ip).u16(*port),
                };
                match local {
                    LocalIp::Unknown => e.variant(0, 3),
                    LocalIp::Ours => e.variant(1, 3),
                    LocalIp::Other(ip) => e.variant(2, 3).bytes(ip),
                };
                e.payload(data);
            }
            Step::Deliver => {
                e.variant(1, STEPS);
            }
            Step::Corrupt { at, xor } => {
                e.variant(2, STEPS).u16(*at).u8(*xor);
            }
            Step::Truncate { keep } => {
                e.variant(3, STEPS).u16(*keep);
            }
            Step::Drop => {
                e.variant(4, STEPS);
            }
            Step::Duplicate => {
                e.variant(5, STEPS);
            }
            Step::Replay { back } => {
                e.variant(6, STEPS).u8(*back);
            }
            Step::Reply { lose } => {
                e.variant(7, STEPS).bool(*lose);
            }
            Step::Flush => {
                e.variant(8, STEPS);
            }
            Step::Wait { millis } => {
                e.variant(9, STEPS).u16(*millis);
            }
            Step::PeerSends { len } => {
                e.variant(10, STEPS).u8(*len);
            }
            Step::TargetSends { len } => {
                e.variant(11, STEPS).u8(*len);
            }
            Step::PeerRestarts => {
                e.variant(12, STEPS);
            }
            Step::PeerCloses => {
                e.variant(13, STEPS);
            }
            Step::TargetCloses => {
                e.variant(14, STEPS);
            }
            Step::PeerDials => {
                e.variant(15, STEPS);
            }
            Step::TargetDials => {
                e.variant(16, STEPS);
            }
            Step::TargetRedials => {
                e.variant(17, STEPS);
            }
        }
    }
    e.0
}

/// Encodes an `ops` input.
pub fn encode_ops(input: &OpsInput) -> Vec<u8> {
    let mut e = Encoder::default();
    let s = &input.setup;
    e.u8(s.nodes)
        .bool(s.random_keys)
        .bool(s.suspicion)
        .bool(s.icmp)
        .u8(s.seed);
    const OPS: u32 = 12;
    for op in &input.ops {
        match *op {
            Op::Dial { from, to } => e.variant(0, OPS).u8(from).u8(to),
            Op::Close { node, peer } => e.variant(1, OPS).u8(node).u8(peer),
            Op::Disconnect { node, peer } => e.variant(2, OPS).u8(node).u8(peer),
            Op::Redial { node, peer } => e.variant(3, OPS).u8(node).u8(peer),
            Op::Restart { node } => e.variant(4, OPS).u8(node),
            Op::RestartOnNewPort { node } => e.variant(5, OPS).u8(node),
            Op::Stop { node } => e.variant(6, OPS).u8(node),
            Op::Start { node } => e.variant(7, OPS).u8(node),
            Op::SetLink { a, b, change } => {
                e.variant(8, OPS).u8(a).u8(b);
                match change {
                    LinkChange::Healthy => e.variant(0, 5),
                    LinkChange::Down => e.variant(1, 5),
                    LinkChange::Lossy(p) => e.variant(2, 5).u8(p),
                    LinkChange::Jittery(l, j) => e.variant(3, 5).u8(l).u8(j),
                    LinkChange::Messy(p) => e.variant(4, 5).u8(p),
                }
            }
            Op::Advance { millis } => e.variant(9, OPS).u16(millis),
            Op::Send {
                node,
                peer,
                len,
                finish,
            } => e.variant(10, OPS).u8(node).u8(peer).u16(len).bool(finish),
            Op::Read { node } => e.variant(11, OPS).u8(node),
        };
    }
    e.0
}

/// Encodes a `host` input.
pub fn encode_host(input: &HostInput) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(input.seed);
    const OPS: u32 = 15;
    for op in &input.ops {
        match op {
            HostOp::Register { node, protocol } => e.variant(0, OPS).u8(*node).u8(*protocol),
            HostOp::Unregister { node, protocol } => e.variant(1, OPS).u8(*node).u8(*protocol),
            HostOp::Open { node, protocols } => e.variant(2, OPS).u8(*node).u8(*protocols),
            HostOp::Ping { node } => e.variant(3, OPS).u8(*node),
            HostOp::RawOpen {
                node,
                header,
                proposal,
                data,
                finish,
            } => e
                .variant(4, OPS)
                .u8(*node)
                .bool(*header)
                .u8(*proposal)
                .payload(data)
                .bool(*finish),
            HostOp::RawWrite { node, index, data } => {
                e.variant(5, OPS).u8(*node).u8(*index).payload(data)
            }
            HostOp::Abandon { node, index, stop } => {
                e.variant(6, OPS).u8(*node).u8(*index).bool(*stop)
            }
            HostOp::Finish { node, index } => e.variant(7, OPS).u8(*node).u8(*index),
            HostOp::Write { node, index, len } => e.variant(8, OPS).u8(*node).u8(*index).u8(*len),
            HostOp::Read { node } => e.variant(9, OPS).u8(*node),
            HostOp::Dial { node } => e.variant(10, OPS).u8(*node),
            HostOp::Close { node } => e.variant(11, OPS).u8(*node),
            HostOp::Restart { node } => e.variant(12, OPS).u8(*node),
            HostOp::SetLink(change) => e.variant(13, OPS).host_link(change),
            HostOp::Advance { millis } => e.variant(14, OPS).u16(*millis),
        };
    }
    e.0
}

/// Two hosts that negotiate, echo, ping and fail as applications and peers make them: honest
/// negotiations (accepted, refused, reversed preferences), raw multistream messages whole,
/// split and broken, pings on lossy links, restarts and abandoned streams mid-negotiation.
fn host_seeds() -> Vec<Seed> {
    use HostOp::*;
    let wait = |millis| Advance { millis };
    let raw = |node, header, proposal, data: &[u8], finish| RawOpen {
        node,
        header,
        proposal,
        data: Payload(data.to_vec()),
        finish,
    };
    let inputs: Vec<(&str, Vec<HostOp>)> = vec![
        (
            "negotiate-and-echo",
            vec![
                Register {
                    node: 1,
                    protocol: 0,
                },
                Open {
                    node: 0,
                    protocols: 0b1,
                },
                wait(100),
                Write {
                    node: 0,
                    index: 0,
                    len: 40,
                },
                wait(50),
                Read { node: 1 },
                Write {
                    node: 1,
                    index: 0,
                    len: 40,
                },
                Finish { node: 1, index: 0 },
                wait(50),
                Read { node: 0 },
                Finish { node: 0, index: 0 },
                wait(100),
            ],
        ),
        (
            "ping-both-ways",
            vec![
                Ping { node: 0 },
                Ping { node: 1 },
                wait(200),
                Ping { node: 0 },
                wait(200),
            ],
        ),
        (
            "unsupported-and-reversed",
            vec![
                Register {
                    node: 1,
                    protocol: 1,
                },
                Register {
                    node: 1,
                    protocol: 2,
                },
                Register {
                    node: 1,
                    protocol: 4,
                },
                Open {
                    node: 0,
                    protocols: 0b1000,
                },
                Open {
                    node: 0,
                    protocols: 0b1000_0011,
                },
                Open {
                    node: 0,
                    protocols: 0b1_0001,
                },
                Open {
                    node: 0,
                    protocols: 0b100,
                },
                wait(300),
                Unregister {
                    node: 1,
                    protocol: 1,
                },
                Open {
                    node: 0,
                    protocols: 0b10,
                },
                wait(300),
            ],
        ),
        (
            "raw-proposal-with-leftover",
            vec![
                Register {
                    node: 1,
                    protocol: 0,
                },
                raw(0, true, 0, b"hello", true),
                wait(100),
                Read { node: 1 },
                wait(100),
            ],
        ),
        (
            "raw-split-and-broken",
            vec![
                Register {
                    node: 0,
                    protocol: 1,
                },
                raw(1, true, 255, &[12, b'/', b'c', b'h'], false),
                wait(20),
                RawWrite {
                    node: 1,
                    index: 0,
                    data: Payload(b"at/1.0.0\n".to_vec()),
                },
                raw(1, false, 255, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0], false),
                raw(1, true, 3, b"", false),
                raw(1, true, 2, &[0; 32], false),
                raw(1, false, 255, b"\x13/multistream/1.0.0\n\x03ls\n", false),
                wait(100),
                Abandon {
                    node: 1,
                    index: 1,
                    stop: false,
                },
                Abandon {
                    node: 1,
                    index: 2,
                    stop: true,
                },
                wait(3000),
            ],
        ),
        (
            "restart-mid-negotiation",
            vec![
                Register {
                    node: 1,
                    protocol: 0,
                },
                Open {
                    node: 0,
                    protocols: 0b1,
                },
                Ping { node: 0 },
                Restart { node: 1 },
                wait(3000),
                Dial { node: 0 },
                wait(200),
                Open {
                    node: 0,
                    protocols: 0b1,
                },
                wait(200),
            ],
        ),
        (
            "lossy-pings-and-close",
            vec![
                SetLink(HostLink::Lossy(40)),
                Ping { node: 0 },
                Open {
                    node: 1,
                    protocols: 0b11,
                },
                wait(2500),
                SetLink(HostLink::Jittery(30, 20)),
                Ping { node: 1 },
                Close { node: 0 },
                wait(1000),
                SetLink(HostLink::Down),
                Ping { node: 0 },
                wait(4000),
            ],
        ),
    ];
    inputs
        .into_iter()
        .map(|(name, ops)| Seed {
            target: "host",
            name: name.into(),
            data: encode_host(&HostInput { seed: 1, ops }),
        })
        .collect()
}

/// Encodes a `federation` input.
pub fn encode_federation(input: &FederationInput) -> Vec<u8> {
    let mut e = Encoder::default();
    match input.topology {
        Topology::Mesh => e.variant(0, 2),
        Topology::Chain => e.variant(1, 2),
    };
    e.u8(input.seed);
    const OPS: u32 = 6;
    for op in &input.ops {
        match op {
            FederationOp::Accept { node, len } => e.variant(0, OPS).u8(*node).u8(*len),
            FederationOp::Commit { node } => e.variant(1, OPS).u8(*node),
            FederationOp::Crash { node } => e.variant(2, OPS).u8(*node),
            FederationOp::Raw { node, to, data } => {
                e.variant(3, OPS).u8(*node).u8(*to).payload(data)
            }
            FederationOp::SetLink { a, b, change } => {
                e.variant(4, OPS).u8(*a).u8(*b).host_link(change)
            }
            FederationOp::Advance { millis } => e.variant(5, OPS).u16(*millis),
        };
    }
    e.0
}

/// Three nodes on a mesh or a chain: messages both ways, a crash right after an accept (the
/// message lost, its number reused), a crash of the forwarding middle node, a partition that
/// heals, raw bytes on a channel stream.
fn federation_seeds() -> Vec<Seed> {
    use FederationOp::*;
    let wait = |millis| Advance { millis };
    let inputs: Vec<(&str, Topology, Vec<FederationOp>)> = vec![
        (
            "mesh-messages-every-way",
            Topology::Mesh,
            vec![
                Accept { node: 0, len: 10 },
                Accept { node: 1, len: 20 },
                Accept { node: 2, len: 0 },
                wait(300),
                Accept { node: 0, len: 200 },
                wait(300),
            ],
        ),
        (
            "crash-before-the-commit",
            Topology::Mesh,
            vec![
                Accept { node: 0, len: 5 },
                Crash { node: 0 },
                Accept { node: 0, len: 6 },
                Commit { node: 0 },
                wait(500),
            ],
        ),
        (
            "chain-middle-crashes-while-forwarding",
            Topology::Chain,
            vec![
                Accept { node: 0, len: 50 },
                Accept { node: 0, len: 50 },
                wait(20),
                Crash { node: 1 },
                Accept { node: 2, len: 7 },
                wait(2000),
            ],
        ),
        (
            "partition-heals",
            Topology::Chain,
            vec![
                SetLink {
                    a: 0,
                    b: 1,
                    change: HostLink::Down,
                },
                Accept { node: 0, len: 1 },
                Accept { node: 2, len: 2 },
                wait(3000),
                SetLink {
                    a: 1,
                    b: 2,
                    change: HostLink::Lossy(50),
                },
                SetLink {
                    a: 0,
                    b: 1,
                    change: HostLink::Healthy,
                },
                wait(3000),
            ],
        ),
        (
            "raw-bytes-on-a-channel-stream",
            Topology::Mesh,
            vec![
                Raw {
                    node: 1,
                    to: 0,
                    data: Payload(vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
                },
                Raw {
                    node: 2,
                    to: 0,
                    data: Payload(vec![1, 0, 0, 0, 0]),
                },
                Accept { node: 0, len: 3 },
                wait(1500),
            ],
        ),
    ];
    inputs
        .into_iter()
        .map(|(name, topology, ops)| Seed {
            target: "federation",
            name: name.into(),
            data: encode_federation(&FederationInput {
                topology,
                seed: 1,
                ops,
            }),
        })
        .collect()
}

/// Encodes a `relay_server` input.
pub fn encode_relay_server(input: &RelayInput) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(input.seed);
    const OPS: u32 = 12;
    for op in &input.ops {
        match op {
            RelayOp::Reserve { client } => e.variant(0, OPS).u8(*client),
            RelayOp::Connect { client, to } => e.variant(1, OPS).u8(*client).u8(*to),
            RelayOp::RawHop { client, data } => e.variant(2, OPS).u8(*client).payload(data),
            RelayOp::AnswerStop { client, index, ok } => {
                e.variant(3, OPS).u8(*client).u8(*index).bool(*ok)
            }
            RelayOp::Write { client, index, len } => {
                e.variant(4, OPS).u8(*client).u8(*index).u8(*len)
            }
            RelayOp::Read { client } => e.variant(5, OPS).u8(*client),
            RelayOp::Finish { client, index } => e.variant(6, OPS).u8(*client).u8(*index),
            RelayOp::Reset { client, index } => e.variant(7, OPS).u8(*client).u8(*index),
            RelayOp::Crash { client } => e.variant(8, OPS).u8(*client),
            RelayOp::Dial { client } => e.variant(9, OPS).u8(*client),
            RelayOp::SetLink { client, change } => e.variant(10, OPS).u8(*client).host_link(change),
            RelayOp::Advance { millis } => e.variant(11, OPS).u16(*millis),
        };
    }
    e.0
}

/// A relay with small limits and three clients: reservations up to and past the limits, a
/// circuit that carries data both ways and ends at its data limit, a circuit whose target
/// refuses, a client crashing with a reservation and a circuit, and raw hop bytes.
fn relay_server_seeds() -> Vec<Seed> {
    use RelayOp::*;
    let wait = |millis| Advance { millis };
    let inputs: Vec<(&str, Vec<RelayOp>)> = vec![
        (
            "reserve-past-the-limits",
            vec![
                Reserve { client: 0 },
                Reserve { client: 0 },
                Reserve { client: 0 },
                Reserve { client: 1 },
                Reserve { client: 2 },
                wait(300),
                Read { client: 0 },
                wait(9000),
                Reserve { client: 1 },
                wait(300),
            ],
        ),
        (
            "circuit-both-ways-to-the-data-limit",
            vec![
                Reserve { client: 1 },
                wait(200),
                Connect { client: 0, to: 2 },
                wait(200),
                AnswerStop {
                    client: 1,
                    index: 0,
                    ok: true,
                },
                wait(200),
                Read { client: 0 },
                Read { client: 1 },
                Write {
                    client: 0,
                    index: 0,
                    len: 40,
                },
                Write {
                    client: 1,
                    index: 1,
                    len: 40,
                },
                wait(200),
                Read { client: 0 },
                Read { client: 1 },
                Write {
                    client: 0,
                    index: 0,
                    len: 255,
                },
                wait(500),
                Read { client: 1 },
                wait(500),
            ],
        ),
        (
            "circuit-refused-by-its-target",
            vec![
                Reserve { client: 2 },
                wait(200),
                Connect { client: 0, to: 3 },
                wait(200),
                AnswerStop {
                    client: 2,
                    index: 0,
                    ok: false,
                },
                wait(200),
                Connect { client: 0, to: 0 },
                Connect { client: 0, to: 1 },
                wait(3000),
            ],
        ),
        (
            "client-crashes-with-a-reservation-and-a-circuit",
            vec![
                Reserve { client: 1 },
                wait(200),
                Connect { client: 2, to: 2 },
                wait(200),
                AnswerStop {
                    client: 1,
                    index: 0,
                    ok: true,
                },
                wait(200),
                Crash { client: 1 },
                wait(100),
                Dial { client: 1 },
                wait(200),
                Reserve { client: 1 },
                wait(300),
            ],
        ),
        (
            "raw-hop-bytes-and-lossy-links",
            vec![
                RawHop {
                    client: 0,
                    data: Payload(vec![2, 0xff, 0xff]),
                },
                RawHop {
                    client: 1,
                    data: Payload(vec![0x81, 0x20, 0, 0]),
                },
                RawHop {
                    client: 2,
                    data: Payload(vec![0]),
                },
                SetLink {
                    client: 0,
                    change: HostLink::Lossy(30),
                },
                Reserve { client: 0 },
                wait(2500),
                SetLink {
                    client: 1,
                    change: HostLink::Down,
                },
                Reserve { client: 1 },
                wait(6000),
            ],
        ),
    ];
    inputs
        .into_iter()
        .map(|(name, ops)| Seed {
            target: "relay_server",
            name: name.into(),
            data: encode_relay_server(&RelayInput { seed: 1, ops }),
        })
        .collect()
}

/// Hop and stop streams as clients and relays write them, a voucher, and the bad inputs the
/// relay must answer: an oversize prefix, a body that is not protobuf, a prefix cut short.
fn relay_seeds() -> Vec<Seed> {
    use quicpeer::protocols::relay::{
        HopMessage, Limit, Reservation, Status, StopMessage, Voucher,
    };
    let relay = Identity::from_ed25519_seed([1; 32]);
    let client = Identity::from_ed25519_seed([2; 32]).peer_id();
    let voucher = Voucher {
        relay: relay.peer_id(),
        peer: client,
        expiration: 1_767_229_200,
    }
    .sign(relay.keypair())
    .unwrap_or_default();
    let limit = Some(Limit {
        duration: Some(Duration::from_secs(120)),
        data: Some(1 << 17),
    });
    let reservation = HopMessage::Status {
        status: Status::Ok,
        reservation: Some(Reservation {
            expire: 1_767_229_200,
            addrs: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".parse().expect("valid")],
            voucher: Some(voucher.clone()),
        }),
        limit,
    };
    let mut two = HopMessage::Reserve.encode();
    two.extend(HopMessage::Connect { peer: client }.encode());
    let mut voucher_framed = vec![voucher.len() as u8 | 0x80, (voucher.len() >> 7) as u8];
    voucher_framed.extend_from_slice(&voucher);
    // A stop CONNECT with an empty limit message, which once decoded to an empty limit and
    // encoded to none (a finding of this target).
    let mut empty_limit = StopMessage::Connect {
        peer: client,
        limit: None,
    }
    .encode();
    empty_limit[0] += 2;
    empty_limit.extend_from_slice(&[0x1a, 0x00]);
    let hop = 0u8;
    let stop = 1u8;
    [
        ("hop-reserve", hop, 0, HopMessage::Reserve.encode()),
        ("hop-reserve-then-connect-fragmented", hop, 3, two),
        ("hop-reservation-with-voucher", hop, 7, reservation.encode()),
        ("hop-voucher-as-a-body", hop, 0, voucher_framed),
        ("hop-oversize-prefix", hop, 1, vec![0x81, 0x20, 0, 0, 0]),
        ("hop-not-protobuf", hop, 0, vec![2, 0xff, 0xff]),
        ("hop-prefix-cut-short", hop, 0, vec![0x80]),
        (
            "stop-connect",
            stop,
            5,
            StopMessage::Connect {
                peer: client,
                limit,
            }
            .encode(),
        ),
        (
            "stop-status",
            stop,
            0,
            StopMessage::Status(Status::Ok).encode(),
        ),
        ("stop-connect-empty-limit", stop, 0, empty_limit),
    ]
    .into_iter()
    .map(|(name, kind, split, bytes)| {
        let mut data = vec![kind, split];
        data.extend_from_slice(&bytes);
        Seed {
            target: "relay",
            name: name.into(),
            data,
        }
    })
    .collect()
}
