//! `em convert`: round trips through precomputed and zarr, and the refusals that keep the
//! user's data safe.

mod common;

use std::path::Path;
use std::process::Output;

use common::{em, ok};
use em_core::AnyArray;
use ndarray::ArrayD;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn labels() -> AnyArray {
    ArrayD::from_shape_fn(vec![13, 20, 17], |ix| {
        if ix[1] < 3 {
            0u64
        } else {
            ((ix[0] / 3) * 100 + (ix[1] / 4) * 10 + ix[2] / 5) as u64 + (1 << 35)
        }
    })
    .into()
}

#[test]
fn npy_to_precomputed_to_zarr_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("seg.npy");
    em_io::write(&npy, &labels()).unwrap();
    let pre = dir.path().join("seg.precomputed");
    let o = em(&[
        "convert",
        s(&npy),
        s(&pre),
        "--encoding",
        "compressed_segmentation",
        "--chunks",
        "4,8,8",
        "--voxel-size",
        "40,4,4",
        "--json",
    ]);
    let j = ok(&o);
    assert_eq!(j["format"], "precomputed");
    assert_eq!(j["encoding"], "compressed_segmentation");
    assert_eq!(j["chunks"], serde_json::json!([4, 8, 8]));
    assert_eq!(j["voxel_size"], serde_json::json!([40.0, 4.0, 4.0]));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pre.join("info")).unwrap()).unwrap();
    assert_eq!(info["type"], "segmentation");
    assert_eq!(
        info["scales"][0]["resolution"],
        serde_json::json!([4.0, 4.0, 40.0])
    );
    assert_eq!(info["scales"][0]["encoding"], "compressed_segmentation");

    // precomputed → zarr streams; its voxel size needs no warning.
    let zarr = dir.path().join("out.zarr/seg");
    let o = em(&["convert", s(&pre), s(&zarr), "--chunks", "5,7,9"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
    assert_eq!(em_io::read(&zarr).unwrap(), labels());
    assert_eq!(em_io::open(&zarr).unwrap().chunk_shape(), &[5, 7, 9]);

    // zarr → sharded, gzip-compressed precomputed → npy.
    let sharded = dir.path().join("sharded.precomputed");
    let o = em(&["convert", s(&zarr), s(&sharded), "--sharded", "--gzip"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no voxel size in"));
    assert!(std::fs::read_dir(sharded.join("1_1_1"))
        .unwrap()
        .flatten()
        .all(|e| e.file_name().to_string_lossy().ends_with(".shard")));
    let back = dir.path().join("back.npy");
    ok(&em(&["convert", s(&sharded), s(&back)]));
    assert_eq!(em_io::read(&back).unwrap(), labels());
}

#[test]
fn refusals_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("seg.npy");
    em_io::write(&npy, &labels()).unwrap();
    let pre = dir.path().join("seg.precomputed");
    ok(&em(&["convert", s(&npy), s(&pre), "--voxel-size", "8,8,8"]));
    let before = std::fs::read(pre.join("info")).unwrap();

    // An existing output needs --overwrite; with it, the volume is replaced.
    refused(&em(&["convert", s(&npy), s(&pre)]), "--overwrite");
    // The output may not be its own input, whichever scale is named.
    refused(
        &em(&["convert", s(&pre.join("8_8_8")), s(&pre), "--overwrite"]),
        "the input",
    );
    assert_eq!(std::fs::read(pre.join("info")).unwrap(), before);
    // Flags of another output format, and encodings the data cannot have.
    let out = dir.path().join("x.npy");
    refused(
        &em(&["convert", s(&npy), s(&out), "--sharded"]),
        "precomputed output",
    );
    let img = dir.path().join("img.npy");
    em_io::write(&img, &AnyArray::zeros(em_core::DType::F32, &[4, 4, 4])).unwrap();
    let bad = dir.path().join("img.precomputed");
    refused(
        &em(&[
            "convert",
            s(&img),
            s(&bad),
            "--encoding",
            "compressed_segmentation",
        ]),
        "uint32",
    );
    // A directory that is not a precomputed volume is never replaced.
    let foreign = dir.path().join("notes.precomputed");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), b"x").unwrap();
    refused(
        &em(&["convert", s(&npy), s(&foreign), "--overwrite"]),
        "not a precomputed volume",
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["img.npy", "notes.precomputed", "seg.npy", "seg.precomputed"]
    );
    assert!(foreign.join("thesis.tex").is_file());

    let o = em(&[
        "convert",
        s(&npy),
        s(&pre),
        "--overwrite",
        "--voxel-size",
        "4,4,4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(pre.join("4_4_4").is_dir() && !pre.join("8_8_8").exists());
}

#[test]
fn skeleton_json_becomes_a_precomputed_skeleton_source() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("skeletons.json");
    // Skeleton 7: a path of three nodes; skeleton 9: one edge; node 5 is unlabelled (0).
    let doc = serde_json::json!({
        "nodes": [
            {"id": 0, "skeleton": 7, "position": [0, 0, 0]},
            {"id": 1, "skeleton": 7, "position": [1, 2, 3]},
            {"id": 2, "skeleton": 7, "position": [2, 4, 6]},
            {"id": 3, "skeleton": 9, "position": [5, 5, 5]},
            {"id": 4, "skeleton": 9, "position": [5, 6, 5]},
            {"id": 5, "skeleton": 0, "position": [1, 1, 1]}
        ],
        "edges": [[0, 1], [1, 2], [3, 4]]
    });
    std::fs::write(&json, doc.to_string()).unwrap();
    let out = dir.path().join("skel.precomputed");
    let j = ok(&em(&[
        "convert",
        s(&json),
        s(&out),
        "--voxel-size",
        "40,4,4",
        "--json",
    ]));
    assert_eq!(j["skeletons"], 2, "{j}");
    assert_eq!(j["vertices"], 5);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("info")).unwrap()).unwrap();
    assert_eq!(info["@type"], "neuroglancer_skeletons");
    let seven =
        em_io::precomputed::read_skeleton(7, &std::fs::read(out.join("7")).unwrap()).unwrap();
    assert_eq!(seven.edges.len(), 2);
    // Vertices in nm (x, y, z) at voxel centres: voxel (z 1, y 2, x 3) of 40 × 4 × 4 nm.
    assert!(
        seven.vertices_nm.contains(&[14.0, 10.0, 60.0]),
        "{:?}",
        seven.vertices_nm
    );
    assert!(
        !out.join("0").exists(),
        "unlabelled nodes are not a skeleton"
    );
    // Existing output: refused without --overwrite; volume flags refused.
    refused(
        &em(&["convert", s(&json), s(&out), "--voxel-size", "40,4,4"]),
        "--overwrite",
    );
    refused(
        &em(&["convert", s(&json), s(&dir.path().join("s.zarr"))]),
        "precomputed skeleton source",
    );
    refused(
        &em(&[
            "convert",
            s(&json),
            s(&dir.path().join("x.precomputed")),
            "--sharded",
        ]),
        "not skeletons",
    );
    assert!(!dir.path().join("x.precomputed").exists());
}
