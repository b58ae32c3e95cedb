//! Edge cases of the BANIS semantics, bad input, and a naive flood-fill reference.

use em_core::{f16, EdgeStorage, Offset};
use em_decode::{
    affinity_cc, affinity_cc_any, remove_small_objects, CcOptions, DecodeError, SmallObjectMode,
};
use ndarray::{Array3, Array4};
use proptest::prelude::*;

fn cc(aff: &Array4<f32>, params: &CcOptions) -> Array3<u32> {
    affinity_cc::<f32, u32>(aff.view(), params).unwrap()
}

#[test]
fn an_on_value_pointing_out_of_the_volume_labels_its_voxel() {
    let mut aff = Array4::<f32>::zeros((3, 2, 2, 2));
    aff[[2, 1, 1, 1]] = 0.9; // x-edge of the last voxel: its partner is outside.
    let seg = cc(&aff, &CcOptions::default());
    assert_eq!(seg[[1, 1, 1]], 1);
    assert_eq!(seg.iter().filter(|&&v| v != 0).count(), 1);
    // In Destination storage the same value is the edge to (1, 1, 0): inside, so both join.
    let dst = CcOptions {
        storage: EdgeStorage::Destination,
        ..CcOptions::default()
    };
    let seg = cc(&aff, &dst);
    assert_eq!((seg[[1, 1, 0]], seg[[1, 1, 1]]), (1, 1));
}

#[test]
fn nan_and_infinity_are_off() {
    let mut aff = Array4::<f32>::zeros((3, 1, 1, 3));
    aff[[2, 0, 0, 0]] = f32::NAN;
    aff[[2, 0, 0, 1]] = f32::INFINITY;
    assert!(cc(&aff, &CcOptions::default()).iter().all(|&v| v == 0));
    aff[[2, 0, 0, 1]] = 1.0;
    assert_eq!(
        cc(&aff, &CcOptions::default()).as_slice().unwrap(),
        &[0, 1, 1]
    );
}

#[test]
fn u8_and_f16_affinities_are_scaled_like_f32() {
    let values = [0u8, 127, 128, 200, 255];
    for thr in [0.5f32, 0.0, 0.7843137, 0.99] {
        let mut a8 = Array4::<u8>::zeros((3, 1, 1, 6));
        let mut a32 = Array4::<f32>::zeros((3, 1, 1, 6));
        let mut a16 = Array4::<f16>::from_elem((3, 1, 1, 6), f16::from_f32(0.0));
        for (i, &v) in values.iter().enumerate() {
            a8[[2, 0, 0, i]] = v;
            a32[[2, 0, 0, i]] = f32::from(v) / 255.0;
            a16[[2, 0, 0, i]] = f16::from_f32(f32::from(v) / 255.0);
        }
        let p = CcOptions {
            threshold: thr,
            ..CcOptions::default()
        };
        let s8 = affinity_cc::<u8, u32>(a8.view(), &p).unwrap();
        // Compare with exact rational arithmetic rather than f32 rounding.
        let on: Vec<bool> = values
            .iter()
            .map(|&v| f64::from(v) > f64::from(thr) * 255.0)
            .collect();
        for (i, &o) in on.iter().enumerate() {
            assert_eq!(
                s8[[0, 0, i]] != 0,
                o || (i > 0 && on[i - 1]),
                "u8 v={} thr={thr}",
                values[i]
            );
        }
        if thr == 0.5 {
            assert_eq!(s8, cc(&a32, &p));
            assert_eq!(affinity_cc::<f16, u32>(a16.view(), &p).unwrap(), s8);
        }
    }
}

#[test]
fn bad_parameters_are_clear_errors() {
    let aff = Array4::<f32>::zeros((2, 2, 2, 2));
    let err = affinity_cc::<f32, u32>(aff.view(), &CcOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::NoSuchChannel {
                channel: 2,
                available: 2
            }
        ),
        "{err}"
    );
    let p = CcOptions {
        channels: vec![0, 1],
        offsets: Some(vec![Offset([1, 0, 0])]),
        ..CcOptions::default()
    };
    assert!(affinity_cc::<f32, u32>(aff.view(), &p)
        .unwrap_err()
        .to_string()
        .contains("1 offsets given for 2"));
    let p = CcOptions {
        threshold: f32::NAN,
        channels: vec![0],
        ..CcOptions::default()
    };
    assert!(matches!(
        affinity_cc::<f32, u32>(aff.view(), &p),
        Err(DecodeError::InvalidParameter {
            name: "threshold",
            ..
        })
    ));
    let p = CcOptions {
        channels: vec![],
        ..CcOptions::default()
    };
    assert!(matches!(
        affinity_cc::<f32, u32>(aff.view(), &p),
        Err(DecodeError::NoChannels)
    ));
    let three_d = em_core::AnyArray::from(ndarray::ArrayD::<f32>::zeros(vec![2, 2, 2]));
    assert!(matches!(
        affinity_cc_any::<u32>(&three_d, &CcOptions::default()),
        Err(DecodeError::NotFourDimensional(_))
    ));
    let ints = em_core::AnyArray::from(ndarray::ArrayD::<i32>::zeros(vec![3, 2, 2, 2]));
    assert!(affinity_cc_any::<u32>(&ints, &CcOptions::default())
        .unwrap_err()
        .to_string()
        .contains("int32"));
    // Empty volumes decode to empty segmentations.
    let empty = Array4::<f32>::zeros((3, 0, 4, 4));
    assert_eq!(
        affinity_cc::<f32, u32>(empty.view(), &CcOptions::default())
            .unwrap()
            .len(),
        0
    );
}

/// Flood fill straight from the definition: on edges inside the volume connect; voxels with
/// an on value (pointing anywhere) or an on edge are labelled; ids by first appearance.
fn reference(aff: &Array4<f32>, params: &CcOptions) -> Array3<u32> {
    let (_, z, y, x) = aff.dim();
    let offsets = params.offsets.clone().unwrap_or_else(|| {
        params
            .channels
            .iter()
            .map(|&c| em_core::AffinityOffsets::banis().as_slice()[c])
            .collect()
    });
    let n = z * y * x;
    let idx = |p: [usize; 3]| (p[0] * y + p[1]) * x + p[2];
    let mut adj = vec![vec![]; n];
    let mut labelled = vec![false; n];
    for (k, &c) in params.channels.iter().enumerate() {
        for ((iz, iy, ix), &v) in aff.index_axis(ndarray::Axis(0), c).indexed_iter() {
            if !(v > params.threshold && v.is_finite()) {
                continue;
            }
            labelled[idx([iz, iy, ix])] = true;
            if let Some(p) = params.storage.partner([iz, iy, ix], offsets[k], [z, y, x]) {
                adj[idx([iz, iy, ix])].push(idx(p));
                adj[idx(p)].push(idx([iz, iy, ix]));
                labelled[idx(p)] = true;
            }
        }
    }
    let mut out = vec![0u32; n];
    let mut next = 0;
    for s in 0..n {
        if !labelled[s] || out[s] != 0 {
            continue;
        }
        next += 1;
        out[s] = next;
        let mut stack = vec![s];
        while let Some(v) = stack.pop() {
            for &w in &adj[v] {
                if out[w] == 0 {
                    out[w] = next;
                    stack.push(w);
                }
            }
        }
    }
    Array3::from_shape_vec((z, y, x), out).unwrap()
}

fn volumes() -> impl Strategy<Value = Array4<f32>> {
    (1usize..6, 1usize..6, 1usize..7).prop_flat_map(|(z, y, x)| {
        prop::collection::vec(
            prop_oneof![4 => Just(0.1f32), 3 => Just(0.9f32), 1 => Just(0.5f32)],
            6 * z * y * x,
        )
        .prop_map(move |v| Array4::from_shape_vec((6, z, y, x), v).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn matches_a_flood_fill_reference(
        aff in volumes(),
        destination in any::<bool>(),
        long_range in any::<bool>(),
        negative in any::<bool>(),
        threads in 1usize..5,
    ) {
        let storage = if destination { EdgeStorage::Destination } else { EdgeStorage::Source };
        let mut params = CcOptions { storage, threads: Some(threads), ..CcOptions::default() };
        if long_range {
            params.channels = vec![0, 1, 2, 3, 4, 5];
            params.offsets = Some(vec![
                Offset([1, 0, 0]), Offset([0, 1, 0]), Offset([0, 0, 1]),
                Offset([2, 0, 0]), Offset([0, if negative { -3 } else { 3 }, 0]), Offset([0, 1, -2]),
            ]);
        }
        let got = cc(&aff, &params);
        prop_assert_eq!(&got, &reference(&aff, &params));
        let wide = affinity_cc::<f32, u64>(aff.view(), &params).unwrap();
        prop_assert!(got.iter().zip(wide.iter()).all(|(a, b)| u64::from(*a) == *b));
    }

    #[test]
    fn small_object_removal_commutes_with_relabelling(aff in volumes(), min in 1u64..6, perm_seed in any::<u64>(), mode_index in 0usize..4) {
        let mode = [SmallObjectMode::Background, SmallObjectMode::Background2d, SmallObjectMode::Neighbor, SmallObjectMode::Neighbor2d][mode_index];
        let seg = cc(&aff, &CcOptions::default());
        let k = *seg.iter().max().unwrap_or(&0);
        // Permute ids (keeping 0): the result after removal + renumbering is the same.
        let mut ids: Vec<u32> = (1..=k).collect();
        let mut s = perm_seed;
        for i in (1..ids.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ids.swap(i, (s >> 33) as usize % (i + 1));
        }
        let permuted = seg.mapv(|v| if v == 0 { 0 } else { ids[v as usize - 1] });
        let (mut a, mut b) = (seg.clone(), permuted);
        let ka = remove_small_objects(a.view_mut(), min, mode).unwrap();
        let kb = remove_small_objects(b.view_mut(), min, mode).unwrap();
        prop_assert_eq!(ka, kb);
        prop_assert_eq!(&a, &b);
        // 3-D modes: every survivor has at least `min` voxels; neighbor modes only relabel
        // (background stays background), background modes only erase.
        if matches!(mode, SmallObjectMode::Background | SmallObjectMode::Neighbor) {
            for id in 1..=ka as u32 {
                prop_assert!(a.iter().filter(|&&v| v == id).count() as u64 >= min);
            }
        }
        for (&before, &after) in seg.iter().zip(a.iter()) {
            match mode {
                SmallObjectMode::Background | SmallObjectMode::Background2d => {
                    prop_assert!(after == 0 || before != 0);
                }
                _ => prop_assert!(before != 0 || after == 0),
            }
        }
    }
}

#[test]
fn per_section_removal_measures_each_section() {
    // Object 1: 3 voxels in section 0, 1 voxel in section 1. With min 2 per section, the
    // single voxel goes and the rest stays.
    let mut seg = Array3::<u32>::zeros((2, 1, 4));
    seg[[0, 0, 0]] = 1;
    seg[[0, 0, 1]] = 1;
    seg[[0, 0, 2]] = 1;
    seg[[1, 0, 3]] = 1;
    let kept = remove_small_objects(seg.view_mut(), 2, SmallObjectMode::Background2d).unwrap();
    assert_eq!(kept, 1);
    assert_eq!(seg.as_slice().unwrap(), &[1, 1, 1, 0, 0, 0, 0, 0]);
    assert!("nearest"
        .parse::<SmallObjectMode>()
        .unwrap_err()
        .to_string()
        .contains("allowed: background, background_2d, neighbor, neighbor_2d"));
}

#[test]
fn neighbor_mode_merges_into_the_most_frequent_rim_label() {
    // Section 0: a 1-voxel object (3) between labels 1 and 2.
    //   1 1 2 2
    //   1 3 2 2
    //   1 1 2 2
    // Rim of 3 (8-neighbourhood): five 1s, three 2s → 1 wins.
    let mut seg = ndarray::array![[[1u32, 1, 2, 2], [1, 3, 2, 2], [1, 1, 2, 2]]];
    let kept = remove_small_objects(seg.view_mut(), 2, SmallObjectMode::Neighbor).unwrap();
    assert_eq!(kept, 2);
    assert_eq!(
        seg,
        ndarray::array![[[1u32, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 2]]]
    );
    // Background never wins against a label, even when it is more frequent; an object with
    // only background around it becomes background; z-contact does not count.
    let mut seg = ndarray::array![
        [[0u32, 0, 0, 0], [0, 5, 0, 0], [0, 0, 0, 7]],
        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[8, 8, 8, 8], [8, 9, 8, 8], [8, 8, 8, 8]]
    ];
    seg[[1, 1, 1]] = 8; // touches 5 across z only
    seg[[0, 2, 2]] = 6; // 7's only labelled neighbour, 1 of 3 rim voxels
    let kept = remove_small_objects(seg.view_mut(), 2, SmallObjectMode::Neighbor).unwrap();
    // In order of first appearance: 5's in-plane rim holds 6 → 5 joins 6; 6 (still small:
    // sizes are taken once) touches 7 → joins 7; 7's rim is background only → 0. 9 → 8.
    assert_eq!(kept, 1);
    assert_eq!(seg.iter().filter(|&&v| v == 1).count(), 12 + 1);
    assert_eq!(seg[[0, 1, 1]], 0);
    assert_eq!(seg[[0, 2, 3]], 0);
    assert_eq!(seg[[2, 1, 1]], 1);
}
