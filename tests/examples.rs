//! The full examples, run as they are documented (minutes each, so `#[ignore]`d):
//!
//! ```text
//! cargo test --release --test examples -- --ignored --nocapture
//! ```
//! Each builds and runs its example in release mode and checks its quality targets on the
//! last stdout line (one JSON object).

use std::process::Command;

fn run_example(name: &str, extra: &[&str]) -> serde_json::Value {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO"))
        .args(["run", "--release", "--example", name, "--", "--out"])
        .arg(out.path())
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{name} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for file in [
        "slices.png",
        "loss.png",
        "model.safetensors",
        "metrics.jsonl",
    ] {
        assert!(out.path().join(file).is_file(), "{name} wrote no {file}");
    }
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

#[test]
#[ignore = "trains for minutes; run with --ignored"]
fn lucchi_beats_the_threshold_baseline() {
    let v = run_example("lucchi", &[]);
    let (iou, baseline) = (
        v["iou"].as_f64().unwrap(),
        v["baseline_iou"].as_f64().unwrap(),
    );
    assert!(iou >= 0.85, "IoU {iou} below 0.85: {v}");
    assert!(
        iou > baseline + 0.3,
        "IoU {iou} vs threshold baseline {baseline}"
    );
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
#[ignore = "trains for minutes; run with --ignored"]
fn neurons_decode_into_segments_scored_by_nerl() {
    let v = run_example("neurons", &[]);
    let nerl = v["nerl"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&nerl), "{v}");
    assert!(v["voi"].as_f64().unwrap() >= 0.0 && v["segments"].as_u64().unwrap() > 0);
}
