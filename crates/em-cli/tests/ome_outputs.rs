//! `--ome` on the commands that write volumes: `em data synth` and `em decode` write
//! OME-Zarr pyramids whose level 0 is what they write without it, and refuse outputs that
//! cannot be pyramids before any work.

mod common;

use std::path::Path;

use common::{em, ok};
use em_core::AnyArray;
use ndarray::{Array4, ArrayD};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Level shapes and voxel sizes of an OME-Zarr group as `voxel_size` reads them back.
fn level_voxel_sizes(group: &Path, levels: usize) -> Vec<[f64; 3]> {
    (0..levels)
        .map(|l| {
            em_io::voxel_size(&group.join(l.to_string()))
                .unwrap()
                .unwrap_or_else(|| panic!("level {l} of {} has no voxel size", group.display()))
        })
        .collect()
}

#[test]
fn synth_with_ome_writes_pyramids_of_the_plain_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.zarr");
    let ome = dir.path().join("ome.zarr");
    let shape = "8,128,96";
    ok(&em(&[
        "data",
        "synth",
        "--kind",
        "neurons",
        "--shape",
        shape,
        "--out",
        path(&plain),
    ]));
    ok(&em(&[
        "data",
        "synth",
        "--kind",
        "neurons",
        "--shape",
        shape,
        "--out",
        path(&ome),
        "--ome",
        "--voxel-size",
        "40,8,8",
    ]));
    for key in ["img", "seg"] {
        let level0 = em_io::read(ome.join(key).join("0")).unwrap();
        assert_eq!(level0, em_io::read(plain.join(key)).unwrap(), "{key}");
        // 40 × 8 × 8 nm: in-plane halving first, until the largest side is at most 64.
        let level1 = em_io::open(ome.join(key).join("1")).unwrap();
        assert_eq!(level1.shape(), &[8, 64, 48], "{key}");
        assert!(!ome.join(key).join("2").exists(), "{key}");
        assert_eq!(
            level_voxel_sizes(&ome.join(key), 2),
            [[40.0, 8.0, 8.0], [40.0, 16.0, 16.0]],
            "{key}"
        );
    }
    // Labels are reduced by mode: every level-1 id is an id of level 0.
    let seg0 = em_io::read(ome.join("seg/0"))
        .unwrap()
        .into_typed::<u32>()
        .unwrap();
    let seg1 = em_io::read(ome.join("seg/1"))
        .unwrap()
        .into_typed::<u32>()
        .unwrap();
    let ids0: std::collections::HashSet<u32> = seg0.iter().copied().collect();
    assert!(seg1.iter().all(|v| ids0.contains(v)));
    assert!(ome.join("skeletons.json").is_file());
}

fn affinities(dir: &Path) -> std::path::PathBuf {
    // Two slabs of 8 × 70 × 70 joined everywhere inside, cut between z 3 and 4.
    let aff =
        Array4::<f32>::from_shape_fn(
            (3, 8, 70, 70),
            |(c, z, _, _)| {
                if c == 0 && z == 3 {
                    0.0
                } else {
                    0.9
                }
            },
        );
    let file = dir.join("aff.npy");
    em_io::write(&file, &AnyArray::from(aff.into_dyn())).unwrap();
    file
}

#[test]
fn decode_with_ome_writes_a_label_pyramid_and_reports_its_levels() {
    let dir = tempfile::tempdir().unwrap();
    let aff = affinities(dir.path());
    let out = dir.path().join("seg.zarr");
    let report = ok(&em(&[
        "decode",
        "--affinities",
        path(&aff),
        "--out",
        path(&out),
        "--ome",
        "--voxel-size",
        "30,6,6",
        "--json",
    ]));
    assert_eq!(report["components"], 2);
    assert_eq!(
        report["ome"],
        serde_json::json!([[[8, 70, 70], [8, 35, 35]]]),
        "{report}"
    );
    let seg0 = em_io::read(out.join("0"))
        .unwrap()
        .into_typed::<u32>()
        .unwrap();
    let expected = ArrayD::from_shape_fn(vec![8, 70, 70], |ix| if ix[0] < 4 { 1u32 } else { 2 });
    assert_eq!(seg0, expected);
    let seg1 = em_io::read(out.join("1"))
        .unwrap()
        .into_typed::<u32>()
        .unwrap();
    assert_eq!(seg1.shape(), &[8, 35, 35]);
    assert!(seg1
        .indexed_iter()
        .all(|(ix, &v)| v == expected[[ix[0], 0, 0]]));
    assert_eq!(
        level_voxel_sizes(&out, 2),
        [[30.0, 6.0, 6.0], [30.0, 12.0, 12.0]]
    );
}

#[test]
fn ome_without_voxel_size_warns_and_records_one_nm() {
    let dir = tempfile::tempdir().unwrap();
    let aff = affinities(dir.path());
    let out = dir.path().join("seg.zarr");
    let o = em(&[
        "decode",
        "--affinities",
        path(&aff),
        "--out",
        path(&out),
        "--ome",
    ]);
    ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("no voxel size"), "{stderr}");
    assert_eq!(level_voxel_sizes(&out, 1), [[1.0, 1.0, 1.0]]);
}

#[test]
fn ome_refuses_outputs_that_are_not_zarr_and_bad_voxel_sizes_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let aff = affinities(dir.path());
    for (out, extra, message) in [
        ("seg.npy", vec![], "--ome writes OME-Zarr"),
        ("seg.tif", vec![], "--ome writes OME-Zarr"),
        ("seg.zarr", vec!["--voxel-size", "0,4,4"], "positive"),
        ("seg.zarr", vec!["--voxel-size", "4,4"], "z,y,x"),
    ] {
        let target = dir.path().join(out);
        let mut args = vec![
            "decode",
            "--affinities",
            path(&aff),
            "--out",
            path(&target),
            "--ome",
        ];
        args.extend(extra);
        let o = em(&args);
        assert!(!o.status.success(), "{out}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains(message), "{out}: {stderr}");
        assert!(!target.exists(), "{out} was written");
    }
    // --voxel-size alone means nothing without --ome.
    let o = em(&[
        "decode",
        "--affinities",
        path(&aff),
        "--out",
        path(&dir.path().join("x.zarr")),
        "--voxel-size",
        "4,4,4",
    ]);
    assert!(!o.status.success());
}
