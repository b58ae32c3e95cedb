//! Every case of `tools/make_metrics_fixtures.py`: numbers from funlib.evaluate, BANIS and
//! scikit-image, and exact float64 references.

mod common;

use common::fixture_json;
use em_core::VoxelSize;
use em_metrics::{erl, Contingency, MetricsError, Skeletons, VoxelMetrics};
use ndarray::Array3;
use serde_json::Value;

fn volume(shape: &Value, data: &Value) -> Array3<u64> {
    let s: Vec<usize> = shape
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let d: Vec<u64> = data
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    Array3::from_shape_vec((s[0], s[1], s[2]), d).unwrap()
}

/// `got` against a fixture number at relative tolerance `rel`; NaN references are skipped
/// (documented differences: we return 0 or an error where funlib divides 0 by 0).
fn check(got: f64, want: &Value, rel: f64, what: &str) -> bool {
    let Some(w) = want.as_f64() else { return false };
    assert!(
        (got - w).abs() <= rel * w.abs().max(1e-12) + 1e-12,
        "{what}: ours {got}, reference {w}"
    );
    true
}

#[test]
fn voxel_cases_match_funlib_and_skimage() {
    let f = fixture_json("voxel_cases.json");
    let mut compared = 0;
    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let gt = volume(&case["shape"], &case["gt"]);
        let pred = volume(&case["shape"], &case["pred"]);
        let table = Contingency::new(gt.view(), pred.view()).unwrap();
        let m = match VoxelMetrics::from_contingency(&table) {
            Ok(m) => m,
            Err(MetricsError::EmptyGroundTruth) => {
                assert!(
                    gt.iter().all(|&v| v == 0),
                    "{name}: empty only without labelled gt"
                );
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        let r = &case["ref_f64"];
        let fl = &case["funlib_rand_voi"];
        for (key, got) in [
            ("voi_split", m.voi_split),
            ("voi_merge", m.voi_merge),
            ("rand_split", m.rand_split),
            ("rand_merge", m.rand_merge),
            ("nvi_split", m.nvi_split),
            ("nvi_merge", m.nvi_merge),
            ("nid", m.nid),
        ] {
            if check(got, &r[key], 1e-9, &format!("{name} ref {key}")) {
                compared += 1;
            }
            check(got, &fl[key], 1e-9, &format!("{name} funlib {key}"));
        }
        check(m.arand, &r["arand"], 1e-9, &format!("{name} arand"));
        check(m.voi, &r["voi_sum"], 1e-9, &format!("{name} voi"));
        let sk = &case["skimage"]["adapted_rand_error"];
        check(
            m.arand_skimage,
            &sk["error"],
            1e-9,
            &format!("{name} skimage error"),
        );
        check(
            m.arand_skimage_precision,
            &sk["precision"],
            1e-9,
            &format!("{name} skimage precision"),
        );
        check(
            m.arand_skimage_recall,
            &sk["recall"],
            1e-9,
            &format!("{name} skimage recall"),
        );
        let vi = &case["skimage"]["variation_of_information"]["ignore_labels_0"];
        check(
            m.voi_split,
            &vi["split"],
            1e-9,
            &format!("{name} skimage voi split"),
        );
        check(
            m.voi_merge,
            &vi["merge"],
            1e-9,
            &format!("{name} skimage voi merge"),
        );
        assert_eq!(m.voxels, case["exact"]["n"].as_u64().unwrap(), "{name} n");
    }
    assert!(compared >= 150, "only {compared} values compared");
}

#[test]
fn erl_cases_match_funlib_and_banis() {
    let f = fixture_json("erl_cases.json");
    let ks = [Some(5), Some(20), Some(100), None];
    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let vs: Vec<f64> = case["voxel_size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let skel = Skeletons::from_json(
            &case["skeletons"].to_string(),
            VoxelSize::new([vs[0], vs[1], vs[2]]).unwrap(),
            name,
        )
        .unwrap();
        let pred = volume(&case["pred"]["shape"], &case["pred"]["data"]);
        let ids = skel.lookup(pred.view()).unwrap();
        let want_ids: Vec<u64> = case["node_pred"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(ids, want_ids, "{name} node lookup");
        let r = erl(&skel, &ids, &ks).unwrap();
        let x = &case["ref_f64"];
        check(r.erl, &x["erl"], 1e-12, &format!("{name} erl"));
        check(r.max_erl, &x["max_erl"], 1e-12, &format!("{name} max_erl"));
        check(r.nerl, &x["nerl"], 1e-12, &format!("{name} nerl"));
        check(
            r.total_length,
            &x["total_length"],
            1e-12,
            &format!("{name} total"),
        );
        let e = &x["edge_counts"];
        assert_eq!(
            [
                r.edges.omitted,
                r.edges.split,
                r.edges.merged,
                r.edges.correct
            ],
            ["omitted", "split", "merged", "correct"].map(|k| e[k].as_u64().unwrap()),
            "{name} edges"
        );
        assert_eq!(
            r.n_mergers,
            x["n_mergers"].as_u64().unwrap(),
            "{name} n_mergers"
        );
        assert_eq!(
            r.n_non0_mergers,
            x["n_non0_mergers"].as_u64().unwrap(),
            "{name} n_non0_mergers"
        );
        assert_eq!(
            r.n_splits,
            x["n_splits"].as_u64().unwrap(),
            "{name} n_splits"
        );
        let segs: Vec<u64> = x["merging_segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(r.merging_segments, segs, "{name} merging segments");
        for ((k, nerl), key) in r.adapted_nerl.iter().zip(["5", "20", "100", "inf"]) {
            check(
                *nerl,
                &x["adapted"][key]["nerl"],
                1e-12,
                &format!("{name} adapted {k:?}"),
            );
        }
        // BANIS/funlib sum lengths in float32.
        let b = &case["funlib_banis"];
        if !case["relabelled_for_reference"].as_bool().unwrap() {
            check(r.erl, &b["erl"], 2e-5, &format!("{name} funlib erl"));
            check(r.nerl, &b["nerl"], 2e-5, &format!("{name} funlib nerl"));
            for ((_, nerl), key) in r
                .adapted_nerl
                .iter()
                .zip(["nerl_5", "nerl_20", "nerl_100", "nerl_inf"])
            {
                check(*nerl, &b[key], 2e-5, &format!("{name} banis {key}"));
            }
            assert_eq!(
                r.n_mergers,
                b["n_mergers"].as_u64().unwrap(),
                "{name} banis n_mergers"
            );
        }
        check(
            r.node_voi_split,
            &b["voi_split"],
            1e-9,
            &format!("{name} node voi split"),
        );
        check(
            r.node_voi_merge,
            &b["voi_merge"],
            1e-9,
            &format!("{name} node voi merge"),
        );
    }
}
