//! Training for EM segmentation: a typed TOML configuration (presets in `presets/train/`,
//! `key=value` overrides, unknown keys refused) and a training loop on burn — AdamW with
//! warm-up and cosine/poly decay, gradient clipping and accumulation, an EMA of the weights,
//! BCE + Dice with masks and deep supervision — fed by the em-data loader, with periodic
//! validation (IoU/Dice, or decoded affinities' VOI/ARAND/NERL), atomic checkpoints and
//! exact resumption.
//!
//! ```
//! use em_train::TrainConfig;
//!
//! let text = r#"
//! steps = 10
//! batch_size = 1
//! [model]
//! arch = "mednext_custom"
//! in_channels = 1
//! out_channels = 1
//! width = 4
//! ratios = [1, 1, 1, 1, 1, 1, 1, 1, 1]
//! blocks = [1, 1, 1, 1, 1, 1, 1, 1, 1]
//! [data]
//! patch = { patch = [16, 16, 16] }
//! [[data.sources]]
//! source = { kind = "synthetic", synth = "mito", shape = [16, 48, 48] }
//! [targets]
//! kind = "foreground"
//! "#;
//! let cfg = TrainConfig::from_toml(text, &["optimizer.lr=2e-3".into()])?;
//! assert_eq!(cfg.optimizer.lr, 2e-3);
//! assert!(TrainConfig::from_toml(text, &["optimiser.lr=1".into()]).is_err());
//! # Ok::<(), em_train::TrainError>(())
//! ```

mod auto;
pub mod checkpoint;
mod config;
pub mod device;
mod distributed;
mod ema;
pub mod evaluation;
mod predict;
mod run_dir;
mod session;
mod trainer;
mod tune;

pub use auto::{model_cost, AUTO_KEYS};
pub use config::{
    preset, CheckpointConfig, EmaConfig, LossScaleConfig, OptimizerConfig, Schedule, TrainConfig,
    ValidationConfig, PRESETS,
};
pub use device::{
    on_device, resolve as resolve_device, train_on, Device, DeviceChoice, DeviceTrained, OnDevice,
    TrainedModel,
};
pub use distributed::{
    load_model, predict_task, prepare_distributed_decode, PredictOptions, PredictReport,
};
pub use evaluation::{ValidationLog, Validator};
pub use predict::{PredictVolumeOptions, PredictVolumeReport, Tta, VolumePrediction};
pub use run_dir::{RunDir, RunRecord, Start, RUN_FILES};
pub use session::{open_volume, step_memory, Session, SessionOptions, SessionOutcome};
pub use trainer::{train, Event, Opener, RunOptions, StepLog, TrainBackend, Trained};
pub use tune::{
    default_thresholds, tune_thresholds, TuneMethod, TuneOptions, TuneReport, TuneRow,
    MAX_THRESHOLDS, TUNE_MERGE_THRESHOLDS,
};

/// Why training could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value (or an override) is invalid.
    #[error("training config: {name}: {reason}")]
    InvalidParameter {
        /// The key (`optimizer.lr`, `override "steps"`, the preset or file), or what is
        /// invalid where no single key is (`device`, `precision`, `counts`).
        name: String,
        /// Why, and what is allowed.
        reason: String,
    },
    /// Data could not be produced.
    #[error(transparent)]
    Data(#[from] em_data::DataError),
    /// The model could not be built or run.
    #[error(transparent)]
    Model(#[from] em_models::ModelError),
    /// The augmentation preset is wrong for the patch.
    #[error(transparent)]
    Augment(#[from] em_augment::AugmentError),
    /// Decoding validation affinities failed.
    #[error(transparent)]
    Decode(#[from] em_decode::DecodeError),
    /// Scoring a validation failed.
    #[error(transparent)]
    Metrics(#[from] em_metrics::MetricsError),
    /// A volume could not be read or written.
    #[error(transparent)]
    Volume(#[from] em_io::IoError),
    /// A block grid or shape does not fit.
    #[error(transparent)]
    Core(#[from] em_core::CoreError),
    /// A distributed job could not be planned, submitted or run.
    #[error(transparent)]
    Slurm(#[from] em_slurm::SlurmError),
    /// The run directory cannot be used: another run or process holds it, or it holds
    /// files that are not a run's.
    #[error("{0}")]
    Run(String),
    /// A checkpoint could not be written, read, or belongs to another run.
    #[error("checkpoint {0}")]
    Checkpoint(String),
    /// The loss became NaN or infinite; the last good checkpoint (if any) is kept.
    #[error("the loss is {loss} at step {step}; lower optimizer.lr or check the data{}",
        match last_good { Some(p) => format!(" (last good checkpoint: {})", p.display()), None => String::new() })]
    NonFinite {
        /// Step (1-based).
        step: usize,
        /// The value.
        loss: f64,
        /// The newest checkpoint written before it.
        last_good: Option<std::path::PathBuf>,
    },
}

impl TrainError {
    /// [`TrainError::InvalidParameter`] from its parts.
    pub(crate) fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidParameter {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
