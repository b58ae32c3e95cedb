//! Data for training: synthetic EM-like volumes, targets, patch datasets,
//! `WeightedConcatDataset` and loaders.
//!
//! ```
//! use em_data::synth::{neurons, NeuronOptions};
//!
//! let v = neurons([4, 32, 32], 7, &NeuronOptions::default());
//! assert_eq!(v.image.dim(), (4, 32, 32));
//! assert!(v.labels.iter().all(|&l| l >= 1));
//! ```

mod dataset;
mod error;
mod loader;
mod sources;
pub mod synth;
pub mod targets;

pub use dataset::{
    grid_starts, Dataset, GridDataset, LengthPolicy, MixMode, PatchConfig, PatchDataset,
    WeightedConcatDataset,
};
pub use error::{DataError, Result};
pub use loader::{make_batch, Batch, Loader, LoaderOptions, TargetSpec};
pub use sources::{
    DataConfig, Opener, SourceConfig, SourceVolumes, Split, SynthKind, WeightedSource,
};
