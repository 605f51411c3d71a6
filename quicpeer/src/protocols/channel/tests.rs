//! The channel machine against a well-behaved peer and against a raw [`Host`] that sends
//! crafted frames.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::*;
use crate::protocols::HostConfig;
use crate::{Config, Identity, Manager};

const A: &str = "192.0.2.1:4001";
const B: &str = "192.0.2.2:4001";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| unreachable!())
}

fn host(seed: u8, now: Instant) -> Host {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let identity = Identity::from_ed25519_seed([seed; 32]);
    let manager = Manager::new(now, wall, identity, Config::default(), [seed; 32]).unwrap();
    Host::new(now, manager, HostConfig::default(), [seed; 32])
}

fn peer(seed: u8) -> PeerId {
    Identity::from_ed25519_seed([seed; 32]).peer_id()
}

/// Two machines at A and B, datagrams passed at once, a virtual clock.
struct Pair<X: SansIo, Y: SansIo> {
    a: X,
    b: Y,
    now: Instant,
    a_events: Vec<X::Event>,
    b_events: Vec<Y::Event>,
}

impl<X: SansIo, Y: SansIo> Pair<X, Y> {
    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        let mut buf = Vec::new();
        loop {
            let mut moved = true;
            while moved {
                moved = false;
                while let Some(t) = self.a.poll_transmit(self.now, &mut buf) {
                    let data = buf[..t.size].to_vec();
                    self.b.handle_datagram(self.now, addr(A), None, &data);
                    moved = true;
                }
                while let Some(t) = self.b.poll_transmit(self.now, &mut buf) {
                    let data = buf[..t.size].to_vec();
                    self.a.handle_datagram(self.now, addr(B), None, &data);
                    moved = true;
                }
            }
            self.a_events
                .extend(std::iter::from_fn(|| self.a.poll_event()));
            self.b_events
                .extend(std::iter::from_fn(|| self.b.poll_event()));
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t) + Duration::from_micros(100);
                    if self.a.poll_timeout().is_some_and(|t| t <= self.now) {
                        self.a.handle_timeout(self.now);
                    }
                    if self.b.poll_timeout().is_some_and(|t| t <= self.now) {
                        self.b.handle_timeout(self.now);
                    }
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
    }
}

fn channels(
    seed: u8,
    now: Instant,
    store: MemoryStore,
    links: &[(u8, &str)],
) -> Channels<MemoryStore> {
    let peers = (links.iter())
        .map(|(s, a)| (peer(*s), vec![addr(a)]))
        .collect();
    Channels::new(
        now,
        host(seed, now),
        store,
        ChannelConfig::new("chat", peers),
    )
    .unwrap()
}

fn failures(events: &[ChannelEvent]) -> Vec<ChannelError> {
    (events.iter())
        .filter_map(|e| match e {
            ChannelEvent::LinkFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn messages_arrive_once_in_order_and_the_outbox_drains() {
    let now = Instant::now();
    let (sa, sb) = (MemoryStore::new(), MemoryStore::new());
    let a = channels(1, now, sa.clone(), &[(2, B)]);
    let b = channels(2, now, sb.clone(), &[(1, A)]);
    let mut pair = Pair {
        a,
        b,
        now,
        a_events: vec![],
        b_events: vec![],
    };
    for i in 0..500u32 {
        pair.a.accept(Bytes::from(i.to_string())).unwrap();
    }
    pair.run_for(Duration::from_secs(3));
    let log = sb.log();
    assert_eq!(log.len(), 500);
    for (i, entry) in log.iter().enumerate() {
        assert_eq!((entry.origin, entry.seq), (peer(1), i as u64 + 1));
        assert_eq!(entry.body, Bytes::from(i.to_string()));
    }
    assert_eq!(pair.a.outbox_len(&peer(2)), 0);
    // Accepted, then delivered at A too, each reported after its commit.
    let accepted = (pair.a_events.iter())
        .filter(|e| matches!(e, ChannelEvent::Accepted { .. }))
        .count();
    assert_eq!(accepted, 500);
    assert_eq!(sa.log().len(), 500);
    // Group commit: 500 accepts in one call are one batch, not 500.
    assert!(sa.commits() < 20, "{} commits", sa.commits());
}

#[test]
fn a_restarted_sender_resends_what_was_not_acknowledged_and_nothing_doubles() {
    let now = Instant::now();
    let (sa, sb) = (MemoryStore::new(), MemoryStore::new());
    let a = channels(1, now, sa.clone(), &[(2, B)]);
    let b = channels(2, now, sb.clone(), &[(1, A)]);
    let mut pair = Pair {
        a,
        b,
        now,
        a_events: vec![],
        b_events: vec![],
    };
    for i in 0..50u32 {
        pair.a.accept(Bytes::from(i.to_string())).unwrap();
    }
    // Commit, and send a little: then A crashes.
    let mut buf = Vec::new();
    let _ = pair.a.poll_transmit(pair.now, &mut buf);
    pair.a = channels(1, pair.now, sa.clone(), &[(2, B)]);
    assert_eq!(pair.a.incarnation(), 2);
    assert_eq!(pair.a.outbox_len(&peer(2)), 50);
    pair.a.accept(Bytes::from_static(b"after")).unwrap();
    pair.run_for(Duration::from_secs(30));
    let seqs: Vec<u64> = sb.log().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
    assert_eq!(pair.a.outbox_len(&peer(2)), 0);
}

#[test]
fn accept_refuses_oversize_bodies_and_a_full_outbox() {
    let now = Instant::now();
    let mut config = ChannelConfig::new("chat", vec![(peer(2), vec![addr(B)])]);
    config.max_outbox = 3;
    let mut a = Channels::new(now, host(1, now), MemoryStore::new(), config).unwrap();
    assert_eq!(
        a.accept(Bytes::from(vec![0; MAX_BODY + 1])),
        Err(AcceptError::TooLarge(MAX_BODY + 1))
    );
    for _ in 0..3 {
        a.accept(Bytes::from_static(b"x")).unwrap();
    }
    assert_eq!(
        a.accept(Bytes::from_static(b"x")),
        Err(AcceptError::OutboxFull(peer(2)))
    );
}

/// A store whose commits fail after the first.
struct Failing(u32);

impl Store for Failing {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&mut self, _: &Batch) -> Result<(), StoreError> {
        self.0 += 1;
        if self.0 > 1 {
            return Err(StoreError::Io("disk full".into()));
        }
        Ok(())
    }
    fn read_log(&mut self, _: u64, _: usize) -> Result<Vec<Entry>, StoreError> {
        Ok(vec![])
    }
}

#[test]
fn a_failed_commit_reports_nothing_as_accepted_and_stops_the_machine() {
    let now = Instant::now();
    let config = ChannelConfig::new("chat", vec![(peer(2), vec![addr(B)])]);
    let mut a = Channels::new(now, host(1, now), Failing(0), config).unwrap();
    a.accept(Bytes::from_static(b"x")).unwrap();
    let _ = a.poll_transmit(now, &mut Vec::new());
    let events: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
    assert_eq!(
        events,
        vec![ChannelEvent::StoreFailed(StoreError::Io(
            "disk full".into()
        ))]
    );
    assert!(matches!(
        a.accept(Bytes::from_static(b"y")),
        Err(AcceptError::Store(_))
    ));
}

/// A raw host at B talking to channels at A: B opens a channel stream and writes `frames`
/// (raw bytes); checks that B's stream was refused and returns A's link failures.
fn inbound_raw(store: MemoryStore, links_b: bool, bytes: Vec<u8>) -> Vec<ChannelError> {
    let now = Instant::now();
    let links: &[(u8, &str)] = if links_b { &[(2, B)] } else { &[(3, B)] };
    let a = channels(1, now, store, links);
    let b = host(2, now);
    let mut pair = Pair {
        a,
        b,
        now,
        a_events: vec![],
        b_events: vec![],
    };
    pair.b.manager_mut().dial(now, peer(1), [addr(A)]).unwrap();
    pair.run_for(Duration::from_millis(50));
    let id = pair.b.open_stream(pair.now, peer(1), [PROTOCOL]).unwrap();
    pair.run_for(Duration::from_millis(50));
    let stream = (pair.b_events.iter()).find_map(|e| match e {
        HostEvent::OutboundStream { id: i, stream, .. } if *i == id => Some(*stream),
        _ => None,
    });
    let Some(stream) = stream else {
        // Refused during negotiation: A does not speak the protocol.
        return failures(&pair.a_events);
    };
    let _ = pair.b.manager_mut().stream_write(stream, &bytes);
    pair.run_for(Duration::from_millis(50));
    let mut out = Vec::new();
    let reset = pair
        .b
        .manager_mut()
        .stream_read_chunks(stream, 1 << 20, &mut out);
    assert_eq!(
        reset,
        Err(StreamError::Reset(REFUSED_CODE)),
        "B's stream was not refused"
    );
    failures(&pair.a_events)
}

fn frames(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

fn hello(incarnation: u64) -> Frame {
    Frame::Hello {
        channel: "chat".into(),
        incarnation,
    }
}

fn msg(qseq: u64, origin: PeerId, seq: u64) -> Frame {
    Frame::Msg {
        qseq,
        origin,
        seq,
        body: Bytes::from_static(b"m"),
    }
}

#[test]
fn malformed_and_oversize_frames_are_refused() {
    let errors = inbound_raw(MemoryStore::new(), true, vec![3, 9, 9, 9]);
    assert_eq!(errors, vec![ChannelError::Codec(CodecError::Kind(9))]);
    let mut oversize = Vec::new();
    codec::put_varint(&mut oversize, codec::MAX_FRAME as u64 + 1);
    let errors = inbound_raw(MemoryStore::new(), true, oversize);
    assert_eq!(
        errors,
        vec![ChannelError::Codec(CodecError::Oversize(
            codec::MAX_FRAME as u64 + 1
        ))]
    );
}

#[test]
fn frames_out_of_place_are_refused() {
    let cases = [
        (frames(&[msg(1, peer(2), 1)]), ChannelError::Unexpected),
        (frames(&[hello(1), hello(1)]), ChannelError::Unexpected),
        (
            frames(&[hello(1), Frame::Ack { upto: 1 }]),
            ChannelError::Unexpected,
        ),
        (
            frames(&[Frame::Hello {
                channel: "other".into(),
                incarnation: 1,
            }]),
            ChannelError::WrongChannel("other".into()),
        ),
        (
            frames(&[hello(1), msg(2, peer(2), 1), msg(2, peer(2), 2)]),
            ChannelError::NotIncreasing { last: 2, got: 2 },
        ),
        (
            frames(&[hello(1), msg(1, peer(2), 2)]),
            ChannelError::Gap {
                origin: peer(2),
                expected: 1,
                got: 2,
            },
        ),
        // A message in our own name that we never accepted.
        (
            frames(&[hello(1), msg(1, peer(1), 1)]),
            ChannelError::BadSeq(1),
        ),
        (
            frames(&[hello(1), msg(1, peer(2), 0)]),
            ChannelError::BadSeq(0),
        ),
    ];
    for (bytes, error) in cases {
        assert_eq!(
            inbound_raw(MemoryStore::new(), true, bytes),
            vec![error.clone()],
            "{error}"
        );
    }
}

#[test]
fn a_replay_from_an_earlier_incarnation_is_refused_and_delivers_nothing() {
    let mut store = MemoryStore::new();
    let mut batch = Batch::default();
    batch.peer_incarnations.insert(peer(2), 5);
    store.commit(&batch).unwrap();
    let errors = inbound_raw(store.clone(), true, frames(&[hello(4), msg(1, peer(2), 1)]));
    assert_eq!(
        errors,
        vec![ChannelError::StaleIncarnation { seen: 5, got: 4 }]
    );
    assert!(store.log().is_empty());
}

#[test]
fn a_peer_that_is_not_a_link_is_refused() {
    let errors = inbound_raw(MemoryStore::new(), false, frames(&[hello(1)]));
    assert_eq!(errors, vec![ChannelError::NotALink]);
}

#[test]
fn an_ack_for_a_never_sent_entry_closes_the_link() {
    let now = Instant::now();
    let a = channels(1, now, MemoryStore::new(), &[(2, B)]);
    let mut b = host(2, now);
    b.register(PROTOCOL).unwrap();
    let mut pair = Pair {
        a,
        b,
        now,
        a_events: vec![],
        b_events: vec![],
    };
    pair.a.accept(Bytes::from_static(b"one")).unwrap();
    pair.run_for(Duration::from_millis(100));
    let stream = (pair.b_events.iter())
        .find_map(|e| match e {
            HostEvent::InboundStream { stream, .. } => Some(*stream),
            _ => None,
        })
        .expect("A opened its channel stream");
    pair.b
        .manager_mut()
        .stream_write(stream, &frames(&[Frame::Ack { upto: 9 }]))
        .unwrap();
    pair.run_for(Duration::from_millis(50));
    assert_eq!(
        failures(&pair.a_events),
        vec![ChannelError::AckBeyondSent { upto: 9, sent: 1 }]
    );
    // The entry stays in the outbox, for the next stream.
    assert_eq!(pair.a.outbox_len(&peer(2)), 1);
}

#[test]
fn a_full_forwarding_outbox_pauses_the_stream_and_the_sender_keeps_the_rest() {
    let now = Instant::now();
    let a = channels(1, now, MemoryStore::new(), &[(2, B)]);
    // B forwards to C, which never connects: its outbox fills at twice `max_outbox`.
    let sb = MemoryStore::new();
    let mut config = ChannelConfig::new("chat", vec![(peer(1), vec![addr(A)]), (peer(3), vec![])]);
    config.max_outbox = 1;
    let b = Channels::new(now, host(2, now), sb.clone(), config).unwrap();
    let mut pair = Pair {
        a,
        b,
        now,
        a_events: vec![],
        b_events: vec![],
    };
    for i in 0..4u8 {
        pair.a.accept(Bytes::from(vec![i])).unwrap();
    }
    pair.run_for(Duration::from_secs(3));
    // No refusal: B delivered and acknowledged what it could forward, and holds the rest.
    assert_eq!(failures(&pair.b_events), vec![]);
    assert_eq!(
        sb.log().iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(pair.b.outbox_len(&peer(3)), 2);
    assert_eq!(pair.a.outbox_len(&peer(2)), 2);
}
