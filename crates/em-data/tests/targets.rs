//! Targets against numpy/scipy/cc3d references (`tools/make_target_fixtures.py`):
//! affinities and masks in both storages for BANIS's and mixed-sign offsets, 6-connected
//! relabelling, boundaries, signed distance (isotropic and anisotropic), erosion.

use std::path::PathBuf;

use em_core::{AffinityOffsets, EdgeStorage, Offset};
use em_data::targets;
use ndarray::{Array3, Array4, ArrayD, Ix3, Ix4};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/targets")
}

fn load<T: ndarray_npy::ReadableElement>(name: &str) -> ArrayD<T> {
    ndarray_npy::read_npy(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const CASES: [&str; 3] = ["blocks", "cut", "random"];

fn input(case: &str) -> (Array3<u32>, Array3<bool>) {
    let raw: Array3<i64> = load::<i64>(&format!("input_{case}.npy"))
        .into_dimensionality::<Ix3>()
        .unwrap();
    (raw.mapv(|v| v.max(0) as u32), raw.mapv(|v| v != -1))
}

fn offsets(list: &str) -> AffinityOffsets {
    if list == "banis" {
        return AffinityOffsets::banis();
    }
    let mixed = [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [2, 0, 0],
        [0, 3, 0],
        [0, 0, -2],
    ];
    AffinityOffsets::new(mixed.into_iter().map(Offset).collect()).unwrap()
}

#[test]
fn affinities_and_masks_match_numpy() {
    for case in CASES {
        let (lab, known) = input(case);
        for list in ["banis", "mixed"] {
            for (storage, tag) in [
                (EdgeStorage::Source, "source"),
                (EdgeStorage::Destination, "dest"),
            ] {
                let (aff, mask) =
                    targets::affinities(lab.view(), Some(known.view()), &offsets(list), storage);
                let want_aff: Array4<u8> = load::<u8>(&format!("aff_{tag}_{list}_{case}.npy"))
                    .into_dimensionality::<Ix4>()
                    .unwrap();
                let want_mask: Array4<u8> = load::<u8>(&format!("mask_{tag}_{list}_{case}.npy"))
                    .into_dimensionality::<Ix4>()
                    .unwrap();
                assert_eq!(
                    aff.mapv(|v| v as u8),
                    want_aff,
                    "{case} {list} {tag} affinities"
                );
                assert_eq!(mask, want_mask, "{case} {list} {tag} mask");
            }
        }
    }
}

#[test]
fn relabelling_boundaries_erosion_and_distance_match_the_references() {
    for case in CASES {
        let (lab, _) = input(case);
        let want: Array3<u32> = load::<u32>(&format!("relabel6_{case}.npy"))
            .into_dimensionality()
            .unwrap();
        assert_eq!(
            targets::relabel_connected(lab.view()),
            want,
            "{case} relabel"
        );
        for (planar, tag) in [(false, "3d"), (true, "2d")] {
            let want: Array3<u8> = load::<u8>(&format!("boundary{tag}_{case}.npy"))
                .into_dimensionality()
                .unwrap();
            assert_eq!(
                targets::boundaries(lab.view(), planar),
                want,
                "{case} boundary {tag}"
            );
        }
        for w in [1, 2] {
            let want: Array3<u32> = load::<u32>(&format!("erode{w}_{case}.npy"))
                .into_dimensionality()
                .unwrap();
            assert_eq!(targets::erode(lab.view(), w), want, "{case} erode {w}");
        }
        for (vs, tag) in [([1.0, 1.0, 1.0], "sdt"), ([4.0, 1.0, 1.0], "sdt_aniso")] {
            let want: Array3<f32> = load::<f32>(&format!("{tag}_{case}.npy"))
                .into_dimensionality()
                .unwrap();
            let got = targets::signed_distance(lab.view(), vs);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "{case} {tag}: max error {err}");
        }
    }
}
