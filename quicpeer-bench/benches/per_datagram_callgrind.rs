//! A fixed per-datagram workload for instruction counting with callgrind (see
//! `benches/callgrind.sh`): `per_datagram_callgrind [quicpeer|quinn] [DATAGRAMS]`.
//!
//! Every datagram B receives goes through `quicpeer_bench::endpoint::receive`, the function
//! callgrind is told to count; the script runs two lengths and takes the difference, so the
//! warm-up cancels out.

use std::time::Instant;

use quicpeer_bench::per_datagram::PerDatagram;

fn main() {
    let (stack, datagrams) = quicpeer_bench::workload_args(10_000u64);
    let start = Instant::now();
    // A benchmark harness: a failure is a bug to see at once.
    let mut bench = PerDatagram::new(stack).expect("set up a connected pair");
    let timing = bench.run(datagrams, false).expect("stream data");
    println!(
        "{}: {} datagrams, {} stream bytes, {:?} in all",
        stack.label(),
        timing.datagrams,
        timing.bytes,
        start.elapsed()
    );
}
