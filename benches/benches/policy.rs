//! The batching decision over queues of 1 to 1024 requests.
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quiver_engine::batcher::policy::{Arrivals, BatchingConfig, Candidate, DelayPolicy, decide};

fn policy(c: &mut Criterion) {
    let config = BatchingConfig {
        max_batch_size: 64,
        preferred: vec![16, 32],
        max_queue_delay: Duration::from_micros(200),
        delay_policy: DelayPolicy::Adaptive,
    };
    let now = Instant::now();
    // A steady stream every 10 µs, so the adaptive rule has an estimate to use.
    let mut arrivals = Arrivals::default();
    for i in (0..64u64).rev() {
        arrivals.arrived(now - Duration::from_micros(10 * i));
    }
    let mut g = c.benchmark_group("policy/decide");
    for queued in [1usize, 8, 64, 1024] {
        let candidates: Vec<Candidate> = (0..queued)
            .map(|i| Candidate {
                rows: 1 + i % 3,
                shape_key: 7,
                arrived: now - Duration::from_micros(i as u64),
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(queued), &candidates, |b, cands| {
            b.iter(|| decide(&config, cands.iter().copied(), &arrivals, now))
        });
    }
    g.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
