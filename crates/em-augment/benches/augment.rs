//! Presets and the costliest single transforms on a 64³ image + label sample, one thread.
//! `tools/bench-augment` compares the presets with MONAI/scipy at 128³.
//!
//! `cargo bench -p em-augment --bench augment`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use em_augment::{Pipeline, Sample};
use ndarray::{Array3, Array4};

fn sample(n: usize) -> Sample {
    let image = Array4::from_shape_fn((1, n, n, n), |(_, z, y, x)| {
        ((z * 31 + y * 17 + x * 7) % 101) as f32 / 100.0
    });
    let label = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        (1 + (z / 8) * 256 + (y / 8) * 16 + x / 8) as u32
    });
    Sample::new(image).with_label(label)
}

fn single(step: &str, anisotropic: bool) -> Pipeline {
    let text = format!("anisotropic = {anisotropic}\n[[transforms]]\n{step}\np = 1.0\n");
    Pipeline::from_toml(&text, "bench").expect("valid step")
}

fn bench(c: &mut Criterion) {
    let n = 64;
    let base = sample(n);
    let mut g = c.benchmark_group("augment");
    g.sample_size(20);
    g.throughput(Throughput::Elements((n * n * n) as u64));
    let mut cases: Vec<(String, Pipeline)> = ["light", "realistic", "banis"]
        .iter()
        .map(|p| (format!("preset {p}"), Pipeline::load(p).expect("preset")))
        .collect();
    cases.push((
        "affine 3-D".into(),
        single(
            "type = \"affine\"\nrotation = [180.0, 180.0, 180.0]\nscale = 0.2\nshear = 0.5",
            false,
        ),
    ));
    cases.push((
        "elastic".into(),
        single(
            "type = \"elastic\"\nsigma = [6.0, 10.0]\nalpha = [20.0, 60.0]",
            true,
        ),
    ));
    cases.push((
        "flips + rot90".into(),
        Pipeline::from_toml(
            "[[transforms]]\ntype = \"flip\"\naxes = [\"z\", \"x\"]\n[[transforms]]\ntype = \"rot90\"\n",
            "bench",
        )
        .expect("valid"),
    ));
    for (name, p) in &cases {
        let mut seed = 0u64;
        g.bench_function(name.as_str(), |b| {
            b.iter_batched(
                || base.clone(),
                |mut s| {
                    seed += 1;
                    p.apply_seeded(&mut s, seed).expect("fits");
                    s
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
