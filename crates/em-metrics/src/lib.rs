//! Segmentation metrics for connectomics, with funlib.evaluate's numbers: VOI, adapted
//! Rand, IoU/Dice, instance matching and skeleton-based ERL/NERL.
//!
//! ```
//! use em_metrics::{Contingency, VoxelMetrics};
//! use ndarray::array;
//!
//! let gt = array![[[1u32, 1, 2, 2]]];
//! let pred = array![[[5u64, 5, 5, 5]]]; // merges the two objects
//! let table = Contingency::new(gt.view(), pred.view())?;
//! let m = VoxelMetrics::from_contingency(&table)?;
//! assert_eq!(m.voi_split, 0.0);
//! assert!((m.voi_merge - 1.0).abs() < 1e-12); // one bit: which half
//! assert!((m.arand - (1.0 - 2.0 * 8.0 / (8.0 + 16.0))).abs() < 1e-12);
//! # Ok::<(), em_metrics::MetricsError>(())
//! ```

mod contingency;
mod erl;
mod error;
mod semantic;
mod skeleton;
mod voxel;

pub use contingency::{Contingency, IdHasher, IdMap};
pub use erl::{erl, EdgeStats, ErlReport};
pub use error::{MetricsError, Result};
pub use semantic::{binary_scores, class_scores, match_instances, ClassScores, InstanceMatching};
pub use skeleton::{Node, Skeletons};
pub use voxel::VoxelMetrics;
