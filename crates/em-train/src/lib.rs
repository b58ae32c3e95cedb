//! Training for EM segmentation (in progress, issue #8): a typed TOML configuration with
//! `key=value` overrides and a training loop on burn (AdamW with warm-up and cosine/poly
//! decay, gradient clipping, BCE + Dice with masks) fed by the em-data loader. Checkpoints,
//! resume, validation and plots are still to come.
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

mod config;
mod trainer;

pub use config::{OptimizerConfig, Schedule, TrainConfig};
pub use trainer::{inference_model, train, Opener, StepLog, Trained};

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
    /// The loss became NaN or infinite.
    #[error("the loss is {loss} at step {step}; lower optimizer.lr or check the data")]
    NonFinite {
        /// Step (1-based).
        step: usize,
        /// The value.
        loss: f64,
    },
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
