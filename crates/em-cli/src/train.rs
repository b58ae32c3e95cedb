//! `em train CONFIG.toml`: trains with a progress bar; writes the step and validation logs
//! (JSONL and CSV), loss and metric curves, checkpoints, and the final weights as
//! safetensors (MONAI key names for MedNeXt, so `em model forward` and PyTorch read them).
//! SIGTERM, SIGUSR1 and Ctrl-C make it checkpoint and exit; `--resume` continues exactly.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use em_train::{DeviceChoice, Event, Session, SessionOptions, SessionOutcome, Start};
use indicatif::{ProgressBar, ProgressStyle};

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

/// A line above the progress bar, or on stderr where no bar is drawn (batch jobs' logs).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
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
    let start = match (a.resume || a.resume_from.is_some(), a.overwrite) {
        (true, _) => Start::Resume,
        (false, true) => Start::Overwrite,
        (false, false) => Start::New,
    };
    let session = Session::open(&SessionOptions {
        config: a.config.clone(),
        overrides: a.overrides.iter().chain(&a.set).cloned().collect(),
        out: a.out.clone(),
        start,
        resume_from: a.resume_from.clone(),
        device: a.device,
    })?;
    eprintln!("device: {}", session.device_reason);
    for line in &session.plan {
        eprintln!("plan: {line}");
    }
    let bar = ProgressBar::new(session.cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut last_val = String::new();
    let mut show = |e: &Event<'_>| match e {
        Event::Resumed { step, path } => {
            bar.set_position(*step as u64);
            say(
                &bar,
                format!("resumed from {} at step {step}", path.display()),
            );
            bar.reset_eta();
        }
        Event::Checkpoint { .. } => {}
        Event::Plan(p) => {
            for line in p.lines() {
                say(&bar, format!("plan: {line}"));
            }
        }
        Event::Step(s) => {
            bar.set_position(s.step as u64);
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.0} vox/s{last_val}",
                s.loss, s.lr, s.voxels_per_s
            ));
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
        }
    };
    let steps = session.cfg.steps;
    let outcome = session.train(Some(stop), &mut show);
    bar.finish_and_clear();
    let outcome = outcome?;
    if let SessionOutcome::Stopped {
        step,
        resume_command,
        ..
    } = &outcome
    {
        eprintln!("stopped at step {step} of {steps}; continue with: {resume_command}");
    }
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}
