//! Target computation for a 128³ patch (+ BANIS's 10-voxel context): 6-connected
//! relabelling and BANIS's six affinities with masks, boundaries, signed distance.
//! The loader's end-to-end patches/s: `cargo run --release --example loader_throughput`.
//!
//! `cargo bench -p em-data --bench targets`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use em_core::{AffinityOffsets, EdgeStorage};
use em_data::{synth, targets};

fn bench(c: &mut Criterion) {
    let v = synth::neurons(
        [148, 148, 148],
        0,
        &synth::NeuronOptions {
            z_anisotropy: 1.0,
            ..Default::default()
        },
    );
    let mut g = c.benchmark_group("targets");
    g.sample_size(10);
    g.throughput(Throughput::Elements(v.labels.len() as u64));
    g.bench_function("relabel_connected 148³", |b| {
        b.iter(|| targets::relabel_connected(v.labels.view()))
    });
    g.bench_function("affinities banis 148³", |b| {
        b.iter(|| {
            targets::affinities(
                v.labels.view(),
                None,
                &AffinityOffsets::banis(),
                EdgeStorage::Source,
            )
        })
    });
    g.bench_function("boundaries 148³", |b| {
        b.iter(|| targets::boundaries(v.labels.view(), false))
    });
    g.bench_function("signed_distance 148³", |b| {
        b.iter(|| targets::signed_distance(v.labels.view(), [1.0; 3]))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
