//! What happens when a connection is established or dies: announcing it, make-before-break
//! replacement, liveness probes of older connections, suspicion of silent ones, freeing slots,
//! and deciding whether to reconnect.

use super::*;
use rustls::pki_types::CertificateDer;

/// When an established connection becomes suspect: `ptos` probe timeouts after the first
/// unanswered ack-eliciting packet, or when a failed suspicion redial's backoff ends.
pub(super) fn suspicion_deadline(conn: &Conn, ptos: u32) -> Option<Instant> {
    // Most connections, most of the time, wait for no answer: that is checked first.
    let since = conn.unanswered_since?;
    if conn.phase != Phase::Established || conn.suspected {
        return None;
    }
    let pto = conn.inner.rtt() * 3 + Duration::from_millis(25);
    Some((since + pto * ptos).max(conn.resuspect_at.unwrap_or(since)))
}

/// Whether the peer on `new` is another incarnation than the one on `old`: the certificate key,
/// which every libp2p implementation generates afresh in each process, differs. Where either is
/// unknown, or an implementation keeps its certificate key across restarts, the answer is no and
/// the old connection is probed as before.
fn other_incarnation(conns: &BTreeMap<ConnId, Box<Conn>>, old: ConnId, new: ConnId) -> bool {
    new_incarnation(conns, certificate_key(conns, old), new)
}

/// Whether the peer on `new` presented another certificate key than `old_key` (a key noted
/// earlier, such as a dial's `replaces_key`, whose connection may be gone by now).
fn new_incarnation(
    conns: &BTreeMap<ConnId, Box<Conn>>,
    old_key: Option<Vec<u8>>,
    new: ConnId,
) -> bool {
    matches!((old_key, certificate_key(conns, new)), (Some(a), Some(b)) if a != b)
}

/// The certificate key the peer on `id` presented, once verified.
pub(super) fn certificate_key(conns: &BTreeMap<ConnId, Box<Conn>>, id: ConnId) -> Option<Vec<u8>> {
    conns.get(&id).and_then(|c| c.slot.certificate_key())
}

/// Frames that make the peer acknowledge (everything but ACK, padding and CONNECTION_CLOSE).
pub(super) fn ack_eliciting_frames(f: &quinn_proto::FrameStats) -> u64 {
    f.ack_frequency
        + f.crypto
        + f.data_blocked
        + f.datagram
        + u64::from(f.handshake_done)
        + f.immediate_ack
        + f.max_data
        + f.max_stream_data
        + f.max_streams_bidi
        + f.max_streams_uni
        + f.new_connection_id
        + f.new_token
        + f.path_challenge
        + f.path_response
        + f.ping
        + f.reset_stream
        + f.retire_connection_id
        + f.stream_data_blocked
        + f.streams_blocked_bidi
        + f.streams_blocked_uni
        + f.stop_sending
        + f.stream
}

impl Manager {
    pub(super) fn on_connected(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let direction = conn.direction;
        let addr = conn.addr;
        if conn.slot.outcome().is_none() {
            // No verifier ran: a resumed session, whose peer is read back from the session.
            let certificates = (conn.inner.crypto_session().peer_identity())
                .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
            let wall = self.clock.get();
            let certificates = certificates.as_deref().map(Vec::as_slice);
            conn.slot.complete_resumption(wall, certificates);
            if conn.slot.resumed() {
                self.metrics.handshakes_resumed.add(direction);
            }
        }
        let peer = match conn.slot.outcome() {
            Some(Ok(peer)) => peer,
            other => {
                // A resumed session that did not check out, or rustls completed without our
                // verifier running: refuse to trust the connection.
                warn!(conn = %id, ?other, "handshake completed without a verified PeerId");
                let error = match other {
                    Some(Err(error)) => error,
                    _ => CertificateError::NoCertificate,
                };
                self.close_conn(
                    id,
                    now,
                    Cause::HandshakeFailed(HandshakeFailure::Certificate(error)),
                );
                return;
            }
        };
        if direction == Direction::Inbound {
            self.inbound_handshakes = self.inbound_handshakes.saturating_sub(1);
            conn.span.record("peer", tracing::field::display(peer));
        } else {
            self.dialing_conns.remove(&id);
        }
        conn.peer = Some(peer);
        conn.phase = Phase::Established;
        self.metrics.handshakes_completed.add(direction);
        (self.metrics.handshake_latency).observe(now.saturating_duration_since(conn.started));

        let max_per_peer = self.config.limits.max_connections_per_peer;
        let entry = self.peers.entry(peer).or_default();
        // Was this the winning attempt of a dial?
        let mut replaced = None;
        let mut losers = Vec::new();
        if entry
            .dial
            .as_ref()
            .is_some_and(|d| d.in_flight.contains(&id))
        {
            if let Some(dial) = entry.dial.take() {
                self.pending_dials -= 1;
                losers.extend(dial.in_flight.into_iter().filter(|c| *c != id));
                replaced = dial.replaces;
            }
            entry.backoff = Backoff::default();
            entry.retry = None;
            entry.restarting_until = None;
            // Remember what worked first.
            entry.addrs.retain(|a| *a != addr);
            entry.addrs.insert(0, addr);
        } else if let Some(lost) = (entry.dial.as_ref())
            .filter(|d| {
                self.config.restart_epoch
                    && new_incarnation(&self.conns, d.replaces_key.clone(), id)
            })
            .and_then(|d| d.replaces)
        {
            // The peer's new incarnation connected to us while we were redialing its old one
            // (after a reset, or racing a silent connection): this is the connection the dial
            // was for, and its attempts would only make a second one to the same process.
            if let Some(dial) = entry.dial.take() {
                self.pending_dials -= 1;
                losers.extend(dial.in_flight);
            }
            debug!(conn = %id, %peer, %lost, "the restarted peer connected first: dial dropped");
            replaced = Some(lost);
            entry.backoff = Backoff::default();
            entry.retry = None;
            entry.restarting_until = None;
        }
        // A new incarnation of the peer (another certificate key under the same PeerId) makes
        // the preferred connection stale at once: that process is gone, and its slot is free.
        let outdated = (entry.preferred)
            .filter(|_| replaced.is_none() && self.config.restart_epoch)
            .filter(|old| other_incarnation(&self.conns, *old, id));
        let over_limit = entry.established.len() >= max_per_peer;
        if over_limit && replaced.is_none() && outdated.is_none() {
            debug!(conn = %id, %peer, "closing: per-peer connection limit");
            self.metrics.refusals.add(Refusal::MaxConnectionsPerPeer);
            self.close_conn(id, now, Cause::LimitReached);
            return;
        }
        if direction == Direction::Inbound && entry.is_flapping(now) {
            debug!(conn = %id, %peer, "closing: peer is flapping");
            self.metrics.refusals.add(Refusal::Flapping);
            self.close_conn(id, now, Cause::LimitReached);
            return;
        }
        // Make-before-break: a replacement takes over from a connection that is still up.
        let replacing = replaced.filter(|old| entry.established.contains(old));
        let replaced = replaced.or(outdated);
        if let Some(since) = entry.cut_off_since.take() {
            self.metrics
                .recovery_latency
                .observe(now.saturating_duration_since(since));
        }
        entry.established.insert(id);
        let previous = entry.preferred;
        if previous.is_none() || replacing.is_some() || outdated.is_some() {
            entry.preferred = Some(id);
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.announced = true;
            conn.span.in_scope(|| info!(?replaced, "connected"));
        }
        let at = self.clock.get();
        self.remember(
            peer,
            book::Seen {
                at,
                addr,
                direction,
            },
        );
        self.events.push(Event::Connected {
            peer,
            conn: id,
            addr,
            direction,
            replaced,
        });
        for loser in losers {
            self.close_conn(loser, now, Cause::Superseded { by: Some(id) });
        }
        if let Some(old) = outdated {
            debug!(%old, new = %id, %peer, "the peer restarted: new certificate key");
            self.metrics.restarts_detected.add(RestartSignal::Epoch);
            self.close_conn(old, now, Cause::PeerRestarted);
        } else if let Some(old) = replacing {
            self.close_conn(old, now, Cause::Superseded { by: Some(id) });
        } else if let Some(old) = previous.filter(|_| self.config.tie_break) {
            self.start_probe(old, id, now);
        }
    }

    /// A second connection to a peer completed while `old` is preferred: is `old` still alive?
    pub(super) fn start_probe(&mut self, old: ConnId, challenger: ConnId, now: Instant) {
        let (probe_rtts, probe_min) = (self.config.probe_rtts, self.config.probe_min);
        let Some(conn) = self.conns.get_mut(&old) else {
            return;
        };
        if conn.probe.is_some() {
            // Already probing for another challenger: the newest one competes next time.
            return;
        }
        let wait = (conn.inner.rtt() * probe_rtts).max(probe_min);
        conn.inner.ping();
        conn.probe = Some(Probe {
            challenger,
            deadline: now + wait,
            rx_before: conn.inner.stats().udp_rx.datagrams,
        });
        conn.span
            .in_scope(|| debug!(%challenger, ?wait, "probing the older connection"));
        self.mark_dirty(old);
    }

    /// Ends a probe: if `old` heard back it is alive and one of the two goes by tie-break;
    /// otherwise `old` is stale and the challenger takes over.
    pub(super) fn resolve_probe(&mut self, old: ConnId, probe: Probe, now: Instant) {
        let Some(conn) = self.conns.get_mut(&old) else {
            return;
        };
        conn.probe = None;
        let alive = conn.inner.stats().udp_rx.datagrams > probe.rx_before;
        let Some(challenger) = self.conns.get(&probe.challenger) else {
            return;
        };
        if challenger.phase != Phase::Established {
            return;
        }
        let loser = if alive {
            // Simultaneous dial: keep the connection dialed by the smaller PeerId; both sides
            // compute the same answer. If the same side dialed both, keep the newer.
            let local = self.identity.peer_id();
            let dialer = |c: &Conn| match (c.direction, c.peer) {
                (Direction::Outbound, _) => Some(local),
                (Direction::Inbound, peer) => peer,
            };
            let (old_dialer, new_dialer) = match self.conns.get(&old) {
                Some(o) => (dialer(o), dialer(challenger)),
                None => return,
            };
            if old_dialer != new_dialer && old_dialer < new_dialer {
                probe.challenger
            } else {
                old
            }
        } else {
            old
        };
        let winner = if loser == old { probe.challenger } else { old };
        debug!(%old, challenger = %probe.challenger, alive, %winner, "probe resolved");
        self.close_conn(loser, now, Cause::Superseded { by: Some(winner) });
        if let Some(peer) = self.conns.get(&winner).and_then(|c| c.peer) {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.preferred = Some(winner);
            }
        }
    }

    /// A connection ended: report it, free its slot, and decide what comes next for the peer.
    pub(super) fn on_lost(&mut self, id: ConnId, cause: Cause, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.phase == Phase::Closed {
            return;
        }
        let was_handshaking = matches!(conn.phase, Phase::Handshaking { .. });
        conn.phase = Phase::Closed;
        conn.probe = None;
        self.live = self.live.saturating_sub(1);
        let (direction, addr, announced) = (conn.direction, conn.addr, conn.announced);
        if conn.standalone && !announced {
            self.events.push(Event::ConnectFailed {
                conn: id,
                addr,
                cause: cause.clone(),
            });
        }
        let peer = conn.peer;
        let unfinished: Vec<StreamId> = conn
            .send_open
            .union(&conn.recv_open)
            .map(|sid| StreamId { conn: id, id: *sid })
            .collect();
        conn.span.in_scope(|| info!(%cause, "connection lost"));
        if was_handshaking && direction == Direction::Inbound {
            self.inbound_handshakes = self.inbound_handshakes.saturating_sub(1);
        }
        if was_handshaking {
            self.metrics.handshakes_failed.add(FailureKind::of(&cause));
        } else if announced {
            self.metrics.connections_lost.add(LossKind::of(&cause));
            if matches!(cause, Cause::PeerRestarting { .. }) {
                self.metrics.restarts_detected.add(RestartSignal::Announced);
            }
        }
        self.dialing_conns.remove(&id);
        let Some(peer) = peer else { return };

        if announced {
            self.events.push(Event::ConnectionLost {
                peer,
                conn: id,
                addr,
                cause: cause.clone(),
                unfinished_streams: unfinished,
            });
            let at = self.clock.get();
            self.remember(
                peer,
                book::Seen {
                    at,
                    addr,
                    direction,
                },
            );
        }
        let grace = self.config.limits.flap_grace;
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        entry.established.remove(&id);
        // Flap detection counts deaths that say something about the link or the peer's
        // behaviour. Not ours (a close, a replacement), and not a restart: a valid stateless
        // reset proves the peer is a new incarnation that lost the connection, so a node that
        // restarts twice in quick succession is reconnected (and let back in) at once each time.
        let counts = !matches!(
            cause,
            Cause::Superseded { .. }
                | Cause::ClosedLocally
                | Cause::PeerRestarted
                | Cause::PeerRestarting { .. }
        );
        if let Cause::PeerRestarting { expected_downtime } = cause {
            entry.restarting_until = Some(now + expected_downtime * 2 + Duration::from_secs(1));
        }
        if announced && counts {
            if entry.last_loss.is_some_and(|t| now < t + grace) {
                warn!(%peer, "connections die repeatedly: refusing the peer for {grace:?}");
                entry.refuse_until = Some(now + grace);
            }
            entry.last_loss = Some(now);
        }
        if entry.preferred == Some(id) {
            // The newest remaining connection takes over.
            entry.preferred = entry.established.last().copied();
        }
        let dead_peer = matches!(
            cause,
            Cause::PeerRestarted
                | Cause::PeerRestarting { .. }
                | Cause::IdleTimeout
                | Cause::TransportError { .. }
        );
        if announced && dead_peer && entry.established.is_empty() {
            entry.cut_off_since.get_or_insert(now);
        }
        // A failed dial attempt?
        let mut attempt_failed = false;
        if let Some(dial) = entry.dial.as_mut() {
            if dial.in_flight.remove(&id) {
                dial.errors.push((addr, cause.clone()));
                attempt_failed = true;
            }
        }
        if attempt_failed {
            self.after_attempt_failed(peer, now);
            return;
        }
        // A connection with the peer ended: reconnect?
        let policy = self.policy(&peer);
        let wanted = match cause {
            Cause::PeerRestarted | Cause::PeerRestarting { .. } => policy.on_restart,
            Cause::IdleTimeout | Cause::TransportError { .. } => policy.on_other_loss,
            _ => false,
        };
        let Some(entry) = self.peers.get(&peer) else {
            return;
        };
        if announced && wanted && entry.preferred.is_none() && entry.dial.is_none() {
            if entry.addrs.is_empty() {
                debug!(%peer, "lost, but no address known to reconnect to");
            } else {
                self.start_reconnect(peer, id, now);
            }
        }
        self.forget_if_idle(peer, now);
    }

    /// A suspected connection heard from its peer again. If it is still up (the datagram was
    /// not a reset), the peer was never cut off.
    pub(super) fn silence_ended(&mut self, id: ConnId) {
        let Some(peer) = (self.conns.get(&id))
            .filter(|c| c.phase == Phase::Established)
            .and_then(|c| c.peer)
        else {
            return;
        };
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.cut_off_since = None;
        }
    }

    /// A connection went unanswered for the suspicion period: race it with a fresh dial.
    pub(super) fn suspect(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.suspected = true;
        let (Some(peer), Some(since)) = (conn.peer, conn.unanswered_since) else {
            return;
        };
        if !self.config.suspicion_redial {
            // The application redials (a libp2p Swarm): tell it about every silent connection.
            conn.span.in_scope(|| info!(?since, "unanswered"));
            self.events.push(Event::Unresponsive {
                peer,
                conn: id,
                since,
            });
            self.metrics.restarts_detected.add(RestartSignal::Suspicion);
            return;
        }
        let Some(entry) = self.peers.get(&peer) else {
            return;
        };
        if entry.preferred != Some(id) || entry.dial.is_some() || entry.addrs.is_empty() {
            return;
        }
        if conn.resuspect_at.is_some() {
            conn.span
                .in_scope(|| info!(?since, "still unanswered: racing it again"));
        } else {
            conn.span
                .in_scope(|| info!(?since, "unanswered: racing it with a fresh dial"));
            self.events.push(Event::Unresponsive {
                peer,
                conn: id,
                since,
            });
            self.metrics.restarts_detected.add(RestartSignal::Suspicion);
        }
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.cut_off_since.get_or_insert(since);
        }
        self.metrics.redials.add(RedialReason::Suspicion);
        self.start_dial(peer, Some(id), now);
    }
}
