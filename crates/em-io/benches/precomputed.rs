//! Neuroglancer precomputed: compressed_segmentation of one 64³ uint64 label chunk
//! (encode, decode), and writing and reading a 128³ label volume (raw and
//! compressed_segmentation, unsharded and sharded).
//!
//! `cargo bench -p em-io --bench precomputed`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use em_core::{AnyArray, ChunkedVolumeExt};
use em_io::precomputed::{
    cseg, write_precomputed, PrecomputedEncoding, PrecomputedOptions, Sharding,
};
use ndarray::ArrayD;

/// Cells of about 12³ voxels with pseudo-random ids: a few ids per 8³ block, like a
/// segmentation.
fn cells(n: usize) -> ArrayD<u64> {
    ArrayD::from_shape_fn(vec![n, n, n], |ix| {
        let cell = ((ix[0] / 12) * 4096 + (ix[1] / 11) * 64 + ix[2] / 13) as u64;
        cell.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20
    })
}

fn bench(c: &mut Criterion) {
    let chunk = cells(64);
    let values: Vec<u64> = chunk.iter().copied().collect();
    let encoded = cseg::encode(&values, [64, 64, 64], 1, [8, 8, 8]).unwrap();
    let mut g = c.benchmark_group("compressed_segmentation_64");
    g.throughput(Throughput::Elements(64 * 64 * 64));
    g.bench_function("encode_u64", |b| {
        b.iter(|| cseg::encode(&values, [64, 64, 64], 1, [8, 8, 8]).unwrap())
    });
    g.bench_function("decode_u64", |b| {
        b.iter(|| cseg::decode::<u64>(&encoded, [64, 64, 64], 1, [8, 8, 8]).unwrap())
    });
    g.finish();

    let volume = AnyArray::from(cells(128));
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("precomputed_128");
    g.sample_size(10);
    g.throughput(Throughput::Elements(128 * 128 * 128));
    for (name, encoding, sharding) in [
        ("raw", PrecomputedEncoding::Raw, Sharding::Off),
        (
            "cseg",
            PrecomputedEncoding::CompressedSegmentation,
            Sharding::Off,
        ),
        (
            "cseg_sharded",
            PrecomputedEncoding::CompressedSegmentation,
            Sharding::Auto,
        ),
    ] {
        let path = dir.path().join(format!("{name}.precomputed"));
        let options = PrecomputedOptions {
            encoding,
            sharding,
            ..Default::default()
        };
        g.bench_function(format!("write_{name}"), |b| {
            b.iter(|| write_precomputed(&path, &volume, &options).unwrap())
        });
        let written = write_precomputed(&path, &volume, &options).unwrap();
        g.bench_function(format!("read_{name}"), |b| {
            b.iter(|| written.read_all().unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
