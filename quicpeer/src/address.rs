//! libp2p QUIC multiaddrs: `/ip4|ip6/<addr>/udp/<port>/quic-v1[/p2p/<PeerId>]`.
//!
//! libp2p nodes advertise and exchange their addresses as multiaddrs, and a user copies one from
//! a log line into a command. The manager dials socket addresses and PeerIds; this module is
//! the translation, both ways. It refuses what the core cannot dial, each with its own error:
//! TCP, QUIC draft-29 (`/quic`), DNS names (resolving them is I/O, which a sans-IO core does not
//! do: resolve first and pass IPs), a missing port, and a `/p2p/` that is not the last part.
//!
//! ```
//! use quicpeer::address::{parse, to_multiaddr};
//!
//! let addr = "/ip4/192.0.2.1/udp/4001/quic-v1/p2p/\
//!             12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB";
//! let (socket, peer) = parse(&addr.parse().unwrap()).unwrap();
//! assert_eq!(socket.to_string(), "192.0.2.1:4001");
//! assert_eq!(to_multiaddr(socket, peer).to_string(), addr);
//! ```

use std::net::{IpAddr, SocketAddr};

pub use multiaddr::{Multiaddr, Protocol};

use crate::PeerId;

/// Why a multiaddr is not a dialable libp2p QUIC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Not a multiaddr at all.
    #[error("not a multiaddr: {0}")]
    Invalid(String),
    /// The multiaddr has no parts.
    #[error("empty multiaddr")]
    Empty,
    /// A DNS name: resolve it to IP addresses first (the core does no I/O).
    #[error("{0} is a DNS name; resolve it and pass /ip4 or /ip6 addresses")]
    Dns(String),
    /// The address starts with something other than an IP address.
    #[error("expected /ip4 or /ip6 at the start, got {0}")]
    NotIp(String),
    /// A TCP address: quicpeer speaks QUIC only.
    #[error("{0} is a TCP address; quicpeer speaks QUIC (/udp/<port>/quic-v1)")]
    Tcp(String),
    /// No `/udp/<port>` after the IP address.
    #[error("missing /udp/<port> after the IP address")]
    MissingPort,
    /// `/quic` is QUIC draft-29, which quicpeer does not speak.
    #[error("/quic is QUIC draft-29; quicpeer speaks /quic-v1")]
    QuicDraft29,
    /// No `/quic-v1` after the port.
    #[error("missing /quic-v1 after the port")]
    MissingQuicV1,
    /// `/p2p/<PeerId>` appears, but not as the last part.
    #[error("/p2p/<PeerId> must be the last part of the address")]
    P2pNotLast,
    /// A part quicpeer cannot dial through (a relay, WebTransport, a second IP, ...).
    #[error("unsupported part {0}")]
    Unsupported(String),
    /// Two addresses of one peer name different PeerIds. (Boxed: a PeerId is 80 bytes.)
    #[error("addresses name different peers: {first} and {second}")]
    PeerIdMismatch {
        /// The PeerId of the first address that had one.
        first: Box<PeerId>,
        /// The first PeerId that differs from it.
        second: Box<PeerId>,
    },
    /// None of the addresses names the peer with `/p2p/<PeerId>`.
    #[error("no address names the peer (/p2p/<PeerId>)")]
    MissingPeerId,
    /// No address given.
    #[error("no address given")]
    NoAddresses,
}

/// Parses a libp2p QUIC multiaddr into the socket address to dial and the PeerId it names.
pub fn parse(addr: &Multiaddr) -> Result<(SocketAddr, Option<PeerId>), AddressError> {
    let mut parts = addr.iter();
    let ip = match parts.next() {
        None => return Err(AddressError::Empty),
        Some(Protocol::Ip4(ip)) => IpAddr::V4(ip),
        Some(Protocol::Ip6(ip)) => IpAddr::V6(ip),
        Some(
            p @ (Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_)),
        ) => return Err(AddressError::Dns(p.to_string())),
        Some(Protocol::P2p(_)) => return Err(AddressError::P2pNotLast),
        Some(p) => return Err(AddressError::NotIp(p.to_string())),
    };
    let port = match parts.next() {
        Some(Protocol::Udp(port)) => port,
        Some(Protocol::Tcp(port)) => return Err(AddressError::Tcp(format!("/tcp/{port}"))),
        Some(Protocol::P2p(_)) => return Err(AddressError::P2pNotLast),
        None => return Err(AddressError::MissingPort),
        Some(p) => return Err(AddressError::Unsupported(p.to_string())),
    };
    match parts.next() {
        Some(Protocol::QuicV1) => {}
        Some(Protocol::Quic) => return Err(AddressError::QuicDraft29),
        Some(Protocol::P2p(_)) => return Err(AddressError::P2pNotLast),
        None => return Err(AddressError::MissingQuicV1),
        Some(p) => return Err(AddressError::Unsupported(p.to_string())),
    }
    let peer = match parts.next() {
        None => None,
        Some(Protocol::P2p(peer)) => Some(peer),
        Some(p) => return Err(AddressError::Unsupported(p.to_string())),
    };
    match parts.next() {
        None => Ok((SocketAddr::new(ip, port), peer)),
        Some(_) => Err(AddressError::P2pNotLast),
    }
}

/// Parses the text form of a libp2p QUIC multiaddr (see [`parse`]).
pub fn parse_str(addr: &str) -> Result<(SocketAddr, Option<PeerId>), AddressError> {
    let addr: Multiaddr = addr
        .parse()
        .map_err(|e: multiaddr::Error| AddressError::Invalid(e.to_string()))?;
    parse(&addr)
}

/// The libp2p QUIC multiaddr of a socket address, naming `peer` when given.
pub fn to_multiaddr(addr: SocketAddr, peer: Option<PeerId>) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    let addr = Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1);
    match peer {
        Some(peer) => addr.with(Protocol::P2p(peer)),
        None => addr,
    }
}

/// The peer and the socket addresses to dial, from one peer's multiaddrs.
///
/// Every `/p2p/` part must name the same peer, and at least one must name it.
pub fn peer_addrs<'a>(
    addrs: impl IntoIterator<Item = &'a Multiaddr>,
) -> Result<(PeerId, Vec<SocketAddr>), AddressError> {
    let mut peer: Option<PeerId> = None;
    let mut sockets = Vec::new();
    for addr in addrs {
        let (socket, named) = parse(addr)?;
        match (peer, named) {
            (Some(first), Some(second)) if first != second => {
                return Err(AddressError::PeerIdMismatch {
                    first: Box::new(first),
                    second: Box::new(second),
                })
            }
            (None, Some(named)) => peer = Some(named),
            _ => {}
        }
        if !sockets.contains(&socket) {
            sockets.push(socket);
        }
    }
    if sockets.is_empty() {
        return Err(AddressError::NoAddresses);
    }
    let peer = peer.ok_or(AddressError::MissingPeerId)?;
    Ok((peer, sockets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PEER: &str = "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB";

    fn peer() -> PeerId {
        PEER.parse().expect("valid PeerId")
    }

    fn other_peer() -> PeerId {
        crate::Identity::from_ed25519_seed([9; 32]).peer_id()
    }

    fn ma(s: &str) -> Multiaddr {
        s.parse().expect("valid multiaddr")
    }

    #[test]
    fn quic_v1_addresses_round_trip() {
        let cases = [
            "/ip4/192.0.2.1/udp/4001/quic-v1".to_owned(),
            format!("/ip4/192.0.2.1/udp/4001/quic-v1/p2p/{PEER}"),
            "/ip6/2001:db8::1/udp/443/quic-v1".to_owned(),
            format!("/ip6/::1/udp/1/quic-v1/p2p/{PEER}"),
        ];
        for text in cases {
            let (socket, named) = parse_str(&text).expect(&text);
            assert_eq!(to_multiaddr(socket, named).to_string(), text);
        }
        assert_eq!(
            parse_str(&format!("/ip6/2001:db8::1/udp/443/quic-v1/p2p/{PEER}")),
            Ok(("[2001:db8::1]:443".parse().expect("socket"), Some(peer())))
        );
    }

    #[test]
    fn every_unsupported_form_has_its_own_error() {
        let cases = [
            (
                "/ip4/1.2.3.4/tcp/4001",
                AddressError::Tcp("/tcp/4001".into()),
            ),
            ("/ip4/1.2.3.4/udp/4001/quic", AddressError::QuicDraft29),
            (
                "/dns4/example.com/udp/4001/quic-v1",
                AddressError::Dns("/dns4/example.com".into()),
            ),
            (
                "/dns/example.com/udp/4001/quic-v1",
                AddressError::Dns("/dns/example.com".into()),
            ),
            (
                "/dns6/example.com/udp/4001/quic-v1",
                AddressError::Dns("/dns6/example.com".into()),
            ),
            ("/ip4/1.2.3.4", AddressError::MissingPort),
            ("/ip4/1.2.3.4/udp/4001", AddressError::MissingQuicV1),
            ("", AddressError::Empty),
            ("/udp/4001/quic-v1", AddressError::NotIp("/udp/4001".into())),
            (
                "/ip4/1.2.3.4/udp/4001/quic-v1/webtransport",
                AddressError::Unsupported("/webtransport".into()),
            ),
        ];
        for (text, error) in cases {
            assert_eq!(parse_str(text), Err(error), "{text}");
        }
        for text in [
            format!("/p2p/{PEER}/ip4/1.2.3.4/udp/4001/quic-v1"),
            format!("/ip4/1.2.3.4/p2p/{PEER}/udp/4001/quic-v1"),
            format!("/ip4/1.2.3.4/udp/4001/p2p/{PEER}/quic-v1"),
            format!("/ip4/1.2.3.4/udp/4001/quic-v1/p2p/{PEER}/p2p-circuit"),
        ] {
            assert_eq!(parse_str(&text), Err(AddressError::P2pNotLast), "{text}");
        }
        for garbage in [
            "ip4/1.2.3.4",
            "/ip4/1.2.3.999/udp/1/quic-v1",
            "/ip4/1.2.3.4/udp/x",
            "/nope",
        ] {
            assert!(
                matches!(parse_str(garbage), Err(AddressError::Invalid(_))),
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_peer_s_addresses_must_agree_on_its_peer_id() {
        let a = ma(&format!("/ip4/192.0.2.1/udp/1/quic-v1/p2p/{PEER}"));
        let b = ma("/ip6/2001:db8::1/udp/2/quic-v1");
        let c = ma(&format!(
            "/ip4/192.0.2.3/udp/3/quic-v1/p2p/{}",
            other_peer()
        ));
        let (named, sockets) = peer_addrs([&b, &a, &a]).expect("agree");
        assert_eq!(named, peer());
        assert_eq!(
            sockets,
            vec![
                "[2001:db8::1]:2".parse().expect("socket"),
                "192.0.2.1:1".parse().expect("socket")
            ]
        );
        assert_eq!(
            peer_addrs([&a, &b, &c]),
            Err(AddressError::PeerIdMismatch {
                first: Box::new(peer()),
                second: Box::new(other_peer())
            })
        );
        assert_eq!(peer_addrs([&b]), Err(AddressError::MissingPeerId));
        assert_eq!(peer_addrs([]), Err(AddressError::NoAddresses));
        assert_eq!(
            peer_addrs([&a, &ma("/ip4/1.2.3.4/tcp/1")]),
            Err(AddressError::Tcp("/tcp/1".into()))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_and_bytes_never_panic(
            text in ".{0,80}",
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let _ = parse_str(&text);
            if let Ok(addr) = Multiaddr::try_from(bytes) {
                let _ = parse(&addr);
            }
        }

        #[test]
        fn socket_addresses_round_trip(
            ip in any::<IpAddr>(),
            port in any::<u16>(),
            named in any::<bool>(),
        ) {
            let socket = SocketAddr::new(ip, port);
            let named = named.then(peer);
            prop_assert_eq!(parse(&to_multiaddr(socket, named)), Ok((socket, named)));
        }
    }
}
