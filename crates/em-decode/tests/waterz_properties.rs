//! Invariants of the waterz agglomeration on random affinities (ties included), and its
//! blockwise form.

use em_core::{AnyArray, InMemoryVolume, NoProgress, UnionFind};
use em_decode::waterz::{
    agglomerate, agglomerate_blockwise, watershed_fragments, DustOptions, Scoring, WaterzOptions,
};
use ndarray::{Array3, Array4};
use proptest::prelude::*;

/// Random affinities on a small volume; quantised levels make ties and plateaus common.
fn affinities() -> impl Strategy<Value = Array4<f32>> {
    (1usize..5, 1usize..7, 1usize..7, 2u32..9, any::<u64>()).prop_map(|(z, y, x, levels, seed)| {
        let mut state = seed | 1;
        Array4::from_shape_fn((3, z, y, x), |_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % u64::from(levels)) as f32 / (levels - 1) as f32
        })
    })
}

fn scoring() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "mean",
        "hist50",
        "hist75_nomax",
        "quantile50",
        "max2",
        "min",
        "max",
    ])
}

/// Each threshold's segmentation and merges `(a, b)`.
type Steps = Vec<(Array3<u64>, Vec<(u64, u64)>)>;

fn run(aff: &Array4<f32>, opts: &WaterzOptions) -> Steps {
    let mut out = Vec::new();
    agglomerate::<u64>(aff.view(), None, opts, |r| {
        out.push((
            r.segmentation,
            r.merges.iter().map(|m| (m.a, m.b)).collect(),
        ));
        Ok(())
    })
    .unwrap();
    out
}

/// Components of the fragments' adjacency (6-neighbours, both non-zero).
fn fragment_components(frags: &Array3<u64>) -> Array3<u64> {
    let n = frags.iter().copied().max().unwrap_or(0) as usize + 1;
    let mut parent: Vec<usize> = (0..n).collect();
    let (zd, yd, xd) = frags.dim();
    for z in 0..zd {
        for y in 0..yd {
            for x in 0..xd {
                let a = frags[[z, y, x]] as usize;
                for (dz, dy, dx) in [(1, 0, 0), (0, 1, 0), (0, 0, 1)] {
                    if z + dz < zd && y + dy < yd && x + dx < xd {
                        let b = frags[[z + dz, y + dy, x + dx]] as usize;
                        if a != 0 && b != 0 {
                            let (ra, rb) = (parent.find(a), parent.find(b));
                            parent[ra.max(rb)] = ra.min(rb);
                        }
                    }
                }
            }
        }
    }
    frags.mapv(|f| {
        if f == 0 {
            0
        } else {
            parent.find(f as usize) as u64
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn threshold_zero_gives_the_fragments(aff in affinities(), s in scoring()) {
        let opts = WaterzOptions { thresholds: vec![0.0], scoring: Scoring::parse(s).unwrap(), ..Default::default() };
        let frags = watershed_fragments(aff.view(), &opts).unwrap();
        let out = run(&aff, &opts);
        prop_assert_eq!(&out[0].0, &frags);
        prop_assert!(out[0].1.is_empty());
    }

    #[test]
    fn above_every_score_each_connected_region_is_one_segment(aff in affinities(), s in scoring()) {
        let opts = WaterzOptions { thresholds: vec![1e9], scoring: Scoring::parse(s).unwrap(), ..Default::default() };
        let frags = watershed_fragments(aff.view(), &opts).unwrap();
        let out = run(&aff, &opts);
        // Merged ids are the smallest fragment id of the component.
        prop_assert_eq!(&out[0].0, &fragment_components(&frags));
    }

    #[test]
    fn replaying_the_merge_history_gives_the_labels(aff in affinities(), s in scoring()) {
        let opts = WaterzOptions { thresholds: vec![0.2, 0.5, 0.8], scoring: Scoring::parse(s).unwrap(), ..Default::default() };
        let frags = watershed_fragments(aff.view(), &opts).unwrap();
        let n = frags.iter().copied().max().unwrap_or(0) as usize + 1;
        let mut parent: Vec<usize> = (0..n).collect();
        for (seg, merges) in run(&aff, &opts) {
            for (a, b) in merges {
                prop_assert!(a < b);
                let (ra, rb) = (parent.find(a as usize), parent.find(b as usize));
                parent[rb] = ra;
            }
            let replayed = frags.mapv(|f| parent.find(f as usize) as u64);
            prop_assert_eq!(seg, replayed);
        }
    }

    #[test]
    fn threads_do_not_change_the_result(aff in affinities(), s in scoring()) {
        let one = WaterzOptions { thresholds: vec![0.3, 0.6], scoring: Scoring::parse(s).unwrap(), threads: Some(1), ..Default::default() };
        let two = WaterzOptions { threads: Some(2), ..one.clone() };
        prop_assert_eq!(run(&aff, &one), run(&aff, &two));
    }

    #[test]
    fn blockwise_equals_whole_volume_for_the_same_fragments(
        aff in affinities(), s in scoring(), bz in 1u64..4, by in 1u64..5, bx in 1u64..5, rg in any::<bool>(),
    ) {
        let opts = WaterzOptions { thresholds: vec![0.3, 0.7], scoring: Scoring::parse(s).unwrap(), region_graph: rg, ..Default::default() };
        let frags = watershed_fragments(aff.view(), &opts).unwrap();
        let mut whole = Vec::new();
        agglomerate::<u64>(aff.view(), Some(frags.view()), &opts, |r| {
            whole.push((r.segmentation, r.merges, r.region_graph));
            Ok(())
        }).unwrap();
        let input = InMemoryVolume::new(AnyArray::from(aff.clone().into_dyn()), "aff");
        let given = InMemoryVolume::new(AnyArray::from(frags.clone().into_dyn()), "frags");
        let mut i = 0;
        agglomerate_blockwise(&input, Some(&given), &opts, [bz, by, bx], 0, &NoProgress, |t| {
            let out = InMemoryVolume::new(AnyArray::from(Array3::<u64>::zeros(frags.dim()).into_dyn()), "out");
            t.write::<u64>(&out)?;
            let seg = out.into_inner().into_typed::<u64>().unwrap().into_dimensionality().unwrap();
            assert_eq!(seg, whole[i].0);
            assert_eq!(t.merges, whole[i].1);
            assert_eq!(t.region_graph, whole[i].2);
            i += 1;
            Ok(())
        }).unwrap();
        prop_assert_eq!(i, 2);
    }

    #[test]
    fn one_block_with_the_volume_is_the_whole_volume_result(aff in affinities()) {
        let opts = WaterzOptions { thresholds: vec![0.4], ..Default::default() };
        let whole = run(&aff, &opts);
        let input = InMemoryVolume::new(AnyArray::from(aff.clone().into_dyn()), "aff");
        let (_, z, y, x) = aff.dim();
        agglomerate_blockwise(&input, None, &opts, [z as u64, y as u64, x as u64], 2, &NoProgress, |t| {
            let out = InMemoryVolume::new(AnyArray::from(Array3::<u64>::zeros((z, y, x)).into_dyn()), "out");
            t.write::<u64>(&out)?;
            let seg: Array3<u64> = out.into_inner().into_typed::<u64>().unwrap().into_dimensionality().unwrap();
            assert_eq!(seg, whole[0].0);
            Ok(())
        }).unwrap();
    }

    #[test]
    fn dust_leaves_no_small_segment(aff in affinities(), size in 1u64..6, dust in 1u64..4) {
        let opts = WaterzOptions {
            thresholds: vec![0.3],
            dust: Some(DustOptions { size_th: size, weight_th: 0.0, dust_th: dust }),
            ..Default::default()
        };
        let mut seg = None;
        agglomerate::<u64>(aff.view(), None, &opts, |r| { seg = Some(r.segmentation); Ok(()) }).unwrap();
        let seg = seg.unwrap();
        let mut sizes = std::collections::HashMap::new();
        for &l in seg.iter().filter(|&&l| l != 0) {
            *sizes.entry(l).or_insert(0u64) += 1;
        }
        for (&l, &n) in &sizes {
            prop_assert!(n >= dust, "segment {} has {} voxels, below dust_th {}", l, n, dust);
        }
    }
}

#[test]
fn non_finite_affinities_count_as_zero_and_are_reported() {
    let mut aff = Array4::<f32>::from_elem((3, 2, 3, 4), 0.9);
    let mut clean = aff.clone();
    aff[[0, 1, 1, 1]] = f32::NAN;
    aff[[2, 0, 2, 3]] = f32::INFINITY;
    aff[[1, 1, 2, 0]] = f32::NEG_INFINITY;
    for v in [[0, 1, 1, 1], [2, 0, 2, 3], [1, 1, 2, 0]] {
        clean[v] = 0.0;
    }
    let opts = WaterzOptions {
        thresholds: vec![0.5],
        ..Default::default()
    };
    let summary = agglomerate::<u32>(aff.view(), None, &opts, |_| Ok(())).unwrap();
    assert_eq!(summary.non_finite, 3);
    let (a, b) = (run(&aff, &opts), run(&clean, &opts));
    assert_eq!(a, b);
}

#[test]
fn ids_that_do_not_fit_the_label_type_are_refused_before_merging() {
    let aff = Array4::<f32>::from_elem((3, 1, 2, 2), 0.9);
    let mut frags = Array3::<u64>::zeros((1, 2, 2));
    frags[[0, 0, 0]] = 1;
    frags[[0, 0, 1]] = u64::from(u32::MAX) + 7;
    let opts = WaterzOptions::default();
    let mut called = false;
    let e = agglomerate::<u32>(aff.view(), Some(frags.view()), &opts, |_| {
        called = true;
        Ok(())
    })
    .unwrap_err();
    assert!(e.to_string().contains("does not fit u32"), "{e}");
    assert!(!called);
    // u64 labels keep the id.
    let mut seen = None;
    agglomerate::<u64>(aff.view(), Some(frags.view()), &opts, |r| {
        seen = Some(r.segmentation[[0, 0, 1]]);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, Some(1), "merged into the smaller id");
}

#[test]
fn thresholds_are_sorted_and_the_summary_says_so() {
    let aff = Array4::<f32>::from_elem((3, 2, 2, 2), 0.5);
    let opts = WaterzOptions {
        thresholds: vec![0.7, 0.2],
        ..Default::default()
    };
    let mut order = Vec::new();
    let summary = agglomerate::<u32>(aff.view(), None, &opts, |r| {
        order.push(r.threshold);
        Ok(())
    })
    .unwrap();
    assert_eq!(order, vec![0.2, 0.7]);
    assert!(summary.reordered);
    for bad in [vec![], vec![f32::NAN], vec![0.1, f32::INFINITY]] {
        let opts = WaterzOptions {
            thresholds: bad,
            ..Default::default()
        };
        assert!(agglomerate::<u32>(aff.view(), None, &opts, |_| Ok(())).is_err());
    }
    let opts = WaterzOptions {
        thresholds: vec![120.0],
        percentile: true,
        ..Default::default()
    };
    assert!(agglomerate::<u32>(aff.view(), None, &opts, |_| Ok(())).is_err());
}
