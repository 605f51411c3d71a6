//! `--metrics ADDR`: the manager's [`Metrics`] in the Prometheus text format over HTTP.
//!
//! The library keeps counters and exports nothing; this module is the exporter. A scrape of
//! `GET /metrics` asks the driver thread for a snapshot (through its [`Handle`], so the
//! manager is never shared or locked), encodes it with `prometheus-client` (the crate
//! rust-libp2p's metrics use, so names and formats look the same to an operator who scrapes
//! both) and answers. The HTTP side is a thread with a blocking listener that serves one
//! request per connection: a scraper is all it has to serve, and it needs no async runtime.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use quicpeer::driver::Handle;
use quicpeer::manager::{CountsBy, Histogram, Label};
use quicpeer::{Host, Metrics};

use crate::output::{Json, Output};
use crate::UsageError;

/// How long a scrape waits for the driver's snapshot, and for the scraper's request.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The most of a request read: a scrape's request line and headers.
const MAX_REQUEST: usize = 8 * 1024;

/// The `--metrics` argument of `listen`, `ping` and `relay`.
#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Serve the node's counters in the Prometheus text format at http://ADDR/metrics
    /// (for instance 127.0.0.1:9464; port 0 picks a free port, printed as a METRICS line).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Serves the host's metrics if `--metrics` was given, and prints where (a `METRICS <url>`
    /// line, or a `metrics` JSON event with the `url`).
    pub fn start(&self, handle: Handle<Host>, out: &Output) -> Result<(), UsageError> {
        self.start_sharded(vec![handle], out)
    }

    /// As [`start`](Self::start), for a node of several shards: each scrape adds up every
    /// shard's metrics ([`Metrics::merge`]).
    pub fn start_sharded(
        &self,
        handles: Vec<Handle<Host>>,
        out: &Output,
    ) -> Result<(), UsageError> {
        self.start_with(handles, |host: &Host| host.manager().metrics(), out)
    }

    /// As [`start_sharded`](Self::start_sharded), for any machine with a manager inside.
    pub fn start_with<M: 'static>(
        &self,
        handles: Vec<Handle<M>>,
        snapshot: fn(&M) -> Metrics,
        out: &Output,
    ) -> Result<(), UsageError> {
        let Some(at) = self.metrics else {
            return Ok(());
        };
        let bound = serve(at, handles, snapshot)
            .map_err(|e| UsageError(format!("cannot serve metrics on {at}: {e}")))?;
        let url = format!("http://{bound}/metrics");
        out.emit(
            Instant::now(),
            Json::event("metrics").str("url", &url),
            || format!("METRICS {url}"),
        );
        Ok(())
    }
}

/// Serves `GET /metrics` on `addr` from a thread of its own until the process ends; `snapshot`
/// runs on each driver's thread, and the shards' snapshots are added up. Returns the bound
/// address.
pub fn serve<M: 'static>(
    addr: SocketAddr,
    handles: Vec<Handle<M>>,
    snapshot: fn(&M) -> Metrics,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Err(e) = answer(stream, &handles, snapshot) {
                    tracing::debug!("metrics request failed: {e}");
                }
            }
        })?;
    Ok(local)
}

fn answer<M: 'static>(
    mut stream: TcpStream,
    handles: &[Handle<M>],
    snapshot: fn(&M) -> Metrics,
) -> io::Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = read_head(&mut stream)?;
    let path = request
        .strip_prefix("GET ")
        .and_then(|rest| rest.split_whitespace().next());
    let (status, content_type, body) = match path {
        Some("/metrics") => {
            // Every shard is asked at once; the answer waits for all of them.
            let (tx, rx) = mpsc::sync_channel(handles.len());
            let asked = handles.iter().all(|handle| {
                let tx = tx.clone();
                let asked = handle.execute(move |machine, _| {
                    let _ = tx.send(snapshot(machine));
                });
                asked.is_ok()
            });
            let mut total = Metrics::default();
            let answered = asked
                && (0..handles.len()).all(|_| match rx.recv_timeout(TIMEOUT) {
                    Ok(metrics) => {
                        total.merge(&metrics);
                        true
                    }
                    Err(_) => false,
                });
            match answered.then_some(total) {
                Some(metrics) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    encode(&metrics),
                ),
                None => (
                    "503 Service Unavailable",
                    "text/plain",
                    "the node is not running\n".to_string(),
                ),
            }
        }
        _ => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Reads up to the end of the request's headers (or `MAX_REQUEST` bytes).
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The snapshot in the Prometheus (OpenMetrics) text format, every name prefixed `quicpeer_`.
pub fn encode(metrics: &Metrics) -> String {
    let mut registry = Registry::with_prefix("quicpeer");
    registry.register_collector(Box::new(Snapshot(metrics.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// One snapshot, as a collector of the registry it is encoded from.
#[derive(Debug)]
struct Snapshot(Metrics);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let gauges = [
            (
                "connections_handshaking",
                "Connections in their handshake",
                m.handshaking,
            ),
            (
                "connections_established",
                "Established connections",
                m.established,
            ),
            (
                "connections_draining",
                "Closed connections not yet drained",
                m.draining,
            ),
            (
                "peers_connected",
                "Peers with an established connection",
                m.peers_connected,
            ),
        ];
        for (name, help, value) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            metric.encode_gauge(&value)?;
        }
        counters(
            &mut encoder,
            "handshakes_started",
            "Handshakes started",
            &m.handshakes_started,
        )?;
        counters(
            &mut encoder,
            "handshakes_completed",
            "Handshakes completed",
            &m.handshakes_completed,
        )?;
        counters(
            &mut encoder,
            "handshakes_failed",
            "Handshakes that did not complete",
            &m.handshakes_failed,
        )?;
        counters(
            &mut encoder,
            "connections_lost",
            "Established connections that ended",
            &m.connections_lost,
        )?;
        counters(
            &mut encoder,
            "restarts_detected",
            "Peer restarts noticed",
            &m.restarts_detected,
        )?;
        counters(
            &mut encoder,
            "redials",
            "Dials started by the manager itself",
            &m.redials,
        )?;
        counters(
            &mut encoder,
            "refusals",
            "Connections and dials refused at a limit",
            &m.refusals,
        )?;
        let plain = [
            (
                "stateless_resets_sent",
                "Stateless resets sent",
                m.stateless_resets_sent,
            ),
            (
                "stateless_resets_received",
                "Valid stateless resets received",
                m.stateless_resets_received,
            ),
            ("retries_sent", "Retry packets sent", m.retries_sent),
            (
                "stateless_responses_dropped",
                "Stateless responses dropped by their rate limit",
                m.responses_dropped,
            ),
        ];
        for (name, help, value) in plain {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            metric.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        histogram(
            &mut encoder,
            "handshake_seconds",
            "Handshake latency",
            &m.handshake_latency,
        )?;
        histogram(
            &mut encoder,
            "recovery_seconds",
            "Time a peer was cut off, from losing its last connection to the next one",
            &m.recovery_latency,
        )?;
        Ok(())
    }
}

fn counters<K: Label>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counts: &CountsBy<K>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (key, value) in counts.iter() {
        let labels = [(K::NAME, key.as_str())];
        let mut family = metric.encode_family(&labels)?;
        family.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = histogram
        .buckets()
        .map(|(bound, n)| (bound.map_or(f64::INFINITY, |b| b.as_secs_f64()), n))
        .collect();
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(
        histogram.sum().as_secs_f64(),
        histogram.count(),
        &buckets,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_snapshot_encodes_every_family_with_zeros() {
        let text = encode(&Metrics::default());
        assert!(text.contains("# TYPE quicpeer_connections_established gauge"));
        assert!(text.contains("quicpeer_connections_lost_total{cause=\"peer_restarted\"} 0"));
        assert!(text.contains("quicpeer_restarts_detected_total{signal=\"stateless_reset\"} 0"));
        assert!(text.contains("quicpeer_handshake_seconds_count 0"));
        assert!(text.contains("quicpeer_handshake_seconds_bucket{le=\"+Inf\"} 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}
