//! Decoders from predictions to segmentations, each equal to the code it reproduces:
//! affinity connected components with BANIS's semantics ([`affinity_cc`], [`decode`],
//! block by block with [`decode_blockwise`], across processes with [`DistributedPlan`]);
//! waterz's watershed and agglomeration ([`waterz`]); the mutex watershed
//! ([`mutex_watershed`]); PyTorch Connectomics' distance and contour instance decoders
//! ([`distance_instances`], [`contour_instances`]); small-object removal.
//!
//! ```
//! use em_core::{AnyArray, ChunkedVolumeExt, InMemoryVolume, NoProgress};
//! use em_decode::{affinity_cc, decode_blockwise, remove_small_objects, CcOptions, DecodeOptions,
//!                 SmallObjectMode};
//! use ndarray::{Array3, Array4};
//!
//! // Two 2-voxel objects along x, joined by their x-affinity (channel 2), apart otherwise.
//! let mut aff = Array4::<f32>::zeros((3, 1, 1, 5));
//! aff[[2, 0, 0, 0]] = 0.9; // voxel 0 — voxel 1
//! aff[[2, 0, 0, 3]] = 0.9; // voxel 3 — voxel 4
//! let seg = affinity_cc::<f32, u32>(aff.view(), &CcOptions::default())?;
//! assert_eq!(seg.as_slice().unwrap(), &[1, 1, 0, 2, 2]);
//!
//! // Objects below 3 voxels go to background; the rest are renumbered.
//! let mut small = seg.clone();
//! let kept = remove_small_objects(small.view_mut(), 3, SmallObjectMode::Background)?;
//! assert_eq!(kept, 0);
//!
//! // The same decode block by block, from any ChunkedVolume (zarr on disk in practice)
//! // into another: identical labels, memory bounded by a few blocks.
//! let input = InMemoryVolume::new(AnyArray::from(aff.into_dyn()), "affinities");
//! let output = InMemoryVolume::new(AnyArray::from(Array3::<u32>::zeros((1, 1, 5)).into_dyn()), "seg");
//! let summary = decode_blockwise(&input, &output, &DecodeOptions::default(), [1, 1, 2], &NoProgress)?;
//! assert_eq!(summary.components, 2);
//! assert_eq!(output.read_all()?.into_typed::<u32>()?.into_raw_vec_and_offset().0, vec![1, 1, 0, 2, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! waterz, several thresholds in one pass, each with the merges since the last:
//!
//! ```
//! use em_decode::waterz::{agglomerate, WaterzOptions};
//! use ndarray::Array4;
//!
//! // Four voxels along x in waterz's convention (aff[2][x] links x−1 and x): 0–1 and 2–3
//! // strongly, 1–2 weakly.
//! let mut aff = Array4::<f32>::zeros((3, 1, 1, 4));
//! aff[[2, 0, 0, 1]] = 0.9;
//! aff[[2, 0, 0, 2]] = 0.4;
//! aff[[2, 0, 0, 3]] = 0.9;
//! let opts = WaterzOptions { thresholds: vec![0.5, 0.7], ..WaterzOptions::default() };
//! let mut results = Vec::new();
//! agglomerate::<u32>(aff.view(), None, &opts, |r| {
//!     results.push((r.threshold, r.segmentation.into_raw_vec_and_offset().0, r.merges.len()));
//!     Ok(())
//! })?;
//! // Two fragments; the edge between them scores 1 − 0.4 = 0.6: merged below 0.7 only.
//! assert_eq!(results, vec![(0.5, vec![1, 1, 2, 2], 0), (0.7, vec![1, 1, 1, 1], 1)]);
//! # Ok::<(), em_decode::DecodeError>(())
//! ```
//!
//! Feature `proptest`: `em_decode::strategies` generates affinity volumes with their known
//! segmentation, for property tests of pipelines built on this crate.

mod blockwise;
mod cc;
mod decode;
mod distributed;
mod error;
mod fast;
#[cfg(feature = "files")]
mod files;
mod instances;
mod mws;
mod small;
#[cfg(feature = "proptest")]
pub mod strategies;
mod tasks;
pub mod waterz;

pub use blockwise::{decode_blockwise, BlockRecord, DecodeSummary};
pub use cc::{affinity_cc, affinity_cc_any, check_threads, max_threads, Affinity, CcOptions};
pub use decode::{decode, upscale, DecodeOptions};
pub use distributed::{block_count, label_block, stitch_blocks, BlockJob};
pub use error::{DecodeError, Result};
#[cfg(feature = "files")]
pub use files::{
    decode_files, threshold_outputs, FileDecodeOptions, FileDecodeReport, Method, MethodSummary,
    MwsFiles, WaterzFiles, WaterzOutputs,
};
pub use instances::{
    contour_instances, distance_instances, instances_from_channels, ContourOptions,
    DistanceOptions, Flood, InstanceSummary,
};
pub use mws::{mutex_watershed, MwsOptions, MwsSummary};
pub use small::{remove_small_objects, renumber, SmallObjectMode};
pub use tasks::{task_share, tasks_with, DistributedPlan, TaskReport, WaterzPlan};
