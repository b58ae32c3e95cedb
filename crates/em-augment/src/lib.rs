//! Augmentations for electron-microscopy training data: geometry that moves labels with the
//! image (flips, quarter turns, axis permutations, affine, elastic), intensity and noise,
//! and the defects of serial-section EM (misalignment, missing and lost sections, missing
//! parts, motion and out-of-focus blur, cut-noise, cut-blur, slice drop and roll), plus
//! copy-paste and mixup. Pipelines are ordered lists with per-transform probabilities,
//! deterministic from a seed, loaded from TOML presets (`light`, `realistic`, `heavy`,
//! `superres`, `instance`, `banis`, `em_neuron`) or files; each transform's settings are a
//! type in [`transforms`].
//!
//! ```
//! use em_augment::{Pipeline, Sample};
//! use ndarray::{Array3, Array4};
//!
//! let pipeline = Pipeline::load("realistic")?;
//! let image = Array4::from_shape_fn((1, 16, 64, 64), |(_, z, y, x)| ((z + y + x) % 7) as f32 / 7.0);
//! let labels = Array3::from_shape_fn((16, 64, 64), |(_, y, x)| (1 + y / 16 * 4 + x / 16) as u32);
//! let mut sample = Sample::new(image).with_label(labels);
//! let ran = pipeline.apply_seeded(&mut sample, 42)?;
//! assert_eq!(sample.shape(), [16, 64, 64]);
//! // The same seed gives the same sample.
//! let mut again = Sample::new(Array4::from_shape_fn((1, 16, 64, 64), |(_, z, y, x)| ((z + y + x) % 7) as f32 / 7.0))
//!     .with_label(Array3::from_shape_fn((16, 64, 64), |(_, y, x)| (1 + y / 16 * 4 + x / 16) as u32));
//! assert_eq!(pipeline.apply_seeded(&mut again, 42)?, ran);
//! assert_eq!(again, sample);
//! # Ok::<(), em_augment::AugmentError>(())
//! ```

#![warn(missing_docs)]

mod error;
mod geometry;
mod pipeline;
mod pool;
mod sample;
pub mod transforms;

pub use error::{AugmentError, Result};
pub use pipeline::{rng_from_seed, AugmentRng, Pipeline, Step, PRESETS};
pub use sample::Sample;
pub use transforms::{LostMode, MisalignMode, SpatialAxis, Transform, Weighted};
