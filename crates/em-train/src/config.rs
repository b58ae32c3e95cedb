//! The training configuration: one TOML file, every key typed and checked, with
//! `key=value` overrides from the command line.

use serde::{Deserialize, Serialize};

use em_autoconf::Precision;
use em_core::config::{self, Presets};
use em_core::CoreError;
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
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Gradient norm clip (0 = off).
    pub grad_clip: f32,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Schedule after warm-up.
    pub schedule: Schedule,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            weight_decay: 1e-2,
            grad_clip: 1.0,
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
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// Augmentation preset name or TOML path (`"none"` for none).
    #[serde(default = "defaults::augment")]
    pub augment: String,
    /// Log a line every this many steps.
    #[serde(default = "defaults::log_every")]
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
    #[serde(default = "defaults::accumulate")]
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
    #[serde(default = "defaults::precision")]
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
    #[serde(default = "defaults::voxel_size")]
    pub voxel_size: [f64; 3],
    /// Samples per optimizer step that `"auto"` batch and accumulation aim for (default:
    /// `batch_size × accumulate` where the batch is given, else 4).
    #[serde(default)]
    pub effective_batch: Option<usize>,
    /// The keys that were `"auto"` and still wait for [`TrainConfig::resolve_auto`].
    #[serde(skip)]
    pub auto: Vec<String>,
}

/// The values of the keys a config may leave out, for structs with required keys (those
/// whose keys are all optional implement [`Default`]).
mod defaults {
    use em_autoconf::Precision;

    /// [`super::TrainConfig::workers`].
    pub(super) fn workers() -> usize {
        2
    }
    /// [`super::TrainConfig::augment`]: no augmentation.
    pub(super) fn augment() -> String {
        "none".into()
    }
    /// [`super::TrainConfig::log_every`].
    pub(super) fn log_every() -> usize {
        10
    }
    /// [`super::TrainConfig::accumulate`]: no accumulation.
    pub(super) fn accumulate() -> usize {
        1
    }
    /// [`super::TrainConfig::precision`].
    pub(super) fn precision() -> Precision {
        Precision::F32
    }
    /// Isotropic voxels of side 1 ([`super::TrainConfig::voxel_size`],
    /// [`super::ValidationConfig::voxel_size`]).
    pub(super) fn voxel_size() -> [f64; 3] {
        [1.0; 3]
    }
    /// [`super::ValidationConfig::overlap`].
    pub(super) fn validation_overlap() -> [f32; 3] {
        [0.25; 3]
    }
    /// [`super::ValidationConfig::threshold`].
    pub(super) fn validation_threshold() -> f32 {
        0.5
    }
    /// [`super::ValidationConfig::thresholds`].
    pub(super) fn affinity_thresholds() -> Vec<f32> {
        vec![0.3, 0.5, 0.7, 0.9]
    }
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
#[serde(deny_unknown_fields, default)]
pub struct EmaConfig {
    /// Decay per step (0.999 averages about the last thousand steps).
    pub decay: f64,
    /// Steps before averaging starts (the EMA is a copy of the weights until then).
    pub start: usize,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self {
            decay: 0.999,
            start: 0,
        }
    }
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
    #[serde(default = "defaults::validation_overlap")]
    pub overlap: [f32; 3],
    /// Probability threshold for IoU/Dice.
    #[serde(default = "defaults::validation_threshold")]
    pub threshold: f32,
    /// Affinity thresholds tried by the decode (the best NERL, or VOI without skeletons,
    /// is reported).
    #[serde(default = "defaults::affinity_thresholds")]
    pub thresholds: Vec<f32>,
    /// Ground-truth skeletons for ERL/NERL (JSON or SWC, see em-metrics); synthetic neuron
    /// sources derive theirs from the labels.
    #[serde(default)]
    pub skeletons: Option<std::path::PathBuf>,
    /// Voxel size `(z, y, x)` in nm for skeleton edge lengths.
    #[serde(default = "defaults::voxel_size")]
    pub voxel_size: [f64; 3],
}

/// When checkpoints are written and how many are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Every this many steps (0: only at the end and when stopped by a signal).
    pub every: usize,
    /// The newest this many are kept (≥ 1).
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: 100,
            keep: 2,
        }
    }
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
                return Err(TrainError::invalid(
                    "model.preset",
                    format!("must be a name, not {other}"),
                ))
            }
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    let preset = ModelConfig::load(&name)?;
    let mut value = toml::Table::try_from(&preset)
        .map_err(|e| TrainError::invalid("model", format!("{name:?}: {e}")))?;
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

/// [`PRESETS`], for [`em_core::config`].
const TRAIN_PRESETS: Presets = Presets {
    kind: "training",
    builtin: PRESETS,
};

/// The text of a training preset.
pub fn preset(name: &str) -> Option<&'static str> {
    TRAIN_PRESETS.get(name)
}

/// A configuration error of [`em_core::config`] as this crate's: the origin (the preset,
/// file or override) is the name of what is invalid.
fn config_error(e: CoreError) -> TrainError {
    match e {
        CoreError::UnknownPreset { name, known, .. } => TrainError::invalid(
            "preset",
            format!("{name:?} is neither a file nor one of {known}"),
        ),
        CoreError::Config { origin, reason } => TrainError::invalid(origin, reason),
        other => TrainError::invalid("config", other.to_string()),
    }
}

impl TrainConfig {
    /// Parses TOML, applies `key=value` overrides (dotted keys, TOML values; bare words are
    /// strings), and checks the result.
    ///
    /// # Errors
    /// [`TrainError::InvalidParameter`] naming the unknown key, the bad value or the
    /// override.
    pub fn from_toml(text: &str, overrides: &[String]) -> Result<Self> {
        Self::parse(text, "text", overrides)
    }

    /// A preset by name (see [`PRESETS`]) or a TOML file by path, with overrides.
    ///
    /// # Errors
    /// Unknown names (the presets are listed), unreadable files, bad values.
    pub fn load(name_or_path: &str, overrides: &[String]) -> Result<Self> {
        let source = TRAIN_PRESETS.read(name_or_path).map_err(config_error)?;
        Self::parse(&source.text, &source.origin, overrides)
    }

    /// [`TrainConfig::from_toml`] of text from `origin` (named in errors). A model preset
    /// is expanded into its table before the overrides and after each, so that they can
    /// change its keys.
    fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut table = config::parse_table(text, origin).map_err(config_error)?;
        expand_model_preset(&mut table)?;
        for o in overrides {
            config::apply_override(&mut table, o).map_err(config_error)?;
            expand_model_preset(&mut table)?;
        }
        let auto = crate::auto::take_auto(&mut table)?;
        let mut cfg: Self = config::from_table(table, origin).map_err(config_error)?;
        cfg.auto = auto;
        cfg.validate()?;
        Ok(cfg)
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
    /// [`TrainError::InvalidParameter`].
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, reason: String| Err(TrainError::invalid(name, reason));
        if self.steps == 0 || self.batch_size == 0 || self.log_every == 0 {
            return bad(
                "counts",
                format!(
                    "steps {}, batch_size {} and log_every {} must be ≥ 1",
                    self.steps, self.batch_size, self.log_every
                ),
            );
        }
        if self.accumulate == 0 || self.checkpoint.keep == 0 {
            return bad(
                "counts",
                format!(
                    "accumulate {} and checkpoint.keep {} must be ≥ 1",
                    self.accumulate, self.checkpoint.keep
                ),
            );
        }
        if let Some(e) = &self.ema {
            if !(0.0..1.0).contains(&e.decay) {
                return bad("ema.decay", format!("{} must be in [0, 1)", e.decay));
            }
        }
        if let Some(v) = &self.validation {
            if v.every == 0 {
                return bad("validation.every", "must be ≥ 1".into());
            }
            if v.window.is_some_and(|w| w.contains(&0))
                || v.overlap.iter().any(|o| !(0.0..1.0).contains(o))
            {
                return bad(
                    "validation.window",
                    format!(
                        "{:?} (sides ≥ 1) and overlap {:?} (each in [0, 1))",
                        v.window, v.overlap
                    ),
                );
            }
            if v.thresholds.is_empty()
                || v.thresholds
                    .iter()
                    .chain([&v.threshold])
                    .any(|t| !(0.0..1.0).contains(t))
            {
                return bad(
                    "validation.threshold",
                    format!(
                        "{} and thresholds {:?} must lie in [0, 1) (and thresholds be non-empty)",
                        v.threshold, v.thresholds
                    ),
                );
            }
        }
        if self.voxel_size.iter().any(|v| !(v.is_finite() && *v > 0.0))
            || self.effective_batch == Some(0)
        {
            return bad(
                "voxel_size",
                format!(
                    "{:?} must be positive and effective_batch {:?} ≥ 1",
                    self.voxel_size, self.effective_batch
                ),
            );
        }
        if !(self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0) {
            return bad(
                "optimizer.lr",
                format!("{} must be positive", self.optimizer.lr),
            );
        }
        self.validate_learning()
    }

    /// Refuses settings under which training runs but cannot learn: a negative or NaN loss
    /// term, no loss at all, a source that is never (or negatively) drawn, an affinity
    /// offset whose edges never fit in a sample (its loss mask is empty everywhere).
    fn validate_learning(&self) -> Result<()> {
        let bad = |name: &str, reason: String| Err(TrainError::invalid(name, reason));
        let l = &self.loss;
        let weights_ok = [l.bce, l.dice].iter().all(|w| w.is_finite() && *w >= 0.0);
        if !weights_ok || l.bce + l.dice <= 0.0 {
            return bad(
                "loss.bce",
                format!(
                    "{} and loss.dice {} must be finite and ≥ 0, and not both 0 (the loss \
                 would be negative, NaN or nothing to learn from)",
                    l.bce, l.dice
                ),
            );
        }
        let clamp_ok = l.clamp.is_finite() && l.clamp > 0.0;
        if !(clamp_ok && l.smooth.is_finite() && l.smooth >= 0.0) {
            return bad(
                "loss.clamp",
                format!(
                    "{} must be positive and loss.smooth {} ≥ 0",
                    l.clamp, l.smooth
                ),
            );
        }
        if let em_models::PosWeight::Fixed(w) = l.pos_weight {
            if !(w.is_finite() && w > 0.0) {
                return bad(
                    "loss.pos_weight",
                    format!("{w} must be positive (or \"auto\")"),
                );
            }
        }
        let ls = &self.loss_scale;
        if !(ls.initial.is_finite() && ls.initial >= 1.0 && ls.growth_interval > 0) {
            return bad(
                "loss_scale.initial",
                format!(
                    "{} must be finite and ≥ 1, loss_scale.growth_interval {} ≥ 1",
                    ls.initial, ls.growth_interval
                ),
            );
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
                        return bad(
                            "affinity offset",
                            format!(
                                "{:?} reaches beyond a sample (patch {:?} + context \
                             {:?}): none of its edges fits, so its channel would train on an \
                             empty mask; use a larger patch or context, or a shorter offset",
                                o.0, p.patch, p.context
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
