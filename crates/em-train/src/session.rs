//! A training run in a run directory, as `em train` runs it: the config with its
//! overrides (a resumed run keeps those it was started with), the device checked, `"auto"`
//! values planned, memory checked before any work; then training with the metrics log
//! (JSONL), its CSV tables and curves (PNG), checkpoints and the final weights.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::Value;

use crate::device::check_precision;
use crate::{
    model_cost, resolve_device, train_on, Device, DeviceChoice, Event, Result, RunDir, RunOptions,
    Start, TrainConfig, TrainError,
};

/// What `em train` asks for.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// The config: a preset name or a TOML path.
    pub config: String,
    /// `key=value` overrides given now.
    pub overrides: Vec<String>,
    /// The run directory.
    pub out: PathBuf,
    /// New, resumed, or started again over an old run.
    pub start: Start,
    /// Resume from this checkpoint (or the newest in this directory) instead of the run's
    /// own.
    pub resume_from: Option<PathBuf>,
    /// Where to train.
    pub device: DeviceChoice,
}

/// A run ready to train: everything that can fail before training has been checked, and
/// the run directory is taken.
pub struct Session {
    /// The config, overrides applied and `"auto"` values filled.
    pub cfg: TrainConfig,
    /// The device it trains on.
    pub device: Device,
    /// Why that device (for the user).
    pub device_reason: String,
    /// The plan's lines, when `"auto"` values were planned now.
    pub plan: Vec<String>,
    out: PathBuf,
    run: RunDir,
    resume: Option<PathBuf>,
    records: Vec<Value>,
}

/// How a session ended.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(untagged)]
pub enum SessionOutcome {
    /// A stop was asked for (a signal): a checkpoint was written.
    Stopped {
        /// Always `true`.
        stopped: bool,
        /// Steps done.
        step: usize,
        /// The newest checkpoint.
        checkpoint: Option<PathBuf>,
        /// The command that continues the run.
        #[serde(skip)]
        resume_command: String,
    },
    /// Every step ran; the weights are saved.
    Finished {
        /// Steps done.
        steps: usize,
        /// The last step's loss.
        final_loss: Option<f64>,
        /// The last validation's metrics.
        validation: Option<std::collections::BTreeMap<String, f64>>,
        /// Seconds of training.
        seconds: Option<f64>,
        /// The run directory.
        out: PathBuf,
        /// The device's name.
        device: String,
        /// The final weights (safetensors).
        model: PathBuf,
        /// The newest checkpoint.
        checkpoint: Option<PathBuf>,
        /// The metrics log (JSONL).
        metrics: PathBuf,
        /// The loss curve (PNG).
        loss_curve: PathBuf,
    },
}

fn run_error(what: String) -> impl FnOnce(std::io::Error) -> TrainError {
    move |e| TrainError::Run(format!("{what}: {e}"))
}

/// Peak bytes of a training step on `device` by the planner's memory model; `None` for
/// architectures it has no model of.
pub fn step_memory(cfg: &TrainConfig, device: em_autoconf::Device) -> Option<u64> {
    let cost = model_cost(cfg).ok()?;
    Some(cost.step_bytes(
        device,
        cfg.precision,
        cfg.data.patch.patch,
        cfg.batch_size,
        cfg.checkpointing,
    ))
}

/// Refuses a step that cannot fit the device's memory, naming both figures.
fn check_step_memory(cfg: &TrainConfig, device: Device, hw: &em_autoconf::Hardware) -> Result<()> {
    let step = format!(
        "a training step ({} × {:?} voxels",
        cfg.batch_size, cfg.data.patch.patch
    );
    if let Device::Cuda(i) = device {
        let (Some(needed), Some(gpu)) =
            (step_memory(cfg, em_autoconf::Device::Gpu), hw.gpus.get(i))
        else {
            return Ok(());
        };
        if needed > gpu.free_bytes {
            return Err(TrainError::Run(format!(
                "{step}, {:?}) needs about {} of GPU memory but {} has {} free: set \
                 checkpointing = true, lower batch_size or data.patch.patch, use precision = \
                 \"bf16\"/\"f16\", or let \"auto\" plan them",
                cfg.precision,
                em_autoconf::human_bytes(needed),
                gpu.name,
                em_autoconf::human_bytes(gpu.free_bytes)
            )));
        }
        return Ok(());
    }
    if let Some(needed) = step_memory(cfg, em_autoconf::Device::Cpu) {
        em_autoconf::ensure_memory(
            &format!("{step})"),
            Some(needed),
            "lower batch_size or data.patch.patch, set checkpointing = true, or let \"auto\" \
             plan them",
        )
        .map_err(|e| TrainError::Run(e.to_string()))?;
    }
    Ok(())
}

/// Opens a data volume with em-io, as the trainer's [`crate::Opener`] does for `em train`.
///
/// # Errors
/// The reader's message, naming the file.
pub fn open_volume(p: &Path) -> std::result::Result<Box<dyn em_core::ChunkedVolume>, String> {
    em_io::open(p).map_err(|e| e.to_string())
}

impl Session {
    /// Loads the config, checks the device and memory, plans `"auto"` values, and takes
    /// the run directory (locked; cleared with [`Start::Overwrite`]).
    ///
    /// # Errors
    /// A bad config or override, a device this build or machine lacks, a step that does
    /// not fit, a run directory of another run, a checkpoint of another model.
    pub fn open(opts: &SessionOptions) -> Result<Self> {
        // A resumed run trains with the overrides it was started with (then those given now).
        let overrides = RunDir::overrides_for(&opts.out, opts.start, &opts.overrides)?;
        let mut cfg = TrainConfig::load(&opts.config, &overrides)?;
        // The device is checked before any work: a missing driver or GPU fails here.
        let hw = em_autoconf::probe();
        let (device, device_reason) = resolve_device(opts.device, &hw)?;
        let resume = match (&opts.resume_from, opts.start) {
            (Some(p), _) => Some(p.clone()),
            (None, Start::Resume) => Some(opts.out.join("checkpoints")),
            (None, _) => None,
        };
        // "auto" values: a resumed run keeps the values of its first start; a new one plans.
        let previous = opts.out.join("config.toml");
        let mut plan = Vec::new();
        if !cfg.auto.is_empty() {
            if resume.is_some() && previous.is_file() {
                let prev = TrainConfig::load(&previous.to_string_lossy(), &[]).map_err(|e| {
                    TrainError::Run(format!(
                        "reading the run's config {}: {e}",
                        previous.display()
                    ))
                })?;
                cfg.fill_auto_from(&prev);
            } else if let Some(p) =
                cfg.resolve_auto(&hw, &open_volume, matches!(device, Device::Cuda(_)))?
            {
                plan = p.lines();
            }
        }
        check_precision(device, cfg.precision)?;
        check_step_memory(&cfg, device, &hw)?;
        // The directory is taken (locked, checked, and cleared with --overwrite) only now
        // that the config is known to be good.
        let run = RunDir::open(&opts.out, opts.start, &opts.config, &opts.overrides)?;
        let records = match &resume {
            Some(p) => {
                let ckpt = crate::checkpoint::find(p)?;
                let state = crate::checkpoint::read_state(&ckpt, &cfg)?;
                truncate_log(&opts.out.join("metrics.jsonl"), state.step)?
            }
            None => Vec::new(),
        };
        Ok(Self {
            cfg,
            device,
            device_reason,
            plan,
            out: opts.out.clone(),
            run,
            resume,
            records,
        })
    }

    /// Trains, writing every step and validation to `metrics.jsonl` as it happens and the
    /// CSV tables and curves at the end; `on_event` sees each event (for a progress bar).
    /// Setting `stop` makes it checkpoint and return [`SessionOutcome::Stopped`].
    ///
    /// # Errors
    /// The errors of training, and of writing the logs and weights.
    pub fn train(
        mut self,
        stop: Option<Arc<AtomicBool>>,
        on_event: &mut dyn FnMut(&Event<'_>),
    ) -> Result<SessionOutcome> {
        let log_path = self.out.join("metrics.jsonl");
        let resolved = toml::to_string(&self.cfg)
            .map_err(|e| TrainError::Run(format!("serialising the config: {e}")))?;
        em_io::write_atomic(&self.out.join("config.toml"), resolved.as_bytes())?;
        let mut log = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(self.resume.is_some())
                .write(true)
                .truncate(self.resume.is_none())
                .open(&log_path)
                .map_err(run_error(format!("creating {}", log_path.display())))?,
        );
        let opts = RunOptions {
            checkpoint_dir: Some(self.out.join("checkpoints")),
            resume: self.resume.clone(),
            stop,
        };
        let log_every = self.cfg.log_every;
        let mut write_err = None;
        let records = &mut self.records;
        let mut log_event = |e: Event<'_>| {
            on_event(&e);
            let Some(record) = e.record() else {
                return true;
            };
            let flush = record["event"] != "step"
                || record["step"]
                    .as_u64()
                    .is_some_and(|s| (s as usize).is_multiple_of(log_every));
            let written =
                writeln!(log, "{record}").and_then(|()| if flush { log.flush() } else { Ok(()) });
            records.push(record);
            match written {
                Ok(()) => true,
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            }
        };
        let trained = train_on(self.device, &self.cfg, &open_volume, &opts, &mut log_event);
        let writing = || format!("writing {}", log_path.display());
        log.flush().map_err(run_error(writing()))?;
        if let Some(e) = write_err {
            return Err(run_error(writing())(e));
        }
        let trained = trained?;
        write_summaries(&self.out, &self.records)?;
        if trained.stopped {
            return Ok(SessionOutcome::Stopped {
                stopped: true,
                step: trained.step,
                checkpoint: trained.last_checkpoint.clone(),
                resume_command: self.run.resume_command(),
            });
        }
        let weights = self.out.join("model.safetensors");
        trained.model.save_weights(&weights)?;
        let last = trained.log.last();
        Ok(SessionOutcome::Finished {
            steps: trained.step,
            final_loss: last.map(|l| l.loss),
            validation: trained.validations.last().map(|v| v.metrics.clone()),
            seconds: last.map(|l| l.elapsed_s),
            out: self.out.clone(),
            device: self.device.name(),
            model: weights,
            checkpoint: trained.last_checkpoint.clone(),
            metrics: log_path,
            loss_curve: self.out.join("loss.png"),
        })
    }
}

/// Keeps the JSONL records up to `step` (a resumed run rewrites what came after).
fn truncate_log(path: &Path, step: usize) -> Result<Vec<Value>> {
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
    std::fs::write(path, out).map_err(run_error(format!("rewriting {}", path.display())))?;
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
fn write_summaries(out: &Path, records: &[Value]) -> Result<()> {
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
    let Some(first) = vals.first() else {
        return Ok(());
    };
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
    Ok(())
}
