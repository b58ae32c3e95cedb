//! waterz block by block, for volumes larger than memory, in one process or split across
//! many (each block's work is a [`WaterzBlock`] record; see [`crate::DistributedPlan`]).
//!
//! 1. Per block: the fragments — the watershed of the block grown by a halo, cropped to the
//!    block; or the given fragments read in the block — numbered by first appearance, and
//!    the block's boundary faces: with each other, and with the last plane of the block
//!    before it along each axis, each with its voxel's raster position.
//! 2. The blocks' fragments get global ids (after those of the blocks before them; given
//!    fragments keep theirs); sorted by edge, then position, the faces reach the edge
//!    statistics in exactly waterz's order.
//! 3. One agglomeration over the whole graph, as in memory.
//! 4. Per threshold, every block's fragments are relabelled and written.
//!
//! For the same fragments the result is identical to [`agglomerate`](super::agglomerate)'s
//! (same merges, same labels). With fragments from the blockwise watershed, basins cut by a
//! block face become two fragments; they usually merge again, and what remains of the
//! difference is measured by `tools/bench-agglomerate` as VOI against the whole volume.
//!
//! Memory: the affinities and the outputs stay on disk; held are the fragments (4 bytes
//! per voxel, in one process), the boundary faces (24 bytes each) and a few blocks per
//! thread.

use em_core::{AnyArray, Block, BlockGrid, ChunkedVolume, Label, Progress, Roi};
use ndarray::{Array3, ArrayD, Ix4};
use rayon::prelude::*;

use super::{
    affs_of, check_options, merge_thresholds, stats::EdgeStats, Merge, ScoredEdge, WaterzOptions,
    WaterzSummary,
};
use crate::cc::in_pool;
use crate::{DecodeError, Result};

/// One boundary face of a block: between its voxel of fragment `a` and the voxel before it
/// along an axis — in the block (`axis` 0, fragment `b`), or in the last plane of the
/// block before it along axis `axis − 1` (`b` the index in that plane).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LocalFace {
    pub(crate) a: u32,
    pub(crate) b: u32,
    pub(crate) axis: u8,
    /// The voxel's raster position in the volume × 3 + the face's axis: waterz's order.
    pub(crate) pos: u64,
    pub(crate) aff: f32,
}

/// What one block contributes to a blockwise agglomeration: written by a task, read by the
/// final stitch.
#[derive(Clone, Debug, PartialEq)]
pub struct WaterzBlock {
    /// The block's position in the grid's raster order.
    pub position: u64,
    /// Voxels per block-local fragment (index 0: background).
    pub(crate) sizes: Vec<u64>,
    /// Given fragments: the original id of each block-local fragment (index 0: 0).
    pub(crate) originals: Option<Vec<u64>>,
    pub(crate) faces: Vec<LocalFace>,
    /// NaN or infinite affinities in the block (counted as 0).
    pub non_finite: u64,
}

const MAGIC: &[u8; 8] = b"EMWZBLK1";

impl WaterzBlock {
    /// The record as bytes (little-endian), for a file per block.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + 8 * self.sizes.len() + 21 * self.faces.len());
        b.extend_from_slice(MAGIC);
        for v in [
            self.position,
            self.non_finite,
            self.sizes.len() as u64,
            u64::from(self.originals.is_some()),
            self.faces.len() as u64,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in self.sizes.iter().chain(self.originals.iter().flatten()) {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for f in &self.faces {
            b.extend_from_slice(&f.a.to_le_bytes());
            b.extend_from_slice(&f.b.to_le_bytes());
            b.push(f.axis);
            b.extend_from_slice(&f.pos.to_le_bytes());
            b.extend_from_slice(&f.aff.to_le_bytes());
        }
        b
    }

    /// Reads a record written by [`WaterzBlock::to_bytes`].
    ///
    /// # Errors
    /// Bytes that are not a whole record, or ids out of range.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: String| DecodeError::InvalidParameter {
            name: "waterz block record",
            reason: why,
        };
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(bad("not a waterz block record (bad magic bytes)".into()));
        }
        let [position, non_finite, n, given, faces] =
            [r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?];
        let rest = (bytes.len() - r.at) as u64;
        if n == 0 || n > rest / 8 || faces > rest / 21 || given > 1 {
            return Err(bad(format!(
                "{n} fragments and {faces} faces do not fit its {} bytes",
                bytes.len()
            )));
        }
        let sizes = r.u64s(n as usize)?;
        let originals = if given == 1 {
            Some(r.u64s(n as usize)?)
        } else {
            None
        };
        let mut out = Vec::with_capacity(faces as usize);
        for _ in 0..faces {
            let a = u32::from_le_bytes(r.array()?);
            let b = u32::from_le_bytes(r.array()?);
            let axis = r.take(1)?[0];
            let pos = u64::from_le_bytes(r.array()?);
            let aff = f32::from_le_bytes(r.array()?);
            if u64::from(a) >= n || axis > 3 || (axis == 0 && u64::from(b) >= n) {
                return Err(bad(format!(
                    "a face ({a}, {b}, axis {axis}) outside the block's {n} ids"
                )));
            }
            out.push(LocalFace {
                a,
                b,
                axis,
                pos,
                aff,
            });
        }
        if r.at != bytes.len() {
            return Err(bad(format!("{} bytes left over", bytes.len() - r.at)));
        }
        Ok(WaterzBlock {
            position,
            sizes,
            originals,
            faces: out,
            non_finite,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let s =
            self.bytes
                .get(self.at..self.at + n)
                .ok_or_else(|| DecodeError::InvalidParameter {
                    name: "waterz block record",
                    reason: format!("ends after {} bytes", self.bytes.len()),
                })?;
        self.at += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn u64s(&mut self, n: usize) -> Result<Vec<u64>> {
        (0..n).map(|_| self.u64()).collect()
    }
}

/// Affinities as f32 (`u8` means `v / 255`), with NaN and ±inf as 0; and how many were.
pub(crate) fn affinities_f32(any: AnyArray) -> Result<(ArrayD<f32>, u64)> {
    let mut a = to_f32(any)?;
    let non_finite = zero_non_finite(a.iter_mut());
    Ok((a, non_finite))
}

fn to_f32(any: AnyArray) -> Result<ArrayD<f32>> {
    Ok(match any {
        AnyArray::F32(a) => a,
        AnyArray::F16(a) => a.mapv(em_core::f16::to_f32),
        AnyArray::U8(a) => a.mapv(|v| f32::from(v) / 255.0),
        other => {
            return Err(DecodeError::InvalidParameter {
                name: "affinities",
                reason: format!(
                    "{} of shape {:?}; expected float32, float16 or uint8",
                    other.dtype(),
                    other.shape()
                ),
            })
        }
    })
}

/// Sets NaN and ±inf to 0; returns how many there were.
fn zero_non_finite<'a>(values: impl Iterator<Item = &'a mut f32>) -> u64 {
    let mut n = 0;
    for v in values.filter(|v| !v.is_finite()) {
        *v = 0.0;
        n += 1;
    }
    n
}

fn read_channels(aff: &(impl ChunkedVolume + ?Sized), roi: &Roi) -> Result<(Vec<f32>, u64)> {
    let (a, bad) = affinities_f32(aff.read_roi(&roi.with_leading_axis(0, 3))?)?;
    let a = a.into_dimensionality::<Ix4>().expect("4 axes");
    Ok((
        a.as_standard_layout()
            .into_owned()
            .into_raw_vec_and_offset()
            .0,
        bad,
    ))
}

/// The checks shared by the blockwise and the distributed agglomeration; the volume's shape.
pub(crate) fn check_blockwise(
    affinities: &(impl ChunkedVolume + ?Sized),
    fragments: Option<&dyn ChunkedVolume>,
    options: &WaterzOptions,
    block: [u64; 3],
) -> Result<[u64; 3]> {
    check_options(options)?;
    if options.dust.is_some() {
        return Err(DecodeError::InvalidParameter {
            name: "dust",
            reason: "dust merging needs the whole volume; decode in memory (without --block)"
                .into(),
        });
    }
    let shape = affinities.shape().to_vec();
    if shape.len() != 4 || shape[0] < 3 {
        return Err(DecodeError::InvalidParameter {
            name: "affinities",
            reason: format!(
                "waterz needs 3 channels (z, y, x) of (C, Z, Y, X) affinities, got shape {shape:?}"
            ),
        });
    }
    let volume = [shape[1], shape[2], shape[3]];
    if let Some(f) = fragments {
        if f.shape() != volume {
            return Err(DecodeError::InvalidParameter {
                name: "fragments",
                reason: format!(
                    "shape {:?} differs from the affinities' volume {volume:?}",
                    f.shape()
                ),
            });
        }
    }
    if block.contains(&0) {
        return Err(DecodeError::InvalidParameter {
            name: "block",
            reason: format!("{block:?}: every side must be at least 1"),
        });
    }
    Ok(volume)
}

/// Block `block`'s fragments (block-local ids) and its record: what one task does.
///
/// # Errors
/// Storage errors; fragments that are not integer labels; more than 2³² − 1 fragments in
/// the block.
pub(crate) fn block_task(
    aff: &(impl ChunkedVolume + ?Sized),
    fragments: Option<&dyn ChunkedVolume>,
    block: &Block,
    position: u64,
    options: &WaterzOptions,
) -> Result<(Vec<u32>, WaterzBlock)> {
    let core = &block.core;
    let (local, originals) = match fragments {
        Some(f) => {
            let given = em_core::to_labels::<u64>(&f.read_roi(core)?)?;
            let (local, originals) = first_appearance(given.iter().copied())?;
            (local, Some(originals))
        }
        None => {
            let (data, _) = read_channels(aff, &block.with_halo)?;
            let s = block.with_halo.shape_usize();
            let shape = [s[0], s[1], s[2]];
            let affs = affs_of(&data, shape, options.storage);
            let (seg, _) = super::watershed::watershed(
                &affs,
                options.aff_threshold_low,
                options.aff_threshold_high,
            );
            let seg = Array3::from_shape_vec(shape, seg).expect("shape matches");
            let inner = block.core_in_halo();
            let (a, b) = (inner.start().to_vec(), inner.end());
            let cropped = seg.slice(ndarray::s![
                a[0] as usize..b[0] as usize,
                a[1] as usize..b[1] as usize,
                a[2] as usize..b[2] as usize
            ]);
            (
                first_appearance(cropped.iter().map(|&v| u64::from(v)))?.0,
                None,
            )
        }
    };
    let count = local.iter().copied().max().unwrap_or(0) as usize;
    let mut sizes = vec![0u64; count + 1];
    for &l in &local {
        sizes[l as usize] += 1;
    }
    let (faces, non_finite) = block_faces(aff, core, &local, options)?;
    Ok((
        local,
        WaterzBlock {
            position,
            sizes,
            originals,
            faces,
            non_finite,
        },
    ))
}

/// Ids numbered 1.. by first appearance (0 stays 0), and the original id of each.
fn first_appearance(ids: impl Iterator<Item = u64>) -> Result<(Vec<u32>, Vec<u64>)> {
    let mut map: super::merge::PairMap<u32> = super::merge::PairMap::default();
    let mut originals = vec![0u64];
    let mut local = Vec::new();
    for v in ids {
        if v == 0 {
            local.push(0);
            continue;
        }
        let next = originals.len();
        let l = *map.entry(v).or_insert_with(|| {
            originals.push(v);
            next as u32
        });
        local.push(l);
    }
    if originals.len() > u32::MAX as usize {
        return Err(DecodeError::InvalidParameter {
            name: "fragments",
            reason: "more than 4294967295 fragments in one block; use smaller blocks".into(),
        });
    }
    Ok((local, originals))
}

/// The faces of a block's voxels with the voxels before them (also in the blocks before).
fn block_faces(
    aff: &(impl ChunkedVolume + ?Sized),
    core: &Roi,
    local: &[u32],
    options: &WaterzOptions,
) -> Result<(Vec<LocalFace>, u64)> {
    let volume = &aff.shape()[1..];
    let start = core.start();
    let end = core.end();
    // One plane more before the core, where the edges of source storage sit.
    let lo: Vec<u64> = start.iter().map(|&s| s.saturating_sub(1)).collect();
    let region = Roi::from_ranges(&[lo[0]..end[0], lo[1]..end[1], lo[2]..end[2]]);
    let raw = to_f32(aff.read_roi(&region.with_leading_axis(0, 3))?)?
        .into_dimensionality::<Ix4>()
        .expect("4 axes");
    let mut raw = raw.as_standard_layout().into_owned();
    // The block's own values are counted (the plane before belongs to another block).
    let at: Vec<usize> = (0..3).map(|d| (start[d] - lo[d]) as usize).collect();
    let non_finite = raw
        .slice(ndarray::s![.., at[0].., at[1].., at[2]..])
        .iter()
        .filter(|v| !v.is_finite())
        .count() as u64;
    zero_non_finite(raw.iter_mut());
    let data = raw.into_raw_vec_and_offset().0;
    let rs = region.shape_usize();
    let affs = affs_of(&data, [rs[0], rs[1], rs[2]], options.storage);
    let cs = core.shape_usize();
    let cs = [cs[0], cs[1], cs[2]];
    let mut faces = Vec::new();
    let mut i = 0;
    for z in 0..cs[0] {
        for y in 0..cs[1] {
            for x in 0..cs[2] {
                let a = local[i];
                i += 1;
                if a == 0 {
                    continue;
                }
                let c = [z, y, x];
                let p = [
                    start[0] + z as u64,
                    start[1] + y as u64,
                    start[2] + x as u64,
                ];
                let r = [
                    (p[0] - lo[0]) as usize,
                    (p[1] - lo[1]) as usize,
                    (p[2] - lo[2]) as usize,
                ];
                let ri = (r[0] * rs[1] + r[1]) * rs[2] + r[2];
                let raster = (p[0] * volume[1] + p[1]) * volume[2] + p[2];
                for d in 0..3 {
                    if p[d] == 0 {
                        continue;
                    }
                    let (b, axis) = if c[d] > 0 {
                        let mut q = c;
                        q[d] -= 1;
                        let b = local[(q[0] * cs[1] + q[1]) * cs[2] + q[2]];
                        if b == a || b == 0 {
                            continue;
                        }
                        (b, 0)
                    } else {
                        // The index of the voxel before, in the plane before the block.
                        let mut plane = cs;
                        plane[d] = 1;
                        let mut q = c;
                        q[d] = 0;
                        (
                            (((q[0] * plane[1]) + q[1]) * plane[2] + q[2]) as u32,
                            d as u8 + 1,
                        )
                    };
                    faces.push(LocalFace {
                        a,
                        b,
                        axis,
                        pos: raster * 3 + d as u64,
                        aff: affs.back(d, ri),
                    });
                }
            }
        }
    }
    Ok((faces, non_finite))
}

/// Where the block-local fragments are: in memory, or in a volume (one chunk per block).
pub(crate) enum LocalLabels<'a> {
    Memory(Vec<Vec<u32>>),
    Volume(&'a dyn ChunkedVolume),
}

impl LocalLabels<'_> {
    fn read(&self, position: usize, core: &Roi, roi: &Roi) -> Result<Vec<u32>> {
        match self {
            LocalLabels::Memory(blocks) => {
                let all = &blocks[position];
                let (cs, sh) = (core.start(), core.shape());
                let mut out = Vec::with_capacity(roi.num_elements() as usize);
                for z in roi.ranges()[0].clone() {
                    for y in roi.ranges()[1].clone() {
                        for x in roi.ranges()[2].clone() {
                            let i = ((z - cs[0]) * sh[1] + (y - cs[1])) * sh[2] + (x - cs[2]);
                            out.push(all[i as usize]);
                        }
                    }
                }
                Ok(out)
            }
            LocalLabels::Volume(v) => {
                let labels = v.read_roi(roi)?.into_typed::<u32>()?;
                Ok(labels.as_standard_layout().iter().copied().collect())
            }
        }
    }
}

/// The blocks' records joined: global ids, the region graph, and the relabelling tables.
pub(crate) struct Joined<'a> {
    cores: Vec<Roi>,
    local: LocalLabels<'a>,
    /// Per block, the dense global id of each block-local id.
    global: Vec<Vec<u32>>,
    ids: Vec<u64>,
}

/// One threshold of a blockwise agglomeration: its merges, and the relabelling to write.
pub struct BlockwiseThreshold<'a> {
    /// The threshold as asked.
    pub threshold: f32,
    /// The score threshold merged below.
    pub score_threshold: f32,
    /// The merges since the previous threshold.
    pub merges: Vec<Merge>,
    /// The region graph after merging (when asked for).
    pub region_graph: Option<Vec<ScoredEdge>>,
    /// Non-zero segments.
    pub segments: u64,
    table: Vec<u64>,
    joined: &'a Joined<'a>,
}

impl BlockwiseThreshold<'_> {
    /// Writes the segmentation into `out` (shape `(Z, Y, X)`), block by block in parallel.
    ///
    /// # Errors
    /// A segment id that does not fit `L`; storage errors.
    pub fn write<L: Label>(&self, out: &(impl ChunkedVolume + ?Sized)) -> Result<()> {
        if let Some(&largest) = self.table.iter().max() {
            if L::from_u64(largest).is_none() {
                return Err(DecodeError::TooManyComponents {
                    label_type: L::NAME,
                });
            }
        }
        let j = self.joined;
        (0..j.cores.len()).into_par_iter().try_for_each(|b| {
            let core = &j.cores[b];
            let local = j.local.read(b, core, core)?;
            let global = &j.global[b];
            let labels: Vec<L> = local
                .iter()
                .map(|&l| {
                    let g = *global.get(l as usize).ok_or_else(|| corrupt(b, l))?;
                    Ok(L::from_u64(self.table[g as usize]).expect("checked above"))
                })
                .collect::<Result<_>>()?;
            let data = ArrayD::from_shape_vec(core.shape_usize(), labels).expect("shape matches");
            out.write_roi(core, &L::into_any(data))?;
            Ok(())
        })
    }
}

fn corrupt(block: usize, label: u32) -> DecodeError {
    DecodeError::InvalidParameter {
        name: "local labels",
        reason: format!(
            "block {block} holds fragment {label}, which its record does not list; the \
             working labels were changed after the blocks were recorded"
        ),
    }
}

/// Joins the records of every block (in position order) and agglomerates: `each` receives
/// every threshold.
pub(crate) fn stitch(
    grid: &BlockGrid,
    records: Vec<WaterzBlock>,
    local: LocalLabels<'_>,
    options: &WaterzOptions,
    progress: &dyn Progress,
    mut each: impl FnMut(BlockwiseThreshold<'_>) -> Result<()>,
) -> Result<WaterzSummary> {
    let blocks: Vec<Block> = grid.iter().collect();
    let g = grid.grid_shape();
    let (global, ids) = global_ids(&records)?;
    let joined = Joined {
        cores: blocks.iter().map(|b| b.core.clone()).collect(),
        local,
        global,
        ids,
    };
    let nodes = joined.ids.len();
    progress.start("region graph", records.len() as u64);
    let per_block: Vec<Vec<(u64, u64, f32)>> = records
        .par_iter()
        .enumerate()
        .map(|(b, rec)| {
            let faces = global_faces(&joined, &blocks, [g[0], g[1], g[2]], b, rec);
            progress.advance(1);
            faces
        })
        .collect::<Result<_>>()?;
    progress.finish();
    let mut faces: Vec<(u64, u64, f32)> = per_block.into_iter().flatten().collect();
    faces.par_sort_unstable_by_key(|f| (f.0, f.1));
    let mut stats = EdgeStats::new(options.scoring.providers(), nodes);
    let mut sizes = vec![0u64; nodes];
    for (rec, global) in records.iter().zip(&joined.global) {
        for (l, &s) in rec.sizes.iter().enumerate() {
            sizes[global[l] as usize] += s;
        }
    }
    for (n, &size) in sizes.iter().enumerate() {
        stats.add_voxels(n, size);
    }
    let mut last = None;
    let mut e = 0;
    for &(key, _, a) in &faces {
        if last != Some(key) {
            e = stats.new_edge((key >> 32) as u32, key as u32);
            last = Some(key);
        }
        stats.add_affinity(e, a);
    }
    drop(faces);
    let non_finite = records.iter().map(|r| r.non_finite).sum();
    let mut per_threshold = Vec::new();
    let mut summary = merge_thresholds(stats, &joined.ids, non_finite, options, |step| {
        let table: Vec<u64> = step.roots.iter().map(|&r| joined.ids[r as usize]).collect();
        let segments = step
            .roots
            .iter()
            .enumerate()
            .skip(1)
            .filter(|&(n, &r)| r as usize == n && sizes[n] > 0)
            .count() as u64;
        per_threshold.push(step.summary(segments, (0, 0)));
        each(BlockwiseThreshold {
            threshold: step.threshold,
            score_threshold: step.score_threshold,
            merges: step.merges,
            region_graph: step.region_graph,
            segments,
            table,
            joined: &joined,
        })
    })?;
    summary.thresholds = per_threshold;
    Ok(summary)
}

/// Dense global ids of every block's fragments: after the blocks before (watershed), or
/// the given ids in ascending order.
fn global_ids(records: &[WaterzBlock]) -> Result<(Vec<Vec<u32>>, Vec<u64>)> {
    let too_many = || DecodeError::InvalidParameter {
        name: "fragments",
        reason: "more than 4294967294 fragments; use given fragments or smaller volumes".into(),
    };
    if records.iter().all(|r| r.originals.is_some()) {
        let mut ids: Vec<u64> = records
            .iter()
            .flat_map(|r| r.originals.iter().flatten().copied())
            .collect();
        ids.par_sort_unstable();
        ids.dedup();
        if ids.len() >= u32::MAX as usize {
            return Err(too_many());
        }
        let global = records
            .par_iter()
            .map(|r| {
                r.originals
                    .iter()
                    .flatten()
                    .map(|v| ids.binary_search(v).expect("listed") as u32)
                    .collect()
            })
            .collect();
        return Ok((global, ids));
    }
    let mut offset = 0u64;
    let mut global = Vec::with_capacity(records.len());
    for r in records {
        let n = r.sizes.len() as u64 - 1;
        global.push(
            std::iter::once(0)
                .chain((1..=n).map(|l| (offset + l) as u32))
                .collect(),
        );
        offset += n;
        if offset >= u64::from(u32::MAX) {
            return Err(too_many());
        }
    }
    Ok((global, (0..=offset).collect()))
}

/// Block `b`'s faces with global ids: `(u << 32 | v, position, affinity)`.
fn global_faces(
    joined: &Joined<'_>,
    blocks: &[Block],
    grid: [u64; 3],
    b: usize,
    rec: &WaterzBlock,
) -> Result<Vec<(u64, u64, f32)>> {
    let core = &blocks[b].core;
    let index = &blocks[b].index;
    let own = &joined.global[b];
    // The last plane of the block before along each axis, as global ids.
    let mut planes: [Option<Vec<u32>>; 3] = [None, None, None];
    for d in 0..3 {
        if index[d] == 0 || !rec.faces.iter().any(|f| f.axis as usize == d + 1) {
            continue;
        }
        let mut nb = [index[0], index[1], index[2]];
        nb[d] -= 1;
        let nbp = ((nb[0] * grid[1] + nb[1]) * grid[2] + nb[2]) as usize;
        let mut start = core.start().to_vec();
        start[d] -= 1;
        let mut shape = core.shape().to_vec();
        shape[d] = 1;
        let roi = Roi::new(start, shape)?;
        let labels = joined.local.read(nbp, &blocks[nbp].core, &roi)?;
        let table = &joined.global[nbp];
        planes[d] = Some(
            labels
                .iter()
                .map(|&l| {
                    table
                        .get(l as usize)
                        .copied()
                        .ok_or_else(|| corrupt(nbp, l))
                })
                .collect::<Result<_>>()?,
        );
    }
    let mut out = Vec::with_capacity(rec.faces.len());
    for f in &rec.faces {
        let u = own[f.a as usize];
        let v = if f.axis == 0 {
            own[f.b as usize]
        } else {
            let plane = planes[f.axis as usize - 1].as_ref().expect("read above");
            *plane.get(f.b as usize).ok_or_else(|| corrupt(b, f.b))?
        };
        if u == v || v == 0 {
            continue;
        }
        let key = (u64::from(u.min(v)) << 32) | u64::from(u.max(v));
        out.push((key, f.pos, f.aff));
    }
    Ok(out)
}

/// waterz block by block: fragments per block (with `halo` voxels of context for the
/// watershed), one region graph and one agglomeration over the volume; `each` receives
/// every threshold, whose [`BlockwiseThreshold::write`] writes its segmentation.
///
/// # Errors
/// As [`agglomerate`](super::agglomerate); also fragments of another shape or of a
/// non-integer type, dust merging (which needs the whole volume in memory), and storage
/// errors.
pub fn agglomerate_blockwise(
    affinities: &(impl ChunkedVolume + ?Sized),
    fragments: Option<&dyn ChunkedVolume>,
    options: &WaterzOptions,
    block: [u64; 3],
    halo: u64,
    progress: &dyn Progress,
    each: impl FnMut(BlockwiseThreshold<'_>) -> Result<()> + Send,
) -> Result<WaterzSummary> {
    let volume = check_blockwise(affinities, fragments, options, block)?;
    let grid = BlockGrid::new(&volume, &block, &[halo; 3])?;
    in_pool(options.threads, || {
        let blocks: Vec<Block> = grid.iter().collect();
        progress.start("fragments", blocks.len() as u64);
        let done: Vec<(Vec<u32>, WaterzBlock)> = blocks
            .par_iter()
            .enumerate()
            .map(|(p, b)| {
                let r = block_task(affinities, fragments, b, p as u64, options);
                progress.advance(1);
                r
            })
            .collect::<Result<_>>()?;
        progress.finish();
        let (local, records): (Vec<Vec<u32>>, Vec<WaterzBlock>) = done.into_iter().unzip();
        stitch(
            &grid,
            records,
            LocalLabels::Memory(local),
            options,
            progress,
            each,
        )
    })?
}

/// One block of a distributed agglomeration: its fragments written into `local` (one
/// chunk per block, uint32), its record returned.
pub(crate) fn run_block(
    affinities: &dyn ChunkedVolume,
    fragments: Option<&dyn ChunkedVolume>,
    local: &dyn ChunkedVolume,
    options: &WaterzOptions,
    block: [u64; 3],
    halo: u64,
    p: u64,
) -> Result<WaterzBlock> {
    let volume = check_blockwise(affinities, fragments, options, block)?;
    let grid = BlockGrid::new(&volume, &block, &[halo; 3])?;
    let b = block_at(&grid, p)?;
    let (labels, record) = block_task(affinities, fragments, &b, p, options)?;
    let data = ArrayD::from_shape_vec(b.core.shape_usize(), labels).expect("shape matches");
    local.write_roi(&b.core, &AnyArray::from(data))?;
    Ok(record)
}

fn block_at(grid: &BlockGrid, p: u64) -> Result<Block> {
    let g = grid.grid_shape();
    let index = [p / (g[1] * g[2]), (p / g[2]) % g[1], p % g[2]];
    grid.block(&index)
        .ok_or_else(|| DecodeError::InvalidParameter {
            name: "block",
            reason: format!("{p}; the volume has blocks 0..{}", grid.num_blocks()),
        })
}

/// The final step of a distributed agglomeration: the records of all blocks (in position
/// order) and the local labels they wrote.
pub(crate) fn stitch_records(
    local: &dyn ChunkedVolume,
    records: Vec<WaterzBlock>,
    options: &WaterzOptions,
    block: [u64; 3],
    progress: &dyn Progress,
    each: impl FnMut(BlockwiseThreshold<'_>) -> Result<()> + Send,
) -> Result<WaterzSummary> {
    check_options(options)?;
    let grid = BlockGrid::new(local.shape(), &block, &[0; 3])?;
    if records.len() as u64 != grid.num_blocks()
        || records
            .iter()
            .enumerate()
            .any(|(i, r)| r.position != i as u64)
    {
        return Err(DecodeError::InvalidParameter {
            name: "block records",
            reason: format!(
                "{} records for {} blocks, or out of order",
                records.len(),
                grid.num_blocks()
            ),
        });
    }
    in_pool(options.threads, || {
        stitch(
            &grid,
            records,
            LocalLabels::Volume(local),
            options,
            progress,
            each,
        )
    })?
}
