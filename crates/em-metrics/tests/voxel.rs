//! VOI / Rand against funlib.evaluate's numbers, and their invariants.

mod common;

use common::{fixture_json, fixtures};
use em_metrics::{binary_scores, class_scores, match_instances, Contingency, VoxelMetrics};
use ndarray::{Array3, Ix3};
use proptest::prelude::*;

fn metrics<G: em_core::Label, P: em_core::Label>(gt: &Array3<G>, pred: &Array3<P>) -> VoxelMetrics {
    VoxelMetrics::from_contingency(&Contingency::new(gt.view(), pred.view()).unwrap()).unwrap()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
        "{what}: {a} vs {b}"
    );
}

#[test]
fn shared_funlib_case() {
    let cases = fixture_json("shared/metrics_cases.json");
    let load = |n: &str| -> Array3<u64> {
        em_io::read(fixtures().join("shared").join(n))
            .unwrap()
            .into_typed::<u64>()
            .unwrap()
            .into_dimensionality::<Ix3>()
            .unwrap()
    };
    let (gt, pred) = (
        load("m1_funlib_1x1x11_gt.npy"),
        load("m1_funlib_1x1x11_pred.npy"),
    );
    let m = metrics(&gt, &pred);
    let f = &cases["m1_funlib_1x1x11"]["funlib_rand_voi"];
    for (name, got) in [
        ("voi_split", m.voi_split),
        ("voi_merge", m.voi_merge),
        ("rand_split", m.rand_split),
        ("rand_merge", m.rand_merge),
        ("nvi_split", m.nvi_split),
        ("nvi_merge", m.nvi_merge),
        ("nid", m.nid),
        ("arand", m.arand),
    ] {
        close(got, f[name].as_f64().unwrap(), name);
    }
    let s = &cases["m1_funlib_1x1x11"]["ref_f64"];
    close(
        m.arand_skimage,
        s["are_skimage"].as_f64().unwrap(),
        "are_skimage",
    );
    close(
        m.arand_skimage_precision,
        s["are_skimage_precision"].as_f64().unwrap(),
        "precision",
    );
    close(
        m.arand_skimage_recall,
        s["are_skimage_recall"].as_f64().unwrap(),
        "recall",
    );
    assert_eq!(m.voxels, 11);
}

#[test]
fn bad_input_is_a_clear_error() {
    let a = Array3::<u32>::zeros((2, 3, 4));
    let b = Array3::<u32>::zeros((2, 4, 3));
    let e = Contingency::new(a.view(), b.view()).unwrap_err();
    assert!(
        e.to_string().contains("[2, 3, 4]") && e.to_string().contains("[2, 4, 3]"),
        "{e}"
    );
    let t = Contingency::new(a.view(), a.view()).unwrap();
    let e = VoxelMetrics::from_contingency(&t).unwrap_err();
    assert!(e.to_string().contains("no labelled"), "{e}");
}

#[test]
fn semantic_scores_and_matching() {
    // gt: object 1 = 4 voxels, object 2 = 2 voxels; pred: 7 covers 3 of object 1 + 1 bg.
    let gt = ndarray::array![[[1u32, 1, 1, 1, 2, 2, 0, 0]]];
    let pred = ndarray::array![[[7u32, 7, 7, 0, 0, 9, 9, 7]]];
    let t = Contingency::new(gt.view(), pred.view()).unwrap();
    let b = binary_scores(&t);
    assert_eq!((b.tp, b.fp, b.fn_), (4, 2, 2));
    close(b.iou, 0.5, "iou");
    close(b.dice, 8.0 / 12.0, "dice");
    let m = match_instances(&t, 0.5);
    // 1–7: 3 / (4 + 4 − 3) = 0.6 > 0.5; 2–9: 1 / 3.
    assert_eq!(m.matches, vec![(1, 7, 0.6)]);
    assert_eq!((m.gt_instances, m.pred_instances), (2, 2));
    close(m.f1, 0.5, "f1");
    let classes = class_scores(&t);
    assert_eq!(
        classes.iter().map(|c| c.class).collect::<Vec<_>>(),
        vec![1, 2, 7, 9]
    );
    assert_eq!(classes[0].tp, 0);
}

fn labels(max_id: u64) -> impl Strategy<Value = (Array3<u64>, Array3<u64>)> {
    (1usize..5, 1usize..6, 1usize..8).prop_flat_map(move |(z, y, x)| {
        let n = z * y * x;
        (
            prop::collection::vec(0..=max_id, n),
            prop::collection::vec(0..=max_id, n),
        )
            .prop_map(move |(a, b)| {
                (
                    Array3::from_shape_vec((z, y, x), a).unwrap(),
                    Array3::from_shape_vec((z, y, x), b).unwrap(),
                )
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invariants((gt, pred) in labels(4), shift in any::<u64>()) {
        prop_assume!(gt.iter().any(|&v| v != 0));
        let m = metrics(&gt, &pred);
        prop_assert!(m.voi_split >= 0.0 && m.voi_merge >= 0.0);
        prop_assert!((0.0..=1.0).contains(&m.arand));
        prop_assert!(m.rand_split <= 1.0 + 1e-12 && m.rand_merge <= 1.0 + 1e-12);
        // Relabelling either side (a bijection on non-zero ids, here onto huge ids) changes nothing.
        let big = |v: u64| if v == 0 { 0 } else { u64::MAX - v.wrapping_mul(shift | 1) % (1 << 40) };
        let m2 = metrics(&gt, &pred.mapv(big));
        prop_assert!((m.voi_split - m2.voi_split).abs() < 1e-12 && (m.arand - m2.arand).abs() < 1e-12);
        // u32 and u64 agree.
        let m3 = metrics(&gt.mapv(|v| v as u32), &pred.mapv(|v| v as u32));
        prop_assert_eq!(m, m3);
        // Perfect prediction.
        let p = metrics(&gt, &gt);
        prop_assert!(p.voi.abs() < 1e-12 && p.arand.abs() < 1e-12);
    }

    #[test]
    fn swapping_swaps_split_and_merge((gt, pred) in labels(5)) {
        // Without background on either side, swapping the roles swaps split and merge.
        let (gt, pred) = (gt.mapv(|v| v + 1), pred.mapv(|v| v + 1));
        let (m, s) = (metrics(&gt, &pred), metrics(&pred, &gt));
        prop_assert!((m.voi_split - s.voi_merge).abs() < 1e-9);
        prop_assert!((m.rand_split - s.rand_merge).abs() < 1e-12);
        prop_assert!((m.arand - s.arand).abs() < 1e-12);
    }
}

#[test]
fn large_volumes_match_a_serial_count() {
    // Many parallel chunks: the same table as a plain serial count.
    let n = 40 * 64 * 64;
    let gt: Vec<u32> = (0..n).map(|i| ((i / 37) % 11) as u32).collect();
    let pred: Vec<u64> = (0..n)
        .map(|i| ((i / 53) % 7) as u64 * 1_000_000_007)
        .collect();
    let t = Contingency::from_slices(&gt, &pred);
    let mut serial = std::collections::HashMap::new();
    for (g, p) in gt.iter().zip(&pred) {
        *serial.entry((u64::from(*g), *p)).or_insert(0u64) += 1;
    }
    assert_eq!(t.pairs.len(), serial.len());
    assert!(serial.iter().all(|(k, v)| t.pairs[k] == *v));
    assert_eq!(t.voxels, n as u64);
}
