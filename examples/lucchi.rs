//! Mitochondria segmentation end to end, the Lucchi way: train a MedNeXt on a labelled EM
//! volume, predict a held-out test volume, and score foreground IoU/Dice against an
//! intensity threshold tuned on the training volume.
//!
//! ```text
//! cargo run --release --example lucchi                        # built-in synthetic data, CPU
//! cargo run --release --example lucchi -- --data data/lucchi  # EPFL Lucchi++ files
//! cargo run --release --example lucchi -- --out runs/lucchi --set steps=400
//! cargo run --release --features cuda --example lucchi -- --data data/lucchi   # GPU recipe
//! ```
//!
//! Without arguments it trains the `lucchi_cpu` preset (a small MedNeXt that learns on two
//! CPU cores in minutes) on synthetic mitochondria and tests on another synthetic volume.
//! Built with `cuda` and run where an NVIDIA GPU is visible, it uses the `lucchi` preset
//! (PyTC's recipe: MedNeXt-S, 112³ patches, batch 4, 8-flip TTA).
//!
//! The probability threshold is the one with the best IoU on the validation volume (0.5
//! without validation, e.g. with `--data`); the test volume is predicted once, with the
//! preset's test-time augmentation.
//!
//! Writes to `--out` (default `runs/lucchi`): `slices.png` (image | ground truth |
//! prediction at three depths), `loss.png`, `metrics.jsonl`, checkpoints and
//! `model.safetensors`. The last line on stdout is one JSON object with `iou`, `dice`,
//! `threshold`, `iou_at_0.5`, `baseline_iou` and `seconds`.

use std::time::Instant;

use em_connectomics::core::NoProgress;
use em_connectomics::data::{synth, SourceConfig, Split, SynthKind};
use em_connectomics::io::png::line_chart;
use em_connectomics::train::evaluation::{load_volume, score_semantic};
use em_connectomics::train::{train_on, Device, RunOptions, TrainConfig};
use ndarray::{Array3, Array4, Axis};
use serde_json::json;

/// The synthetic test volume: same generator as training, another seed.
const TEST: SourceConfig = SourceConfig::Synthetic {
    synth: SynthKind::Mito,
    shape: [64, 256, 256],
    seed: 1,
};

mod common;

use common::{opener, Args};

fn run(
    cfg: &TrainConfig,
    a: &Args,
    device: Device,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let start = Instant::now();
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("config.toml"), toml::to_string(cfg)?)?;
    let (train_source, test_source) = match &a.data {
        Some(dir) => (
            SourceConfig::Lucchi {
                dir: dir.clone(),
                split: Split::Train,
            },
            SourceConfig::Lucchi {
                dir: dir.clone(),
                split: Split::Test,
            },
        ),
        None => (cfg.data.sources[0].source.clone(), TEST),
    };
    // Read the test volume first: a missing file fails before minutes of training.
    let test = load_volume(&test_source, &cfg.targets, &opener)?;
    let (test_image, test_labels, test_target, test_mask) =
        (test.image, test.labels, test.target, test.mask);

    let mut log = common::Log::new(&a.out, cfg)?;
    let opts = RunOptions {
        checkpoint_dir: Some(a.out.join("checkpoints")),
        ..Default::default()
    };
    let trained = train_on(device, cfg, &opener, &opts, &mut |e| log.event(e))?;
    log.finish()?;
    let train_s = start.elapsed().as_secs_f64();
    let model = &trained.model;
    model.save_weights(&a.out.join("model.safetensors"))?;

    let settings = cfg.inference_config();
    // The probability threshold: the best on the validation volume (predicted the way the
    // test volume is), 0.5 without one. The test volume is never used to choose it.
    let threshold = match &cfg.validation {
        Some(v) => {
            eprintln!("choosing the threshold on the validation volume …");
            let val = load_volume(&v.source, &cfg.targets, &opener)?;
            let p = model.predict(&val.image, 1, &settings, &NoProgress)?;
            best_threshold(&p, &val.target, &val.mask)
        }
        None => 0.5,
    };
    eprintln!(
        "predicting the test volume {:?} (threshold {threshold:.2}) …",
        test_image.dim()
    );
    let t0 = Instant::now();
    let pred = model.predict(&test_image, 1, &settings, &NoProgress)?;
    let predict_s = t0.elapsed().as_secs_f64();
    let score = |t: f32| {
        score_semantic(
            pred.index_axis(Axis(0), 0),
            test_target.index_axis(Axis(0), 0),
            test_mask.index_axis(Axis(0), 0),
            t,
        )
    };
    let scores = score(threshold);

    // The baseline: the intensity threshold that is best on the training volume.
    let train = load_volume(&train_source, &cfg.targets, &opener)?;
    let train_gray: Array3<f32> = train.image.index_axis(Axis(0), 0).to_owned();
    let (train_iou, t) = synth::threshold_baseline_iou(&train_gray, &train.labels);
    let test_gray: Array3<f32> = test_image.index_axis(Axis(0), 0).to_owned();
    let baseline = synth::threshold_iou(&test_gray, &test_labels, t);

    let predicted = pred
        .index_axis(Axis(0), 0)
        .mapv(|p| u32::from(p > threshold));
    common::slices_png(
        &test_gray,
        [&test_labels, &predicted],
        true,
        &format!("image | ground truth | prediction (p > {threshold:.2})"),
        &a.out.join("slices.png"),
    )?;
    line_chart("training loss per step", &log.losses, 720, 360).save_png(a.out.join("loss.png"))?;
    Ok(json!({
        "iou": scores.iou, "dice": scores.dice, "precision": scores.precision,
        "recall": scores.recall, "threshold": threshold, "iou_at_0.5": score(0.5).iou,
        "flip_tta": settings.flip_tta, "baseline_iou": baseline, "baseline_threshold": t,
        "baseline_train_iou": train_iou, "steps": trained.step,
        "final_loss": log.losses.last(), "validation": trained.validations.last().map(|v| &v.metrics),
        "train_seconds": train_s, "predict_seconds": predict_s,
        "seconds": start.elapsed().as_secs_f64(), "out": a.out.display().to_string(),
    }))
}

/// The threshold in 0.10, 0.15, …, 0.90 with the best foreground IoU of `pred` against
/// `target` where `mask` is set.
fn best_threshold(pred: &Array4<f32>, target: &Array4<f32>, mask: &Array4<f32>) -> f32 {
    (2..=18)
        .map(|i| i as f32 * 0.05)
        .map(|t| {
            let s = score_semantic(
                pred.index_axis(Axis(0), 0),
                target.index_axis(Axis(0), 0),
                mask.index_axis(Axis(0), 0),
                t,
            );
            (t, s.iou)
        })
        .fold(
            (0.5, f64::MIN),
            |best, c| if c.1 > best.1 { c } else { best },
        )
        .0
}

fn main() -> std::process::ExitCode {
    em_connectomics::core::keep_freed_memory();
    let a = match common::args("lucchi", "runs/lucchi") {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let device = match common::device(&a) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let gpu = matches!(device, Device::Cuda(_));
    let preset = a
        .preset
        .clone()
        .unwrap_or_else(|| if gpu { "lucchi" } else { "lucchi_cpu" }.to_string());
    let mut set = a.set.clone();
    if let Some(dir) = &a.data {
        // Real Lucchi files: train on the training volume; the test volume is scored after
        // training, never validated on.
        set.insert(
            0,
            format!(
                "data.sources=[{{ source = {{ kind = \"lucchi\", dir = {:?}, split = \"train\" }} }}]",
                dir.display().to_string()
            ),
        );
    }
    let result = TrainConfig::load(&preset, &set)
        .map_err(Into::into)
        .and_then(|mut cfg| {
            if a.data.is_some() {
                cfg.validation = None;
            }
            eprintln!(
                "training {preset} for {} steps on {} → {}",
                cfg.steps,
                device.name(),
                a.out.display()
            );
            run(&cfg, &a, device)
        });
    common::finish(result)
}
