//! `em pyramid`: levels and OME metadata written, the --json summary, the voxel-size
//! warning, and the refusals that keep inputs and other data safe.

mod common;

use std::path::Path;

use common::{em, ok};
use em_core::AnyArray;
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

fn image(shape: &[usize]) -> AnyArray {
    ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        ((ix[0] * 31 + ix[1] * 7 + ix[2] * 3) % 251) as u8
    })
    .into()
}

fn labels(shape: &[usize]) -> AnyArray {
    ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        ((ix[0] + ix[1] / 3 + ix[2] / 5) % 4) as u32
    })
    .into()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn writes_levels_and_ome_metadata_and_reports_them_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("raw.npy");
    em_io::write(&input, &image(&[10, 60, 50])).unwrap();
    let out = dir.path().join("raw.zarr");
    let o = em(&[
        "pyramid",
        s(&input),
        s(&out),
        "--levels",
        "5",
        "--voxel-size",
        "40,4,4",
        "--json",
    ]);
    let j = ok(&o);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
    assert_eq!(j["kind"], "image");
    assert_eq!(
        (j["zarr_version"].as_u64(), j["ome_version"].as_str()),
        (Some(3), Some("0.5"))
    );
    assert_eq!(j["voxel_size_source"], "given");
    let shapes: Vec<Value> = j["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["shape"].clone())
        .collect();
    assert_eq!(
        shapes,
        [
            serde_json::json!([10, 60, 50]),
            serde_json::json!([10, 30, 25]),
            serde_json::json!([10, 15, 13]),
            serde_json::json!([10, 8, 7]),
            serde_json::json!([5, 4, 4]),
        ]
    );
    assert_eq!(
        j["levels"][3]["voxel_size"],
        serde_json::json!([40.0, 32.0, 32.0])
    );
    assert_eq!(
        j["levels"][4]["voxel_size"],
        serde_json::json!([80.0, 64.0, 64.0])
    );
    assert_eq!(
        j["levels"][4]["translation"],
        serde_json::json!([20.0, 30.0, 30.0])
    );
    let ome = &json(&out.join("zarr.json"))["attributes"]["ome"];
    assert_eq!(ome["version"], "0.5");
    let ds = &ome["multiscales"][0]["datasets"];
    assert_eq!(
        ds[2]["coordinateTransformations"][0]["scale"],
        serde_json::json!([40.0, 16.0, 16.0])
    );
    assert_eq!(em_io::read(out.join("0")).unwrap(), image(&[10, 60, 50]));
    // The mean of level 0's first 2×2 window (rounded half away from zero).
    let l0 = image(&[10, 60, 50]).into_typed::<u8>().unwrap();
    let mean = (f64::from(l0[[0, 0, 0]])
        + f64::from(l0[[0, 0, 1]])
        + f64::from(l0[[0, 1, 0]])
        + f64::from(l0[[0, 1, 1]]))
        / 4.0;
    let l1 = em_io::read(out.join("1"))
        .unwrap()
        .into_typed::<u8>()
        .unwrap();
    assert_eq!(l1[[0, 0, 0]], mean.round() as u8);
    assert_eq!(
        em_io::voxel_size(&out.join("4")).unwrap(),
        Some([80.0, 64.0, 64.0])
    );
}

#[test]
fn labels_on_zarr_v2_and_the_voxel_size_warning() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("seg.npy");
    em_io::write(&input, &labels(&[6, 20, 20])).unwrap();
    let out = dir.path().join("seg.zarr");
    let o = em(&[
        "pyramid",
        s(&input),
        s(&out),
        "--levels",
        "2",
        "--zarr-version",
        "2",
    ]);
    ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: no voxel size in {}; using 1,1,1 nm (set --voxel-size)",
            input.display()
        )),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("zarr v2 OME-NGFF 0.4 labels pyramid of uint32, 2 levels"),
        "{stdout}"
    );
    let attrs = json(&out.join(".zattrs"));
    assert_eq!(attrs["multiscales"][0]["version"], "0.4");
    assert_eq!(attrs["multiscales"][0]["type"], "mode");
    assert!(attrs.get("image-label").is_some());
    assert_eq!(
        json(&out.join("1/.zattrs"))["_ARRAY_DIMENSIONS"],
        serde_json::json!(["z", "y", "x"])
    );

    // A voxel size found in the input's metadata: no warning, and it is used.
    let o = em(&[
        "pyramid",
        s(&out.join("0")),
        s(&dir.path().join("again.zarr")),
        "--json",
    ]);
    let j = ok(&o);
    assert_eq!(j["voxel_size_source"], "metadata");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));

    // --image forces the mean on labels.
    let o = em(&[
        "pyramid",
        s(&input),
        s(&dir.path().join("mean.zarr")),
        "--image",
        "--json",
    ]);
    assert_eq!(ok(&o)["kind"], "image");
}

#[test]
fn refuses_outputs_over_inputs_existing_outputs_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("d.zarr");
    em_io::write(g.join("raw"), &image(&[4, 16, 16])).unwrap();
    let raw = g.join("raw");

    // Over the input, around it.
    for out in [raw.clone(), g.clone()] {
        let o = em(&["pyramid", s(&raw), s(&out)]);
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("choose another output path"), "{e}");
    }
    assert_eq!(em_io::read(&raw).unwrap(), image(&[4, 16, 16]));

    // An existing pyramid needs --overwrite, and then is replaced.
    let out = g.join("pyr");
    ok(&em(&["pyramid", s(&raw), s(&out), "--levels", "2"]));
    let o = em(&["pyramid", s(&raw), s(&out), "--levels", "3"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("an OME-Zarr pyramid exists there") && e.contains("--overwrite"),
        "{e}"
    );
    assert!(!out.join("2").exists());
    let j = ok(&em(&[
        "pyramid",
        s(&raw),
        s(&out),
        "--levels",
        "3",
        "--overwrite",
        "--json",
    ]));
    assert_eq!(j["levels"].as_array().unwrap().len(), 3);
    assert!(out.join("2").is_dir());

    // A group holding other data is never replaced, even with --overwrite.
    let other = dir.path().join("other.zarr");
    em_io::write(other.join("seg"), &labels(&[4, 16, 16])).unwrap();
    let o = em(&["pyramid", s(&raw), s(&other), "--overwrite"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("is a zarr group holding seg"), "{e}");
    assert_eq!(
        em_io::read(other.join("seg")).unwrap(),
        labels(&[4, 16, 16])
    );

    // Bad values are named.
    let o = em(&[
        "pyramid",
        s(&raw),
        s(&dir.path().join("z.zarr")),
        "--levels",
        "0",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid levels: 0"));
    let o = em(&[
        "pyramid",
        s(&raw),
        s(&dir.path().join("z.zarr")),
        "--voxel-size",
        "0,4,4",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid voxel size"));
    assert!(!dir.path().join("z.zarr").exists());
}
