//! ERL / NERL against the shared hand case (exact fractions and funlib/BANIS values),
//! skeleton readers and their errors.

mod common;

use common::fixture_json;
use em_core::VoxelSize;
use em_metrics::{erl, Node, Skeletons};

/// The shared hand case: its own JSON layout (node, id = skeleton, index/nm positions, pred_id).
fn hand_case() -> (Skeletons, Vec<u64>) {
    let v = fixture_json("shared/e1_hand_skeleton.json");
    let mut nodes = Vec::new();
    let mut pred = Vec::new();
    for n in v["nodes"].as_array().unwrap() {
        let p = |k: &str| -> [f64; 3] {
            let a = n[k].as_array().unwrap();
            [
                a[0].as_f64().unwrap(),
                a[1].as_f64().unwrap(),
                a[2].as_f64().unwrap(),
            ]
        };
        nodes.push(Node {
            id: n["node"].as_u64().unwrap(),
            skeleton: n["id"].as_u64().unwrap(),
            position: p("index_position"),
            position_nm: p("nm_position"),
        });
        pred.push(n["pred_id"].as_u64().unwrap());
    }
    let edges: Vec<[u64; 2]> = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| [e[0].as_u64().unwrap(), e[1].as_u64().unwrap()])
        .collect();
    (Skeletons::new(nodes, &edges, "e1").unwrap(), pred)
}

#[test]
fn hand_case_exact() {
    let (s, pred) = hand_case();
    let r = erl(&s, &pred, &[Some(5), Some(20), Some(100), None]).unwrap();
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() < 1e-12 * b.abs().max(1.0),
            "{what}: {a} vs {b}"
        )
    };
    close(r.erl, 120.0 / 7.0, "erl");
    close(r.max_erl, 270.0 / 7.0, "max_erl");
    close(r.nerl, 4.0 / 9.0, "nerl");
    close(r.total_length, 140.0, "total length");
    assert_eq!(
        (
            r.edges.omitted,
            r.edges.split,
            r.edges.merged,
            r.edges.correct
        ),
        (2, 1, 3, 8)
    );
    assert_eq!(r.merging_segments, vec![9]);
    let cases = fixture_json("shared/erl_cases.json");
    let f = &cases["e1_hand"]["funlib_banis"];
    assert_eq!(r.n_mergers, f["n_mergers"].as_u64().unwrap());
    assert_eq!(r.n_non0_mergers, f["n_non0_mergers"].as_u64().unwrap());
    assert_eq!(r.n_splits, f["n_splits"].as_u64().unwrap());
    // funlib sums in f32: agreement to 1e-6 relative.
    let rel =
        |a: f64, b: f64, what: &str| assert!((a - b).abs() <= 1e-6 * b.abs(), "{what}: {a} vs {b}");
    rel(r.erl, f["erl"].as_f64().unwrap(), "funlib erl");
    rel(r.nerl, f["nerl"].as_f64().unwrap(), "funlib nerl");
    rel(
        r.node_voi_split,
        f["node_voi_split"].as_f64().unwrap(),
        "node voi split",
    );
    rel(
        r.node_voi_merge,
        f["node_voi_merge"].as_f64().unwrap(),
        "node voi merge",
    );
    for ((k, nerl), key) in r
        .adapted_nerl
        .iter()
        .zip(["nerl_5", "nerl_20", "nerl_100", "nerl_inf"])
    {
        rel(*nerl, f[key].as_f64().unwrap(), &format!("{key} ({k:?})"));
    }
}

#[test]
fn perfect_prediction_has_nerl_one() {
    let (s, _) = hand_case();
    let pred: Vec<u64> = s.nodes.iter().map(|n| n.skeleton + 100).collect();
    let r = erl(&s, &pred, &[Some(5), None]).unwrap();
    assert!((r.nerl - 1.0).abs() < 1e-12);
    assert_eq!(r.n_mergers, 0);
    assert!(r.adapted_nerl.iter().all(|(_, n)| (n - 1.0).abs() < 1e-12));
}

#[test]
fn everything_merged_scores_a_positive_zero() {
    let (s, _) = hand_case();
    let r = erl(&s, &vec![7; s.nodes.len()], &[None]).unwrap();
    // Zero, and +0.0: reports print "0", not "-0".
    assert_eq!(r.erl, 0.0);
    assert!(r.erl.is_sign_positive() && r.nerl.is_sign_positive());
}

#[test]
fn json_and_swc_readers_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let vs = VoxelSize::new([40.0, 4.0, 4.0]).unwrap();
    let json = r#"{"nodes": [{"id": 0, "skeleton": 7, "position": [1, 2, 3]},
                              {"id": 1, "skeleton": 7, "position": [2, 2, 3], "position_nm": [80, 8, 12]}],
                   "edges": [[0, 1]]}"#;
    let s = Skeletons::from_json(json, vs, "x.json").unwrap();
    assert_eq!(s.nodes[0].position_nm, [40.0, 8.0, 12.0]);
    assert_eq!(s.edges, vec![(0, 1)]);
    for (bad, needle) in [
        (
            r#"{"nodes": [{"id": 0, "skeleton": 1, "position": [0,0,0]}], "edges": [[0, 5]]}"#,
            "node 5, which does not exist",
        ),
        (
            r#"{"nodes": [{"id": 0, "skeleton": 1, "position": [0,0,0]}, {"id": 0, "skeleton": 1, "position": [1,0,0]}], "edges": []}"#,
            "node id 0 appears twice",
        ),
        (
            r#"{"nodes": [{"id": 0, "skeleton": 1, "position": [0,0,0]}, {"id": 1, "skeleton": 2, "position": [1,0,0]}], "edges": [[0, 1]]}"#,
            "joins skeletons 1 and 2",
        ),
        (
            r#"{"nodes": [{"id": 0, "skeleton": 1, "position": [0,0,0], "colour": 3}], "edges": []}"#,
            "colour",
        ),
        (
            r#"{"nodes": [{"id": 0, "skeleton": 1, "position": [0,0,0], "position_nm": [1e400, 0, 0]}], "edges": []}"#,
            "x.json",
        ),
    ] {
        let e = Skeletons::from_json(bad, vs, "x.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{e}");
    }
    // SWC: x y z in nm; a directory holds one skeleton per file.
    let swc = "# test\n1 0 12 8 80 1 -1\n2 0 16 8 80 1 1\n3 0 20 8 80 1 2\n";
    std::fs::write(dir.path().join("a.swc"), swc).unwrap();
    std::fs::write(dir.path().join("b.swc"), swc).unwrap();
    let s = Skeletons::read(dir.path(), vs).unwrap();
    assert_eq!(s.num_skeletons(), 2);
    assert_eq!(s.nodes.len(), 6);
    assert_eq!(s.nodes[0].position, [2.0, 2.0, 3.0]);
    std::fs::write(dir.path().join("bad.swc"), "1 0 12 8\n").unwrap();
    let e = Skeletons::read(dir.path().join("bad.swc"), vs)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1") && e.contains("fewer than 7 fields"),
        "{e}"
    );
    let e = Skeletons::read(dir.path().join("missing.json"), vs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.json"), "{e}");
}

#[test]
fn node_lookup_in_memory_and_chunked_and_outside() {
    use em_core::{AnyArray, InMemoryVolume};
    let vs = VoxelSize::new([1.0, 1.0, 1.0]).unwrap();
    let json = r#"{"nodes": [{"id": 0, "skeleton": 1, "position": [0, 1, 2]},
                              {"id": 1, "skeleton": 1, "position": [3, 3, 3.4]}], "edges": [[0, 1]]}"#;
    let s = Skeletons::from_json(json, vs, "s").unwrap();
    let pred =
        ndarray::Array3::<u32>::from_shape_fn((4, 4, 4), |(z, y, x)| (z * 16 + y * 4 + x) as u32);
    assert_eq!(s.lookup(pred.view()).unwrap(), vec![6, 63]);
    let vol = InMemoryVolume::new(AnyArray::from(pred.clone().into_dyn()), "pred")
        .with_chunk_shape(&[2, 2, 2])
        .unwrap();
    assert_eq!(s.lookup_volume(&vol).unwrap(), vec![6, 63]);
    let far = r#"{"nodes": [{"id": 9, "skeleton": 1, "position": [0, 7, 2]}], "edges": []}"#;
    let e = Skeletons::from_json(far, vs, "s")
        .unwrap()
        .lookup(pred.view())
        .unwrap_err()
        .to_string();
    assert!(e.contains("node 9") && e.contains("[4, 4, 4]"), "{e}");
}

#[test]
fn nan_positions_are_refused() {
    let n = |id, p: [f64; 3]| Node {
        id,
        skeleton: 1,
        position: p,
        position_nm: p,
    };
    let e = Skeletons::new(
        vec![n(1, [0.0, 0.0, 0.0]), n(2, [f64::NAN, 0.0, 1.0])],
        &[[1, 2]],
        "s.json",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("node 2") && e.contains("non-finite") && e.contains("s.json"),
        "{e}"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Random skeleton chains (1–5 skeletons of 1–12 nodes) and random predictions.
    fn case() -> impl Strategy<Value = (Skeletons, Vec<u64>)> {
        prop::collection::vec(1usize..12, 1..5).prop_flat_map(|sizes| {
            let total: usize = sizes.iter().sum();
            prop::collection::vec(0u64..5, total).prop_map(move |pred| {
                let (mut nodes, mut edges, mut id) = (Vec::new(), Vec::new(), 0u64);
                for (s, &len) in sizes.iter().enumerate() {
                    for i in 0..len {
                        let p = [s as f64 * 3.0, i as f64, (i * i) as f64 * 0.5];
                        nodes.push(Node {
                            id,
                            skeleton: s as u64 + 1,
                            position: p,
                            position_nm: p,
                        });
                        if i > 0 {
                            edges.push([id - 1, id]);
                        }
                        id += 1;
                    }
                }
                (Skeletons::new(nodes, &edges, "p").unwrap(), pred)
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn erl_invariants((s, pred) in case(), shift in 1u64..1000) {
            prop_assume!(!s.edges.is_empty());
            let ks = [Some(0), Some(1), Some(5), None];
            let r = erl(&s, &pred, &ks).unwrap();
            prop_assert!(r.erl >= 0.0 && r.nerl <= 1.0 + 1e-12);
            // Merge tolerance can only help, and k = 0 is the plain NERL.
            prop_assert!((r.adapted_nerl[0].1 - r.nerl).abs() < 1e-12);
            prop_assert!(r.adapted_nerl.windows(2).all(|w| w[1].1 >= w[0].1 - 1e-12));
            // Renaming non-zero prediction ids changes nothing.
            let renamed: Vec<u64> = pred.iter().map(|&p| if p == 0 { 0 } else { u64::MAX - p * shift }).collect();
            let r2 = erl(&s, &renamed, &ks).unwrap();
            prop_assert!((r.erl - r2.erl).abs() < 1e-9 && r.n_mergers == r2.n_mergers);
            prop_assert_eq!(r.edges, r2.edges);
            // A perfect prediction scores 1.
            let perfect: Vec<u64> = s.nodes.iter().map(|n| n.skeleton * 7).collect();
            prop_assert!((erl(&s, &perfect, &[]).unwrap().nerl - 1.0).abs() < 1e-12);
        }
    }
}
