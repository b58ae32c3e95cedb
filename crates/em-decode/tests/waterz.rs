//! waterz 0.10.1's results (tools/make_waterz_fixtures.py) reproduced entry for entry:
//! fragments, segmentations, merge histories and region graphs, with and without asking
//! for the region graph (which changes waterz's merging).

mod common;

use common::{fixture_json, read_fixture};
use em_core::EdgeStorage;
use em_decode::waterz::{agglomerate, watershed_fragments, Scoring, WaterzOptions};
use ndarray::{s, Array3, Array4, Ix3, Ix4};
use serde_json::Value;

fn options(case: &Value, region_graph: bool) -> WaterzOptions {
    WaterzOptions {
        thresholds: case["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap() as f32)
            .collect(),
        scoring: Scoring::parse(case["scoring"].as_str().unwrap()).unwrap(),
        aff_threshold_low: case["aff_threshold_low"].as_f64().unwrap() as f32,
        aff_threshold_high: case["aff_threshold_high"].as_f64().unwrap() as f32,
        discretize_queue: case["discretize_queue"].as_u64().unwrap() as usize,
        region_graph,
        ..WaterzOptions::default()
    }
}

fn waterz_dir(name: &str) -> String {
    format!("waterz/{name}")
}

fn cases() -> Vec<Value> {
    fixture_json("waterz/manifest.json")["cases"]
        .as_array()
        .unwrap()
        .clone()
}

/// The affinities in BANIS's storage: the value of the edge between v and v + e_d at v.
fn to_source(aff: &Array4<f32>) -> Array4<f32> {
    let mut out = Array4::<f32>::zeros(aff.raw_dim());
    out.slice_mut(s![0, ..-1, .., ..])
        .assign(&aff.slice(s![0, 1.., .., ..]));
    out.slice_mut(s![1, .., ..-1, ..])
        .assign(&aff.slice(s![1, .., 1.., ..]));
    out.slice_mut(s![2, .., .., ..-1])
        .assign(&aff.slice(s![2, .., .., 1..]));
    out
}

fn check_case(case: &Value, region_graph: bool, storage: EdgeStorage) {
    let name = case["name"].as_str().unwrap();
    let mut aff: Array4<f32> =
        read_fixture::<f32, Ix4>(&waterz_dir(case["affinities"].as_str().unwrap()));
    if storage == EdgeStorage::Source {
        aff = to_source(&aff);
    }
    let given: Option<Array3<u64>> = case["fragments_input"]
        .as_str()
        .map(|f| read_fixture::<u64, Ix3>(&waterz_dir(f)));
    let opts = WaterzOptions {
        storage,
        ..options(case, region_graph)
    };
    let key = if region_graph {
        "results"
    } else {
        "results_without_region_graph"
    };
    let expected = case[key].as_array().unwrap();
    let mut i = 0;
    let summary = agglomerate::<u64>(aff.view(), given.as_ref().map(|f| f.view()), &opts, |r| {
        let want = &expected[i];
        let what = format!(
            "{name} (region graph {region_graph}, {storage:?}) threshold {}",
            r.threshold
        );
        assert_eq!(
            r.threshold as f64,
            want["threshold"].as_f64().unwrap() as f32 as f64,
            "{what}"
        );
        let history = want["merge_history"].as_array().unwrap();
        assert_eq!(r.merges.len(), history.len(), "{what}: merge count");
        for (k, (m, w)) in r.merges.iter().zip(history).enumerate() {
            assert_eq!(
                (m.a, m.b, m.c, m.score),
                (
                    w["a"].as_u64().unwrap(),
                    w["b"].as_u64().unwrap(),
                    w["c"].as_u64().unwrap(),
                    w["score"].as_f64().unwrap() as f32
                ),
                "{what}: merge {k}"
            );
        }
        let seg: Array3<u64> = read_fixture(&waterz_dir(want["segmentation"].as_str().unwrap()));
        assert!(r.segmentation == seg, "{what}: segmentation differs");
        if region_graph {
            let graph = want["region_graph"].as_array().unwrap();
            let ours = r.region_graph.as_ref().unwrap();
            assert_eq!(ours.len(), graph.len(), "{what}: region graph size");
            for (e, w) in ours.iter().zip(graph) {
                assert_eq!(
                    (e.u, e.v, e.score),
                    (
                        w["u"].as_u64().unwrap(),
                        w["v"].as_u64().unwrap(),
                        w["score"].as_f64().unwrap() as f32
                    ),
                    "{what}: region graph"
                );
            }
        }
        i += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(i, expected.len(), "{name}: thresholds");
    assert_eq!(
        summary.fragments,
        case["num_fragments"].as_u64().unwrap(),
        "{name}"
    );
}

#[test]
fn fragments_equal_waterz_watershed() {
    for case in cases() {
        if !case["fragments_input"].is_null() {
            continue;
        }
        let aff: Array4<f32> = read_fixture(&waterz_dir(case["affinities"].as_str().unwrap()));
        let want: Array3<u64> = read_fixture(&waterz_dir(case["fragments"].as_str().unwrap()));
        for storage in [EdgeStorage::Destination, EdgeStorage::Source] {
            let input = if storage == EdgeStorage::Source {
                to_source(&aff)
            } else {
                aff.clone()
            };
            let opts = WaterzOptions {
                storage,
                ..options(&case, false)
            };
            let got = watershed_fragments(input.view(), &opts).unwrap();
            assert!(
                got == want,
                "{}: fragments differ ({storage:?})",
                case["name"]
            );
        }
    }
}

#[test]
fn agglomeration_equals_waterz_without_region_graph() {
    for case in cases() {
        check_case(&case, false, EdgeStorage::Destination);
    }
}

#[test]
fn agglomeration_and_region_graph_equal_waterz_with_region_graph() {
    for case in cases() {
        check_case(&case, true, EdgeStorage::Destination);
    }
}

#[test]
fn source_storage_gives_the_same_result() {
    for case in cases() {
        check_case(&case, false, EdgeStorage::Source);
    }
}
