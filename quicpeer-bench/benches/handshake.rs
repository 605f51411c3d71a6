//! Criterion: one complete handshake (and close), both sides on one thread, quicpeer vs bare
//! quinn-proto, and quicpeer resuming the previous session (the workload of
//! `quicpeer_bench::handshake`). `cargo bench --bench handshake`.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quicpeer_bench::handshake::{Handshakes, Stack};

fn handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    type Build = fn() -> Result<Handshakes, quicpeer_bench::BenchError>;
    let builds: [(&str, Build); 3] = [
        ("quicpeer", || Handshakes::new(Stack::Quicpeer)),
        ("quicpeer-resumed", Handshakes::resumed),
        ("quinn", || Handshakes::new(Stack::Quinn)),
    ];
    for (name, build) in builds {
        // A benchmark harness: a setup failure is a bug to see at once.
        let mut bench = build().expect("set up the endpoints");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let count = u32::try_from(iters).unwrap_or(u32::MAX);
                let start = Instant::now();
                bench.run(count).expect("handshakes complete");
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
