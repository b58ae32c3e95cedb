//! waterz's watershed and agglomeration, with the same labels, ids and merge history.
//!
//! The input is three affinity channels `(z, y, x)` of a `(C, Z, Y, X)` array (further
//! channels are ignored, as in waterz). In waterz's convention `aff[d][v]` links voxel `v`
//! and its predecessor along axis `d`: [`EdgeStorage::Destination`], the default here;
//! [`EdgeStorage::Source`] (BANIS) is read shifted, without a copy.
//!
//! 1. Fragments: the watershed of `aff_threshold_low`/`high` (see [`watershed`]), numbered
//!    from 1 in raster order; or fragments given by the caller (ids kept, 0 background).
//! 2. The region graph: for every voxel and axis whose predecessor has another id, the
//!    affinity goes to that pair's edge; edges touching 0 are dropped; edge ids follow
//!    `(u, v)`, and each edge sees its affinities in raster order.
//! 3. Merging: the lowest score first while it is strictly below the threshold; the
//!    survivor is the smaller id; thresholds ascending, each continuing from the last.
//!    The scores are computed in waterz's types (`float` statistics, C++'s operator
//!    promotions) and the queue breaks ties as libstdc++'s heap does, so the merge history
//!    is entry for entry waterz's.
//!
//! Differences, all on purpose: NaN and ±inf affinities count as 0 (waterz's result then
//! depends on where they sit) and are counted; fragment ids are checked against the label
//! type before any work. Asking for the region graph rescores stale edges and queues them
//! again, exactly as waterz does: that can change later merges, so results with and without
//! it may differ — as they do in waterz.
//!
//! Additions (not in PyPI waterz): thresholds as percentiles of the initial edge scores,
//! and dust merging after each threshold ([`DustOptions`]).

mod blockwise;
mod merge;
mod scoring;
mod stats;
mod watershed;

use em_core::{EdgeStorage, Label};
use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3, ArrayView4, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub(crate) use blockwise::{affinities_f32, run_block, stitch_records};
pub use blockwise::{agglomerate_blockwise, BlockwiseThreshold, WaterzBlock};
pub use merge::{Merge, ScoredEdge};
pub use scoring::Scoring;

use crate::cc::in_pool;
use crate::{DecodeError, Result};
use merge::Merging;
use stats::EdgeStats;

/// The output path of `threshold`: `{threshold}` in `out` replaced by it (as Rust prints
/// an `f32`: `0.3`, `1`).
pub fn threshold_output(out: &Path, threshold: f32) -> PathBuf {
    PathBuf::from(
        out.to_string_lossy()
            .replace("{threshold}", &threshold.to_string()),
    )
}

/// Options of [`agglomerate`] (waterz's arguments, and the additions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaterzOptions {
    /// Score thresholds; sorted ascending (the summary says when they were not).
    pub thresholds: Vec<f32>,
    /// The scoring function (waterz's string or an alias; see [`Scoring`]).
    pub scoring: Scoring,
    /// Watershed: voxels whose strongest edge is at or below this are background.
    pub aff_threshold_low: f32,
    /// Watershed: edges at or above this always join.
    pub aff_threshold_high: f32,
    /// 0: an exact priority queue; N: waterz's queue of N bins (scores in [0, 1]).
    pub discretize_queue: usize,
    /// Where each edge's value is stored (waterz: destination).
    pub storage: EdgeStorage,
    /// Read thresholds as percentiles (0–100) of the initial edge scores.
    pub percentile: bool,
    /// Merge small segments after each threshold, then drop dust.
    pub dust: Option<DustOptions>,
    /// Return the region graph after each threshold (waterz's `return_region_graph`).
    pub region_graph: bool,
    /// Worker threads (`None`: all cores); the result is the same for any number.
    pub threads: Option<usize>,
}

impl Default for WaterzOptions {
    fn default() -> Self {
        WaterzOptions {
            thresholds: vec![0.5],
            scoring: Scoring::default(),
            aff_threshold_low: 0.0001,
            aff_threshold_high: 0.9999,
            discretize_queue: 0,
            storage: EdgeStorage::Destination,
            percentile: false,
            dust: None,
            region_graph: false,
            threads: None,
        }
    }
}

/// Small-segment merging after agglomeration (zwatershed's `size_th`, `weight_th`,
/// `dust_th`, as PyTC's waterz fork applies them).
///
/// Between segments, edges carry their largest boundary affinity and are visited from the
/// strongest down to `weight_th` (ties by ids): two segments merge when either is smaller
/// than `size_th` voxels (sizes add up as they merge; the smaller id survives). Segments
/// still smaller than `dust_th` voxels then become background.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DustOptions {
    /// Segments below this many voxels merge into their strongest neighbour.
    pub size_th: u64,
    /// Only edges with an affinity at or above this merge.
    pub weight_th: f32,
    /// Segments below this many voxels afterwards become 0.
    pub dust_th: u64,
}

/// One threshold's result.
#[derive(Clone, Debug)]
pub struct ThresholdResult<L> {
    /// The threshold as asked (a percentile when [`WaterzOptions::percentile`]).
    pub threshold: f32,
    /// The score threshold merged below.
    pub score_threshold: f32,
    /// The segmentation: fragments relabelled by the region they joined.
    pub segmentation: Array3<L>,
    /// The merges since the previous threshold, in order.
    pub merges: Vec<Merge>,
    /// The region graph after merging (when asked for).
    pub region_graph: Option<Vec<ScoredEdge>>,
}

/// What one threshold did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ThresholdSummary {
    /// The threshold as asked.
    pub threshold: f32,
    /// The score threshold merged below.
    pub score_threshold: f32,
    /// Merges since the previous threshold.
    pub merges: u64,
    /// Non-zero segments in the output.
    pub segments: u64,
    /// Segments merged by dust merging.
    pub dust_merged: u64,
    /// Segments set to 0 as dust.
    pub dust_removed: u64,
}

/// What [`agglomerate`] did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WaterzSummary {
    /// Fragments (non-zero) before merging.
    pub fragments: u64,
    /// Edges of the initial region graph.
    pub edges: u64,
    /// NaN or infinite affinities (counted as 0).
    pub non_finite: u64,
    /// True when the thresholds were given out of order (they are processed ascending).
    pub reordered: bool,
    /// Per threshold, ascending.
    pub thresholds: Vec<ThresholdSummary>,
}

/// The three affinity channels in waterz's convention, read in place: the edge between
/// voxel `i` and its predecessor along `d` is `c[d][i − shift[d]]`.
pub(crate) struct Affs<'a> {
    pub(crate) shape: [usize; 3],
    c: [&'a [f32]; 3],
    shift: [usize; 3],
}

impl Affs<'_> {
    /// The affinity between voxel `i` and its predecessor along `d` (which must exist).
    #[inline(always)]
    pub(crate) fn back(&self, d: usize, i: usize) -> f32 {
        self.c[d][i - self.shift[d]]
    }
}

/// Affinities as contiguous f32 with non-finite values replaced by 0 (copied only then).
fn prepare_affinities(
    aff: ArrayView4<'_, f32>,
) -> Result<(std::borrow::Cow<'_, [f32]>, [usize; 3], u64)> {
    let shape = aff.shape();
    if shape[0] < 3 {
        return Err(DecodeError::InvalidParameter {
            name: "affinities",
            reason: format!(
                "waterz needs 3 channels (z, y, x), got shape {shape:?} with {} channels",
                shape[0]
            ),
        });
    }
    let dims = [shape[1], shape[2], shape[3]];
    let aff = aff.slice_axis_move(Axis(0), (0..3).into());
    let non_finite = aff.iter().filter(|v| !v.is_finite()).count() as u64;
    let data: std::borrow::Cow<'_, [f32]> = match aff.to_slice() {
        Some(s) if non_finite == 0 => std::borrow::Cow::Borrowed(s),
        _ => aff
            .iter()
            .map(|&v| if v.is_finite() { v } else { 0.0 })
            .collect::<Vec<f32>>()
            .into(),
    };
    Ok((data, dims, non_finite))
}

/// waterz's watershed fragments alone (what `agglomerate` starts from), as `u64` ids.
///
/// # Errors
/// Fewer than 3 channels, `low ≥ high`, or thread counts out of range.
pub fn watershed_fragments(
    aff: ArrayView4<'_, f32>,
    options: &WaterzOptions,
) -> Result<Array3<u64>> {
    check_options(options)?;
    let (data, shape, _) = prepare_affinities(aff)?;
    let affs = affs_of(&data, shape, options.storage);
    let (frags, _) = in_pool(options.threads, || {
        watershed::watershed(&affs, options.aff_threshold_low, options.aff_threshold_high)
    })?;
    Ok(
        Array3::from_shape_vec(shape, frags.into_iter().map(u64::from).collect())
            .expect("shape matches"),
    )
}

fn affs_of(data: &[f32], shape: [usize; 3], storage: EdgeStorage) -> Affs<'_> {
    let n = shape.iter().product::<usize>();
    let stride = [shape[1] * shape[2], shape[2], 1];
    let shift = match storage {
        EdgeStorage::Destination => [0; 3],
        EdgeStorage::Source => stride,
    };
    Affs {
        shape,
        c: [&data[..n], &data[n..2 * n], &data[2 * n..3 * n]],
        shift,
    }
}

fn check_options(o: &WaterzOptions) -> Result<()> {
    let bad = |name, reason: String| Err(DecodeError::InvalidParameter { name, reason });
    if o.thresholds.is_empty() {
        return bad("thresholds", "give at least one threshold".into());
    }
    if let Some(t) = o.thresholds.iter().find(|t| !t.is_finite()) {
        return bad("thresholds", format!("{t} is not a finite number"));
    }
    if o.percentile {
        if let Some(t) = o.thresholds.iter().find(|t| !(0.0..=100.0).contains(*t)) {
            return bad("thresholds", format!("{t} is not a percentile (0 to 100)"));
        }
    }
    if o.aff_threshold_low.is_nan()
        || o.aff_threshold_high.is_nan()
        || o.aff_threshold_low >= o.aff_threshold_high
    {
        return bad(
            "aff_threshold_low",
            format!(
                "{} must be below aff_threshold_high ({})",
                o.aff_threshold_low, o.aff_threshold_high
            ),
        );
    }
    if o.discretize_queue > 65536 {
        return bad(
            "discretize_queue",
            format!(
                "{} bins; give 0 (exact) or at most 65536",
                o.discretize_queue
            ),
        );
    }
    if let Some(d) = o.dust {
        if !d.weight_th.is_finite() {
            return bad(
                "weight_th",
                format!("{} is not a finite number", d.weight_th),
            );
        }
    }
    crate::check_threads(o.threads)
}

/// Fragments as dense ids `0..nodes` (0 = background) and the original id of each.
struct Fragments {
    dense: Vec<u32>,
    ids: Vec<u64>,
}

fn dense_fragments(given: ArrayView3<'_, u64>) -> Result<Fragments> {
    let mut ids: Vec<u64> = given.iter().copied().filter(|&v| v != 0).collect();
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
    let flat: Vec<u64> = given.iter().copied().collect();
    let dense = flat
        .par_iter()
        .map(|v| ids.binary_search(v).expect("every id is listed") as u32)
        .collect();
    Ok(Fragments { dense, ids })
}

/// The region graph of `frags` with every statistic `scoring` needs, edges sorted.
fn region_graph(affs: &Affs<'_>, frags: &[u32], nodes: usize, scoring: &Scoring) -> EdgeStats {
    let mut stats = EdgeStats::new(scoring.providers(), nodes);
    let [zdim, ydim, xdim] = affs.shape;
    let stride = [ydim * xdim, xdim, 1];
    let mut index: merge::PairMap<u32> = merge::PairMap::default();
    // The last edge seen per axis: neighbouring faces usually separate the same pair.
    let mut last = [(u64::MAX, 0u32); 3];
    let mut idx = 0;
    for z in 0..zdim {
        for y in 0..ydim {
            for x in 0..xdim {
                let id1 = frags[idx];
                stats.add_voxel(id1 as usize);
                for (d, &c) in [z, y, x].iter().enumerate() {
                    if c == 0 {
                        continue;
                    }
                    let id2 = frags[idx - stride[d]];
                    if id1 == id2 {
                        continue;
                    }
                    let (u, v) = (id1.min(id2), id1.max(id2));
                    if u == 0 {
                        continue;
                    }
                    let key = (u64::from(u) << 32) | u64::from(v);
                    let e = if last[d].0 == key {
                        last[d].1
                    } else {
                        let e = *index
                            .entry(key)
                            .or_insert_with(|| stats.new_edge(u, v) as u32);
                        last[d] = (key, e);
                        e
                    };
                    stats.add_affinity(e as usize, affs.back(d, idx));
                }
                idx += 1;
            }
        }
    }
    let mut order: Vec<u32> = (0..stats.ends.len() as u32).collect();
    order.sort_unstable_by_key(|&e| stats.ends[e as usize]);
    stats.permute(&order);
    stats
}

/// waterz's agglomeration: fragments (the watershed's, or `fragments`), their region
/// graph, and merging below each threshold in ascending order. `each` receives every
/// threshold's result in turn (so only one segmentation is held at a time).
///
/// # Errors
/// Fewer than 3 channels, fragments of another shape, no or non-finite thresholds, an
/// unknown scoring (parsed earlier), `low ≥ high`, more than 65536 queue bins, ids that do
/// not fit `L`, and whatever `each` returns.
pub fn agglomerate<L: Label>(
    aff: ArrayView4<'_, f32>,
    fragments: Option<ArrayView3<'_, u64>>,
    options: &WaterzOptions,
    mut each: impl FnMut(ThresholdResult<L>) -> Result<()> + Send,
) -> Result<WaterzSummary> {
    check_options(options)?;
    let (data, shape, non_finite) = prepare_affinities(aff)?;
    if let Some(f) = &fragments {
        if f.shape() != shape {
            return Err(DecodeError::InvalidParameter {
                name: "fragments",
                reason: format!(
                    "shape {:?} differs from the affinities' volume {shape:?}",
                    f.shape()
                ),
            });
        }
    }
    let affs = affs_of(&data, shape, options.storage);
    in_pool(options.threads, || {
        let frags = match fragments {
            Some(f) => dense_fragments(f)?,
            None => {
                let (dense, count) = watershed::watershed(
                    &affs,
                    options.aff_threshold_low,
                    options.aff_threshold_high,
                );
                Fragments {
                    dense,
                    ids: (0..=u64::from(count)).collect(),
                }
            }
        };
        let largest = *frags.ids.last().expect("0 is always listed");
        if L::from_u64(largest).is_none() {
            return Err(DecodeError::InvalidParameter {
                name: "label type",
                reason: format!(
                    "fragment id {largest} does not fit {} labels; use u64",
                    L::NAME
                ),
            });
        }
        run(&affs, &frags, shape, non_finite, options, &mut each)
    })?
}

/// One threshold's merging, before any voxel is relabelled.
pub(crate) struct Step<'a> {
    threshold: f32,
    score_threshold: f32,
    merges: Vec<Merge>,
    region_graph: Option<Vec<ScoredEdge>>,
    /// The dense region each dense fragment belongs to now.
    roots: &'a [u32],
}

impl Step<'_> {
    fn summary(&self, segments: u64, dust: (u64, u64)) -> ThresholdSummary {
        ThresholdSummary {
            threshold: self.threshold,
            score_threshold: self.score_threshold,
            merges: self.merges.len() as u64,
            segments,
            dust_merged: dust.0,
            dust_removed: dust.1,
        }
    }
}

/// Merges the region graph in `stats` below each threshold (ascending) and hands each
/// step to `each`; returns the summary without per-threshold entries.
pub(crate) fn merge_thresholds(
    stats: EdgeStats,
    ids: &[u64],
    non_finite: u64,
    options: &WaterzOptions,
    mut each: impl FnMut(Step<'_>) -> Result<()>,
) -> Result<WaterzSummary> {
    let nodes = ids.len();
    let summary = WaterzSummary {
        fragments: nodes as u64 - 1,
        edges: stats.ends.len() as u64,
        non_finite,
        reordered: options.thresholds.windows(2).any(|w| w[0] > w[1]),
        thresholds: Vec::new(),
    };
    let mut merging = Merging::new(stats, nodes, options.discretize_queue);
    merging.score_all(&options.scoring);
    let mut thresholds = options.thresholds.clone();
    thresholds.sort_by(f32::total_cmp);
    let sorted_scores = options.percentile.then(|| {
        let mut s = merging.scores().to_vec();
        s.sort_by(f32::total_cmp);
        s
    });
    let mut history = Vec::new();
    let mut roots = vec![0u32; nodes];
    for threshold in thresholds {
        let score_threshold = match &sorted_scores {
            Some(s) if !s.is_empty() => {
                s[((threshold / 100.0) * (s.len() - 1) as f32).round() as usize]
            }
            _ => threshold,
        };
        history.clear();
        merging.merge_until(score_threshold, &options.scoring, &mut history);
        let merges = history
            .iter()
            .map(|&(a, b, score)| Merge {
                a: ids[a as usize],
                b: ids[b as usize],
                c: ids[a as usize],
                score,
            })
            .collect();
        let region_graph = options.region_graph.then(|| {
            merging
                .region_graph(&options.scoring)
                .into_iter()
                .map(|(u, v, score)| ScoredEdge {
                    u: ids[u as usize],
                    v: ids[v as usize],
                    score,
                })
                .collect()
        });
        for (n, r) in roots.iter_mut().enumerate() {
            *r = merging.root(n as u32);
        }
        each(Step {
            threshold,
            score_threshold,
            merges,
            region_graph,
            roots: &roots,
        })?;
    }
    Ok(summary)
}

/// [`agglomerate`] of affinities of any element type em-decode reads: f32, f16, or u8
/// (meaning `v / 255`); the summary counts the NaN and infinite values (used as 0).
///
/// # Errors
/// As [`agglomerate`]; also other element types and arrays without 4 axes.
pub fn agglomerate_any<L: Label>(
    aff: &em_core::AnyArray,
    fragments: Option<ArrayView3<'_, u64>>,
    options: &WaterzOptions,
    each: impl FnMut(ThresholdResult<L>) -> Result<()> + Send,
) -> Result<WaterzSummary> {
    let four = |dims: &[usize]| DecodeError::NotFourDimensional(dims.to_vec());
    if let em_core::AnyArray::F32(a) = aff {
        // float32 is read in place (a copy is made only if it holds NaN or infinities).
        let view = a
            .view()
            .into_dimensionality::<ndarray::Ix4>()
            .map_err(|_| four(a.shape()))?;
        return agglomerate(view, fragments, options, each);
    }
    let (converted, non_finite) = affinities_f32(aff.clone())?;
    let view = converted
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .map_err(|_| four(converted.shape()))?;
    let mut summary = agglomerate(view, fragments, options, each)?;
    summary.non_finite = non_finite;
    Ok(summary)
}

fn run<L: Label>(
    affs: &Affs<'_>,
    frags: &Fragments,
    shape: [usize; 3],
    non_finite: u64,
    options: &WaterzOptions,
    each: &mut impl FnMut(ThresholdResult<L>) -> Result<()>,
) -> Result<WaterzSummary> {
    let nodes = frags.ids.len();
    let stats = region_graph(affs, &frags.dense, nodes, &options.scoring);
    let mut per_threshold = Vec::new();
    let mut summary = merge_thresholds(stats, &frags.ids, non_finite, options, |step| {
        let mut labels: Vec<u32> = frags
            .dense
            .par_iter()
            .map(|&f| step.roots[f as usize])
            .collect();
        let dust = match &options.dust {
            Some(dust) => merge_dust(affs, &mut labels, nodes, dust),
            None => (0, 0),
        };
        let segments = count_segments(&labels, nodes);
        let segmentation = Array3::from_shape_vec(
            shape,
            labels
                .par_iter()
                .map(|&n| {
                    L::from_u64(frags.ids[n as usize]).expect("checked against the largest id")
                })
                .collect(),
        )
        .expect("shape matches");
        per_threshold.push(step.summary(segments, dust));
        each(ThresholdResult {
            threshold: step.threshold,
            score_threshold: step.score_threshold,
            segmentation,
            merges: step.merges,
            region_graph: step.region_graph,
        })
    })?;
    summary.thresholds = per_threshold;
    Ok(summary)
}

fn count_segments(labels: &[u32], nodes: usize) -> u64 {
    let mut seen = vec![false; nodes];
    let mut count = 0;
    for &l in labels {
        if l != 0 && !seen[l as usize] {
            seen[l as usize] = true;
            count += 1;
        }
    }
    count
}

/// Dust merging on dense labels (see [`DustOptions`]); returns (merged, removed).
fn merge_dust(affs: &Affs<'_>, labels: &mut [u32], nodes: usize, dust: &DustOptions) -> (u64, u64) {
    use em_core::UnionFind;
    let [zdim, ydim, xdim] = affs.shape;
    let stride = [ydim * xdim, xdim, 1];
    let mut sizes = vec![0u64; nodes];
    let mut strongest: merge::PairMap<f32> = merge::PairMap::default();
    let mut idx = 0;
    for z in 0..zdim {
        for y in 0..ydim {
            for x in 0..xdim {
                let a = labels[idx];
                sizes[a as usize] += 1;
                for (d, &c) in [z, y, x].iter().enumerate() {
                    if c == 0 {
                        continue;
                    }
                    let b = labels[idx - stride[d]];
                    if a == b || a == 0 || b == 0 {
                        continue;
                    }
                    let w = affs.back(d, idx);
                    let e = strongest
                        .entry((u64::from(a.min(b)) << 32) | u64::from(a.max(b)))
                        .or_insert(w);
                    if w > *e {
                        *e = w;
                    }
                }
                idx += 1;
            }
        }
    }
    let mut edges: Vec<((u32, u32), f32)> = strongest
        .into_iter()
        .map(|(k, w)| (((k >> 32) as u32, k as u32), w))
        .collect();
    edges.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut parent: Vec<u32> = (0..nodes as u32).collect();
    let mut merged = 0;
    for ((u, v), w) in edges {
        if w < dust.weight_th {
            break;
        }
        let (ru, rv) = (parent.find(u as usize), parent.find(v as usize));
        if ru != rv && (sizes[ru] < dust.size_th || sizes[rv] < dust.size_th) {
            let (keep, gone) = (ru.min(rv), ru.max(rv));
            parent[gone] = keep as u32;
            sizes[keep] += sizes[gone];
            merged += 1;
        }
    }
    let mut removed = 0;
    let mut gone = vec![false; nodes];
    for n in 1..nodes {
        let r = parent.find(n);
        if r == n && sizes[n] > 0 && sizes[n] < dust.dust_th {
            gone[n] = true;
            removed += 1;
        }
    }
    let root: Vec<u32> = (0..nodes)
        .map(|n| {
            let r = parent.find(n);
            if gone[r] {
                0
            } else {
                r as u32
            }
        })
        .collect();
    labels.par_iter_mut().for_each(|l| *l = root[*l as usize]);
    (merged, removed)
}
