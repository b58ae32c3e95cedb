//! Read/write throughput of em-io's formats on a 64×256×256 uint8 EM-like volume, and the
//! chunk-by-chunk statistics pass behind `em info`.
//!
//! `cargo bench --bench io`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use em_connectomics::core::{AnyArray, NoProgress, Roi, VolumeStats};
use em_connectomics::io::{self, Compression, VolumePath, ZarrOptions};
use ndarray::ArrayD;

fn volume() -> AnyArray {
    let shape = vec![64, 256, 256];
    ArrayD::from_shape_fn(shape, |ix| {
        let h = (ix[0] * 73_856_093) ^ (ix[1] * 19_349_663) ^ (ix[2] * 83_492_791);
        (if (ix[1] / 16 + ix[2] / 16) % 2 == 0 {
            60
        } else {
            170
        } + h % 29) as u8
    })
    .into()
}

fn bench(c: &mut Criterion) {
    let data = volume();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("io_64x256x256_u8");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);

    let npy = dir.path().join("v.npy");
    g.bench_function("npy_write", |b| b.iter(|| io::write(&npy, &data).unwrap()));
    g.bench_function("npy_read", |b| b.iter(|| io::read(&npy).unwrap()));

    let tif = dir.path().join("v.tif");
    g.bench_function("tiff_write", |b| b.iter(|| io::write(&tif, &data).unwrap()));
    g.bench_function("tiff_read", |b| b.iter(|| io::read(&tif).unwrap()));

    for (name, compression) in [("zstd3", Compression::Zstd(3)), ("none", Compression::None)] {
        let vp = VolumePath::parse(dir.path().join(format!("v.zarr/{name}"))).unwrap();
        let opts = ZarrOptions {
            chunk_shape: Some(vec![32, 64, 64]),
            compression,
            version: None,
        };
        g.bench_function(format!("zarr_{name}_write"), |b| {
            b.iter(|| io::write_zarr(&vp, &data, &opts).unwrap())
        });
        let v = io::open(vp.display()).unwrap();
        g.bench_function(format!("zarr_{name}_read"), |b| {
            b.iter(|| v.read_roi(&v.roi()).unwrap())
        });
        let sub = Roi::new([16, 100, 100], [32, 64, 64]).unwrap();
        g.bench_function(format!("zarr_{name}_read_unaligned_32x64x64"), |b| {
            b.iter(|| v.read_roi(&sub).unwrap())
        });
    }
    let v = io::open(dir.path().join("v.zarr/zstd3")).unwrap();
    g.bench_function("stats_zarr_zstd3", |b| {
        b.iter(|| VolumeStats::compute(v.as_ref(), &NoProgress).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
