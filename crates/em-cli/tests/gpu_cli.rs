//! `em` on a GPU backend (wgpu; Mesa's software Vulkan driver where there is no GPU): the
//! `lucchi_cpu` preset trains 10 steps with a finite, falling loss in float32 and in float16
//! mixed precision; `em infer` and `em model forward` on wgpu give the CPU's predictions.
//!
//! Run with `cargo test -p em-cli --features wgpu --test gpu_cli`.

mod common;

use common::{em, ok};

/// Step losses of a run's metrics log.
fn losses(run: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["event"] == "step")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

fn falls(l: &[f64], what: &str) {
    assert_eq!(l.len(), 10, "{what}: {l:?}");
    assert!(l.iter().all(|v| v.is_finite()), "{what}: {l:?}");
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    assert!(mean(&l[7..]) < 0.9 * mean(&l[..3]), "{what}: {l:?}");
}

fn read_npy(p: &std::path::Path) -> Vec<f32> {
    em_io::read(p)
        .unwrap()
        .into_typed::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: worst {worst} against {scale}"
    );
}

#[test]
fn lucchi_cpu_trains_on_wgpu_and_predicts_as_the_cpu_does() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = ok(&em(&[
        "train",
        "lucchi_cpu",
        "--device",
        "wgpu",
        "--set",
        "steps=10",
        "--out",
        run.to_str().unwrap(),
    ]));
    assert_eq!(r["device"], "wgpu");
    falls(&losses(&run), "f32");

    // Prediction on wgpu equals the CPU's.
    let img = dir.path().join("syn.zarr");
    ok(&em(&[
        "data",
        "synth",
        "--kind",
        "mito",
        "--out",
        img.to_str().unwrap(),
        "--shape",
        "16,48,48",
    ]));
    let mut predictions = Vec::new();
    for device in ["wgpu", "cpu"] {
        let out = dir.path().join(format!("p_{device}.npy"));
        ok(&em(&[
            "infer",
            "--run",
            run.to_str().unwrap(),
            "--input",
            img.join("img").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--tta",
            "none",
            "--device",
            device,
        ]));
        predictions.push(read_npy(&out));
    }
    close(&predictions[0], &predictions[1], "em infer wgpu vs cpu");

    // So does a forward pass of the saved (MONAI-named) weights.
    let x = dir.path().join("x.npy");
    let values: Vec<f32> = (0..16 * 32 * 32)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect();
    let arr = ndarray::Array::from_shape_vec(ndarray::IxDyn(&[1, 1, 16, 32, 32]), values).unwrap();
    em_io::write(&x, &em_core::AnyArray::from(arr)).unwrap();
    let mut logits = Vec::new();
    for device in ["wgpu", "cpu"] {
        let out = dir.path().join(format!("y_{device}.npy"));
        let r = ok(&em(&[
            "model",
            "forward",
            "--weights",
            run.join("model.safetensors").to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            device,
        ]));
        assert_eq!(r["device"], device);
        logits.push(read_npy(&out));
    }
    close(&logits[0], &logits[1], "em model forward wgpu vs cpu");
}

#[test]
fn lucchi_cpu_trains_on_wgpu_in_float16() {
    let dir = tempfile::tempdir().unwrap();
    // bfloat16 where the adapter has none (Mesa's software driver): refused before anything
    // is written.
    let device = Default::default();
    if !<em_models::Wgpu as burn::tensor::backend::Backend>::supports_dtype(
        &device,
        burn::tensor::DType::BF16,
    ) {
        let bf16 = dir.path().join("bf16");
        let o = em(&[
            "train",
            "lucchi_cpu",
            "--device",
            "wgpu",
            "--set",
            "precision=\"bf16\"",
            "--out",
            bf16.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("no BF16 arithmetic"),
            "{err}"
        );
        assert!(!bf16.exists(), "nothing written");
    }
    let run = dir.path().join("run");
    ok(&em(&[
        "train",
        "lucchi_cpu",
        "--device",
        "wgpu",
        "--set",
        "steps=10",
        "--set",
        "precision=\"f16\"",
        "--out",
        run.to_str().unwrap(),
    ]));
    falls(&losses(&run), "f16");
    // Every step logs its loss scale; skipped steps (if any) say so.
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|r: &serde_json::Value| r["event"] == "step")
        .collect();
    assert!(steps.iter().all(|s| s["loss_scale"].as_f64().is_some()));
    assert!(steps.iter().filter(|s| s["skipped"] == true).count() <= 3);
}
