//! Small-object removal against PyTorch Connectomics' `remove_small_instances`
//! (fixtures from `tools/make_small_object_fixtures.py`, checked against PyTC's own code).
//!
//! Inputs are numbered in order of first appearance, where PyTC's id order and ours agree.
//! Runs where PyTC merges a small *background* (label 0) away are skipped: label 0 is never
//! touched here.

mod common;

use common::{fixture_json, read_fixture};
use em_core::Label;
use em_decode::{remove_small_objects, SmallObjectMode};
use ndarray::Array3;

/// A volume of `tests/fixtures/small_objects`.
fn load<L: Label>(name: &str) -> Array3<L> {
    read_fixture(&format!("small_objects/{name}"))
}

fn check<L: Label>(case: &serde_json::Value) -> usize {
    let input: Array3<L> = load(case["input"].as_str().unwrap());
    let mut checked = 0;
    for run in case["runs"].as_array().unwrap() {
        let mode: SmallObjectMode = run["mode"].as_str().unwrap().parse().unwrap();
        let neighbor = matches!(
            mode,
            SmallObjectMode::Neighbor | SmallObjectMode::Neighbor2d
        );
        if run["background_small"].as_bool().unwrap() && neighbor {
            continue;
        }
        let min = run["min_size"].as_u64().unwrap();
        let want: Array3<L> = load(run["expected_renumbered"].as_str().unwrap());
        let mut got = input.clone();
        let k = remove_small_objects(got.view_mut(), min, mode).unwrap();
        assert_eq!(got, want, "{} {:?} min {min}", case["name"], mode);
        assert_eq!(k, want.iter().map(|v| v.to_u64()).max().unwrap_or(0));
        checked += 1;
    }
    checked
}

#[test]
fn matches_pytc_remove_small_instances() {
    let manifest = fixture_json("small_objects/manifest.json");
    let mut runs = 0;
    for case in manifest["cases"].as_array().unwrap() {
        runs += match case["dtype"].as_str().unwrap() {
            "uint64" => check::<u64>(case),
            _ => check::<u32>(case),
        };
    }
    assert!(runs >= 70, "only {runs} runs checked");
}
