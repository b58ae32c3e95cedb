//! Checkpoints: a directory per step holding the model, the optimizer's moments, the EMA
//! weights and the loop's position (step, epoch, batch), written under a temporary name and
//! renamed into place so that a killed run never leaves a half-written checkpoint behind.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use em_data::TargetSpec;
use em_models::{Model, ModelConfig};

use crate::{Result, TrainConfig, TrainError};

const FORMAT: u32 = 1;

/// Where the loop stood when a checkpoint was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Checkpoint layout version.
    pub format: u32,
    /// Optimizer steps done.
    pub step: usize,
    /// The epoch of the next batch.
    pub epoch: u64,
    /// The next batch within that epoch.
    pub batch: usize,
    /// Seconds of training before this checkpoint (resumed runs keep counting).
    pub elapsed_s: f64,
    /// The model that wrote it: a checkpoint only loads into the same architecture.
    pub model: ModelConfig,
    /// The targets it learned.
    pub targets: TargetSpec,
    /// Seed of the run (the data order after resuming depends on it).
    pub seed: u64,
    /// Whether `ema.mpk` is present.
    pub ema: bool,
    /// The dynamic loss scale of float16 training (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScaleState>,
}

/// Where float16 training's dynamic loss scale stands.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaleState {
    /// The current scale.
    pub scale: f64,
    /// Good steps in a row since the scale last changed.
    pub good_steps: usize,
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(format!("{}: {e}", path.display()))
}

/// The directory name of the checkpoint after `step`.
pub fn checkpoint_name(step: usize) -> String {
    format!("step-{step:08}")
}

/// Writes a checkpoint into `dir/step-NNNNNNNN` and removes all but the newest `keep`.
///
/// # Errors
/// [`TrainError::Checkpoint`] for I/O and serialisation failures.
pub(crate) fn save<B, O>(
    dir: &Path,
    keep: usize,
    state: &CheckpointState,
    model: &Model<B>,
    optim: &O,
    ema: Option<&Model<B::InnerBackend>>,
) -> Result<PathBuf>
where
    B: AutodiffBackend,
    O: Optimizer<Model<B>, B>,
{
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let name = checkpoint_name(state.step);
    let tmp = dir.join(format!(".{name}.partial"));
    let dest = dir.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
    let rec = recorder();
    model
        .clone()
        .save_file(tmp.join("model"), &rec)
        .map_err(|e| io(&tmp.join("model.mpk"), e))?;
    Recorder::<B>::record(&rec, optim.to_record(), tmp.join("optim"))
        .map_err(|e| io(&tmp.join("optim.mpk"), e))?;
    if let Some(ema) = ema {
        ema.clone()
            .save_file(tmp.join("ema"), &rec)
            .map_err(|e| io(&tmp.join("ema.mpk"), e))?;
    }
    let json = serde_json::to_string_pretty(state).map_err(|e| io(&tmp, e))?;
    std::fs::write(tmp.join("state.json"), json).map_err(|e| io(&tmp.join("state.json"), e))?;
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| io(&dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
    let all = list(dir)?;
    for (_, old) in all.iter().rev().skip(keep) {
        std::fs::remove_dir_all(old).map_err(|e| io(old, e))?;
    }
    Ok(dest)
}

/// The complete checkpoints in `dir`, oldest first, with their steps.
///
/// # Errors
/// An unreadable directory.
pub fn list(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if entry.path().join("state.json").is_file() {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The checkpoint to resume from: `path` itself when it holds `state.json`, else the newest
/// checkpoint in `path` or in `path/checkpoints`.
///
/// # Errors
/// [`TrainError::Checkpoint`] when there is none.
pub fn find(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    for dir in [path.to_path_buf(), path.join("checkpoints")] {
        if let Some((_, p)) = list(&dir)?.pop() {
            return Ok(p);
        }
    }
    Err(TrainError::Checkpoint(format!(
        "{} holds no checkpoint (a step-NNNNNNNN directory with state.json)",
        path.display()
    )))
}

/// Reads a checkpoint's state and checks that it belongs to `cfg`.
///
/// # Errors
/// [`TrainError::Checkpoint`] for unreadable states and for checkpoints of another model or
/// other targets (both named).
pub fn read_state(path: &Path, cfg: &TrainConfig) -> Result<CheckpointState> {
    let file = path.join("state.json");
    let text = std::fs::read_to_string(&file).map_err(|e| io(&file, e))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| io(&file, e))?;
    if state.format != FORMAT {
        return Err(TrainError::Checkpoint(format!(
            "{}: checkpoint format {} (this build reads {FORMAT})",
            file.display(),
            state.format
        )));
    }
    if state.model != cfg.model {
        return Err(TrainError::Checkpoint(format!(
            "{} was written by another model:\n  checkpoint: {:?}\n  config:     {:?}",
            path.display(),
            state.model,
            cfg.model
        )));
    }
    if state.targets != cfg.targets {
        return Err(TrainError::Checkpoint(format!(
            "{} learned other targets: {:?}, the config asks for {:?}",
            path.display(),
            state.targets,
            cfg.targets
        )));
    }
    Ok(state)
}

/// A new state record.
pub(crate) fn state(
    cfg: &TrainConfig,
    step: usize,
    epoch: u64,
    batch: usize,
    elapsed_s: f64,
) -> CheckpointState {
    CheckpointState {
        format: FORMAT,
        step,
        epoch,
        batch,
        elapsed_s,
        model: cfg.model.clone(),
        targets: cfg.targets.clone(),
        seed: cfg.seed,
        ema: cfg.ema.is_some(),
        loss_scale: None,
    }
}

/// A model, its optimizer and its EMA, as restored from a checkpoint.
pub(crate) type Restored<B, O> = (
    Model<B>,
    O,
    Option<Model<<B as AutodiffBackend>::InnerBackend>>,
);

/// Loads the model, optimizer and EMA of a checkpoint into freshly built ones.
pub(crate) fn load<B, O>(
    path: &Path,
    model: Model<B>,
    optim: O,
    ema: Option<Model<B::InnerBackend>>,
    device: &B::Device,
) -> Result<Restored<B, O>>
where
    B: AutodiffBackend,
    O: Optimizer<Model<B>, B>,
{
    let rec = recorder();
    let model = model
        .load_file(path.join("model"), &rec, device)
        .map_err(|e| io(&path.join("model.mpk"), e))?;
    let orec = Recorder::<B>::load(&rec, path.join("optim"), device)
        .map_err(|e| io(&path.join("optim.mpk"), e))?;
    let optim = optim.load_record(orec);
    let ema = match ema {
        Some(e) if path.join("ema.mpk").is_file() => Some(
            e.load_file(path.join("ema"), &rec, device)
                .map_err(|e| io(&path.join("ema.mpk"), e))?,
        ),
        other => other,
    };
    Ok((model, optim, ema))
}

/// The weights to predict with from a checkpoint directory (or the newest one under a
/// directory): its EMA when it has one, else its model, loaded into `cfg`'s architecture on
/// any backend.
///
/// # Errors
/// No checkpoint, a checkpoint of another model, unreadable files.
pub fn load_for_inference<B: burn::tensor::backend::Backend>(
    path: &Path,
    cfg: &TrainConfig,
    device: &B::Device,
) -> Result<Model<B>> {
    let path = find(path)?;
    let state = read_state(&path, cfg)?;
    let model: Model<B> = cfg.model.build(device)?;
    let name = if state.ema && path.join("ema.mpk").is_file() {
        "ema"
    } else {
        "model"
    };
    model
        .load_file(path.join(name), &recorder(), device)
        .map_err(|e| io(&path.join(format!("{name}.mpk")), e))
}
