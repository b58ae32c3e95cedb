//! Mutex watershed (Wolf et al., 2018) on an affinity volume: [`mutex_watershed`], whose
//! documentation gives the semantics (affogato's `compute_mws_segmentation`, the
//! `mwatershed` package's `agglom`).
//!
//! Cost: a first pass counts the edges per 16-bit prefix of their sort key; then, phase by
//! phase (up to 16 Mi edges each, the affinities scanned again each time), every edge of the
//! phase (8 bytes: key and id; 16 where edge ids need over 32 bits) is written into its
//! bucket of about 64 Ki edges, and each bucket is radix-sorted in cache just before it is
//! visited: no comparison sort of all edges, and a 128 MiB edge buffer at most. A cluster
//! with mutexes holds a list naming a voxel of each cluster it is separated from; merging
//! appends the shorter list to the longer, and a hash set remembers separated pairs of
//! lists, so most mutex checks are one lookup. Memory: the edge buffer, 5 bytes per voxel
//! for the forest, the labels, and the mutexes.

use std::any::{Any, TypeId};
use std::ops::Range;

use em_core::{f16, Label};
use ndarray::{Array3, ArrayView3, ArrayView4, Axis};

use crate::cc::{count_non_finite, in_pool};
use crate::{Affinity, DecodeError, Result};

/// Parameters of [`mutex_watershed`]; missing keys take their defaults when deserialised.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MwsOptions {
    /// One `(dz, dy, dx)` per channel: `aff[c, v]` links `v` and `v + offsets[c]`. The
    /// default is PyTorch Connectomics' 12-channel SNEMI3D affinity layout
    /// (`tutorials/rsunet_snemi.yaml`), whose values sit at the far voxel of each edge,
    /// hence negated here: x, y, z neighbours, z at 2–4, x and y at 3, 9, 27.
    pub offsets: Vec<[i64; 3]>,
    /// How many leading channels are attractive; the rest are repulsive (default 3).
    pub attractive: usize,
    /// Keep repulsive edges only at voxels whose `(z, y, x)` are multiples of these
    /// (default `[1, 1, 1]`: all).
    pub strides: [usize; 3],
    /// Keep each repulsive edge with probability `1 / (sz·sy·sx)` instead of on the grid.
    pub randomize_strides: bool,
    /// Seed of `randomize_strides`: the same seed keeps the same edges.
    pub seed: u64,
    /// Worker threads for building and sorting the edges: `None` uses rayon's global pool,
    /// `Some(1)` the calling thread. The output is identical for every thread count.
    pub threads: Option<usize>,
}

impl Default for MwsOptions {
    fn default() -> Self {
        Self {
            offsets: vec![
                [0, 0, -1],
                [0, -1, 0],
                [-1, 0, 0],
                [-2, 0, 0],
                [-3, 0, 0],
                [-4, 0, 0],
                [0, 0, -3],
                [0, 0, -9],
                [0, 0, -27],
                [0, -3, 0],
                [0, -9, 0],
                [0, -27, 0],
            ],
            attractive: 3,
            strides: [1, 1, 1],
            randomize_strides: false,
            seed: 0,
            threads: None,
        }
    }
}

impl MwsOptions {
    /// Checks the options against a channel count.
    fn check(&self, channels: usize) -> Result<()> {
        if self.offsets.is_empty() {
            return Err(DecodeError::InvalidParameter {
                name: "offsets",
                reason: "the list is empty; give one (dz, dy, dx) per channel".into(),
            });
        }
        if self.offsets.len() != channels {
            return Err(DecodeError::OffsetCountMismatch {
                offsets: self.offsets.len(),
                channels,
            });
        }
        if let Some(c) = self.offsets.iter().position(|o| *o == [0, 0, 0]) {
            return Err(DecodeError::InvalidParameter {
                name: "offsets",
                reason: format!("channel {c} has offset (0, 0, 0), which links a voxel to itself"),
            });
        }
        if self.attractive > channels {
            return Err(DecodeError::InvalidParameter {
                name: "attractive",
                reason: format!(
                    "{} attractive channels but the affinities have {channels}",
                    self.attractive
                ),
            });
        }
        if self.strides.contains(&0) {
            return Err(DecodeError::InvalidParameter {
                name: "strides",
                reason: format!("{:?}; every stride must be at least 1", self.strides),
            });
        }
        Ok(())
    }
}

/// What [`mutex_watershed`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MwsSummary {
    /// Segments in the output (the largest label).
    pub segments: u64,
    /// Affinity values that are NaN or ±infinite (their edges do not exist).
    pub non_finite: u64,
    /// Edges visited: those inside the volume and the mask, kept by the strides, finite.
    pub edges: u64,
    /// Attractive edges that joined two clusters.
    pub merges: u64,
    /// Repulsive edges that met two different clusters (each puts a mutex between them
    /// unless one is there already).
    pub mutexes: u64,
}

/// Segments `(C, Z, Y, X)` affinities by the mutex watershed, with the semantics of
/// affogato's `compute_mws_segmentation` and of the `mwatershed` package.
///
/// Graph: `aff[c, v]` is the edge between voxel `v` and `v + offsets[c]`; edges whose other
/// end lies outside the volume do not exist. The first `attractive` channels are attractive
/// with weight `aff`, the others repulsive with weight `1 − aff` (computed in f32; u8 values
/// mean `v / 255`, f16 values are widened to f32). Values are used as given, not clamped.
///
/// Algorithm: every edge is visited once, by weight descending. An attractive edge joins the
/// clusters of its two voxels unless a mutex (a repulsive constraint) separates them; a
/// repulsive edge between two different clusters puts a mutex between them. Ties are broken
/// by channel, then by voxel in raster (C) order (so on a tie attraction comes before
/// repulsion), which makes the output deterministic; other implementations order ties
/// otherwise, so equality with `mwatershed` or affogato holds for inputs without ties.
///
/// Options, as in affogato: `strides` keep a repulsive edge only at voxels whose coordinates
/// are multiples of the stride (attractive edges are all kept); with `randomize_strides`
/// each repulsive edge is kept with probability `1 / (sz·sy·sx)` instead, decided by a hash of
/// `seed`, channel and voxel (the same for every thread count). A mask removes every edge
/// that touches a voxel outside it.
///
/// Non-finite values: an edge whose value is NaN or ±infinite does not exist (as in
/// [`affinity_cc`](crate::affinity_cc), where such edges are off); the summary counts them.
///
/// Output: labels `1..=K` numbered by first appearance in raster order; every voxel in the
/// mask is labelled (a voxel no attractive edge joined is a segment of its own), voxels
/// outside it are 0. `mwatershed` instead gives 0 to voxels without any attractive edge of
/// positive weight; as partitions, its zeros are single-voxel segments. `mask`, when given,
/// has the volume's shape.
///
/// ```
/// use em_decode::{mutex_watershed, MwsOptions};
/// use ndarray::{arr1, s, Array4};
///
/// // Four voxels along x. Channel 0 attracts neighbours (0.9, 0.3, 0.8); channel 1 repels
/// // voxels two apart with weight 1 − 0.25 = 0.75, which beats the weak link 0.3.
/// let mut aff = Array4::<f32>::zeros((2, 1, 1, 4));
/// aff.slice_mut(s![0, 0, 0, ..]).assign(&arr1(&[0.9, 0.3, 0.8, 0.0]));
/// aff.slice_mut(s![1, 0, 0, ..]).fill(0.25);
/// let options = MwsOptions {
///     offsets: vec![[0, 0, 1], [0, 0, 2]],
///     attractive: 1,
///     ..MwsOptions::default()
/// };
/// let (labels, summary) = mutex_watershed::<f32, u32>(aff.view(), &options, None)?;
/// assert_eq!(labels.as_slice().unwrap(), &[1, 1, 2, 2]);
/// assert_eq!(summary.segments, 2);
/// # Ok::<(), em_decode::DecodeError>(())
/// ```
///
/// # Errors
/// [`DecodeError`] for options that do not fit the affinities (offset count, zero offset,
/// attractive count, strides, threads), a mask of another shape, an affinity type other
/// than f32, f16 and u8, or a volume too large for `L`.
pub fn mutex_watershed<A: Affinity, L: Label>(
    aff: ArrayView4<'_, A>,
    options: &MwsOptions,
    mask: Option<ArrayView3<'_, bool>>,
) -> Result<(Array3<L>, MwsSummary)> {
    segment(aff, options, mask, Sizes::default())
}

/// How edges are cut into buckets and phases (smaller in unit tests, to exercise both).
#[derive(Clone, Copy)]
struct Sizes {
    bucket: usize,
    phase: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            bucket: BUCKET_TARGET,
            phase: PHASE_EDGES,
        }
    }
}

/// [`mutex_watershed`] with given bucket and phase sizes.
fn segment<A: Affinity, L: Label>(
    aff: ArrayView4<'_, A>,
    options: &MwsOptions,
    mask: Option<ArrayView3<'_, bool>>,
    sizes: Sizes,
) -> Result<(Array3<L>, MwsSummary)> {
    let (channels, z, y, x) = aff.dim();
    options.check(channels)?;
    if !supported::<A>() {
        return Err(DecodeError::InvalidParameter {
            name: "affinities",
            reason: format!(
                "element type {}; the mutex watershed reads f32, f16 and u8 (scaled by 1/255)",
                std::any::type_name::<A>()
            ),
        });
    }
    if let Some(m) = &mask {
        if m.dim() != (z, y, x) {
            return Err(DecodeError::InvalidParameter {
                name: "mask",
                reason: format!(
                    "shape {:?} differs from the volume's {:?}",
                    m.shape(),
                    [z, y, x]
                ),
            });
        }
    }
    let n = z * y * x;
    if n >= L::MAX.to_usize() {
        return Err(DecodeError::TooManyVoxels {
            voxels: n,
            label_type: L::NAME,
        });
    }
    let voxel_bits = bits(n.saturating_sub(1) as u64);
    let id_bits = voxel_bits + bits(channels.saturating_sub(1) as u64);
    if id_bits > 64 {
        return Err(DecodeError::InvalidParameter {
            name: "affinities",
            reason: format!("{channels} channels of {n} voxels are too many edges to number"),
        });
    }
    in_pool(options.threads, || {
        let mask_copy = mask
            .filter(|m| !m.is_standard_layout())
            .map(|m| m.as_standard_layout().into_owned());
        let mask_slice = match (&mask_copy, &mask) {
            (Some(owned), _) => owned.as_slice(),
            (None, Some(m)) => m.to_slice(),
            (None, None) => None,
        };
        let plans = plan_channels(options, [z, y, x]);
        let one_in = options
            .strides
            .iter()
            .fold(1u64, |p, &s| p.saturating_mul(s as u64));
        let non_finite = count_non_finite(aff);
        let graph = Graph {
            plans: &plans,
            dims: [z, y, x],
            voxel_bits,
            mask: mask_slice,
            attractive: options.attractive,
            keep_below: (options.randomize_strides && one_in > 1).then(|| u64::MAX / one_in),
            sizes,
            seed: options.seed,
        };
        let (labels, mut summary) = if id_bits <= 32 && n < (u32::MAX >> 1) as usize {
            run::<A, L, u64, u32>(aff, &graph)?
        } else {
            run::<A, L, u128, u64>(aff, &graph)?
        };
        summary.non_finite = non_finite;
        let labels = Array3::from_shape_vec((z, y, x), labels).map_err(|e| {
            DecodeError::InvalidParameter {
                name: "affinities",
                reason: e.to_string(),
            }
        })?;
        Ok((labels, summary))
    })?
}

/// Bits needed to write `v` (0 for 0).
fn bits(v: u64) -> u32 {
    u64::BITS - v.leading_zeros()
}

/// The element types whose values [`value`] reads.
fn supported<A: 'static>() -> bool {
    let t = TypeId::of::<A>();
    t == TypeId::of::<f32>() || t == TypeId::of::<f16>() || t == TypeId::of::<u8>()
}

/// An affinity as f32: the `Affinity` trait only compares with thresholds, and the type is
/// known at compile time, so these downcasts fold away.
#[inline(always)]
fn value<A: Affinity>(a: A) -> f32 {
    let a = &a as &dyn Any;
    if let Some(&v) = a.downcast_ref::<f32>() {
        v
    } else if let Some(&v) = a.downcast_ref::<f16>() {
        v.to_f32()
    } else if let Some(&v) = a.downcast_ref::<u8>() {
        f32::from(v) / 255.0
    } else {
        f32::NAN
    }
}

/// The sort key of a weight: ascending keys are descending weights (the total order of
/// f32 with -0 taken as +0).
#[inline(always)]
fn descending_key(w: f32) -> u32 {
    let b = (w + 0.0).to_bits();
    let ascending = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    !ascending
}

/// One channel's edges: where they start and how far their other end is.
struct Plan {
    channel: usize,
    /// Voxel ranges along z, y, x whose partner lies inside the volume.
    ranges: [Range<usize>; 3],
    /// Steps along z, y, x (the strides for strided repulsive channels, else 1).
    steps: [usize; 3],
    /// Linear index difference to the partner.
    delta: i64,
}

/// The edges of every channel under `options` in a volume of `dims`.
fn plan_channels(options: &MwsOptions, dims: [usize; 3]) -> Vec<Plan> {
    options
        .offsets
        .iter()
        .enumerate()
        .map(|(channel, offset)| {
            let repulsive = channel >= options.attractive;
            let grid = repulsive && !options.randomize_strides;
            let mut ranges: [Range<usize>; 3] = [0..0, 0..0, 0..0];
            let mut steps = [1; 3];
            for axis in 0..3 {
                let len = dims[axis] as i128;
                let o = i128::from(offset[axis]);
                let start = 0.max(-o).min(len);
                let end = len.min(len - o).max(start);
                let step = if grid { options.strides[axis] } else { 1 };
                // The grid is anchored at 0, not at the range start.
                let end = end as usize;
                let first = (start as usize).checked_next_multiple_of(step);
                ranges[axis] = first.map_or(end, |f| f.min(end))..end;
                steps[axis] = step;
            }
            // Only offsets shorter than the volume have edges; those fit in i64.
            let delta = if ranges.iter().any(|r| r.is_empty()) {
                0
            } else {
                (offset[0] * dims[1] as i64 + offset[1]) * dims[2] as i64 + offset[2]
            };
            Plan {
                channel,
                ranges,
                steps,
                delta,
            }
        })
        .collect()
}

/// The edge set: everything [`Graph::for_each_edge`] needs besides the values.
struct Graph<'a> {
    plans: &'a [Plan],
    dims: [usize; 3],
    voxel_bits: u32,
    mask: Option<&'a [bool]>,
    attractive: usize,
    /// Randomized strides keep a repulsive edge when its hash is below this.
    keep_below: Option<u64>,
    sizes: Sizes,
    seed: u64,
}

/// A sortable edge: the descending-weight key and the edge id `channel << voxel_bits | voxel`.
trait EdgeItem: Copy + Send + Sync + Default + 'static {
    fn new(key: u32, id: u64) -> Self;
    fn key(self) -> u32;
    fn id(self) -> u64;
    /// `len` zeros, in fresh (huge) pages.
    fn zeros(len: usize) -> Vec<Self>;
}

impl EdgeItem for u64 {
    #[inline(always)]
    fn new(key: u32, id: u64) -> Self {
        (u64::from(key) << 32) | id
    }
    #[inline(always)]
    fn key(self) -> u32 {
        (self >> 32) as u32
    }
    #[inline(always)]
    fn id(self) -> u64 {
        self & 0xFFFF_FFFF
    }
    fn zeros(len: usize) -> Vec<Self> {
        em_core::zeroed_vec(len)
    }
}

impl EdgeItem for u128 {
    #[inline(always)]
    fn new(key: u32, id: u64) -> Self {
        (u128::from(key) << 64) | u128::from(id)
    }
    #[inline(always)]
    fn key(self) -> u32 {
        (self >> 64) as u32
    }
    #[inline(always)]
    fn id(self) -> u64 {
        self as u64
    }
    fn zeros(len: usize) -> Vec<Self> {
        em_core::zeroed_vec(len)
    }
}

/// Edges are first bucketed by the top 16 bits of their key, consecutive prefixes grouped
/// into buckets of about this many edges (a bucket and its scratch copy fit in L2); each
/// bucket is then sorted in cache just before it is visited.
const BUCKET_TARGET: usize = 1 << 16;
const PREFIXES: usize = 1 << 16;
/// Edges written and visited per phase (a 128 MiB buffer of 8-byte edges): each phase scans
/// the affinities again, which costs less than faulting in a buffer for all edges.
const PHASE_EDGES: usize = 1 << 24;

#[inline(always)]
fn prefix(key: u32) -> usize {
    (key >> 16) as usize
}

impl Graph<'_> {
    /// Calls `f(key, id)` for every edge of one channel, in voxel order.
    #[inline(always)]
    fn for_each_edge<A: Affinity>(&self, plan: &Plan, values: &[A], mut f: impl FnMut(u32, u64)) {
        let [_, ny, nx] = self.dims;
        let [rz, ry, rx] = &plan.ranges;
        let [sz, sy, sx] = plan.steps;
        let repulsive = plan.channel >= self.attractive;
        let keep_below = self.keep_below.filter(|_| repulsive);
        let high = (plan.channel as u64) << self.voxel_bits;
        let delta = plan.delta;
        for iz in rz.clone().step_by(sz) {
            for iy in ry.clone().step_by(sy) {
                let row = (iz * ny + iy) * nx;
                for ix in rx.clone().step_by(sx) {
                    let v = row + ix;
                    let w = value(values[v]);
                    if !w.is_finite() {
                        continue;
                    }
                    if let Some(mask) = self.mask {
                        if !mask[v] || !mask[(v as i64 + delta) as usize] {
                            continue;
                        }
                    }
                    let id = high | v as u64;
                    if keep_below.is_some_and(|t| splitmix64(self.seed ^ splitmix64(id)) >= t) {
                        continue;
                    }
                    f(descending_key(if repulsive { 1.0 - w } else { w }), id);
                }
            }
        }
    }
}

/// SplitMix64's mixer: a well-spread hash of the seed and the edge for randomized strides.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `f` over the channels, in parallel when the pool has several threads.
fn per_channel<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync + Send) -> Vec<U> {
    if rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        items.into_par_iter().map(f).collect()
    } else {
        items.into_iter().map(f).collect()
    }
}

/// Builds, buckets, sorts and visits the edges; returns labels in raster order and counts.
fn run<A: Affinity, L: Label, E: EdgeItem, I: Ix>(
    aff: ArrayView4<'_, A>,
    graph: &Graph<'_>,
) -> Result<(Vec<L>, MwsSummary)> {
    let [z, y, x] = graph.dims;
    let n = z * y * x;
    let copies: Vec<Option<Array3<A>>> = graph
        .plans
        .iter()
        .map(|p| {
            let plane = aff.index_axis(Axis(0), p.channel);
            (!plane.is_standard_layout()).then(|| plane.as_standard_layout().into_owned())
        })
        .collect();
    let mut values: Vec<&[A]> = Vec::with_capacity(graph.plans.len());
    for (copy, plan) in copies.iter().zip(graph.plans) {
        let slice = match copy {
            Some(owned) => owned.as_slice(),
            None => aff.index_axis_move(Axis(0), plan.channel).to_slice(),
        };
        values.push(slice.unwrap_or(&[]));
    }
    let channels: Vec<(&Plan, &[A])> = graph.plans.iter().zip(values).collect();

    // Pass 1: how many edges of each channel fall on each key prefix.
    let counts: Vec<Vec<usize>> = per_channel(channels.clone(), |(plan, values)| {
        let mut c = vec![0usize; PREFIXES];
        graph.for_each_edge(plan, values, |key, _| c[prefix(key)] += 1);
        c
    });
    let mut per_prefix = vec![0usize; PREFIXES];
    for c in &counts {
        for (t, k) in per_prefix.iter_mut().zip(c) {
            *t += k;
        }
    }
    // Consecutive prefixes grouped into buckets.
    let mut bucket_of = vec![0u32; PREFIXES];
    let mut bucket_len: Vec<usize> = vec![0];
    for (p, &k) in per_prefix.iter().enumerate() {
        let last = bucket_len.len() - 1;
        if bucket_len[last] > 0 && bucket_len[last] + k > graph.sizes.bucket {
            bucket_len.push(0);
        }
        let b = bucket_len.len() - 1;
        bucket_len[b] += k;
        bucket_of[p] = b as u32;
    }
    let buckets = bucket_len.len();
    let total: usize = bucket_len.iter().sum();
    let by_bucket: Vec<Vec<usize>> = counts
        .iter()
        .map(|c| {
            let mut v = vec![0usize; buckets];
            for (p, &k) in c.iter().enumerate() {
                v[bucket_of[p] as usize] += k;
            }
            v
        })
        .collect();
    drop(counts);

    // Phases: runs of whole buckets of at most `sizes.phase` edges (or one bucket), so that
    // the edge buffer is a fraction of all edges and is reused.
    let mut phases: Vec<Range<usize>> = Vec::new();
    let (mut first, mut filled) = (0, 0);
    for (b, &len) in bucket_len.iter().enumerate() {
        if filled > 0 && filled + len > graph.sizes.phase {
            phases.push(first..b);
            (first, filled) = (b, 0);
        }
        filled += len;
    }
    phases.push(first..bucket_len.len());
    let most = phases
        .iter()
        .map(|r| bucket_len[r.clone()].iter().sum::<usize>())
        .max()
        .unwrap_or(0);
    let mut edges: Vec<E> = E::zeros(most);
    let mut clusters = Clusters::<I>::new(n);
    let mut summary = MwsSummary {
        edges: total as u64,
        ..MwsSummary::default()
    };
    let deltas: Vec<i64> = graph.plans.iter().map(|p| p.delta).collect();
    let voxel_mask = (1u64 << graph.voxel_bits) - 1;
    let mut scratch: Vec<E> = Vec::new();
    for phase in phases {
        let lens = &bucket_len[phase.clone()];
        let len: usize = lens.iter().sum();
        let buffer = &mut edges[..len];
        // Pass 2: every channel writes the phase's edges into its own part of each bucket,
        // so each bucket holds its edges in id order (channel, then voxel) before sorting.
        {
            let mut regions: Vec<Vec<&mut [E]>> = (0..channels.len())
                .map(|_| Vec::with_capacity(phase.len()))
                .collect();
            let mut rest: &mut [E] = &mut *buffer;
            for b in phase.clone() {
                for (region, counts) in regions.iter_mut().zip(&by_bucket) {
                    let (head, tail) = rest.split_at_mut(counts[b]);
                    region.push(head);
                    rest = tail;
                }
            }
            let work: Vec<_> = channels.iter().copied().zip(regions).collect();
            let phase = phase.clone();
            per_channel(work, |((plan, values), mut region)| {
                let mut next = vec![0usize; phase.len()];
                graph.for_each_edge(plan, values, |key, id| {
                    let b = (bucket_of[prefix(key)] as usize).wrapping_sub(phase.start);
                    if let Some(slot) = region.get_mut(b).and_then(|r| r.get_mut(next[b])) {
                        *slot = E::new(key, id);
                        next[b] += 1;
                    }
                });
            });
        }
        // One thread sorts each bucket just before visiting it, while it is in cache;
        // several sort all of the phase's buckets first, in parallel.
        let presorted = rayon::current_num_threads() > 1;
        if presorted {
            use rayon::prelude::*;
            let mut parts: Vec<&mut [E]> = Vec::with_capacity(lens.len());
            let mut rest: &mut [E] = &mut *buffer;
            for &len in lens {
                let (head, tail) = rest.split_at_mut(len);
                parts.push(head);
                rest = tail;
            }
            parts
                .into_par_iter()
                .for_each_init(Vec::new, |scratch, bucket| sort_bucket(bucket, scratch));
        }
        let mut start = 0;
        for &len in lens {
            let bucket = &mut buffer[start..start + len];
            start += len;
            if !presorted {
                sort_bucket(bucket, &mut scratch);
            }
            for &e in bucket.iter() {
                let id = e.id();
                let channel = (id >> graph.voxel_bits) as usize;
                let u = (id & voxel_mask) as usize;
                let v = (u as i64 + deltas[channel]) as usize;
                let (ru, su) = clusters.find(u);
                let (rv, sv) = clusters.find(v);
                if ru == rv {
                    continue;
                }
                if channel < graph.attractive {
                    if !clusters.mutex(ru, su, rv, sv) {
                        clusters.merge(ru, su, rv, sv);
                        summary.merges += 1;
                    }
                } else {
                    clusters.insert_mutex(ru, su, rv, sv);
                    summary.mutexes += 1;
                }
            }
        }
    }
    drop(edges);
    drop(by_bucket);
    drop(copies);
    let (labels, segments) = clusters.into_labels::<L>(graph.mask)?;
    summary.segments = segments;
    Ok((labels, summary))
}

/// Sorts a bucket by key, ties by id: a stable LSD radix sort on the key's bytes (input is
/// in id order), skipping bytes that every edge shares.
fn sort_bucket<E: EdgeItem>(bucket: &mut [E], scratch: &mut Vec<E>) {
    if bucket.len() < 64 {
        // Ids are unique, so the item order is the (key, id) order.
        bucket.sort_unstable_by_key(|e| (e.key(), e.id()));
        return;
    }
    let mut hist = [[0usize; 256]; 4];
    for e in bucket.iter() {
        let k = e.key();
        for (byte, h) in hist.iter_mut().enumerate() {
            h[((k >> (8 * byte)) & 0xFF) as usize] += 1;
        }
    }
    scratch.clear();
    scratch.resize(bucket.len(), E::default());
    let mut in_bucket = true;
    for (byte, h) in hist.iter().enumerate() {
        if h.contains(&bucket.len()) {
            continue;
        }
        let mut next = [0usize; 256];
        let mut sum = 0;
        for (n, &c) in next.iter_mut().zip(h) {
            *n = sum;
            sum += c;
        }
        let (from, to): (&[E], &mut [E]) = if in_bucket {
            (&*bucket, &mut scratch[..])
        } else {
            (&scratch[..], &mut *bucket)
        };
        for &e in from {
            let d = ((e.key() >> (8 * byte)) & 0xFF) as usize;
            to[next[d]] = e;
            next[d] += 1;
        }
        in_bucket = !in_bucket;
    }
    if !in_bucket {
        bucket.copy_from_slice(scratch);
    }
}

/// Index type of the clustering: u32 while voxels fit in 31 bits, else u64.
///
/// An entry of the forest is either the index of a parent or, with the top bit set, marks
/// a root and holds the root's mutex list (all other bits set: none). One 4-byte read thus
/// ends a find with everything a mutex check needs.
trait Ix: Copy + Eq + Ord + Send + Sync + 'static {
    /// An unordered pair of mutex lists, for [`PairSet`].
    type Pair: PairKey;
    /// The entry of a root without a mutex list; also "no list" among list indices.
    const NONE: Self;
    fn from_index(i: usize) -> Self;
    fn index(self) -> usize;
    fn is_root(self) -> bool;
    /// The root entry holding list `slot` (or `NONE`).
    fn root(slot: Self) -> Self;
    /// The list of a root entry (`NONE` for none).
    fn slot(self) -> Self;
    fn pair(a: Self, b: Self) -> Self::Pair;
    /// `len` root entries without lists, in fresh (huge) pages.
    fn roots(len: usize) -> Vec<Self>;
}

macro_rules! ix {
    ($t:ty, $pair:ty) => {
        impl Ix for $t {
            type Pair = $pair;
            const NONE: Self = <$t>::MAX;
            #[inline(always)]
            fn from_index(i: usize) -> Self {
                i as $t
            }
            #[inline(always)]
            fn index(self) -> usize {
                self as usize
            }
            #[inline(always)]
            fn is_root(self) -> bool {
                self >> (<$t>::BITS - 1) == 1
            }
            #[inline(always)]
            fn root(slot: Self) -> Self {
                slot | 1 << (<$t>::BITS - 1)
            }
            #[inline(always)]
            fn slot(self) -> Self {
                if self == <$t>::MAX {
                    <$t>::MAX
                } else {
                    self & (<$t>::MAX >> 1)
                }
            }
            #[inline(always)]
            fn pair(a: Self, b: Self) -> $pair {
                let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                (<$pair>::from(lo) << <$t>::BITS) | <$pair>::from(hi)
            }
            fn roots(len: usize) -> Vec<Self> {
                let mut v: Vec<$t> = em_core::zeroed_vec(len);
                v.fill(<$t>::MAX);
                v
            }
        }
    };
}

ix!(u32, u64);
ix!(u64, u128);

/// A key of [`PairSet`]: never zero (a pair joins two different lists, so its larger half
/// is not 0).
trait PairKey: Copy + Eq + Default {
    fn hash(self) -> u64;
    /// The two list indices.
    fn halves(self) -> [usize; 2];
    /// `len` empty keys, in fresh (huge) pages.
    fn zeros(len: usize) -> Vec<Self>;
}

/// MurmurHash3's 64-bit finaliser: cheap, and its low bits depend on every input bit.
#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    k ^= k >> 33;
    k = k.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    k ^ (k >> 33)
}

impl PairKey for u64 {
    #[inline(always)]
    fn hash(self) -> u64 {
        fmix64(self)
    }
    fn halves(self) -> [usize; 2] {
        [(self >> 32) as usize, (self & 0xFFFF_FFFF) as usize]
    }
    fn zeros(len: usize) -> Vec<Self> {
        em_core::zeroed_vec(len)
    }
}

impl PairKey for u128 {
    #[inline(always)]
    fn hash(self) -> u64 {
        fmix64(self as u64 ^ fmix64((self >> 64) as u64))
    }
    fn halves(self) -> [usize; 2] {
        [(self >> 64) as usize, self as u64 as usize]
    }
    fn zeros(len: usize) -> Vec<Self> {
        em_core::zeroed_vec(len)
    }
}

/// Open-addressing hash set of pairs with linear probing. Keys are never removed one by
/// one: pairs of lists that have been merged away can no longer be asked for, and are
/// dropped whenever the table fills up.
struct PairSet<K: PairKey> {
    slots: Vec<K>,
    len: usize,
}

impl<K: PairKey> PairSet<K> {
    fn new() -> Self {
        Self {
            slots: K::zeros(1024),
            len: 0,
        }
    }

    #[inline(always)]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `key`, or the empty slot where it would go.
    #[inline(always)]
    fn probe(&self, key: K) -> usize {
        let mask = self.mask();
        let mut i = key.hash() as usize & mask;
        loop {
            let k = self.slots[i];
            if k == key || k == K::default() {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline(always)]
    fn contains(&self, key: K) -> bool {
        self.slots[self.probe(key)] == key
    }

    /// Adds `key`; false when it was there already. When the table fills up, keys that
    /// `stale` names are dropped before it grows.
    fn insert(&mut self, key: K, stale: impl Fn(K) -> bool) -> bool {
        let i = self.probe(key);
        if self.slots[i] == key {
            return false;
        }
        self.slots[i] = key;
        self.len += 1;
        // Load at most 1/2 keeps linear probes short.
        if 2 * self.len > self.slots.len() {
            let live: Vec<K> = self
                .slots
                .iter()
                .copied()
                .filter(|&k| k != K::default() && !stale(k))
                .collect();
            let size = if 4 * live.len() > self.slots.len() {
                2 * self.slots.len()
            } else {
                self.slots.len()
            };
            self.slots = K::zeros(size);
            self.len = live.len();
            for k in live {
                let j = self.probe(k);
                self.slots[j] = k;
            }
        }
        true
    }
}

/// Union-find over voxels with the clusters' mutexes.
///
/// A cluster with mutexes owns a list (held in its root's entry) that names one voxel of
/// every cluster it is separated from; entries go stale as partners merge, which a find
/// resolves. Merging two clusters appends the shorter list to the longer, nothing more.
/// `pairs` remembers pairs of lists known to be separated (a pair of lists that are both
/// still in use stays separated, since clusters only grow), so most checks are one lookup;
/// a miss scans the shorter list. A list that doubles since it was last compacted is
/// rewritten to distinct roots. Roots are joined by rank; finds halve paths.
struct Clusters<I: Ix> {
    forest: Vec<I>,
    rank: Vec<u8>,
    lists: Vec<List<I>>,
    pairs: PairSet<I::Pair>,
}

/// A mutex list; `merged` once appended to another (its pairs are then stale).
struct List<I> {
    entries: Vec<I>,
    /// Length after the last compaction.
    compacted: usize,
    merged: bool,
}

impl<I: Ix> Clusters<I> {
    fn new(n: usize) -> Self {
        Self {
            forest: I::roots(n),
            rank: em_core::zeroed_vec(n),
            lists: Vec::new(),
            pairs: PairSet::new(),
        }
    }

    /// The root of voxel `i` and its list.
    #[inline(always)]
    fn find(&mut self, mut i: usize) -> (usize, I) {
        loop {
            let p = self.forest[i];
            if p.is_root() {
                return (i, p.slot());
            }
            let g = self.forest[p.index()];
            if g.is_root() {
                return (p.index(), g.slot());
            }
            self.forest[i] = g;
            i = g.index();
        }
    }

    /// Remembers that lists `a` and `b` (both in use) are separated.
    fn remember(&mut self, a: I, b: I) -> bool {
        let lists = &self.lists;
        self.pairs.insert(I::pair(a, b), |k| {
            k.halves().iter().any(|&s| lists[s].merged)
        })
    }

    /// Whether a mutex separates the clusters of roots `a` and `b` (lists `sa`, `sb`).
    #[inline(always)]
    fn mutex(&mut self, a: usize, sa: I, b: usize, sb: I) -> bool {
        if sa == I::NONE || sb == I::NONE {
            return false;
        }
        if self.pairs.contains(I::pair(sa, sb)) {
            return true;
        }
        let (scan, other) =
            if self.lists[sa.index()].entries.len() <= self.lists[sb.index()].entries.len() {
                (sa, b)
            } else {
                (sb, a)
            };
        let entries = std::mem::take(&mut self.lists[scan.index()].entries);
        let found = entries.iter().any(|p| self.find(p.index()).0 == other);
        self.lists[scan.index()].entries = entries;
        if found {
            self.remember(sa, sb);
        }
        found
    }

    /// The list of root `r` (whose list is `s`), created empty if it has none.
    fn list_of(&mut self, r: usize, s: I) -> I {
        if s != I::NONE {
            return s;
        }
        self.lists.push(List {
            entries: Vec::with_capacity(4),
            compacted: 0,
            merged: false,
        });
        let s = I::from_index(self.lists.len() - 1);
        self.forest[r] = I::root(s);
        s
    }

    /// Separates the clusters of roots `a` and `b` (lists `sa`, `sb`), unless the pair of
    /// lists is already known to be. (A mutex known only through older lists is recorded
    /// again; compaction removes the duplicate entries.)
    fn insert_mutex(&mut self, a: usize, sa: I, b: usize, sb: I) {
        let sa = self.list_of(a, sa);
        let sb = self.list_of(b, sb);
        if self.remember(sa, sb) {
            self.push(sa, I::from_index(b));
            self.push(sb, I::from_index(a));
        }
    }

    /// Adds a partner to list `s`, compacting the list when it has doubled.
    fn push(&mut self, s: I, partner: I) {
        let list = &mut self.lists[s.index()];
        list.entries.push(partner);
        if list.entries.len() >= 2 * list.compacted + 16 {
            self.compact(s);
        }
    }

    /// Rewrites list `s` to the distinct roots it names.
    fn compact(&mut self, s: I) {
        let mut entries = std::mem::take(&mut self.lists[s.index()].entries);
        for p in entries.iter_mut() {
            *p = I::from_index(self.find(p.index()).0);
        }
        entries.sort_unstable();
        entries.dedup();
        let list = &mut self.lists[s.index()];
        list.compacted = entries.len();
        list.entries = entries;
    }

    /// Joins the clusters of roots `a` and `b` (lists `sa`, `sb`; different, not separated).
    fn merge(&mut self, a: usize, sa: I, b: usize, sb: I) {
        let (root, child) = match self.rank[a].cmp(&self.rank[b]) {
            std::cmp::Ordering::Less => (b, a),
            std::cmp::Ordering::Greater => (a, b),
            std::cmp::Ordering::Equal => {
                self.rank[a] += 1;
                (a, b)
            }
        };
        self.forest[child] = I::from_index(root);
        let keep = if sa == I::NONE {
            sb
        } else if sb == I::NONE {
            sa
        } else {
            let (keep, moved) =
                if self.lists[sa.index()].entries.len() >= self.lists[sb.index()].entries.len() {
                    (sa, sb)
                } else {
                    (sb, sa)
                };
            let moved_list = &mut self.lists[moved.index()];
            moved_list.merged = true;
            let entries = std::mem::take(&mut moved_list.entries);
            let list = &mut self.lists[keep.index()];
            list.entries.extend_from_slice(&entries);
            if list.entries.len() >= 2 * list.compacted + 16 {
                self.compact(keep);
            }
            keep
        };
        self.forest[root] = I::root(keep);
    }

    /// Labels `1..=K` by first appearance; voxels outside `mask` are 0.
    fn into_labels<L: Label>(mut self, mask: Option<&[bool]>) -> Result<(Vec<L>, u64)> {
        let n = self.forest.len();
        let mut out: Vec<L> = em_core::zeroed_vec(n);
        let mut next = 0u64;
        for i in 0..n {
            if mask.is_some_and(|m| !m[i]) {
                continue;
            }
            let r = self.find(i).0;
            if out[r] == L::BACKGROUND {
                next += 1;
                out[r] = L::from_u64(next).ok_or(DecodeError::TooManyComponents {
                    label_type: L::NAME,
                })?;
            }
            // The root belongs to the same segment, so its slot holds the segment's label.
            out[i] = out[r];
        }
        Ok((out, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, Array4};

    /// Many buckets and phases give the labels of one of each.
    #[test]
    fn buckets_and_phases_do_not_change_labels() {
        let offsets = vec![
            [0, 0, -1],
            [0, -1, 0],
            [-1, 0, 0],
            [0, -3, 0],
            [0, 0, -4],
            [-2, 1, 1],
        ];
        let (c, z, y, x) = (offsets.len(), 6, 11, 13);
        let aff = Array4::from_shape_fn((c, z, y, x), |(a, b, d, e)| {
            let h = splitmix64((((a * z + b) * y + d) * x + e) as u64);
            // Coarse values, so that ties cross bucket and phase boundaries too.
            (h % 97) as f32 / 96.0
        });
        let mask = Array3::from_shape_fn((z, y, x), |(b, d, e)| (b + d * e) % 7 != 3);
        for (attractive, strides, masked) in [(3, [1, 1, 1], false), (2, [1, 2, 3], true)] {
            let options = MwsOptions {
                offsets: offsets.clone(),
                attractive,
                strides,
                threads: Some(1),
                ..MwsOptions::default()
            };
            let mask = masked.then(|| mask.view());
            let one = segment::<f32, u32>(aff.view(), &options, mask, Sizes::default()).unwrap();
            for (bucket, phase) in [(1, 1), (50, 300), (700, 700), (10, 5000)] {
                let sizes = Sizes { bucket, phase };
                let many = segment::<f32, u32>(aff.view(), &options, mask, sizes).unwrap();
                assert_eq!(many, one, "bucket {bucket}, phase {phase}");
                let two = MwsOptions {
                    threads: Some(2),
                    ..options.clone()
                };
                assert_eq!(
                    segment::<f32, u32>(aff.view(), &two, mask, sizes).unwrap(),
                    one
                );
            }
        }
    }
}
