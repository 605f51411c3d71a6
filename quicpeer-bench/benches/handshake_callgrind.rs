//! A fixed handshake workload for instruction counting with callgrind (see
//! `benches/handshake_profile.sh`): `handshake_callgrind [quicpeer|quinn] [HANDSHAKES]`.
//!
//! Every handshake (dial, both sides complete, close, drain) runs inside
//! `quicpeer_bench::handshake::cycles`, the function callgrind is told to count; the endpoints
//! and their certificates are built before it, once.

use quicpeer_bench::handshake::Handshakes;

fn main() {
    let (stack, count) = quicpeer_bench::workload_args(200u32);
    // A benchmark harness: a failure is a bug to see at once.
    let mut bench = Handshakes::new(stack).expect("set up the endpoints");
    bench.run(count).expect("handshakes complete");
    println!("{}: {count} handshakes", stack.label());
}
