//! Neuron segmentation the BANIS way: train a MedNeXt to predict six affinities (offsets 1
//! and 10 per axis), predict a validation and a test volume, pick the decode threshold by
//! NERL on validation, then decode the test volume with em-decode and score it (VOI,
//! adapted Rand, ERL/NERL against skeletons).
//!
//! ```text
//! cargo run --release --example neurons                        # synthetic neurons, CPU
//! cargo run --release --example neurons -- --data data/nisb    # NISB: train/val/test.zarr
//! cargo run --release --example neurons -- --set steps=600 --out runs/neurons
//! ```
//!
//! Without arguments it trains the `neurons_cpu` preset on a synthetic neuron volume; its
//! skeletons are the cells' section centroids. With `--data DIR` it reads
//! `DIR/{train,val,test}.zarr` (`img`, `seg`) with the `banis_s` preset (`--preset` to
//! change) and, where present, `DIR/{val,test}_skeletons.json` (or SWC directories
//! `DIR/{val,test}_skeletons/`).
//!
//! Writes `slices.png` (image | ground truth | segmentation), `loss.png`, `metrics.jsonl`,
//! checkpoints and `model.safetensors` to `--out` (default `runs/neurons`); the last stdout
//! line is one JSON object with the chosen threshold and the test scores.

use std::time::Instant;

use em_connectomics::core::{NoProgress, VoxelSize};
use em_connectomics::data::{SourceConfig, SynthKind, TargetSpec};
use em_connectomics::io::png::line_chart;
use em_connectomics::metrics::Skeletons;
use em_connectomics::train::evaluation::{
    decode, load_volume, score_affinities, section_skeletons,
};
use em_connectomics::train::{train_on, Device, RunOptions, TrainConfig};
use ndarray::{Array3, Axis};
use serde_json::json;

/// The validation and test volumes with their skeletons.
fn held_out(a: &Args, cfg: &TrainConfig) -> Result<[(SourceConfig, Option<Skeletons>); 2], String> {
    let Some(dir) = &a.data else {
        let synthetic = |seed| SourceConfig::Synthetic {
            synth: SynthKind::Neurons,
            shape: [32, 160, 160],
            seed,
        };
        return Ok([(synthetic(100), None), (synthetic(1), None)]);
    };
    let voxel = cfg.validation.as_ref().map_or([1.0; 3], |v| v.voxel_size);
    let vs = VoxelSize::new(voxel).map_err(|e| e.to_string())?;
    let one = |name: &str| -> Result<(SourceConfig, Option<Skeletons>), String> {
        let source = SourceConfig::Nisb {
            path: dir.join(format!("{name}.zarr")),
        };
        let skeletons = [
            dir.join(format!("{name}_skeletons.json")),
            dir.join(format!("{name}_skeletons")),
        ]
        .into_iter()
        .find(|p| p.exists())
        .map(|p| Skeletons::read(&p, vs).map_err(|e| e.to_string()))
        .transpose()?;
        Ok((source, skeletons))
    };
    Ok([one("val")?, one("test")?])
}

mod common;

use common::{opener, Args};

fn run(
    cfg: &TrainConfig,
    a: &Args,
    device: Device,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let TargetSpec::Affinities { offsets, storage } = &cfg.targets else {
        return Err("this example trains affinities (targets.kind = \"affinities\")".into());
    };
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("config.toml"), toml::to_string(cfg)?)?;
    // The held-out volumes are read first: a missing file fails before training.
    let [(val_source, val_skel), (test_source, test_skel)] = held_out(a, cfg)?;
    let val = load_volume(&val_source, &cfg.targets, &opener)?;
    let test = load_volume(&test_source, &cfg.targets, &opener)?;
    let (val_image, val_labels) = (val.image, val.labels);
    let (test_image, test_labels) = (test.image, test.labels);
    let voxel = cfg.validation.as_ref().map_or([1.0; 3], |v| v.voxel_size);
    let val_skel = match val_skel {
        Some(s) => Some(s),
        None if a.data.is_none() => Some(section_skeletons(&val_labels, voxel)?),
        None => None,
    };
    let test_skel = match test_skel {
        Some(s) => Some(s),
        None if a.data.is_none() => Some(section_skeletons(&test_labels, voxel)?),
        None => None,
    };

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

    // BANIS's sweep, sigmoid(0.2k) for k = −1..11, and a few lower values for weak models.
    let mut thresholds: Vec<f32> = vec![0.1, 0.2, 0.3, 0.4];
    thresholds.extend((-1..=11).map(|k| 1.0 / (1.0 + (-0.2 * k as f32).exp())));
    let settings = cfg.inference_config();
    let k = cfg.targets.channels();
    eprintln!("predicting the validation volume {:?} …", val_image.dim());
    let val_pred = model.predict(&val_image, k, &settings, &NoProgress)?;
    let sweep = score_affinities(
        val_pred.view(),
        val_labels.view(),
        offsets,
        *storage,
        &thresholds,
        val_skel.as_ref(),
    )?;
    let best = sweep
        .iter()
        .max_by(|x, y| x.rank().total_cmp(&y.rank()))
        .ok_or("no threshold")?;
    let threshold = best.threshold;
    eprintln!(
        "validation: threshold {threshold:.4} (NERL {:?}, VOI {:.3})",
        best.erl.as_ref().map(|e| e.nerl),
        best.voxel.voi
    );

    eprintln!("predicting the test volume {:?} …", test_image.dim());
    let t0 = Instant::now();
    let test_pred = model.predict(&test_image, k, &settings, &NoProgress)?;
    let predict_s = t0.elapsed().as_secs_f64();
    let test = score_affinities(
        test_pred.view(),
        test_labels.view(),
        offsets,
        *storage,
        &[threshold],
        test_skel.as_ref(),
    )?
    .remove(0);
    let seg = decode(test_pred.view(), offsets, *storage, threshold)?;
    let test_gray: Array3<f32> = test_image.index_axis(Axis(0), 0).to_owned();
    common::slices_png(
        &test_gray,
        [&test_labels, &seg],
        false,
        "image | ground truth | segmentation",
        &a.out.join("slices.png"),
    )?;
    line_chart("training loss per step", &log.losses, 720, 360).save_png(a.out.join("loss.png"))?;
    let segments = {
        let mut ids: Vec<u32> = seg.iter().copied().filter(|&v| v != 0).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    Ok(json!({
        "threshold": threshold,
        "voi": test.voxel.voi, "voi_split": test.voxel.voi_split, "voi_merge": test.voxel.voi_merge,
        "arand": test.voxel.arand,
        "erl": test.erl.as_ref().map(|e| e.erl), "nerl": test.erl.as_ref().map(|e| e.nerl),
        "segments": segments, "validation_sweep": sweep.iter().map(|s| json!({
            "threshold": s.threshold, "voi": s.voxel.voi, "arand": s.voxel.arand,
            "nerl": s.erl.as_ref().map(|e| e.nerl)})).collect::<Vec<_>>(),
        "steps": trained.step, "final_loss": log.losses.last(),
        "train_seconds": train_s, "predict_seconds": predict_s,
        "seconds": start.elapsed().as_secs_f64(), "out": a.out.display().to_string(),
    }))
}

fn main() -> std::process::ExitCode {
    em_connectomics::core::keep_freed_memory();
    let a = match common::args("neurons", "runs/neurons") {
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
    let preset = a.preset.clone().unwrap_or_else(|| {
        if a.data.is_some() || gpu {
            "banis_s"
        } else {
            "neurons_cpu"
        }
        .to_string()
    });
    let mut set = a.set.clone();
    if let Some(dir) = &a.data {
        let p = |n: &str| dir.join(n).display().to_string();
        set.insert(
            0,
            format!(
                "data.sources=[{{ source = {{ kind = \"nisb\", path = {:?} }} }}]",
                p("train.zarr")
            ),
        );
        set.insert(
            1,
            format!(
                "validation.source={{ kind = \"nisb\", path = {:?} }}",
                p("val.zarr")
            ),
        );
    }
    let result = TrainConfig::load(&preset, &set)
        .map_err(Into::into)
        .and_then(|cfg| {
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
