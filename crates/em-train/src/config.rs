//! The training configuration: one TOML file, every key typed and checked, with
//! `key=value` overrides from the command line.

use serde::{Deserialize, Serialize};

use em_autoconf::Precision;
use em_data::{DataConfig, SourceConfig, TargetSpec};
use em_models::{LossConfig, ModelConfig, SlidingWindowConfig};

use crate::{Result, TrainError};

/// Learning-rate schedule after warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Cosine decay to 0 at the last step.
    #[default]
    Cosine,
    /// `(1 − t)^0.9` (nnU-Net's poly).
    Poly,
    /// Constant.
    Constant,
}

/// AdamW and its schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    #[serde(default = "lr")]
    pub lr: f64,
    /// Decoupled weight decay.
    #[serde(default = "wd")]
    pub weight_decay: f32,
    /// Gradient norm clip (0 = off).
    #[serde(default = "one")]
    pub grad_clip: f32,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup: usize,
    /// Schedule after warm-up.
    #[serde(default)]
    pub schedule: Schedule,
}

fn lr() -> f64 {
    1e-3
}
fn wd() -> f32 {
    1e-2
}
fn one() -> f32 {
    1.0
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: lr(),
            weight_decay: wd(),
            grad_clip: one(),
            warmup: 0,
            schedule: Schedule::default(),
        }
    }
}

impl OptimizerConfig {
    /// The learning rate at `step` (0-based) of `steps`.
    pub fn lr_at(&self, step: usize, steps: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = steps.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).clamp(0.0, 1.0);
        match self.schedule {
            Schedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            Schedule::Poly => self.lr * (1.0 - t).powf(0.9),
            Schedule::Constant => self.lr,
        }
    }
}

/// A whole training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of every random draw.
    #[serde(default)]
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Loader worker threads.
    #[serde(default = "two")]
    pub workers: usize,
    /// Augmentation preset name or TOML path (`"none"` for none).
    #[serde(default = "none")]
    pub augment: String,
    /// Log a line every this many steps.
    #[serde(default = "ten")]
    pub log_every: usize,
    /// The network.
    pub model: ModelConfig,
    /// The data.
    pub data: DataConfig,
    /// What it predicts.
    pub targets: TargetSpec,
    /// The loss.
    #[serde(default)]
    pub loss: LossConfig,
    /// AdamW and schedule.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Batches whose gradients are summed into one optimizer step (the effective batch is
    /// `batch_size × accumulate`).
    #[serde(default = "one_usize")]
    pub accumulate: usize,
    /// An exponential moving average of the weights, used for validation and saved as the
    /// final model.
    #[serde(default)]
    pub ema: Option<EmaConfig>,
    /// Periodic validation on a held-out volume.
    #[serde(default)]
    pub validation: Option<ValidationConfig>,
    /// Checkpoint interval and retention.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// How `em infer` and the examples predict volumes with the trained model (default: a
    /// patch-sized window, half overlap, Gaussian blending, sigmoid).
    #[serde(default)]
    pub inference: Option<SlidingWindowConfig>,
    /// Activation precision: `"f32"`, or mixed precision on a GPU device — `"bf16"` or
    /// `"f16"` convolutions, matrix products and activations with float32 weights, optimizer
    /// state, GroupNorm statistics and loss (`"auto"`: bf16 from compute capability 8.0,
    /// f16 from 7.0, else f32).
    #[serde(default = "f32_precision")]
    pub precision: Precision,
    /// Dynamic loss scaling for `precision = "f16"`.
    #[serde(default)]
    pub loss_scale: LossScaleConfig,
    /// Gradient checkpointing: recompute cheap activations in the backward pass (54–70% of
    /// the step's memory, measured). The `em` CLI and the examples then train on
    /// `CpuTrainCheckpointed` (`GpuTrainCheckpointed` with `cuda`).
    #[serde(default)]
    pub checkpointing: bool,
    /// Voxel size `(z, y, x)` of the training data in nm: `"auto"` patches follow its
    /// anisotropy.
    #[serde(default = "unit_voxel")]
    pub voxel_size: [f64; 3],
    /// Samples per optimizer step that `"auto"` batch and accumulation aim for (default:
    /// `batch_size × accumulate` where the batch is given, else 4).
    #[serde(default)]
    pub effective_batch: Option<usize>,
    /// The keys that were `"auto"` and still wait for [`TrainConfig::resolve_auto`].
    #[serde(skip)]
    pub auto: Vec<String>,
}

fn f32_precision() -> Precision {
    Precision::F32
}

fn one_usize() -> usize {
    1
}

/// Dynamic loss scaling (float16 training): the loss is multiplied by the scale before the
/// backward pass and the gradients divided by it, so that small gradients survive float16;
/// a step whose gradients overflow is skipped (the weights are not touched), logged, and the
/// scale halves; after `growth_interval` good steps in a row it doubles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossScaleConfig {
    /// The first scale (PyTorch's GradScaler starts at 2¹⁶).
    pub initial: f64,
    /// Good steps in a row before the scale doubles.
    pub growth_interval: usize,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        Self {
            initial: 65536.0,
            growth_interval: 2000,
        }
    }
}

/// Weight averaging: `ema ← decay·ema + (1 − decay)·weights` after every step from `start`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaConfig {
    /// Decay per step (0.999 averages about the last thousand steps).
    #[serde(default = "ema_decay")]
    pub decay: f64,
    /// Steps before averaging starts (the EMA is a copy of the weights until then).
    #[serde(default)]
    pub start: usize,
}

fn ema_decay() -> f64 {
    0.999
}

/// Validation: the model (its EMA when there is one) predicts a whole held-out volume by
/// sliding window; foreground-like targets are scored by IoU/Dice at `threshold`,
/// affinities are decoded at each of `thresholds` and scored by VOI and adapted Rand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Validate every this many steps (and after the last).
    pub every: usize,
    /// The held-out volume with labels.
    pub source: SourceConfig,
    /// Sliding-window side (default: the training patch).
    #[serde(default)]
    pub window: Option<[usize; 3]>,
    /// Window overlap per axis.
    #[serde(default = "quarter")]
    pub overlap: [f32; 3],
    /// Probability threshold for IoU/Dice.
    #[serde(default = "half")]
    pub threshold: f32,
    /// Affinity thresholds tried by the decode (the best NERL, or VOI without skeletons,
    /// is reported).
    #[serde(default = "aff_thresholds")]
    pub thresholds: Vec<f32>,
    /// Ground-truth skeletons for ERL/NERL (JSON or SWC, see em-metrics); synthetic neuron
    /// sources derive theirs from the labels.
    #[serde(default)]
    pub skeletons: Option<std::path::PathBuf>,
    /// Voxel size `(z, y, x)` in nm for skeleton edge lengths.
    #[serde(default = "unit_voxel")]
    pub voxel_size: [f64; 3],
}

fn unit_voxel() -> [f64; 3] {
    [1.0; 3]
}

fn quarter() -> [f32; 3] {
    [0.25; 3]
}
fn half() -> f32 {
    0.5
}
fn aff_thresholds() -> Vec<f32> {
    vec![0.3, 0.5, 0.7, 0.9]
}

/// When checkpoints are written and how many are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Every this many steps (0: only at the end and when stopped by a signal).
    #[serde(default = "hundred")]
    pub every: usize,
    /// The newest this many are kept (≥ 1).
    #[serde(default = "two")]
    pub keep: usize,
}

fn hundred() -> usize {
    100
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: hundred(),
            keep: two(),
        }
    }
}

fn two() -> usize {
    2
}
fn ten() -> usize {
    10
}
fn none() -> String {
    "none".into()
}

/// `model = "mednext_cpu"` names a model preset (or a TOML file), and a `[model]` table
/// with `preset = "…"` starts from one and changes the keys it gives; either becomes the
/// full table so that overrides such as `model.width=16` apply to it.
fn expand_model_preset(table: &mut toml::Table) -> Result<()> {
    let (name, extra) = match table.get("model") {
        Some(toml::Value::String(name)) => (name.clone(), toml::Table::new()),
        Some(toml::Value::Table(t)) => match t.get("preset") {
            Some(toml::Value::String(name)) => {
                let mut extra = t.clone();
                extra.remove("preset");
                (name.clone(), extra)
            }
            Some(other) => {
                return Err(TrainError::Config(format!(
                    "model.preset must be a name, not {other}"
                )))
            }
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    let preset = ModelConfig::load(&name)?;
    let mut value = toml::Table::try_from(&preset)
        .map_err(|e| TrainError::Config(format!("model {name:?}: {e}")))?;
    value.extend(extra);
    table.insert("model".into(), toml::Value::Table(value));
    Ok(())
}

/// The training presets shipped in `presets/train/`, by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("lucchi", include_str!("../../../presets/train/lucchi.toml")),
    (
        "lucchi_cpu",
        include_str!("../../../presets/train/lucchi_cpu.toml"),
    ),
    (
        "banis_s",
        include_str!("../../../presets/train/banis_s.toml"),
    ),
    (
        "banis_l",
        include_str!("../../../presets/train/banis_l.toml"),
    ),
    (
        "neurons_cpu",
        include_str!("../../../presets/train/neurons_cpu.toml"),
    ),
];

/// The text of a training preset.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.0 == name).map(|p| p.1)
}

impl TrainConfig {
    /// Parses TOML, applies `key=value` overrides (dotted keys, TOML values; bare words are
    /// strings), and checks the result.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the unknown key, the bad value or the override.
    pub fn from_toml(text: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| TrainError::Config(e.to_string()))?;
        expand_model_preset(&mut table)?;
        for o in overrides {
            let (key, value) = o
                .split_once('=')
                .ok_or_else(|| TrainError::Config(format!("override {o:?} is not key=value")))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            let mut node = &mut table;
            let parts: Vec<&str> = key.trim().split('.').collect();
            for p in &parts[..parts.len() - 1] {
                node = node
                    .entry(p.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| {
                        TrainError::Config(format!("override {key}: {p} is not a table"))
                    })?;
            }
            node.insert(parts[parts.len() - 1].to_string(), value);
            expand_model_preset(&mut table)?;
        }
        let auto = crate::auto::take_auto(&mut table)?;
        let mut cfg: Self = table
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config(e.to_string()))?;
        cfg.auto = auto;
        cfg.validate()?;
        Ok(cfg)
    }

    /// A preset by name (see [`PRESETS`]) or a TOML file by path, with overrides.
    ///
    /// # Errors
    /// Unknown names (the presets are listed), unreadable files, bad values.
    pub fn load(name_or_path: &str, overrides: &[String]) -> Result<Self> {
        if let Some(text) = preset(name_or_path) {
            return Self::from_toml(text, overrides);
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| {
            TrainError::Config(format!(
                "{name_or_path}: {e} (nor is it a preset: {})",
                PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
            ))
        })?;
        Self::from_toml(&text, overrides)
    }

    /// The sliding-window settings for predicting with this model: `[inference]`, or a
    /// patch-sized window with half overlap; affinity offsets filled from the targets.
    pub fn inference_config(&self) -> SlidingWindowConfig {
        let mut w = self
            .inference
            .clone()
            .unwrap_or_else(|| SlidingWindowConfig::new(self.data.patch.patch));
        if let (None, TargetSpec::Affinities { offsets, .. }) = (&w.offsets, &self.targets) {
            w.offsets = Some(offsets.as_slice().iter().map(|o| o.0).collect());
        }
        w
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// [`TrainError::Config`].
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.steps == 0 || self.batch_size == 0 || self.log_every == 0 {
            return bad(format!(
                "steps {}, batch_size {} and log_every {} must be ≥ 1",
                self.steps, self.batch_size, self.log_every
            ));
        }
        if self.accumulate == 0 || self.checkpoint.keep == 0 {
            return bad(format!(
                "accumulate {} and checkpoint.keep {} must be ≥ 1",
                self.accumulate, self.checkpoint.keep
            ));
        }
        if let Some(e) = &self.ema {
            if !(0.0..1.0).contains(&e.decay) {
                return bad(format!("ema.decay {} must be in [0, 1)", e.decay));
            }
        }
        if let Some(v) = &self.validation {
            if v.every == 0 {
                return bad("validation.every must be ≥ 1".into());
            }
            if v.window.is_some_and(|w| w.contains(&0))
                || v.overlap.iter().any(|o| !(0.0..1.0).contains(o))
            {
                return bad(format!(
                    "validation.window {:?} (sides ≥ 1) and overlap {:?} (each in [0, 1))",
                    v.window, v.overlap
                ));
            }
            if v.thresholds.is_empty()
                || v.thresholds
                    .iter()
                    .chain([&v.threshold])
                    .any(|t| !(0.0..1.0).contains(t))
            {
                return bad(format!(
                    "validation.threshold {} and thresholds {:?} must lie in [0, 1) (and thresholds be non-empty)",
                    v.threshold, v.thresholds
                ));
            }
        }
        if self.voxel_size.iter().any(|v| !(v.is_finite() && *v > 0.0))
            || self.effective_batch == Some(0)
        {
            return bad(format!(
                "voxel_size {:?} must be positive and effective_batch {:?} ≥ 1",
                self.voxel_size, self.effective_batch
            ));
        }
        if !(self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0) {
            return bad(format!(
                "optimizer.lr {} must be positive",
                self.optimizer.lr
            ));
        }
        self.validate_learning()
    }

    /// Refuses settings under which training runs but cannot learn: a negative or NaN loss
    /// term, no loss at all, a source that is never (or negatively) drawn, an affinity
    /// offset whose edges never fit in a sample (its loss mask is empty everywhere).
    fn validate_learning(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        let l = &self.loss;
        let weights_ok = [l.bce, l.dice].iter().all(|w| w.is_finite() && *w >= 0.0);
        if !weights_ok || l.bce + l.dice <= 0.0 {
            return bad(format!(
                "loss.bce {} and loss.dice {} must be finite and ≥ 0, and not both 0 (the loss \
                 would be negative, NaN or nothing to learn from)",
                l.bce, l.dice
            ));
        }
        let clamp_ok = l.clamp.is_finite() && l.clamp > 0.0;
        if !(clamp_ok && l.smooth.is_finite() && l.smooth >= 0.0) {
            return bad(format!(
                "loss.clamp {} must be positive and loss.smooth {} ≥ 0",
                l.clamp, l.smooth
            ));
        }
        if let em_models::PosWeight::Fixed(w) = l.pos_weight {
            if !(w.is_finite() && w > 0.0) {
                return bad(format!(
                    "loss.pos_weight {w} must be positive (or \"auto\")"
                ));
            }
        }
        let ls = &self.loss_scale;
        if !(ls.initial.is_finite() && ls.initial >= 1.0 && ls.growth_interval > 0) {
            return bad(format!(
                "loss_scale.initial {} must be finite and ≥ 1, loss_scale.growth_interval {} ≥ 1",
                ls.initial, ls.growth_interval
            ));
        }
        self.data.validate()?;
        // Placeholder patches of "auto" are checked once the plan has filled them.
        if !self.auto.iter().any(|k| k == "data.patch.patch") {
            if let TargetSpec::Affinities { offsets, .. } = &self.targets {
                let p = &self.data.patch;
                for o in offsets.as_slice() {
                    let beyond =
                        |a: usize| o.0[a].unsigned_abs() as usize >= p.patch[a] + p.context[a];
                    if (0..3).any(beyond) {
                        return bad(format!(
                            "affinity offset {:?} reaches beyond a sample (patch {:?} + context \
                             {:?}): none of its edges fits, so its channel would train on an \
                             empty mask; use a larger patch or context, or a shorter offset",
                            o.0, p.patch, p.context
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
