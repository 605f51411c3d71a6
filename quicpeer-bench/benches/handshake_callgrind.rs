//! A fixed handshake workload for instruction counting with callgrind (see
//! `benches/handshake_profile.sh`): `handshake_callgrind [quicpeer|quinn] [HANDSHAKES]`.
//!
//! Every handshake (dial, both sides complete, close, drain) runs inside
//! `quicpeer_bench::handshake::cycles`, the function callgrind is told to count; the endpoints
//! and their certificates are built before it, once.

use quicpeer_bench::handshake::{Handshakes, Stack};

fn main() {
    // `cargo bench` passes `--bench`; anything that is not ours is ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stack = if args.iter().any(|a| a == "quinn") {
        Stack::Quinn
    } else {
        Stack::Quicpeer
    };
    let count = args
        .iter()
        .find_map(|a| a.parse::<u32>().ok())
        .unwrap_or(200);
    // A benchmark harness: a failure is a bug to see at once.
    let mut bench = Handshakes::new(stack).expect("set up the endpoints");
    bench.run(count).expect("handshakes complete");
    println!("{}: {count} handshakes", stack.label());
}
