//! Mutex watershed: labels equal to `mwatershed`'s on committed fixtures
//! (`tools/make_mws_fixtures.py`), equal to a brute-force reference on random inputs with
//! ties, NaN, strides and masks, the invariants that define the algorithm, and bad input
//! refused with an error.

mod common;

use std::collections::{HashMap, HashSet};

use em_core::f16;
use em_decode::{affinity_cc, mutex_watershed, CcOptions, DecodeError, MwsOptions, MwsSummary};
use ndarray::{Array3, Array4, ArrayView3, Axis, Ix3, Ix4};
use proptest::prelude::*;

use common::{fixture_json, read_fixture};

fn options(offsets: &[[i64; 3]], attractive: usize) -> MwsOptions {
    MwsOptions {
        offsets: offsets.to_vec(),
        attractive,
        threads: Some(1),
        ..MwsOptions::default()
    }
}

fn run(aff: &Array4<f32>, opts: &MwsOptions, mask: Option<&Array3<bool>>) -> Array3<u32> {
    mutex_watershed::<f32, u32>(aff.view(), opts, mask.map(|m| m.view()))
        .unwrap()
        .0
}

/// Labels renumbered 1.. by first appearance (0 stays 0): equal partitions give equal
/// arrays.
fn canonical(labels: &Array3<u32>) -> Array3<u32> {
    let mut ids = HashMap::new();
    labels.mapv(|l| {
        if l == 0 {
            0
        } else {
            let next = ids.len() as u32 + 1;
            *ids.entry(l).or_insert(next)
        }
    })
}

/// The other end of the edge at `v` for `offset`, if inside the volume.
fn partner(v: [usize; 3], offset: [i64; 3], shape: [usize; 3]) -> Option<[usize; 3]> {
    let mut out = [0; 3];
    for a in 0..3 {
        let p = v[a] as i64 + offset[a];
        if p < 0 || p >= shape[a] as i64 {
            return None;
        }
        out[a] = p as usize;
    }
    Some(out)
}

/// One edge of the graph: weight, channel, source voxel, target voxel.
struct Edge {
    weight: f32,
    channel: usize,
    u: [usize; 3],
    v: [usize; 3],
}

/// Every edge that exists under `opts` (without randomized strides) and `mask`.
fn edges(aff: &Array4<f32>, opts: &MwsOptions, mask: Option<&Array3<bool>>) -> Vec<Edge> {
    let (c, z, y, x) = aff.dim();
    let shape = [z, y, x];
    let mut out = Vec::new();
    for (channel, &offset) in opts.offsets.iter().enumerate().take(c) {
        let repulsive = channel >= opts.attractive;
        for ((iz, iy, ix), &a) in aff.index_axis(Axis(0), channel).indexed_iter() {
            let u = [iz, iy, ix];
            let Some(v) = partner(u, offset, shape) else {
                continue;
            };
            if repulsive && (0..3).any(|d| u[d] % opts.strides[d] != 0) {
                continue;
            }
            if mask.is_some_and(|m| !m[u] || !m[v]) || !a.is_finite() {
                continue;
            }
            let weight = if repulsive { 1.0 - a } else { a };
            out.push(Edge {
                weight: weight + 0.0,
                channel,
                u,
                v,
            });
        }
    }
    out
}

/// The mutex watershed written as plainly as possible: a comparison sort with the documented
/// tie order (weight descending, then channel, then voxel in C order), a union-find without
/// tricks, and every mutex rewritten onto the new root at each merge.
fn brute_force(aff: &Array4<f32>, opts: &MwsOptions, mask: Option<&Array3<bool>>) -> Array3<u32> {
    let (_, z, y, x) = aff.dim();
    let index = |v: [usize; 3]| (v[0] * y + v[1]) * x + v[2];
    let mut all = edges(aff, opts, mask);
    all.sort_by(|a, b| {
        b.weight
            .total_cmp(&a.weight)
            .then(a.channel.cmp(&b.channel))
            .then(index(a.u).cmp(&index(b.u)))
    });
    let n = z * y * x;
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            i = parent[i];
        }
        i
    }
    let mut mutex: Vec<HashSet<usize>> = vec![HashSet::new(); n];
    for e in &all {
        let (ru, rv) = (find(&mut parent, index(e.u)), find(&mut parent, index(e.v)));
        if ru == rv || mutex[ru].contains(&rv) {
            continue;
        }
        if e.channel < opts.attractive {
            parent[rv] = ru;
            for w in std::mem::take(&mut mutex[rv]) {
                mutex[w].remove(&rv);
                mutex[w].insert(ru);
                mutex[ru].insert(w);
            }
        } else {
            mutex[ru].insert(rv);
            mutex[rv].insert(ru);
        }
    }
    let mut ids = HashMap::new();
    Array3::from_shape_fn((z, y, x), |(iz, iy, ix)| {
        if mask.is_some_and(|m| !m[[iz, iy, ix]]) {
            return 0;
        }
        let r = find(&mut parent, index([iz, iy, ix]));
        let next = ids.len() as u32 + 1;
        *ids.entry(r).or_insert(next)
    })
}

// ---------------------------------------------------------------- fixtures (mwatershed)

#[test]
fn equals_mwatershed_on_fixtures() {
    let manifest = fixture_json("mws/manifest.json");
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let file = |key: &str| format!("mws/{}", case["files"][key].as_str().unwrap());
        let aff: Array4<f32> = read_fixture::<f32, Ix4>(&file("affinities"));
        let expected: Array3<u32> = read_fixture::<u32, Ix3>(&file("expected"));
        let mask: Option<Array3<bool>> = case["files"]
            .get("mask")
            .map(|_| read_fixture::<bool, Ix3>(&file("mask")));
        let offsets: Vec<[i64; 3]> = serde_json::from_value(case["offsets"].clone()).unwrap();
        let strides: [usize; 3] = serde_json::from_value(case["strides"].clone()).unwrap();
        let opts = MwsOptions {
            strides,
            ..options(&offsets, case["attractive"].as_u64().unwrap() as usize)
        };
        for threads in [1, 2] {
            let opts = MwsOptions {
                threads: Some(threads),
                ..opts.clone()
            };
            let (labels, summary) =
                mutex_watershed::<f32, u32>(aff.view(), &opts, mask.as_ref().map(|m| m.view()))
                    .unwrap();
            assert_eq!(labels, expected, "{name}, {threads} threads");
            assert_eq!(
                summary.segments,
                case["segments"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(
                summary.non_finite,
                case["non_finite"].as_u64().unwrap(),
                "{name}"
            );
            let (wide, _) =
                mutex_watershed::<f32, u64>(aff.view(), &opts, mask.as_ref().map(|m| m.view()))
                    .unwrap();
            assert_eq!(wide.mapv(|l| l as u32), expected, "{name}, u64 labels");
        }
        // The plain reference agrees too, so the fixtures also pin the reference.
        assert_eq!(brute_force(&aff, &opts, mask.as_ref()), expected, "{name}");
    }
}

// ---------------------------------------------------------------- random inputs

/// Offsets to draw channels from: unit, long-range, negative, diagonal, and longer than
/// the volumes.
const POOL: [[i64; 3]; 10] = [
    [0, 0, 1],
    [0, 1, 0],
    [1, 0, 0],
    [0, 0, -1],
    [0, -3, 0],
    [-2, 0, 0],
    [0, 2, -2],
    [1, -1, 3],
    [0, 0, -9],
    [0, 20, 0],
];

/// A random problem: affinities (ties, NaN and ±inf included when `values` is small),
/// offsets, attractive count, strides and an optional mask.
#[derive(Clone, Debug)]
struct Problem {
    aff: Array4<f32>,
    opts: MwsOptions,
    mask: Option<Array3<bool>>,
}

fn problems(tied: bool) -> impl Strategy<Value = Problem> {
    (
        1usize..6,
        1usize..7,
        1usize..8,
        prop::sample::subsequence(POOL.to_vec(), 1..=6),
        any::<u64>(),
        (1usize..3, 1usize..3, 1usize..4),
        any::<bool>(),
    )
        .prop_flat_map(move |(z, y, x, offsets, seed, strides, masked)| {
            let c = offsets.len();
            let len = c * z * y * x;
            let values = if tied {
                let value = prop_oneof![
                    6 => (0u8..5).prop_map(|k| f32::from(k) / 4.0),
                    1 => Just(f32::NAN),
                    1 => prop_oneof![Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(-0.0f32)],
                ];
                prop::collection::vec(value, len).boxed()
            } else {
                // Numerators 4k + 1 over 2^13: all distinct, and 1 − a has numerator 4j + 3,
                // so no attractive weight equals a repulsive one either.
                Just((0..len).collect::<Vec<usize>>())
                    .prop_shuffle()
                    .prop_map(|ks| {
                        ks.into_iter()
                            .map(|k| (4 * k + 1) as f32 / 8192.0)
                            .collect()
                    })
                    .boxed()
            };
            (
                values,
                prop::collection::vec(any::<bool>(), z * y * x),
                0..=c,
                Just((z, y, x, offsets, seed, strides, masked)),
            )
        })
        .prop_map(
            |(values, mask, attractive, (z, y, x, offsets, seed, strides, masked))| {
                let c = offsets.len();
                Problem {
                    aff: Array4::from_shape_vec((c, z, y, x), values).unwrap(),
                    opts: MwsOptions {
                        strides: [strides.0, strides.1, strides.2],
                        seed,
                        ..options(&offsets, attractive)
                    },
                    mask: masked.then(|| Array3::from_shape_vec((z, y, x), mask).unwrap()),
                }
            },
        )
}

/// Labels are 1..=K in order of first appearance, 0 exactly outside the mask.
fn check_numbering(labels: &Array3<u32>, mask: Option<&Array3<bool>>, summary: &MwsSummary) {
    let mut top = 0;
    for (i, &l) in labels.iter().enumerate() {
        let inside = mask.is_none_or(|m| m.as_slice().unwrap()[i]);
        assert_eq!(l == 0, !inside, "voxel {i}");
        assert!(l <= top + 1, "label {l} after {top}");
        top = top.max(l);
    }
    assert_eq!(u64::from(top), summary.segments);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Exactly the brute-force reference, ties and non-finite values included.
    #[test]
    fn equals_brute_force(p in problems(true)) {
        let (labels, summary) = mutex_watershed::<f32, u32>(
            p.aff.view(), &p.opts, p.mask.as_ref().map(|m| m.view())).unwrap();
        prop_assert_eq!(&labels, &brute_force(&p.aff, &p.opts, p.mask.as_ref()));
        check_numbering(&labels, p.mask.as_ref(), &summary);
        prop_assert_eq!(summary.non_finite, p.aff.iter().filter(|v| !v.is_finite()).count() as u64);
        prop_assert_eq!(summary.edges, edges(&p.aff, &p.opts, p.mask.as_ref()).len() as u64);
    }

    /// The defining properties: voxels of one segment joined by a repulsive edge are linked
    /// by attractive edges at least as strong inside that segment; an attractive edge
    /// between two segments is outweighed by a repulsive edge between them.
    #[test]
    fn mutex_invariants(p in problems(false)) {
        let labels = run(&p.aff, &p.opts, p.mask.as_ref());
        let all = edges(&p.aff, &p.opts, p.mask.as_ref());
        let attractive: Vec<&Edge> = all.iter().filter(|e| e.channel < p.opts.attractive).collect();
        for e in &all {
            let (lu, lv) = (labels[e.u], labels[e.v]);
            if e.channel >= p.opts.attractive && lu == lv {
                // Breadth-first search over strong enough attractive edges of the segment.
                let mut seen = HashSet::from([e.u]);
                let mut todo = vec![e.u];
                while let Some(a) = todo.pop() {
                    for f in &attractive {
                        if f.weight < e.weight || labels[f.u] != lu {
                            continue;
                        }
                        let b = if f.u == a { f.v } else if f.v == a { f.u } else { continue };
                        if seen.insert(b) {
                            todo.push(b);
                        }
                    }
                }
                prop_assert!(seen.contains(&e.v), "repulsive {:?}-{:?} inside a segment", e.u, e.v);
            }
            if e.channel < p.opts.attractive && lu != lv {
                let separated = all.iter().any(|r| {
                    r.channel >= p.opts.attractive && r.weight >= e.weight
                        && ((labels[r.u] == lu && labels[r.v] == lv)
                            || (labels[r.u] == lv && labels[r.v] == lu))
                });
                prop_assert!(separated, "attractive {:?}-{:?} between segments", e.u, e.v);
            }
        }
    }

    /// Without repulsive channels every existing edge merges: connected components, as
    /// `affinity_cc` finds them below its lowest threshold (its unlabelled voxels are
    /// single-voxel segments here).
    #[test]
    fn attractive_only_is_connected_components(p in problems(true)) {
        let c = p.opts.offsets.len();
        let opts = MwsOptions { attractive: c, ..p.opts.clone() };
        let labels = run(&p.aff, &opts, None);
        let cc = affinity_cc::<f32, u32>(p.aff.view(), &CcOptions {
            threshold: -1.0,
            channels: (0..c).collect(),
            offsets: Some(opts.offsets.iter().map(|&o| o.into()).collect()),
            threads: Some(1),
            ..CcOptions::default()
        }).unwrap();
        let mut next = cc.iter().copied().max().unwrap_or(0);
        let cc = cc.mapv(|l| if l == 0 { next += 1; next } else { l });
        prop_assert_eq!(labels, canonical(&cc));
    }

    /// Repulsive weights all 0 (affinity 1) come after every attractive edge, so they
    /// change nothing: connected components of the attractive channels.
    #[test]
    fn zero_repulsion_changes_nothing(p in problems(true)) {
        let mut aff = p.aff.clone();
        for c in p.opts.attractive..aff.dim().0 {
            aff.index_axis_mut(Axis(0), c).fill(1.0);
        }
        let labels = run(&aff, &p.opts, p.mask.as_ref());
        if p.opts.attractive == 0 {
            // Nothing attracts: every voxel alone.
            let mut next = 0;
            let alone = labels.mapv(|l| if l == 0 { 0 } else { next += 1; next });
            prop_assert_eq!(labels, alone);
            return Ok(());
        }
        let only = MwsOptions {
            offsets: p.opts.offsets[..p.opts.attractive].to_vec(),
            ..p.opts.clone()
        };
        let attractive = aff.slice_axis(Axis(0), (0..p.opts.attractive).into()).to_owned();
        prop_assert_eq!(labels, run(&attractive, &only, p.mask.as_ref()));
    }

    /// Without ties the channel order within each group does not matter, and neither does
    /// storing an edge at its other end (offset negated, values shifted).
    #[test]
    fn channel_order_and_direction(p in problems(false), rotate in 0usize..6, flip in 0usize..6) {
        let base = run(&p.aff, &p.opts, p.mask.as_ref());
        let c = p.opts.offsets.len();
        let k = p.opts.attractive;
        let mut order: Vec<usize> = (0..c).collect();
        if k > 0 {
            order[..k].rotate_left(rotate % k);
        }
        if c > k {
            order[k..].rotate_left(rotate % (c - k));
        }
        let aff = p.aff.select(Axis(0), &order);
        let opts = MwsOptions {
            offsets: order.iter().map(|&i| p.opts.offsets[i]).collect(),
            ..p.opts.clone()
        };
        prop_assert_eq!(&run(&aff, &opts, p.mask.as_ref()), &base);
        // Channel `flip` stored at the far end. Strides pick voxels by the near end, so
        // only attractive channels (or unit strides) may flip.
        let f = flip % c;
        if f < k || p.opts.strides == [1, 1, 1] {
            let (_, z, y, x) = p.aff.dim();
            let o = p.opts.offsets[f];
            let mut flipped = p.aff.clone();
            let mut plane = flipped.index_axis_mut(Axis(0), f);
            plane.fill(0.5);
            for ((iz, iy, ix), &a) in p.aff.index_axis(Axis(0), f).indexed_iter() {
                if let Some(v) = partner([iz, iy, ix], o, [z, y, x]) {
                    plane[v] = a;
                }
            }
            let mut opts = p.opts.clone();
            opts.offsets[f] = o.map(|d| -d);
            prop_assert_eq!(run(&flipped, &opts, p.mask.as_ref()), base);
        }
    }

    /// Randomized strides: a seed repeats itself at any thread count; the kept edges are
    /// a subset of all.
    #[test]
    fn randomized_strides_repeat(p in problems(true)) {
        let opts = MwsOptions { randomize_strides: true, strides: [2, 2, 2], ..p.opts.clone() };
        let once = mutex_watershed::<f32, u32>(p.aff.view(), &opts, p.mask.as_ref().map(|m| m.view())).unwrap();
        let twice = mutex_watershed::<f32, u32>(p.aff.view(), &MwsOptions { threads: Some(2), ..opts.clone() },
            p.mask.as_ref().map(|m| m.view())).unwrap();
        prop_assert_eq!(&once, &twice);
        let all = edges(&p.aff, &MwsOptions { strides: [1, 1, 1], ..opts.clone() }, p.mask.as_ref()).len() as u64;
        prop_assert!(once.1.edges <= all);
        let plain = MwsOptions { strides: [1, 1, 1], ..opts.clone() };
        prop_assert_eq!(run(&p.aff, &plain, p.mask.as_ref()),
            run(&p.aff, &MwsOptions { randomize_strides: false, ..plain.clone() }, p.mask.as_ref()));
    }
}

// ---------------------------------------------------------------- examples

/// Two rows of voxels along x: strong attraction inside each, a strong repulsive long-range
/// edge between them beats the weak attraction that would join them.
#[test]
fn mutex_blocks_a_weak_merge() {
    // Channel 0: x neighbour (attractive), channel 1: two to the right (repulsive).
    let mut aff = Array4::<f32>::zeros((2, 1, 1, 4));
    aff.slice_mut(ndarray::s![0, 0, 0, ..])
        .assign(&ndarray::arr1(&[0.9, 0.3, 0.8, 0.0]));
    aff.slice_mut(ndarray::s![1, 0, 0, ..]).fill(1.0); // weight 0: no repulsion
    let opts = options(&[[0, 0, 1], [0, 0, 2]], 1);
    assert_eq!(run(&aff, &opts, None).as_slice().unwrap(), &[1, 1, 1, 1]);
    aff[[1, 0, 0, 1]] = 0.25; // voxel 1 — voxel 3, weight 0.75 > 0.3
    assert_eq!(run(&aff, &opts, None).as_slice().unwrap(), &[1, 1, 2, 2]);
    aff[[1, 0, 0, 1]] = 0.75; // weight 0.25 < 0.3: processed after the merge, no effect
    assert_eq!(run(&aff, &opts, None).as_slice().unwrap(), &[1, 1, 1, 1]);
}

/// Equal weights: the earlier channel first, then the earlier voxel. (Attractive channels
/// come first, so on a tie attraction always precedes repulsion.)
#[test]
fn ties_follow_channel_then_voxel_order() {
    // Voxels 0, 1, 2 along x; a strong mutex 0–2 (weight 0.9) comes first, then two
    // attractive edges 0–1 and 1–2 tied at 0.5: only the first of them merges.
    let mut aff = Array4::<f32>::from_elem((3, 1, 1, 3), f32::NAN);
    aff[[2, 0, 0, 0]] = 0.1;
    let opts = options(&[[0, 0, 1], [0, 0, 1], [0, 0, 2]], 2);
    // Same channel: voxel 0's edge (0–1) before voxel 1's (1–2).
    aff[[0, 0, 0, 0]] = 0.5;
    aff[[0, 0, 0, 1]] = 0.5;
    assert_eq!(run(&aff, &opts, None).as_slice().unwrap(), &[1, 1, 2]);
    // Channels 0 and 1: channel 0's edge (1–2) first although its voxel comes later.
    aff[[0, 0, 0, 0]] = f32::NAN;
    aff[[1, 0, 0, 0]] = 0.5;
    assert_eq!(run(&aff, &opts, None).as_slice().unwrap(), &[1, 2, 2]);
    // A repulsive edge tied with an attractive one comes after it.
    let mut aff = Array4::<f32>::from_elem((2, 1, 1, 3), 0.5);
    aff[[0, 0, 0, 1]] = 0.4;
    let opts = options(&[[0, 0, 1], [0, 0, 2]], 1);
    // 0–1 (0.5) merges, then the mutex {0,1}–2 (0.5), then 1–2 (0.4) is refused.
    assert_eq!(run(&aff, &opts, None).as_slice().unwrap(), &[1, 1, 2]);
}

/// NaN and ±inf edges do not exist; the summary counts them.
#[test]
fn non_finite_edges_are_ignored() {
    let mut aff = Array4::<f32>::from_elem((1, 1, 1, 5), 0.9);
    aff[[0, 0, 0, 1]] = f32::NAN;
    aff[[0, 0, 0, 2]] = f32::INFINITY;
    aff[[0, 0, 0, 4]] = f32::NEG_INFINITY; // its edge leaves the volume anyway
    let (labels, summary) =
        mutex_watershed::<f32, u32>(aff.view(), &options(&[[0, 0, 1]], 1), None).unwrap();
    assert_eq!(labels.as_slice().unwrap(), &[1, 1, 2, 3, 3]);
    assert_eq!(summary.non_finite, 3);
    assert_eq!(summary.edges, 2);
    assert_eq!(summary.merges, 2);
}

/// f16 and u8 affinities decode as their f32 values.
#[test]
fn f16_and_u8_match_f32() {
    let (c, z, y, x) = (4, 3, 5, 6);
    let raw = Array4::from_shape_fn((c, z, y, x), |(a, b, d, e)| {
        ((a * 7 + b * 13 + d * 29 + e * 31) * 37 % 256) as u8
    });
    let offsets = [[0, 0, -1], [0, -1, 0], [-1, 0, 0], [0, -2, 2]];
    let opts = options(&offsets, 3);
    let as_f32 = raw.mapv(|v| f32::from(v) / 255.0);
    let expected = run(&as_f32, &opts, None);
    let (from_u8, _) = mutex_watershed::<u8, u32>(raw.view(), &opts, None).unwrap();
    assert_eq!(from_u8, expected);
    let halves = raw.mapv(|v| f32::from(v / 4) / 64.0);
    let (from_f16, _) =
        mutex_watershed::<f16, u32>(halves.mapv(f16::from_f32).view(), &opts, None).unwrap();
    assert_eq!(from_f16, run(&halves, &opts, None));
}

/// Views in any memory layout give the labels of their contiguous copy.
#[test]
fn strided_views_match_contiguous() {
    let aff = Array4::from_shape_fn((3, 4, 5, 6), |(a, b, c, d)| {
        ((a * 31 + b * 17 + c * 7 + d * 3) % 23) as f32 / 23.0
    });
    let opts = options(&[[0, 0, -1], [0, -1, 0], [-1, 0, 2]], 2);
    let mut transposed = Array4::<f32>::zeros((3, 6, 5, 4));
    transposed.assign(&aff.view().permuted_axes([0, 3, 2, 1]));
    let view = transposed.view().permuted_axes([0, 3, 2, 1]);
    assert!(!view.is_standard_layout());
    let mask = Array3::from_shape_fn((6, 5, 4), |(a, b, c)| (a + b + c) % 5 != 0);
    let mask_view: ArrayView3<bool> = mask.view().permuted_axes([2, 1, 0]);
    let (labels, _) = mutex_watershed::<f32, u32>(view, &opts, Some(mask_view)).unwrap();
    assert_eq!(labels, run(&aff, &opts, Some(&mask_view.to_owned())));
}

/// Empty volumes, offsets longer than the volume, and the default options.
#[test]
fn degenerate_volumes() {
    let opts = MwsOptions::default();
    let empty = Array4::<f32>::zeros((12, 0, 4, 4));
    let (labels, summary) = mutex_watershed::<f32, u32>(empty.view(), &opts, None).unwrap();
    assert_eq!(labels.dim(), (0, 4, 4));
    assert_eq!(summary.segments, 0);
    // Offsets of ±i64::MAX have no edges: every voxel alone.
    let aff = Array4::<f32>::from_elem((2, 2, 2, 2), 0.9);
    let far = options(&[[i64::MAX, 0, 0], [0, i64::MIN, 0]], 1);
    let (labels, summary) = mutex_watershed::<f32, u32>(aff.view(), &far, None).unwrap();
    assert_eq!(summary.segments, 8);
    assert_eq!(summary.edges, 0);
    assert_eq!(labels.as_slice().unwrap(), &[1, 2, 3, 4, 5, 6, 7, 8]);
    // Strides far beyond the volume keep only the repulsive edges at the origin; no
    // overflow anywhere.
    let huge = MwsOptions {
        strides: [usize::MAX, usize::MAX - 1, 3],
        ..options(&[[0, 0, 1], [0, 1, 0]], 1)
    };
    let (_, summary) = mutex_watershed::<f32, u32>(aff.view(), &huge, None).unwrap();
    assert_eq!(summary.edges, 4 + 1);
    let random = MwsOptions {
        randomize_strides: true,
        ..huge
    };
    mutex_watershed::<f32, u32>(aff.view(), &random, None).unwrap();
    // Default: PyTC's 12 channels, 3 attractive.
    let aff = Array4::<f32>::from_elem((12, 3, 30, 30), 0.9);
    let (labels, _) = mutex_watershed::<f32, u32>(aff.view(), &opts, None).unwrap();
    assert!(labels.iter().all(|&l| l == 1));
}

#[test]
fn options_serde() {
    let opts: MwsOptions = serde_json::from_str(r#"{"attractive": 2}"#).unwrap();
    assert_eq!(opts.attractive, 2);
    assert_eq!(opts.offsets, MwsOptions::default().offsets);
    assert_eq!(opts.offsets.len(), 12);
    assert_eq!(&opts.offsets[..3], &[[0, 0, -1], [0, -1, 0], [-1, 0, 0]]);
    assert!(serde_json::from_str::<MwsOptions>(r#"{"atractive": 2}"#).is_err());
    let back: MwsOptions = serde_json::from_str(&serde_json::to_string(&opts).unwrap()).unwrap();
    assert_eq!(back, opts);
    let summary = MwsSummary {
        segments: 3,
        ..MwsSummary::default()
    };
    assert!(serde_json::to_string(&summary)
        .unwrap()
        .contains("\"segments\":3"));
}

// ---------------------------------------------------------------- bad input

#[test]
fn bad_input_is_an_error() {
    let aff = Array4::<f32>::from_elem((3, 2, 3, 4), 0.5);
    let three = [[0, 0, 1], [0, 1, 0], [1, 0, 0]];
    let check = |opts: MwsOptions, mask: Option<Array3<bool>>, needle: &str| {
        let err = mutex_watershed::<f32, u32>(aff.view(), &opts, mask.as_ref().map(|m| m.view()))
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        err
    };
    let err = check(options(&three[..2], 1), None, "2 offsets given for 3");
    assert!(matches!(err, DecodeError::OffsetCountMismatch { .. }));
    check(options(&[], 0), None, "empty");
    check(
        options(&[[0, 0, 1], [0, 0, 0], [1, 0, 0]], 1),
        None,
        "channel 1 has offset (0, 0, 0)",
    );
    check(
        options(&three, 4),
        None,
        "4 attractive channels but the affinities have 3",
    );
    let zero_stride = MwsOptions {
        strides: [1, 0, 1],
        ..options(&three, 1)
    };
    check(zero_stride, None, "strides");
    check(
        options(&three, 1),
        Some(Array3::from_elem((2, 3, 5), true)),
        "mask",
    );
    let no_threads = MwsOptions {
        threads: Some(0),
        ..options(&three, 1)
    };
    check(no_threads, None, "threads");
}
