//! The `em` binary end to end: `em info` on every format, `--json`, clear errors and exit
//! codes for bad input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn em(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_em"))
        .args(args)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../em-io/tests/fixtures")
        .join(name);
    p.to_string_lossy().into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn info_json_on_a_zarr_label_volume() {
    let v = json(&em(&["info", &fixture("v3.zarr/labels_gzip"), "--json"]));
    assert_eq!(v["format"], "zarr");
    assert_eq!(v["dtype"], "uint32");
    assert_eq!(v["shape"], serde_json::json!([5, 6, 7]));
    assert_eq!(v["chunks"], serde_json::json!([2, 4, 4]));
    assert_eq!(v["bytes"], 5 * 6 * 7 * 4);
    // The fixture pattern is (17z + 3y + x) mod 251 over 5×6×7.
    assert_eq!(v["min"], 0.0);
    assert_eq!(v["max"], 4.0 * 17.0 + 5.0 * 3.0 + 6.0);
    let mut distinct = std::collections::BTreeSet::new();
    for z in 0..5 {
        for y in 0..6 {
            for x in 0..7 {
                let b = (17 * z + 3 * y + x) % 251;
                if b != 0 {
                    distinct.insert(b);
                }
            }
        }
    }
    assert_eq!(v["label_count"], distinct.len());
    assert_eq!(v["zero_count"], 1);
}

#[test]
fn info_on_float_tiff_and_npy() {
    let v = json(&em(&["info", &fixture("tiff_float32.tif"), "--json"]));
    assert_eq!(
        (v["format"].as_str(), v["dtype"].as_str()),
        (Some("tiff"), Some("float32"))
    );
    assert!(v["label_count"].is_null());
    assert_eq!(v["min"], -3.0);
    let v = json(&em(&["info", &fixture("npy_affinities_c3.npy"), "--json"]));
    assert_eq!(v["shape"], serde_json::json!([3, 4, 5, 6]));
}

#[test]
fn info_human_output_names_the_axes() {
    let out = em(&["info", &fixture("v2.zarr/labels_blosc")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5 × 6 × 7 (Z, Y, X)"), "{text}");
    assert!(text.contains("zarr v2 array"), "{text}");
    assert!(text.contains("uint64"), "{text}");
    assert!(text.contains("distinct non-zero ids"), "{text}");
}

#[cfg(feature = "hdf5")]
#[test]
fn info_on_hdf5() {
    let v = json(&em(&[
        "info",
        &fixture("pytc.h5/volumes/labels/neuron_ids"),
        "--json",
    ]));
    assert_eq!(
        (v["format"].as_str(), v["dtype"].as_str()),
        (Some("hdf5"), Some("uint64"))
    );
}

#[test]
fn bad_input_is_a_clear_error_with_status_1() {
    let out = em(&["info", &fixture("v3.zarr/nope")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ")
            && err.contains("\"nope\" not found")
            && err.contains("raw_zstd"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = em(&["info", "volume.mrc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown volume format"));
    let out = em(&["info", &fixture("bad_rgb.tif")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // The reason is said once, though the library error also carries it as its source.
    let out = em(&["info", "/nonexistent/volume.npy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn plan_prints_the_probe_and_a_configs_plan() {
    let out = em(&["plan", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["hardware"]["cpus"].as_u64().unwrap() >= 1);
    let out = em(&["plan", "--config", "lucchi_cpu", "--all", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let patch = v["plan"]["patch"]["value"].as_array().unwrap();
    assert!(patch.iter().all(|s| s.as_u64().unwrap() % 16 == 0));
    assert!(v["plan"]["step_bytes"].as_u64() <= v["plan"]["budget_bytes"].as_u64());
    let out = em(&["plan", "--config", "no_such_preset"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn help_lists_the_whole_surface() {
    let out = em(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "info",
        "decode",
        "evaluate",
        "evaluate-skeletons",
        "tune",
        "augment",
        "model",
        "train",
        "infer",
        "plan",
        "data",
        "slurm",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from help");
    }
}

fn decode_fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../em-decode/tests/fixtures")
        .join(name);
    p.to_string_lossy().into_owned()
}

#[test]
fn decode_reproduces_banis_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    for (storage, file) in [
        ("source", "c1_32_aff_fwd.npy"),
        ("destination", "c1_32_aff_bwd.npy"),
    ] {
        let out = dir.path().join(format!("{storage}.zarr/seg"));
        let o = em(&[
            "decode",
            "--affinities",
            &decode_fixture(file),
            "--out",
            out.to_str().unwrap(),
            "--storage",
            storage,
            "--min-size",
            "500",
            "--json",
        ]);
        let v = json(&o);
        assert_eq!(v["components"], 26);
        assert_eq!(v["voxels"], 32 * 32 * 32);
        assert_eq!(v["labelled_voxels"], 32 * 32 * 32 - 5350);
        assert!(v["seconds"].as_f64().unwrap() >= 0.0);
        let got = em_io::read(&out).unwrap();
        let want = em_io::read(decode_fixture("c1_32_seg_thr0.5_min500.npy")).unwrap();
        assert_eq!(got, want, "{storage}");
    }
    // Human output, threshold 0.8, no removal.
    let out = dir.path().join("seg.npy");
    let o = em(&[
        "decode",
        "--affinities",
        &decode_fixture("c1_32_aff_fwd.npy"),
        "--out",
        out.to_str().unwrap(),
        "--threshold",
        "0.8",
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("36 components"));
}

#[test]
fn decode_bad_input_and_unbuilt_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seg.npy");
    // A 3-D volume is not affinities.
    let o = em(&[
        "decode",
        "--affinities",
        &decode_fixture("c1_32_seg_thr0.5.npy"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("c1_32_seg_thr0.5.npy") && err.contains("uint32"),
        "{err}"
    );
    assert!(!out.exists());
    let o = em(&[
        "decode",
        "--affinities",
        &decode_fixture("c1_32_aff_fwd.npy"),
        "--out",
        out.to_str().unwrap(),
        "--channels",
        "0,7",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("channel 7"));
    let o = em(&[
        "decode",
        "--affinities",
        "a.npy",
        "--out",
        "b.npy",
        "--storage",
        "sideways",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("allowed"));
    let o = em(&[
        "decode",
        "--affinities",
        &decode_fixture("c1_32_aff_fwd.npy"),
        "--out",
        out.to_str().unwrap(),
        "--block",
        "64,64",
    ]);
    assert_eq!(o.status.code(), Some(2), "clap refuses two sides");
    let o = em(&[
        "decode",
        "--affinities",
        &decode_fixture("c1_32_aff_fwd.npy"),
        "--out",
        out.to_str().unwrap(),
        "--block",
        "8,8,8",
        "--small-mode",
        "background_2d",
        "--min-size",
        "10",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs the whole volume"));
    assert!(!out.exists());
}

#[test]
fn decode_block_by_block_matches_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let want = em_io::read(decode_fixture("c1_32_seg_thr0.5_min500.npy")).unwrap();
    for (i, out) in ["seg.zarr/labels", "seg.npy", "seg.tif"].iter().enumerate() {
        let out = dir.path().join(out);
        let block = ["8,8,8", "5,7,32", "32,3,4"][i];
        let o = em(&[
            "decode",
            "--affinities",
            &decode_fixture("c1_32_aff_fwd.npy"),
            "--out",
            out.to_str().unwrap(),
            "--min-size",
            "500",
            "--block",
            block,
            "--json",
        ]);
        let v = json(&o);
        assert_eq!(v["mode"], "blockwise");
        assert_eq!(v["components"], 26);
        assert_eq!(v["labelled_voxels"], 32 * 32 * 32 - 5350);
        assert!(v["blocks"].as_u64().unwrap() > 1);
        assert!(v["removed"].as_u64().unwrap() > 0);
        assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
        assert_eq!(em_io::read(&out).unwrap(), want, "{block}");
    }
    // Upscaled u64 output.
    let out = dir.path().join("up.zarr");
    let o = em(&[
        "decode",
        "--affinities",
        &decode_fixture("c1_32_aff_fwd.npy"),
        "--out",
        out.to_str().unwrap(),
        "--min-size",
        "500",
        "--block",
        "16,16,16",
        "--scale",
        "1,2,2",
        "--label-type",
        "u64",
        "--json",
    ]);
    assert_eq!(json(&o)["components"], 26);
    let got = em_io::read(&out).unwrap();
    assert_eq!(got.shape(), &[32, 64, 64]);
    let got = got.into_typed::<u64>().unwrap();
    let want = want.into_typed::<u32>().unwrap();
    assert_eq!(got[[5, 9, 17]], u64::from(want[[5, 4, 8]]));
    assert_eq!(got[[31, 63, 62]], u64::from(want[[31, 31, 31]]));
}

fn metrics_fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../em-metrics/tests/fixtures/shared")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn evaluate_prints_funlib_numbers() {
    let o = em(&[
        "evaluate",
        "--gt",
        &metrics_fixture("m1_funlib_1x1x11_gt.npy"),
        "--pred",
        &metrics_fixture("m1_funlib_1x1x11_pred.npy"),
        "--json",
    ]);
    let v = json(&o);
    assert!((v["voi_split"].as_f64().unwrap() - 0.6140806820148608).abs() < 1e-12);
    assert!((v["arand"].as_f64().unwrap() - 0.4).abs() < 1e-12);
    for k in [
        "voi_merge",
        "rand_split",
        "rand_merge",
        "nvi_split",
        "nid",
        "iou",
        "dice",
        "instance_f1",
        "seconds",
    ] {
        assert!(v[k].is_number(), "{k} missing");
    }
    // Human output and bad input.
    let o = em(&[
        "evaluate",
        "--gt",
        &metrics_fixture("m1_funlib_1x1x11_gt.npy"),
        "--pred",
        &metrics_fixture("m1_funlib_1x1x11_pred.npy"),
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("VOI split 0.6141"));
    let o = em(&[
        "evaluate",
        "--gt",
        &metrics_fixture("m1_funlib_1x1x11_gt.npy"),
        "--pred",
        &decode_fixture("c1_32_seg_thr0.5.npy"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("shape"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn evaluate_skeletons_and_tune() {
    let dir = tempfile::tempdir().unwrap();
    // Two straight skeletons through the 32³ BANIS fixture volume.
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for (s, &(y, x)) in [(5u64, 5u64), (20, 25)].iter().enumerate() {
        for z in 0..32u64 {
            let id = s as u64 * 100 + z;
            nodes.push(
                serde_json::json!({"id": id, "skeleton": s as u64 + 1, "position": [z, y, x]}),
            );
            if z > 0 {
                edges.push(serde_json::json!([id - 1, id]));
            }
        }
    }
    let skel = dir.path().join("skel.json");
    std::fs::write(
        &skel,
        serde_json::json!({"nodes": nodes, "edges": edges}).to_string(),
    )
    .unwrap();
    let o = em(&[
        "evaluate-skeletons",
        "--skeletons",
        skel.to_str().unwrap(),
        "--pred",
        &decode_fixture("c1_32_seg_thr0.5.npy"),
        "--voxel-size",
        "40,4,4",
        "--json",
    ]);
    let v = json(&o);
    assert!((v["total_length"].as_f64().unwrap() - 2.0 * 31.0 * 40.0).abs() < 1e-9);
    let nerl = v["nerl"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&nerl));
    for k in [
        "erl",
        "max_erl",
        "nerl_5",
        "nerl_20",
        "nerl_100",
        "nerl_inf",
        "n_mergers",
        "n_splits",
        "node_voi_split",
    ] {
        assert!(v.get(k).is_some(), "{k} missing");
    }
    // Tune over three thresholds: one row each, the best is the highest NERL.
    let o = em(&[
        "tune",
        "--affinities",
        &decode_fixture("c1_32_aff_fwd.npy"),
        "--skeletons",
        skel.to_str().unwrap(),
        "--gt",
        &decode_fixture("c1_32_seg_thr0.5.npy"),
        "--thresholds",
        "0.3:0.7:0.2",
        "--json",
    ]);
    let v = json(&o);
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let best = rows
        .iter()
        .map(|r| r["nerl"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(v["best"]["nerl"].as_f64().unwrap(), best);
    // At 0.5 the decode equals the ground truth used here: VOI 0.
    assert!(rows[1]["voi"].as_f64().unwrap().abs() < 1e-12);
    let o = em(&["tune", "--affinities", &decode_fixture("c1_32_aff_fwd.npy")]);
    assert_eq!(o.status.code(), Some(1));
    // A node outside the volume is named.
    std::fs::write(
        &skel,
        r#"{"nodes": [{"id": 4, "skeleton": 1, "position": [40, 0, 0]}], "edges": []}"#,
    )
    .unwrap();
    let o = em(&[
        "evaluate-skeletons",
        "--skeletons",
        skel.to_str().unwrap(),
        "--pred",
        &decode_fixture("c1_32_seg_thr0.5.npy"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("node 4"));
}

fn mednext_fixture() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../em-models/tests/fixtures/mednext_s_k3_32.safetensors")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn model_summary_forward_and_import() {
    let o = em(&[
        "model", "summary", "--size", "S", "--kernel", "3", "--in", "1", "--out", "3", "--json",
    ]);
    let v = json(&o);
    assert_eq!(v["parameters"], 5_550_947);
    // 16 bytes per parameter (weights, gradients, two AdamW moments) plus activations.
    let m = &v["training_memory"];
    assert_eq!(m["parameter_bytes"], 16 * 5_550_947u64);
    assert_eq!(m["patch_voxels"], 128u64 * 128 * 128);
    let per_voxel = m["activation_bytes_per_voxel"].as_f64().unwrap();
    assert!((5_000.0..20_000.0).contains(&per_voxel), "{per_voxel}");
    let o = em(&[
        "model",
        "summary",
        "--size",
        "B",
        "--kernel",
        "3",
        "--out",
        "3",
        "--deep-supervision",
        "--variant",
        "monai",
        "--json",
    ]);
    assert_eq!(json(&o)["parameters"], 10_513_775);
    let o = em(&["model", "summary", "--size", "XL"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("S, B, M, L"));
    // Import: MONAI safetensors in, canonical safetensors out (the fixture's extra test
    // tensors need --partial); forward with the converted weights.
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("s.safetensors");
    let o = em(&[
        "model",
        "import",
        "--from",
        &mednext_fixture(),
        "--out",
        converted.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "strict import refuses the extra tensors"
    );
    assert!(!converted.exists());
    let o = em(&[
        "model",
        "import",
        "--from",
        &mednext_fixture(),
        "--out",
        converted.to_str().unwrap(),
        "--partial",
    ]);
    let v = json(&o);
    assert_eq!(v["applied"].as_u64().unwrap(), 228);
    let input = dir.path().join("x.npy");
    let x = ndarray::Array4::<f32>::from_shape_fn((1, 16, 16, 16), |(_, z, y, x)| {
        ((z * 7 + y * 3 + x) % 5) as f32 - 2.0
    });
    em_io::write(&input, &em_core::AnyArray::from(x.into_dyn())).unwrap();
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    for (w, out) in [
        (mednext_fixture(), &a),
        (converted.to_string_lossy().into_owned(), &b),
    ] {
        let o = em(&[
            "model",
            "forward",
            "--weights",
            &w,
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(json(&o)["shape"], serde_json::json!([1, 3, 16, 16, 16]));
    }
    assert_eq!(
        em_io::read(&a).unwrap(),
        em_io::read(&b).unwrap(),
        "converted weights give the same output"
    );
}

#[test]
fn augment_writes_one_montage_per_transform() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("light");
    let o = em(&[
        "augment",
        "--preset",
        "light",
        "--out-dir",
        out.to_str().unwrap(),
        "--seed",
        "3",
        "--crop",
        "8,48,48",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // light: three flips, rot90, intensity, then the whole pipeline.
    assert_eq!(
        names,
        [
            "01_flip.png",
            "02_flip.png",
            "03_flip.png",
            "04_rot90.png",
            "05_intensity.png",
            "pipeline.png"
        ]
    );
    let bytes = std::fs::read(out.join("04_rot90.png")).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");

    // A user volume: uint8 (Z, Y, X) with labels.
    let img = dir.path().join("img.npy");
    let lab = dir.path().join("lab.npy");
    let a =
        ndarray::Array3::<u8>::from_shape_fn((6, 48, 48), |(z, y, x)| (z * 7 + y * 3 + x) as u8);
    em_io::write(&img, &em_core::AnyArray::from(a.into_dyn())).unwrap();
    let l =
        ndarray::Array3::<u32>::from_shape_fn((6, 48, 48), |(_, y, x)| (y / 8 * 4 + x / 8) as u32);
    em_io::write(&lab, &em_core::AnyArray::from(l.into_dyn())).unwrap();
    let out2 = dir.path().join("em_neuron");
    let o = em(&[
        "augment",
        "--preset",
        "em_neuron",
        "--input",
        img.to_str().unwrap(),
        "--labels",
        lab.to_str().unwrap(),
        "--out-dir",
        out2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out2.join("pipeline.png").exists());

    // Errors: unknown preset (names the known ones), a preset that does not fit the volume.
    let o = em(&[
        "augment",
        "--preset",
        "realistik",
        "--out-dir",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("realistic"));
    let o = em(&[
        "augment",
        "--preset",
        "realistic",
        "--input",
        img.to_str().unwrap(),
        "--crop",
        "6,30,30",
        "--out-dir",
        dir.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("displacement 16") && err.contains("30 × 30"),
        "{err}"
    );
    assert!(
        !dir.path().join("nope").exists(),
        "nothing written for a failed check"
    );
}

#[test]
fn train_writes_a_log_and_weights_and_refuses_bad_configs_early() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(
        &cfg,
        r#"
steps = 3
batch_size = 1
workers = 1
[model]
arch = "mednext_custom"
in_channels = 1
out_channels = 1
width = 4
ratios = [1, 1, 1, 1, 1, 1, 1, 1, 1]
blocks = [1, 1, 1, 1, 1, 1, 1, 1, 1]
[data]
patch = { patch = [16, 16, 16], epoch_len = 8 }
[[data.sources]]
source = { kind = "synthetic", synth = "mito", shape = [16, 48, 48] }
[targets]
kind = "foreground"
"#,
    )
    .unwrap();
    let out = dir.path().join("run");
    let o = em(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        "optimizer.lr=2e-3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["steps"], 3);
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    assert!(log.contains("\"lr\""));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().next(),
        Some("step,loss,lr,voxels_per_s,elapsed_s")
    );
    assert_eq!(csv.lines().count(), 4);
    assert!(out.join("checkpoints/step-00000003/state.json").is_file());
    assert_eq!(&std::fs::read(out.join("loss.png")).unwrap()[1..4], b"PNG");
    assert!(std::fs::read_to_string(out.join("config.toml"))
        .unwrap()
        .contains("lr = 0.002"));
    // The weights load back by MONAI names (the architecture is read off them).
    let x = dir.path().join("x.npy");
    em_io::write(
        &x,
        &em_core::AnyArray::from(ndarray::Array4::<f32>::zeros((1, 16, 16, 16)).into_dyn()),
    )
    .unwrap();
    let y = dir.path().join("y.npy");
    let o = em(&[
        "model",
        "forward",
        "--weights",
        out.join("model.safetensors").to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--out",
        y.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // An unknown key and an unwritable output directory fail before training.
    let o = em(&["train", cfg.to_str().unwrap(), "--set", "optimizer.lrate=1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lrate"));
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let o = em(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        blocker.join("run").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("creating"));
}

#[test]
fn sigterm_checkpoints_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_train_config(dir.path(), 100_000, true);
    let out = dir.path().join("run");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_em"))
        .args([
            "train",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while common::steps_logged(&out).len() < 3 {
        assert!(t0.elapsed().as_secs() < 120, "no training steps logged");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["stopped"], true, "{v}");
    let stopped = v["step"].as_u64().unwrap();
    assert!((3..100_000).contains(&stopped));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let ckpt = out.join(format!("checkpoints/step-{stopped:08}"));
    assert!(ckpt.join("state.json").is_file(), "{}", ckpt.display());
    assert!(
        !out.join("model.safetensors").exists(),
        "a stopped run writes no final model"
    );
    // Resume and finish two steps later.
    let o = em(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resume",
        &format!("steps={}", stopped + 2),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["steps"], stopped + 2);
    assert_eq!(
        common::steps_logged(&out),
        (1..=stopped + 2).collect::<Vec<_>>()
    );
    let csv = std::fs::read_to_string(out.join("validation.csv")).unwrap();
    assert!(csv.starts_with("step,dice,iou,seconds"), "{csv}");
    assert_eq!(
        &std::fs::read(out.join("validation.png")).unwrap()[1..4],
        b"PNG"
    );
    // A checkpoint of another model is refused before training.
    let o = em(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resume",
        "--set",
        "model.width=8",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("another model"));

    // Inference with the trained model: zarr streamed, TIFF in memory, a 0/1 mask.
    let img = dir.path().join("img.npy");
    let image = ndarray::Array3::<u8>::from_shape_fn((20, 40, 36), |(z, y, x)| {
        ((z * 7 + y * 3 + x) % 251) as u8
    });
    em_io::write(&img, &em_core::AnyArray::from(image.into_dyn())).unwrap();
    let pred = dir.path().join("pred.zarr");
    let mask = dir.path().join("mask.npy");
    let o = em(&[
        "infer",
        "--run",
        out.to_str().unwrap(),
        "--input",
        img.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
        "--decode",
        mask.to_str().unwrap(),
        "--tta",
        "flip",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["shape"], serde_json::json!([1, 20, 40, 36]));
    let p = em_io::read(&pred).unwrap().into_typed::<f32>().unwrap();
    assert_eq!(p.shape(), &[1, 20, 40, 36]);
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
    let m = em_io::read(&mask).unwrap().into_typed::<u8>().unwrap();
    let expect = p
        .index_axis(ndarray::Axis(0), 0)
        .mapv(|v| u8::from(v > 0.5));
    assert_eq!(m, expect.into_dyn());
    let tif = dir.path().join("pred.tif");
    let o = em(&[
        "infer",
        "--run",
        out.to_str().unwrap(),
        "--input",
        img.to_str().unwrap(),
        "--out",
        tif.to_str().unwrap(),
        "--tta",
        "flip",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = em_io::read(&tif).unwrap().into_typed::<f32>().unwrap();
    assert_eq!(t.shape(), &[20, 40, 36]);
    assert!(t.iter().zip(p.iter()).all(|(a, b)| (a - b).abs() < 1e-6));
    // --ome: the same prediction and mask as level 0 of OME-Zarr pyramids.
    let (pred_ome, seg_ome) = (
        dir.path().join("pred_ome.zarr"),
        dir.path().join("seg_ome.zarr"),
    );
    let o = em(&[
        "infer",
        "--run",
        out.to_str().unwrap(),
        "--input",
        img.to_str().unwrap(),
        "--out",
        pred_ome.to_str().unwrap(),
        "--decode",
        seg_ome.to_str().unwrap(),
        "--tta",
        "flip",
        "--ome",
        "--voxel-size",
        "40,8,8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = json(&o);
    assert_eq!(
        report["ome"][0]["levels"][0]["shape"],
        serde_json::json!([1, 20, 40, 36])
    );
    assert_eq!(report["ome"][1]["kind"], "labels", "{report}");
    let p0 = em_io::read(pred_ome.join("0"))
        .unwrap()
        .into_typed::<f32>()
        .unwrap();
    assert!(p0.iter().zip(p.iter()).all(|(a, b)| (a - b).abs() < 1e-6));
    assert_eq!(
        em_io::read(seg_ome.join("0")).unwrap(),
        em_io::read(&mask).unwrap()
    );
    assert_eq!(
        em_io::voxel_size(&pred_ome).unwrap(),
        Some([40.0, 8.0, 8.0])
    );
    // A non-zarr output is refused before the model runs.
    let o = em(&[
        "infer",
        "--run",
        out.to_str().unwrap(),
        "--input",
        img.to_str().unwrap(),
        "--out",
        dir.path().join("ome.npy").to_str().unwrap(),
        "--ome",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--ome writes OME-Zarr"));
    assert!(!dir.path().join("ome.npy").exists());
    // The newest checkpoint holds the same weights as model.safetensors.
    let npy = dir.path().join("pred.npy");
    let o = em(&[
        "infer",
        "--config",
        out.join("config.toml").to_str().unwrap(),
        "--checkpoint",
        out.join("checkpoints").to_str().unwrap(),
        "--input",
        img.to_str().unwrap(),
        "--out",
        npy.to_str().unwrap(),
        "--tta",
        "flip",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = em_io::read(&npy).unwrap().into_typed::<f32>().unwrap();
    assert!(c.iter().zip(p.iter()).all(|(a, b)| (a - b).abs() < 1e-6));
    // A two-channel input for a one-channel model, and weights that are not there.
    let two = dir.path().join("two.npy");
    em_io::write(
        &two,
        &em_core::AnyArray::from(ndarray::Array4::<f32>::zeros((2, 16, 16, 16)).into_dyn()),
    )
    .unwrap();
    let o = em(&[
        "infer",
        "--run",
        out.to_str().unwrap(),
        "--input",
        two.to_str().unwrap(),
        "--out",
        dir.path().join("p2.zarr").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 channel"));
    assert!(!dir.path().join("p2.zarr").exists());
    let o = em(&[
        "infer",
        "--config",
        out.join("config.toml").to_str().unwrap(),
        "--weights",
        dir.path().join("none.safetensors").to_str().unwrap(),
        "--input",
        img.to_str().unwrap(),
        "--out",
        dir.path().join("p3.zarr").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("none.safetensors"));
}

#[test]
fn a_device_this_build_or_machine_lacks_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_train_config(dir.path(), 2, false);
    let out = dir.path().join("run");
    let help = em(&["train", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--device <DEVICE>"));
    for (device, expect) in [
        ("tpu", "auto, cpu, cuda, cuda:N"),
        // Without the `cuda` feature the build says how to get it; with it, a machine
        // without a GPU says what is missing.
        ("cuda", "cuda"),
    ] {
        let o = em(&[
            "train",
            cfg.to_str().unwrap(),
            "--device",
            device,
            "--out",
            out.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(expect),
            "{device}: {err}"
        );
        assert!(!out.exists(), "{device}: nothing was written");
    }
    if !cfg!(feature = "cuda") {
        let o = em(&[
            "train",
            cfg.to_str().unwrap(),
            "--device",
            "cuda",
            "--out",
            "x",
        ]);
        assert!(String::from_utf8_lossy(&o.stderr).contains("--features cuda"));
    }
    // Mixed precision on the CPU is refused with the reason.
    let o = em(&[
        "train",
        cfg.to_str().unwrap(),
        "--device",
        "cpu",
        "--set",
        "precision=\"f16\"",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("runs on a GPU device"),
        "{err}"
    );
}
