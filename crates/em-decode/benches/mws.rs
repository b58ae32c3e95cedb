//! `mutex_watershed` (1 and 2 threads) on synthetic cell affinities in PyTorch
//! Connectomics' 12-channel layout (`MwsOptions::default()`: 3 attractive, 9 repulsive
//! channels up to 27 voxels long): wavy cells of about 16³ voxels, affinity 0.85 inside a
//! cell and 0.15 across a boundary, ±0.3 of deterministic noise, so that boundaries are
//! ambiguous in places and mutexes do real work. Also with strides `[1, 2, 2]`.
//!
//! `cargo bench -p em-decode --bench mws`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use em_decode::{mutex_watershed, MwsOptions};
use ndarray::Array4;

/// Affinities for `offsets` over a `(z, y, x)` volume of wavy cells.
fn cell_affinities(offsets: &[[i64; 3]], [z, y, x]: [usize; 3]) -> Array4<f32> {
    let cell = |p: [i64; 3]| {
        let [pz, py, px] = p.map(|v| v as f32);
        let yy = py + 3.0 * (pz / 5.0).sin();
        let xx = px + 3.0 * (py / 7.0).sin();
        (
            (pz / 16.0).floor() as i64,
            (yy / 16.0).floor() as i64,
            (xx / 16.0).floor() as i64,
        )
    };
    let noise = |i: usize| {
        let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 40;
        (h as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
    };
    Array4::from_shape_fn((offsets.len(), z, y, x), |(c, iz, iy, ix)| {
        let p = [iz as i64, iy as i64, ix as i64];
        let o = offsets[c];
        let q = [p[0] + o[0], p[1] + o[1], p[2] + o[2]];
        let base = if cell(p) == cell(q) { 0.85 } else { 0.15 };
        let i = ((c * z + iz) * y + iy) * x + ix;
        (base + noise(i)).clamp(0.0, 1.0)
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mutex_watershed");
    g.sample_size(10);
    let shape = [32, 128, 128];
    let defaults = MwsOptions::default();
    let aff = cell_affinities(&defaults.offsets, shape);
    g.throughput(Throughput::Elements(shape.iter().product::<usize>() as u64));
    for threads in [1, 2] {
        let options = MwsOptions {
            threads: Some(threads),
            ..defaults.clone()
        };
        g.bench_function(format!("32x128x128_pytc12_{threads}_threads"), |b| {
            b.iter(|| mutex_watershed::<f32, u32>(aff.view(), &options, None).unwrap())
        });
    }
    let strided = MwsOptions {
        threads: Some(1),
        strides: [1, 2, 2],
        ..defaults
    };
    g.bench_function("32x128x128_pytc12_strides_1_2_2_1_thread", |b| {
        b.iter(|| mutex_watershed::<f32, u32>(aff.view(), &strided, None).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
