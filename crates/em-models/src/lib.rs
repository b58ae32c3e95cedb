//! Models for EM segmentation on burn: MedNeXt (sizes S/B/M/L, any odd kernel, deep
//! supervision, original and MONAI conventions) and PyTorch/MONAI weight import.
//!
//! ```
//! use burn::backend::Flex;
//! use em_models::{MedNeXtConfig, MedNeXtSize};
//!
//! let config = MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 3);
//! let model = config.init::<Flex>(&Default::default())?;
//! assert_eq!(burn::module::Module::num_params(&model), 5_550_947);
//! # Ok::<(), em_models::ModelError>(())
//! ```

mod error;
mod losses;
mod mednext;
mod weights;

pub use error::{ModelError, Result};
pub use losses::{bce_with_logits, downsample, soft_dice, LossConfig, PosWeight};
pub use mednext::{MedNeXt, MedNeXtConfig, MedNeXtSize, Variant};
pub use weights::{checkpoint_keys, load_mednext, KeyNaming, LoadReport};

/// The default CPU backend.
pub type Cpu = burn::backend::Flex;
