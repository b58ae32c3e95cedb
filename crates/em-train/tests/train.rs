//! Tiny end-to-end runs (seconds): a small MedNeXt learns synthetic mitochondria's
//! foreground and the loss falls; an interrupted and resumed run continues exactly;
//! validation scores; configuration, checkpoint and data errors come before training.

use std::path::Path;

use em_core::ChunkedVolume;
use em_train::{train, Event, RunOptions, TrainConfig, TrainError};

const TINY: &str = include_str!("fixtures/tiny.toml");

fn opener(p: &Path) -> Result<Box<dyn ChunkedVolume>, String> {
    em_io::open(p).map_err(|e| e.to_string())
}

type B = em_models::CpuTrain;

fn run(
    cfg: &TrainConfig,
    opts: &RunOptions,
    mut stop_at: impl FnMut(usize) -> bool,
) -> em_train::Result<em_train::Trained<B>> {
    train::<B>(cfg, &opener, &Default::default(), opts, &mut |e| match e {
        Event::Step(s) => !stop_at(s.step),
        _ => true,
    })
}

fn losses(t: &em_train::Trained<B>) -> Vec<(usize, f64)> {
    t.log.iter().map(|l| (l.step, l.loss)).collect()
}

#[test]
fn a_tiny_model_learns_and_the_loss_falls() {
    let cfg = TrainConfig::from_toml(TINY, &[]).unwrap();
    let mut seen = 0;
    let out = train::<B>(
        &cfg,
        &opener,
        &Default::default(),
        &RunOptions::default(),
        &mut |e| {
            if let Event::Step(_) = e {
                seen += 1;
            }
            true
        },
    )
    .unwrap();
    assert_eq!(out.log.len(), 40);
    assert_eq!(seen, 40);
    assert!(!out.stopped && out.step == 40 && out.last_checkpoint.is_none());
    let mean = |s: &[em_train::StepLog]| s.iter().map(|l| l.loss).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&out.log[..8]), mean(&out.log[32..]));
    assert!(last < 0.8 * first, "loss {first:.3} → {last:.3}");
    // Warm-up then cosine: the learning rate rises, peaks, and falls.
    assert!(out.log[0].lr < out.log[4].lr && out.log[39].lr < out.log[10].lr);
    // Stopping early (a signal handler returning false) ends the run cleanly.
    let short = run(&cfg, &RunOptions::default(), |s| s >= 3).unwrap();
    assert_eq!(short.log.len(), 3);
    assert!(short.stopped);
}

/// Accumulation, EMA and a checkpoint every other step: the parts of the state a resume
/// must restore.
fn resumable() -> TrainConfig {
    TrainConfig::from_toml(
        TINY,
        &[
            "steps=7".into(),
            "accumulate=2".into(),
            "ema={ decay = 0.9 }".into(),
            "checkpoint={ every = 2, keep = 2 }".into(),
            "data.patch.epoch_len=10".into(),
        ],
    )
    .unwrap()
}

#[test]
fn an_interrupted_run_resumes_exactly() {
    let cfg = resumable();
    let dir = tempfile::tempdir().unwrap();
    let opts = |name: &str, resume: bool| RunOptions {
        checkpoint_dir: Some(dir.path().join(name)),
        resume: resume.then(|| dir.path().join(name)),
        stop: None,
    };
    let whole = run(&cfg, &opts("whole", false), |_| false).unwrap();
    assert_eq!(whole.log.len(), 7);
    // Epochs hold 5 batches = 2.5 steps: the interruption at step 3 falls mid-epoch and the
    // resumed run crosses an epoch boundary inside an accumulated step.
    let first = run(&cfg, &opts("split", false), |s| s >= 3).unwrap();
    assert!(first.stopped && first.step == 3);
    let ckpt = first.last_checkpoint.clone().unwrap();
    assert!(ckpt.ends_with("step-00000003"), "{}", ckpt.display());
    // keep = 2: steps 2 and 3 remain.
    let kept = em_train::checkpoint::list(&dir.path().join("split")).unwrap();
    assert_eq!(kept.iter().map(|k| k.0).collect::<Vec<_>>(), vec![2, 3]);
    let rest = run(&cfg, &opts("split", true), |_| false).unwrap();
    assert_eq!(rest.step, 7);
    assert_eq!(losses(&first), losses(&whole)[..3]);
    assert_eq!(
        losses(&rest),
        losses(&whole)[3..],
        "step 4 onward must repeat exactly"
    );
    let w = |t: &em_train::Trained<B>| {
        let m = t.inference_model();
        let mut v = Vec::new();
        burn::module::Module::visit(&m, &mut Flatten(&mut v));
        v
    };
    assert_eq!(w(&rest), w(&whole), "final EMA weights differ");
}

struct Flatten<'a>(&'a mut Vec<f32>);

impl<Bk: burn::tensor::backend::Backend> burn::module::ModuleVisitor<Bk> for Flatten<'_> {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<Bk, D>>,
    ) {
        self.0.extend(
            param
                .val()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap(),
        );
    }
}

#[test]
fn checkpoints_of_another_model_are_refused_before_training() {
    let cfg = resumable();
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    run(&cfg, &opts, |s| s >= 2).unwrap();
    let other =
        TrainConfig::from_toml(&toml::to_string(&cfg).unwrap(), &["model.width=6".into()]).unwrap();
    let resume = RunOptions {
        resume: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let mut steps = 0;
    let e = train::<B>(&other, &opener, &Default::default(), &resume, &mut |_| {
        steps += 1;
        true
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("another model") && e.contains("width: 6"), "{e}");
    assert_eq!(steps, 0);
    let e = run(
        &cfg,
        &RunOptions {
            resume: Some(dir.path().join("nothing-here")),
            ..Default::default()
        },
        |_| false,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("no checkpoint"), "{e}");
}

#[test]
fn a_diverging_run_stops_with_the_last_good_checkpoint() {
    let cfg = TrainConfig::from_toml(
        TINY,
        &[
            "optimizer.lr=1e36".into(),
            "optimizer.warmup=0".into(),
            "optimizer.grad_clip=0".into(),
            "loss.clamp=1e38".into(),
            "checkpoint.every=1".into(),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let e = run(&cfg, &opts, |_| false).err().unwrap();
    let TrainError::NonFinite {
        step, last_good, ..
    } = &e
    else {
        panic!("{e}");
    };
    assert!(*step >= 2, "diverged at step {step}");
    let good = last_good.clone().unwrap();
    assert!(good.join("state.json").is_file());
    assert!(e.to_string().contains("last good checkpoint"), "{e}");
    assert_eq!(
        em_train::checkpoint::list(dir.path())
            .unwrap()
            .last()
            .unwrap()
            .1,
        good
    );
}

#[test]
fn validation_scores_semantic_and_affinity_targets() {
    let mito = TrainConfig::from_toml(
        TINY,
        &[
            "steps=2".into(),
            r#"validation={ every = 1, source = { kind = "synthetic", synth = "mito", shape = [16, 48, 48], seed = 9 } }"#.into(),
        ],
    )
    .unwrap();
    let out = run(&mito, &RunOptions::default(), |_| false).unwrap();
    assert_eq!(out.validations.len(), 2);
    for v in &out.validations {
        let (iou, dice) = (v.metrics["iou"], v.metrics["dice"]);
        assert!((0.0..=1.0).contains(&iou) && dice >= iou, "{v:?}");
    }
    let neurons = TrainConfig::from_toml(
        TINY,
        &[
            "steps=1".into(),
            "model.out_channels=6".into(),
            r#"targets={ kind = "affinities" }"#.into(),
            "data.patch.context=[0, 10, 10]".into(),
            r#"data.sources=[{ source = { kind = "synthetic", synth = "neurons", shape = [16, 96, 96], seed = 2 } }]"#.into(),
            r#"validation={ every = 1, thresholds = [0.5, 0.9], source = { kind = "synthetic", synth = "neurons", shape = [16, 48, 48], seed = 9 } }"#.into(),
        ],
    )
    .unwrap();
    let out = run(&neurons, &RunOptions::default(), |_| false).unwrap();
    let m = &out.validations[0].metrics;
    assert!(
        m["voi"] > 0.0 && (m["voi"] - m["voi_split"] - m["voi_merge"]).abs() < 1e-9,
        "{m:?}"
    );
    assert!([0.5, 0.9].contains(&m["threshold"]) && (0.0..=1.0).contains(&m["arand"]));
    // Synthetic neurons come with section skeletons: NERL picks the threshold.
    assert!((0.0..=1.0).contains(&m["nerl"]) && m["erl"] >= 0.0, "{m:?}");
}

#[test]
fn config_errors_name_the_key() {
    let e = TrainConfig::from_toml(TINY, &["optimizer.lrr=1".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("lrr"), "{e}");
    let e = TrainConfig::from_toml(TINY, &["steps".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("key=value"), "{e}");
    let e = TrainConfig::from_toml(TINY, &["steps=0".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("steps 0"), "{e}");
    let e = TrainConfig::from_toml(TINY, &["accumulate=0".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("accumulate 0"), "{e}");
    let e = TrainConfig::from_toml(TINY, &["validation={ every = 5 }".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("source"), "{e}");
    let e = TrainConfig::from_toml(TINY, &["model=mednext_xs".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("mednext_cpu"), "{e}");
    // A preset by name, then overridden.
    let cfg = TrainConfig::from_toml(TINY, &["model=mednext_cpu".into(), "model.width=6".into()])
        .unwrap();
    assert_eq!(cfg.model.mednext().unwrap().width, 6);
    let cfg =
        TrainConfig::from_toml(TINY, &["batch_size=4".into(), "augment=banis".into()]).unwrap();
    assert_eq!(cfg.batch_size, 4);
    let never = |cfg: &TrainConfig| {
        train::<B>(
            cfg,
            &opener,
            &Default::default(),
            &RunOptions::default(),
            &mut |_| panic!("no step may run"),
        )
        .err()
        .unwrap()
    };
    // banis needs an isotropic cube; the 16×32×32 patch is refused before training.
    assert!(matches!(never(&cfg), TrainError::Augment(_)));
    // A patch larger than the volume.
    let cfg = TrainConfig::from_toml(TINY, &["data.patch.patch=[32, 32, 32]".into()]).unwrap();
    let e = never(&cfg).to_string();
    assert!(e.contains("smaller than the patch"), "{e}");
    // A patch the model cannot take.
    let cfg = TrainConfig::from_toml(TINY, &["data.patch.patch=[12, 32, 32]".into()]).unwrap();
    let e = never(&cfg).to_string();
    assert!(e.contains("multiples of 16"), "{e}");
    // Targets and model disagree.
    let cfg = TrainConfig::from_toml(TINY, &[r#"targets={ kind = "affinities" }"#.into()]).unwrap();
    let e = never(&cfg).to_string();
    assert!(
        e.contains("1 output channels but the targets have 6"),
        "{e}"
    );
    // Missing data files.
    let cfg = TrainConfig::from_toml(
        TINY,
        &[
            r#"data.sources=[{ source = { kind = "lucchi", dir = "/nonexistent/lucchi" } }]"#
                .into(),
        ],
    )
    .unwrap();
    let e = never(&cfg).to_string();
    assert!(e.contains("/nonexistent/lucchi"), "{e}");
}

#[test]
fn every_training_preset_parses_and_is_consistent() {
    for (name, _) in em_train::PRESETS {
        let cfg = TrainConfig::load(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            cfg.model.channels().1,
            cfg.targets.channels(),
            "{name}: model outputs vs targets"
        );
        let w = cfg.inference_config().window;
        assert!(w.iter().all(|&s| s % 16 == 0), "{name}: window {w:?}");
    }
    let e = TrainConfig::load("lucchi_gpu", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("lucchi_cpu"), "{e}");
}
