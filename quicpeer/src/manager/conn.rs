//! One QUIC connection as the manager sees it: its phase, its verification slot, its open
//! streams; how inbound connections are accepted, how quinn's endpoint and connection events
//! are shuttled, and how quinn's reason for a death becomes a [`Cause`].

use super::*;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Handshaking {
        deadline: Instant,
    },
    Established,
    /// Lost and reported; kept until quinn has drained it.
    Closed,
}

/// A PING sent on an established connection to learn whether it is still alive, because a
/// second connection to the same peer completed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    pub(super) challenger: ConnId,
    pub(super) deadline: Instant,
    pub(super) rx_before: u64,
}

pub(super) struct Conn {
    pub(super) handle: ConnectionHandle,
    pub(super) inner: quinn_proto::Connection,
    pub(super) slot: VerificationSlot,
    pub(super) direction: Direction,
    pub(super) addr: SocketAddr,
    /// The dialed PeerId (outbound), then the verified one.
    pub(super) peer: Option<PeerId>,
    pub(super) phase: Phase,
    /// `Connected` was emitted, so `ConnectionLost` must be.
    pub(super) announced: bool,
    /// Started by `Manager::connect`: its failure before `Connected` is reported on its own
    /// (`Event::ConnectFailed`), since no peer's dial reports it.
    pub(super) standalone: bool,
    /// Streams whose sending half is not yet finished and acknowledged, stopped or reset.
    pub(super) send_open: BTreeSet<quinn_proto::StreamId>,
    /// Streams whose receiving half has not reached its end or a reset.
    pub(super) recv_open: BTreeSet<quinn_proto::StreamId>,
    pub(super) probe: Option<Probe>,
    /// Since when our ack-eliciting packets have gone unanswered (cleared by any datagram in).
    pub(super) unanswered_since: Option<Instant>,
    /// Suspicion already acted on for the current silence.
    pub(super) suspected: bool,
    /// A suspicion redial failed (the peer is still down): race the silent connection again
    /// at this time, if the silence lasts.
    pub(super) resuspect_at: Option<Instant>,
    /// Ack-eliciting frames sent so far, to tell which transmits expect an answer.
    pub(super) eliciting_sent: u64,
    /// When the connection started, for `Metrics::handshake_latency`.
    pub(super) started: Instant,
    /// The last instant quinn's timers ran at (`handle_timeout`): a quinn deadline at or
    /// before it is reported just past it (see `Manager::handle_timeout`).
    pub(super) quinn_handled: Option<Instant>,
    /// Queued in `Manager::dirty`: it may have something to send.
    pub(super) dirty: bool,
    pub(super) span: Span,
}

impl Conn {
    /// Queues this connection (`id`) in the manager's dirty queue, once: it may have something
    /// to send. Taking the queue, not the manager, lets a caller that already holds the
    /// connection skip a second lookup.
    pub(super) fn queue_dirty(&mut self, id: ConnId, dirty: &mut VecDeque<ConnId>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push_back(id);
        }
    }
}

impl Manager {
    pub(super) fn accept(
        &mut self,
        incoming: quinn_proto::Incoming,
        now: Instant,
        buf: &mut Vec<u8>,
    ) {
        let from = incoming.remote_address();
        let limits = &self.config.limits;
        // Unvalidated clients (forged sources among them) get at most `retry_above` handshake
        // slots, and never the last quarter of the connection table: that is kept for clients
        // that proved their address. A full table refuses at once (below), Retry or not.
        let table_nearly_full = (limits.max_connections - limits.max_connections / 4
            ..limits.max_connections)
            .contains(&self.live);
        if limits
            .retry_above
            .is_some_and(|n| self.inbound_handshakes >= n || table_nearly_full)
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            debug!(%from, "asking for address validation (Retry)");
            buf.clear();
            match self.endpoint.retry(incoming, buf) {
                Ok(transmit) => {
                    self.metrics.retries_sent += 1;
                    self.queue_response(now, transmit, buf)
                }
                Err(e) => self.endpoint.ignore(e.into_incoming()),
            }
            return;
        }
        let refusal = if self.shutting_down {
            Some(Refusal::ShuttingDown)
        } else if !self.accepting {
            Some(Refusal::NotAccepting)
        } else if self.inbound_handshakes >= limits.max_inbound_handshakes {
            Some(Refusal::MaxInboundHandshakes)
        } else if self.live >= limits.max_connections {
            Some(Refusal::MaxConnections)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            debug!(%from, ?refusal, "refusing inbound connection");
            self.metrics.refusals.add(refusal);
            buf.clear();
            let transmit = self.endpoint.refuse(incoming, buf);
            self.queue_response(now, transmit, buf);
            return;
        }
        let (config, slot) = match self.tls.quic_server_config() {
            Ok((crypto, slot)) => (server_config(crypto, &self.transport, &self.clock), slot),
            Err(e) => {
                warn!(%from, "cannot build server config: {e}");
                self.endpoint.ignore(incoming);
                return;
            }
        };
        buf.clear();
        match self.endpoint.accept(incoming, now, buf, Some(config)) {
            Ok((handle, inner)) => {
                let id = self.new_conn_id();
                self.inbound_handshakes += 1;
                self.insert_conn(id, handle, inner, slot, Direction::Inbound, from, None, now);
            }
            Err(e) => {
                debug!(%from, "accept failed: {}", e.cause);
                if let Some(transmit) = e.response {
                    self.queue_response(now, transmit, buf);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_conn(
        &mut self,
        id: ConnId,
        handle: ConnectionHandle,
        inner: quinn_proto::Connection,
        slot: VerificationSlot,
        direction: Direction,
        addr: SocketAddr,
        peer: Option<PeerId>,
        now: Instant,
    ) {
        let span = match peer {
            Some(peer) => debug_span!(parent: &self.span, "conn", %id, ?direction, %addr, %peer),
            None => debug_span!(parent: &self.span, "conn", %id, ?direction, %addr),
        };
        span.in_scope(|| debug!("connection started"));
        self.metrics.handshakes_started.add(direction);
        self.live += 1;
        self.by_handle.insert(handle, id);
        if direction == Direction::Outbound {
            self.dialing_conns.insert(id);
        }
        self.timers.touch(id);
        self.conns.insert(
            id,
            Box::new(Conn {
                handle,
                inner,
                slot,
                direction,
                addr,
                peer,
                phase: Phase::Handshaking {
                    deadline: now + self.config.handshake_timeout,
                },
                announced: false,
                standalone: false,
                send_open: BTreeSet::new(),
                recv_open: BTreeSet::new(),
                probe: None,
                unanswered_since: None,
                suspected: false,
                resuspect_at: None,
                eliciting_sent: 0,
                started: now,
                quinn_handled: None,
                dirty: false,
                span,
            }),
        );
        self.drive(id, now);
    }

    pub(super) fn new_conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    /// Polls a connection until it has nothing more to say, acting on what it says.
    pub(super) fn drive(&mut self, id: ConnId, now: Instant) {
        let mut drained = false;
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            while let Some(event) = conn.inner.poll_endpoint_events() {
                drained |= event.is_drained();
                if let Some(event) = self.endpoint.handle_event(conn.handle, event) {
                    conn.inner.handle_event(event);
                }
            }
            // The manager's buffer, taken: acting on an event may drive again (which then
            // allocates a buffer of its own).
            let mut events = std::mem::take(&mut self.quinn_events);
            while let Some(event) = conn.inner.poll() {
                events.push(event);
            }
            if events.is_empty() {
                self.quinn_events = events;
                break;
            }
            // Acting on most events only tells the application (a stream became readable):
            // then quinn has nothing new to say, and is not asked again.
            let mut again = false;
            for event in events.drain(..) {
                again |= !informs_only(&event);
                self.on_quinn_event(id, event, now);
            }
            self.quinn_events = events;
            if !again {
                break;
            }
        }
        // A probed connection that is still open and heard from the peer is alive. (Checked
        // after its events: the datagram may have been the stateless reset that killed it.)
        let mut alive = None;
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.queue_dirty(id, &mut self.dirty);
            if let Some(probe) = conn.probe.filter(|_| conn.phase == Phase::Established) {
                if conn.inner.stats().udp_rx.datagrams > probe.rx_before {
                    alive = Some(probe);
                }
            }
        }
        if let Some(probe) = alive {
            self.resolve_probe(id, probe, now);
        }
        if drained {
            if self
                .conns
                .get(&id)
                .is_some_and(|c| c.phase != Phase::Closed)
            {
                // Drained without a ConnectionLost (should not happen): account for it.
                self.on_lost(id, Cause::ClosedLocally, now);
            }
            if let Some(conn) = self.conns.remove(&id) {
                conn.span.in_scope(|| trace!("drained"));
                // quinn reuses handles at once: a connection started while this one drained
                // (a reconnect) may own the same handle already.
                self.by_handle.remove_if(conn.handle, id);
            }
            // Its entry in the dirty queue, if any, is skipped when reached.
            self.timers.touch(id);
        }
    }

    pub(super) fn on_quinn_event(&mut self, id: ConnId, event: quinn_proto::Event, now: Instant) {
        use quinn_proto::{Event as E, StreamEvent as S};
        match event {
            E::HandshakeDataReady | E::DatagramReceived | E::DatagramsUnblocked => {}
            E::Connected => self.on_connected(id, now),
            E::ConnectionLost { reason } => {
                if matches!(reason, ConnectionError::Reset) {
                    self.metrics.stateless_resets_received += 1;
                    if self.conns.get(&id).is_some_and(|c| c.announced) {
                        self.metrics
                            .restarts_detected
                            .add(RestartSignal::StatelessReset);
                    }
                }
                let cause = self.classify(id, reason);
                self.on_lost(id, cause, now);
            }
            E::Stream(event) => {
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                let Some(peer) = conn.peer.filter(|_| conn.phase == Phase::Established) else {
                    return;
                };
                // Built as queued (a few words), not as an `Event` to be converted.
                let queued = match event {
                    S::Opened { dir } => {
                        while let Some(sid) = conn.inner.streams().accept(dir) {
                            if dir == Dir::Bi {
                                conn.send_open.insert(sid);
                            }
                            conn.recv_open.insert(sid);
                            let stream = StreamId { conn: id, id: sid };
                            self.events.push(Event::StreamOpened { peer, stream });
                        }
                        return;
                    }
                    S::Readable { id: sid } => Queued::Readable(StreamId { conn: id, id: sid }),
                    S::Writable { id: sid } => Queued::Writable(StreamId { conn: id, id: sid }),
                    S::Finished { id: sid } => {
                        conn.send_open.remove(&sid);
                        Queued::Finished(StreamId { conn: id, id: sid })
                    }
                    S::Stopped {
                        id: sid,
                        error_code,
                    } => {
                        conn.send_open.remove(&sid);
                        Queued::Stopped(StreamId { conn: id, id: sid }, error_code.into_inner())
                    }
                    S::Available { dir: Dir::Bi } => {
                        Queued::Other(Box::new(Event::StreamsAvailable { peer, conn: id }))
                    }
                    // The manager opens bidirectional streams only.
                    S::Available { dir: Dir::Uni } => return,
                };
                self.events.push_queued(queued);
            }
        }
    }

    /// Turns quinn's reason into ours, using what the verifier recorded for handshake failures.
    pub(super) fn classify(&self, id: ConnId, reason: ConnectionError) -> Cause {
        let Some(conn) = self.conns.get(&id) else {
            return Cause::ClosedLocally;
        };
        let established = conn.phase == Phase::Established;
        let verdict = conn.slot.outcome();
        match reason {
            ConnectionError::Reset => Cause::PeerRestarted,
            ConnectionError::TimedOut if established => Cause::IdleTimeout,
            ConnectionError::TimedOut => Cause::HandshakeFailed(HandshakeFailure::TimedOut),
            ConnectionError::ApplicationClosed(close)
                if close.error_code.into_inner() == CLOSE_SUPERSEDED =>
            {
                Cause::Superseded { by: None }
            }
            ConnectionError::ApplicationClosed(close)
                if close.error_code.into_inner() == CLOSE_RESTARTING =>
            {
                Cause::PeerRestarting {
                    expected_downtime: parse_restart_reason(&close.reason),
                }
            }
            ConnectionError::ApplicationClosed(close) => Cause::ClosedByPeer {
                code: close.error_code.into_inner(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            ConnectionError::ConnectionClosed(close) => {
                let code = u64::from(close.error_code);
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                if established {
                    Cause::TransportError { code, reason }
                } else if close.error_code == TransportErrorCode::CONNECTION_REFUSED {
                    Cause::HandshakeFailed(HandshakeFailure::Refused)
                } else {
                    Cause::HandshakeFailed(HandshakeFailure::RejectedByPeer { code, reason })
                }
            }
            ConnectionError::TransportError(error) => match verdict {
                Some(Err(CertificateError::PeerIdMismatch { expected, actual })) => {
                    Cause::PeerIdMismatch { expected, actual }
                }
                Some(Err(error)) => Cause::HandshakeFailed(HandshakeFailure::Certificate(error)),
                _ => Cause::TransportError {
                    code: u64::from(error.code),
                    reason: error.reason,
                },
            },
            ConnectionError::VersionMismatch => {
                Cause::HandshakeFailed(HandshakeFailure::VersionMismatch)
            }
            ConnectionError::LocallyClosed => Cause::ClosedLocally,
            ConnectionError::CidsExhausted => Cause::TransportError {
                code: 0x1,
                reason: "connection IDs exhausted".into(),
            },
        }
    }

    /// Closes a connection we decided to end, and accounts for it at once.
    pub(super) fn close_conn(&mut self, id: ConnId, now: Instant, cause: Cause) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.phase == Phase::Closed {
            return;
        }
        let (code, reason) = match (&cause, self.restart_notice) {
            (Cause::Superseded { .. }, _) => (CLOSE_SUPERSEDED, Bytes::from_static(b"superseded")),
            (Cause::LimitReached, _) => (CLOSE_LIMIT, Bytes::from_static(b"connection limit")),
            (Cause::ClosedLocally, Some(downtime)) => {
                (CLOSE_RESTARTING, Bytes::from(restart_reason(downtime)))
            }
            _ => (CLOSE_NORMAL, Bytes::new()),
        };
        conn.inner.close(now, app_code(code), reason);
        self.on_lost(id, cause, now);
        self.drive(id, now);
    }
}

/// A code quicpeer closes with, as quinn's varint (every such code is in range).
fn app_code(code: u64) -> VarInt {
    VarInt::from_u64(code).unwrap_or(VarInt::MAX)
}

/// The reason phrase of a [`CLOSE_RESTARTING`] close.
fn restart_reason(downtime: Duration) -> String {
    format!("restarting; downtime_ms={}", downtime.as_millis())
}

/// The downtime a peer announced with [`CLOSE_RESTARTING`], at most [`MAX_ANNOUNCED_DOWNTIME`]
/// (the peer chooses it); zero when the phrase does not say.
pub(super) fn parse_restart_reason(reason: &[u8]) -> Duration {
    let ms = std::str::from_utf8(reason)
        .ok()
        .and_then(|text| text.strip_prefix("restarting; downtime_ms="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_millis(ms).min(MAX_ANNOUNCED_DOWNTIME)
}

/// Whether acting on `event` ([`Manager::on_quinn_event`]) only queues an event for the
/// application (or nothing), leaving quinn's state as it was.
fn informs_only(event: &quinn_proto::Event) -> bool {
    use quinn_proto::{Event as E, StreamEvent as S};
    matches!(
        event,
        E::HandshakeDataReady
            | E::DatagramReceived
            | E::DatagramsUnblocked
            | E::Stream(
                S::Readable { .. }
                    | S::Writable { .. }
                    | S::Finished { .. }
                    | S::Stopped { .. }
                    | S::Available { .. }
            )
    )
}
