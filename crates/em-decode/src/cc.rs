//! Connected components of an affinity graph, with BANIS's semantics.
//!
//! Two methods, same output. The short-range channels (unit offsets along z, y, x: BANIS's
//! channels 0–2, in either storage) take a two-pass raster scan with a small equivalence table
//! over provisional labels. Any other offsets (long-range channels) take a union-find
//! over all voxels, held in the output buffer itself: each selected channel is streamed once,
//! thresholding is fused with the union step, unions hang the larger root under the smaller
//! so each component's root is its first voxel, and a final raster pass numbers components in
//! order of first appearance. Neither builds a boolean copy of the affinities.
//!
//! Semantics (BANIS `compute_connected_component_segmentation`, generalised to any offsets
//! and both storages): an edge is on when its value is `> threshold` (strict; NaN and +inf
//! count as off); on edges whose ends are both inside the volume connect them; a voxel is
//! labelled when it touches an on edge or holds an on value whose other end lies outside the
//! volume (then, if nothing else connects it, it is a component of its own); every other
//! voxel is 0.

use em_core::unionfind::Node;
use em_core::{f16, AnyArray, EdgeStorage, Label, Offset, UnionFind};
use ndarray::{Array3, ArrayView4, Axis};

use crate::{fast, DecodeError, Result};

/// An affinity element type and how it is compared with a threshold.
pub trait Affinity: Copy + Send + Sync + 'static {
    /// The threshold prepared once for fast comparisons.
    type Cut: Copy + Send + Sync;
    /// Prepares `threshold` (in affinity units, 0..1).
    fn cut(threshold: f32) -> Self::Cut;
    /// True when the edge is on: `value > threshold`, NaN and +inf off.
    fn is_on(self, cut: Self::Cut) -> bool;
    /// False for NaN and ±inf (counted and reported: such edges are off).
    fn is_finite(self) -> bool {
        true
    }
}

/// Values of `aff` that are NaN or infinite.
pub(crate) fn count_non_finite<A: Affinity, D: ndarray::Dimension>(
    aff: ndarray::ArrayView<'_, A, D>,
) -> u64 {
    aff.iter().filter(|v| !v.is_finite()).count() as u64
}

impl Affinity for f32 {
    type Cut = f32;
    fn cut(threshold: f32) -> f32 {
        threshold
    }
    #[inline(always)]
    fn is_on(self, cut: f32) -> bool {
        self > cut && self < f32::INFINITY
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

impl Affinity for f16 {
    type Cut = f32;
    fn cut(threshold: f32) -> f32 {
        threshold
    }
    #[inline(always)]
    fn is_on(self, cut: f32) -> bool {
        let v = self.to_f32();
        v > cut && v < f32::INFINITY
    }
    fn is_finite(self) -> bool {
        f16::is_finite(self)
    }
}

/// `u8` affinities are scaled: the value `v` means `v / 255`.
impl Affinity for u8 {
    type Cut = i32;
    fn cut(threshold: f32) -> i32 {
        // v/255 > t  ⇔  v > t·255  ⇔  v > floor(t·255) for integer v; exact in f64.
        (f64::from(threshold) * 255.0).floor().clamp(-1.0, 255.0) as i32
    }
    #[inline(always)]
    fn is_on(self, cut: i32) -> bool {
        i32::from(self) > cut
    }
}

/// Parameters of [`affinity_cc`]; missing keys take their defaults when deserialised.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CcOptions {
    /// Edges with affinity strictly above this are on (default 0.5).
    pub threshold: f32,
    /// The channels to use (default `[0, 1, 2]`: the short-range ones).
    pub channels: Vec<usize>,
    /// The offset of each selected channel; `None` takes BANIS's offsets for channels 0–5
    /// (`(1,0,0) (0,1,0) (0,0,1) (10,0,0) (0,10,0) (0,0,10)`).
    pub offsets: Option<Vec<Offset>>,
    /// Which voxel of an edge holds its value (default [`EdgeStorage::Source`], BANIS).
    pub storage: EdgeStorage,
    /// Worker threads: `None` uses rayon's global pool (all cores), `Some(1)` runs on the
    /// calling thread. The output is identical for every thread count.
    pub threads: Option<usize>,
}

impl Default for CcOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            channels: vec![0, 1, 2],
            offsets: None,
            storage: EdgeStorage::Source,
            threads: None,
        }
    }
}

impl CcOptions {
    /// The (channel, offset) pairs, checked against a channel count.
    pub(crate) fn edges(&self, available: usize) -> Result<Vec<(usize, Offset)>> {
        if !self.threshold.is_finite() {
            return Err(DecodeError::InvalidParameter {
                name: "threshold",
                reason: format!("{} is not a finite number", self.threshold),
            });
        }
        if self.channels.is_empty() {
            return Err(DecodeError::NoChannels);
        }
        if let Some(&channel) = self.channels.iter().find(|&&c| c >= available) {
            return Err(DecodeError::NoSuchChannel { channel, available });
        }
        let banis = em_core::AffinityOffsets::banis();
        let offsets: Vec<Offset> = match &self.offsets {
            Some(o) if o.len() != self.channels.len() => {
                return Err(DecodeError::OffsetCountMismatch {
                    offsets: o.len(),
                    channels: self.channels.len(),
                })
            }
            Some(o) => o.clone(),
            None => self
                .channels
                .iter()
                .map(|&c| {
                    banis
                        .as_slice()
                        .get(c)
                        .copied()
                        .ok_or(DecodeError::InvalidParameter {
                            name: "offsets",
                            reason: format!(
                            "channel {c} has no default offset (BANIS defines 0–5); pass offsets"
                        ),
                        })
                })
                .collect::<Result<_>>()?,
        };
        if let Some(o) = offsets.iter().find(|o| o.0 == [0, 0, 0]) {
            return Err(DecodeError::InvalidParameter {
                name: "offsets",
                reason: format!("{o} links a voxel to itself"),
            });
        }
        Ok(self.channels.iter().copied().zip(offsets).collect())
    }
}

/// Labels the connected components of the on-edges of `(C, Z, Y, X)` affinities.
///
/// Output labels are `1..=K` in raster order of first appearance, 0 for unlabelled voxels.
///
/// # Errors
/// [`DecodeError`] for bad channels, offsets or threshold, or a volume too large for `L`.
pub fn affinity_cc<A: Affinity, L: Label>(
    aff: ArrayView4<'_, A>,
    params: &CcOptions,
) -> Result<Array3<L>> {
    let (c, z, y, x) = aff.dim();
    let edges = params.edges(c)?;
    let n = z * y * x;
    let sentinel = L::MAX.to_usize();
    if n >= sentinel {
        return Err(DecodeError::TooManyVoxels {
            voxels: n,
            label_type: L::NAME,
        });
    }
    let cut = A::cut(params.threshold);
    let sign: i64 = match params.storage {
        EdgeStorage::Source => 1,
        EdgeStorage::Destination => -1,
    };
    // Contiguous planes of the selected channels (a copy only for strided input).
    let copies: Vec<Option<Array3<A>>> = edges
        .iter()
        .map(|&(channel, _)| {
            let plane = aff.index_axis(Axis(0), channel);
            (!plane.is_standard_layout()).then(|| plane.as_standard_layout().into_owned())
        })
        .collect();
    let mut channels: Vec<Channel<'_, A>> = Vec::with_capacity(edges.len());
    for (copy, &(channel, offset)) in copies.iter().zip(&edges) {
        let values = match copy {
            Some(owned) => owned.as_slice(),
            None => aff.index_axis_move(Axis(0), channel).to_slice(),
        };
        if let Some(values) = values {
            channels.push(Channel {
                values,
                offset: offset.0.map(|d| d * sign),
            });
        }
    }
    let dims = [z, y, x];
    let threads = match params.threads {
        Some(t) => t.max(1),
        None => rayon::current_num_threads(),
    };
    if let Some((axes, layout)) = unit_axes(&channels) {
        let mut out: Vec<L> = em_core::zeroed_vec(n);
        in_pool(params.threads, || {
            fast::label(&axes, cut, dims, layout, threads, &mut out)
        })??;
        return Ok(Array3::from_shape_vec((z, y, x), out).expect("buffer has z·y·x labels"));
    }
    let mut parent = vec![L::MAX; n];
    // Slabs of whole z-sections are labelled in parallel, each in its own part of the
    // forest; edges that leave a slab are joined afterwards. Any split gives the same
    // partition, and numbering depends only on the partition, so output never depends on it.
    let slabs = threads.min(z.max(1));
    let slab_depth = z.div_ceil(slabs.max(1)).max(1);
    let plane_len = y * x;
    let label_slab = |(k, part): (usize, &mut [L])| {
        let z0 = k * slab_depth;
        let z1 = (z0 + slab_depth).min(z);
        let mut forest = Forest::new(part, z0 * plane_len);
        let mut crossing = Vec::new();
        for channel in &channels {
            label_channel(&mut forest, channel, cut, dims, z0..z1, &mut crossing);
        }
        crossing
    };
    let crossing: Vec<(usize, usize)> = if slabs <= 1 || plane_len == 0 {
        label_slab((0, &mut parent[..]))
    } else {
        in_pool(params.threads, || {
            use rayon::prelude::*;
            parent
                .par_chunks_mut(slab_depth * plane_len)
                .enumerate()
                .map(label_slab)
                .flatten_iter()
                .collect()
        })?
    };
    let mut forest = Forest::new(&mut parent[..], 0);
    for (a, b) in crossing {
        forest.union(a, b);
    }
    forest.into_labels();
    Ok(Array3::from_shape_vec((z, y, x), parent).expect("buffer has z·y·x labels"))
}

/// The most worker threads a decode accepts: four per core this machine has, and at least
/// 256. More only costs memory (a stack and a block buffer each) and, in the tens of
/// thousands, takes longer to start than the decode itself.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (4 * cores).max(256)
}

/// Checks a worker thread count (`None`: all cores).
///
/// # Errors
/// [`DecodeError::InvalidParameter`] for 0 or more than [`max_threads`].
pub fn check_threads(threads: Option<usize>) -> Result<()> {
    match threads {
        Some(t) if t == 0 || t > max_threads() => Err(DecodeError::InvalidParameter {
            name: "threads",
            reason: format!(
                "{t}; give 1 to {} (this machine has {} cores)",
                max_threads(),
                std::thread::available_parallelism().map_or(1, usize::from)
            ),
        }),
        _ => Ok(()),
    }
}

/// Runs `work` in a pool of `threads` workers, or in rayon's global pool for `None`.
pub(crate) fn in_pool<T: Send>(
    threads: Option<usize>,
    work: impl FnOnce() -> T + Send,
) -> Result<T> {
    check_threads(threads)?;
    match threads {
        Some(t) => Ok(rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build()
            .map_err(|e| DecodeError::InvalidParameter {
                name: "threads",
                reason: e.to_string(),
            })?
            .install(work)),
        None => Ok(work()),
    }
}

/// The channels as z/y/x unit-offset channels when they are exactly that (each axis at most
/// once, every value pointing the same way), for the fast path; with the layout they are in:
/// `Source` when each value links its voxel to the next one, `Destination` to the previous.
fn unit_axes<'a, A>(channels: &[Channel<'a, A>]) -> Option<(fast::UnitAxes<'a, A>, EdgeStorage)> {
    let mut axes = fast::UnitAxes {
        z: None,
        y: None,
        x: None,
    };
    let direction = channels.first()?.offset.iter().sum::<i64>();
    for c in channels {
        let slot = match c.offset.map(i64::abs) {
            [1, 0, 0] => &mut axes.z,
            [0, 1, 0] => &mut axes.y,
            [0, 0, 1] => &mut axes.x,
            _ => return None,
        };
        if c.offset.iter().sum::<i64>() != direction || slot.is_some() {
            return None;
        }
        *slot = Some(c.values);
    }
    let layout = if direction > 0 {
        EdgeStorage::Source
    } else {
        EdgeStorage::Destination
    };
    Some((axes, layout))
}

/// [`affinity_cc`] for affinities whose element type is known at run time (f32, f16, u8).
///
/// # Errors
/// As [`affinity_cc`]; [`DecodeError::NotFourDimensional`] and
/// [`DecodeError::InvalidParameter`] for other shapes and element types.
pub fn affinity_cc_any<L: Label>(aff: &AnyArray, params: &CcOptions) -> Result<Array3<L>> {
    fn four<A: Clone>(a: &ndarray::ArrayD<A>) -> Result<ArrayView4<'_, A>> {
        a.view()
            .into_dimensionality()
            .map_err(|_| DecodeError::NotFourDimensional(a.shape().to_vec()))
    }
    match aff {
        AnyArray::F32(a) => affinity_cc(four(a)?, params),
        AnyArray::F16(a) => affinity_cc(four(a)?, params),
        AnyArray::U8(a) => affinity_cc(four(a)?, params),
        other => Err(DecodeError::InvalidParameter {
            name: "affinities",
            reason: format!(
                "{} data; affinities are float32, float16 or uint8 (scaled by 1/255)",
                other.dtype()
            ),
        }),
    }
}

/// One selected channel: its values and its offset with the storage's sign applied.
struct Channel<'a, A> {
    values: &'a [A],
    offset: [i64; 3],
}

/// Streams one channel over the z-sections `zs`: on edges inside the slab are joined now,
/// edges to other slabs are collected in `crossing`, on values pointing out of the volume
/// label their voxel.
fn label_channel<A: Affinity, L: Label>(
    forest: &mut Forest<'_, L>,
    channel: &Channel<'_, A>,
    cut: A::Cut,
    [z, y, x]: [usize; 3],
    zs: std::ops::Range<usize>,
    crossing: &mut Vec<(usize, usize)>,
) {
    let [dz, dy, dx] = channel.offset;
    for iz in zs.clone() {
        let pz = iz as i64 + dz;
        let z_in = (0..z as i64).contains(&pz);
        let same_slab = zs.contains(&(pz.max(0) as usize)) && z_in;
        for iy in 0..y {
            let py = iy as i64 + dy;
            let row_in = z_in && (0..y as i64).contains(&py);
            let base = (iz * y + iy) * x;
            let partner_base = if row_in {
                (pz as usize * y + py as usize) * x
            } else {
                0
            };
            let row = &channel.values[base..base + x];
            for (ix, &v) in row.iter().enumerate() {
                if !v.is_on(cut) {
                    continue;
                }
                let px = ix as i64 + dx;
                if row_in && (0..x as i64).contains(&px) {
                    let (a, b) = (base + ix, partner_base + px as usize);
                    if same_slab {
                        forest.union(a, b);
                    } else {
                        forest.seed(a);
                        crossing.push((a, b));
                    }
                } else {
                    forest.seed(base + ix);
                }
            }
        }
    }
}

/// Union-find ([`UnionFind`]) over voxel indices, stored in label-sized words so that the
/// same buffer becomes the output. A forest may cover a slab: `base` is the global index of its first
/// word, and every tree lies inside it.
struct Forest<'a, L: Label> {
    parent: &'a mut [L],
    base: usize,
}

/// Entries hold global voxel indices; `L::MAX` marks voxels not yet seeded, which the
/// union-find never reaches (a union seeds both ends first).
impl<L: Label> UnionFind for Forest<'_, L> {
    type Node = L;

    #[inline(always)]
    fn node(&self, i: usize) -> L {
        self.parent[i - self.base]
    }

    #[inline(always)]
    fn set_node(&mut self, i: usize, node: L) {
        self.parent[i - self.base] = node;
    }
}

impl<'a, L: Label> Forest<'a, L> {
    fn new(parent: &'a mut [L], base: usize) -> Self {
        Self { parent, base }
    }

    /// Makes voxel `i` a set of its own unless it is in one already.
    #[inline(always)]
    fn seed(&mut self, i: usize) {
        if self.parent[i - self.base] == L::MAX {
            // i < n < L::MAX, checked when the buffer was sized.
            self.set_node(i, L::from_index(i));
        }
    }

    /// Joins the sets of voxels `a` and `b`, seeding them first. The earlier root wins, so
    /// parents always point back in raster order.
    #[inline(always)]
    fn union(&mut self, a: usize, b: usize) {
        self.seed(a);
        self.seed(b);
        UnionFind::union(self, a, b);
    }

    /// Rewrites the whole forest (base 0) into labels `1..=K` (first appearance) and 0.
    fn into_labels(self) {
        let mut next: u64 = 0;
        for i in 0..self.parent.len() {
            let p = self.parent[i];
            self.parent[i] = if p == L::MAX {
                L::BACKGROUND
            } else if p.to_usize() == i {
                next += 1;
                L::from_u64(next).unwrap_or(L::MAX)
            } else {
                // Parents point to earlier voxels, already rewritten to their final label.
                self.parent[p.to_usize()]
            };
        }
    }
}
