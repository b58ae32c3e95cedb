//! OME-NGFF (OME-Zarr) multiscale metadata and pyramids.

use std::path::Path;

use crate::Result;

/// The voxel size (z, y, x) recorded in a volume's metadata, if any.
///
/// # Errors
/// I/O errors reading the metadata.
pub fn voxel_size(_path: &Path) -> Result<Option<[f64; 3]>> {
    Ok(None)
}
