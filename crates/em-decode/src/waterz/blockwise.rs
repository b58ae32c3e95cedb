//! waterz block by block, for volumes larger than memory.
//!
//! 1. Fragments per block: the watershed of the block grown by a halo, cropped to the
//!    block and numbered in raster order after the fragments of the blocks before it (or
//!    the given fragments, read block by block).
//! 2. The region graph across blocks: every block lists its boundary faces (also those to
//!    the block before it along each axis) with their voxel's raster position; sorted by
//!    edge, then position, they reach the statistics in exactly waterz's order.
//! 3. One agglomeration over the whole graph, as in memory.
//! 4. Per threshold, every block's fragments are relabelled and written.
//!
//! For the same fragments the result is identical to [`agglomerate`](super::agglomerate)'s
//! (same merges, same labels). With fragments from the blockwise watershed, basins cut by a
//! block face become two fragments; they usually merge again, and what remains of the
//! difference is measured by `tools/bench-agglomerate` as VOI against the whole volume.
//!
//! Memory: the affinities and the outputs stay on disk; held are the fragments (4 bytes
//! per voxel), the boundary faces (16 bytes each) and a few blocks per thread.

use em_core::{AnyArray, BlockGrid, ChunkedVolume, Label, Progress, Roi};
use ndarray::{Array3, ArrayD, Ix4};
use rayon::prelude::*;

use super::{
    affs_of, check_options, merge_thresholds, stats::EdgeStats, Merge, ScoredEdge, WaterzOptions,
    WaterzSummary,
};
use crate::cc::in_pool;
use crate::{DecodeError, Result};

/// One threshold of [`agglomerate_blockwise`]: its merges, and the relabelling to write.
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
    blocks: &'a Blocks,
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
        self.blocks
            .cores
            .par_iter()
            .zip(&self.blocks.frags)
            .try_for_each(|(core, frags)| {
                let labels: Vec<L> = frags
                    .iter()
                    .map(|&f| L::from_u64(self.table[f as usize]).expect("checked above"))
                    .collect();
                let data =
                    ArrayD::from_shape_vec(core.shape_usize(), labels).expect("shape matches");
                out.write_roi(core, &L::into_any(data))?;
                Ok(())
            })
    }
}

/// The fragments of every block (dense global ids) and the blocks' places.
pub(crate) struct Blocks {
    grid: [u64; 3],
    cores: Vec<Roi>,
    frags: Vec<Vec<u32>>,
}

impl Blocks {
    fn index(&self, b: [u64; 3]) -> usize {
        ((b[0] * self.grid[1] + b[1]) * self.grid[2] + b[2]) as usize
    }
}

/// Affinities as f32 (`u8` means `v / 255`), with NaN and ±inf as 0; and how many were.
pub(crate) fn affinities_f32(any: AnyArray) -> Result<(ArrayD<f32>, u64)> {
    let mut a = match any {
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
    };
    let mut non_finite = 0;
    for v in a.iter_mut() {
        if !v.is_finite() {
            *v = 0.0;
            non_finite += 1;
        }
    }
    Ok((a, non_finite))
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

/// waterz block by block: fragments per block (with `halo` voxels of context), one region
/// graph and one agglomeration over the volume; `each` receives every threshold, whose
/// [`BlockwiseThreshold::write`] writes its segmentation.
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
    mut each: impl FnMut(BlockwiseThreshold<'_>) -> Result<()> + Send,
) -> Result<WaterzSummary> {
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
            reason: format!("waterz needs (C ≥ 3, Z, Y, X) affinities, got shape {shape:?}"),
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
    let grid = BlockGrid::new(&volume, &block, &[halo; 3])?;
    in_pool(options.threads, || {
        let (blocks, ids) = match fragments {
            Some(f) => given_fragments(f, &grid, progress)?,
            None => watershed_blocks(affinities, &grid, options, progress)?,
        };
        let (stats, non_finite) = region_graph(affinities, &blocks, ids.len(), options, progress)?;
        let mut per_threshold = Vec::new();
        let mut summary = merge_thresholds(stats, &ids, non_finite, options, |step| {
            let table: Vec<u64> = step.roots.iter().map(|&r| ids[r as usize]).collect();
            let segments = step
                .roots
                .iter()
                .enumerate()
                .skip(1)
                .filter(|&(n, &r)| r as usize == n)
                .count() as u64;
            per_threshold.push(step.summary(segments, (0, 0)));
            each(BlockwiseThreshold {
                threshold: step.threshold,
                score_threshold: step.score_threshold,
                merges: step.merges,
                region_graph: step.region_graph,
                segments,
                table,
                blocks: &blocks,
            })
        })?;
        summary.thresholds = per_threshold;
        Ok(summary)
    })?
}

fn empty_blocks(grid: &BlockGrid) -> Blocks {
    let g = grid.grid_shape();
    Blocks {
        grid: [g[0], g[1], g[2]],
        cores: grid.iter().map(|b| b.core).collect(),
        frags: Vec::new(),
    }
}

/// Watershed of each block with its halo, cropped, numbered after the blocks before it.
fn watershed_blocks(
    aff: &(impl ChunkedVolume + ?Sized),
    grid: &BlockGrid,
    options: &WaterzOptions,
    progress: &dyn Progress,
) -> Result<(Blocks, Vec<u64>)> {
    let mut blocks = empty_blocks(grid);
    let all: Vec<_> = grid.iter().collect();
    progress.start("fragments", all.len() as u64);
    let local: Vec<(Vec<u32>, u32)> = all
        .par_iter()
        .map(|b| {
            let (data, _) = read_channels(aff, &b.with_halo)?;
            let s = b.with_halo.shape();
            let shape = [s[0] as usize, s[1] as usize, s[2] as usize];
            let affs = affs_of(&data, shape, options.storage);
            let (seg, _) = super::watershed::watershed(
                &affs,
                options.aff_threshold_low,
                options.aff_threshold_high,
            );
            let seg = Array3::from_shape_vec(shape, seg).expect("shape matches");
            let (cs, cl) = (b.core_in_halo().start().to_vec(), b.core_in_halo().end());
            let cropped = seg.slice(ndarray::s![
                cs[0] as usize..cl[0] as usize,
                cs[1] as usize..cl[1] as usize,
                cs[2] as usize..cl[2] as usize
            ]);
            // Renumber by first appearance in the core, so ids do not depend on the halo.
            let mut map = rustc_hash::FxHashMap::default();
            let mut next = 0u32;
            let frags = cropped
                .iter()
                .map(|&f| {
                    if f == 0 {
                        0
                    } else {
                        *map.entry(f).or_insert_with(|| {
                            next += 1;
                            next
                        })
                    }
                })
                .collect();
            progress.advance(1);
            Ok((frags, next))
        })
        .collect::<Result<_>>()?;
    progress.finish();
    let mut offset = 0u64;
    for (mut frags, count) in local {
        let base = u32::try_from(offset)
            .ok()
            .filter(|b| b.checked_add(count).is_some());
        let Some(base) = base else {
            return Err(DecodeError::InvalidParameter {
                name: "fragments",
                reason: "more than 4294967295 fragments; use larger blocks or given fragments"
                    .into(),
            });
        };
        for f in frags.iter_mut().filter(|f| **f != 0) {
            *f += base;
        }
        blocks.frags.push(frags);
        offset += u64::from(count);
    }
    Ok((blocks, (0..=offset).collect()))
}

/// Given fragments read block by block; ids kept, mapped to dense ids in their order.
fn given_fragments(
    f: &dyn ChunkedVolume,
    grid: &BlockGrid,
    progress: &dyn Progress,
) -> Result<(Blocks, Vec<u64>)> {
    let mut blocks = empty_blocks(grid);
    progress.start("fragments", blocks.cores.len() as u64);
    let read: Vec<Vec<u64>> = blocks
        .cores
        .par_iter()
        .map(|core| {
            let labels = em_core::to_labels::<u64>(&f.read_roi(core)?)?;
            progress.advance(1);
            Ok(labels.into_raw_vec_and_offset().0)
        })
        .collect::<Result<_>>()?;
    progress.finish();
    let mut ids: Vec<u64> = read.iter().flatten().copied().filter(|&v| v != 0).collect();
    ids.par_sort_unstable();
    ids.dedup();
    if ids.len() >= u32::MAX as usize {
        return Err(DecodeError::InvalidParameter {
            name: "fragments",
            reason: format!(
                "{} distinct fragment ids; at most {} fit",
                ids.len(),
                u32::MAX - 1
            ),
        });
    }
    ids.insert(0, 0);
    blocks.frags = read
        .into_par_iter()
        .map(|v| {
            v.iter()
                .map(|x| ids.binary_search(x).expect("listed") as u32)
                .collect()
        })
        .collect();
    Ok((blocks, ids))
}

/// One boundary face: its edge `(u << 32) | v`, its voxel's raster position × 3 + axis, its
/// affinity.
type Face = (u64, u64, f32);

/// The region graph of all blocks, each edge's affinities in waterz's order.
fn region_graph(
    aff: &(impl ChunkedVolume + ?Sized),
    blocks: &Blocks,
    nodes: usize,
    options: &WaterzOptions,
    progress: &dyn Progress,
) -> Result<(EdgeStats, u64)> {
    let volume: Vec<u64> = aff.shape()[1..].to_vec();
    progress.start("region graph", blocks.cores.len() as u64);
    let per_block: Vec<(Vec<Face>, u64)> = (0..blocks.cores.len())
        .into_par_iter()
        .map(|b| {
            let faces = block_faces(aff, blocks, b, &volume, options)?;
            progress.advance(1);
            Ok(faces)
        })
        .collect::<Result<_>>()?;
    progress.finish();
    let non_finite = per_block.iter().map(|p| p.1).sum();
    let mut faces: Vec<Face> = per_block.into_iter().flat_map(|p| p.0).collect();
    faces.par_sort_unstable_by_key(|f| (f.0, f.1));
    let mut stats = EdgeStats::new(options.scoring.providers(), nodes);
    let mut sizes = vec![0u64; nodes];
    for frags in &blocks.frags {
        for &f in frags {
            sizes[f as usize] += 1;
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
    Ok((stats, non_finite))
}

/// The faces of block `b`'s voxels with their predecessors (also in the blocks before).
fn block_faces(
    aff: &(impl ChunkedVolume + ?Sized),
    blocks: &Blocks,
    b: usize,
    volume: &[u64],
    options: &WaterzOptions,
) -> Result<(Vec<Face>, u64)> {
    let core = &blocks.cores[b];
    let start = core.start();
    let end = core.end();
    // One plane more before the core, where the predecessors' edges (source storage) sit.
    let lo: Vec<u64> = start.iter().map(|&s| s.saturating_sub(1)).collect();
    let region = Roi::from_ranges(&[lo[0]..end[0], lo[1]..end[1], lo[2]..end[2]]);
    let (data, _) = read_channels(aff, &region)?;
    let rs = region.shape_usize();
    let affs = affs_of(&data, [rs[0], rs[1], rs[2]], options.storage);
    let (_, non_finite) = affinities_f32(aff.read_roi(&core.with_leading_axis(0, 3))?)?;
    let cs = core.shape_usize();
    let frags = &blocks.frags[b];
    let bsz = blocks.cores[0].shape();
    let block_of = |p: &[u64; 3]| [p[0] / bsz[0], p[1] / bsz[1], p[2] / bsz[2]];
    let frag_at = |p: [u64; 3]| -> u32 {
        let nb = blocks.index(block_of(&p));
        let c = &blocks.cores[nb];
        let (s, sh) = (c.start(), c.shape());
        let i = ((p[0] - s[0]) * sh[1] + (p[1] - s[1])) * sh[2] + (p[2] - s[2]);
        blocks.frags[nb][i as usize]
    };
    let mut faces = Vec::new();
    let mut i = 0;
    for z in 0..cs[0] {
        for y in 0..cs[1] {
            for x in 0..cs[2] {
                let p = [
                    start[0] + z as u64,
                    start[1] + y as u64,
                    start[2] + x as u64,
                ];
                let f1 = frags[i];
                i += 1;
                for d in 0..3 {
                    if p[d] == 0 {
                        continue;
                    }
                    let mut q = p;
                    q[d] -= 1;
                    let f2 = if q[d] >= start[d] {
                        let local = [z, y, x];
                        let mut l = local;
                        l[d] -= 1;
                        frags[(l[0] * cs[1] + l[1]) * cs[2] + l[2]]
                    } else {
                        frag_at(q)
                    };
                    if f1 == f2 || f1.min(f2) == 0 {
                        continue;
                    }
                    let key = (u64::from(f1.min(f2)) << 32) | u64::from(f1.max(f2));
                    let r = [
                        (p[0] - lo[0]) as usize,
                        (p[1] - lo[1]) as usize,
                        (p[2] - lo[2]) as usize,
                    ];
                    let ri = (r[0] * rs[1] + r[1]) * rs[2] + r[2];
                    let pos = ((p[0] * volume[1] + p[1]) * volume[2] + p[2]) * 3 + d as u64;
                    faces.push((key, pos, affs.back(d, ri)));
                }
            }
        }
    }
    Ok((faces, non_finite))
}
