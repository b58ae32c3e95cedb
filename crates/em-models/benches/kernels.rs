//! The fused CPU kernels behind MedNeXt's training step, one layer at the shape of the
//! `lucchi_cpu` preset's first stage (batch 2, 32 channels, 16×64×64) and of MedNeXt-S's
//! first stage at 64³ (batch 1, 32 channels).
//!
//! `cargo bench -p em-models --bench kernels` (RAYON_NUM_THREADS sets the threads)

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use em_models::kernels::{
    depthwise_backward_input, depthwise_backward_weight, depthwise_forward, group_norm_backward,
    group_norm_forward, pointwise_backward_input, pointwise_backward_weight, pointwise_forward,
    DepthwiseShape, NormShape, PointwiseShape,
};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            (h % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

const CASES: [(&str, usize, [usize; 3]); 2] = [
    ("b2_16x64x64", 2, [16, 64, 64]),
    ("b1_64x64x64", 1, [64, 64, 64]),
];
const C: usize = 32;

fn depthwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("depthwise_k3");
    for (name, n, dims) in CASES {
        let s = DepthwiseShape {
            n,
            c: C,
            dims,
            k: 3,
        };
        let len = n * C * dims.iter().product::<usize>();
        let (x, w, dy) = (values(len, 1), values(C * 27, 2), values(len, 3));
        let mut out = vec![0.0; len];
        let mut dw = vec![0.0; C * 27];
        let mut db = vec![0.0; C];
        g.throughput(Throughput::Elements(len as u64));
        g.bench_with_input(BenchmarkId::new("forward", name), &s, |b, &s| {
            b.iter(|| assert!(depthwise_forward(&x, &w, None, s, &mut out)))
        });
        g.bench_with_input(BenchmarkId::new("backward_input", name), &s, |b, &s| {
            b.iter(|| assert!(depthwise_backward_input(&dy, &w, s, &mut out)))
        });
        g.bench_with_input(BenchmarkId::new("backward_weight", name), &s, |b, &s| {
            b.iter(|| {
                assert!(depthwise_backward_weight(
                    &x,
                    &dy,
                    s,
                    &mut dw,
                    Some(&mut db)
                ))
            })
        });
    }
    g.finish();
}

fn pointwise(c: &mut Criterion) {
    // MedNeXt's expansion layer: C → 4C, and its gradients.
    let mut g = c.benchmark_group("pointwise_32to128");
    for (name, n, dims) in CASES {
        let v = dims.iter().product::<usize>();
        let s = PointwiseShape {
            n,
            ci: C,
            co: 4 * C,
            v,
        };
        let (x, w, dy) = (
            values(n * C * v, 1),
            values(4 * C * C, 2),
            values(n * 4 * C * v, 3),
        );
        let mut out = vec![0.0; n * 4 * C * v];
        let mut dx = vec![0.0; n * C * v];
        let mut dw = vec![0.0; 4 * C * C];
        let mut db = vec![0.0; 4 * C];
        g.throughput(Throughput::Elements((n * v) as u64));
        g.bench_with_input(BenchmarkId::new("forward", name), &s, |b, &s| {
            b.iter(|| assert!(pointwise_forward(&x, &w, None, s, &mut out)))
        });
        g.bench_with_input(BenchmarkId::new("backward_input", name), &s, |b, &s| {
            b.iter(|| assert!(pointwise_backward_input(&dy, &w, s, &mut dx)))
        });
        g.bench_with_input(BenchmarkId::new("backward_weight", name), &s, |b, &s| {
            b.iter(|| {
                assert!(pointwise_backward_weight(
                    &x,
                    &dy,
                    s,
                    &mut dw,
                    Some(&mut db)
                ))
            })
        });
    }
    g.finish();
}

fn group_norm(c: &mut Criterion) {
    // MedNeXt normalises each channel on its own (groups = channels).
    let mut g = c.benchmark_group("group_norm");
    for (name, n, dims) in CASES {
        let v = dims.iter().product::<usize>();
        let s = NormShape {
            n,
            c: C,
            groups: C,
            v,
        };
        let len = n * C * v;
        let (x, dy) = (values(len, 1), values(len, 3));
        let (gamma, beta) = (values(C, 4), values(C, 5));
        let mut out = vec![0.0; len];
        let (mut dgamma, mut dbeta) = (vec![0.0; C], vec![0.0; C]);
        g.throughput(Throughput::Elements(len as u64));
        g.bench_with_input(BenchmarkId::new("forward", name), &s, |b, &s| {
            b.iter(|| assert!(group_norm_forward(&x, &gamma, &beta, s, 1e-5, &mut out)))
        });
        g.bench_with_input(BenchmarkId::new("backward", name), &s, |b, &s| {
            b.iter(|| {
                assert!(group_norm_backward(
                    &x,
                    &gamma,
                    &dy,
                    s,
                    1e-5,
                    (&mut out, &mut dgamma, &mut dbeta)
                ))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = depthwise, pointwise, group_norm
}
criterion_main!(benches);
