//! Mutex watershed (Wolf et al., 2018) on an affinity volume, with the semantics of affogato's
//! `compute_mws_segmentation` and of the `mwatershed` package.
//!
//! Graph: `aff[c, v]` is the edge between voxel `v` and `v + offsets[c]`; edges whose other
//! end lies outside the volume do not exist. The first `attractive` channels are attractive
//! with weight `aff`, the others repulsive with weight `1 − aff` (computed in f32; u8 values
//! mean `v / 255`, f16 values are widened to f32). Values are used as given, not clamped.
//!
//! Algorithm: every edge is visited once, by weight descending. An attractive edge joins the
//! clusters of its two voxels unless a mutex (a repulsive constraint) separates them; a
//! repulsive edge between two different clusters puts a mutex between them. Ties are broken
//! by channel, then by voxel in raster (C) order, so the output is deterministic; where
//! weights tie, another implementation may order them otherwise, so equality with
//! `mwatershed` or affogato holds for inputs without ties.
//!
//! Options, as in affogato: `strides` keep a repulsive edge only at voxels whose coordinates
//! are multiples of the stride (attractive edges are all kept); with `randomize_strides`
//! each repulsive edge is kept with probability `1 / (sz·sy·sx)` instead, decided by a hash of
//! `seed`, channel and voxel (the same for every thread count). A mask removes every edge
//! that touches a voxel outside it.
//!
//! Non-finite values: an edge whose value is NaN or ±infinite does not exist (as in
//! [`affinity_cc`](crate::affinity_cc), where such edges are off); the summary counts them.
//!
//! Output: labels `1..=K` numbered by first appearance in raster order; every voxel in the
//! mask is labelled (a voxel no attractive edge joined is a segment of its own), voxels
//! outside it are 0. `mwatershed` instead gives 0 to voxels without any attractive edge of
//! positive weight; as partitions, its zeros are single-voxel segments.
//!
//! Cost: edges are generated with their sort key, sorted by a stable LSD radix sort on the
//! key (never a comparison sort of all edges), then visited. Mutexes are kept as a hash set
//! of pairs of mutex lists, one list per cluster that has any; merging two clusters moves the
//! shorter list into the longer, so a voxel absorbed by a cluster costs nothing when it has
//! no mutex. Memory: two edge buffers of 8 bytes per edge (16 for volumes whose edge ids
//! need over 32 bits) plus about 9 bytes per voxel and the mutexes.

use std::any::{Any, TypeId};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::Range;

use em_core::unionfind::Node;
use em_core::{f16, Label, UnionFind};
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
    /// Mutexes inserted (repulsive edges between two clusters not yet separated).
    pub mutexes: u64,
}

/// Segments `(C, Z, Y, X)` affinities by the mutex watershed; see the [module](self) for the
/// semantics.
///
/// `mask`, when given, has the volume's shape; voxels outside it (false) are labelled 0 and
/// their edges ignored.
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
        let non_finite = count_non_finite(aff);
        let graph = Graph {
            plans: &plans,
            dims: [z, y, x],
            voxel_bits,
            mask: mask_slice,
            attractive: options.attractive,
            strides: options.strides,
            randomize: options.randomize_strides
                && options.strides.iter().product::<usize>() > 1,
            seed: options.seed,
        };
        let (labels, mut summary) = if id_bits <= 32 && n < u32::MAX as usize {
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
                let first = (start as usize).next_multiple_of(step);
                ranges[axis] = first.min(end as usize)..end as usize;
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

/// The edge set: everything [`Graph::channel_edges`] needs besides the values.
struct Graph<'a> {
    plans: &'a [Plan],
    dims: [usize; 3],
    voxel_bits: u32,
    mask: Option<&'a [bool]>,
    attractive: usize,
    strides: [usize; 3],
    randomize: bool,
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

const DIGIT_BITS: u32 = 11;
const BUCKETS: usize = 1 << DIGIT_BITS;
const PASSES: usize = 3;

/// Counts of each radix digit, per pass.
type Histogram = Vec<[usize; BUCKETS]>;

fn empty_histogram() -> Histogram {
    vec![[0; BUCKETS]; PASSES]
}

#[inline(always)]
fn digit(key: u32, pass: usize) -> usize {
    ((key >> (pass as u32 * DIGIT_BITS)) as usize) & (BUCKETS - 1)
}

impl Graph<'_> {
    /// Whether randomized strides keep repulsive edge `id`.
    #[inline(always)]
    fn keep_random(&self, id: u64, threshold: u64) -> bool {
        splitmix64(self.seed ^ splitmix64(id)) < threshold
    }

    /// The edges of one channel in voxel order, with their digit counts.
    fn channel_edges<A: Affinity, E: EdgeItem>(
        &self,
        plan: &Plan,
        values: &[A],
    ) -> (Vec<E>, Histogram) {
        let [_, ny, nx] = self.dims;
        let [rz, ry, rx] = &plan.ranges;
        let [sz, sy, sx] = plan.steps;
        let count = |r: &Range<usize>, s: usize| r.len().div_ceil(s);
        let most = count(rz, sz) * count(ry, sy) * count(rx, sx);
        let mut edges: Vec<E> = em_core::huge_vec(most);
        let mut hist = empty_histogram();
        let repulsive = plan.channel >= self.attractive;
        let random = repulsive && self.randomize;
        let threshold = u64::MAX / self.strides.iter().product::<usize>().max(1) as u64;
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
                    if random && !self.keep_random(id, threshold) {
                        continue;
                    }
                    let key = descending_key(if repulsive { 1.0 - w } else { w });
                    for (pass, h) in hist.iter_mut().enumerate() {
                        h[digit(key, pass)] += 1;
                    }
                    edges.push(E::new(key, id));
                }
            }
        }
        (edges, hist)
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Builds, sorts and visits the edges; returns labels in raster order and the counts.
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
    let build = |(plan, values): (&Plan, &&[A])| graph.channel_edges::<A, E>(plan, values);
    let parts: Vec<(Vec<E>, Histogram)> = if rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        graph.plans.par_iter().zip(&values).map(build).collect()
    } else {
        graph.plans.iter().zip(&values).map(build).collect()
    };
    drop(copies);
    let mut hist = empty_histogram();
    let mut chunks = Vec::with_capacity(parts.len());
    for (edges, h) in parts {
        for (total, part) in hist.iter_mut().zip(&h) {
            for (t, p) in total.iter_mut().zip(part) {
                *t += p;
            }
        }
        chunks.push(edges);
    }
    let sorted = radix_sort(chunks, &hist);
    let mut clusters = Clusters::<I>::new(n);
    let mut summary = MwsSummary {
        edges: sorted.len() as u64,
        ..MwsSummary::default()
    };
    let deltas: Vec<i64> = graph.plans.iter().map(|p| p.delta).collect();
    let voxel_mask = (1u64 << graph.voxel_bits) - 1;
    for e in sorted {
        let id = e.id();
        let channel = (id >> graph.voxel_bits) as usize;
        let u = (id & voxel_mask) as usize;
        let v = (u as i64 + deltas[channel]) as usize;
        let ru = clusters.find(u);
        let rv = clusters.find(v);
        if ru == rv || clusters.mutex(ru, rv) {
            continue;
        }
        if channel < graph.attractive {
            clusters.merge(ru, rv);
            summary.merges += 1;
        } else {
            clusters.insert_mutex(ru, rv);
            summary.mutexes += 1;
        }
    }
    let (labels, segments) = clusters.into_labels::<L>(graph.mask)?;
    summary.segments = segments;
    Ok((labels, summary))
}

/// Stable LSD radix sort of the concatenated `chunks` by key; `hist` counts each digit.
/// Passes whose digit is the same for every edge are skipped.
fn radix_sort<E: EdgeItem>(chunks: Vec<Vec<E>>, hist: &Histogram) -> Vec<E> {
    let len: usize = chunks.iter().map(Vec::len).sum();
    let passes: Vec<usize> = (0..PASSES)
        .filter(|&p| !hist[p].iter().any(|&c| c == len))
        .collect();
    let Some((&first, rest)) = passes.split_first() else {
        return chunks.concat();
    };
    let mut out: Vec<E> = E::zeros(len);
    scatter(chunks.iter().map(Vec::as_slice), &hist[first], first, &mut out);
    drop(chunks);
    let mut spare: Vec<E> = Vec::new();
    for &pass in rest {
        if spare.len() != len {
            spare = E::zeros(len);
        }
        scatter(std::iter::once(out.as_slice()), &hist[pass], pass, &mut spare);
        std::mem::swap(&mut out, &mut spare);
    }
    out
}

/// One counting-sort pass on digit `pass`.
fn scatter<'a, E: EdgeItem>(
    input: impl Iterator<Item = &'a [E]>,
    counts: &[usize; BUCKETS],
    pass: usize,
    out: &mut [E],
) {
    let mut next = [0usize; BUCKETS];
    let mut sum = 0;
    for (n, &c) in next.iter_mut().zip(counts) {
        *n = sum;
        sum += c;
    }
    for chunk in input {
        for &e in chunk {
            let d = digit(e.key(), pass);
            out[next[d]] = e;
            next[d] += 1;
        }
    }
}

/// Index type of the clustering: u32 while voxels fit, else u64.
trait Ix: Node + Copy + Eq + Send + Sync + 'static {
    /// An unordered pair of mutex lists, for the hash set.
    type Pair: Copy + Eq + Hash;
    const NONE: Self;
    fn pair(a: Self, b: Self) -> Self::Pair;
}

impl Ix for u32 {
    type Pair = u64;
    const NONE: Self = u32::MAX;
    #[inline(always)]
    fn pair(a: Self, b: Self) -> u64 {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        (u64::from(lo) << 32) | u64::from(hi)
    }
}

impl Ix for u64 {
    type Pair = u128;
    const NONE: Self = u64::MAX;
    #[inline(always)]
    fn pair(a: Self, b: Self) -> u128 {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        (u128::from(lo) << 64) | u128::from(hi)
    }
}

/// Multiplicative hashing of integer pairs: SipHash would cost more than the rest of a
/// mutex check, and the keys are not attacker-chosen.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline(always)]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    #[inline(always)]
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    #[inline(always)]
    fn finish(&self) -> u64 {
        let x = self.0;
        (x ^ (x >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (x >> 29)
    }
}

/// Union-find over voxels with the clusters' mutexes.
///
/// A cluster with mutexes owns a list (`slot` of its root); the list names one voxel of
/// every cluster it is separated from, and `pairs` holds every separated pair of lists. List
/// entries go stale as partners merge, which a `find` resolves, so only the list of the
/// cluster that joins another needs rewriting, and the shorter list is the one moved.
struct Clusters<I: Ix> {
    parent: Vec<I>,
    rank: Vec<u8>,
    slot: Vec<I>,
    lists: Vec<Vec<I>>,
    free: Vec<I>,
    pairs: HashSet<I::Pair, BuildHasherDefault<PairHasher>>,
}

impl<I: Ix> UnionFind for Clusters<I> {
    type Node = I;

    #[inline(always)]
    fn node(&self, i: usize) -> I {
        self.parent[i]
    }

    #[inline(always)]
    fn set_node(&mut self, i: usize, node: I) {
        self.parent[i] = node;
    }
}

impl<I: Ix> Clusters<I> {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).map(I::from_index).collect(),
            rank: em_core::zeroed_vec(n),
            slot: vec![I::NONE; n],
            lists: Vec::new(),
            free: Vec::new(),
            pairs: HashSet::default(),
        }
    }

    /// Whether a mutex separates the clusters of roots `a` and `b`.
    #[inline(always)]
    fn mutex(&self, a: usize, b: usize) -> bool {
        let (sa, sb) = (self.slot[a], self.slot[b]);
        sa != I::NONE && sb != I::NONE && self.pairs.contains(&I::pair(sa, sb))
    }

    /// The list of root `r`, created empty if it has none.
    fn list_of(&mut self, r: usize) -> usize {
        if self.slot[r] == I::NONE {
            let s = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.lists.push(Vec::new());
                    I::from_index(self.lists.len() - 1)
                }
            };
            self.slot[r] = s;
        }
        self.slot[r].index()
    }

    /// Separates the clusters of roots `a` and `b` (not yet separated).
    fn insert_mutex(&mut self, a: usize, b: usize) {
        let sa = self.list_of(a);
        let sb = self.list_of(b);
        self.pairs
            .insert(I::pair(I::from_index(sa), I::from_index(sb)));
        self.lists[sa].push(I::from_index(b));
        self.lists[sb].push(I::from_index(a));
    }

    /// Joins the clusters of roots `a` and `b` (different, not separated).
    fn merge(&mut self, a: usize, b: usize) {
        let (root, child) = match self.rank[a].cmp(&self.rank[b]) {
            std::cmp::Ordering::Less => (b, a),
            std::cmp::Ordering::Greater => (a, b),
            std::cmp::Ordering::Equal => {
                self.rank[a] += 1;
                (a, b)
            }
        };
        self.set_node(child, I::from_index(root));
        let (sa, sb) = (self.slot[root], self.slot[child]);
        self.slot[child] = I::NONE;
        if sb == I::NONE {
            return;
        }
        if sa == I::NONE {
            self.slot[root] = sb;
            return;
        }
        let (keep, moved) = if self.lists[sa.index()].len() >= self.lists[sb.index()].len() {
            (sa, sb)
        } else {
            (sb, sa)
        };
        self.slot[root] = keep;
        let entries = std::mem::take(&mut self.lists[moved.index()]);
        for &partner in &entries {
            let r = self.find(partner.index());
            let s = self.slot[r];
            self.pairs.remove(&I::pair(moved, s));
            if self.pairs.insert(I::pair(keep, s)) {
                self.lists[keep.index()].push(partner);
            }
        }
        // The partners' own lists still name voxels of this cluster, which find resolves.
        self.free.push(moved);
    }

    /// Labels `1..=K` by first appearance; voxels outside `mask` are 0.
    fn into_labels<L: Label>(mut self, mask: Option<&[bool]>) -> Result<(Vec<L>, u64)> {
        let n = self.parent.len();
        let mut out: Vec<L> = em_core::zeroed_vec(n);
        let mut next = 0u64;
        for i in 0..n {
            if mask.is_some_and(|m| !m[i]) {
                continue;
            }
            let r = self.find(i);
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
