//! `proptest` strategies: affinity volumes with their known segmentation, so a pipeline
//! can property-test its own use of the decoder (feature `proptest`).
//!
//! ```
//! use em_decode::strategies::affinity_cases;
//! use em_decode::affinity_cc;
//! use proptest::prelude::*;
//!
//! proptest!(|(case in affinity_cases([4, 6, 6]))| {
//!     let seg = affinity_cc::<f32, u32>(case.affinities.view(), &case.params).unwrap();
//!     prop_assert_eq!(seg, case.expected);
//! });
//! ```

use em_core::{EdgeStorage, Offset};
use ndarray::{Array3, Array4};
use proptest::prelude::*;

use crate::CcOptions;

/// Affinities generated from a segmentation, with what decoding them must give.
#[derive(Clone, Debug)]
pub struct AffinityCase {
    /// The segmentation the affinities were made from (ids arbitrary, 0 = background).
    pub segmentation: Array3<u32>,
    /// `(3, Z, Y, X)` short-range affinities in `params.storage`, on (above the threshold)
    /// exactly between two voxels of the same object; off values include NaN.
    pub affinities: Array4<f32>,
    /// Threshold, storage and channels to decode with.
    pub params: CcOptions,
    /// The decoder's output: each object of two or more voxels numbered in raster order of
    /// first appearance, single-voxel objects 0 (they touch no on edge).
    pub expected: Array3<u32>,
}

/// Segmentations up to `max_shape`: the volume cut recursively into boxes (so every object
/// is connected), each box an object of its own or background.
pub fn segmentations(max_shape: [usize; 3]) -> impl Strategy<Value = Array3<u32>> {
    let [mz, my, mx] = max_shape.map(|m| m.max(1));
    (1..=mz, 1..=my, 1..=mx, any::<u64>(), 1usize..12)
        .prop_map(|(z, y, x, seed, pieces)| boxes([z, y, x], seed, pieces))
}

/// Affinity volumes up to `max_shape` with their expected segmentation, in either storage
/// and at a random threshold.
pub fn affinity_cases(max_shape: [usize; 3]) -> impl Strategy<Value = AffinityCase> {
    (
        segmentations(max_shape),
        any::<bool>(),
        0.2f32..0.8,
        any::<u64>(),
    )
        .prop_map(|(segmentation, destination, threshold, seed)| {
            let storage = if destination {
                EdgeStorage::Destination
            } else {
                EdgeStorage::Source
            };
            case(segmentation, storage, threshold, seed)
        })
}

/// The case for a segmentation: affinities, parameters and expected labels.
pub fn case(
    segmentation: Array3<u32>,
    storage: EdgeStorage,
    threshold: f32,
    seed: u64,
) -> AffinityCase {
    let (z, y, x) = segmentation.dim();
    let mut rng = SplitMix(seed);
    let mut affinities = Array4::<f32>::zeros((3, z, y, x));
    let mut touches = Array3::<bool>::from_elem((z, y, x), false);
    let offsets = [[1usize, 0, 0], [0, 1, 0], [0, 0, 1]];
    for (c, o) in offsets.iter().enumerate() {
        for ((iz, iy, ix), &label) in segmentation.indexed_iter() {
            // The edge held by this voxel, and its other end.
            let other = match storage {
                EdgeStorage::Source => [iz + o[0], iy + o[1], ix + o[2]],
                EdgeStorage::Destination => {
                    if iz < o[0] || iy < o[1] || ix < o[2] {
                        [usize::MAX; 3]
                    } else {
                        [iz - o[0], iy - o[1], ix - o[2]]
                    }
                }
            };
            let inside = other[0] < z && other[1] < y && other[2] < x;
            let on = inside && label != 0 && segmentation[other] == label;
            let u = rng.unit();
            affinities[[c, iz, iy, ix]] = if on {
                threshold + (1.0 - threshold) * (0.01 + 0.99 * u)
            } else if u < 0.05 {
                f32::NAN
            } else {
                threshold * u
            };
            if on {
                touches[[iz, iy, ix]] = true;
                touches[other] = true;
            }
        }
    }
    let mut expected = Array3::<u32>::zeros((z, y, x));
    let mut map = std::collections::HashMap::new();
    for ((e, &label), &t) in expected.iter_mut().zip(&segmentation).zip(&touches) {
        if label != 0 && t {
            let next = map.len() as u32 + 1;
            *e = *map.entry(label).or_insert(next);
        }
    }
    AffinityCase {
        segmentation,
        affinities,
        params: CcOptions {
            threshold,
            channels: vec![0, 1, 2],
            offsets: Some(offsets.map(|o| Offset(o.map(|d| d as i64))).to_vec()),
            storage,
            threads: None,
        },
        expected,
    }
}

/// A box partition of `shape` into about `pieces` boxes with ids, ~1/4 background.
fn boxes(shape: [usize; 3], seed: u64, pieces: usize) -> Array3<u32> {
    let mut rng = SplitMix(seed);
    let mut parts = vec![([0usize; 3], shape)];
    while parts.len() < pieces {
        // Split the largest box along a random axis that can be split.
        let (i, _) = parts
            .iter()
            .enumerate()
            .max_by_key(|(_, (_, s))| s.iter().product::<usize>())
            .unwrap_or((0, &parts[0]));
        let (start, size) = parts[i];
        let axes: Vec<usize> = (0..3).filter(|&a| size[a] > 1).collect();
        if axes.is_empty() {
            break;
        }
        let a = axes[rng.below(axes.len())];
        let cut = 1 + rng.below(size[a] - 1);
        let (mut s1, mut s2, mut st2) = (size, size, start);
        s1[a] = cut;
        s2[a] = size[a] - cut;
        st2[a] = start[a] + cut;
        parts[i] = (start, s1);
        parts.push((st2, s2));
    }
    let mut seg = Array3::<u32>::zeros(shape);
    for (k, (start, size)) in parts.into_iter().enumerate() {
        // Distinct non-zero ids in no particular order (odd multiplier: a bijection).
        let id = if rng.below(4) == 0 {
            0
        } else {
            (k as u32 + 1).wrapping_mul(0x9E37_79B1)
        };
        seg.slice_mut(ndarray::s![
            start[0]..start[0] + size[0],
            start[1]..start[1] + size[1],
            start[2]..start[2] + size[2]
        ])
        .fill(id);
    }
    seg
}

/// A tiny deterministic generator (SplitMix64) so cases are reproducible from their seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
