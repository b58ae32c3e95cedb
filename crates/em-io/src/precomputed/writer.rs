//! Writing a new precomputed volume: options, the staged streaming writer, and the
//! whole-array and volume-to-volume conveniences.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use em_core::{AnyArray, ChunkedVolume, DType, Progress, Roi};
use ndarray::{s, ArrayView4, Axis};
use rayon::prelude::*;

use super::chunk::{self, Grid, NgElement};
use super::info::{dtype_name, Encoding, Info, LayerType, Scale, SUPPORTED};
use super::shard::{build_shard, compressed_morton_code, ShardingSpec};
use super::{PrecomputedVolume, FORMAT};
use crate::atomic::AtomicDir;
use crate::dispatch::dispatch_dtype;
use crate::format::{Format, VolumePath};
use crate::{IoError, Result};

/// Chunk encoding of a new precomputed volume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrecomputedEncoding {
    /// Little-endian values; any element type.
    #[default]
    Raw,
    /// compressed_segmentation: uint32 and uint64 labels only, typically 0.01–0.1 of the
    /// raw size.
    CompressedSegmentation,
}

/// Whether and how chunks are gathered into `.shard` files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sharding {
    /// One file per chunk.
    #[default]
    Off,
    /// Shards picked from the volume size ([`ShardingSpec::for_volume`]): each an aligned
    /// box of up to 512 neighbouring chunks, gzip data if [`PrecomputedOptions::gzip`].
    Auto,
    /// These parameters, encodings included ([`PrecomputedOptions::gzip`] is ignored).
    Spec(ShardingSpec),
}

/// How a new precomputed volume is laid out. Shapes are (z, y, x) like the volumes;
/// `info` stores them as x, y, z.
#[derive(Clone, Debug, PartialEq)]
pub struct PrecomputedOptions {
    /// Chunk encoding.
    pub encoding: PrecomputedEncoding,
    /// compressed_segmentation block shape (z, y, x).
    pub block_shape: [u64; 3],
    /// Chunk shape (z, y, x); `None`: 64 per side, less where the volume is smaller.
    pub chunk_shape: Option<[u64; 3]>,
    /// gzip chunk data: sharded, in the shard files (`data_encoding: gzip`); unsharded, as
    /// `NAME.gz` files, the CloudVolume convention (neuroglancer needs a server that sends
    /// them as `NAME` with `Content-Encoding: gzip`; tensorstore does not read them).
    pub gzip: bool,
    /// Sharded layout.
    pub sharding: Sharding,
    /// Layer type; `None`: segmentation for one channel of uint32/uint64, else image.
    pub layer_type: Option<LayerType>,
    /// Voxel size (z, y, x) in nm.
    pub voxel_size: [f64; 3],
    /// The scale's key (its directory); `None`: the key in the path
    /// (`out.precomputed/KEY`), else the resolution, e.g. `4_4_40`.
    pub scale_key: Option<String>,
}

impl Default for PrecomputedOptions {
    fn default() -> Self {
        Self {
            encoding: PrecomputedEncoding::Raw,
            block_shape: [8, 8, 8],
            chunk_shape: None,
            gzip: false,
            sharding: Sharding::Off,
            layer_type: None,
            voxel_size: [1.0, 1.0, 1.0],
            scale_key: None,
        }
    }
}

/// A number as neuroglancer's scale keys write it: `4`, not `4.0`.
fn key_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A chunk id and its encoded bytes.
type EncodedChunk = (u64, Vec<u8>);

/// Chunks of one shard received so far.
#[derive(Default)]
struct OpenShard {
    received: u64,
    seen: HashSet<u64>,
    chunks: Vec<EncodedChunk>,
}

/// Shards being filled: each is written once all its chunks have arrived.
struct ShardState {
    spec: ShardingSpec,
    expected: HashMap<u64, u64>,
    open: HashMap<u64, OpenShard>,
    done: HashSet<u64>,
}

/// A new precomputed volume (one scale) built under a staging name beside its target;
/// [`PrecomputedWriter::commit`] moves it into place whole, and dropping it uncommitted
/// removes it.
///
/// Regions are written with [`PrecomputedWriter::write_region`], chunk-aligned, in any
/// order and from several threads; each region's chunks are encoded in parallel. Unsharded,
/// each chunk goes to its file at once. Sharded, the encoded chunks of a shard are held in
/// memory until the shard's last chunk arrives, then written as one file: the memory this
/// takes is the encoded size of the shards that are partly written. With
/// [`Sharding::Auto`] a shard is an aligned box of neighbouring chunks (up to 256 MiB of
/// raw data), so writing shard by shard, as [`copy_to_precomputed`] does, holds one shard;
/// with a hashed layout (`murmurhash3_x86_128`) shards complete only at the end and the
/// whole encoded volume is held.
pub struct PrecomputedWriter {
    staged: AtomicDir,
    target: PathBuf,
    key: String,
    info: Info,
    grid: Grid,
    shape: Vec<u64>,
    gzip_files: bool,
    shards: Option<Mutex<ShardState>>,
}

impl std::fmt::Debug for PrecomputedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrecomputedWriter")
            .field("target", &self.target)
            .field("shape", &self.shape)
            .finish()
    }
}

fn invalid(path: &Path, name: &'static str, reason: String) -> IoError {
    IoError::Volume {
        path: path.to_path_buf(),
        source: em_core::CoreError::InvalidParameter { name, reason },
    }
}

fn zyx_to_xyz<T: Copy>(v: [T; 3]) -> [T; 3] {
    [v[2], v[1], v[0]]
}

impl PrecomputedWriter {
    /// Starts a new volume of `shape` — `(Z, Y, X)`, or `(C, Z, Y, X)` with channels — and
    /// `dtype` at `path` (`out.precomputed`, or `out.precomputed/KEY` to name the scale). An
    /// existing precomputed volume there is replaced on commit.
    ///
    /// # Errors
    /// [`IoError::UnsupportedDType`] for types precomputed cannot hold (bool, int64, float16,
    /// float64) and compressed_segmentation of types other than uint32/uint64;
    /// [`IoError::Volume`] for a bad shape, chunk or block shape, voxel size or sharding;
    /// [`IoError::OutputRefused`] where the target is a file or a directory that is not a
    /// precomputed volume; I/O errors.
    pub fn create(
        path: impl AsRef<Path>,
        shape: &[u64],
        dtype: DType,
        options: &PrecomputedOptions,
    ) -> Result<Self> {
        let given = path.as_ref();
        let vp = VolumePath::parse(given)?;
        if vp.format != Format::Precomputed {
            return Err(IoError::UnknownFormat {
                path: given.to_path_buf(),
            });
        }
        let display = vp.display();
        if dtype_name(dtype).is_none() {
            return Err(IoError::unsupported(
                &display,
                FORMAT,
                "writing",
                dtype.name(),
                SUPPORTED,
            ));
        }
        let cseg = options.encoding == PrecomputedEncoding::CompressedSegmentation;
        if cseg && !matches!(dtype, DType::U32 | DType::U64) {
            return Err(IoError::unsupported(
                &display,
                "precomputed compressed_segmentation",
                "writing",
                dtype.name(),
                "uint32, uint64 (use the raw encoding for other types)",
            ));
        }
        let (channels, spatial) = match shape {
            [z, y, x] => (1, [*z, *y, *x]),
            [c, z, y, x] => (*c, [*z, *y, *x]),
            _ => {
                return Err(invalid(
                    &display,
                    "shape",
                    format!("{shape:?}; precomputed volumes are (Z, Y, X) or (C, Z, Y, X)"),
                ))
            }
        };
        if channels == 0 || spatial.contains(&0) {
            return Err(invalid(
                &display,
                "shape",
                format!("{shape:?} has a side of 0"),
            ));
        }
        let chunk_zyx = options
            .chunk_shape
            .unwrap_or_else(|| std::array::from_fn(|i| spatial[i].min(64)));
        if chunk_zyx.contains(&0) {
            return Err(invalid(
                &display,
                "chunk shape",
                format!("{chunk_zyx:?} has a side of 0"),
            ));
        }
        let chunk_bytes = chunk_zyx.iter().try_fold(
            channels.saturating_mul(dtype.size_bytes() as u64),
            |a, &n| a.checked_mul(n),
        );
        if chunk_bytes.is_none_or(|b| b > 1 << 31) {
            return Err(invalid(
                &display,
                "chunk shape",
                format!("{chunk_zyx:?} makes chunks over 2 GiB"),
            ));
        }
        if options.block_shape.contains(&0) || options.block_shape.iter().product::<u64>() > 1 << 24
        {
            return Err(invalid(
                &display,
                "block shape",
                format!(
                    "{:?}; sides must be positive, at most 2^24 voxels in all",
                    options.block_shape
                ),
            ));
        }
        if options
            .voxel_size
            .iter()
            .any(|v| !v.is_finite() || *v <= 0.0)
        {
            return Err(invalid(
                &display,
                "voxel size",
                format!("{:?}; voxel sides must be positive", options.voxel_size),
            ));
        }
        let size = zyx_to_xyz(spatial);
        let chunk_size = zyx_to_xyz(chunk_zyx);
        let resolution = zyx_to_xyz(options.voxel_size);
        let grid = Grid {
            size,
            chunk: chunk_size,
            offset: [0; 3],
        };
        let sharding = match options.sharding {
            Sharding::Off => None,
            Sharding::Auto => Some(ShardingSpec::for_volume(
                grid.shape(),
                chunk_bytes.unwrap_or(0),
                options.gzip,
            )),
            Sharding::Spec(spec) => Some(spec),
        };
        if let Some(spec) = &sharding {
            spec.check_writable(grid.shape())
                .map_err(|r| invalid(&display, "sharding", r))?;
        }
        let key = options
            .scale_key
            .clone()
            .or_else(|| vp.key.clone())
            .unwrap_or_else(|| resolution.map(key_number).join("_"));
        let key = key.trim_matches('/').to_string();
        if key.is_empty()
            || key
                .split('/')
                .any(|p| p == ".." || p == "." || p.is_empty())
        {
            return Err(invalid(
                &display,
                "scale key",
                format!("{key:?}; a relative path inside the volume"),
            ));
        }
        let layer_type = options.layer_type.unwrap_or(
            if channels == 1 && matches!(dtype, DType::U32 | DType::U64) {
                LayerType::Segmentation
            } else {
                LayerType::Image
            },
        );
        let encoding = if cseg {
            Encoding::CompressedSegmentation {
                block_size: zyx_to_xyz(options.block_shape),
            }
        } else {
            Encoding::Raw
        };
        let info = Info {
            layer_type,
            data_type: dtype,
            num_channels: channels,
            scales: vec![Scale {
                key: key.clone(),
                size,
                voxel_offset: [0; 3],
                resolution,
                chunk_size,
                encoding,
                sharding,
            }],
            extra: serde_json::Map::new(),
        };
        // A file or a foreign directory is never replaced, whatever the caller allowed.
        crate::safety::precomputed_target(&vp)?;
        if let Some(parent) = vp.container.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(IoError::io(parent))?;
        }
        let shards = match sharding {
            None => None,
            Some(spec) => {
                let mut expected: HashMap<u64, u64> = HashMap::new();
                let gs = grid.shape();
                for pos in grid.chunks_in([0; 3], size) {
                    *expected
                        .entry(spec.locate(compressed_morton_code(pos, gs)).0)
                        .or_default() += 1;
                }
                Some(Mutex::new(ShardState {
                    spec,
                    expected,
                    open: HashMap::new(),
                    done: HashSet::new(),
                }))
            }
        };
        let staged = AtomicDir::create(&vp.container)?;
        let scale_dir = staged.staging().join(&key);
        std::fs::create_dir_all(&scale_dir).map_err(IoError::io(&display))?;
        Ok(Self {
            staged,
            target: vp.container.clone(),
            key,
            info,
            grid,
            shape: shape.to_vec(),
            gzip_files: options.gzip && sharding.is_none(),
            shards,
        })
    }

    /// The volume's shape, `(Z, Y, X)` or `(C, Z, Y, X)`.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The chunk shape (z, y, x).
    pub fn chunk_shape(&self) -> [u64; 3] {
        let c = self.grid.chunk;
        [c[2], c[1], c[0]]
    }

    /// The `info` document that commit writes.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The chunk-aligned block (z, y, x voxels) that [`copy_to_precomputed`] reads and
    /// writes at once: with a layout whose shards are boxes of chunks
    /// ([`Sharding::Auto`]), one shard, so that each shard completes within one block;
    /// else chunks along x, then y, then z, up to [`COPY_BLOCK_BYTES`] of raw data (at least
    /// one chunk).
    fn copy_block(&self) -> [u64; 3] {
        let grid = self.grid.shape();
        let shard_box = self.shards.as_ref().and_then(|state| {
            let spec = state.lock().unwrap_or_else(|p| p.into_inner()).spec;
            spec.shard_box(grid)
        });
        let c = self.grid.chunk;
        if let Some(chunks) = shard_box {
            return [chunks[2] * c[2], chunks[1] * c[1], chunks[0] * c[0]];
        }
        let block = em_core::chunk_aligned_block(
            &[grid[2] * c[2], grid[1] * c[1], grid[0] * c[0]],
            &[c[2], c[1], c[0]],
            self.info.num_channels * self.info.data_type.size_bytes() as u64,
            COPY_BLOCK_BYTES,
        );
        [block[0], block[1], block[2]]
    }

    /// Writes `data` into `roi`, which must be chunk-aligned: each side starts on a chunk
    /// boundary and ends on one or at the volume's edge, all channels at once. A chunk of
    /// zeros is not stored (it reads as 0). Sharded, each chunk may be written only once.
    ///
    /// # Errors
    /// [`IoError::Volume`] for a region outside the volume or not chunk-aligned, data of
    /// the wrong type or shape, a chunk written twice into a shard; I/O errors.
    pub fn write_region(&self, roi: &Roi, data: &AnyArray) -> Result<()> {
        let display = self.target.join(&self.key);
        let core = |e: em_core::CoreError| IoError::Volume {
            path: display.clone(),
            source: e,
        };
        if data.dtype() != self.info.data_type {
            return Err(core(em_core::CoreError::DTypeMismatch {
                expected: self.info.data_type,
                found: data.dtype(),
            }));
        }
        roi.check_within(&self.shape).map_err(core)?;
        let got: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
        if got != roi.shape() {
            return Err(core(em_core::CoreError::ShapeMismatch {
                what: format!("data written to {roi}"),
                expected: roi.shape().to_vec(),
                got,
            }));
        }
        let channels = self.info.num_channels;
        let (spatial, channel_ok) = if self.shape.len() == 4 {
            (
                roi.without_leading_axis(),
                roi.start()[0] == 0 && roi.shape()[0] == channels,
            )
        } else {
            (roi.clone(), true)
        };
        let start = zyx_to_xyz([spatial.start()[0], spatial.start()[1], spatial.start()[2]]);
        let end = {
            let e = spatial.end();
            zyx_to_xyz([e[0], e[1], e[2]])
        };
        let aligned = (0..3).all(|i| {
            start[i] % self.grid.chunk[i] == 0
                && (end[i] % self.grid.chunk[i] == 0 || end[i] == self.grid.size[i])
        });
        if !aligned || !channel_ok {
            return Err(invalid(
                &display,
                "region",
                format!(
                    "{roi} is not chunk-aligned: precomputed regions are written in whole chunks of {:?} (z, y, x) and all channels",
                    self.chunk_shape()
                ),
            ));
        }
        let dtype = self.info.data_type;
        dispatch_dtype!(precomputed, dtype, T => {
            let typed = data.view_typed::<T>().map_err(core)?;
            let view4 = if self.shape.len() == 4 {
                typed.into_dimensionality::<ndarray::Ix4>()
            } else {
                typed.insert_axis(Axis(0)).into_dimensionality::<ndarray::Ix4>()
            }
            .map_err(|e| invalid(&display, "data", e.to_string()))?;
            self.write_chunks::<T>(view4, start, end)
        }, _ => Err(IoError::unsupported(&display, FORMAT, "writing", dtype.name(), SUPPORTED)))
    }

    fn write_chunks<T: NgElement>(
        &self,
        data: ArrayView4<'_, T>,
        start: [u64; 3],
        end: [u64; 3],
    ) -> Result<()> {
        let display = self.target.join(&self.key);
        let scale = &self.info.scales[0];
        let channels = self.info.num_channels;
        let scale_dir = self.staged.staging().join(&self.key);
        let encode = |pos: [u64; 3]| -> Result<Option<Vec<u8>>> {
            let (cs, ce) = self.grid.bounds(pos);
            let r = |i: usize| (cs[i] - start[i]) as usize..(ce[i] - start[i]) as usize;
            let part = data.slice(s![.., r(2), r(1), r(0)]);
            // Row by row: x runs are contiguous in the block, so each is one copy instead of
            // an element-by-element walk of a 4-D view.
            let mut values: Vec<T> = Vec::with_capacity(part.len());
            for row in part.rows() {
                match row.as_slice() {
                    Some(run) => values.extend_from_slice(run),
                    None => values.extend(row.iter().copied()),
                }
            }
            if bytemuck::cast_slice::<T, u8>(&values)
                .iter()
                .all(|&b| b == 0)
            {
                return Ok(None);
            }
            let size = std::array::from_fn(|i| ce[i] - cs[i]);
            let bytes = chunk::encode(&values, size, channels, &scale.encoding).map_err(|e| {
                invalid(
                    &display,
                    "chunk",
                    format!("{}: {e}", self.grid.file_name(pos)),
                )
            })?;
            let gzip = self.gzip_files || scale.sharding.is_some_and(|s| s.data_gzip);
            Ok(Some(if gzip { chunk::gzip(&bytes) } else { bytes }))
        };
        let chunks = self.grid.chunks_in(start, end);
        let Some(state) = &self.shards else {
            return chunks.par_iter().try_for_each(|&pos| {
                let name = self.grid.file_name(pos);
                let (file, other) = if self.gzip_files {
                    (scale_dir.join(format!("{name}.gz")), scale_dir.join(&name))
                } else {
                    (scale_dir.join(&name), scale_dir.join(format!("{name}.gz")))
                };
                // A chunk written again replaces what an earlier write left.
                let _ = std::fs::remove_file(&other);
                match encode(pos)? {
                    Some(bytes) => std::fs::write(&file, bytes).map_err(IoError::io(&file)),
                    None => match std::fs::remove_file(&file) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            Err(IoError::io(&file)(e))
                        }
                        _ => Ok(()),
                    },
                }
            });
        };
        let grid_shape = self.grid.shape();
        let encoded: Vec<(u64, Option<Vec<u8>>)> = chunks
            .par_iter()
            .map(|&pos| Ok((compressed_morton_code(pos, grid_shape), encode(pos)?)))
            .collect::<Result<_>>()?;
        let complete: Vec<(u64, Vec<EncodedChunk>)> = {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            let spec = st.spec;
            let mut complete = Vec::new();
            for (id, bytes) in encoded {
                let shard = spec.locate(id).0;
                let twice = || {
                    invalid(
                        &display,
                        "region",
                        format!("chunk {id} of shard {} written twice; a sharded volume takes each chunk once", spec.shard_file(shard)),
                    )
                };
                if st.done.contains(&shard) {
                    return Err(twice());
                }
                let expected = st.expected.get(&shard).copied().unwrap_or(0);
                let open = st.open.entry(shard).or_default();
                if !open.seen.insert(id) {
                    return Err(twice());
                }
                open.received += 1;
                if let Some(b) = bytes {
                    open.chunks.push((id, b));
                }
                if open.received >= expected {
                    let done = st.open.remove(&shard).unwrap_or_default();
                    st.done.insert(shard);
                    complete.push((shard, done.chunks));
                }
            }
            complete
        };
        let spec = state.lock().unwrap_or_else(|p| p.into_inner()).spec;
        complete
            .into_par_iter()
            .try_for_each(|(shard, chunks)| self.write_shard(&spec, shard, chunks))
    }

    fn write_shard(
        &self,
        spec: &ShardingSpec,
        shard: u64,
        chunks: Vec<EncodedChunk>,
    ) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let file = self
            .staged
            .staging()
            .join(&self.key)
            .join(spec.shard_file(shard));
        std::fs::write(&file, build_shard(spec, chunks)).map_err(IoError::io(&file))
    }

    /// Writes the shards still open (their unwritten chunks read as 0) and `info`, moves
    /// the volume into place and opens it there.
    ///
    /// # Errors
    /// I/O errors.
    pub fn commit(self) -> Result<PrecomputedVolume> {
        if let Some(state) = &self.shards {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            let spec = st.spec;
            let open: Vec<(u64, OpenShard)> = st.open.drain().collect();
            drop(st);
            open.into_par_iter()
                .try_for_each(|(shard, o)| self.write_shard(&spec, shard, o.chunks))?;
        }
        let info_file = self.staged.staging().join("info");
        let text = serde_json::to_string_pretty(&self.info.to_json()).unwrap_or_default();
        std::fs::write(&info_file, text).map_err(IoError::io(&self.target.join("info")))?;
        let target = self.target.clone();
        self.staged.commit()?;
        PrecomputedVolume::open(&VolumePath {
            format: Format::Precomputed,
            container: target,
            key: None,
        })
    }
}

/// Writes a whole array as a new precomputed volume at `path` (`out.precomputed[/KEY]`),
/// atomically.
///
/// # Errors
/// See [`PrecomputedWriter::create`].
pub fn write_precomputed(
    path: impl AsRef<Path>,
    array: &AnyArray,
    options: &PrecomputedOptions,
) -> Result<PrecomputedVolume> {
    let shape: Vec<u64> = array.shape().iter().map(|&n| n as u64).collect();
    let writer = PrecomputedWriter::create(path, &shape, array.dtype(), options)?;
    writer.write_region(&Roi::from_shape(shape), array)?;
    writer.commit()
}

/// Raw bytes [`copy_to_precomputed`] reads at once from an unsharded or hash-sharded
/// copy.
const COPY_BLOCK_BYTES: u64 = 64 << 20;

/// Copies `src` — `(Z, Y, X)` or `(C, Z, Y, X)` — into a new precomputed volume at `out`,
/// block by block, so that memory stays bounded whatever the volume's size: one
/// chunk-aligned block of the source and its encoded chunks at a time. A block is up to
/// 64 MiB of raw data (at least one chunk), or with [`Sharding::Auto`] one shard (up to 256
/// MiB raw), which is then complete and written. A hashed sharding spec
/// (`murmurhash3_x86_128`) also holds every encoded chunk until the end (see
/// [`PrecomputedWriter`]). Blocks are read in z, y, x order; chunks within a block are
/// encoded in parallel. Reports voxels to `progress`.
///
/// # Errors
/// As [`PrecomputedWriter::create`], reading `src`, or writing.
pub fn copy_to_precomputed(
    src: &dyn ChunkedVolume,
    out: impl AsRef<Path>,
    options: &PrecomputedOptions,
    progress: &dyn Progress,
) -> Result<PrecomputedVolume> {
    let out = out.as_ref();
    let shape = src.shape().to_vec();
    let writer = PrecomputedWriter::create(out, &shape, src.dtype(), options)?;
    let mut block = writer.copy_block().to_vec();
    if shape.len() == 4 {
        block.insert(0, shape[0]);
    }
    let blocks = em_core::BlockGrid::new(&shape, &block, &vec![0; shape.len()])
        .map_err(IoError::volume(out))?;
    let source = PathBuf::from(src.describe());
    progress.start("writing precomputed", src.roi().num_elements());
    for b in blocks.iter() {
        let data = src.read_roi(&b.core).map_err(IoError::volume(&source))?;
        writer.write_region(&b.core, &data)?;
        progress.advance(b.core.num_elements());
    }
    let volume = writer.commit()?;
    progress.finish();
    Ok(volume)
}
