//! Contingency + VOI/Rand on 128³ label pairs, and ERL on a synthetic skeleton set.
//!
//! `cargo bench -p em-metrics --bench metrics`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use em_metrics::{erl, Contingency, Node, Skeletons, VoxelMetrics};
use ndarray::Array3;

fn pair(n: usize) -> (Array3<u32>, Array3<u64>) {
    let gt = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        ((z / 16) * 10_000 + (y / 20) * 100 + x / 24 + 1) as u32
    });
    let pred = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        (((z + 3) / 16) * 10_000 + ((y + 5) / 18) * 100 + x / 30) as u64
    });
    (gt, pred)
}

/// 1,000 straight skeletons of 100 nodes each and a prediction that splits every tenth.
fn skeletons() -> (Skeletons, Vec<u64>) {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let mut pred = Vec::new();
    for s in 0..1000u64 {
        for i in 0..100u64 {
            let id = s * 100 + i;
            let p = [i as f64, s as f64, 0.0];
            nodes.push(Node {
                id,
                skeleton: s + 1,
                position: p,
                position_nm: p,
            });
            if i > 0 {
                edges.push([id - 1, id]);
            }
            pred.push(if s % 10 == 0 && i >= 50 {
                5000 + s
            } else {
                s / 3 + 1
            });
        }
    }
    (Skeletons::new(nodes, &edges, "bench").unwrap(), pred)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    g.sample_size(10);
    let n = 128;
    let (gt, pred) = pair(n);
    g.throughput(Throughput::Elements((n * n * n) as u64));
    g.bench_function("voi_rand_128^3", |b| {
        b.iter(|| {
            VoxelMetrics::from_contingency(&Contingency::new(gt.view(), pred.view()).unwrap())
                .unwrap()
        })
    });
    let (s, p) = skeletons();
    g.throughput(Throughput::Elements(p.len() as u64));
    g.bench_function("erl_100k_nodes_4_thresholds", |b| {
        b.iter(|| erl(&s, &p, &[Some(5), Some(20), Some(100), None]).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
