//! Core types of em-connectomics: regions, blocks with halo, labels, affinity offsets,
//! run-time typed arrays and the [`ChunkedVolume`] storage seam.
//!
//! ```
//! use em_core::{AnyArray, BlockGrid, ChunkedVolume, ChunkedVolumeExt, InMemoryVolume, Roi};
//! use ndarray::ArrayD;
//!
//! // A 4×6×6 label volume held in memory, stored in 2×3×3 chunks.
//! let labels = ArrayD::from_shape_fn(vec![4, 6, 6], |ix| (ix[2] / 3) as u32 + 1);
//! let volume = InMemoryVolume::new(AnyArray::from(labels), "demo").with_chunk_shape(&[2, 3, 3])?;
//!
//! // Visit it block by block with a one-voxel halo, as a blockwise algorithm would.
//! let grid = BlockGrid::new(volume.shape(), &[2, 3, 3], &[1, 1, 1])?;
//! let mut voxels = 0;
//! for block in grid.iter() {
//!     let with_halo = volume.read_roi_as::<u32>(&block.with_halo)?;
//!     let core = block.core_in_halo().slice(&with_halo)?.to_owned();
//!     voxels += core.len();
//! }
//! assert_eq!(voxels, 4 * 6 * 6);
//!
//! // Regions intersect, grow and print as ranges.
//! let a = Roi::new([0, 0, 0], [4, 4, 4])?;
//! let b = Roi::new([2, 2, 2], [4, 4, 4])?;
//! assert_eq!(a.intersect(&b).unwrap().to_string(), "[2..4, 2..4, 2..4]");
//! # Ok::<(), em_core::CoreError>(())
//! ```

mod affinity;
mod alloc;
mod array;
mod blocks;
pub mod config;
mod error;
mod geometry;
mod label;
mod progress;
mod roi;
mod stats;
pub mod unionfind;
mod volume;

pub use affinity::{AffinityOffsets, EdgeStorage, Offset};
pub use alloc::{huge_vec, keep_freed_memory, peak_rss_bytes, zeroed_vec, PeakAlloc};
pub use array::{AnyArray, DType, Element};
pub use blocks::{chunk_aligned_block, Block, BlockGrid};
pub use error::{CoreError, Result};
pub use geometry::VoxelSize;
pub use half::f16;
pub use label::{to_labels, to_labels_and_mask, Label};
pub use progress::{NoProgress, Progress};
pub use roi::Roi;
pub use stats::{Scalar, VolumeStats};
pub use unionfind::UnionFind;
pub use volume::{check_read, check_write, ChunkedVolume, ChunkedVolumeExt, InMemoryVolume};
