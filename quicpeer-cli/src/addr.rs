//! Multiaddrs on the command line, through the library's [`quicpeer::address`]:
//! `/ip4|ip6/<ip>/udp/<port>/quic-v1[/p2p/<PeerId>]` to a socket address (and PeerId), and back.

use std::net::SocketAddr;

use quicpeer::address;
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
    let (socket, peer) =
        address::parse_str(text).map_err(|e| UsageError(format!("{text}: {e}")))?;
    Ok(QuicAddr { socket, peer })
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
    address::to_multiaddr(socket, peer.copied()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB";

    #[test]
    fn dial_addresses_name_the_peer() {
        assert!(parse_dial("/ip4/127.0.0.1/udp/4001/quic-v1").is_err());
        let text = format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{PEER}");
        let (socket, peer) = parse_dial(&text).expect("valid");
        assert_eq!(format(socket, Some(&peer)), text);
        assert!(parse("/dns4/example.com/udp/4001/quic-v1").is_err());
    }
}
