//! em-connectomics: segment electron-microscopy volumes of brain tissue.
//!
//! This facade re-exports every crate of the workspace as a module, so that one dependency
//! gives the whole toolkit; depend on a single crate (e.g. `em-decode`) to stay light.
//!
//! ```
//! use em_connectomics::core::{AnyArray, ChunkedVolume, ChunkedVolumeExt, NoProgress, VolumeStats};
//! use ndarray::ArrayD;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("demo.zarr/labels");
//! let labels = ArrayD::from_shape_fn(vec![16, 32, 32], |ix| 1 + (ix[1] / 8 * 4 + ix[2] / 8) as u32);
//! em_connectomics::io::write(&path, &AnyArray::from(labels))?;
//!
//! let volume = em_connectomics::io::open(&path)?;
//! let stats = VolumeStats::compute(volume.as_ref(), &NoProgress)?;
//! assert_eq!(stats.label_count, Some(16));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use em_augment as augment;
pub use em_autoconf as autoconf;
pub use em_core as core;
pub use em_data as data;
pub use em_decode as decode;
pub use em_io as io;
pub use em_metrics as metrics;
pub use em_models as models;
pub use em_slurm as slurm;
pub use em_train as train;
