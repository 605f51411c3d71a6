//! How the commands that run a node print the manager's connection events.

use std::time::Instant;

use quicpeer::{Cause, Direction, Event, HostEvent};

use crate::output::{Json, Output};

/// A stable, machine-readable name for a cause (its `Display` has the details).
pub fn cause_name(cause: &Cause) -> &'static str {
    match cause {
        Cause::PeerRestarted => "peer_restarted",
        Cause::PeerRestarting { .. } => "peer_restarting",
        Cause::IdleTimeout => "idle_timeout",
        Cause::ClosedByPeer { .. } => "closed_by_peer",
        Cause::ClosedLocally => "closed_locally",
        Cause::HandshakeFailed(_) => "handshake_failed",
        Cause::PeerIdMismatch { .. } => "peer_id_mismatch",
        Cause::TransportError { .. } => "transport_error",
        Cause::Superseded { .. } => "superseded",
        Cause::LimitReached => "limit_reached",
        _ => "other",
    }
}

/// `outbound` (we dialed) or `inbound`.
pub fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Outbound => "outbound",
        Direction::Inbound => "inbound",
    }
}

/// Prints a connection event of the host's manager (see [`connection_event`]).
pub fn host_event(out: &Output, at: Instant, event: &HostEvent) -> bool {
    match event {
        HostEvent::Manager(event) => connection_event(out, at, event),
        _ => false,
    }
}

/// Prints a connection event (`connected`, `connection_lost`, `unresponsive`, `reconnecting`,
/// `dial_failed`); returns whether it was one. Stream events are not printed.
pub fn connection_event(out: &Output, at: Instant, event: &Event) -> bool {
    match event {
        Event::Connected {
            peer,
            conn,
            addr,
            direction,
            replaced,
        } => {
            let dir = direction_name(*direction);
            let mut json = Json::event("connected")
                .str("peer", &peer.to_string())
                .str("conn", &conn.to_string())
                .str("addr", &addr.to_string())
                .str("direction", dir);
            if let Some(old) = replaced {
                json = json.str("replaced", &old.to_string());
            }
            out.emit(at, json, || {
                format!("CONNECTED {peer} at {addr} ({conn}, {dir})")
            });
        }
        Event::ConnectionLost {
            peer, conn, cause, ..
        } => {
            let json = Json::event("connection_lost")
                .str("peer", &peer.to_string())
                .str("conn", &conn.to_string())
                .str("cause", cause_name(cause))
                .str("detail", &cause.to_string());
            out.emit(at, json, || format!("LOST {peer} ({conn}): {cause}"));
        }
        Event::Reconnecting {
            peer,
            lost,
            attempt,
        } => {
            let json = Json::event("reconnecting")
                .str("peer", &peer.to_string())
                .str("lost", &lost.to_string())
                .int("attempt", u64::from(*attempt));
            out.emit(at, json, || {
                format!("RECONNECTING {peer} (attempt {attempt}, replacing {lost})")
            });
        }
        Event::Unresponsive { peer, conn, since } => {
            let silent = at.saturating_duration_since(*since);
            let json = Json::event("unresponsive")
                .str("peer", &peer.to_string())
                .str("conn", &conn.to_string())
                .num("silent_ms", crate::output::ms(silent));
            out.emit(at, json, || {
                format!(
                    "UNRESPONSIVE {peer} ({conn}) silent for {:.1} ms: racing a fresh dial",
                    crate::output::ms(silent)
                )
            });
        }
        Event::DialFailed { peer, errors, .. } => {
            let detail = errors
                .iter()
                .map(|(addr, cause)| format!("{addr}: {cause}"))
                .collect::<Vec<_>>()
                .join("; ");
            let json = Json::event("dial_failed")
                .str("peer", &peer.to_string())
                .str("detail", &detail);
            out.emit(at, json, || format!("DIAL FAILED {peer}: {detail}"));
        }
        _ => return false,
    }
    true
}

/// The last line of a node that shut down: `STOPPED`, and whether every connection finished
/// closing (`listen`, `relay`).
pub fn stopped(out: &Output, closed_cleanly: bool) {
    out.emit(
        Instant::now(),
        Json::event("stopped").bool("closed_cleanly", closed_cleanly),
        || {
            format!(
                "STOPPED{}",
                if closed_cleanly {
                    ""
                } else {
                    " (some connections did not finish closing)"
                }
            )
        },
    );
}
