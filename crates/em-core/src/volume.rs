//! The storage seam: a volume split into chunks that can be read and written by region.

use std::sync::RwLock;

use ndarray::ArrayD;

use crate::{AnyArray, BlockGrid, CoreError, DType, Element, Result, Roi};

/// A volume on disk or in memory that is read and written one region at a time.
///
/// Implemented by every em-io format (zarr lazily, chunk by chunk; npy/TIFF in memory) so
/// that algorithms such as blockwise decoding never care where the voxels live. Reads and
/// writes take `&self` so that several threads may work on disjoint regions at once.
pub trait ChunkedVolume: Send + Sync {
    /// Extent along each axis.
    fn shape(&self) -> &[u64];

    /// The storage chunk shape: regions aligned to it are read and written most cheaply.
    fn chunk_shape(&self) -> &[u64];

    /// The element type.
    fn dtype(&self) -> DType;

    /// A one-line description for messages, e.g. `zarr v3 array data.zarr/raw`.
    fn describe(&self) -> String;

    /// Reads the voxels of `roi`, which must lie inside the volume.
    ///
    /// # Errors
    /// A region error for a bad `roi`; [`CoreError::Storage`] when the backend fails.
    fn read_roi(&self, roi: &Roi) -> Result<AnyArray>;

    /// Writes `data` (of this volume's dtype and `roi`'s shape) into `roi`.
    ///
    /// # Errors
    /// A region, dtype or shape error; [`CoreError::Storage`] when the backend fails or the
    /// volume was opened read-only.
    fn write_roi(&self, roi: &Roi, data: &AnyArray) -> Result<()>;

    /// The whole volume as a region.
    fn roi(&self) -> Roi {
        Roi::from_shape(self.shape().to_vec())
    }

    /// Number of axes.
    fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// The chunks that hold data, by chunk-grid index, where the storage can list them
    /// (zarr); every other chunk holds the fill value. `None`: all chunks, or unknown. Lets
    /// a scan of a sparse or mostly unwritten volume read only what is stored.
    fn stored_chunks(&self) -> Option<Vec<Vec<u64>>> {
        None
    }
}

impl std::fmt::Debug for dyn ChunkedVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.describe(), self.shape(), self.dtype())
    }
}

/// Typed conveniences for every [`ChunkedVolume`], trait objects included.
pub trait ChunkedVolumeExt: ChunkedVolume {
    /// Reads `roi` as type `T` (no conversion: the dtype must match).
    ///
    /// # Errors
    /// As [`ChunkedVolume::read_roi`], plus [`CoreError::DTypeMismatch`].
    fn read_roi_as<T: Element>(&self, roi: &Roi) -> Result<ArrayD<T>> {
        self.read_roi(roi)?
            .into_typed()
            .map_err(|e| CoreError::InVolume {
                volume: self.describe(),
                source: Box::new(e),
            })
    }

    /// Reads the whole volume into memory.
    ///
    /// # Errors
    /// As [`ChunkedVolume::read_roi`].
    fn read_all(&self) -> Result<AnyArray> {
        self.read_roi(&self.roi())
    }

    /// A grid of blocks aligned to multiples of the storage chunks, with `halo`.
    ///
    /// # Errors
    /// [`CoreError::DimensionMismatch`] if `halo` has the wrong length.
    fn chunk_grid(&self, halo: &[u64]) -> Result<BlockGrid> {
        let chunks: Vec<u64> = self.chunk_shape().iter().map(|&c| c.max(1)).collect();
        BlockGrid::new(self.shape(), &chunks, halo)
    }
}

impl<V: ChunkedVolume + ?Sized> ChunkedVolumeExt for V {}

/// Checks a [`ChunkedVolume::read_roi`] region against the volume; the error names it.
///
/// # Errors
/// [`CoreError::InVolume`] around a region error.
pub fn check_read(volume: &(impl ChunkedVolume + ?Sized), roi: &Roi) -> Result<()> {
    roi.check_within(volume.shape())
        .map_err(|e| CoreError::InVolume {
            volume: volume.describe(),
            source: Box::new(e),
        })
}

/// Checks the arguments of a [`ChunkedVolume::write_roi`] against the volume; the error
/// names it.
///
/// # Errors
/// [`CoreError::InVolume`] around a dtype, region or shape error.
pub fn check_write(
    volume: &(impl ChunkedVolume + ?Sized),
    roi: &Roi,
    data: &AnyArray,
) -> Result<()> {
    let problem = if data.dtype() != volume.dtype() {
        Some(CoreError::DTypeMismatch {
            expected: volume.dtype(),
            found: data.dtype(),
        })
    } else if let Err(e) = roi.check_within(volume.shape()) {
        Some(e)
    } else {
        let got: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
        (got != roi.shape()).then(|| CoreError::ShapeMismatch {
            what: format!("data written to {roi}"),
            expected: roi.shape().to_vec(),
            got,
        })
    };
    match problem {
        None => Ok(()),
        Some(e) => Err(CoreError::InVolume {
            volume: volume.describe(),
            source: Box::new(e),
        }),
    }
}

/// A volume held in memory, e.g. one loaded from `.npy` or TIFF.
#[derive(Debug)]
pub struct InMemoryVolume {
    data: RwLock<AnyArray>,
    shape: Vec<u64>,
    chunk_shape: Vec<u64>,
    name: String,
}

impl InMemoryVolume {
    /// Wraps an array; its chunk shape is the whole array.
    pub fn new(data: AnyArray, name: impl Into<String>) -> Self {
        let shape: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
        Self {
            data: RwLock::new(data.into_standard_layout()),
            chunk_shape: shape.clone(),
            shape,
            name: name.into(),
        }
    }

    /// Sets the chunk shape reported to blockwise algorithms (e.g. to test them).
    ///
    /// # Errors
    /// [`CoreError::DimensionMismatch`] or [`CoreError::InvalidParameter`] for a zero side.
    pub fn with_chunk_shape(mut self, chunk_shape: &[u64]) -> Result<Self> {
        BlockGrid::new(&self.shape, chunk_shape, &vec![0; chunk_shape.len()])?;
        self.chunk_shape = chunk_shape.to_vec();
        Ok(self)
    }

    /// The array back.
    pub fn into_inner(self) -> AnyArray {
        self.data.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl ChunkedVolume for InMemoryVolume {
    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn chunk_shape(&self) -> &[u64] {
        &self.chunk_shape
    }

    fn dtype(&self) -> DType {
        self.data.read().unwrap_or_else(|p| p.into_inner()).dtype()
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn read_roi(&self, roi: &Roi) -> Result<AnyArray> {
        check_read(self, roi)?;
        self.data
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .crop(roi)
    }

    fn write_roi(&self, roi: &Roi, data: &AnyArray) -> Result<()> {
        check_write(self, roi, data)?;
        self.data
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .assign(roi, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_roundtrip_and_errors() {
        let v = InMemoryVolume::new(AnyArray::zeros(DType::U8, &[4, 5, 6]), "test")
            .with_chunk_shape(&[2, 2, 2])
            .unwrap();
        let roi = Roi::new([1, 1, 1], [2, 3, 4]).unwrap();
        let patch: AnyArray = ArrayD::<u8>::from_elem(vec![2, 3, 4], 3).into();
        v.write_roi(&roi, &patch).unwrap();
        assert_eq!(v.read_roi_as::<u8>(&roi).unwrap().sum(), 3 * 24);
        assert_eq!(v.read_all().unwrap().to_f32().sum(), 72.0);
        assert_eq!(v.chunk_grid(&[0, 0, 0]).unwrap().num_blocks(), 2 * 3 * 3);
        let outside = Roi::new([3, 0, 0], [2, 1, 1]).unwrap();
        let err = v.read_roi(&outside).unwrap_err();
        assert!(
            matches!(&err, CoreError::InVolume { source, .. } if matches!(**source, CoreError::OutOfBounds { .. }))
        );
        assert!(
            err.to_string()
                .starts_with("test: region [3..5, 0..1, 0..1]"),
            "{err}"
        );
        let wrong: AnyArray = ArrayD::<f32>::zeros(vec![2, 3, 4]).into();
        let err = v.write_roi(&roi, &wrong).unwrap_err().to_string();
        assert_eq!(err, "test: expected uint8 data, found float32");
        assert!(v.read_roi_as::<u16>(&roi).is_err());
        assert!(InMemoryVolume::new(AnyArray::zeros(DType::U8, &[2]), "x")
            .with_chunk_shape(&[0])
            .is_err());
    }
}
