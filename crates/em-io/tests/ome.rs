//! OME-Zarr pyramids: level shapes and transforms, image means and label modes against a
//! brute-force reference, metadata read back, in-place conversion, atomicity and refusals,
//! and (with Python) what ome-zarr-py and zarr-python read of them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use em_core::{AnyArray, ChunkedVolume, CoreError, DType, InMemoryVolume, NoProgress, Roi};
use em_io::ome::{
    build_pyramid, check_pyramid_output, make_ome_in_place, write_pyramid, PyramidKind,
    PyramidOptions, PyramidSummary, VoxelSizeSource,
};
use em_io::{Existing, IoError, VolumePath, ZarrOptions, ZarrVersion};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use serde_json::Value;

use common::{listing, python_has, run_python_check};

// ---------------------------------------------------------------------------------------
// Reference downsampling, written for clarity: one output voxel at a time.

/// The factor of the next level at voxel size `v`: in-plane while z ≥ 2 × in-plane.
fn expected_step(v: [f64; 3]) -> [usize; 3] {
    if v[0] >= 2.0 * v[1].max(v[2]) {
        [1, 2, 2]
    } else {
        [2, 2, 2]
    }
}

/// The windows of one reduction step over `[c, z, y, x]`, as (output index, input values).
fn windows<T: Copy>(a: &ArrayD<T>, f: [usize; 3]) -> ArrayD<Vec<T>> {
    let s = a.shape();
    let (c, z, y, x) = (s[0], s[1], s[2], s[3]);
    let out = [c, z.div_ceil(f[0]), y.div_ceil(f[1]), x.div_ceil(f[2])];
    ArrayD::from_shape_fn(IxDyn(&out), |ix| {
        let mut v = Vec::new();
        for iz in ix[1] * f[0]..((ix[1] + 1) * f[0]).min(z) {
            for iy in ix[2] * f[1]..((ix[2] + 1) * f[1]).min(y) {
                for ixx in ix[3] * f[2]..((ix[3] + 1) * f[2]).min(x) {
                    v.push(a[[ix[0], iz, iy, ixx]]);
                }
            }
        }
        v
    })
}

fn ref_mean(a: &ArrayD<f64>, f: [usize; 3]) -> ArrayD<f64> {
    windows(a, f).mapv(|w| w.iter().sum::<f64>() / w.len() as f64)
}

fn ref_mode(a: &ArrayD<i128>, f: [usize; 3]) -> ArrayD<i128> {
    windows(a, f).mapv(|w| {
        let mut counts: BTreeMap<i128, usize> = BTreeMap::new();
        for v in w {
            *counts.entry(v).or_default() += 1;
        }
        // Ascending ids; only a strictly larger count replaces: ties keep the smaller id.
        let mut best = (0, 0);
        for (id, n) in counts {
            if n > best.1 {
                best = (id, n);
            }
        }
        best.0
    })
}

fn as4<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.ndim() == 3 {
        let s = a.shape().to_vec();
        a.into_shape_with_order(IxDyn(&[1, s[0], s[1], s[2]]))
            .unwrap()
    } else {
        a
    }
}

fn back<T: Clone>(a: ArrayD<T>, ndim: usize) -> ArrayD<T> {
    if ndim == 3 {
        let s = a.shape()[1..].to_vec();
        a.into_shape_with_order(IxDyn(&s)).unwrap()
    } else {
        a
    }
}

/// Level 0 and each level after it by the reference, for an integer or float image
/// (`labels` false: means rounded half away from zero for integers) or labels.
fn reference_levels(level0: &AnyArray, voxel: [f64; 3], n: usize, labels: bool) -> Vec<AnyArray> {
    let ndim = level0.ndim();
    let mut out = vec![level0.clone()];
    let mut v = voxel;
    for _ in 1..n {
        let f = expected_step(v);
        v = [0, 1, 2].map(|i| v[i] * f[i] as f64);
        let prev = out.last().unwrap();
        let next: AnyArray = match prev {
            AnyArray::U8(a) if !labels => back(
                ref_mean(&as4(a.mapv(f64::from)), f).mapv(|m| m.round() as u8),
                ndim,
            )
            .into(),
            AnyArray::U16(a) if !labels => back(
                ref_mean(&as4(a.mapv(f64::from)), f).mapv(|m| m.round() as u16),
                ndim,
            )
            .into(),
            AnyArray::I16(a) if !labels => back(
                ref_mean(&as4(a.mapv(f64::from)), f).mapv(|m| m.round() as i16),
                ndim,
            )
            .into(),
            AnyArray::F32(a) if !labels => back(
                ref_mean(&as4(a.mapv(f64::from)), f).mapv(|m| m as f32),
                ndim,
            )
            .into(),
            AnyArray::U8(a) => back(
                ref_mode(&as4(a.mapv(i128::from)), f).mapv(|m| m as u8),
                ndim,
            )
            .into(),
            AnyArray::U32(a) => back(
                ref_mode(&as4(a.mapv(i128::from)), f).mapv(|m| m as u32),
                ndim,
            )
            .into(),
            AnyArray::U64(a) => back(
                ref_mode(&as4(a.mapv(i128::from)), f).mapv(|m| m as u64),
                ndim,
            )
            .into(),
            AnyArray::I64(a) => back(
                ref_mode(&as4(a.mapv(i128::from)), f).mapv(|m| m as i64),
                ndim,
            )
            .into(),
            other => panic!("no reference for {:?} (labels {labels})", other.dtype()),
        };
        out.push(next);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// A deterministic EM-like image: smooth stripes plus hashed noise.
fn image_u8(shape: &[usize]) -> ArrayD<u8> {
    ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        let k: usize = (0..shape.len())
            .map(|a| ix[a] * [7919, 104_729, 1_299_709, 15_485_863][a])
            .sum();
        ((k ^ (k >> 7)) % 256) as u8
    })
}

/// Labels with few ids, so that windows often tie.
fn labels_u32(shape: &[usize], ids: u32) -> ArrayD<u32> {
    ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        let k: usize = (0..shape.len()).map(|a| ix[a] * [31, 17, 7, 3][a]).sum();
        ((k * 2_654_435_761) >> 5) as u32 % ids
    })
}

fn volume(data: impl Into<AnyArray>) -> InMemoryVolume {
    let data: AnyArray = data.into();
    let n = data.ndim();
    // Small source chunks, unrelated to the pyramid's: reads straddle them.
    let chunks: Vec<u64> = data
        .shape()
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            if i + 3 >= n {
                (s as u64).clamp(1, 7)
            } else {
                (s as u64).max(1)
            }
        })
        .collect();
    InMemoryVolume::new(data, "test volume")
        .with_chunk_shape(&chunks)
        .unwrap()
}

fn options(levels: usize, voxel: [f64; 3], version: ZarrVersion) -> PyramidOptions {
    PyramidOptions {
        levels: Some(levels),
        voxel_size: Some(voxel),
        zarr: ZarrOptions {
            // Several blocks per level, so that the blockwise path is exercised.
            chunk_shape: Some(vec![8, 16, 16]),
            version: Some(version),
            ..Default::default()
        },
        threads: Some(2),
        ..Default::default()
    }
}

fn build(
    data: impl Into<AnyArray>,
    out: &Path,
    opts: &PyramidOptions,
) -> em_io::Result<PyramidSummary> {
    let v = volume(data);
    build_pyramid(&v, &VolumePath::parse(out).unwrap(), opts, &NoProgress)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The OME fields of a group, 0.4 or 0.5.
fn ome(group: &Path) -> Value {
    let v3 = group.join("zarr.json");
    if v3.is_file() {
        let doc = json(&v3);
        assert_eq!(doc["node_type"], "group");
        assert_eq!(doc["attributes"]["ome"]["version"], "0.5");
        doc["attributes"]["ome"].clone()
    } else {
        assert!(group.join(".zgroup").is_file());
        json(&group.join(".zattrs"))
    }
}

fn transform(ms: &Value, level: usize, kind: &str) -> Vec<f64> {
    let t = ms["datasets"][level]["coordinateTransformations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in level {level}"));
    t[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn read(path: PathBuf) -> AnyArray {
    em_io::read(path).unwrap()
}

// ---------------------------------------------------------------------------------------
// Tests.

#[test]
fn anisotropic_image_pyramid_has_the_planned_levels_transforms_and_means() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img.zarr");
    let data = image_u8(&[17, 50, 61]);
    let s = build(
        data.clone(),
        &out,
        &options(5, [40.0, 4.0, 4.0], ZarrVersion::V3),
    )
    .unwrap();
    assert_eq!(
        (s.kind, s.dtype, s.zarr_version),
        (PyramidKind::Image, DType::U8, 3)
    );
    assert_eq!(
        (s.ome_version, s.voxel_size_source),
        ("0.5", VoxelSizeSource::Given)
    );

    let shapes: Vec<Vec<u64>> = s.levels.iter().map(|l| l.shape.clone()).collect();
    let want: Vec<Vec<u64>> = vec![
        vec![17, 50, 61],
        vec![17, 25, 31],
        vec![17, 13, 16],
        vec![17, 7, 8],
        vec![9, 4, 4],
    ];
    assert_eq!(shapes, want);

    let ms = &ome(&out)["multiscales"][0];
    let names: Vec<&str> = ms["axes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["z", "y", "x"]);
    assert!(ms["axes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["type"] == "space" && a["unit"] == "nanometer"));
    let scales = [
        [40.0, 4.0, 4.0],
        [40.0, 8.0, 8.0],
        [40.0, 16.0, 16.0],
        [40.0, 32.0, 32.0],
        [80.0, 64.0, 64.0],
    ];
    let translations = [
        [0.0, 0.0, 0.0],
        [0.0, 2.0, 2.0],
        [0.0, 6.0, 6.0],
        [0.0, 14.0, 14.0],
        [20.0, 30.0, 30.0],
    ];
    for k in 0..5 {
        assert_eq!(ms["datasets"][k]["path"], k.to_string());
        assert_eq!(transform(ms, k, "scale"), scales[k], "level {k}");
        assert_eq!(
            transform(ms, k, "translation"),
            translations[k],
            "level {k}"
        );
        assert_eq!(s.levels[k].voxel_size, scales[k]);
        let arr = json(&out.join(format!("{k}/zarr.json")));
        assert_eq!(arr["dimension_names"], serde_json::json!(["z", "y", "x"]));
        let units = &arr["attributes"]["dimension_units"];
        assert_eq!(units[1], format!("{} nm", scales[k][1]));
    }
    assert_eq!(ms["type"], "mean");
    assert!(ome(&out).get("image-label").is_none());

    let want = reference_levels(&data.into(), [40.0, 4.0, 4.0], 5, false);
    for (k, w) in want.iter().enumerate() {
        assert_eq!(&read(out.join(k.to_string())), w, "level {k}");
    }
}

#[test]
fn label_pyramid_takes_the_mode_with_ties_to_the_smaller_id_on_zarr_v2() {
    let dir = tempfile::tempdir().unwrap();
    // A window whose four ids each appear twice gives the smallest, 3; one where 4 and 2
    // appear three times each gives 2.
    let tie = ArrayD::from_shape_vec(
        IxDyn(&[2, 2, 4]),
        vec![5u32, 3, 4, 4, 3, 5, 4, 2, 7, 7, 2, 2, 9, 9, 0, 1],
    )
    .unwrap();
    let s = build(
        tie,
        &dir.path().join("tie.zarr"),
        &options(2, [8.0, 8.0, 8.0], ZarrVersion::V3),
    )
    .unwrap();
    assert_eq!(s.kind, PyramidKind::Labels);
    let l1 = read(dir.path().join("tie.zarr/1"));
    assert_eq!(
        l1,
        AnyArray::from(ArrayD::from_shape_vec(IxDyn(&[1, 1, 2]), vec![3u32, 2]).unwrap())
    );

    let out = dir.path().join("seg.zarr");
    let data = labels_u32(&[17, 50, 61], 4);
    let s = build(
        data.clone(),
        &out,
        &options(3, [8.0, 8.0, 8.0], ZarrVersion::V2),
    )
    .unwrap();
    assert_eq!((s.zarr_version, s.ome_version), (2, "0.4"));
    let shapes: Vec<Vec<u64>> = s.levels.iter().map(|l| l.shape.clone()).collect();
    assert_eq!(shapes, [vec![17, 50, 61], vec![9, 25, 31], vec![5, 13, 16]]);
    let attrs = ome(&out);
    let ms = &attrs["multiscales"][0];
    assert_eq!(ms["version"], "0.4");
    assert_eq!(ms["type"], "mode");
    assert_eq!(attrs["image-label"]["version"], "0.4");
    assert_eq!(transform(ms, 2, "scale"), [32.0, 32.0, 32.0]);
    assert_eq!(transform(ms, 2, "translation"), [12.0, 12.0, 12.0]);
    let level = json(&out.join("1/.zattrs"));
    assert_eq!(
        level["_ARRAY_DIMENSIONS"],
        serde_json::json!(["z", "y", "x"])
    );
    assert_eq!(
        level["dimension_units"],
        serde_json::json!(["16 nm", "16 nm", "16 nm"])
    );
    assert!(out.join("1/.zarray").is_file());

    let want = reference_levels(&data.into(), [8.0; 3], 3, true);
    for (k, w) in want.iter().enumerate() {
        assert_eq!(&read(out.join(k.to_string())), w, "level {k}");
    }
}

#[test]
fn default_levels_stop_at_64_and_channels_are_never_reduced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.zarr");
    let data = image_u8(&[20, 130, 70]).mapv(|v| u16::from(v) * 200);
    let opts = PyramidOptions {
        levels: None,
        ..options(1, [8.0; 3], ZarrVersion::V3)
    };
    let s = build(data.clone(), &out, &opts).unwrap();
    let shapes: Vec<Vec<u64>> = s.levels.iter().map(|l| l.shape.clone()).collect();
    assert_eq!(
        shapes,
        [vec![20, 130, 70], vec![10, 65, 35], vec![5, 33, 18]]
    );
    let want = reference_levels(&data.into(), [8.0; 3], 3, false);
    for (k, w) in want.iter().enumerate() {
        assert_eq!(&read(out.join(k.to_string())), w, "level {k}");
    }

    // Predictions (C, Z, Y, X): the channel axis stays whole and unscaled.
    let out = dir.path().join("pred.zarr");
    let pred = ArrayD::from_shape_fn(IxDyn(&[2, 9, 40, 30]), |ix| {
        ((ix[0] * 7 + ix[1] * 3 + ix[2] * 5 + ix[3]) % 23) as f32 / 23.0
    });
    let s = build(
        pred.clone(),
        &out,
        &options(3, [30.0, 6.0, 6.0], ZarrVersion::V3),
    )
    .unwrap();
    let shapes: Vec<Vec<u64>> = s.levels.iter().map(|l| l.shape.clone()).collect();
    assert_eq!(
        shapes,
        [vec![2, 9, 40, 30], vec![2, 9, 20, 15], vec![2, 9, 10, 8]]
    );
    let ms = &ome(&out)["multiscales"][0];
    assert_eq!(
        ms["axes"][0],
        serde_json::json!({"name": "c", "type": "channel"})
    );
    assert_eq!(transform(ms, 2, "scale"), [1.0, 30.0, 24.0, 24.0]);
    assert_eq!(transform(ms, 2, "translation"), [0.0, 0.0, 9.0, 9.0]);
    let arr = json(&out.join("1/zarr.json"));
    assert_eq!(
        arr["dimension_names"],
        serde_json::json!(["c", "z", "y", "x"])
    );
    assert_eq!(arr["attributes"]["dimension_units"][0], Value::Null);
    let want = reference_levels(&pred.into(), [30.0, 6.0, 6.0], 3, false);
    for (k, w) in want.iter().enumerate() {
        let got = read(out.join(k.to_string())).into_typed::<f32>().unwrap();
        let w = w.clone().into_typed::<f32>().unwrap();
        assert_eq!(got.shape(), w.shape());
        for (a, b) in got.iter().zip(&w) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "level {k}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn auto_kind_follows_the_dtype_and_can_be_forced() {
    for (dtype, kind) in [
        (DType::U8, PyramidKind::Image),
        (DType::U16, PyramidKind::Image),
        (DType::I16, PyramidKind::Image),
        (DType::F32, PyramidKind::Image),
        (DType::F16, PyramidKind::Image),
        (DType::U32, PyramidKind::Labels),
        (DType::U64, PyramidKind::Labels),
        (DType::I32, PyramidKind::Labels),
        (DType::I64, PyramidKind::Labels),
        (DType::Bool, PyramidKind::Labels),
    ] {
        assert_eq!(PyramidKind::Auto.resolve(dtype), kind, "{dtype}");
        assert_eq!(PyramidKind::Image.resolve(dtype), PyramidKind::Image);
    }
    let dir = tempfile::tempdir().unwrap();
    // u8 forced to labels: the mode, not the mean.
    let data = labels_u32(&[5, 9, 11], 3).mapv(|v| v as u8 * 100);
    let mut opts = options(2, [1.0; 3], ZarrVersion::V3);
    opts.kind = PyramidKind::Labels;
    let out = dir.path().join("forced.zarr");
    let s = build(data.clone(), &out, &opts).unwrap();
    assert_eq!(s.kind, PyramidKind::Labels);
    let want = reference_levels(&data.clone().into(), [1.0; 3], 2, true);
    assert_eq!(read(out.join("1")), want[1]);
    assert_ne!(
        want[1],
        reference_levels(&data.into(), [1.0; 3], 2, false)[1],
        "the data tells mean from mode"
    );
    // i64 labels (PyTC's -1 included) by mode, the smallest winning ties.
    let data = labels_u32(&[6, 10, 9], 3).mapv(|v| i64::from(v) - 1);
    let out = dir.path().join("i64.zarr");
    build(data.clone(), &out, &options(2, [1.0; 3], ZarrVersion::V2)).unwrap();
    assert_eq!(
        read(out.join("1")),
        reference_levels(&data.into(), [1.0; 3], 2, true)[1]
    );
}

#[test]
fn voxel_size_reads_back_ome_04_05_and_funlib() {
    let dir = tempfile::tempdir().unwrap();
    for version in [ZarrVersion::V2, ZarrVersion::V3] {
        let out = dir.path().join(format!("img_{version:?}.zarr"));
        build(
            image_u8(&[9, 40, 40]),
            &out,
            &options(4, [40.0, 4.0, 4.0], version),
        )
        .unwrap();
        assert_eq!(em_io::voxel_size(&out).unwrap(), Some([40.0, 4.0, 4.0]));
        assert_eq!(
            em_io::voxel_size(&out.join("3")).unwrap(),
            Some([40.0, 32.0, 32.0])
        );
        // A pyramid nested in a group: the level finds the multiscales one group up.
        let nested = dir.path().join(format!("nested_{version:?}.zarr/raw"));
        build(
            image_u8(&[9, 40, 40]),
            &nested,
            &options(2, [30.0, 3.0, 3.0], version),
        )
        .unwrap();
        assert_eq!(
            em_io::voxel_size(&nested.join("1")).unwrap(),
            Some([30.0, 6.0, 6.0])
        );
        assert_eq!(em_io::voxel_size(nested.parent().unwrap()).unwrap(), None);
    }

    // funlib's `resolution` on a plain array, v2 and v3.
    let v2 = dir.path().join("f.zarr/raw");
    em_io::write_zarr(
        &VolumePath::parse(&v2).unwrap(),
        &AnyArray::from(image_u8(&[4, 8, 8])),
        &ZarrOptions {
            version: Some(ZarrVersion::V2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(em_io::voxel_size(&v2).unwrap(), None);
    std::fs::write(
        v2.join(".zattrs"),
        r#"{"resolution": [40, 4, 4], "offset": [0, 0, 0]}"#,
    )
    .unwrap();
    assert_eq!(em_io::voxel_size(&v2).unwrap(), Some([40.0, 4.0, 4.0]));
    let v3 = dir.path().join("g.zarr/raw");
    em_io::write(&v3, &AnyArray::from(image_u8(&[4, 8, 8]))).unwrap();
    let mut doc = json(&v3.join("zarr.json"));
    doc["attributes"] = serde_json::json!({"resolution": [50, 5, 6]});
    std::fs::write(v3.join("zarr.json"), doc.to_string()).unwrap();
    assert_eq!(em_io::voxel_size(&v3).unwrap(), Some([50.0, 5.0, 6.0]));

    // write_pyramid takes the input's voxel size, and says where it came from.
    let s = write_pyramid(
        &v3,
        &dir.path().join("from_v3.zarr"),
        &PyramidOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        (s.voxel_size, s.voxel_size_source),
        ([50.0, 5.0, 6.0], VoxelSizeSource::Metadata)
    );
    let npy = dir.path().join("plain.npy");
    em_io::write(&npy, &AnyArray::from(image_u8(&[4, 8, 8]))).unwrap();
    assert_eq!(em_io::voxel_size(&npy).unwrap(), None);
    let s = write_pyramid(
        &npy,
        &dir.path().join("from_npy.zarr"),
        &PyramidOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        (s.voxel_size, s.voxel_size_source),
        ([1.0; 3], VoxelSizeSource::Default)
    );

    // Malformed metadata: an error that names the file.
    std::fs::write(v2.join(".zattrs"), "{not json").unwrap();
    let e = em_io::voxel_size(&v2).unwrap_err();
    assert!(matches!(e, IoError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains(".zattrs"), "{e}");
    let g = dir.path().join("img_V2.zarr");
    std::fs::write(
        g.join(".zattrs"),
        r#"{"multiscales": [{"axes": ["z", "y", "x"], "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, "a", 1]}]}]}]}"#,
    )
    .unwrap();
    let e = em_io::voxel_size(&g).unwrap_err().to_string();
    assert!(
        e.contains("img_V2.zarr/.zattrs") && e.contains("not a number"),
        "{e}"
    );
    let e = em_io::voxel_size(&dir.path().join("missing.zarr")).unwrap_err();
    assert!(matches!(e, IoError::Io { .. }), "{e}");
}

#[test]
fn an_array_becomes_a_pyramid_in_place_and_its_siblings_stay() {
    let dir = tempfile::tempdir().unwrap();
    for version in [ZarrVersion::V2, ZarrVersion::V3] {
        let g = dir.path().join(format!("d_{version:?}.zarr"));
        let zopts = ZarrOptions {
            version: Some(version),
            chunk_shape: Some(vec![4, 16, 16]),
            ..Default::default()
        };
        let seg = labels_u32(&[9, 70, 40], 5);
        let raw = image_u8(&[9, 70, 40]);
        em_io::write_zarr(
            &VolumePath::parse(g.join("seg")).unwrap(),
            &seg.clone().into(),
            &zopts,
        )
        .unwrap();
        em_io::write_zarr(
            &VolumePath::parse(g.join("raw")).unwrap(),
            &raw.clone().into(),
            &zopts,
        )
        .unwrap();
        if version == ZarrVersion::V2 {
            std::fs::write(g.join("seg/.zattrs"), r#"{"resolution": [40, 4, 4]}"#).unwrap();
        }
        let s = make_ome_in_place(&g.join("seg"), &PyramidOptions::default(), &NoProgress).unwrap();
        // 70 > 64: one more level, in-plane.
        assert_eq!(s.levels.len(), 2);
        assert_eq!(
            s.zarr_version,
            if version == ZarrVersion::V2 { 2 } else { 3 }
        );
        if version == ZarrVersion::V2 {
            assert_eq!(
                (s.voxel_size, s.voxel_size_source),
                ([40.0, 4.0, 4.0], VoxelSizeSource::Metadata)
            );
            assert_eq!(s.levels[1].shape, [9, 35, 20]);
        } else {
            assert_eq!(s.voxel_size_source, VoxelSizeSource::Default);
            assert_eq!(s.levels[1].shape, [5, 35, 20]);
        }
        assert_eq!(read(g.join("seg/0")), AnyArray::from(seg));
        assert_eq!(read(g.join("raw")), AnyArray::from(raw));
        assert!(em_io::ZarrVolume::open(&VolumePath::parse(g.join("seg")).unwrap()).is_err());
        assert_eq!(
            em_io::voxel_size(&g.join("seg/1")).unwrap(),
            Some(s.levels[1].voxel_size)
        );
        let want = if version == ZarrVersion::V2 {
            [".zgroup", "raw", "seg"]
        } else {
            ["raw", "seg", "zarr.json"]
        };
        assert_eq!(listing(&g), want, "nothing else beside them");
        assert_eq!(
            listing(&g.join("seg"))
                .iter()
                .filter(|n| !n.starts_with('.') && n.as_str() != "zarr.json")
                .count(),
            2
        );
    }
    let npy = dir.path().join("x.npy");
    em_io::write(&npy, &AnyArray::from(image_u8(&[2, 3, 4]))).unwrap();
    let e = make_ome_in_place(&npy, &PyramidOptions::default(), &NoProgress).unwrap_err();
    assert!(matches!(e, IoError::OutputRefused { .. }), "{e}");
}

/// A volume whose reads fail after a number of them.
struct Failing {
    inner: InMemoryVolume,
    reads: AtomicUsize,
    fail_after: usize,
}

impl ChunkedVolume for Failing {
    fn shape(&self) -> &[u64] {
        self.inner.shape()
    }
    fn chunk_shape(&self) -> &[u64] {
        self.inner.chunk_shape()
    }
    fn dtype(&self) -> DType {
        self.inner.dtype()
    }
    fn describe(&self) -> String {
        "failing volume".into()
    }
    fn read_roi(&self, roi: &Roi) -> em_core::Result<AnyArray> {
        if self.reads.fetch_add(1, Ordering::SeqCst) >= self.fail_after {
            return Err(CoreError::Storage(Box::new(std::io::Error::other(
                "disk gone",
            ))));
        }
        self.inner.read_roi(roi)
    }
    fn write_roi(&self, roi: &Roi, data: &AnyArray) -> em_core::Result<()> {
        self.inner.write_roi(roi, data)
    }
}

#[test]
fn a_failed_build_leaves_nothing_and_keeps_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.zarr");
    let failing = |after| Failing {
        inner: volume(image_u8(&[10, 40, 40])),
        reads: AtomicUsize::new(0),
        fail_after: after,
    };
    let vp = VolumePath::parse(&out).unwrap();
    let opts = options(3, [1.0; 3], ZarrVersion::V3);
    let e = build_pyramid(&failing(5), &vp, &opts, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("disk gone"), "{e}");
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    // Over an existing pyramid: the old one stays whole.
    build(image_u8(&[10, 40, 40]), &out, &opts).unwrap();
    let before = read(out.join("2"));
    build_pyramid(&failing(7), &vp, &opts, &NoProgress).unwrap_err();
    assert_eq!(listing(dir.path()), ["p.zarr"]);
    assert_eq!(read(out.join("2")), before);
    // With a source that does not fail, the same call replaces it.
    let s = build_pyramid(
        &failing(usize::MAX),
        &vp,
        &options(2, [1.0; 3], ZarrVersion::V3),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(s.levels.len(), 2);
    assert!(!out.join("2").exists());
}

#[test]
fn bad_input_is_refused_with_clear_errors_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad.zarr");
    let base = options(2, [40.0, 4.0, 4.0], ZarrVersion::V3);
    let cases: Vec<(PyramidOptions, AnyArray, &str)> = vec![
        (
            PyramidOptions {
                levels: Some(0),
                ..base.clone()
            },
            image_u8(&[4, 8, 8]).into(),
            "invalid levels: 0",
        ),
        (
            PyramidOptions {
                levels: Some(33),
                ..base.clone()
            },
            image_u8(&[4, 8, 8]).into(),
            "invalid levels: 33",
        ),
        (
            PyramidOptions {
                voxel_size: Some([0.0, 4.0, 4.0]),
                ..base.clone()
            },
            image_u8(&[4, 8, 8]).into(),
            "invalid voxel size",
        ),
        (
            PyramidOptions {
                voxel_size: Some([40.0, f64::NAN, 4.0]),
                ..base.clone()
            },
            image_u8(&[4, 8, 8]).into(),
            "contains NaN",
        ),
        (
            base.clone(),
            image_u8(&[8, 8]).into(),
            "(Z, Y, X) or (C, Z, Y, X)",
        ),
        (base.clone(), image_u8(&[0, 8, 8]).into(), "is empty"),
        (
            PyramidOptions {
                zarr: ZarrOptions {
                    chunk_shape: Some(vec![0, 8, 8]),
                    ..Default::default()
                },
                ..base.clone()
            },
            image_u8(&[4, 8, 8]).into(),
            "invalid chunk shape",
        ),
        (
            PyramidOptions {
                threads: Some(0),
                ..base.clone()
            },
            image_u8(&[4, 8, 8]).into(),
            "invalid threads",
        ),
    ];
    for (opts, data, message) in cases {
        let e = build(data, &out, &opts).unwrap_err().to_string();
        assert!(
            e.contains(message) && e.contains("bad.zarr"),
            "{message}: {e}"
        );
        assert!(
            listing(dir.path()).is_empty(),
            "{message}: {:?}",
            listing(dir.path())
        );
    }
    let e = build(image_u8(&[4, 8, 8]), &dir.path().join("bad.npy"), &base).unwrap_err();
    assert!(matches!(e, IoError::OutputRefused { .. }), "{e}");
}

#[test]
fn only_new_paths_arrays_and_plain_pyramids_are_targets() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.zarr");
    em_io::write(g.join("raw"), &AnyArray::from(image_u8(&[4, 8, 8]))).unwrap();
    let opts = options(2, [1.0; 3], ZarrVersion::V3);
    // A group holding other data, a path inside an array, a foreign directory.
    let e = build(image_u8(&[4, 8, 8]), &g, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a zarr group holding raw"), "{e}");
    let e = build(image_u8(&[4, 8, 8]), &g.join("raw/p"), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lies inside the zarr array"), "{e}");
    let foreign = dir.path().join("notes.zarr");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), "x").unwrap();
    let e = build(image_u8(&[4, 8, 8]), &foreign, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not zarr"), "{e}");
    assert_eq!(listing(&g), ["raw", "zarr.json"]);

    // A pyramid inside the group, then checked as an output.
    let p = g.join("pyr");
    check_pyramid_output(&p, &[&g.join("raw")], Existing::Refuse).unwrap();
    build(image_u8(&[4, 8, 8]), &p, &opts).unwrap();
    let e = check_pyramid_output(&p, &[&g.join("raw")], Existing::Refuse).unwrap_err();
    assert!(
        matches!(
            e,
            IoError::OutputExists {
                what: "an OME-Zarr pyramid",
                ..
            }
        ),
        "{e}"
    );
    check_pyramid_output(&p, &[&g.join("raw")], Existing::Replace).unwrap();
    let e = check_pyramid_output(&g, &[&g.join("raw")], Existing::Replace).unwrap_err();
    assert!(
        matches!(
            e,
            IoError::OutputOverlaps {
                relation: "contains",
                ..
            }
        ),
        "{e}"
    );
    let e = check_pyramid_output(&g.join("raw"), &[&g.join("raw")], Existing::Replace).unwrap_err();
    assert!(
        matches!(e, IoError::OutputOverlaps { relation: "is", .. }),
        "{e}"
    );
    let e = check_pyramid_output(&g.join("raw"), &[], Existing::Refuse).unwrap_err();
    assert!(
        matches!(
            e,
            IoError::OutputExists {
                what: "a zarr array",
                ..
            }
        ),
        "{e}"
    );
    // Something added inside a pyramid makes it more than a pyramid: kept.
    em_io::write(p.join("extra"), &AnyArray::from(image_u8(&[2, 2, 2]))).unwrap();
    let e = check_pyramid_output(&p, &[], Existing::Replace).unwrap_err();
    assert!(matches!(e, IoError::OutputRefused { .. }), "{e}");
}

#[test]
fn labels_are_listed_under_their_image_as_the_spec_lays_out() {
    let dir = tempfile::tempdir().unwrap();
    for version in [ZarrVersion::V2, ZarrVersion::V3] {
        let img = dir.path().join(format!("img_{version:?}.zarr"));
        build(
            image_u8(&[9, 40, 40]),
            &img,
            &options(3, [40.0, 4.0, 4.0], version),
        )
        .unwrap();
        let lopts = PyramidOptions {
            voxel_size: None,
            zarr: ZarrOptions::default(),
            ..options(3, [1.0; 3], version)
        };
        for name in ["cells", "mito", "cells"] {
            let s = build(
                labels_u32(&[9, 40, 40], 6),
                &img.join("labels").join(name),
                &lopts,
            )
            .unwrap();
            assert_eq!(
                (s.voxel_size, s.voxel_size_source),
                ([40.0, 4.0, 4.0], VoxelSizeSource::Image)
            );
            assert_eq!(s.label_of.as_deref(), Some(img.as_path()));
            assert_eq!(
                s.zarr_version,
                if version == ZarrVersion::V2 { 2 } else { 3 }
            );
        }
        let labels = ome(&img.join("labels"));
        assert_eq!(labels["labels"], serde_json::json!(["cells", "mito"]));
        let cells = ome(&img.join("labels/cells"));
        assert_eq!(cells["image-label"]["source"]["image"], "../../");
        assert_eq!(
            transform(&cells["multiscales"][0], 2, "scale"),
            [40.0, 16.0, 16.0]
        );
        assert_eq!(em_io::voxel_size(&img).unwrap(), Some([40.0, 4.0, 4.0]));
        // An image stays an image: a float volume is no label image.
        let e = build(
            image_u8(&[9, 40, 40]).mapv(f32::from),
            &img.join("labels/prob"),
            &lopts,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("must be an integer volume"), "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn every_level_is_the_composition_of_reference_steps(
        z in 1usize..10, y in 1usize..40, x in 1usize..40,
        levels in 1usize..6,
        voxel in prop::sample::select(vec![[40.0, 4.0, 4.0], [8.0, 8.0, 8.0], [30.0, 7.0, 5.0]]),
        labels in any::<bool>(),
        seed in 0u32..1000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.zarr");
        let data: AnyArray = if labels {
            labels_u32(&[z, y, x], 3).mapv(|v| v.wrapping_add(seed) % 5).into()
        } else {
            image_u8(&[z, y, x]).mapv(|v| v.wrapping_add(seed as u8)).into()
        };
        let mut opts = options(levels, voxel, ZarrVersion::V3);
        opts.zarr.chunk_shape = Some(vec![3, 8, 8]);
        let s = build(data.clone(), &out, &opts).unwrap();
        let want = reference_levels(&data, voxel, levels, labels);
        prop_assert_eq!(s.levels.len(), levels);
        for (k, w) in want.iter().enumerate() {
            prop_assert_eq!(&read(out.join(k.to_string())), w, "level {}", k);
        }
    }
}

#[test]
fn python_reads_our_pyramids() {
    if !python_has(&["numpy", "zarr", "ome_zarr"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cases = vec![];
    let mut add = |name: &str, data: AnyArray, opts: PyramidOptions, labels: Vec<&str>| {
        let s = build(
            data.clone(),
            &dir.path().join(format!("{name}.zarr")),
            &opts,
        )
        .unwrap();
        em_io::write(dir.path().join(format!("{name}.npy")), &data).unwrap();
        cases.push(serde_json::json!({
            "name": name,
            "kind": s.kind,
            "zarr_version": s.zarr_version,
            "voxel_size": s.voxel_size,
            "levels": s.levels.len(),
            "labels": labels,
        }));
    };
    for version in [ZarrVersion::V2, ZarrVersion::V3] {
        let v = if version == ZarrVersion::V2 {
            "v2"
        } else {
            "v3"
        };
        add(
            &format!("img_{v}"),
            image_u8(&[17, 50, 61]).into(),
            options(5, [40.0, 4.0, 4.0], version),
            vec!["cells"],
        );
        add(
            &format!("seg_{v}"),
            labels_u32(&[17, 50, 61], 4).into(),
            options(3, [8.0; 3], version),
            vec![],
        );
        let pred = ArrayD::from_shape_fn(IxDyn(&[2, 9, 40, 30]), |ix| {
            ((ix[0] * 7 + ix[1] * 3 + ix[2] * 5 + ix[3]) % 23) as f32 / 23.0
        });
        add(
            &format!("pred_{v}"),
            pred.into(),
            options(3, [30.0, 6.0, 6.0], version),
            vec![],
        );
        // A label image of img, listed under img/labels.
        let cells = labels_u32(&[17, 50, 61], 6);
        let s = build(
            cells.clone(),
            &dir.path().join(format!("img_{v}.zarr/labels/cells")),
            &PyramidOptions {
                voxel_size: None,
                ..options(5, [1.0; 3], version)
            },
        )
        .unwrap();
        assert_eq!(s.voxel_size_source, VoxelSizeSource::Image);
        em_io::write(dir.path().join(format!("img_{v}.cells.npy")), &cells.into()).unwrap();
    }
    std::fs::write(
        dir.path().join("cases.json"),
        serde_json::to_string_pretty(&cases).unwrap(),
    )
    .unwrap();
    let report = run_python_check("check_ome.py", &[dir.path()]);
    assert!(report.contains(&format!("{} ok", cases.len())), "{report}");
}
