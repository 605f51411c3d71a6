//! Criterion: CPU per datagram of established-connection traffic, quicpeer vs bare quinn-proto
//! (the workload of `quicpeer_bench::per_datagram`). `cargo bench --bench per_datagram`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quicpeer_bench::per_datagram::{PerDatagram, Stack};

fn per_datagram(c: &mut Criterion) {
    let mut group = c.benchmark_group("per-datagram");
    group.throughput(Throughput::Elements(1));
    for (name, stack) in [("quicpeer", Stack::Quicpeer), ("quinn", Stack::Quinn)] {
        // A benchmark harness: a setup failure is a bug to see at once.
        let mut bench = PerDatagram::new(stack).expect("set up a connected pair");
        group.bench_function(format!("receive/{name}"), |b| {
            b.iter_custom(|iters| bench.run(iters, true).expect("stream data").receive)
        });
        group.bench_function(format!("round/{name}"), |b| {
            b.iter_custom(|iters| bench.run(iters, false).expect("stream data").total)
        });
    }
    group.finish();
}

criterion_group!(benches, per_datagram);
criterion_main!(benches);
