//! Creating zarr arrays: layout options, v2/v3 metadata, and the staged (atomic) writer.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use em_core::{AnyArray, ChunkedVolume, DType, Roi};
use serde_json::json;
use zarrs::array::codec::{
    BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode, GzipCodec, ZstdCodec,
};
use zarrs::array::data_type as dt;
use zarrs::array::{Array, ArrayBuilder, BytesToBytesCodecTraits, FillValue};
use zarrs::filesystem::FilesystemStore;

use super::{node_type, ZarrVolume, FORMAT};
use crate::atomic::AtomicDir;
use crate::format::VolumePath;
use crate::{IoError, Result};

/// Compression of newly written zarr chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// zstd at a level (1–22; 3 is zarr-python's default).
    Zstd(i32),
    /// gzip at a level (0–9).
    Gzip(u32),
    /// blosc with its lz4 compressor and byte shuffle, at a level (0–9).
    BloscLz4(u8),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

/// The zarr format version of a new array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZarrVersion {
    /// zarr v2 (`.zarray`): zarr-python 2, funlib.persistence, daisy.
    V2,
    /// zarr v3 (`zarr.json`): zarr-python 3, tensorstore, neuroglancer.
    V3,
}

/// How a new zarr array is laid out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZarrOptions {
    /// Chunk shape; `None` picks up to 64 voxels per spatial side (leading channel axes whole).
    pub chunk_shape: Option<Vec<u64>>,
    /// Chunk compression.
    pub compression: Compression,
    /// Format version; `None` follows an existing container (v2 if it is a v2 group) and
    /// is v3 otherwise.
    pub version: Option<ZarrVersion>,
}

/// A default chunk shape: up to 64 voxels per spatial side, channel axes whole.
fn default_chunks(shape: &[u64]) -> Vec<u64> {
    let n = shape.len();
    shape
        .iter()
        .enumerate()
        .map(|(i, &s)| if i + 3 >= n { s.clamp(1, 64) } else { s.max(1) })
        .collect()
}

/// Checks compression levels up front, so that both versions fail the same clear way.
fn check_compression(c: Compression) -> std::result::Result<(), String> {
    match c {
        Compression::Zstd(l) if !(-131_072..=22).contains(&l) => {
            Err(format!("zstd level {l}; allowed -131072..=22"))
        }
        Compression::Gzip(l) if l > 9 => Err(format!("gzip level {l}; allowed 0..=9")),
        Compression::BloscLz4(l) if l > 9 => Err(format!("blosc level {l}; allowed 0..=9")),
        _ => Ok(()),
    }
}

fn v3_codec(
    c: Compression,
    dtype: DType,
) -> std::result::Result<Option<Arc<dyn BytesToBytesCodecTraits>>, String> {
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

fn v3_dtype(dtype: DType) -> zarrs::array::DataType {
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

/// The `.zarray` document of the zarr v2 spec, as numcodecs names its compressors.
fn v2_metadata(shape: &[u64], chunks: &[u64], dtype: DType, c: Compression) -> serde_json::Value {
    let typestr = match dtype {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::F16 => "<f2",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
    };
    let compressor = match c {
        Compression::None => serde_json::Value::Null,
        Compression::Zstd(level) => json!({"id": "zstd", "level": level}),
        Compression::Gzip(level) => json!({"id": "gzip", "level": level}),
        Compression::BloscLz4(level) => {
            json!({"id": "blosc", "cname": "lz4", "clevel": level, "shuffle": 1, "blocksize": 0})
        }
    };
    let fill = if dtype == DType::Bool {
        json!(false)
    } else {
        json!(0)
    };
    json!({
        "zarr_format": 2,
        "shape": shape,
        "chunks": chunks,
        "dtype": typestr,
        "compressor": compressor,
        "fill_value": fill,
        "order": "C",
        "filters": null,
        "dimension_separator": ".",
    })
}

/// A new zarr array being written under a staging name; [`ZarrWriter::commit`] moves it into
/// place, and dropping it uncommitted removes it, so readers never see a partial array.
pub struct ZarrWriter {
    staged: AtomicDir,
    volume: ZarrVolume,
    target: VolumePath,
}

impl ZarrWriter {
    /// Starts a new array of `shape` and `dtype` at `path` (`out.zarr` or `out.zarr/key`;
    /// an existing array there is replaced on commit, other arrays in the container stay).
    ///
    /// # Errors
    /// I/O errors; [`IoError::Volume`] for a bad chunk shape or compression level;
    /// [`IoError::OutputRefused`] where the array would replace a group or a directory that is
    /// not an array, or sit inside an array.
    pub fn create(
        path: &VolumePath,
        shape: &[u64],
        dtype: DType,
        options: &ZarrOptions,
    ) -> Result<Self> {
        let display = path.display();
        let invalid = |name, reason| IoError::Volume {
            path: display.clone(),
            source: em_core::CoreError::InvalidParameter { name, reason },
        };
        let chunk_shape = options
            .chunk_shape
            .clone()
            .unwrap_or_else(|| default_chunks(shape));
        if chunk_shape.len() != shape.len() || chunk_shape.contains(&0) {
            return Err(invalid(
                "chunk shape",
                format!(
                    "{chunk_shape:?} for an array of shape {shape:?}; one positive side per axis"
                ),
            ));
        }
        check_compression(options.compression).map_err(|r| invalid("compression", r))?;
        // An existing array is replaced on commit; a group, a foreign directory or a path
        // below an array never is.
        crate::safety::zarr_target(path)?;
        let version = options
            .version
            .or_else(|| node_type_version(&path.container))
            .unwrap_or(ZarrVersion::V3);

        // The array itself is staged.
        let array_dir = create_groups_above(path, version)?;
        let staged = AtomicDir::create(&array_dir)?;
        let store = Arc::new(
            FilesystemStore::new(staged.staging())
                .map_err(|e| IoError::corrupt(&display, FORMAT, e.to_string()))?,
        );
        let array = match version {
            ZarrVersion::V2 => {
                let meta = v2_metadata(shape, &chunk_shape, dtype, options.compression);
                let file = staged.staging().join(".zarray");
                fs::write(&file, serde_json::to_vec_pretty(&meta).unwrap_or_default())
                    .map_err(IoError::io(&display))?;
                Array::open(store, "/").map_err(|e| {
                    IoError::corrupt(&display, FORMAT, format!("cannot create array: {e}"))
                })?
            }
            ZarrVersion::V3 => {
                let mut builder = ArrayBuilder::new(
                    shape.to_vec(),
                    chunk_shape,
                    v3_dtype(dtype),
                    FillValue::new(vec![0; dtype.size_bytes()]),
                );
                let codecs: Vec<_> = v3_codec(options.compression, dtype)
                    .map_err(|r| invalid("compression", r))?
                    .into_iter()
                    .collect();
                builder.bytes_to_bytes_codecs(codecs);
                let names: Option<Vec<&str>> = match shape.len() {
                    3 => Some(vec!["z", "y", "x"]),
                    4 => Some(vec!["c", "z", "y", "x"]),
                    _ => None,
                };
                builder.dimension_names(names);
                let array = builder.build(store, "/").map_err(|e| {
                    IoError::corrupt(&display, FORMAT, format!("cannot create array: {e}"))
                })?;
                array.store_metadata().map_err(|e| {
                    IoError::corrupt(&display, FORMAT, format!("cannot write metadata: {e}"))
                })?;
                array
            }
        };
        let volume = ZarrVolume::from_array(array, display, staged.staging().to_path_buf())?;
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

/// The directory `path` names, with the container and the groups above its key created in
/// place (an empty group does not look like a finished volume) and its parent directory
/// present, so that the node itself can be staged beside it.
pub(crate) fn create_groups_above(path: &VolumePath, version: ZarrVersion) -> Result<PathBuf> {
    let dir = match &path.key {
        None => path.container.clone(),
        Some(key) => {
            let mut dir = path.container.clone();
            create_group(&dir, version)?;
            let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
            for part in &parts[..parts.len().saturating_sub(1)] {
                dir.push(part);
                create_group(&dir, version)?;
            }
            path.container.join(key)
        }
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(IoError::io(parent))?;
    }
    Ok(dir)
}

/// The version of the group (or array) metadata in `dir`, if any.
pub(crate) fn node_type_version(dir: &Path) -> Option<ZarrVersion> {
    if dir.join(".zgroup").is_file() || dir.join(".zarray").is_file() {
        Some(ZarrVersion::V2)
    } else if node_type(dir).is_some() {
        Some(ZarrVersion::V3)
    } else {
        None
    }
}

/// Makes `dir` a group of the given version unless it already is a group.
fn create_group(dir: &Path, version: ZarrVersion) -> Result<()> {
    fs::create_dir_all(dir).map_err(IoError::io(dir))?;
    if node_type(dir) == Some("group") {
        return Ok(());
    }
    let (name, doc) = match version {
        ZarrVersion::V2 => (".zgroup", json!({"zarr_format": 2})),
        ZarrVersion::V3 => (
            "zarr.json",
            json!({"zarr_format": 3, "node_type": "group", "attributes": {}}),
        ),
    };
    let file = dir.join(name);
    fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap_or_default())
        .map_err(IoError::io(&file))
}

/// Writes a whole array to `path`, atomically (v3 with zstd unless `options` say otherwise).
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
        .map_err(IoError::volume(&path.display()))?;
    writer.commit()
}
