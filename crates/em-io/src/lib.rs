//! Read and write EM volumes: `.npy`, multi-page TIFF, zarr v2/v3 and HDF5 (feature
//! `hdf5`), chosen by the path's extension. Writes are atomic.
//!
//! ```
//! use em_core::{AnyArray, ChunkedVolume, ChunkedVolumeExt, Roi};
//! use ndarray::ArrayD;
//!
//! let dir = tempfile::tempdir()?;
//! let labels = ArrayD::from_shape_fn(vec![8, 16, 16], |ix| (ix[0] / 4) as u32);
//!
//! // One call per format; the extension picks it, `.zarr/key` names an array in a group.
//! for name in ["seg.npy", "seg.tif", "data.zarr/seg"] {
//!     let path = dir.path().join(name);
//!     em_io::write(&path, &AnyArray::from(labels.clone()))?;
//!     assert_eq!(em_io::read(&path)?.into_typed::<u32>()?, labels);
//! }
//!
//! // zarr is read lazily, one region at a time.
//! let volume = em_io::open(dir.path().join("data.zarr/seg"))?;
//! let part = volume.read_roi_as::<u32>(&Roi::new([4, 0, 0], [4, 2, 2])?)?;
//! assert!(part.iter().all(|&v| v == 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod atomic;
mod dispatch;
mod error;
mod format;
#[cfg(feature = "hdf5")]
mod hdf5;
mod npy;
pub mod ome;
pub mod png;
pub mod precomputed;
mod safety;
mod tiff;
mod zarr;

use std::path::Path;

use em_core::{AnyArray, ChunkedVolume, InMemoryVolume};

pub use atomic::{write_atomic, StagedDir};
pub use error::{IoError, Result};
pub use format::{Format, VolumePath};
#[cfg(feature = "hdf5")]
pub use hdf5::{read_hdf5, write_hdf5, Hdf5Volume};
pub use npy::{read_npy, read_npy_header, write_npy, NpyHeader};
pub use ome::voxel_size;
pub use safety::{check_disjoint, check_outputs, resolve_path, Existing};
pub use tiff::{read_tiff, write_tiff};
pub use zarr::{write_zarr, Compression, ZarrOptions, ZarrVersion, ZarrVolume, ZarrWriter};

/// Opens a volume for region reads and writes. zarr and HDF5 stay on disk and are read
/// chunk by chunk; `.npy` and TIFF are loaded into memory.
///
/// # Errors
/// [`IoError::UnknownFormat`] for an unknown extension, or the format's own errors.
pub fn open(path: impl AsRef<Path>) -> Result<Box<dyn ChunkedVolume>> {
    let vp = VolumePath::parse(path.as_ref())?;
    let name = |fmt: &str| format!("{fmt} {}", vp.display().display());
    Ok(match vp.format {
        Format::Npy => Box::new(InMemoryVolume::new(
            read_npy(&vp.container)?,
            name("npy file"),
        )),
        Format::Tiff => Box::new(InMemoryVolume::new(
            read_tiff(&vp.container)?,
            name("TIFF stack"),
        )),
        Format::Zarr => Box::new(ZarrVolume::open(&vp)?),
        Format::Hdf5 => open_hdf5(&vp)?,
        Format::Precomputed => Box::new(precomputed::PrecomputedVolume::open(&vp)?),
    })
}

#[cfg(feature = "hdf5")]
fn open_hdf5(vp: &VolumePath) -> Result<Box<dyn ChunkedVolume>> {
    Ok(Box::new(Hdf5Volume::open(vp)?))
}

#[cfg(not(feature = "hdf5"))]
fn open_hdf5(vp: &VolumePath) -> Result<Box<dyn ChunkedVolume>> {
    Err(IoError::Hdf5Disabled {
        path: vp.container.clone(),
    })
}

/// Shape and element type of a volume from its header or metadata alone, without reading
/// its data: `None` for TIFF, whose pages must be decoded to know. Commands use it to check
/// sizes before work.
///
/// # Errors
/// As [`open`] for npy headers, zarr and HDF5 metadata.
pub fn peek(path: impl AsRef<Path>) -> Result<Option<(Vec<u64>, em_core::DType)>> {
    let vp = VolumePath::parse(path.as_ref())?;
    Ok(match vp.format {
        Format::Npy => {
            let h = read_npy_header(&vp.container)?;
            Some((h.shape.iter().map(|&n| n as u64).collect(), h.dtype))
        }
        Format::Tiff => None,
        Format::Zarr | Format::Hdf5 | Format::Precomputed => {
            let v = open(path)?;
            Some((v.shape().to_vec(), v.dtype()))
        }
    })
}

/// Reads a whole volume into memory.
///
/// # Errors
/// As [`open`].
pub fn read(path: impl AsRef<Path>) -> Result<AnyArray> {
    let vp = VolumePath::parse(path.as_ref())?;
    match vp.format {
        Format::Npy => read_npy(&vp.container),
        Format::Tiff => read_tiff(&vp.container),
        Format::Zarr => {
            let v = ZarrVolume::open(&vp)?;
            v.read_roi(&v.roi()).map_err(IoError::volume(&vp.display()))
        }
        #[cfg(feature = "hdf5")]
        Format::Hdf5 => read_hdf5(&vp),
        #[cfg(not(feature = "hdf5"))]
        Format::Hdf5 => Err(IoError::Hdf5Disabled { path: vp.container }),
        Format::Precomputed => {
            let v = precomputed::PrecomputedVolume::open(&vp)?;
            v.read_roi(&v.roi()).map_err(IoError::volume(&vp.display()))
        }
    }
}

/// Writes a whole volume, replacing an array or file at `path` (never a zarr or HDF5 group,
/// a directory that is not an array, or anything below an array: those are refused).
/// Atomic: on failure or interruption the old content (or nothing) remains, never a partial
/// file. Commands check their outputs first with [`check_outputs`]. zarr is written as v3 with
/// zstd; use [`write_zarr`] for other layouts.
///
/// # Errors
/// [`IoError::UnknownFormat`], [`IoError::UnsupportedDType`], I/O errors.
pub fn write(path: impl AsRef<Path>, array: &AnyArray) -> Result<()> {
    let vp = VolumePath::parse(path.as_ref())?;
    match vp.format {
        Format::Npy => write_npy(&vp.container, array),
        Format::Tiff => write_tiff(&vp.container, array),
        Format::Zarr => write_zarr(&vp, array, &ZarrOptions::default()).map(|_| ()),
        #[cfg(feature = "hdf5")]
        Format::Hdf5 => write_hdf5(&vp, array),
        #[cfg(not(feature = "hdf5"))]
        Format::Hdf5 => Err(IoError::Hdf5Disabled { path: vp.container }),
        Format::Precomputed => {
            let options = precomputed::PrecomputedOptions::default();
            precomputed::write_precomputed(path, array, &options).map(|_| ())
        }
    }
}
