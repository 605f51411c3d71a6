//! The `address` target: multiaddrs as peers and users hand them over, into
//! [`quicpeer::address`].
//!
//! A multiaddr reaches quicpeer as text (a command line, a config file, a log line copied by a
//! user) or as bytes (libp2p's identify and relay messages carry them binary). Input: a mode
//! byte, then the text (even mode; invalid UTF-8 is skipped) or the binary multiaddr (odd
//! mode). Checks: parsing never panics and every refusal is a typed [`AddressError`] that
//! displays; an address that parses turns back into a multiaddr that parses to the same socket
//! address and PeerId; [`peer_addrs`] over it agrees with it (its PeerId, or
//! `MissingPeerId` when it names none).

use quicpeer::address::{parse, parse_str, peer_addrs, to_multiaddr, AddressError, Multiaddr};

/// The target's body.
pub fn address(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let parsed = if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return;
        };
        parse_str(text).map(|p| (text.parse::<Multiaddr>().ok(), p))
    } else {
        match Multiaddr::try_from(bytes.to_vec()) {
            Ok(addr) => parse(&addr).map(|p| (Some(addr), p)),
            Err(_) => return,
        }
    };
    let (original, (socket, peer)) = match parsed {
        Ok(ok) => ok,
        Err(error) => {
            // Every refusal is typed and says what it is.
            let _ = error.to_string();
            return;
        }
    };
    let again = to_multiaddr(socket, peer);
    assert_eq!(
        parse(&again),
        Ok((socket, peer)),
        "invariant: {again} does not parse back to {socket} and {peer:?}"
    );
    let Some(original) = original else {
        panic!("invariant: text that parsed as an address is not a multiaddr");
    };
    match (peer, peer_addrs([&original, &again])) {
        (Some(peer), Ok((named, sockets))) => {
            assert_eq!(named, peer, "invariant: peer_addrs names another peer");
            assert_eq!(sockets, [socket], "invariant: peer_addrs' sockets");
        }
        (None, Err(AddressError::MissingPeerId)) => {}
        (peer, other) => panic!("invariant: peer_addrs gave {other:?} for {original} ({peer:?})"),
    }
}
