//! OME-NGFF (OME-Zarr) multiscale metadata and pyramids.
//!
//! A pyramid is a zarr group of arrays `0` (full resolution), `1`, … with OME-NGFF
//! `multiscales` metadata: version 0.5 under `attributes.ome` of a zarr v3 group (the
//! default), or 0.4 in the `.zattrs` of a zarr v2 group. Axes are `z`, `y`, `x` in
//! nanometres, after a `c` channel axis for `(C, Z, Y, X)` volumes. [`build_pyramid`]
//! writes one from any [`em_core::ChunkedVolume`], out of core; [`voxel_size`] reads the
//! voxel size back from OME or funlib metadata.
//!
//! ```
//! use em_core::{AnyArray, NoProgress};
//! use em_io::ome::{write_pyramid, PyramidOptions};
//! use ndarray::ArrayD;
//!
//! let dir = tempfile::tempdir()?;
//! let image = ArrayD::from_shape_fn(vec![8, 64, 80], |ix| (ix[1] + ix[2]) as u8);
//! em_io::write(dir.path().join("raw.npy"), &AnyArray::from(image))?;
//!
//! // 40 × 4 × 4 nm voxels: the first levels halve y and x only.
//! let options = PyramidOptions {
//!     levels: Some(3),
//!     voxel_size: Some([40.0, 4.0, 4.0]),
//!     ..Default::default()
//! };
//! let out = dir.path().join("raw.zarr");
//! let summary = write_pyramid(&dir.path().join("raw.npy"), &out, &options, &NoProgress)?;
//! assert_eq!(summary.levels[2].shape, [8, 16, 20]);
//! assert_eq!(em_io::voxel_size(&out.join("2"))?, Some([40.0, 16.0, 16.0]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use crate::format::{Format, VolumePath};
use crate::{IoError, Result};

mod downsample;
mod metadata;
mod pyramid;

pub use pyramid::{
    build_pyramid, check_pyramid_output, make_ome_in_place, write_pyramid, PyramidKind,
    PyramidLevel, PyramidOptions, PyramidSummary, VoxelSizeSource, MAX_LEVELS, SMALLEST_SIDE,
};

/// The voxel size (z, y, x) in nm recorded in a volume's metadata, if any: for a zarr group,
/// the first dataset of its OME-NGFF (0.4 or 0.5) multiscales; for a zarr array, funlib's
/// `resolution` (or `voxel_size`) attribute, else the scale of the dataset it is in the
/// multiscales of a group above it (`img.zarr/1` → level 1's voxel size); for a
/// precomputed volume, its scale's resolution. Lengths in other OME units are converted to
/// nm; axes without a unit are taken as nm. `None` for other formats and for zarr nodes
/// without such metadata.
///
/// # Errors
/// [`IoError::UnknownFormat`] for a path of no known format, [`IoError::Io`] when the zarr
/// path is missing or unreadable, [`IoError::Corrupt`] naming the metadata file when it is
/// not valid JSON or its OME fields are malformed.
pub fn voxel_size(path: &Path) -> Result<Option<[f64; 3]>> {
    let vp = VolumePath::parse(path)?;
    if vp.format == Format::Precomputed {
        return Ok(Some(
            crate::precomputed::PrecomputedVolume::open(&vp)?.resolution_nm(),
        ));
    }
    if vp.format != Format::Zarr {
        return Ok(None);
    }
    let dir = vp.display();
    if !dir.is_dir() {
        return Err(IoError::Io {
            path: dir,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such zarr node"),
        });
    }
    let Some(node) = metadata::read_node(&dir)? else {
        return Ok(None);
    };
    if node.kind == metadata::NodeKind::Group {
        return metadata::multiscale_voxel_size(&node, None);
    }
    if let Some(v) = metadata::funlib_voxel_size(&node)? {
        return Ok(Some(v));
    }
    // A level array: look for the multiscales that list it in the groups above.
    let parts: Vec<&str> = vp
        .key
        .as_deref()
        .unwrap_or("")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    for up in (0..parts.len()).rev() {
        let group = parts[..up]
            .iter()
            .fold(vp.container.clone(), |d, p| d.join(p));
        let Some(parent) = metadata::read_node(&group)? else {
            continue;
        };
        if parent.kind != metadata::NodeKind::Group {
            continue;
        }
        let rel = parts[up..].join("/");
        if let Some(v) = metadata::multiscale_voxel_size(&parent, Some(&rel))? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}
