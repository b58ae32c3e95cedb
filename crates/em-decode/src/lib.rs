//! Affinity connected components with BANIS's exact semantics, and small-object removal.
//!
//! ```
//! use em_decode::{affinity_cc, remove_small_objects, CcParams, SmallObjectMode};
//! use ndarray::Array4;
//!
//! // Two 2-voxel objects along x, joined by their x-affinity (channel 2), apart otherwise.
//! let mut aff = Array4::<f32>::zeros((3, 1, 1, 5));
//! aff[[2, 0, 0, 0]] = 0.9; // voxel 0 — voxel 1
//! aff[[2, 0, 0, 3]] = 0.9; // voxel 3 — voxel 4
//! let seg = affinity_cc::<f32, u32>(aff.view(), &CcParams::default())?;
//! assert_eq!(seg.as_slice().unwrap(), &[1, 1, 0, 2, 2]);
//!
//! // Objects below 3 voxels go to background; the rest are renumbered.
//! let mut seg = seg;
//! let kept = remove_small_objects(seg.view_mut(), 3, SmallObjectMode::Background)?;
//! assert_eq!(kept, 0);
//! # Ok::<(), em_decode::DecodeError>(())
//! ```
//!
//! Not built yet (issue #3): the blockwise (out-of-core) decoder, the `neighbor`
//! small-object mode, output resizing, and the side-by-side benchmark against cc3d/BANIS.

mod blockwise;
mod cc;
mod decode;
mod error;
mod fast;
mod small;
#[cfg(feature = "proptest")]
pub mod strategies;

pub use blockwise::{decode_blockwise, DecodeSummary};
pub use cc::{affinity_cc, affinity_cc_any, Affinity, CcParams};
pub use decode::{decode, upscale, DecodeParams};
pub use error::{DecodeError, Result};
pub use small::{remove_small_objects, renumber, SmallObjectMode};
