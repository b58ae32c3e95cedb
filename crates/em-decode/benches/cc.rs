//! `affinity_cc` (1 and 2 threads) on synthetic cell affinities (wavy cells of ~16³ voxels,
//! 0.9 inside / 0.1 across boundaries, ±0.08 deterministic noise).
//!
//! Also `decode_blockwise` between in-memory volumes.
//!
//! `cargo bench -p em-decode --bench cc`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use em_core::{AnyArray, InMemoryVolume, NoProgress};
use em_decode::{affinity_cc, decode_blockwise, CcOptions, DecodeOptions};

mod common;

use common::cell_affinities;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("affinity_cc");
    g.sample_size(10);
    for n in [64usize, 128] {
        let aff = cell_affinities(3, n);
        g.throughput(Throughput::Elements((n * n * n) as u64));
        for threads in [1, 2] {
            let params = CcOptions {
                threads: Some(threads),
                ..CcOptions::default()
            };
            g.bench_function(format!("{n}^3_{threads}_threads_u32"), |b| {
                b.iter(|| affinity_cc::<f32, u32>(aff.view(), &params).unwrap())
            });
        }
    }
    g.finish();
}

/// Blockwise decoding between in-memory volumes: the cost of blocks, halos and stitching
/// without storage codecs.
fn bench_blockwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_blockwise");
    g.sample_size(10);
    let n = 128usize;
    let aff = InMemoryVolume::new(AnyArray::from(cell_affinities(3, n).into_dyn()), "aff");
    g.throughput(Throughput::Elements((n * n * n) as u64));
    for block in [32u64, 64] {
        let out = InMemoryVolume::new(
            AnyArray::from(ndarray::Array3::<u32>::zeros((n, n, n)).into_dyn()),
            "seg",
        )
        .with_chunk_shape(&[block; 3])
        .unwrap();
        let params = DecodeOptions {
            cc: CcOptions {
                threads: Some(1),
                ..CcOptions::default()
            },
            ..DecodeOptions::default()
        };
        g.bench_function(format!("{n}^3_block_{block}_1_thread"), |b| {
            b.iter(|| decode_blockwise(&aff, &out, &params, [block; 3], &NoProgress).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_blockwise);
criterion_main!(benches);
