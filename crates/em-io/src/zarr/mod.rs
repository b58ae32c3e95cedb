//! zarr v2 and v3 arrays on the local file system through `zarrs`.
//!
//! Any array zarrs opens can be read and written by region (v2 with blosc, zstd, gzip …;
//! v3 with any of zarrs' codecs, sharding included). New arrays are zarr v3 with zstd by
//! default (zarr-python 3, tensorstore, neuroglancer), or zarr v2 on request or inside an
//! existing v2 container (zarr-python 2, funlib/daisy pipelines).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use em_core::{check_read, check_write, AnyArray, ChunkedVolume, DType, Roi};
use ndarray::ArrayD;
use zarrs::array::{Array, ArraySubset};
use zarrs::filesystem::FilesystemStore;

use crate::dispatch::dispatch_dtype;
use crate::format::VolumePath;
use crate::{IoError, Result};

mod writer;

pub(crate) use writer::{create_groups_above, node_type_version};
pub use writer::{write_zarr, Compression, ZarrOptions, ZarrVersion, ZarrWriter};

const FORMAT: &str = "zarr";

/// A zarr array opened for region reads and writes.
pub struct ZarrVolume {
    array: Array<FilesystemStore>,
    display: PathBuf,
    /// The array's directory (its staging directory while a writer builds it).
    dir: PathBuf,
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

pub(crate) fn array_path(key: Option<&str>) -> String {
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
        return Err(IoError::unsupported(
            path,
            FORMAT,
            "reading",
            format!("{d:?}"),
            "bool, (u)int8/16/32/64, float16/32/64",
        ));
    })
}

/// What the metadata in `dir` declares: `Some("array")`, `Some("group")` or `None`.
pub(crate) fn node_type(dir: &Path) -> Option<&'static str> {
    if dir.join(".zarray").is_file() {
        return Some("array");
    }
    if dir.join(".zgroup").is_file() {
        return Some("group");
    }
    let text = fs::read_to_string(dir.join("zarr.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
    match meta.get("node_type")?.as_str()? {
        "array" => Some("array"),
        "group" => Some("group"),
        _ => None,
    }
}

/// Arrays (v2 or v3) below a zarr directory, as keys, for "not found" messages.
pub(crate) fn list_arrays(container: &Path) -> Vec<String> {
    fn is_array(dir: &Path) -> bool {
        node_type(dir) == Some("array")
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
    /// [`IoError::Io`] if the directory is missing, [`IoError::KeyNotFound`] (listing the arrays
    /// that exist) if no array is at the key, [`IoError::Corrupt`] for bad metadata.
    pub fn open(path: &VolumePath) -> Result<Self> {
        let display = path.display();
        // A replacement interrupted on a file system without atomic exchange leaves the
        // array aside; it comes back before anything looks for it.
        crate::atomic::recover(&path.container.join(path.key.as_deref().unwrap_or("")));
        if !path.container.is_dir() {
            return Err(IoError::Io {
                path: path.container.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such zarr directory"),
            });
        }
        let store = Arc::new(
            FilesystemStore::new(&path.container)
                .map_err(|e| IoError::corrupt(&display, FORMAT, e.to_string()))?,
        );
        let node = path.container.join(path.key.as_deref().unwrap_or(""));
        // Unreadable metadata is left to zarrs, whose error says what is wrong with it.
        let has_metadata = node.join("zarr.json").is_file() || node.join(".zarray").is_file();
        if !has_metadata || node_type(&node) == Some("group") {
            return Err(IoError::KeyNotFound {
                path: path.container.clone(),
                what: "array",
                key: path.key.clone().unwrap_or_else(|| "/".into()),
                available: list_arrays(&path.container),
            });
        }
        let array = Array::open(store, &array_path(path.key.as_deref()))
            .map_err(|e| IoError::corrupt(&display, FORMAT, format!("cannot open array: {e}")))?;
        Self::from_array(array, display, node)
    }

    pub(crate) fn from_array(
        array: Array<FilesystemStore>,
        display: PathBuf,
        dir: PathBuf,
    ) -> Result<Self> {
        let dtype = map_dtype(&display, array.data_type())?;
        let shape = array.shape().to_vec();
        let chunk_shape = array
            .chunk_shape(&vec![0; shape.len()])
            .map_err(|e| IoError::corrupt(&display, FORMAT, e.to_string()))?
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
            dir,
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

/// The chunk-grid index a stored chunk key names (`c/1/2/3`, `c.1.2.3`, `1.2.3` or
/// `1/2/3`, as zarr v2 and v3 spell them), if it is one inside `grid`.
fn chunk_index(key: &str, grid: &[u64]) -> Option<Vec<u64>> {
    let parts: Vec<&str> = key.split(['/', '.']).collect();
    let parts = match parts.as_slice() {
        ["c", rest @ ..] if rest.len() == grid.len() => rest,
        all => all,
    };
    if parts.len() != grid.len() {
        return None;
    }
    let index: Vec<u64> = parts
        .iter()
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    index.iter().zip(grid).all(|(i, g)| i < g).then_some(index)
}

/// Collects the chunk indices stored below `dir`; `None` as soon as a file is not a chunk
/// key this reader understands (then nothing is known about what is stored).
fn walk_chunks(
    root: &Path,
    dir: &Path,
    depth: usize,
    grid: &[u64],
    out: &mut Vec<Vec<u64>>,
) -> Option<()> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "zarr.json" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            if depth == 0 {
                return None;
            }
            walk_chunks(root, &path, depth - 1, grid, out)?;
        } else {
            let rel = path.strip_prefix(root).ok()?;
            out.push(chunk_index(
                &rel.to_string_lossy().replace('\\', "/"),
                grid,
            )?);
        }
    }
    Some(())
}

impl ChunkedVolume for ZarrVolume {
    fn stored_chunks(&self) -> Option<Vec<Vec<u64>>> {
        if self.shape.is_empty() {
            return None;
        }
        let grid: Vec<u64> = self
            .shape
            .iter()
            .zip(&self.chunk_shape)
            .map(|(n, c)| n.div_ceil((*c).max(1)))
            .collect();
        let mut out = Vec::new();
        walk_chunks(&self.dir, &self.dir, grid.len() + 1, &grid, &mut out)?;
        Some(out)
    }

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
        check_read(self, roi)?;
        let subset = Self::subset(roi);
        let bad = |e: zarrs::array::ArrayError| -> em_core::CoreError {
            IoError::corrupt(&self.display, FORMAT, format!("reading {roi}: {e}")).into()
        };
        Ok(dispatch_dtype!(all, self.dtype,
            T => AnyArray::from(
                self.array
                    .retrieve_array_subset::<ArrayD<T>>(&subset)
                    .map_err(bad)?,
            )
        ))
    }

    fn write_roi(&self, roi: &Roi, data: &AnyArray) -> em_core::Result<()> {
        check_write(self, roi, data)?;
        let subset = Self::subset(roi);
        let bad = |e: zarrs::array::ArrayError| -> em_core::CoreError {
            IoError::corrupt(&self.display, FORMAT, format!("writing {roi}: {e}")).into()
        };
        dispatch_dtype!(all, data,
            AnyArray(a) => self
                .array
                // A borrowed slice: no copy of the block unless it is strided.
                .store_array_subset(&subset, a.as_standard_layout().as_slice().unwrap_or_default())
                .map_err(bad),
            other => Err(em_core::CoreError::DTypeMismatch {
                expected: self.dtype,
                found: other.dtype(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_of_every_encoding_parse() {
        let grid = [2, 3, 4];
        for key in ["c/1/2/3", "c.1.2.3", "1.2.3", "1/2/3"] {
            assert_eq!(chunk_index(key, &grid), Some(vec![1, 2, 3]), "{key}");
        }
        assert_eq!(chunk_index("c/2/0/0", &grid), None, "outside the grid");
        assert_eq!(chunk_index("1.2", &grid), None);
        assert_eq!(chunk_index("notes.txt", &grid), None);
    }
}
