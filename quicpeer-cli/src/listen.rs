//! `quicpeer listen`: a node that accepts connections and answers `/ipfs/ping/1.0.0` until
//! SIGINT/SIGTERM. With `--peer-book FILE` it dials the peers of its previous run as it starts
//! ([`crate::peer_book_args`]). With `--threads N` it runs N shards on the one port
//! (`quicpeer::driver::Sharded`), one per thread.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use quicpeer::driver::{Driver, Exit, Sharded};
use quicpeer::{Host, HostConfig, Manager};

use crate::identity_args::IdentityArgs;
use crate::metrics_server::MetricsArgs;
use crate::output::{Json, Output};
use crate::peer_book_args::{self, BookKeeper, PeerBookArgs, ShardedBook};
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
    /// Threads: with more than one, the node runs that many shards on its one port
    /// (SO_REUSEPORT; Unix), each a manager of the same identity on a thread of its own, the
    /// connection limits split between them; --peer-book and --metrics cover all of them.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    threads: u8,
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
    if args.threads > 1 {
        return run_sharded(args, identity, listen.socket, out);
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

/// `listen --threads N` with N > 1: shard 0 runs on this thread (signals stop it), the others
/// on threads of their own; at the end every shard closes its connections at once.
fn run_sharded(
    args: &Args,
    identity: quicpeer::Identity,
    socket: std::net::SocketAddr,
    out: Output,
) -> Result<ExitCode, UsageError> {
    let peer_id = identity.peer_id();
    let (keeper, records) = args.peer_book.load(peer_id, &out);
    let config = args.transport.config()?;
    let shards = args.threads;
    let mut hosts = Vec::new();
    for shard in 0..shards {
        let manager = Manager::new(
            Instant::now(),
            SystemTime::now(),
            identity.clone(),
            config.for_shard(shard, shards),
            rand::random(),
        )
        .map_err(|e| UsageError(format!("cannot start the node: {e}")))?;
        hosts.push(Host::new(
            Instant::now(),
            manager,
            HostConfig::default(),
            rand::random(),
        ));
    }
    let sharded = Sharded::bind(hosts, socket).map_err(|e| UsageError(e.to_string()))?;
    let local = sharded.local_addr();
    let mut drivers = sharded.into_drivers();
    // The book's peers, dealt out between the shards; queued now, sent when the loops start.
    let mut managers: Vec<_> = (drivers.iter_mut())
        .map(|d| {
            let now = d.now();
            (d.machine_mut().manager_mut(), now)
        })
        .collect();
    peer_book_args::dial_shares(&mut managers, keeper.as_ref(), records, &out);
    let book = keeper.map(|k| ShardedBook::new(k, usize::from(shards)));
    let handles: Vec<_> = drivers.iter().map(|d| d.handle()).collect();
    args.metrics.start_sharded(handles.clone(), &out)?;
    let mut drivers = drivers.into_iter();
    let Some(mut first) = drivers.next() else {
        return Err(UsageError("no shard".into()));
    };
    signals::stop_on_termination(first.handle())
        .map_err(|e| UsageError(format!("cannot install signal handlers: {e}")))?;
    let mut others = Vec::new();
    for (shard, driver) in (1..).zip(drivers) {
        let book = book.clone();
        let thread = driver.spawn(move |cx, event| {
            report::host_event(&out, cx.now(), &event);
            if let Some(book) = book.as_ref().filter(|_| BookKeeper::changes(&event)) {
                book.changed(shard);
            }
        });
        others.push(thread.map_err(|e| UsageError(format!("cannot start a shard: {e}")))?);
    }
    if let Some(local) = local {
        let full = addr::format(local, Some(&peer_id));
        out.emit(
            Instant::now(),
            Json::event("listen")
                .str("addr", &full)
                .int("threads", u64::from(shards)),
            || format!("LISTEN {full}"),
        );
    }
    // Shard 0 wakes once per save interval and has each shard whose book changed hand it over,
    // on that shard's thread; the last one in writes the file.
    let result = loop {
        let due = book
            .as_ref()
            .map(|_| Instant::now() + peer_book_args::SAVE_INTERVAL);
        let result = first.run_until(due, |cx, event| {
            report::host_event(&out, cx.now(), &event);
            if let Some(book) = book.as_ref().filter(|_| BookKeeper::changes(&event)) {
                book.changed(0);
            }
        });
        match result {
            Ok(Exit::Stopped) => break Ok(()),
            Ok(_) => {
                let Some(book) = &book else { continue };
                for shard in book.stale() {
                    if shard == 0 {
                        book.refresh(0, first.now(), first.machine().manager());
                    } else if let Some(handle) = handles.get(shard) {
                        let book = book.clone();
                        let _ = handle.execute(move |host: &mut Host, now| {
                            book.refresh(shard, now, host.manager());
                        });
                    }
                }
                book.tick(first.now());
            }
            Err(e) => break Err(e),
        }
    };
    let mut drivers = vec![first];
    for thread in others {
        match thread.stop() {
            Ok((driver, _)) => drivers.push(driver),
            Err(_) => eprintln!("error: a shard's thread panicked"),
        }
    }
    if let Err(e) = result {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let open: usize = (drivers.iter())
        .map(|d| d.machine().manager().connected_peers().len())
        .sum();
    out.emit(
        Instant::now(),
        Json::event("shutting_down").int("peers", open as u64),
        || format!("SHUTTING DOWN: closing connections to {open} peer(s)"),
    );
    // Every shard closes at once, each on a thread of its own.
    let closed = std::thread::scope(|scope| {
        let closing: Vec<_> = (drivers.iter_mut())
            .map(|driver| {
                scope.spawn(move || {
                    if let Some(ms) = args.restart_downtime_ms {
                        let now = driver.now();
                        (driver.machine_mut().manager_mut())
                            .close_all_restarting(now, Duration::from_millis(ms));
                    }
                    driver
                        .shutdown(CLOSE_GRACE, |cx, event| {
                            report::host_event(&out, cx.now(), &event);
                        })
                        .unwrap_or(false)
                })
            })
            .collect();
        (closing.into_iter()).all(|c| c.join().unwrap_or(false))
    });
    if let Some(book) = &book {
        let managers: Vec<_> = drivers.iter().map(|d| d.machine().manager()).collect();
        book.save(Instant::now(), &managers);
    }
    report::stopped(&out, closed);
    Ok(ExitCode::SUCCESS)
}
