//! `em decode --method waterz|mws` and `em tune --method waterz|mws` end to end: waterz's
//! own outputs reproduced from the files, the JSON side outputs, and bad input refused
//! before anything is written.

mod common;

use std::path::Path;

use common::{em, fixture, ok};

fn waterz_case(name: &str) -> serde_json::Value {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("waterz/manifest.json")).unwrap()).unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn waterz_outputs_histories_and_graphs_equal_waterz() {
    let dir = tempfile::tempdir().unwrap();
    let case = waterz_case("cells_highnoise_hist50");
    let aff = fixture(&format!("waterz/{}", case["affinities"].as_str().unwrap()));
    let template = dir.path().join("seg_{threshold}.npy");
    let history = dir.path().join("history.json");
    let graph = dir.path().join("graph.json");
    let thresholds: Vec<String> = case["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let v = ok(&em(&[
        "decode",
        "--method",
        "waterz",
        "--affinities",
        &aff,
        "--out",
        path(&template),
        "--thresholds",
        &thresholds.join(","),
        "--scoring",
        "hist50",
        "--storage",
        "destination",
        "--label-type",
        "u64",
        "--merge-history",
        path(&history),
        "--region-graph",
        path(&graph),
        "--json",
    ]));
    assert_eq!(v["summary"]["fragments"], case["num_fragments"]);
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&history).unwrap()).unwrap();
    let graph: serde_json::Value = serde_json::from_slice(&std::fs::read(&graph).unwrap()).unwrap();
    for (i, want) in case["results"].as_array().unwrap().iter().enumerate() {
        let t = want["threshold"].as_f64().unwrap() as f32;
        let out = dir.path().join(format!("seg_{t}.npy"));
        let got = em_io::read(&out).unwrap();
        let expected = em_io::read(fixture(&format!(
            "waterz/{}",
            want["segmentation"].as_str().unwrap()
        )))
        .unwrap();
        assert_eq!(got, expected, "threshold {t}");
        assert_eq!(history[i]["threshold"].as_f64().unwrap() as f32, t);
        assert_eq!(
            history[i]["merges"].as_array().unwrap().len(),
            want["merge_history"].as_array().unwrap().len()
        );
        for (m, w) in history[i]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["merge_history"].as_array().unwrap())
        {
            assert_eq!((&m["a"], &m["b"], &m["c"]), (&w["a"], &w["b"], &w["c"]));
        }
        assert_eq!(
            graph[i]["edges"].as_array().unwrap().len(),
            want["region_graph"].as_array().unwrap().len()
        );
    }
}

#[test]
fn waterz_block_by_block_with_the_same_fragments_equals_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let case = waterz_case("cells_lownoise_mean");
    let aff = fixture(&format!("waterz/{}", case["affinities"].as_str().unwrap()));
    let frags = fixture(&format!("waterz/{}", case["fragments"].as_str().unwrap()));
    let whole = dir.path().join("whole_{threshold}.npy");
    let blocks = dir.path().join("blocks_{threshold}.zarr");
    for (out, extra) in [(&whole, vec![]), (&blocks, vec!["--block", "4,7,5"])] {
        let mut args = vec![
            "decode",
            "--method",
            "waterz",
            "--affinities",
            &aff,
            "--fragments",
            &frags,
            "--out",
            path(out),
            "--thresholds",
            "0.3,0.6",
            "--storage",
            "destination",
            "--json",
        ];
        args.extend(extra);
        ok(&em(&args));
    }
    for t in ["0.3", "0.6"] {
        let a = em_io::read(dir.path().join(format!("whole_{t}.npy"))).unwrap();
        let b = em_io::read(dir.path().join(format!("blocks_{t}.zarr"))).unwrap();
        assert_eq!(a, b, "threshold {t}");
    }
}

#[test]
fn mws_segments_and_tune_picks_a_bias() {
    let dir = tempfile::tempdir().unwrap();
    let case = waterz_case("cells_lownoise_mean");
    let aff = fixture(&format!("waterz/{}", case["affinities"].as_str().unwrap()));
    let out = dir.path().join("mws.npy");
    let v = ok(&em(&[
        "decode",
        "--method",
        "mws",
        "--affinities",
        &aff,
        "--out",
        path(&out),
        "--offsets",
        "-1,0,0;0,-1,0;0,0,-1",
        "--attractive",
        "2",
        "--json",
    ]));
    assert!(v["summary"]["segments"].as_u64().unwrap() >= 1);
    assert!(out.exists());
    // The waterz fragments are a ground truth every decoder can be scored against.
    let gt = fixture(&format!(
        "waterz/{}",
        case["results"][2]["segmentation"].as_str().unwrap()
    ));
    for (method, values) in [("waterz", "0.1,0.5,0.9"), ("mws", "-0.2,0,0.2")] {
        let v = ok(&em(&[
            "tune",
            "--method",
            method,
            "--affinities",
            &aff,
            "--gt",
            &gt,
            "--thresholds",
            values,
            "--storage",
            "destination",
            "--offsets",
            "-1,0,0;0,-1,0;0,0,-1",
            "--attractive",
            "2",
            "--json",
        ]));
        assert_eq!(v["results"].as_array().unwrap().len(), 3, "{method}");
        assert_eq!(v["criterion"], "voi");
    }
}

#[test]
fn bad_requests_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let aff = fixture("waterz/cells_lownoise_affs.npy");
    let seg = dir.path().join("seg.npy");
    let refuse = |extra: &[&str], says: &str| {
        let mut args = vec!["decode", "--affinities", aff.as_str(), "--out", path(&seg)];
        args.extend_from_slice(extra);
        let o = em(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(err.contains(says), "{extra:?}: {err}");
        assert!(!seg.exists(), "{extra:?} wrote an output");
    };
    refuse(
        &["--method", "waterz", "--thresholds", "0.1,0.2"],
        "{threshold}",
    );
    refuse(
        &["--method", "waterz", "--scoring", "Median<RegionGraphType>"],
        "unknown scoring function",
    );
    refuse(
        &[
            "--method",
            "waterz",
            "--aff-low",
            "0.9",
            "--aff-high",
            "0.1",
        ],
        "aff_threshold_low",
    );
    refuse(&["--method", "waterz", "--thresholds", "nan"], "finite");
    refuse(
        &["--method", "waterz", "--percentile", "--thresholds", "150"],
        "percentile",
    );
    refuse(
        &[
            "--method",
            "waterz",
            "--fragments",
            &fixture("waterz/tiny_fragments.npy"),
        ],
        "shape",
    );
    refuse(
        &[
            "--method", "waterz", "--block", "4,4,4", "--dust", "10,0.5,5",
        ],
        "dust",
    );
    refuse(
        &[
            "--method",
            "mws",
            "--offsets",
            "-1,0,0;0,-1,0;0,0,-1",
            "--attractive",
            "20",
        ],
        "attractive",
    );
    refuse(&["--method", "mws", "--block", "4,4,4"], "in memory");
    // Only one channel: waterz needs three.
    let one = dir.path().join("one.npy");
    em_io::write(
        &one,
        &em_core::AnyArray::from(ndarray::ArrayD::<f32>::zeros(vec![1, 2, 3, 4])),
    )
    .unwrap();
    let o = em(&[
        "decode",
        "--method",
        "waterz",
        "--affinities",
        path(&one),
        "--out",
        path(&seg),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 channels"));
    assert!(!seg.exists());
    // Fragments must be integer labels.
    let float_fragments = dir.path().join("float_fragments.npy");
    em_io::write(
        &float_fragments,
        &em_core::AnyArray::from(ndarray::ArrayD::<f32>::zeros(vec![6, 18, 18])),
    )
    .unwrap();
    refuse(
        &[
            "--method",
            "waterz",
            "--storage",
            "destination",
            "--fragments",
            path(&float_fragments),
        ],
        "labels are integers",
    );
    // The output may not be the input.
    let o = em(&[
        "decode",
        "--method",
        "waterz",
        "--affinities",
        &aff,
        "--out",
        &aff,
    ]);
    assert!(!o.status.success());
}

#[test]
fn distance_and_contour_instances_equal_pytc() {
    let dir = tempfile::tempdir().unwrap();
    let read = |name: &str| {
        em_io::read(fixture(&format!("instances/{name}")))
            .unwrap()
            .into_typed::<f32>()
            .unwrap()
    };
    let as_u64 = |p: &Path| em_core::to_labels::<u64>(&em_io::read(p).unwrap()).unwrap();
    // PyTC's stacked prediction: foreground, contour, signed distance.
    let stacked = ndarray::stack(
        ndarray::Axis(0),
        &[
            read("spheres_foreground.npy").view(),
            read("spheres_contour.npy").view(),
            read("spheres_distance.npy").view(),
        ],
    )
    .unwrap();
    let input = dir.path().join("pred.npy");
    em_io::write(&input, &em_core::AnyArray::from(stacked)).unwrap();
    for (method, input, expected) in [
        ("contour", path(&input).to_string(), "spheres_run12.npy"),
        (
            "distance",
            fixture("instances/spheres_distance.npy"),
            "spheres_run06.npy",
        ),
    ] {
        let out = dir.path().join(format!("{method}.npy"));
        let v = ok(&em(&[
            "decode",
            "--method",
            method,
            "--affinities",
            &input,
            "--out",
            path(&out),
            "--json",
        ]));
        assert!(v["summary"]["instances"].as_u64().unwrap() > 0, "{method}");
        let want = as_u64(Path::new(&fixture(&format!("instances/{expected}"))));
        assert_eq!(as_u64(&out), want, "{method}");
    }
    // Two channels are not a distance map; four are not foreground/contour(/distance).
    let out = dir.path().join("bad.npy");
    let o = em(&[
        "decode",
        "--method",
        "distance",
        "--affinities",
        path(&input),
        "--out",
        path(&out),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("one map"));
    assert!(!out.exists());
}
