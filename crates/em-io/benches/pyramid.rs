//! OME-Zarr pyramid building on a 64×256×256 volume: a u8 image (window means) and u32
//! labels (window modes), 40×4×4 nm voxels, default levels (256 → 128 → 64 in-plane),
//! zarr v3 with zstd, from memory.
//!
//! `cargo bench -p em-io --bench pyramid`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use em_core::{AnyArray, InMemoryVolume, NoProgress};
use em_io::ome::{build_pyramid, PyramidOptions};
use em_io::VolumePath;
use ndarray::ArrayD;

const SHAPE: [usize; 3] = [64, 256, 256];

fn image() -> AnyArray {
    ArrayD::from_shape_fn(SHAPE.to_vec(), |ix| {
        let h = (ix[0] * 73_856_093) ^ (ix[1] * 19_349_663) ^ (ix[2] * 83_492_791);
        (if (ix[1] / 16 + ix[2] / 16) % 2 == 0 {
            60
        } else {
            170
        } + h % 29) as u8
    })
    .into()
}

/// Blob-like segments about 20 voxels across, so that windows hold one to a few ids.
fn labels() -> AnyArray {
    ArrayD::from_shape_fn(SHAPE.to_vec(), |ix| {
        (ix[0] / 8 * 169 + ix[1] / 20 * 13 + ix[2] / 20) as u32 + 1
    })
    .into()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("pyramid_64x256x256");
    g.sample_size(10);
    let options = PyramidOptions {
        voxel_size: Some([40.0, 4.0, 4.0]),
        ..Default::default()
    };
    for (name, data) in [("u8_image", image()), ("u32_labels", labels())] {
        g.throughput(Throughput::Bytes(
            (data.len() * data.dtype().size_bytes()) as u64,
        ));
        let volume = InMemoryVolume::new(data, name)
            .with_chunk_shape(&[64, 64, 64])
            .unwrap();
        let out = VolumePath::parse(dir.path().join(format!("{name}.zarr"))).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| build_pyramid(&volume, &out, &options, &NoProgress).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
