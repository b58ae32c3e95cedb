//! Times training steps of a training preset on the CPU, for `tools/bench-train` (which
//! runs the same step with PyTorch + MONAI beside it).
//!
//! ```text
//! cargo run --release --example train_step -- [PRESET=lucchi_cpu] [STEPS=12] [KEY=VALUE …]
//! ```
//! Runs `STEPS` steps of the whole loop (loader thread, augmentation, targets, forward,
//! loss, backward, AdamW) with validation and checkpoints off, and prints one JSON line:
//! `step_s` (median seconds per step after the first two), `voxels_per_s`, `patch`,
//! `batch_size`, `parameters`, `peak_rss_bytes`, `losses`.

use std::path::Path;

use burn::module::Module;
use em_connectomics::core::ChunkedVolume;
use em_connectomics::models::CpuTrain;
use em_connectomics::train::{train, Event, RunOptions, TrainConfig};

fn opener(p: &Path) -> Result<Box<dyn ChunkedVolume>, String> {
    em_connectomics::io::open(p).map_err(|e| e.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    em_connectomics::core::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().map_or("lucchi_cpu", String::as_str);
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(12);
    let mut set: Vec<String> = args.iter().skip(2).cloned().collect();
    set.push(format!("steps={steps}"));
    let mut cfg = TrainConfig::load(preset, &set)?;
    cfg.validation = None;
    cfg.checkpoint.every = 0;
    let mut times = Vec::new();
    let mut losses = Vec::new();
    let mut last = 0.0;
    let out = train::<CpuTrain>(
        &cfg,
        &opener,
        &Default::default(),
        &RunOptions::default(),
        &mut |e| {
            if let Event::Step(s) = e {
                times.push(s.elapsed_s - last);
                last = s.elapsed_s;
                losses.push(s.loss);
            }
            true
        },
    )?;
    let mut warm: Vec<f64> = times.iter().skip(2).copied().collect();
    if warm.is_empty() {
        warm = times.clone();
    }
    warm.sort_by(f64::total_cmp);
    let median = warm[warm.len() / 2];
    let voxels =
        (cfg.batch_size * cfg.accumulate * cfg.data.patch.patch.iter().product::<usize>()) as f64;
    println!(
        "{}",
        serde_json::json!({
            "preset": preset, "step_s": median, "voxels_per_s": voxels / median,
            "patch": cfg.data.patch.patch, "batch_size": cfg.batch_size,
            "parameters": out.model.num_params(), "peak_rss_bytes": em_connectomics::core::peak_rss_bytes().unwrap_or(0),
            "steps": times.len(), "losses": losses,
        })
    );
    Ok(())
}
