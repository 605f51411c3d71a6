//! Multiaddrs on the command line: `/ip4/<ip>/udp/<port>/quic-v1[/p2p/<PeerId>]` to a socket
//! address (and PeerId), and back.
//!
//! Kept to this one module on purpose: the protocols branch brings the library's multiaddr
//! handling, and this is the one place to swap for it. Only what quicpeer can dial is
//! accepted: IPv4 or IPv6 literals (no DNS), UDP, QUIC v1.

use std::net::{IpAddr, SocketAddr};

use multiaddr::{Multiaddr, Protocol};
use quicpeer::PeerId;

use crate::UsageError;

/// A parsed `/ip…/udp/…/quic-v1[/p2p/…]` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicAddr {
    pub socket: SocketAddr,
    pub peer: Option<PeerId>,
}

/// Parses a QUIC v1 multiaddr.
pub fn parse(text: &str) -> Result<QuicAddr, UsageError> {
    let bad = |why: &str| UsageError(format!("{text}: {why}"));
    let multiaddr: Multiaddr = text.parse().map_err(|e| bad(&format!("{e}")))?;
    let mut parts = multiaddr.iter();
    let ip: IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Err(bad("expected /ip4/<address> or /ip6/<address> first")),
    };
    let port = match parts.next() {
        Some(Protocol::Udp(port)) => port,
        _ => return Err(bad("expected /udp/<port> after the IP address")),
    };
    if !matches!(parts.next(), Some(Protocol::QuicV1)) {
        return Err(bad("expected /quic-v1 after the UDP port"));
    }
    let peer = match parts.next() {
        None => None,
        Some(Protocol::P2p(peer)) => Some(peer),
        Some(_) => return Err(bad("only /p2p/<PeerId> may follow /quic-v1")),
    };
    if parts.next().is_some() {
        return Err(bad("nothing may follow /p2p/<PeerId>"));
    }
    Ok(QuicAddr {
        socket: SocketAddr::new(ip, port),
        peer,
    })
}

/// Parses an address to dial, which must name the peer.
pub fn parse_dial(text: &str) -> Result<(SocketAddr, PeerId), UsageError> {
    let addr = parse(text)?;
    match addr.peer {
        Some(peer) => Ok((addr.socket, peer)),
        None => Err(UsageError(format!(
            "{text}: add /p2p/<PeerId>: quicpeer verifies whom it dials"
        ))),
    }
}

/// `/ip4/…/udp/…/quic-v1`, with `/p2p/<peer>` when given.
pub fn format(socket: SocketAddr, peer: Option<&PeerId>) -> String {
    let ip = match socket.ip() {
        IpAddr::V4(ip) => format!("/ip4/{ip}"),
        IpAddr::V6(ip) => format!("/ip6/{ip}"),
    };
    let mut text = format!("{ip}/udp/{}/quic-v1", socket.port());
    if let Some(peer) = peer {
        text.push_str(&format!("/p2p/{peer}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB";

    #[test]
    fn round_trip() {
        for text in [
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{PEER}"),
            format!("/ip6/::1/udp/0/quic-v1/p2p/{PEER}"),
            "/ip4/10.0.0.1/udp/1/quic-v1".to_owned(),
        ] {
            let addr = parse(&text).expect("valid");
            assert_eq!(format(addr.socket, addr.peer.as_ref()), text);
        }
    }

    #[test]
    fn rejects_what_cannot_be_dialed() {
        for text in [
            "",
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/127.0.0.1/udp/4001/quic",
            "/dns4/example.com/udp/4001/quic-v1",
            "/ip4/127.0.0.1/udp/4001/quic-v1/webtransport",
            "/ip4/300.0.0.1/udp/4001/quic-v1",
            "/ip4/127.0.0.1/udp/70000/quic-v1",
            "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/notapeerid",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        assert!(parse_dial("/ip4/127.0.0.1/udp/4001/quic-v1").is_err());
        assert!(parse_dial(&format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{PEER}")).is_ok());
    }
}
