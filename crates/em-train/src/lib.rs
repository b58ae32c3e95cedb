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
mod ema;
mod run_dir;
mod trainer;
pub mod validate;

pub use auto::{model_cost, AUTO_KEYS};
pub use config::{
    preset, CheckpointConfig, EmaConfig, LossScaleConfig, OptimizerConfig, Schedule, TrainConfig,
    ValidationConfig, PRESETS,
};
pub use device::{
    on_device, resolve as resolve_device, train_on, Device, DeviceChoice, DeviceTrained, OnDevice,
    TrainedModel,
};
pub use run_dir::{RunDir, RunRecord, Start, RUN_FILES};
pub use trainer::{
    inference_model, train, Event, Opener, RunOptions, StepLog, TrainBackend, Trained,
};
pub use validate::{ValidationLog, Validator};

/// Why training could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration (or an override) is wrong; the message names the key.
    #[error("training config: {0}")]
    Config(String),
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

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
