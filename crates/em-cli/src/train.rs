//! `em train CONFIG.toml`: trains with a progress bar; writes the step and validation logs
//! (JSONL and CSV), loss and metric curves, checkpoints, and the final weights as
//! safetensors (MONAI key names for MedNeXt, so `em model forward` and PyTorch read them).
//! SIGTERM, SIGUSR1 and Ctrl-C make it checkpoint and exit; `--resume` continues exactly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use em_core::ChunkedVolume;
use em_train::{Device, DeviceChoice, Event, RunDir, RunOptions, Start, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// Arguments of `em train`.
#[derive(clap::Args, Debug)]
pub(crate) struct TrainArgs {
    /// The training config (TOML): a path or a preset name (lucchi_cpu, neurons_cpu, …).
    config: String,
    /// Overrides as KEY=VALUE after the config (the same as --set).
    #[arg(value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Output directory: metrics.jsonl/.csv, validation.csv, config.toml (as run),
    /// checkpoints/, model.safetensors, loss.png, validation.png.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Override a config value: --set optimizer.lr=2e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue from the newest checkpoint in OUT/checkpoints, with the overrides the run
    /// was started with (stored in OUT/run.json) and any given now.
    #[arg(long)]
    resume: bool,
    /// Continue from this checkpoint (or the newest in this directory) instead.
    #[arg(long, value_name = "CHECKPOINT", conflicts_with = "resume")]
    resume_from: Option<PathBuf>,
    /// Start again in an OUT that holds a run: its checkpoints, logs and weights are
    /// deleted first (other files make it refuse).
    #[arg(long, conflicts_with_all = ["resume", "resume_from"])]
    overwrite: bool,
    /// Where to train: auto (a GPU when this build has CUDA and one is visible, else the
    /// CPU), cpu, cuda, cuda:N, or wgpu (any Vulkan/Metal/DX12 adapter).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
}

/// Peak bytes of a training step on the CPU or a GPU, by the planner's memory model
/// (saturating at `u64::MAX` for absurd models); `None` for architectures it has no model
/// of.
fn step_memory(cfg: &TrainConfig, device: em_autoconf::Device) -> Option<u64> {
    let cost = em_train::model_cost(cfg).ok()?;
    Some(cost.step_bytes(
        device,
        cfg.precision,
        cfg.data.patch.patch,
        cfg.batch_size,
        cfg.checkpointing,
    ))
}

/// Refuses a step that cannot fit the GPU's free memory, naming both figures.
fn check_gpu_memory(cfg: &TrainConfig, gpu: &em_autoconf::Gpu) -> anyhow::Result<()> {
    let Some(needed) = step_memory(cfg, em_autoconf::Device::Gpu) else {
        return Ok(());
    };
    if needed > gpu.free_bytes {
        anyhow::bail!(
            "a training step ({} × {:?} voxels, {:?}) needs about {} of GPU memory but {} has \
             {} free: set checkpointing = true, lower batch_size or data.patch.patch, use \
             precision = \"bf16\"/\"f16\", or let \"auto\" plan them",
            cfg.batch_size,
            cfg.data.patch.patch,
            cfg.precision,
            em_autoconf::human_bytes(needed),
            gpu.name,
            em_autoconf::human_bytes(gpu.free_bytes)
        );
    }
    Ok(())
}

pub(crate) fn opener(p: &Path) -> Result<Box<dyn ChunkedVolume>, String> {
    em_io::open(p).map_err(|e| e.to_string())
}

/// A line above the progress bar, or on stderr where no bar is drawn (batch jobs' logs).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Keeps the JSONL records up to `step` (a resumed run rewrites what came after).
fn truncate_log(path: &Path, step: usize) -> anyhow::Result<Vec<Value>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let kept: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["step"].as_u64().is_some_and(|s| s as usize <= step))
        .collect();
    let mut out = String::new();
    for v in &kept {
        out.push_str(&v.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("rewriting {}", path.display()))?;
    Ok(kept)
}

fn csv_line(v: &Value, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| match &v[*c] {
            Value::Null => String::new(),
            x => x.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

const STEP_COLUMNS: [&str; 5] = ["step", "loss", "lr", "voxels_per_s", "elapsed_s"];

/// Writes the CSV logs and curves from the JSONL records (all of them, resumed or not).
fn write_summaries(out: &Path, records: &[Value]) -> anyhow::Result<()> {
    let steps: Vec<&Value> = records.iter().filter(|r| r["event"] == "step").collect();
    let vals: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "validation")
        .collect();
    let mut csv = STEP_COLUMNS.join(",") + "\n";
    for s in &steps {
        csv += &(csv_line(s, &STEP_COLUMNS) + "\n");
    }
    em_io::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    let losses: Vec<f64> = steps.iter().filter_map(|s| s["loss"].as_f64()).collect();
    em_io::png::line_chart("training loss per step", &losses, 720, 360)
        .save_png(out.join("loss.png"))?;
    if let Some(first) = vals.first() {
        let mut names: Vec<&str> = first["metrics"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        names.sort_unstable();
        let mut csv = format!("step,{},seconds\n", names.join(","));
        for v in &vals {
            let metrics: Vec<String> = names.iter().map(|n| v["metrics"][*n].to_string()).collect();
            csv += &format!("{},{},{}\n", v["step"], metrics.join(","), v["seconds"]);
        }
        em_io::write_atomic(&out.join("validation.csv"), csv.as_bytes())?;
        let key = if names.contains(&"iou") { "iou" } else { "voi" };
        let series: Vec<f64> = vals
            .iter()
            .filter_map(|v| v["metrics"][key].as_f64())
            .collect();
        em_io::png::line_chart(
            &format!("validation {key} per validation"),
            &series,
            720,
            360,
        )
        .save_png(out.join("validation.png"))?;
    }
    Ok(())
}

pub(crate) fn run(a: &TrainArgs) -> anyhow::Result<()> {
    // First of all: a signal during start-up (a Slurm time-limit warning, say) must stop
    // the run with a checkpoint, not kill the process.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGINT,
    ] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let given: Vec<String> = a.overrides.iter().chain(&a.set).cloned().collect();
    let start = match (a.resume || a.resume_from.is_some(), a.overwrite) {
        (true, _) => Start::Resume,
        (false, true) => Start::Overwrite,
        (false, false) => Start::New,
    };
    // A resumed run trains with the overrides it was started with (then those given now).
    let overrides = RunDir::overrides_for(&a.out, start, &given)?;
    let mut cfg = TrainConfig::load(&a.config, &overrides)?;
    // The device is checked before any work: a missing driver or GPU fails here.
    let hw = em_autoconf::probe();
    let (device, why) = em_train::resolve_device(a.device, &hw)?;
    eprintln!("device: {why}");
    // Everything that can fail before training does so now: a checkpoint of another run,
    // the output directory.
    let log_path = a.out.join("metrics.jsonl");
    let resume = match (&a.resume_from, a.resume) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(a.out.join("checkpoints")),
        (None, false) => None,
    };
    // "auto" values: a resumed run keeps the values of its first start; a new one plans.
    let previous = a.out.join("config.toml");
    if !cfg.auto.is_empty() {
        if resume.is_some() && previous.is_file() {
            let prev = TrainConfig::load(&previous.to_string_lossy(), &[])
                .with_context(|| format!("reading the run's config {}", previous.display()))?;
            cfg.fill_auto_from(&prev);
        } else if let Some(plan) =
            cfg.resolve_auto(&hw, &opener, matches!(device, Device::Cuda(_)))?
        {
            for line in plan.lines() {
                eprintln!("plan: {line}");
            }
        }
    }
    em_train::device::check_precision(device, cfg.precision)?;
    if let Device::Cuda(i) = device {
        check_gpu_memory(&cfg, &hw.gpus[i])?;
    } else if let Some(needed) = step_memory(&cfg, em_autoconf::Device::Cpu) {
        crate::guard::memory(
            &format!(
                "a training step ({} × {:?} voxels)",
                cfg.batch_size, cfg.data.patch.patch
            ),
            Some(needed),
            "lower batch_size or data.patch.patch, set checkpointing = true, or let \"auto\" plan them",
        )?;
    }
    // The directory is taken (locked, checked, and cleared with --overwrite) only now that
    // the config is known to be good.
    let run = RunDir::open(&a.out, start, &a.config, &given)?;
    let mut records = match &resume {
        Some(p) => {
            let ckpt = em_train::checkpoint::find(p)?;
            let state = em_train::checkpoint::read_state(&ckpt, &cfg)?;
            truncate_log(&log_path, state.step)?
        }
        None => Vec::new(),
    };
    let resolved = toml::to_string(&cfg).context("serialising the config")?;
    em_io::write_atomic(&a.out.join("config.toml"), resolved.as_bytes())
        .with_context(|| format!("{} is not writable", a.out.display()))?;
    let mut log = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(resume.is_some())
            .write(true)
            .truncate(resume.is_none())
            .open(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?,
    );

    let opts = RunOptions {
        checkpoint_dir: Some(a.out.join("checkpoints")),
        resume,
        stop: Some(stop),
    };

    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut write_err = None;
    let mut last_val = String::new();
    let mut on_event = |e: Event<'_>| {
        let record = match e {
            Event::Resumed { step, path } => {
                bar.set_position(step as u64);
                say(
                    &bar,
                    format!("resumed from {} at step {step}", path.display()),
                );
                bar.reset_eta();
                return true;
            }
            Event::Checkpoint { .. } => return true,
            Event::Plan(p) => {
                for line in p.lines() {
                    say(&bar, format!("plan: {line}"));
                }
                e.record().unwrap_or_default()
            }
            Event::Step(s) => {
                bar.set_position(s.step as u64);
                bar.set_message(format!(
                    "loss {:.4} lr {:.2e} {:.0} vox/s{last_val}",
                    s.loss, s.lr, s.voxels_per_s
                ));
                e.record().unwrap_or_default()
            }
            Event::Validation(v) => {
                let shown: Vec<String> = v
                    .metrics
                    .iter()
                    .map(|(k, x)| format!("{k} {x:.4}"))
                    .collect();
                last_val = format!(" | val {}", shown.join(" "));
                say(
                    &bar,
                    format!("step {}: validation {}", v.step, shown.join(", ")),
                );
                e.record().unwrap_or_default()
            }
        };
        let flush = record["event"] != "step"
            || record["step"]
                .as_u64()
                .is_some_and(|s| (s as usize).is_multiple_of(cfg.log_every));
        let written =
            writeln!(log, "{record}").and_then(|()| if flush { log.flush() } else { Ok(()) });
        records.push(record);
        if let Err(e) = written {
            write_err = Some(e);
            return false;
        }
        true
    };
    let trained = em_train::train_on(device, &cfg, &opener, &opts, &mut on_event);
    bar.finish_and_clear();
    log.flush()
        .with_context(|| format!("writing {}", log_path.display()))?;
    if let Some(e) = write_err {
        return Err(e).with_context(|| format!("writing {}", log_path.display()));
    }
    let trained = trained?;
    write_summaries(&a.out, &records)?;
    let checkpoint = trained
        .last_checkpoint
        .as_ref()
        .map(|p| p.display().to_string());
    if trained.stopped {
        eprintln!(
            "stopped at step {} of {}; continue with: {}",
            trained.step,
            cfg.steps,
            run.resume_command()
        );
        println!(
            "{}",
            json!({"stopped": true, "step": trained.step, "checkpoint": checkpoint})
        );
        return Ok(());
    }

    let weights = a.out.join("model.safetensors");
    trained.model.save_weights(&weights)?;
    let last = trained.log.last();
    println!(
        "{}",
        json!({"steps": trained.step, "final_loss": last.map(|l| l.loss),
               "validation": trained.validations.last().map(|v| &v.metrics),
               "seconds": last.map(|l| l.elapsed_s), "out": a.out.display().to_string(),
               "device": device.name(),
               "model": weights.display().to_string(), "checkpoint": checkpoint,
               "metrics": log_path.display().to_string(),
               "loss_curve": a.out.join("loss.png").display().to_string()})
    );
    Ok(())
}
