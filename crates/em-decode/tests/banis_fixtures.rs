//! The decoder reproduces BANIS's segmentations exactly: `tests/fixtures/c1_32_*` hold
//! 32³ affinities (in both edge storages) and the labels BANIS's code gives for them at
//! thresholds 0.5 and 0.8, with and without small-object removal (listed in
//! `tests/fixtures/cc_cases.json`).

mod common;

use common::{fixture_json, read_fixture};
use em_core::EdgeStorage;
use em_decode::{affinity_cc, remove_small_objects, CcOptions, SmallObjectMode};
use ndarray::{Ix3, Ix4};

#[test]
fn both_storages_match_banis_at_every_threshold_and_min_size() {
    let cases = fixture_json("cc_cases.json");
    let expected = &cases["c1_32"]["expected"];
    let mut checked = 0;
    for (storage, file) in [
        (EdgeStorage::Source, "c1_32_aff_fwd.npy"),
        (EdgeStorage::Destination, "c1_32_aff_bwd.npy"),
    ] {
        let aff = read_fixture::<f32, Ix4>(file);
        for thr in ["0.5", "0.8"] {
            let params = CcOptions {
                threshold: thr.parse().unwrap(),
                storage,
                ..CcOptions::default()
            };
            let seg = affinity_cc::<f32, u32>(aff.view(), &params).unwrap();
            let case = &expected[thr];
            let want = read_fixture::<u32, Ix3>(case["file"].as_str().unwrap());
            assert_eq!(seg, want, "{storage:?} threshold {thr}");
            assert_eq!(
                u64::from(*seg.iter().max().unwrap()),
                case["n_components"].as_u64().unwrap()
            );
            for min in ["10", "500"] {
                let sub = &case[format!("min_size_{min}")];
                let mut s = seg.clone();
                let kept = remove_small_objects(
                    s.view_mut(),
                    min.parse().unwrap(),
                    SmallObjectMode::Background,
                )
                .unwrap();
                assert_eq!(
                    s,
                    read_fixture::<u32, Ix3>(sub["file"].as_str().unwrap()),
                    "{storage:?} {thr} min {min}"
                );
                assert_eq!(kept, sub["n_components"].as_u64().unwrap());
                assert_eq!(
                    s.iter().filter(|&&v| v == 0).count() as u64,
                    sub["n_zero_voxels"].as_u64().unwrap()
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 8);
}

#[test]
fn values_exactly_at_the_threshold_do_not_connect() {
    // The fixture's boundary edges are exactly 0.5: at 0.5 they stay off, just below they
    // join objects (so the count drops).
    let aff = read_fixture::<f32, Ix4>("c1_32_aff_fwd.npy");
    let at = affinity_cc::<f32, u32>(aff.view(), &CcOptions::default()).unwrap();
    let below = CcOptions {
        threshold: 0.499_999_9,
        ..CcOptions::default()
    };
    let merged = affinity_cc::<f32, u32>(aff.view(), &below).unwrap();
    assert!(merged.iter().max() < at.iter().max());
}

#[test]
fn u32_and_u64_labels_agree() {
    let aff = read_fixture::<f32, Ix4>("c1_32_aff_fwd.npy");
    let a = affinity_cc::<f32, u32>(aff.view(), &CcOptions::default()).unwrap();
    let b = affinity_cc::<f32, u64>(aff.view(), &CcOptions::default()).unwrap();
    assert!(a.iter().zip(b.iter()).all(|(x, y)| u64::from(*x) == *y));
}
