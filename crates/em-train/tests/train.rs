//! A tiny end-to-end run (seconds): a small MedNeXt learns synthetic mitochondria's
//! foreground, the loss falls; configuration errors name the key.

use std::path::Path;

use em_core::ChunkedVolume;
use em_train::{train, TrainConfig, TrainError};

const TINY: &str = r#"
seed = 1
steps = 40
batch_size = 2
workers = 1
augment = "light"
log_every = 5

[model]
arch = "mednext_custom"
in_channels = 1
out_channels = 1
width = 4
kernel_size = 3
ratios = [2, 2, 2, 2, 2, 2, 2, 2, 2]
blocks = [1, 1, 1, 1, 1, 1, 1, 1, 1]

[data]
patch = { patch = [16, 32, 32], epoch_len = 64 }

[[data.sources]]
source = { kind = "synthetic", synth = "mito", shape = [16, 96, 96], seed = 2 }

[targets]
kind = "foreground"

[optimizer]
lr = 3e-3
warmup = 4
"#;

fn opener(p: &Path) -> Result<Box<dyn ChunkedVolume>, String> {
    em_io::open(p).map_err(|e| e.to_string())
}

#[test]
fn a_tiny_model_learns_and_the_loss_falls() {
    let cfg = TrainConfig::from_toml(TINY, &[]).unwrap();
    let mut seen = 0;
    let out = train::<em_models::CpuTrain>(&cfg, &opener, &Default::default(), &mut |_| {
        seen += 1;
        true
    })
    .unwrap();
    assert_eq!(out.log.len(), 40);
    assert_eq!(seen, 40);
    let mean = |s: &[em_train::StepLog]| s.iter().map(|l| l.loss).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&out.log[..8]), mean(&out.log[32..]));
    assert!(last < 0.8 * first, "loss {first:.3} → {last:.3}");
    // Warm-up then cosine: the learning rate rises, peaks, and falls.
    assert!(out.log[0].lr < out.log[4].lr && out.log[39].lr < out.log[10].lr);
    // Stopping early (a signal handler returning false) ends the run cleanly.
    let short =
        train::<em_models::CpuTrain>(&cfg, &opener, &Default::default(), &mut |l| l.step < 3)
            .unwrap();
    assert_eq!(short.log.len(), 3);
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
    let cfg =
        TrainConfig::from_toml(TINY, &["batch_size=4".into(), "augment=banis".into()]).unwrap();
    assert_eq!(cfg.batch_size, 4);
    // banis needs an isotropic cube; the 16×32×32 patch is refused before training.
    let e = train::<em_models::CpuTrain>(&cfg, &opener, &Default::default(), &mut |_| true)
        .err()
        .unwrap();
    assert!(matches!(e, TrainError::Augment(_)), "{e}");
    // A patch larger than the volume is an error before training.
    let cfg = TrainConfig::from_toml(TINY, &["data.patch.patch=[32, 32, 32]".into()]).unwrap();
    let e = train::<em_models::CpuTrain>(&cfg, &opener, &Default::default(), &mut |_| true)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("smaller than the patch"), "{e}");
}
