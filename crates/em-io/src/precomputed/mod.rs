//! Neuroglancer precomputed volumes and skeletons.
//!
//! A volume is a directory (`NAME.precomputed`) holding an `info` JSON and one directory
//! per scale. A scale stores its chunks either one file each, named
//! `x0-x1_y0-y1_z0-z1`, or in `.shard` files (`neuroglancer_uint64_sharded_v1`); chunks
//! are raw little-endian values or compressed_segmentation ([`cseg`]), and may be
//! gzip-compressed. The files' axis order is x, y, z (x fastest); volumes here are
//! `(Z, Y, X)`, or `(C, Z, Y, X)` with channels, and voxel sizes (z, y, x) — the
//! conversions happen at this module's edge.
//!
//! ```
//! use em_core::{AnyArray, ChunkedVolume, ChunkedVolumeExt, Roi};
//! use em_io::precomputed::{write_precomputed, PrecomputedEncoding, PrecomputedOptions};
//! use ndarray::ArrayD;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("seg.precomputed");
//! let labels = ArrayD::from_shape_fn(vec![10, 20, 30], |ix| (ix[2] / 7) as u64);
//! let options = PrecomputedOptions {
//!     encoding: PrecomputedEncoding::CompressedSegmentation,
//!     chunk_shape: Some([8, 8, 8]),
//!     voxel_size: [40.0, 4.0, 4.0],
//!     ..Default::default()
//! };
//! let volume = write_precomputed(&path, &AnyArray::from(labels.clone()), &options)?;
//! assert_eq!(volume.resolution_nm(), [40.0, 4.0, 4.0]);
//! assert_eq!(volume.read_all()?.into_typed::<u64>()?, labels);
//! // Any region, across chunks; `open` picks the format from the extension.
//! let again = em_io::open(&path)?;
//! let part = again.read_roi_as::<u64>(&Roi::new([3, 5, 12], [2, 2, 4])?)?;
//! assert_eq!(part[[0, 0, 3]], 15 / 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod chunk;
pub mod cseg;
mod info;
mod reader;
mod shard;
mod skeleton;
mod writer;

pub use info::{Encoding, Info, LayerType, Scale};
pub use reader::PrecomputedVolume;
pub use shard::{ShardHash, ShardingSpec};
pub use skeleton::{read_skeleton, write_skeletons, Skeleton};
pub use writer::{
    copy_to_precomputed, write_precomputed, PrecomputedEncoding, PrecomputedOptions,
    PrecomputedWriter, Sharding,
};

pub(crate) use reader::read_info;

/// The format's name in errors.
const FORMAT: &str = "precomputed";
