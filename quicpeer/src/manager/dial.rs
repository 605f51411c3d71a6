//! Peers and their dials: known addresses ranked as Happy Eyeballs does, attempts started after
//! a stagger or at once when one fails, failures aggregated, and reconnects with backoff.

use super::*;

/// A dial of one peer over one or more addresses.
#[derive(Debug, Default)]
pub(super) struct Dial {
    pub(super) pending: VecDeque<SocketAddr>,
    pub(super) in_flight: BTreeSet<ConnId>,
    pub(super) errors: Vec<(SocketAddr, Cause)>,
    /// When the next pending address starts while attempts are in flight.
    pub(super) next_at: Option<Instant>,
    /// A reconnect after this connection was lost.
    pub(super) replaces: Option<ConnId>,
    /// The certificate key the replaced connection's peer presented: a connection from the
    /// peer under another key is its new incarnation, and what the dial was for.
    pub(super) replaces_key: Option<Vec<u8>>,
}

#[derive(Default)]
pub(super) struct Peer {
    pub(super) preferred: Option<ConnId>,
    pub(super) established: BTreeSet<ConnId>,
    /// Addresses we may dial, from `dial` calls and successful outbound connections.
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) dial: Option<Dial>,
    pub(super) backoff: Backoff,
    /// A reconnect is scheduled: when, and for which lost connection.
    pub(super) retry: Option<(Instant, ConnId)>,
    pub(super) policy: Option<ReconnectPolicy>,
    /// When a connection to the peer last died (for flap detection).
    pub(super) last_loss: Option<Instant>,
    /// The peer is flapping: refuse its connections and hold reconnects until then.
    pub(super) refuse_until: Option<Instant>,
    /// The peer announced a restart: failed reconnects are retried on a short schedule, without
    /// backoff, until then.
    pub(super) restarting_until: Option<Instant>,
    /// Since when the peer has been cut off: its last connection died of a restart, an idle
    /// timeout or a transport error, or went silent. Taken by the next connection, to measure
    /// the recovery (`Metrics::recovery_latency`).
    pub(super) cut_off_since: Option<Instant>,
}

impl Peer {
    /// Nothing worth keeping: no connection, dial, policy, address or recent loss.
    pub(super) fn is_idle(&self, now: Instant, grace: Duration) -> bool {
        self.established.is_empty()
            && self.dial.is_none()
            && self.retry.is_none()
            && self.policy.is_none()
            && self.addrs.is_empty()
            && self.last_loss.is_none_or(|t| now >= t + grace)
            && self.refuse_until.is_none_or(|t| now >= t)
    }

    pub(super) fn is_flapping(&self, now: Instant) -> bool {
        self.refuse_until.is_some_and(|t| now < t)
    }
}

/// Orders a dial's addresses as RFC 8305 (Happy Eyeballs) does: alternate address families,
/// starting with the family of the first address (the one that worked last, when known), and
/// keep the given order within each family.
pub(super) fn rank_addresses(addrs: &[SocketAddr]) -> VecDeque<SocketAddr> {
    let Some(first) = addrs.first() else {
        return VecDeque::new();
    };
    let (mut same, mut other): (VecDeque<_>, VecDeque<_>) = addrs
        .iter()
        .copied()
        .partition(|a| a.is_ipv6() == first.is_ipv6());
    let mut ranked = VecDeque::with_capacity(addrs.len());
    while !same.is_empty() || !other.is_empty() {
        ranked.extend(same.pop_front());
        ranked.extend(other.pop_front());
    }
    ranked
}

impl Manager {
    /// Starts a dial of `peer` over its known addresses.
    pub(super) fn start_dial(&mut self, peer: PeerId, replaces: Option<ConnId>, now: Instant) {
        let replaces_key = replaces.and_then(|id| lifecycle::certificate_key(&self.conns, id));
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let previous = entry.dial.replace(Dial {
            pending: rank_addresses(&entry.addrs),
            replaces,
            replaces_key,
            ..Dial::default()
        });
        self.pending_dials += usize::from(previous.is_none());
        self.start_next_attempt(peer, now);
    }

    /// Starts the next pending address of `peer`'s dial, and schedules the one after.
    pub(super) fn start_next_attempt(&mut self, peer: PeerId, now: Instant) {
        let stagger = self.config.dial_stagger;
        let Some(dial) = self.peers.get_mut(&peer).and_then(|p| p.dial.as_mut()) else {
            return;
        };
        dial.next_at = None;
        let Some(addr) = dial.pending.pop_front() else {
            return;
        };
        if !dial.pending.is_empty() {
            dial.next_at = Some(now + stagger);
            self.timed_peers.insert(peer);
        }
        match self.start_attempt(now, addr, Some(peer)) {
            Ok(id) => {
                if let Some(dial) = self.peers.get_mut(&peer).and_then(|p| p.dial.as_mut()) {
                    dial.in_flight.insert(id);
                }
            }
            Err(failure) => {
                debug!(%peer, %addr, "cannot start dial: {failure}");
                if let Some(dial) = self.peers.get_mut(&peer).and_then(|p| p.dial.as_mut()) {
                    let cause = Cause::HandshakeFailed(HandshakeFailure::Local(failure));
                    dial.errors.push((addr, cause));
                }
                self.after_attempt_failed(peer, now);
            }
        }
    }

    /// Starts one outbound connection to `addr`; `expected` pins the PeerId it must verify.
    pub(super) fn start_attempt(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<ConnId, ConnectFailure> {
        let (crypto, slot) = (self.tls)
            .quic_client_config(expected)
            .map_err(|_| ConnectFailure::NoQuicCipherSuite)?;
        let mut config = quinn_proto::ClientConfig::new(crypto);
        config.transport_config(self.transport.clone());
        let (handle, inner) = self
            .endpoint
            .connect(now, config, addr, SERVER_NAME)
            .map_err(connect_failure)?;
        let id = self.new_conn_id();
        let direction = Direction::Outbound;
        self.insert_conn(id, handle, inner, slot, direction, addr, expected, now);
        Ok(id)
    }

    /// After an attempt failed: start the next address at once, or fail the dial.
    pub(super) fn after_attempt_failed(&mut self, peer: PeerId, now: Instant) {
        let Some(dial) = self.peers.get_mut(&peer).and_then(|p| p.dial.as_mut()) else {
            return;
        };
        if !dial.pending.is_empty() {
            self.start_next_attempt(peer, now);
        } else if dial.in_flight.is_empty() {
            self.fail_dial(peer, now);
        }
    }

    pub(super) fn fail_dial(&mut self, peer: PeerId, now: Instant) {
        let policy = self.policy(&peer).clone();
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(dial) = entry.dial.take() else {
            return;
        };
        self.pending_dials -= 1;
        if let Some(old) = dial.replaces.filter(|old| entry.established.contains(old)) {
            // A replacement of a connection that is still up failed: the old one stays. If it
            // was a suspicion redial, the connection is still silent, and the peer's port
            // answered that nothing listens there (ICMP), the peer is down and likely
            // restarting: race it again after a backoff, and leave the connection to its idle
            // timeout only when the backoff gives up. (A timed-out attempt needs no retry: its
            // Initial retransmissions reach a peer that comes back within the handshake timeout.)
            let closed_port = !dial.errors.is_empty()
                && dial.errors.iter().all(|(_, cause)| {
                    *cause == Cause::HandshakeFailed(HandshakeFailure::Unreachable)
                });
            let silent = self
                .conns
                .get_mut(&old)
                .filter(|c| closed_port && c.suspected && c.unanswered_since.is_some());
            match silent {
                Some(conn) => match entry.backoff.fail(&policy, &mut self.rng) {
                    Some(delay) => {
                        info!(%peer, errors = ?dial.errors, ?delay, "suspicion redial failed; trying again");
                        conn.suspected = false;
                        conn.resuspect_at = Some(now + delay);
                        self.timers.touch(old);
                    }
                    None => {
                        info!(%peer, errors = ?dial.errors, "suspicion redial failed; giving up")
                    }
                },
                None => {
                    info!(%peer, errors = ?dial.errors, "replacement dial failed; keeping the connection")
                }
            }
            return;
        }
        let mut retry_at = None;
        let announced_restart = entry.restarting_until.filter(|until| now < *until);
        if let (Some(lost), Some(_)) = (dial.replaces, announced_restart) {
            let at = now + policy.restart_retry_interval.max(Duration::from_millis(1));
            retry_at = Some(at);
            entry.retry = Some((at, lost));
            self.timed_peers.insert(peer);
        } else if let Some(lost) = dial.replaces {
            match entry.backoff.fail(&policy, &mut self.rng) {
                Some(delay) => {
                    let at = (now + delay).max(entry.refuse_until.unwrap_or(now));
                    retry_at = Some(at);
                    entry.retry = Some((at, lost));
                    self.timed_peers.insert(peer);
                }
                None => info!(%peer, attempts = entry.backoff.failures(), "giving up reconnecting"),
            }
        }
        info!(%peer, errors = ?dial.errors, ?retry_at, "dial failed");
        self.events.push(Event::DialFailed {
            peer,
            errors: dial.errors,
            retry_at,
        });
        if retry_at.is_none() {
            if let Some(entry) = self.peers.get_mut(&peer) {
                entry.backoff = Backoff::default();
            }
        }
        self.forget_if_idle(peer, now);
    }

    pub(super) fn start_reconnect(&mut self, peer: PeerId, lost: ConnId, now: Instant) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        if self.shutting_down
            || entry.addrs.is_empty()
            || entry.dial.is_some()
            || entry.preferred.is_some()
        {
            return;
        }
        if let Some(until) = entry.refuse_until.filter(|t| now < *t) {
            debug!(%peer, "flapping: reconnect held until the grace period ends");
            entry.retry = Some((until, lost));
            self.timed_peers.insert(peer);
            return;
        }
        let attempt = entry.backoff.failures() + 1;
        info!(%peer, %lost, attempt, "reconnecting");
        self.events.push(Event::Reconnecting {
            peer,
            lost,
            attempt,
        });
        self.metrics.redials.add(RedialReason::Reconnect);
        self.start_dial(peer, Some(lost), now);
    }

    pub(super) fn policy(&self, peer: &PeerId) -> &ReconnectPolicy {
        self.peers
            .get(peer)
            .and_then(|p| p.policy.as_ref())
            .unwrap_or(&self.config.reconnect)
    }

    pub(super) fn forget_if_idle(&mut self, peer: PeerId, now: Instant) {
        let grace = self.config.limits.flap_grace;
        if self.peers.get(&peer).is_some_and(|p| p.is_idle(now, grace)) {
            self.peers.remove(&peer);
        }
    }
}

/// quinn's refusal to start a connection, as a [`ConnectFailure`].
fn connect_failure(error: quinn_proto::ConnectError) -> ConnectFailure {
    use quinn_proto::ConnectError as E;
    match error {
        E::InvalidRemoteAddress(_) => ConnectFailure::InvalidAddress,
        E::CidsExhausted => ConnectFailure::ConnectionIdsExhausted,
        E::EndpointStopping => ConnectFailure::EndpointStopping,
        other => ConnectFailure::Refused(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_interleave_families_from_the_first() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|_| panic!("{s}"));
        let given = [
            a("[::1]:1"),
            a("[::1]:2"),
            a("[::1]:3"),
            a("10.0.0.1:1"),
            a("10.0.0.1:2"),
        ];
        let ranked: Vec<_> = rank_addresses(&given).into_iter().collect();
        assert_eq!(
            ranked,
            vec![given[0], given[3], given[1], given[4], given[2]]
        );
        assert!(rank_addresses(&[]).is_empty());
    }
}
