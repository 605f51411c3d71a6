//! `quicpeer federate`: a chat server that federates with others over exactly-once peer
//! channels ([`quicpeer::protocols::channel`]), its state in a redb store.
//!
//! Each stdin line is a message of a local user; once durably accepted it is printed as
//! `accepted`, and every message of any server (its own included) is printed as `delivered`
//! once, as it is appended to the durable log. `federate log --store DIR` prints that log
//! (while the server is down: a running server holds the store's lock).
//!
//! Lines are printed after the commit they report: a crash between the two loses the line,
//! never the message, and a restarted server does not print again what its log holds. The log
//! is the record; the lines are a live view of it.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use quicpeer::driver::Driver;
use quicpeer::protocols::channel::{
    ChannelConfig, ChannelEvent, Channels, Entry, RedbStore, Store, StoreError,
};
use quicpeer::{Host, HostConfig, Manager, PeerId};

use crate::identity_args::IdentityArgs;
use crate::output::{Json, Output};
use crate::transport_args::TransportArgs;
use crate::{addr, report, signals, UsageError};

/// How long connections get to close at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The channel's name: servers of one federation must agree on it.
const CHANNEL: &str = "federation";

/// How the servers are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// Every server lists every other with `--peer`: each sends its own messages to all.
    Mesh,
    /// Servers are not all linked (a hub and leaves, a chain, a ring): each forwards what it
    /// receives to its other peers.
    Star,
}

/// Arguments of `quicpeer federate`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the durable log of a store in delivery order (`--json`: one `delivered` object
    /// per message).
    Log {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
    },
}

/// Arguments of a running server.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Where to listen; port 0 picks a free port (the real one is printed).
    #[arg(
        long,
        value_name = "MULTIADDR",
        default_value = "/ip4/127.0.0.1/udp/0/quic-v1"
    )]
    listen: String,
    /// A server of the federation, `/ip4/…/udp/…/quic-v1/p2p/<PeerId>`; repeat for each.
    /// Only these PeerIds, as proven by the TLS handshake, are accepted as links.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<String>,
    /// The directory of this server's store (created if missing).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// `mesh`: every server is a `--peer` of every other; `star`: not all are linked, so
    /// messages are forwarded.
    #[arg(long, value_enum, default_value = "mesh")]
    topology: Topology,
    #[command(flatten)]
    transport: TransportArgs,
}

pub fn run(args: &Args, out: Output) -> Result<ExitCode, UsageError> {
    match &args.command {
        Some(Command::Log { store }) => print_log(store, out),
        None => serve(&args.serve, out),
    }
}

fn store_error(dir: &std::path::Path, error: StoreError) -> UsageError {
    UsageError(format!("store {}: {error}", dir.display()))
}

fn delivered_json(entry: &Entry) -> Json {
    Json::event("delivered")
        .str("origin", &entry.origin.to_string())
        .int("seq", entry.seq)
        .str("body", &String::from_utf8_lossy(&entry.body))
}

fn print_log(dir: &std::path::Path, out: Output) -> Result<ExitCode, UsageError> {
    if !dir
        .join(quicpeer::protocols::channel::redb_store::FILE_NAME)
        .exists()
    {
        return Err(UsageError(format!("{}: no store there", dir.display())));
    }
    let mut store = RedbStore::open(dir).map_err(|e| store_error(dir, e))?;
    let mut from = 0;
    loop {
        let entries = store
            .read_log(from, 1024)
            .map_err(|e| store_error(dir, e))?;
        if entries.is_empty() {
            break;
        }
        for entry in &entries {
            if out.is_json() {
                println!("{}", delivered_json(entry).finish());
            } else {
                println!(
                    "{} #{}: {}",
                    entry.origin,
                    entry.seq,
                    String::from_utf8_lossy(&entry.body)
                );
            }
        }
        from += entries.len() as u64;
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &ServeArgs, out: Output) -> Result<ExitCode, UsageError> {
    let Some(dir) = &args.store else {
        return Err(UsageError("--store DIR is required".into()));
    };
    let identity = args.identity.load()?;
    let me = identity.peer_id();
    let listen = addr::parse(&args.listen)?;
    if listen.peer.is_some_and(|p| p != me) {
        return Err(UsageError(format!(
            "{}: the /p2p/ part is not this node's PeerId {me}",
            args.listen
        )));
    }
    let mut links: Vec<(PeerId, Vec<std::net::SocketAddr>)> = Vec::new();
    for text in &args.peers {
        let (socket, peer) = addr::parse_dial(text)?;
        if peer == me {
            return Err(UsageError(format!("{text}: that is this server")));
        }
        match links.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, addrs)) => addrs.push(socket),
            None => links.push((peer, vec![socket])),
        }
    }
    let store = RedbStore::open(dir).map_err(|e| store_error(dir, e))?;
    let now = Instant::now();
    let manager = Manager::new(
        now,
        SystemTime::now(),
        identity,
        args.transport.config()?,
        rand::random(),
    )
    .map_err(|e| UsageError(format!("cannot start the node: {e}")))?;
    let host = Host::new(now, manager, HostConfig::default(), rand::random());
    let mut config = ChannelConfig::new(CHANNEL, links);
    config.forward = args.topology == Topology::Star;
    config.redial_interval = Duration::from_millis(500);
    config.retry_delay = Duration::from_millis(500);
    let channels = Channels::new(now, host, store, config).map_err(|e| store_error(dir, e))?;
    let mut driver =
        Driver::bind(channels, &[listen.socket]).map_err(|e| UsageError(e.to_string()))?;
    let handle = driver.handle();
    signals::stop_on_termination(handle.clone())
        .map_err(|e| UsageError(format!("cannot install signal handlers: {e}")))?;

    for local in driver.local_addrs() {
        let full = addr::format(local, Some(&me));
        out.emit(
            Instant::now(),
            Json::event("listen").str("addr", &full),
            || format!("LISTEN {full}"),
        );
    }

    // Stdin lines become messages, on the driver's thread.
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let sent = handle.execute(move |channels: &mut Channels<RedbStore>, _| {
                    if let Err(error) = channels.accept(Bytes::from(line)) {
                        out.emit(
                            Instant::now(),
                            Json::event("refused").str("error", &error.to_string()),
                            || format!("REFUSED: {error}"),
                        );
                    }
                });
                if sent.is_err() {
                    break;
                }
            }
        })
        .map_err(|e| UsageError(format!("cannot read stdin: {e}")))?;

    let mut failed = false;
    let result = driver.run(|cx, event| match event {
        ChannelEvent::Accepted { seq } => out.emit(
            cx.now(),
            Json::event("accepted")
                .str("origin", &me.to_string())
                .int("seq", seq),
            || format!("ACCEPTED #{seq}"),
        ),
        ChannelEvent::Delivered { entry, .. } => out.emit(cx.now(), delivered_json(&entry), || {
            format!(
                "DELIVERED {} #{}: {}",
                entry.origin,
                entry.seq,
                String::from_utf8_lossy(&entry.body)
            )
        }),
        ChannelEvent::LinkFailed { peer, error } => out.emit(
            cx.now(),
            Json::event("link_failed")
                .str("peer", &peer.to_string())
                .str("error", &error.to_string()),
            || format!("LINK FAILED {peer}: {error}"),
        ),
        ChannelEvent::StoreFailed(error) => {
            out.emit(
                cx.now(),
                Json::event("store_failed").str("error", &error.to_string()),
                || format!("STORE FAILED: {error}"),
            );
            failed = true;
            cx.stop();
        }
        ChannelEvent::Host(event) => {
            report::host_event(&out, cx.now(), &event);
        }
        _ => {}
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let _ = driver.shutdown(CLOSE_GRACE, |_, _| {});
    out.emit(Instant::now(), Json::event("stopped"), || "STOPPED".into());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
