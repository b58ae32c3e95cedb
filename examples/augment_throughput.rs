//! Times augmentation presets per patch on one thread, for `tools/bench-augment` (which runs
//! the MONAI/scipy equivalents in the same run).
//!
//! ```text
//! cargo run --release --example augment_throughput -- [SIDE=128] [REPEATS=20] [PRESETS=realistic,banis]
//! ```
//! Prints one JSON line per preset: mean and best milliseconds per patch over `REPEATS`
//! fresh copies of one sample (image + instance labels), seeds 0, 1, …

use std::time::Instant;

use em_connectomics::augment::{Pipeline, Sample};
use ndarray::{Array3, Array4};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let side: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(128);
    let repeats: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let presets = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "realistic,banis".into());
    let image = Array4::from_shape_fn((1, side, side, side), |(_, z, y, x)| {
        (((z * 31 + y * 17 + x * 7) % 101) as f32 / 100.0).clamp(0.0, 1.0)
    });
    let label = Array3::from_shape_fn((side, side, side), |(z, y, x)| {
        (1 + (z / 8) * 256 + (y / 8) * 16 + x / 8) as u32
    });
    let sample = Sample::new(image).with_label(label);
    for name in presets.split(',') {
        let pipeline = Pipeline::load(name)?;
        pipeline.apply_seeded(&mut sample.clone(), u64::MAX)?;
        let (mut total, mut best) = (0f64, f64::INFINITY);
        for seed in 0..repeats {
            let mut s = sample.clone();
            let t = Instant::now();
            pipeline.apply_seeded(&mut s, seed)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            total += ms;
            best = best.min(ms);
        }
        println!(
            "{{\"preset\": \"{name}\", \"side\": {side}, \"repeats\": {repeats}, \"ms_per_patch\": {:.2}, \"min_ms\": {best:.2}, \"implementation\": \"em-augment\"}}",
            total / repeats as f64
        );
    }
    Ok(())
}
