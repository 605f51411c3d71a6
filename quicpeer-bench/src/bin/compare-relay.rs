//! One relay server in a process of its own, for `compare relay-throughput` and `compare
//! relay-memory` (`quicpeer_bench::compare::circuits`), which start it: its memory is then
//! its own to measure.
//!
//! ```text
//! compare-relay quicpeer|rust-libp2p
//! ```
//!
//! Prints `LISTEN <multiaddr>/p2p/<id>` once it listens; then each line `mem` on stdin is
//! answered with `MEM <resident set bytes> <heap bytes in use>`. It exits when stdin closes.

use std::io::BufRead;
use std::process::ExitCode;

use quicpeer_bench::compare::circuits::{own_rss, serve, Server};

#[global_allocator]
static GLOBAL: quicpeer_bench::alloc::Counting = quicpeer_bench::alloc::Counting;

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(server) = Server::from_name(&name) else {
        eprintln!("usage: compare-relay quicpeer|rust-libp2p");
        return ExitCode::from(2);
    };
    // Answers `mem` until stdin closes, then ends the process (the relay loops forever).
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "mem" {
                let heap = quicpeer_bench::alloc::allocated();
                println!("MEM {} {heap}", own_rss().unwrap_or(0));
            }
        }
        std::process::exit(0);
    });
    match serve(server, |addr| println!("LISTEN {addr}")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
