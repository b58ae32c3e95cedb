//! zarr v2 and v3 arrays on the local file system through `zarrs`.
//!
//! Any array zarrs opens can be read and written by region (v2 with blosc, zstd, gzip …;
//! v3 with any of zarrs' codecs, sharding included). New arrays are written as zarr v3
//! (readable by zarr-python 3, tensorstore, neuroglancer) with zstd by default.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use em_core::{check_write, AnyArray, ChunkedVolume, DType, Roi};
use ndarray::ArrayD;
use zarrs::array::codec::{
    BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode, GzipCodec, ZstdCodec,
};
use zarrs::array::data_type as dt;
use zarrs::array::{Array, ArrayBuilder, ArraySubset, BytesToBytesCodecTraits, FillValue};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::GroupBuilder;

use crate::atomic::AtomicDir;
use crate::format::VolumePath;
use crate::{Error, Result};

const FORMAT: &str = "zarr";

/// Compression of newly written zarr chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// zstd at a level (1–22; 3 is zarr-python's default).
    Zstd(i32),
    /// gzip at a level (0–9).
    Gzip(u32),
    /// blosc with its lz4 compressor, byte shuffle, at a level (0–9).
    BloscLz4(u8),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

/// How a new zarr array is laid out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZarrOptions {
    /// Chunk shape; `None` picks about 64³ voxels per chunk (whole leading channel axes).
    pub chunk_shape: Option<Vec<u64>>,
    /// Chunk compression.
    pub compression: Compression,
}

/// A zarr array opened for region reads and writes.
pub struct ZarrVolume {
    array: Array<FilesystemStore>,
    display: PathBuf,
    shape: Vec<u64>,
    chunk_shape: Vec<u64>,
    dtype: DType,
    version: u8,
}

impl std::fmt::Debug for ZarrVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrVolume")
            .field("path", &self.display)
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .finish()
    }
}

fn array_path(key: Option<&str>) -> String {
    match key {
        Some(k) => format!("/{}", k.trim_matches('/')),
        None => "/".into(),
    }
}

fn map_dtype(path: &Path, data_type: &zarrs::array::DataType) -> Result<DType> {
    use zarrs::array::data_type::*;
    let d = data_type;
    Ok(if d.is::<BoolDataType>() {
        DType::Bool
    } else if d.is::<UInt8DataType>() {
        DType::U8
    } else if d.is::<UInt16DataType>() {
        DType::U16
    } else if d.is::<UInt32DataType>() {
        DType::U32
    } else if d.is::<UInt64DataType>() {
        DType::U64
    } else if d.is::<Int8DataType>() {
        DType::I8
    } else if d.is::<Int16DataType>() {
        DType::I16
    } else if d.is::<Int32DataType>() {
        DType::I32
    } else if d.is::<Int64DataType>() {
        DType::I64
    } else if d.is::<Float16DataType>() {
        DType::F16
    } else if d.is::<Float32DataType>() {
        DType::F32
    } else if d.is::<Float64DataType>() {
        DType::F64
    } else {
        return Err(Error::UnsupportedDType {
            path: path.into(),
            format: FORMAT,
            direction: "reading",
            dtype: format!("{d:?}"),
            supported: "bool, (u)int8/16/32/64, float16/32/64",
        });
    })
}

fn zarr_dtype(dtype: DType) -> zarrs::array::DataType {
    match dtype {
        DType::Bool => dt::bool(),
        DType::U8 => dt::uint8(),
        DType::U16 => dt::uint16(),
        DType::U32 => dt::uint32(),
        DType::U64 => dt::uint64(),
        DType::I8 => dt::int8(),
        DType::I16 => dt::int16(),
        DType::I32 => dt::int32(),
        DType::I64 => dt::int64(),
        DType::F16 => dt::float16(),
        DType::F32 => dt::float32(),
        DType::F64 => dt::float64(),
    }
}

/// Arrays (v2 or v3) below a zarr directory, as keys, for "not found" messages.
pub(crate) fn list_arrays(container: &Path) -> Vec<String> {
    fn is_array(dir: &Path) -> bool {
        dir.join(".zarray").is_file()
            || fs::read_to_string(dir.join("zarr.json"))
                .map(|s| s.contains("\"array\""))
                .unwrap_or(false)
    }
    fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for d in dirs {
            if d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if is_array(&d) {
                if let Ok(rel) = d.strip_prefix(root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            } else if depth > 0 {
                walk(root, &d, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(container, container, 3, &mut out);
    out
}

impl ZarrVolume {
    /// Opens the array at `path` (`dir.zarr` or `dir.zarr/key`), zarr v2 or v3.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory is missing, [`Error::KeyNotFound`] (listing the arrays
    /// that exist) if no array is at the key, [`Error::Corrupt`] for bad metadata.
    pub fn open(path: &VolumePath) -> Result<Self> {
        let display = path.display();
        if !path.container.is_dir() {
            return Err(Error::Io {
                path: path.container.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such zarr directory"),
            });
        }
        let store = Arc::new(
            FilesystemStore::new(&path.container)
                .map_err(|e| Error::corrupt(&display, FORMAT, e.to_string()))?,
        );
        let node = path.container.join(path.key.as_deref().unwrap_or(""));
        let has_metadata = node.join("zarr.json").is_file() || node.join(".zarray").is_file();
        let is_group = node.join(".zgroup").is_file()
            || fs::read_to_string(node.join("zarr.json")).is_ok_and(|s| s.contains("\"group\""));
        if !has_metadata || is_group {
            return Err(Error::KeyNotFound {
                path: path.container.clone(),
                what: "array",
                key: path.key.clone().unwrap_or_else(|| "/".into()),
                available: list_arrays(&path.container),
            });
        }
        let array = Array::open(store, &array_path(path.key.as_deref()))
            .map_err(|e| Error::corrupt(&display, FORMAT, format!("cannot open array: {e}")))?;
        Self::from_array(array, display)
    }

    fn from_array(array: Array<FilesystemStore>, display: PathBuf) -> Result<Self> {
        let dtype = map_dtype(&display, array.data_type())?;
        let shape = array.shape().to_vec();
        let chunk_shape = array
            .chunk_shape(&vec![0; shape.len()])
            .map_err(|e| Error::corrupt(&display, FORMAT, e.to_string()))?
            .iter()
            .map(|c| c.get())
            .collect();
        let version = match array.metadata() {
            zarrs::array::ArrayMetadata::V2(_) => 2,
            _ => 3,
        };
        Ok(Self {
            array,
            display,
            shape,
            chunk_shape,
            dtype,
            version,
        })
    }

    /// The zarr format version of the array's metadata, 2 or 3.
    pub fn zarr_version(&self) -> u8 {
        self.version
    }

    /// The path as given when opened.
    pub fn path(&self) -> &Path {
        &self.display
    }

    fn subset(roi: &Roi) -> ArraySubset {
        ArraySubset::new_with_ranges(&roi.ranges())
    }
}

impl ChunkedVolume for ZarrVolume {
    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn chunk_shape(&self) -> &[u64] {
        &self.chunk_shape
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn describe(&self) -> String {
        format!("zarr v{} array {}", self.version, self.display.display())
    }

    fn read_roi(&self, roi: &Roi) -> em_core::Result<AnyArray> {
        roi.check_within(&self.shape)?;
        let subset = Self::subset(roi);
        let bad = |e: zarrs::array::ArrayError| -> em_core::Error {
            Error::corrupt(&self.display, FORMAT, format!("reading {roi}: {e}")).into()
        };
        macro_rules! read {
            ($t:ty) => {
                AnyArray::from(
                    self.array
                        .retrieve_array_subset::<ArrayD<$t>>(&subset)
                        .map_err(bad)?,
                )
            };
        }
        Ok(match self.dtype {
            DType::Bool => read!(bool),
            DType::U8 => read!(u8),
            DType::U16 => read!(u16),
            DType::U32 => read!(u32),
            DType::U64 => read!(u64),
            DType::I8 => read!(i8),
            DType::I16 => read!(i16),
            DType::I32 => read!(i32),
            DType::I64 => read!(i64),
            DType::F16 => read!(em_core::f16),
            DType::F32 => read!(f32),
            DType::F64 => read!(f64),
        })
    }

    fn write_roi(&self, roi: &Roi, data: &AnyArray) -> em_core::Result<()> {
        check_write(self, roi, data)?;
        let subset = Self::subset(roi);
        let bad = |e: zarrs::array::ArrayError| -> em_core::Error {
            Error::corrupt(&self.display, FORMAT, format!("writing {roi}: {e}")).into()
        };
        macro_rules! write {
            ($a:expr) => {
                self.array
                    .store_array_subset(&subset, $a.as_standard_layout().into_owned())
                    .map_err(bad)
            };
        }
        match data {
            AnyArray::Bool(a) => write!(a),
            AnyArray::U8(a) => write!(a),
            AnyArray::U16(a) => write!(a),
            AnyArray::U32(a) => write!(a),
            AnyArray::U64(a) => write!(a),
            AnyArray::I8(a) => write!(a),
            AnyArray::I16(a) => write!(a),
            AnyArray::I32(a) => write!(a),
            AnyArray::I64(a) => write!(a),
            AnyArray::F16(a) => write!(a),
            AnyArray::F32(a) => write!(a),
            AnyArray::F64(a) => write!(a),
            other => Err(em_core::Error::DTypeMismatch {
                expected: self.dtype,
                found: other.dtype(),
            }),
        }
    }
}

/// A new zarr v3 array being written under a staging name; [`ZarrWriter::commit`] moves it
/// into place, and dropping it uncommitted removes it, so readers never see a partial array.
pub struct ZarrWriter {
    staged: AtomicDir,
    volume: ZarrVolume,
    target: VolumePath,
}

/// A default chunk shape: ~64 voxels per spatial side, channel axes whole.
fn default_chunks(shape: &[u64]) -> Vec<u64> {
    let n = shape.len();
    shape
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let spatial = i + 3 >= n;
            if spatial {
                s.clamp(1, 64)
            } else {
                s.max(1)
            }
        })
        .collect()
}

fn codec(c: Compression, dtype: DType) -> Result<Option<Arc<dyn BytesToBytesCodecTraits>>, String> {
    Ok(match c {
        Compression::None => None,
        Compression::Zstd(level) => Some(Arc::new(ZstdCodec::new(level, false))),
        Compression::Gzip(level) => {
            Some(Arc::new(GzipCodec::new(level).map_err(|e| e.to_string())?))
        }
        Compression::BloscLz4(level) => Some(Arc::new(
            BloscCodec::new(
                BloscCompressor::LZ4,
                BloscCompressionLevel::try_from(level).map_err(|e| e.to_string())?,
                None,
                BloscShuffleMode::Shuffle,
                Some(dtype.size_bytes()),
            )
            .map_err(|e| e.to_string())?,
        )),
    })
}

impl ZarrWriter {
    /// Starts a new array of `shape` and `dtype` at `path` (`out.zarr` or `out.zarr/key`;
    /// an existing array there is replaced on commit, other arrays in the container stay).
    ///
    /// # Errors
    /// I/O errors, or [`Error::Corrupt`] for options zarr refuses (bad chunk shape, level).
    pub fn create(
        path: &VolumePath,
        shape: &[u64],
        dtype: DType,
        options: &ZarrOptions,
    ) -> Result<Self> {
        let display = path.display();
        let chunk_shape = options
            .chunk_shape
            .clone()
            .unwrap_or_else(|| default_chunks(shape));
        if chunk_shape.len() != shape.len() || chunk_shape.contains(&0) {
            return Err(Error::Volume {
                path: display,
                source: em_core::Error::InvalidParameter {
                    name: "chunk shape",
                    reason: format!("{chunk_shape:?} for an array of shape {shape:?}; one positive side per axis"),
                },
            });
        }
        // The container and the groups above the key are created in place: an empty group
        // does not look like a finished volume. The array itself is staged.
        let array_dir = match &path.key {
            None => path.container.clone(),
            Some(key) => {
                let mut dir = path.container.clone();
                fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
                write_group_if_missing(&dir)?;
                let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
                for part in &parts[..parts.len().saturating_sub(1)] {
                    dir.push(part);
                    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
                    write_group_if_missing(&dir)?;
                }
                path.container.join(key)
            }
        };
        if let Some(parent) = array_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(Error::io(parent))?;
        }
        let staged = AtomicDir::create(&array_dir)?;
        let store = Arc::new(
            FilesystemStore::new(staged.staging())
                .map_err(|e| Error::corrupt(&display, FORMAT, e.to_string()))?,
        );
        let mut builder = ArrayBuilder::new(
            shape.to_vec(),
            chunk_shape,
            zarr_dtype(dtype),
            FillValue::new(vec![0; dtype.size_bytes()]),
        );
        let codecs: Vec<_> = codec(options.compression, dtype)
            .map_err(|e| Error::corrupt(&display, FORMAT, format!("bad compression setting: {e}")))?
            .into_iter()
            .collect();
        builder.bytes_to_bytes_codecs(codecs);
        let names: Option<Vec<&str>> = match shape.len() {
            3 => Some(vec!["z", "y", "x"]),
            4 => Some(vec!["c", "z", "y", "x"]),
            _ => None,
        };
        builder.dimension_names(names);
        let array = builder
            .build(store, "/")
            .map_err(|e| Error::corrupt(&display, FORMAT, format!("cannot create array: {e}")))?;
        array
            .store_metadata()
            .map_err(|e| Error::corrupt(&display, FORMAT, format!("cannot write metadata: {e}")))?;
        let volume = ZarrVolume::from_array(array, display)?;
        Ok(Self {
            staged,
            volume,
            target: path.clone(),
        })
    }

    /// The array being written, for region writes.
    pub fn volume(&self) -> &ZarrVolume {
        &self.volume
    }

    /// Moves the finished array into place and reopens it there.
    ///
    /// # Errors
    /// I/O errors of the rename or reopening.
    pub fn commit(self) -> Result<ZarrVolume> {
        let Self {
            staged,
            volume,
            target,
        } = self;
        drop(volume);
        staged.commit()?;
        ZarrVolume::open(&target)
    }
}

fn write_group_if_missing(dir: &Path) -> Result<()> {
    if dir.join("zarr.json").exists() || dir.join(".zgroup").exists() {
        return Ok(());
    }
    let store = Arc::new(
        FilesystemStore::new(dir).map_err(|e| Error::corrupt(dir, FORMAT, e.to_string()))?,
    );
    GroupBuilder::new()
        .build(store, "/")
        .and_then(|g| g.store_metadata().map_err(Into::into))
        .map_err(|e| Error::corrupt(dir, FORMAT, format!("cannot write group metadata: {e}")))
}

/// Writes a whole array to `path` as zarr v3, atomically.
///
/// # Errors
/// See [`ZarrWriter::create`].
pub fn write_zarr(
    path: &VolumePath,
    array: &AnyArray,
    options: &ZarrOptions,
) -> Result<ZarrVolume> {
    let shape: Vec<u64> = array.shape().iter().map(|&n| n as u64).collect();
    let writer = ZarrWriter::create(path, &shape, array.dtype(), options)?;
    writer
        .volume()
        .write_roi(&Roi::from_shape(shape), array)
        .map_err(Error::volume(&path.display()))?;
    writer.commit()
}
