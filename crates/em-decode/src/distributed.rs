//! Blockwise decoding split across processes (cluster array tasks, one machine after
//! another): [`label_block`] labels one block on its own, in any order and any process, and
//! returns a [`BlockRecord`]; [`stitch_blocks`] joins the records of all blocks and writes
//! the labels of [`crate::decode_blockwise`] (and so of [`crate::decode`]) voxel for voxel.
//!
//! The block-local labels go to a `uint32` working volume (`local`) whose chunks the blocks
//! cover whole, so that concurrent tasks never write the same chunk. Records are small:
//! a few words per local label plus the labels of the block's faces.

use em_core::{ChunkedVolume, DType, Element, Label, Progress, Roi};

use crate::blockwise::{
    make_plan, pass1, read_channels, relabel_blocks, BlockRecord, Piece, Plan, Stitcher,
};
use crate::cc::{in_pool, Affinity};
use crate::decode::DecodeOptions;
use crate::{DecodeError, DecodeSummary, Result};

/// What every block of a split decode shares: the affinities, the working volume of
/// block-local labels, the parameters and the block shape.
#[derive(Clone, Copy)]
pub struct BlockJob<'a> {
    /// The affinities, `(C, Z, Y, X)`, float32, float16 or uint8.
    pub affinities: &'a dyn ChunkedVolume,
    /// A `uint32` volume of the output's shape (the affinity grid times `options.scale`)
    /// whose chunks the blocks cover whole, so that concurrent tasks never write the same
    /// chunk.
    pub local: &'a dyn ChunkedVolume,
    /// The decode's parameters.
    pub options: &'a DecodeOptions,
    /// The block shape on the affinity grid.
    pub block_shape: [u64; 3],
}

/// The number of blocks of `block_shape` over the affinity volume `aff` (`(C, Z, Y, X)`):
/// positions `0..n` are what [`label_block`] takes.
///
/// # Errors
/// A volume that is not 4-D, an empty block side.
pub fn block_count(aff: &dyn ChunkedVolume, block_shape: [u64; 3]) -> Result<u64> {
    let shape = aff.shape();
    if shape.len() != 4 {
        return Err(DecodeError::NotFourDimensional(
            shape.iter().map(|&n| n as usize).collect(),
        ));
    }
    if block_shape.contains(&0) {
        return Err(DecodeError::InvalidParameter {
            name: "block shape",
            reason: format!("{block_shape:?}; each side must be ≥ 1"),
        });
    }
    Ok((0..3)
        .map(|a| shape[a + 1].div_ceil(block_shape[a]))
        .product())
}

/// Labels the block at processing position `position` (in `0..block_count`): reads its
/// affinities with their halo, writes its block-local labels into `job.local` and returns
/// what [`stitch_blocks`] needs of it.
///
/// # Errors
/// Bad parameters or shapes (see [`crate::decode_blockwise`]), a `local` volume of another
/// type or with chunks that straddle blocks, a position past the last block, storage errors.
pub fn label_block(job: &BlockJob<'_>, position: u64) -> Result<BlockRecord> {
    let BlockJob {
        affinities: aff,
        local,
        options: params,
        block_shape,
    } = *job;
    check_local(local)?;
    let plan = make_plan(aff, local, params, block_shape)?;
    if !plan.aligned {
        return Err(DecodeError::InvalidParameter {
            name: "working volume",
            reason: format!(
                "{} has chunks {:?} that blocks of {block_shape:?} (times the scale) do not \
                 cover whole; concurrent tasks would write the same chunks",
                local.describe(),
                local.chunk_shape()
            ),
        });
    }
    if position >= plan.blocks() {
        return Err(DecodeError::InvalidParameter {
            name: "block position",
            reason: format!(
                "{position}; the volume has {} blocks of {block_shape:?} (0..{})",
                plan.blocks(),
                plan.blocks()
            ),
        });
    }
    match aff.dtype() {
        DType::F32 => label_typed::<f32>(&plan, position),
        DType::F16 => label_typed::<em_core::f16>(&plan, position),
        DType::U8 => label_typed::<u8>(&plan, position),
        other => Err(DecodeError::InvalidParameter {
            name: "affinities",
            reason: format!(
                "{} is {other}; affinities are float32, float16 or uint8 (scaled by 1/255)",
                aff.describe()
            ),
        }),
    }
}

fn label_typed<A: Affinity + Element>(plan: &Plan<'_>, p: u64) -> Result<BlockRecord> {
    let core = plan.core(p);
    let values = read_channels::<A>(plan, &plan.region(&core))?;
    let done = pass1::<A, u32>(plan, p, values, None)?;
    // Aligned plans write in pass 1; nothing is left over.
    debug_assert!(done.write.is_none());
    Ok(done.record)
}

fn check_local(local: &dyn ChunkedVolume) -> Result<()> {
    if local.dtype() == DType::U32 {
        Ok(())
    } else {
        Err(DecodeError::InvalidParameter {
            name: "working volume",
            reason: format!(
                "{} is {}; block-local labels are uint32",
                local.describe(),
                local.dtype()
            ),
        })
    }
}

/// Joins the records of all blocks and writes the final labels into `out` (`uint32` or
/// `uint64`, the output's shape): `records(p)` gives block `p`'s record, asked for in order
/// `0, 1, …`. The labels equal those of [`crate::decode_blockwise`] with the same
/// parameters and block shape. The threads of `job.options` relabel the blocks.
///
/// # Errors
/// A record made for another volume, block shape or position, or not matching `local`;
/// the errors of `records`; bad parameters, shapes or types; storage errors; more
/// components than the output type can number.
pub fn stitch_blocks(
    job: &BlockJob<'_>,
    out: &dyn ChunkedVolume,
    records: &mut dyn FnMut(u64) -> Result<BlockRecord>,
    progress: &dyn Progress,
) -> Result<DecodeSummary> {
    let local = job.local;
    check_local(local)?;
    if local.shape() != out.shape() {
        return Err(DecodeError::InvalidParameter {
            name: "working volume",
            reason: format!(
                "{} has shape {:?} but the output {} has {:?}",
                local.describe(),
                local.shape(),
                out.describe(),
                out.shape()
            ),
        });
    }
    match out.dtype() {
        DType::U32 => stitch_typed::<u32>(job, out, records, progress),
        DType::U64 => stitch_typed::<u64>(job, out, records, progress),
        other => Err(DecodeError::InvalidParameter {
            name: "output",
            reason: format!(
                "{} is {other}; labels are written as uint32 or uint64",
                out.describe()
            ),
        }),
    }
}

fn stitch_typed<L: Label>(
    job: &BlockJob<'_>,
    out: &dyn ChunkedVolume,
    records: &mut dyn FnMut(u64) -> Result<BlockRecord>,
    progress: &dyn Progress,
) -> Result<DecodeSummary> {
    let (local, params) = (job.local, job.options);
    let plan = make_plan(job.affinities, out, params, job.block_shape)?;
    let n_blocks = plan.blocks();
    let mut summary = DecodeSummary {
        voxels: plan.dims.iter().product(),
        blocks: n_blocks,
        ..DecodeSummary::default()
    };
    progress.start("stitching blocks", n_blocks);
    let mut stitcher = Stitcher::new(&plan);
    for p in 0..n_blocks {
        let r = records(p)?;
        r.check(&plan, p)?;
        stitcher.add(p, r)?;
        progress.advance(1);
    }
    progress.finish();
    let (bases, numbering) = stitcher.finish(params.min_size, L::MAX.to_u64(), L::NAME)?;
    summary.components = numbering.components;
    summary.removed = numbering.removed;
    summary.labelled_voxels = numbering.labelled_voxels;
    let threads = params
        .cc
        .threads
        .unwrap_or_else(rayon::current_num_threads)
        .max(1);
    in_pool(params.cc.threads, || {
        relabel_blocks::<u32, L>(&plan, local, &bases, &numbering, threads, progress)
    })??;
    Ok(summary)
}

const MAGIC: &[u8; 8] = b"EMBLKREC";
const VERSION: u32 = 1;

fn bad(reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidParameter {
        name: "block record",
        reason: reason.into(),
    }
}

impl BlockRecord {
    /// The processing position of the block this record describes.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Local labels of the block (its core and halo).
    pub fn labels(&self) -> usize {
        self.first.len()
    }

    /// The record as bytes (little-endian), for a file per block.
    pub fn to_bytes(&self) -> Vec<u8> {
        let shell_values: usize = self.shells.iter().map(|s| s.values.len()).sum();
        let mut b = Vec::with_capacity(
            64 + 16 * self.first.len() + 28 * self.halo.len() + 4 * shell_values,
        );
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        fn u64s(b: &mut Vec<u8>, v: &[u64]) {
            for x in v {
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
        u64s(&mut b, &[self.position]);
        u64s(&mut b, &self.dims);
        u64s(&mut b, &self.block);
        u64s(&mut b, &[self.first.len() as u64]);
        u64s(&mut b, &self.first);
        u64s(&mut b, &self.size);
        u64s(&mut b, &[self.halo.len() as u64]);
        for (l, h) in &self.halo {
            b.extend_from_slice(&l.to_le_bytes());
            u64s(&mut b, h);
        }
        u64s(&mut b, &[self.shells.len() as u64]);
        for s in &self.shells {
            u64s(&mut b, s.roi.start());
            u64s(&mut b, s.roi.shape());
            for v in s.values.iter() {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b
    }

    /// Reads a record written by [`BlockRecord::to_bytes`].
    ///
    /// # Errors
    /// Bytes that are not a whole record of this version, or labels out of range.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(bad("not a block record (bad magic bytes)"));
        }
        let version = u32::from_le_bytes(r.array()?);
        if version != VERSION {
            return Err(bad(format!(
                "version {version}; this build reads version {VERSION}"
            )));
        }
        let position = r.u64()?;
        let dims = [r.u64()?, r.u64()?, r.u64()?];
        let block = [r.u64()?, r.u64()?, r.u64()?];
        let n = r.len(16)?;
        let first = r.u64s(n)?;
        let size = r.u64s(n)?;
        let n_halo = r.len(28)?;
        let mut halo = Vec::with_capacity(n_halo);
        for _ in 0..n_halo {
            let l = u32::from_le_bytes(r.array()?);
            if l == 0 || l as usize > n {
                return Err(bad(format!("halo label {l} outside 1..={n}")));
            }
            halo.push((l, [r.u64()?, r.u64()?, r.u64()?]));
        }
        let n_shells = r.len(48)?;
        let mut shells = Vec::with_capacity(n_shells);
        for _ in 0..n_shells {
            let start = r.u64s(3)?;
            let shape = r.u64s(3)?;
            let count = shape
                .iter()
                .try_fold(1u64, |a, &s| a.checked_mul(s))
                .filter(|&c| c <= (r.bytes.len() - r.at) as u64 / 4)
                .ok_or_else(|| bad(format!("a face of shape {shape:?} runs past the end")))?;
            let mut values = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let l = u32::from_le_bytes(r.array()?);
                if l as usize > n {
                    return Err(bad(format!("face label {l} above {n}")));
                }
                values.push(l);
            }
            let dims_usize: Vec<usize> = shape.iter().map(|&s| s as usize).collect();
            let values = ndarray::ArrayD::from_shape_vec(dims_usize, values)
                .map_err(|e| bad(e.to_string()))?;
            let roi = Roi::new(start, shape).map_err(|e| bad(e.to_string()))?;
            shells.push(Piece { roi, values });
        }
        if r.at != bytes.len() {
            return Err(bad(format!(
                "{} bytes left over after the record",
                bytes.len() - r.at
            )));
        }
        Ok(Self {
            position,
            dims,
            block,
            first,
            size,
            shells,
            halo,
        })
    }

    /// Refuses a record made for another volume, block layout or position.
    fn check(&self, plan: &Plan<'_>, p: u64) -> Result<()> {
        if self.dims != plan.dims || self.block != plan.block {
            return Err(bad(format!(
                "block {p}'s record was made for a volume of {:?} in blocks of {:?}, not {:?} \
                 in blocks of {:?}; label the blocks again",
                self.dims, self.block, plan.dims, plan.block
            )));
        }
        if self.position != p {
            return Err(bad(format!(
                "the record given for block {p} is block {}'s",
                self.position
            )));
        }
        // Coordinates outside the volume would index past the grid: a damaged record.
        let inside = |v: &[u64]| v.iter().zip(&plan.dims).all(|(c, n)| c < n);
        let shells_inside = self
            .shells
            .iter()
            .all(|s| s.roi.end().iter().zip(&plan.dims).all(|(e, n)| e <= n));
        if !self.halo.iter().all(|(_, h)| inside(h)) || !shells_inside {
            return Err(bad(format!(
                "block {p}'s record has voxels outside the volume {:?}; label the block again",
                plan.dims
            )));
        }
        Ok(())
    }
}

/// Reads little-endian values from a byte slice, failing at its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| bad(format!("truncated at byte {}", self.bytes.len())))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of at least `item_bytes` each, checked against the bytes left.
    fn len(&mut self, item_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) / item_bytes;
        if n > left as u64 {
            return Err(bad(format!("{n} entries announced, room for {left}")));
        }
        Ok(n as usize)
    }

    fn u64s(&mut self, n: usize) -> Result<Vec<u64>> {
        (0..n).map(|_| self.u64()).collect()
    }
}
