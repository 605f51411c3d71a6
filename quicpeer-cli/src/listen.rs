//! `quicpeer listen`: a node that accepts connections and answers `/ipfs/ping/1.0.0` until
//! SIGINT/SIGTERM. With `--peer-book FILE` it dials the peers of its previous run as it starts
//! ([`crate::peer_book_args`]).

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use quicpeer::driver::{Driver, Exit};
use quicpeer::{Host, HostConfig, Manager};

use crate::identity_args::IdentityArgs;
use crate::metrics_server::MetricsArgs;
use crate::output::{Json, Output};
use crate::peer_book_args::{self, BookKeeper, PeerBookArgs};
use crate::transport_args::TransportArgs;
use crate::{addr, report, signals, UsageError};

/// How long connections get to close at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Arguments of `quicpeer listen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Where to listen; port 0 picks a free port (the real one is printed).
    #[arg(
        long,
        value_name = "MULTIADDR",
        default_value = "/ip4/127.0.0.1/udp/0/quic-v1"
    )]
    listen: String,
    #[command(flatten)]
    peer_book: PeerBookArgs,
    /// On SIGINT/SIGTERM, tell the peers that this node is restarting and expects to be back
    /// within this many milliseconds: quicpeer peers keep redialing it on a short schedule
    /// (other libp2p nodes see an ordinary close).
    #[arg(long, value_name = "MS")]
    restart_downtime_ms: Option<u64>,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    transport: TransportArgs,
}

pub fn run(args: &Args, out: Output) -> Result<ExitCode, UsageError> {
    let identity = args.identity.load()?;
    let peer_id = identity.peer_id();
    let listen = addr::parse(&args.listen)?;
    if listen.peer.is_some_and(|p| p != peer_id) {
        return Err(UsageError(format!(
            "{}: the /p2p/ part is not this node's PeerId {peer_id}",
            args.listen
        )));
    }
    let (mut book, records) = args.peer_book.load(peer_id, &out);
    let manager = Manager::new(
        Instant::now(),
        SystemTime::now(),
        identity,
        args.transport.config()?,
        rand::random(),
    )
    .map_err(|e| UsageError(format!("cannot start the node: {e}")))?;
    // The host answers /ipfs/ping/1.0.0 by itself.
    let host = Host::new(
        Instant::now(),
        manager,
        HostConfig::default(),
        rand::random(),
    );
    let mut driver = Driver::bind(host, &[listen.socket]).map_err(|e| UsageError(e.to_string()))?;
    signals::stop_on_termination(driver.handle())
        .map_err(|e| UsageError(format!("cannot install signal handlers: {e}")))?;

    // Queued now, sent when the loop starts: right after the LISTEN lines.
    let now = driver.now();
    let manager = driver.machine_mut().manager_mut();
    peer_book_args::dial(manager, now, book.as_ref(), records, &out);

    for local in driver.local_addrs() {
        let full = addr::format(local, Some(&peer_id));
        out.emit(
            Instant::now(),
            Json::event("listen").str("addr", &full),
            || format!("LISTEN {full}"),
        );
    }
    args.metrics.start(driver.handle(), &out)?;
    loop {
        let due = book.as_ref().and_then(|b| b.due());
        let result = driver.run_until(due, |cx, event| {
            report::host_event(&out, cx.now(), &event);
            if let Some(book) = book.as_mut().filter(|_| BookKeeper::changes(&event)) {
                book.changed(cx.now(), cx.manager());
            }
        });
        match result {
            Ok(Exit::Stopped) => break,
            Ok(_) => {
                let now = driver.now();
                if let Some(book) = &mut book {
                    book.save_if_due(now, driver.machine().manager());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let open = driver.machine().manager().connected_peers().len();
    out.emit(
        Instant::now(),
        Json::event("shutting_down").int("peers", open as u64),
        || format!("SHUTTING DOWN: closing connections to {open} peer(s)"),
    );
    if let Some(ms) = args.restart_downtime_ms {
        let now = driver.now();
        (driver.machine_mut().manager_mut()).close_all_restarting(now, Duration::from_millis(ms));
    }
    let closed = driver
        .shutdown(CLOSE_GRACE, |cx, event| {
            report::host_event(&out, cx.now(), &event);
        })
        .unwrap_or(false);
    if let Some(book) = &mut book {
        let now = driver.now();
        book.save(now, driver.machine().manager());
    }
    report::stopped(&out, closed);
    Ok(ExitCode::SUCCESS)
}
