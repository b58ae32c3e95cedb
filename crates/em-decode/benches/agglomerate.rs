//! waterz agglomeration (mean and hist50, three thresholds) on clean and noisy cell
//! affinities, whole volume and block by block. Side by side with waterz itself:
//! `tools/bench-agglomerate`.

mod common;

use common::cell_affinities;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use em_core::{AnyArray, InMemoryVolume, NoProgress};
use em_decode::waterz::{agglomerate, agglomerate_blockwise, Scoring, WaterzOptions};
use ndarray::Array4;

/// `cell_affinities` with extra uniform noise of ±`noise` (clipped to [0, 1]), which
/// splits the watershed into many more fragments.
fn noisy(n: usize, noise: f32) -> Array4<f32> {
    let mut a = cell_affinities(3, n);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    a.mapv_inplace(|v| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let u = (state >> 40) as f32 / (1u64 << 24) as f32;
        (v + (2.0 * u - 1.0) * noise).clamp(0.0, 1.0)
    });
    a
}

fn bench(c: &mut Criterion) {
    let n = 64;
    let mut group = c.benchmark_group("waterz");
    group.sample_size(10);
    for (name, aff) in [("cells", cell_affinities(3, n)), ("noisy", noisy(n, 0.4))] {
        for scoring in ["mean", "hist50"] {
            let opts = WaterzOptions {
                thresholds: vec![0.1, 0.3, 0.5],
                scoring: Scoring::parse(scoring).unwrap(),
                storage: em_core::EdgeStorage::Source,
                threads: Some(1),
                ..WaterzOptions::default()
            };
            group.bench_function(BenchmarkId::new(format!("{name}_{scoring}"), n), |b| {
                b.iter(|| agglomerate::<u32>(aff.view(), None, &opts, |_| Ok(())).unwrap())
            });
        }
        let opts = WaterzOptions {
            thresholds: vec![0.1, 0.3, 0.5],
            storage: em_core::EdgeStorage::Source,
            threads: Some(1),
            ..WaterzOptions::default()
        };
        let input = InMemoryVolume::new(AnyArray::from(aff.clone().into_dyn()), "aff");
        group.bench_function(BenchmarkId::new(format!("{name}_blockwise_32"), n), |b| {
            b.iter(|| {
                agglomerate_blockwise(
                    &input,
                    None,
                    &opts,
                    [32, 32, 32],
                    8,
                    &NoProgress,
                    |_| Ok(()),
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
