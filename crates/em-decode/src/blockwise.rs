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

use em_core::{BlockGrid, ChunkedVolume, DType, Element, Label, Progress, Roi, UnionFind};
use ndarray::{Array3, Array4, ArrayD};

use crate::cc::{affinity_cc, count_non_finite, in_pool, Affinity, CcOptions};
use crate::decode::{upscale, DecodeOptions};
use crate::small::SmallObjectMode;
use crate::{DecodeError, Result};

/// What a decoding run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
    /// Affinity values of the selected channels that are NaN or ±inf (their edges are off);
    /// counted by [`crate::decode`] and [`decode_blockwise`], 0 from
    /// [`crate::stitch_blocks`], whose blocks were read by other processes.
    pub non_finite: u64,
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
    params: &DecodeOptions,
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

/// Which side of a block its halo lies on: where the edges into the block are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Halo {
    /// Every edge into a voxel is stored at or below it (`Source` with non-negative offsets):
    /// blocks go in raster order and take their halo from earlier blocks' high faces.
    Low,
    /// Every edge into a voxel is stored at or above it (`Destination`): reverse raster order,
    /// halo from later blocks' low faces.
    High,
    /// Mixed-sign offsets: the halo is read from the volume on both sides.
    Both,
}

/// The fixed facts of one run.
pub(crate) struct Plan<'a> {
    pub(crate) aff: &'a dyn ChunkedVolume,
    pub(crate) out: &'a dyn ChunkedVolume,
    pub(crate) dims: [u64; 3],
    pub(crate) block: [u64; 3],
    pub(crate) reach: [u64; 3],
    pub(crate) grid: [u64; 3],
    pub(crate) halo: Halo,
    pub(crate) scale: [usize; 3],
    /// Block writes may run in parallel: every block covers whole output chunks.
    pub(crate) aligned: bool,
    /// Selected channels with their offsets.
    pub(crate) edges: Vec<(usize, em_core::Offset)>,
    pub(crate) cc: CcOptions,
}

/// Checks the request and fixes the block layout; `out` receives the block-local labels of
/// pass 1 (`out` itself in memory, a working array when the blocks run in other processes).
pub(crate) fn make_plan<'a>(
    aff: &'a dyn ChunkedVolume,
    out: &'a dyn ChunkedVolume,
    params: &DecodeOptions,
    block_shape: [u64; 3],
) -> Result<Plan<'a>> {
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
    let sign: i64 = match params.cc.storage {
        em_core::EdgeStorage::Source => 1,
        em_core::EdgeStorage::Destination => -1,
    };
    let mut reach = [0u64; 3];
    let (mut up, mut down) = (false, false);
    for (_, o) in &edges {
        for (r, d) in reach.iter_mut().zip(o.0) {
            *r = (*r).max(d.unsigned_abs());
            up |= d * sign > 0;
            down |= d * sign < 0;
        }
    }
    let halo = match (up, down) {
        (true, true) => Halo::Both,
        (false, true) => Halo::High,
        _ => Halo::Low,
    };
    if block_shape.contains(&0) || block_shape.iter().zip(&reach).any(|(b, r)| b < r) {
        return Err(DecodeError::InvalidParameter {
            name: "block shape",
            reason: format!(
                "{block_shape:?}; each side must be ≥ 1 and at least the offsets' reach {reach:?}"
            ),
        });
    }
    let grid_blocks = BlockGrid::new(&dims, &block_shape, &[0, 0, 0])?;
    let g = grid_blocks.grid_shape();
    let chunks = out.chunk_shape();
    let aligned = (0..3).all(|a| {
        let side = block_shape[a] * params.scale[a] as u64;
        chunks
            .get(a)
            .is_some_and(|&c| c > 0 && side.is_multiple_of(c))
    });
    let plan = Plan {
        aff,
        out,
        dims,
        block: block_shape,
        reach,
        grid: [g[0], g[1], g[2]],
        halo,
        scale: params.scale,
        aligned,
        cc: CcOptions {
            threshold: params.cc.threshold,
            channels: (0..edges.len()).collect(),
            offsets: Some(edges.iter().map(|&(_, o)| o).collect()),
            storage: params.cc.storage,
            threads: Some(1),
        },
        edges,
    };
    Ok(plan)
}

fn run<A: Affinity + Element, L: Label>(
    aff: &dyn ChunkedVolume,
    out: &dyn ChunkedVolume,
    params: &DecodeOptions,
    block_shape: [u64; 3],
    progress: &dyn Progress,
) -> Result<DecodeSummary> {
    let plan = make_plan(aff, out, params, block_shape)?;
    let voxels: u64 = plan.dims.iter().product();
    let n_blocks = plan.blocks();
    let mut summary = DecodeSummary {
        voxels,
        blocks: n_blocks,
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
    let positions: Vec<u64> = (0..n_blocks).collect();
    in_pool(params.cc.threads, || -> Result<DecodeSummary> {
        use rayon::prelude::*;
        // Pass 1: label blocks (local labels go to the output), join them across faces.
        progress.start("labelling blocks", n_blocks);
        let mut stitcher = Stitcher::new(&plan);
        let mut aff_store: HashMap<u64, Vec<Piece<A>>> = HashMap::new();
        for group in positions.chunks(threads) {
            let cores: Vec<Result<(CoreRead<A>, u64)>> = group
                .par_iter()
                .map(|&p| read_core::<A>(&plan, p))
                .collect();
            let mut core_aff = Vec::with_capacity(group.len());
            for (&p, c) in group.iter().zip(cores) {
                let ((values, shells), bad) = c?;
                summary.non_finite += bad;
                aff_store.insert(p, shells);
                core_aff.push(values);
            }
            let labelled: Vec<Result<Pass1<L>>> = group
                .par_iter()
                .zip(core_aff)
                .map(|(&p, values)| pass1::<A, L>(&plan, p, values, Some(&aff_store)))
                .collect();
            for (&p, result) in group.iter().zip(labelled) {
                let r = result?;
                if let Some((roi, data)) = r.write {
                    write_block(&plan, &roi, data)?;
                }
                stitcher.add(p, r.record)?;
                progress.advance(1);
            }
            if let Some(&last) = group.last() {
                aff_store.retain(|&k, _| k + stitcher.lookback > last);
            }
        }
        drop(aff_store);
        progress.finish();
        let (bases, numbering) = stitcher.finish(params.min_size, L::MAX.to_u64(), L::NAME)?;
        summary.components = numbering.components;
        summary.removed = numbering.removed;
        summary.labelled_voxels = numbering.labelled_voxels;
        relabel_blocks::<L, L>(&plan, plan.out, &bases, &numbering, threads, progress)?;
        Ok(summary)
    })?
}

/// Joins block-local labels across block faces as blocks arrive in processing order.
pub(crate) struct Stitcher<'p, 'a> {
    plan: &'p Plan<'a>,
    table: Table,
    bases: Vec<usize>,
    /// Shell labels of recent blocks (the only ones a later block's halo can reach).
    label_store: HashMap<u64, (usize, Vec<Piece<u32>>)>,
    /// Blocks kept behind the newest: one layer of the grid.
    pub(crate) lookback: u64,
    next: u64,
}

impl<'p, 'a> Stitcher<'p, 'a> {
    pub(crate) fn new(plan: &'p Plan<'a>) -> Self {
        Self {
            plan,
            table: Table::default(),
            bases: vec![0; plan.blocks() as usize],
            label_store: HashMap::new(),
            lookback: plan.grid[1] * plan.grid[2] + plan.grid[2] + 1,
            next: 0,
        }
    }

    /// Adds block `p`'s labels; blocks must come in processing order.
    pub(crate) fn add(&mut self, p: u64, r: BlockRecord) -> Result<()> {
        if p != self.next {
            return Err(DecodeError::InvalidParameter {
                name: "block order",
                reason: format!("block {p} arrived where block {} was expected", self.next),
            });
        }
        self.next += 1;
        let base = self.table.push(&r.first, &r.size);
        self.bases[p as usize] = base;
        for &(local, h) in &r.halo {
            let owner = self.plan.position(&self.plan.block_of(&h));
            if let Some((obase, shells)) = self.label_store.get(&owner) {
                if let Some(l) = label_at(shells, &h) {
                    self.table
                        .union(base + local as usize - 1, obase + l as usize - 1);
                }
            }
        }
        self.label_store.insert(p, (base, r.shells));
        // One block in, one out: the block a whole layer behind can no longer be reached.
        if let Some(old) = p.checked_sub(self.lookback) {
            self.label_store.remove(&old);
        }
        Ok(())
    }

    /// The global-id base of every block and the final numbering.
    pub(crate) fn finish(
        self,
        min_size: u64,
        max_label: u64,
        label_type: &'static str,
    ) -> Result<(Vec<usize>, Numbering)> {
        let numbering = self.table.number(min_size)?;
        if numbering.components > max_label {
            return Err(DecodeError::TooManyComponents { label_type });
        }
        Ok((self.bases, numbering))
    }
}

/// Pass 2: the block-local labels in `local` (type `S`) → final labels in `plan.out`.
pub(crate) fn relabel_blocks<S: Label, L: Label>(
    plan: &Plan<'_>,
    local: &dyn ChunkedVolume,
    bases: &[usize],
    numbering: &Numbering,
    threads: usize,
    progress: &dyn Progress,
) -> Result<()> {
    use rayon::prelude::*;
    let n_blocks = plan.blocks();
    progress.start("relabelling blocks", n_blocks);
    let relabel = |p: u64| -> Result<(Roi, Array3<L>)> {
        let roi = plan.out_roi(&plan.core(p))?;
        let ids: ArrayD<S> =
            local
                .read_roi(&roi)?
                .into_typed()
                .map_err(|e| em_core::CoreError::InVolume {
                    volume: local.describe(),
                    source: Box::new(e),
                })?;
        let base = bases[p as usize];
        let mapped = ids.mapv(|l| {
            let l = l.to_usize();
            if l == 0 {
                L::BACKGROUND
            } else {
                numbering
                    .finals
                    .get(base + l - 1)
                    .and_then(|&f| L::from_u64(f))
                    .unwrap_or(L::MAX)
            }
        });
        let shape = roi.shape_usize();
        let mapped = mapped
            .into_shape_with_order((shape[0], shape[1], shape[2]))
            .map_err(|_| DecodeError::NotFourDimensional(shape.clone()))?;
        Ok((roi, mapped))
    };
    let positions: Vec<u64> = (0..n_blocks).collect();
    for group in positions.chunks(threads.max(1)) {
        if plan.aligned {
            group
                .par_iter()
                .map(|&p| {
                    let (roi, data) = relabel(p)?;
                    plan.out.write_roi(&roi, &L::into_any(data.into_dyn()))?;
                    progress.advance(1);
                    Ok(())
                })
                .collect::<Result<Vec<()>>>()?;
        } else {
            let done: Vec<Result<(Roi, Array3<L>)>> =
                group.par_iter().map(|&p| relabel(p)).collect();
            for d in done {
                let (roi, data) = d?;
                plan.out.write_roi(&roi, &L::into_any(data.into_dyn()))?;
                progress.advance(1);
            }
        }
    }
    progress.finish();
    Ok(())
}

impl Plan<'_> {
    /// Blocks in the grid.
    pub(crate) fn blocks(&self) -> u64 {
        self.grid.iter().product()
    }

    /// Grid index of the block at processing position `p`.
    fn index(&self, p: u64) -> [u64; 3] {
        let total = self.grid.iter().product::<u64>();
        let flat = if self.halo == Halo::High {
            total - 1 - p
        } else {
            p
        };
        [
            flat / (self.grid[1] * self.grid[2]),
            flat / self.grid[2] % self.grid[1],
            flat % self.grid[2],
        ]
    }

    /// Processing position of the block with grid index `i`.
    fn position(&self, i: &[u64; 3]) -> u64 {
        let flat = (i[0] * self.grid[1] + i[1]) * self.grid[2] + i[2];
        if self.halo == Halo::High {
            self.grid.iter().product::<u64>() - 1 - flat
        } else {
            flat
        }
    }

    fn block_of(&self, v: &[u64; 3]) -> [u64; 3] {
        [
            v[0] / self.block[0],
            v[1] / self.block[1],
            v[2] / self.block[2],
        ]
    }

    pub(crate) fn core(&self, p: u64) -> Roi {
        let i = self.index(p);
        let start: Vec<u64> = (0..3).map(|a| i[a] * self.block[a]).collect();
        let shape: Vec<u64> = (0..3)
            .map(|a| self.block[a].min(self.dims[a] - start[a]))
            .collect();
        Roi::from_ranges(&[
            start[0]..start[0] + shape[0],
            start[1]..start[1] + shape[1],
            start[2]..start[2] + shape[2],
        ])
    }

    /// The core grown by the reach on the halo side(s), clipped to the volume.
    pub(crate) fn region(&self, core: &Roi) -> Roi {
        let (s, e) = (core.start(), core.end());
        let r: Vec<std::ops::Range<u64>> = (0..3)
            .map(|a| {
                let lo = match self.halo {
                    Halo::High => s[a],
                    _ => s[a].saturating_sub(self.reach[a]),
                };
                let hi = match self.halo {
                    Halo::Low => e[a],
                    _ => (e[a] + self.reach[a]).min(self.dims[a]),
                };
                lo..hi
            })
            .collect();
        Roi::from_ranges(&r)
    }

    /// The slabs of a core that later blocks need: high faces in raster order, low faces
    /// in reverse order, each as thick as the reach along its axis.
    fn shell_rois(&self, core: &Roi) -> Vec<Roi> {
        let (s, e) = (core.start(), core.end());
        let mut out = Vec::new();
        for a in 0..3 {
            let r = self.reach[a].min(e[a] - s[a]);
            let (lo, hi) = if self.halo == Halo::High {
                if s[a] == 0 || r == 0 {
                    continue;
                }
                (s[a], s[a] + r)
            } else {
                if e[a] >= self.dims[a] || r == 0 {
                    continue;
                }
                (e[a] - r, e[a])
            };
            let mut ranges: Vec<std::ops::Range<u64>> = (0..3).map(|b| s[b]..e[b]).collect();
            ranges[a] = lo..hi;
            out.push(Roi::from_ranges(&ranges));
        }
        out
    }

    /// The output region of a core (scaled).
    fn out_roi(&self, core: &Roi) -> Result<Roi> {
        let start: Vec<u64> = core
            .start()
            .iter()
            .zip(self.scale)
            .map(|(s, f)| s * f as u64)
            .collect();
        let shape: Vec<u64> = core
            .shape()
            .iter()
            .zip(self.scale)
            .map(|(s, f)| s * f as u64)
            .collect();
        Ok(Roi::new(start, shape)?)
    }
}

/// A block's own affinities and the face slabs kept for later blocks.
type CoreRead<A> = (Array4<A>, Vec<Piece<A>>);

/// A box of values (all selected channels for affinities) at a place in the volume.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Piece<T> {
    pub(crate) roi: Roi,
    pub(crate) values: ndarray::ArrayD<T>,
}

pub(crate) fn label_at(pieces: &[Piece<u32>], p: &[u64; 3]) -> Option<u32> {
    pieces.iter().find_map(|s| {
        if !s.roi.contains_point(p) {
            return None;
        }
        let st = s.roi.start();
        let l = s.values[[
            (p[0] - st[0]) as usize,
            (p[1] - st[1]) as usize,
            (p[2] - st[2]) as usize,
        ]];
        (l != 0).then_some(l)
    })
}

/// Reads the selected channels of `roi` as `(k, z, y, x)`.
pub(crate) fn read_channels<A: Affinity + Element>(
    plan: &Plan<'_>,
    roi: &Roi,
) -> Result<Array4<A>> {
    let shape = roi.shape_usize();
    let mut values: Vec<A> = Vec::with_capacity(plan.edges.len() * roi.num_elements() as usize);
    for &(channel, _) in &plan.edges {
        let data: ArrayD<A> = plan
            .aff
            .read_roi(&roi.with_leading_axis(channel as u64, 1))?
            .into_typed()
            .map_err(|e| em_core::CoreError::InVolume {
                volume: plan.aff.describe(),
                source: Box::new(e),
            })?;
        match data.as_slice() {
            Some(slice) => values.extend_from_slice(slice),
            None => values.extend(data.iter()),
        }
    }
    Array4::from_shape_vec((plan.edges.len(), shape[0], shape[1], shape[2]), values)
        .map_err(|_| DecodeError::NotFourDimensional(shape))
}

/// Step 1 of a block: its own affinities (the whole region where the halo is read from the
/// volume) and the face slabs later blocks take their halo from.
fn read_core<A: Affinity + Element>(plan: &Plan<'_>, p: u64) -> Result<(CoreRead<A>, u64)> {
    let core = plan.core(p);
    if plan.halo == Halo::Both {
        let region = plan.region(&core);
        let values = read_channels(plan, &region)?;
        let r = core.relative_to(&region)?.ranges();
        let u = |i: usize| r[i].start as usize..r[i].end as usize;
        let bad = count_non_finite(values.slice(ndarray::s![.., u(0), u(1), u(2)]));
        return Ok(((values, Vec::new()), bad));
    }
    let values = read_channels::<A>(plan, &core)?;
    let bad = count_non_finite(values.view());
    let mut shells = Vec::new();
    for roi in plan.shell_rois(&core) {
        let local = roi.relative_to(&core)?;
        let r = local.ranges();
        let u = |i: usize| r[i].start as usize..r[i].end as usize;
        let piece = values
            .slice(ndarray::s![.., u(0), u(1), u(2)])
            .to_owned()
            .into_dyn();
        shells.push(Piece { roi, values: piece });
    }
    Ok(((values, shells), bad))
}

/// What pass 1 keeps of a block: its labels' first voxels and sizes, its face labels and
/// the halo voxels where it meets earlier blocks. Serialised by [`BlockRecord::to_bytes`]
/// when blocks are labelled in other processes.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRecord {
    /// Processing position of the block.
    pub(crate) position: u64,
    /// Affinity grid `(Z, Y, X)` and block shape the record was made for.
    pub(crate) dims: [u64; 3],
    pub(crate) block: [u64; 3],
    /// First voxel (global raster index) of each local label in the core; `u64::MAX` for
    /// labels seen only in the halo.
    pub(crate) first: Vec<u64>,
    /// Core voxels of each local label.
    pub(crate) size: Vec<u64>,
    /// Labels of the face slabs later blocks join with.
    pub(crate) shells: Vec<Piece<u32>>,
    /// (local label, global voxel) for labelled halo voxels of blocks processed before.
    pub(crate) halo: Vec<(u32, [u64; 3])>,
}

/// Pass 1's result: the record, and the local labels still to be written (when writes are
/// not parallel).
pub(crate) struct Pass1<L> {
    pub(crate) record: BlockRecord,
    pub(crate) write: Option<(Roi, Array3<L>)>,
}

pub(crate) fn pass1<A: Affinity + Element, L: Label>(
    plan: &Plan<'_>,
    p: u64,
    values: Array4<A>,
    aff_store: Option<&HashMap<u64, Vec<Piece<A>>>>,
) -> Result<Pass1<L>> {
    let core = plan.core(p);
    let region = plan.region(&core);
    // Without a store, `values` already covers the whole region.
    let aff = match aff_store {
        Some(store) if plan.halo != Halo::Both => assemble(plan, p, &core, &region, values, store)?,
        _ => values,
    };
    let labels = affinity_cc::<A, u32>(aff.view(), &plan.cc)?;
    drop(aff);
    let n = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut first = vec![u64::MAX; n];
    let mut size = vec![0u64; n];
    let [_, dy, dx] = plan.dims;
    let (r0, r1) = (region.start().to_vec(), region.end());
    let (c0, c1) = (core.start().to_vec(), core.end());
    let me = plan.index(p);
    let mut halo = Vec::new();
    for (iz, plane) in labels.outer_iter().enumerate() {
        let gz = r0[0] + iz as u64;
        for (iy, row) in plane.outer_iter().enumerate() {
            let gy = r0[1] + iy as u64;
            let row = row.as_slice().unwrap_or(&[]);
            let core_row = (c0[0]..c1[0]).contains(&gz) && (c0[1]..c1[1]).contains(&gy);
            if core_row {
                let (a, b) = ((c0[2] - r0[2]) as usize, (c1[2] - r0[2]) as usize);
                let base = (gz * dy + gy) * dx + c0[2];
                for (i, &l) in row[a..b].iter().enumerate() {
                    if l != 0 {
                        let k = l as usize - 1;
                        if first[k] == u64::MAX {
                            first[k] = base + i as u64;
                        }
                        size[k] += 1;
                    }
                }
            }
            // Halo voxels of this row: all of it outside the core's rows, else its ends.
            let (a, b) = if core_row {
                ((c0[2] - r0[2]) as usize, (c1[2] - r0[2]) as usize)
            } else {
                (row.len(), row.len())
            };
            let ends = row[..a]
                .iter()
                .enumerate()
                .chain(row[b..].iter().enumerate().map(|(i, l)| (i + b, l)));
            for (ix, &l) in ends {
                let gx = r0[2] + ix as u64;
                if l == 0 {
                    continue;
                }
                let h = [gz, gy, gx];
                let owner = plan.block_of(&h);
                if owner != me && plan.position(&owner) < p {
                    halo.push((l, h));
                }
            }
        }
    }
    let _ = r1;
    let crop = |roi: &Roi| -> Result<Array3<u32>> {
        let r = roi.relative_to(&region)?.ranges();
        let u = |i: usize| r[i].start as usize..r[i].end as usize;
        Ok(labels.slice(ndarray::s![u(0), u(1), u(2)]).to_owned())
    };
    let mut shells = Vec::new();
    for roi in plan.shell_rois(&core) {
        let values = crop(&roi)?.into_dyn();
        shells.push(Piece { roi, values });
    }
    let local: Array3<L> = crop(&core)?.mapv(|l| L::from_u64(u64::from(l)).unwrap_or(L::MAX));
    let out_roi = plan.out_roi(&core)?;
    let local = if plan.scale == [1, 1, 1] {
        local
    } else {
        upscale(local.view(), plan.scale)?
    };
    let write = if plan.aligned {
        plan.out
            .write_roi(&out_roi, &L::into_any(local.into_dyn()))?;
        None
    } else {
        Some((out_roi, local))
    };
    Ok(Pass1 {
        record: BlockRecord {
            position: p,
            dims: plan.dims,
            block: plan.block,
            first,
            size,
            shells,
            halo,
        },
        write,
    })
}

/// The block's region: its core values plus the halo from the face slabs of the blocks
/// processed before it.
fn assemble<A: Affinity + Element>(
    plan: &Plan<'_>,
    p: u64,
    core: &Roi,
    region: &Roi,
    values: Array4<A>,
    aff_store: &HashMap<u64, Vec<Piece<A>>>,
) -> Result<Array4<A>> {
    if region == core {
        return Ok(values);
    }
    let shape = region.shape_usize();
    let k = plan.edges.len();
    let mut aff = Array4::<A>::from_elem((k, shape[0], shape[1], shape[2]), A::default());
    let place = |aff: &mut Array4<A>, roi: &Roi, src: ndarray::ArrayView4<'_, A>| -> Result<()> {
        let r = roi.relative_to(region)?.ranges();
        let u = |i: usize| r[i].start as usize..r[i].end as usize;
        aff.slice_mut(ndarray::s![.., u(0), u(1), u(2)])
            .assign(&src);
        Ok(())
    };
    place(&mut aff, core, values.view())?;
    let me = plan.index(p);
    // Neighbours within one block on the halo side.
    for dz in [-1i64, 0, 1] {
        for dy in [-1i64, 0, 1] {
            for dx in [-1i64, 0, 1] {
                let n = [me[0] as i64 + dz, me[1] as i64 + dy, me[2] as i64 + dx];
                if n.iter()
                    .zip(plan.grid)
                    .any(|(&c, g)| c < 0 || c >= g as i64)
                {
                    continue;
                }
                let n = n.map(|c| c as u64);
                let pos = plan.position(&n);
                if pos >= p {
                    continue;
                }
                for piece in aff_store.get(&pos).map_or(&[][..], Vec::as_slice) {
                    let Some(overlap) = piece.roi.intersect(region) else {
                        continue;
                    };
                    let r = overlap.relative_to(&piece.roi)?.ranges();
                    let u = |i: usize| r[i].start as usize..r[i].end as usize;
                    let src = piece
                        .values
                        .view()
                        .into_dimensionality::<ndarray::Ix4>()
                        .map_err(|_| {
                            DecodeError::NotFourDimensional(piece.values.shape().to_vec())
                        })?;
                    let src = src.slice(ndarray::s![.., u(0), u(1), u(2)]);
                    place(&mut aff, &overlap, src)?;
                }
            }
        }
    }
    Ok(aff)
}

fn write_block<L: Label>(plan: &Plan<'_>, roi: &Roi, data: Array3<L>) -> Result<()> {
    plan.out.write_roi(roi, &L::into_any(data.into_dyn()))?;
    Ok(())
}

/// The global union-find over all block-local labels.
#[derive(Default)]
struct Table {
    parent: Vec<usize>,
    first: Vec<u64>,
    size: Vec<u64>,
}

/// The final label of every global id.
pub(crate) struct Numbering {
    pub(crate) finals: Vec<u64>,
    pub(crate) components: u64,
    pub(crate) removed: u64,
    pub(crate) labelled_voxels: u64,
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

    fn find(&mut self, a: usize) -> usize {
        self.parent.find(a)
    }

    /// Joins two classes; the root is the one whose first voxel comes first.
    fn union(&mut self, a: usize, b: usize) {
        let first = &self.first;
        self.parent.union_by_key(a, b, |r| (first[r], r));
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
