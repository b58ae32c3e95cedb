//! Out-of-core decoding: the same labels as [`crate::decode`], one block at a time.
//!
//! Method. Pass 1 labels each block on its region grown by the offsets' reach (so every
//! edge of a core voxel is seen and the "labelled voxel" rule is exact at block faces),
//! records for each block-local label its first voxel (global raster index) and size
//! within the core, and keeps the labels of the core's high faces ("shell", as thick as the
//! reach). Halo voxels that belong to an earlier block carry two labels — this block's and
//! the owner's shell label — which are joined in a global union-find whose root is the
//! label with the earliest first voxel. Sorting the roots by first voxel gives exactly the
//! in-memory numbering; small objects are dropped from the table, not the voxels. Pass 2
//! relabels each block (labelling is deterministic) and writes its core through the table.
//!
//! Memory: the blocks in flight (one per worker thread: affinities with halo and their
//! labels), the shells of one layer of blocks, and a few words per block-local label.

use std::collections::HashMap;

use em_core::{Block, BlockGrid, ChunkedVolume, DType, Element, Label, Progress, Roi};
use ndarray::{Array3, Array4, ArrayD};

use crate::cc::{affinity_cc, in_pool, Affinity, CcParams};
use crate::decode::{upscale, DecodeParams};
use crate::small::SmallObjectMode;
use crate::{DecodeError, Result};

/// What a decoding run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    /// Components in the output (after small-object removal).
    pub components: u64,
    /// Components removed as too small.
    pub removed: u64,
    /// Voxels of the affinity grid.
    pub voxels: u64,
    /// Voxels of the affinity grid with a non-zero label in the output.
    pub labelled_voxels: u64,
    /// Blocks processed (1 for an in-memory decode).
    pub blocks: u64,
}

/// Decodes the affinities of `aff` (`(C, Z, Y, X)`, f32/f16/u8) into `out` (`u32` or `u64`,
/// shape `(Z, Y, X)` times `params.scale`) block by block, with the output of
/// [`crate::decode`] voxel for voxel. Blocks of `block_shape` are aligned to the grid
/// origin; align them to the storage chunks for speed.
///
/// # Errors
/// Bad parameters or shapes, a small-object mode other than `background` (the others need
/// the whole volume), storage errors of either volume, more components than the output
/// type can number.
pub fn decode_blockwise(
    aff: &dyn ChunkedVolume,
    out: &dyn ChunkedVolume,
    params: &DecodeParams,
    block_shape: [u64; 3],
    progress: &dyn Progress,
) -> Result<DecodeSummary> {
    match (aff.dtype(), out.dtype()) {
        (DType::F32, DType::U32) => run::<f32, u32>(aff, out, params, block_shape, progress),
        (DType::F32, DType::U64) => run::<f32, u64>(aff, out, params, block_shape, progress),
        (DType::F16, DType::U32) => {
            run::<em_core::f16, u32>(aff, out, params, block_shape, progress)
        }
        (DType::F16, DType::U64) => {
            run::<em_core::f16, u64>(aff, out, params, block_shape, progress)
        }
        (DType::U8, DType::U32) => run::<u8, u32>(aff, out, params, block_shape, progress),
        (DType::U8, DType::U64) => run::<u8, u64>(aff, out, params, block_shape, progress),
        (DType::F32 | DType::F16 | DType::U8, other) => Err(DecodeError::InvalidParameter {
            name: "output",
            reason: format!(
                "{} is {other}; labels are written as uint32 or uint64",
                out.describe()
            ),
        }),
        (other, _) => Err(DecodeError::InvalidParameter {
            name: "affinities",
            reason: format!(
                "{} is {other}; affinities are float32, float16 or uint8 (scaled by 1/255)",
                aff.describe()
            ),
        }),
    }
}

/// The fixed facts of one run.
struct Plan<'a> {
    aff: &'a dyn ChunkedVolume,
    grid: BlockGrid,
    dims: [u64; 3],
    /// Selected channels with their offsets.
    edges: Vec<(usize, em_core::Offset)>,
    cc: CcParams,
}

fn run<A: Affinity + Element, L: Label>(
    aff: &dyn ChunkedVolume,
    out: &dyn ChunkedVolume,
    params: &DecodeParams,
    block_shape: [u64; 3],
    progress: &dyn Progress,
) -> Result<DecodeSummary> {
    params.check_scale()?;
    let shape = aff.shape();
    if shape.len() != 4 {
        return Err(DecodeError::NotFourDimensional(
            shape.iter().map(|&n| n as usize).collect(),
        ));
    }
    let dims = [shape[1], shape[2], shape[3]];
    let scaled: Vec<u64> = dims
        .iter()
        .zip(params.scale)
        .map(|(&n, f)| n * f as u64)
        .collect();
    if out.shape() != scaled.as_slice() {
        return Err(DecodeError::InvalidParameter {
            name: "output",
            reason: format!(
                "{} has shape {:?}; decoding affinities of {:?} at scale {:?} needs {scaled:?}",
                out.describe(),
                out.shape(),
                dims,
                params.scale
            ),
        });
    }
    if params.min_size > 1 && params.small_mode != SmallObjectMode::Background {
        return Err(DecodeError::InvalidParameter {
            name: "small-object mode",
            reason: format!(
                "{:?} needs the whole volume; blockwise decoding removes small objects with \
                 `background` only (decode in memory for the others)",
                params.small_mode
            ),
        });
    }
    let edges = params.cc.edges(shape[0] as usize)?;
    let mut reach = [0u64; 3];
    for (_, o) in &edges {
        for (r, d) in reach.iter_mut().zip(o.0) {
            *r = (*r).max(d.unsigned_abs());
        }
    }
    if block_shape.contains(&0) || block_shape.iter().zip(&reach).any(|(b, r)| b < r) {
        return Err(DecodeError::InvalidParameter {
            name: "block shape",
            reason: format!(
                "{block_shape:?}; each side must be ≥ 1 and at least the offsets' reach {reach:?}"
            ),
        });
    }
    let grid = BlockGrid::new(&dims, &block_shape, &reach)?;
    let plan = Plan {
        aff,
        grid,
        dims,
        cc: CcParams {
            threshold: params.cc.threshold,
            channels: (0..edges.len()).collect(),
            offsets: Some(edges.iter().map(|&(_, o)| o).collect()),
            storage: params.cc.storage,
            threads: Some(1),
        },
        edges,
    };
    let voxels: u64 = dims.iter().product();
    let blocks: Vec<Block> = plan.grid.iter().collect();
    let mut summary = DecodeSummary {
        voxels,
        blocks: blocks.len() as u64,
        ..DecodeSummary::default()
    };
    if voxels == 0 {
        return Ok(summary);
    }
    let threads = params
        .cc
        .threads
        .unwrap_or_else(rayon::current_num_threads)
        .max(1);
    in_pool(params.cc.threads, || -> Result<DecodeSummary> {
        use rayon::prelude::*;
        // Pass 1: label, collect first voxels, sizes, shells and halo pairs.
        progress.start("labelling blocks", blocks.len() as u64);
        let mut table = Table::default();
        let mut bases = Vec::with_capacity(blocks.len());
        let mut shells: HashMap<u64, Stored> = HashMap::new();
        let grid_shape = plan.grid.grid_shape();
        let lookback = grid_shape[1] * grid_shape[2] + grid_shape[2] + 1;
        for group in blocks.chunks(threads) {
            let results: Vec<Result<Pass1>> =
                group.par_iter().map(|b| pass1::<A>(&plan, b)).collect();
            for (block, result) in group.iter().zip(results) {
                let p = result?;
                let flat = flat_index(&block.index, &grid_shape);
                let base = table.push(&p.first, &p.size);
                bases.push(base);
                for (local, h) in p.halo {
                    let owner: Vec<u64> = h
                        .iter()
                        .zip(plan.grid.block_shape())
                        .map(|(c, b)| c / b)
                        .collect();
                    if let Some(stored) = shells.get(&flat_index(&owner, &grid_shape)) {
                        if let Some(l) = stored.label_at(&h) {
                            table.union(base + local as usize - 1, stored.base + l as usize - 1);
                        }
                    }
                }
                shells.insert(
                    flat,
                    Stored {
                        base,
                        shells: p.shells,
                    },
                );
                shells.retain(|&k, _| k + lookback >= flat);
                progress.advance(1);
            }
        }
        drop(shells);
        progress.finish();
        let numbering = table.number(params.min_size)?;
        if numbering.components > L::MAX.to_u64() {
            return Err(DecodeError::TooManyComponents {
                label_type: L::NAME,
            });
        }
        summary.components = numbering.components;
        summary.removed = numbering.removed;
        summary.labelled_voxels = numbering.labelled_voxels;
        // Pass 2: relabel and write through the table.
        progress.start("writing blocks", blocks.len() as u64);
        for (group, group_bases) in blocks.chunks(threads).zip(bases.chunks(threads)) {
            group
                .par_iter()
                .zip(group_bases)
                .map(|(block, &base)| {
                    let labels = label_block::<A>(&plan, block)?;
                    let core = crop(&labels, &block.core_in_halo());
                    let mapped: Array3<L> = core.mapv(|l| {
                        if l == 0 {
                            L::BACKGROUND
                        } else {
                            L::from_u64(numbering.finals[base + l as usize - 1]).unwrap_or(L::MAX)
                        }
                    });
                    let (data, roi) = if params.scale == [1, 1, 1] {
                        (mapped, block.core.clone())
                    } else {
                        let start: Vec<u64> = block
                            .core
                            .start()
                            .iter()
                            .zip(params.scale)
                            .map(|(s, f)| s * f as u64)
                            .collect();
                        let shape: Vec<u64> = block
                            .core
                            .shape()
                            .iter()
                            .zip(params.scale)
                            .map(|(s, f)| s * f as u64)
                            .collect();
                        (
                            upscale(mapped.view(), params.scale)?,
                            Roi::new(start, shape)?,
                        )
                    };
                    out.write_roi(&roi, &L::into_any(data.into_dyn()))?;
                    progress.advance(1);
                    Ok(())
                })
                .collect::<Result<Vec<()>>>()?;
        }
        progress.finish();
        Ok(summary)
    })?
}

/// The part of a block's labels at `local` (coordinates within the block's region).
fn crop<'a>(labels: &'a Array3<u32>, local: &Roi) -> ndarray::ArrayView3<'a, u32> {
    let r = local.ranges();
    let u = |i: usize| r[i].start as usize..r[i].end as usize;
    labels.slice(ndarray::s![u(0), u(1), u(2)])
}

fn flat_index(index: &[u64], grid: &[u64]) -> u64 {
    index.iter().zip(grid).fold(0, |acc, (i, g)| acc * g + i)
}

/// Labels one block on its grown region (block-local labels `1..=n`, raster order).
fn label_block<A: Affinity + Element>(plan: &Plan<'_>, block: &Block) -> Result<Array3<u32>> {
    let region = &block.with_halo;
    let shape = region.shape_usize();
    let mut values: Vec<A> = Vec::with_capacity(plan.edges.len() * region.num_elements() as usize);
    for &(channel, _) in &plan.edges {
        let roi = region.with_leading_axis(channel as u64, 1);
        let data: ArrayD<A> =
            plan.aff
                .read_roi(&roi)?
                .into_typed()
                .map_err(|e| em_core::Error::InVolume {
                    volume: plan.aff.describe(),
                    source: Box::new(e),
                })?;
        values.extend(data.iter());
    }
    let aff = Array4::from_shape_vec((plan.edges.len(), shape[0], shape[1], shape[2]), values)
        .map_err(|_| DecodeError::NotFourDimensional(shape.clone()))?;
    affinity_cc::<A, u32>(aff.view(), &plan.cc)
}

/// What pass 1 keeps of a block.
struct Pass1 {
    /// First voxel (global raster index) of each local label in the core; `u64::MAX` for
    /// labels seen only in the halo.
    first: Vec<u64>,
    /// Core voxels of each local label.
    size: Vec<u64>,
    /// Labels near the high faces of the core.
    shells: Vec<Shell>,
    /// (local label, global voxel) for labelled halo voxels owned by earlier blocks.
    halo: Vec<(u32, [u64; 3])>,
}

/// Labels of a region of a block's core.
struct Shell {
    roi: Roi,
    labels: Array3<u32>,
}

/// A processed block's shells and where its labels start in the global table.
struct Stored {
    base: usize,
    shells: Vec<Shell>,
}

impl Stored {
    fn label_at(&self, p: &[u64; 3]) -> Option<u32> {
        self.shells.iter().find_map(|s| {
            if !s.roi.contains_point(p) {
                return None;
            }
            let i: Vec<usize> = p
                .iter()
                .zip(s.roi.start())
                .map(|(a, b)| (a - b) as usize)
                .collect();
            let l = s.labels[[i[0], i[1], i[2]]];
            (l != 0).then_some(l)
        })
    }
}

fn pass1<A: Affinity + Element>(plan: &Plan<'_>, block: &Block) -> Result<Pass1> {
    let labels = label_block::<A>(plan, block)?;
    let n = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut first = vec![u64::MAX; n];
    let mut size = vec![0u64; n];
    let [_, dy, dx] = plan.dims;
    let region = &block.with_halo;
    let (r0, c0, c1) = (region.start(), block.core.start(), block.core.end());
    let mut halo = Vec::new();
    let block_shape = plan.grid.block_shape();
    for ((iz, iy, ix), &l) in labels.indexed_iter() {
        if l == 0 {
            continue;
        }
        let g = [r0[0] + iz as u64, r0[1] + iy as u64, r0[2] + ix as u64];
        let in_core = (0..3).all(|a| g[a] >= c0[a] && g[a] < c1[a]);
        if in_core {
            let k = l as usize - 1;
            if first[k] == u64::MAX {
                first[k] = (g[0] * dy + g[1]) * dx + g[2];
            }
            size[k] += 1;
        } else {
            let owner: Vec<u64> = g.iter().zip(block_shape).map(|(c, b)| c / b).collect();
            if owner < block.index {
                halo.push((l, g));
            }
        }
    }
    // High-face shells, as thick as the reach along their axis.
    let mut shells = Vec::new();
    let reach = plan.grid.halo();
    for axis in 0..3 {
        let r = reach[axis].min(block.core.shape()[axis]);
        if r == 0 || c1[axis] >= plan.dims[axis] {
            continue;
        }
        let mut start = c0.to_vec();
        let mut shape = block.core.shape().to_vec();
        start[axis] = c1[axis] - r;
        shape[axis] = r;
        let roi = Roi::new(start, shape)?;
        let local = roi.relative_to(region)?;
        let labels = crop(&labels, &local).to_owned();
        shells.push(Shell { roi, labels });
    }
    Ok(Pass1 {
        first,
        size,
        shells,
        halo,
    })
}

/// The global union-find over all block-local labels.
#[derive(Default)]
struct Table {
    parent: Vec<usize>,
    first: Vec<u64>,
    size: Vec<u64>,
}

/// The final label of every global id.
struct Numbering {
    finals: Vec<u64>,
    components: u64,
    removed: u64,
    labelled_voxels: u64,
}

impl Table {
    /// Adds a block's labels; returns the global id of its label 1.
    fn push(&mut self, first: &[u64], size: &[u64]) -> usize {
        let base = self.parent.len();
        self.parent.extend(base..base + first.len());
        self.first.extend_from_slice(first);
        self.size.extend_from_slice(size);
        base
    }

    fn find(&mut self, mut a: usize) -> usize {
        while self.parent[a] != a {
            let g = self.parent[self.parent[a]];
            self.parent[a] = g;
            a = g;
        }
        a
    }

    /// Joins two classes; the root is the one whose first voxel comes first.
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (keep, child) = if (self.first[ra], ra) <= (self.first[rb], rb) {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[child] = keep;
    }

    fn number(mut self, min_size: u64) -> Result<Numbering> {
        let n = self.parent.len();
        for id in 0..n {
            let r = self.find(id);
            if r != id {
                self.size[r] += self.size[id];
            }
        }
        let mut roots: Vec<usize> = (0..n)
            .filter(|&id| self.parent[id] == id && self.first[id] != u64::MAX)
            .collect();
        let all = roots.len() as u64;
        roots.retain(|&r| min_size <= 1 || self.size[r] >= min_size);
        roots.sort_unstable_by_key(|&r| self.first[r]);
        let mut of_root = vec![0u64; n];
        let mut labelled_voxels = 0;
        for (k, &r) in roots.iter().enumerate() {
            of_root[r] = k as u64 + 1;
            labelled_voxels += self.size[r];
        }
        let mut finals = Vec::with_capacity(n);
        for id in 0..n {
            let r = self.find(id);
            finals.push(of_root[r]);
        }
        Ok(Numbering {
            finals,
            components: roots.len() as u64,
            removed: all - roots.len() as u64,
            labelled_voxels,
        })
    }
}
