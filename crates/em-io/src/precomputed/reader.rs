//! Reading a precomputed scale region by region, from unsharded chunk files or `.shard`
//! files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use em_core::{check_read, AnyArray, ChunkedVolume, DType, Roi};
use ndarray::{s, Array4, Axis};
use rayon::prelude::*;

use super::chunk::{self, Grid, NgElement};
use super::info::{Encoding, Info, Scale};
use super::shard::{compressed_morton_code, morton_bits, parse_minishard_index, MinishardEntry};
use super::FORMAT;
use crate::dispatch::dispatch_dtype;
use crate::format::{Format, VolumePath};
use crate::{IoError, Result};

/// Decoded minishard indices by (shard, minishard).
type MinishardCache = HashMap<(u64, u64), Arc<Vec<MinishardEntry>>>;

/// Minishard indices kept in memory before the cache starts over.
const CACHED_MINISHARDS: usize = 4096;

/// One scale of a neuroglancer precomputed volume, opened for region reads.
///
/// Its shape is `(Z, Y, X)`, or `(C, Z, Y, X)` with several channels; voxel 0 is the scale's
/// `voxel_offset`. Chunks that are not stored read as 0. Read-only: new volumes are written
/// with [`super::PrecomputedWriter`].
pub struct PrecomputedVolume {
    dir: PathBuf,
    display: PathBuf,
    info: Info,
    scale: usize,
    grid: Grid,
    shape: Vec<u64>,
    chunk_shape: Vec<u64>,
    minishards: Mutex<MinishardCache>,
}

impl std::fmt::Debug for PrecomputedVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrecomputedVolume")
            .field("path", &self.display)
            .field("scale", &self.scale().key)
            .field("shape", &self.shape)
            .field("dtype", &self.info.data_type)
            .finish()
    }
}

/// Reads the `info` file of the precomputed directory `dir`.
pub(crate) fn read_info(dir: &Path) -> Result<Info> {
    let file = dir.join("info");
    if !dir.is_dir() {
        return Err(IoError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such precomputed directory",
            ),
        });
    }
    let text = std::fs::read_to_string(&file).map_err(IoError::io(&file))?;
    Info::parse(&file, &text)
}

impl PrecomputedVolume {
    /// Opens `path`: `DIR.precomputed` (its first scale) or `DIR.precomputed/KEY` (the scale
    /// whose key is `KEY`).
    ///
    /// # Errors
    /// [`IoError::Io`] for a missing directory or `info`; [`IoError::Corrupt`] for a bad
    /// `info`; [`IoError::KeyNotFound`] (listing the scales) for an unknown key;
    /// [`IoError::UnsupportedDType`] for an encoding other than raw or
    /// compressed_segmentation.
    pub fn open(path: &VolumePath) -> Result<Self> {
        let display = path.display();
        crate::atomic::recover(&path.container);
        let info = read_info(&path.container)?;
        let scale = match &path.key {
            None => 0,
            Some(key) => info.scale_index(key).ok_or_else(|| IoError::KeyNotFound {
                path: path.container.clone(),
                what: "scale",
                key: key.clone(),
                available: info.scales.iter().map(|s| s.key.clone()).collect(),
            })?,
        };
        let s = &info.scales[scale];
        if let Encoding::Other(name) = &s.encoding {
            return Err(IoError::unsupported(
                &display,
                FORMAT,
                "reading",
                format!("{name}-encoded"),
                "raw and compressed_segmentation chunks",
            ));
        }
        let grid = Grid::of(s);
        if s.sharding.is_some() && morton_bits(grid.shape()) > 64 {
            return Err(IoError::corrupt(
                &path.container.join("info"),
                FORMAT,
                format!(
                    "scales[{scale}]: a sharded grid of {:?} chunks has ids over 64 bits",
                    grid.shape()
                ),
            ));
        }
        let zyx = |v: [u64; 3]| [v[2], v[1], v[0]];
        let mut shape = zyx(s.size).to_vec();
        let mut chunk_shape = zyx(s.chunk_size.map(|c| c.max(1))).to_vec();
        if info.num_channels > 1 {
            shape.insert(0, info.num_channels);
            chunk_shape.insert(0, info.num_channels);
        }
        Ok(Self {
            dir: path.container.clone(),
            display,
            grid,
            shape,
            chunk_shape,
            info,
            scale,
            minishards: Mutex::new(HashMap::new()),
        })
    }

    /// Opens a path that must name a precomputed volume.
    ///
    /// # Errors
    /// As [`PrecomputedVolume::open`]; [`IoError::UnknownFormat`] for another format.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        let vp = VolumePath::parse(path.as_ref())?;
        if vp.format != Format::Precomputed {
            return Err(IoError::UnknownFormat {
                path: path.as_ref().to_path_buf(),
            });
        }
        Self::open(&vp)
    }

    /// The whole `info` document.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The scale this volume reads.
    pub fn scale(&self) -> &Scale {
        &self.info.scales[self.scale]
    }

    /// Voxel size in nm, (z, y, x).
    pub fn resolution_nm(&self) -> [f64; 3] {
        let r = self.scale().resolution;
        [r[2], r[1], r[0]]
    }

    /// Global position of voxel 0, (z, y, x).
    pub fn voxel_offset(&self) -> [i64; 3] {
        let o = self.scale().voxel_offset;
        [o[2], o[1], o[0]]
    }

    /// The volume's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn scale_dir(&self) -> PathBuf {
        self.dir.join(self.scale().key.trim_matches('/'))
    }

    fn corrupt(&self, file: &Path, reason: impl Into<String>) -> IoError {
        IoError::corrupt(file, FORMAT, reason)
    }

    /// The stored bytes of chunk `pos` (decompressed where stored compressed), or `None`
    /// when the chunk is not stored.
    fn chunk_bytes(&self, pos: [u64; 3], limit: u64) -> Result<Option<Vec<u8>>> {
        match self.scale().sharding {
            None => self.unsharded_bytes(pos, limit),
            Some(_) => self.sharded_bytes(pos, limit),
        }
    }

    fn unsharded_bytes(&self, pos: [u64; 3], limit: u64) -> Result<Option<Vec<u8>>> {
        let name = self.grid.file_name(pos);
        let plain = self.scale_dir().join(&name);
        let gz = self.scale_dir().join(format!("{name}.gz"));
        for (file, gzipped) in [(&plain, false), (&gz, true)] {
            let mut f = match File::open(file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(IoError::io(file)(e)),
            };
            let stored = f.metadata().map_err(IoError::io(file))?.len();
            // gzip adds a little to incompressible data; a larger file is not a chunk.
            if stored > limit.saturating_add(limit / 64).saturating_add(4096) {
                return Err(self.corrupt(
                    file,
                    format!("{stored} bytes, more than a chunk of this scale can be ({limit})"),
                ));
            }
            let mut bytes = Vec::with_capacity(stored as usize);
            f.read_to_end(&mut bytes).map_err(IoError::io(file))?;
            // Servers and CloudVolume store chunks gzip-compressed (with a `.gz` name or
            // without); a raw chunk of the right length is never taken for gzip data.
            let (_, size) = self.chunk_geometry(pos);
            let raw_len = self.raw_len(size);
            let compressed = gzipped
                || (chunk::is_gzip(&bytes)
                    && !(self.scale().encoding == Encoding::Raw && bytes.len() as u64 == raw_len));
            return if compressed {
                chunk::gunzip(&bytes, limit)
                    .map(Some)
                    .map_err(|e| self.corrupt(file, e))
            } else {
                Ok(Some(bytes))
            };
        }
        Ok(None)
    }

    fn read_at(&self, file: &mut File, path: &Path, start: u64, len: u64) -> Result<Vec<u8>> {
        let file_len = file.metadata().map_err(IoError::io(path))?.len();
        if start.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(self.corrupt(
                path,
                format!(
                    "bytes {start}..{} lie past the end of the {file_len}-byte shard",
                    start.saturating_add(len)
                ),
            ));
        }
        let mut buf = vec![0; len as usize];
        file.seek(SeekFrom::Start(start))
            .map_err(IoError::io(path))?;
        file.read_exact(&mut buf).map_err(IoError::io(path))?;
        Ok(buf)
    }

    fn sharded_bytes(&self, pos: [u64; 3], limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(spec) = self.scale().sharding else {
            return Ok(None);
        };
        let id = compressed_morton_code(pos, self.grid.shape());
        let (shard, minishard) = spec.locate(id);
        let path = self.scale_dir().join(spec.shard_file(shard));
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IoError::io(&path)(e)),
        };
        let index_len = spec.index_bytes();
        let cached = self
            .minishards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(shard, minishard))
            .cloned();
        let entries = match cached {
            Some(e) => e,
            None => {
                let range = self.read_at(&mut file, &path, 16 * minishard, 16)?;
                let start = u64::from_le_bytes(range[..8].try_into().unwrap_or_default());
                let end = u64::from_le_bytes(range[8..].try_into().unwrap_or_default());
                let entries = if start == end {
                    Vec::new()
                } else if end < start {
                    return Err(self.corrupt(
                        &path,
                        format!(
                            "minishard {minishard} index ends ({end}) before it starts ({start})"
                        ),
                    ));
                } else {
                    let raw = self.read_at(
                        &mut file,
                        &path,
                        index_len.saturating_add(start),
                        end - start,
                    )?;
                    let raw = if spec.minishard_index_gzip {
                        chunk::gunzip(&raw, 1 << 30).map_err(|e| {
                            self.corrupt(&path, format!("minishard {minishard} index: {e}"))
                        })?
                    } else {
                        raw
                    };
                    parse_minishard_index(&raw)
                        .map_err(|e| self.corrupt(&path, format!("minishard {minishard}: {e}")))?
                };
                let entries = Arc::new(entries);
                let mut cache = self.minishards.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= CACHED_MINISHARDS {
                    cache.clear();
                }
                cache.insert((shard, minishard), entries.clone());
                entries
            }
        };
        let Some(entry) = entries.iter().find(|e| e.id == id) else {
            return Ok(None);
        };
        // gzip adds a little to incompressible data; anything beyond is a corrupt index.
        let max_stored = if spec.data_gzip {
            limit.saturating_add(limit / 64).saturating_add(4096)
        } else {
            limit
        };
        if entry.size > max_stored {
            return Err(self.corrupt(
                &path,
                format!(
                    "chunk {id} is {} bytes, more than a chunk of this scale can be",
                    entry.size
                ),
            ));
        }
        let bytes = self.read_at(
            &mut file,
            &path,
            index_len.saturating_add(entry.start),
            entry.size,
        )?;
        if spec.data_gzip {
            chunk::gunzip(&bytes, limit)
                .map(Some)
                .map_err(|e| self.corrupt(&path, format!("chunk {id}: {e}")))
        } else {
            Ok(Some(bytes))
        }
    }

    /// Start (x, y, z) and clipped size of chunk `pos`.
    fn chunk_geometry(&self, pos: [u64; 3]) -> ([u64; 3], [u64; 3]) {
        let (start, end) = self.grid.bounds(pos);
        (start, std::array::from_fn(|i| end[i] - start[i]))
    }

    fn raw_len(&self, size: [u64; 3]) -> u64 {
        size.iter().product::<u64>()
            * self.info.num_channels
            * self.info.data_type.size_bytes() as u64
    }

    /// The decoded chunk `pos`: `(C, z, y, x)` values of its clipped extent, or `None` for a
    /// chunk that is not stored.
    fn load_chunk<T: NgElement>(&self, pos: [u64; 3]) -> Result<Option<Array4<T>>> {
        let (_, size) = self.chunk_geometry(pos);
        let raw = self.raw_len(size);
        let limit = match self.scale().encoding {
            Encoding::Raw => raw,
            _ => chunk::encoded_limit(raw),
        };
        let Some(bytes) = self.chunk_bytes(pos, limit)? else {
            return Ok(None);
        };
        let values =
            chunk::decode::<T>(&bytes, size, self.info.num_channels, &self.scale().encoding)
                .map_err(|e| self.chunk_error(pos, e))?;
        let shape = (
            self.info.num_channels as usize,
            size[2] as usize,
            size[1] as usize,
            size[0] as usize,
        );
        Array4::from_shape_vec(shape, values)
            .map(Some)
            .map_err(|e| self.chunk_error(pos, e.to_string()))
    }

    /// An error about the content of chunk `pos`, naming its file (and, sharded, the chunk).
    fn chunk_error(&self, pos: [u64; 3], reason: String) -> IoError {
        let name = self.grid.file_name(pos);
        match self.scale().sharding {
            Some(spec) => {
                let id = compressed_morton_code(pos, self.grid.shape());
                let file = self.scale_dir().join(spec.shard_file(spec.locate(id).0));
                self.corrupt(&file, format!("chunk {name} (id {id}): {reason}"))
            }
            None => self.corrupt(&self.scale_dir().join(name), reason),
        }
    }

    fn read_typed<T: NgElement>(&self, roi: &Roi) -> Result<AnyArray> {
        let spatial = if self.info.num_channels > 1 {
            roi.without_leading_axis()
        } else {
            roi.clone()
        };
        let (c0, c1) = if self.info.num_channels > 1 {
            (roi.start()[0] as usize, roi.end()[0] as usize)
        } else {
            (0, 1)
        };
        let zyx_start = spatial.start();
        let zyx_end = spatial.end();
        let start = [zyx_start[2], zyx_start[1], zyx_start[0]];
        let end = [zyx_end[2], zyx_end[1], zyx_end[0]];
        let mut out = Array4::<T>::default((
            c1 - c0,
            (end[2] - start[2]) as usize,
            (end[1] - start[1]) as usize,
            (end[0] - start[0]) as usize,
        ));
        let chunks = self.grid.chunks_in(start, end);
        // Batches bound the decoded chunks held at once to a few per thread.
        let batch = rayon::current_num_threads().max(1) * 4;
        for group in chunks.chunks(batch) {
            let loaded: Vec<([u64; 3], Option<Array4<T>>)> = group
                .par_iter()
                .map(|&pos| Ok((pos, self.load_chunk::<T>(pos)?)))
                .collect::<Result<_>>()?;
            for (pos, data) in loaded {
                let Some(data) = data else { continue };
                let (cs, _) = self.chunk_geometry(pos);
                let (_, ce) = self.grid.bounds(pos);
                let lo: [u64; 3] = std::array::from_fn(|i| start[i].max(cs[i]));
                let hi: [u64; 3] = std::array::from_fn(|i| end[i].min(ce[i]));
                let src = data.slice(s![
                    c0..c1,
                    (lo[2] - cs[2]) as usize..(hi[2] - cs[2]) as usize,
                    (lo[1] - cs[1]) as usize..(hi[1] - cs[1]) as usize,
                    (lo[0] - cs[0]) as usize..(hi[0] - cs[0]) as usize
                ]);
                out.slice_mut(s![
                    ..,
                    (lo[2] - start[2]) as usize..(hi[2] - start[2]) as usize,
                    (lo[1] - start[1]) as usize..(hi[1] - start[1]) as usize,
                    (lo[0] - start[0]) as usize..(hi[0] - start[0]) as usize
                ])
                .assign(&src);
            }
        }
        let out = out.into_dyn();
        let out = if self.info.num_channels > 1 {
            out
        } else {
            out.index_axis_move(Axis(0), 0)
        };
        Ok(T::into_any(out))
    }
}

impl ChunkedVolume for PrecomputedVolume {
    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn chunk_shape(&self) -> &[u64] {
        &self.chunk_shape
    }

    fn dtype(&self) -> DType {
        self.info.data_type
    }

    fn describe(&self) -> String {
        format!(
            "precomputed {} volume {} (scale {})",
            self.info.layer_type.name(),
            self.dir.display(),
            self.scale().key
        )
    }

    fn read_roi(&self, roi: &Roi) -> em_core::Result<AnyArray> {
        check_read(self, roi)?;
        let dtype = self.info.data_type;
        Ok(
            dispatch_dtype!(precomputed, dtype, T => self.read_typed::<T>(roi)?, _ => {
                return Err(IoError::unsupported(&self.display, FORMAT, "reading", dtype.name(), super::info::SUPPORTED).into())
            }),
        )
    }

    fn write_roi(&self, _roi: &Roi, _data: &AnyArray) -> em_core::Result<()> {
        Err(IoError::Volume {
            path: self.display.clone(),
            source: em_core::CoreError::InvalidParameter {
                name: "region write",
                reason: "precomputed volumes are opened read-only; write a new one with \
                         PrecomputedWriter or `em convert`"
                    .into(),
            },
        }
        .into())
    }
}
