//! Training on a GPU backend (here wgpu; Mesa's software Vulkan where there is no GPU): a
//! tiny MedNeXt's loss falls in float32 and in float16 mixed precision alike; a float16
//! step whose gradients overflow is skipped without touching the weights and the loss
//! scale backs off; precisions the device lacks are refused before training.
//!
//! Run with `cargo test -p em-train --features wgpu --test gpu_train`.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::DType;
use em_core::ChunkedVolume;
use em_train::{Device, Event, RunOptions, StepLog, TrainConfig, TrainedModel};

/// The CPU tests' tiny run, with the changes below (12 steps, no augmentation).
const TINY: &str = include_str!("fixtures/tiny.toml");
const CHANGES: [&str; 3] = ["steps=12", "augment=\"none\"", "optimizer.warmup=2"];

fn opener(p: &Path) -> Result<Box<dyn ChunkedVolume>, String> {
    em_io::open(p).map_err(|e| e.to_string())
}

fn config(overrides: &[&str]) -> em_train::Result<TrainConfig> {
    let o: Vec<String> = CHANGES
        .iter()
        .chain(overrides)
        .map(|s| s.to_string())
        .collect();
    TrainConfig::from_toml(TINY, &o)
}

fn run(overrides: &[&str]) -> em_train::Result<em_train::DeviceTrained> {
    let cfg = config(overrides)?;
    em_train::train_on(
        Device::Wgpu,
        &cfg,
        &opener,
        &RunOptions::default(),
        &mut |_: Event<'_>| true,
    )
}

fn mean(s: &[StepLog]) -> f64 {
    s.iter().map(|l| l.loss).sum::<f64>() / s.len() as f64
}

fn weights(m: &TrainedModel) -> Vec<f32> {
    let TrainedModel::Wgpu(m) = m else {
        panic!("trained on wgpu")
    };
    let mut v = Vec::new();
    burn::module::Module::visit(m, &mut Flatten(&mut v));
    v
}

struct Flatten<'a>(&'a mut Vec<f32>);

impl<Bk: Backend> burn::module::ModuleVisitor<Bk> for Flatten<'_> {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<Bk, D>>,
    ) {
        let data = param.val().into_data().convert::<f32>();
        self.0.extend(data.to_vec::<f32>().unwrap());
    }
}

#[test]
fn the_loss_falls_in_float32_and_float16_alike() {
    let f32_run = run(&[]).unwrap();
    let f16_run = run(&["precision=\"f16\""]).unwrap();
    for (name, r) in [("f32", &f32_run), ("f16", &f16_run)] {
        assert_eq!(r.step, 12, "{name}");
        let done: Vec<&StepLog> = r.log.iter().filter(|l| !l.skipped).collect();
        assert!(
            done.len() >= 10,
            "{name}: {} steps skipped",
            12 - done.len()
        );
        assert!(r.log.iter().all(|l| l.loss.is_finite()), "{name}");
        let (first, last) = (mean(&r.log[..3]), mean(&r.log[9..]));
        assert!(last < 0.9 * first, "{name}: loss {first:.3} → {last:.3}");
    }
    // float16 carries its loss scale in the log; float32 has none.
    assert!(f16_run.log.iter().all(|l| l.loss_scale.is_some()));
    assert!(f32_run
        .log
        .iter()
        .all(|l| l.loss_scale.is_none() && !l.skipped));
    // The two precisions follow the same path (float16 rounds the activations only).
    let (a, b) = (mean(&f32_run.log[9..]), mean(&f16_run.log[9..]));
    assert!((a - b).abs() < 0.1 * a, "f32 {a:.4} vs f16 {b:.4}");
}

#[test]
fn an_overflowing_float16_step_is_skipped_and_the_scale_backs_off() {
    // A scale no float16 gradient survives: every step overflows.
    let out = run(&[
        "precision=\"f16\"",
        "steps=2",
        "loss_scale={ initial = 1e30 }",
    ])
    .unwrap();
    assert_eq!(out.log.len(), 2);
    assert!(out.log.iter().all(|l| l.skipped), "{:?}", out.log);
    assert_eq!(out.log[0].loss_scale, Some(1e30));
    assert_eq!(
        out.log[1].loss_scale,
        Some(5e29),
        "halved after the overflow"
    );
    assert!(
        out.log.iter().all(|l| l.loss.is_finite()),
        "the loss itself is finite"
    );
    // The weights are those the seed gives: no optimizer step touched them.
    let cfg = config(&[]).unwrap();
    let initial = cfg
        .model
        .build_seeded::<em_models::Wgpu>(&Default::default(), cfg.seed)
        .unwrap();
    let mut want = Vec::new();
    burn::module::Module::visit(&initial, &mut Flatten(&mut want));
    assert_eq!(weights(&out.model), want);
}

#[test]
fn precisions_the_device_lacks_are_refused_before_training() {
    let device = Default::default();
    if !<em_models::Wgpu as Backend>::supports_dtype(&device, DType::BF16) {
        let e = run(&["precision=\"bf16\""])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("no BF16 arithmetic") && e.contains("\"f16\""),
            "{e}"
        );
    }
    let cfg = config(&["precision=\"f16\""]).unwrap();
    let e = em_train::train_on(
        Device::Cpu,
        &cfg,
        &opener,
        &RunOptions::default(),
        &mut |_: Event<'_>| true,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(e.contains("runs on a GPU device"), "{e}");
}
