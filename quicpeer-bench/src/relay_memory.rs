//! Bytes per reservation and per circuit of quicpeer's circuit relay v2 server.
//!
//! A relay and N clients in the simulator, three times over with the same seed: the clients
//! connected; connected and each holding a reservation; and, beside the reservations, M
//! circuits open (client i connected to client i + M, no data sent). Each time the relay is
//! stopped, and the bytes its machine frees are its footprint (as `memory` weighs a manager).
//! Per reservation: (reserved − connected) / N; per circuit: (circuits − reserved) / M. Each
//! figure holds everything the step costs the relay's machine: for a reservation, the relay's
//! entry and what the finished hop stream leaves in the connection (quinn's stream maps,
//! grown by the connection's first stream, keep their capacity); for a circuit, its two open
//! QUIC streams in quinn and the relay's state.

use std::time::Duration;

use quicpeer::protocols::relay::{
    HopMessage, Relay, RelayConfig, RelayEvent, Status, StopMessage, HOP_PROTOCOL, STOP_PROTOCOL,
};
use quicpeer::protocols::{HostConfig, HostEvent, OutboundId};
use quicpeer::sim::{Network, NodeId};
use quicpeer::{Config, Identity, StreamId};

use super::{BenchError, Cell, Report};

/// What the benchmark found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Clients connected to the relay.
    pub clients: usize,
    /// Circuits open in the third run.
    pub circuits: usize,
    /// The relay's bytes with the clients connected only.
    pub connected: usize,
    /// ...and each holding a reservation.
    pub reserved: usize,
    /// ...and the circuits open.
    pub with_circuits: usize,
}

impl Outcome {
    /// Bytes one reservation adds.
    pub fn per_reservation(&self) -> f64 {
        self.reserved.saturating_sub(self.connected) as f64 / self.clients.max(1) as f64
    }

    /// Bytes one open circuit adds.
    pub fn per_circuit(&self) -> f64 {
        self.with_circuits.saturating_sub(self.reserved) as f64 / self.circuits.max(1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connected,
    Reserved,
    Circuits,
}

type Net = Network<Relay>;

fn relay_config(clients: usize, circuits: usize) -> RelayConfig {
    let mut config = RelayConfig::default();
    config.max_reservations = clients;
    config.max_reservations_per_ip = clients;
    config.max_circuits = circuits.max(1);
    config.max_pending = clients.max(1);
    config
}

/// Requests whose hop stream is still being negotiated: (node, request, message).
type Pending = Vec<(NodeId, OutboundId, Vec<u8>)>;

/// Opens a hop stream from `node` to the relay `to`; `serve` writes `message` on it once it
/// is negotiated.
fn request(
    net: &mut Net,
    pending: &mut Pending,
    node: NodeId,
    to: NodeId,
    message: Vec<u8>,
) -> Result<(), BenchError> {
    let (now, peer) = (net.now(), net.peer_id(to));
    let host = net
        .machine(node)
        .ok_or(BenchError::Stuck("a client is down"))?;
    let id = (host.host_mut())
        .open_stream(now, peer, [HOP_PROTOCOL])
        .map_err(|e| BenchError::Setup(format!("open: {e}")))?;
    pending.push((node, id, message));
    Ok(())
}

/// Writes the pending requests whose streams are negotiated, and answers the relay's stop
/// CONNECTs with OK; `seen` counts each node's events already looked at.
fn serve(net: &mut Net, pending: &mut Pending, nodes: &[NodeId], seen: &mut [usize]) {
    for (i, &node) in nodes.iter().enumerate() {
        let events: Vec<HostEvent> = net.events(node)[seen[i]..]
            .iter()
            .filter_map(|(_, e)| match e {
                RelayEvent::Host(event) => Some(event.clone()),
                _ => None,
            })
            .collect();
        seen[i] = net.events(node).len();
        for event in events {
            let (stream, bytes): (StreamId, Vec<u8>) = match event {
                HostEvent::OutboundStream { id, stream, .. } => {
                    match pending.iter().position(|(n, i, _)| *n == node && *i == id) {
                        Some(at) => (stream, pending.swap_remove(at).2),
                        None => continue,
                    }
                }
                HostEvent::InboundStream {
                    stream, protocol, ..
                } if protocol == STOP_PROTOCOL => {
                    (stream, StopMessage::Status(Status::Ok).encode())
                }
                _ => continue,
            };
            if let Some(relay) = net.machine(node) {
                let _ = relay.host_mut().manager_mut().stream_write(stream, &bytes);
            }
        }
    }
}

/// The relay's footprint at one stage.
fn footprint(
    clients: usize,
    circuits: usize,
    stage: Stage,
    allocated: &dyn Fn() -> usize,
) -> Result<usize, BenchError> {
    let mut pending = Pending::new();
    let mut net = Net::with_seed(7);
    let config = (
        Config::default(),
        HostConfig::default(),
        relay_config(clients, circuits),
    );
    let relay = net.add_node(
        "relay",
        Identity::from_ed25519_seed([0; 32]),
        config.clone(),
    );
    let mut nodes = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let node = net.add_node("client", Identity::from_ed25519_seed(seed), config.clone());
        let host = net
            .machine(node)
            .ok_or(BenchError::Stuck("a client is down"))?;
        (host.host_mut())
            .register(STOP_PROTOCOL)
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        nodes.push(node);
    }
    for batch in nodes.chunks(200) {
        for &node in batch {
            net.dial(node, relay);
        }
        net.run_for(Duration::from_millis(200));
    }
    net.run_for(Duration::from_millis(500));
    let connected = net.manager(relay).map_or(0, |m| m.live_connections());
    if connected != clients {
        return Err(BenchError::Stuck("not every client connected to the relay"));
    }
    let mut seen = vec![0; clients];
    if stage != Stage::Connected {
        for &node in &nodes {
            request(
                &mut net,
                &mut pending,
                node,
                relay,
                HopMessage::Reserve.encode(),
            )?;
        }
        for _ in 0..20 {
            net.run_for(Duration::from_millis(50));
            serve(&mut net, &mut pending, &nodes, &mut seen);
        }
        let reserved = net.machine(relay).map_or(0, |r| r.reservation_count());
        if reserved != clients {
            return Err(BenchError::Stuck("not every client got its reservation"));
        }
    }
    if stage == Stage::Circuits {
        for i in 0..circuits {
            let target = net.peer_id(nodes[i + circuits]);
            request(
                &mut net,
                &mut pending,
                nodes[i],
                relay,
                HopMessage::Connect { peer: target }.encode(),
            )?;
        }
        for _ in 0..20 {
            net.run_for(Duration::from_millis(50));
            serve(&mut net, &mut pending, &nodes, &mut seen);
        }
        let open = (net.events(relay).iter())
            .filter(|(_, e)| matches!(e, RelayEvent::CircuitOpened { .. }))
            .count();
        if open != circuits || net.machine(relay).map_or(0, |r| r.circuit_count()) != circuits {
            return Err(BenchError::Stuck("not every circuit opened"));
        }
    }
    // Long enough for every acknowledgement, so no retransmission buffer is weighed.
    net.run_for(Duration::from_secs(2));
    for node in 0..=clients {
        net.take_events(NodeId(node));
    }
    let before = allocated();
    net.stop(relay);
    Ok(before.saturating_sub(allocated()))
}

/// Measures with `clients` clients and `circuits` circuits (at most half the clients).
pub fn measure(
    clients: usize,
    circuits: usize,
    allocated: &dyn Fn() -> usize,
) -> Result<Outcome, BenchError> {
    let clients = clients.max(2);
    let circuits = circuits.clamp(1, clients / 2);
    Ok(Outcome {
        clients,
        circuits,
        connected: footprint(clients, circuits, Stage::Connected, allocated)?,
        reserved: footprint(clients, circuits, Stage::Reserved, allocated)?,
        with_circuits: footprint(clients, circuits, Stage::Circuits, allocated)?,
    })
}

/// The benchmark as a report.
pub fn run(
    clients: usize,
    circuits: usize,
    allocated: &dyn Fn() -> usize,
) -> Result<Report, BenchError> {
    let o = measure(clients, circuits, allocated)?;
    let mut report = Report::new(
        "relay-memory",
        &[
            "clients",
            "circuits",
            "relay bytes, connected",
            "… reserved",
            "… with circuits",
            "bytes/reservation",
            "bytes/circuit",
        ],
    );
    report.rows.push(vec![
        Cell::num(o.clients as f64, 0),
        Cell::num(o.circuits as f64, 0),
        Cell::num(o.connected as f64, 0),
        Cell::num(o.reserved as f64, 0),
        Cell::num(o.with_circuits as f64, 0),
        Cell::num(o.per_reservation(), 0),
        Cell::num(o.per_circuit(), 0),
    ]);
    report.notes.push(
        "the relay's machine (Relay, its Host and Manager) weighed by the bytes it frees when \
         stopped, in three simulated runs with the same seed; a circuit carries no data (its \
         splice buffers are empty), and counts its two QUIC streams"
            .into(),
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stage is reached (connections, reservations, open circuits); the bytes are not
    /// counted here (no counting allocator in this process).
    #[test]
    fn every_stage_is_reached() {
        let outcome = measure(6, 2, &|| 0).expect("all stages reached");
        assert_eq!((outcome.clients, outcome.circuits), (6, 2));
    }
}
