//! `em train CONFIG.toml`: trains with a progress bar, a JSONL log of every step, and the
//! final weights as safetensors (MONAI key names for MedNeXt, so `em model forward` and
//! PyTorch read them).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::module::AutodiffModule;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use em_core::ChunkedVolume;
use em_models::{CpuTrain, Model};
use em_train::{train, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Arguments of `em train`.
#[derive(clap::Args, Debug)]
pub(crate) struct TrainArgs {
    /// The training config (TOML).
    config: PathBuf,
    /// Output directory: metrics.jsonl, config.toml (as run), model.safetensors, loss.png.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Override a config value: --set optimizer.lr=2e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn opener(p: &Path) -> Result<Box<dyn ChunkedVolume>, String> {
    em_io::open(p).map_err(|e| e.to_string())
}

pub(crate) fn run(a: &TrainArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let cfg = TrainConfig::from_toml(&text, &a.set)?;
    // Everything that can fail before training does so now: the output directory.
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let resolved = toml::to_string(&cfg).context("serialising the config")?;
    std::fs::write(a.out.join("config.toml"), resolved)
        .with_context(|| format!("{} is not writable", a.out.display()))?;
    let log_path = a.out.join("metrics.jsonl");
    let mut log = std::io::BufWriter::new(
        std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?,
    );

    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut write_err = None;
    let trained = train::<CpuTrain>(&cfg, &opener, &Default::default(), &mut |s| {
        bar.set_position(s.step as u64);
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} vox/s",
            s.loss, s.lr, s.voxels_per_s
        ));
        if let Err(e) = serde_json::to_writer(&mut log, s)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(log))
        {
            write_err = Some(e);
            return false;
        }
        if s.step % cfg.log_every == 0 {
            let _ = log.flush();
        }
        true
    });
    bar.finish_and_clear();
    log.flush()
        .with_context(|| format!("writing {}", log_path.display()))?;
    if let Some(e) = write_err {
        return Err(e).with_context(|| format!("writing {}", log_path.display()));
    }
    let trained = trained?;

    let weights = a.out.join("model.safetensors");
    let tmp = a.out.join(".model.safetensors.partial");
    let mut store = SafetensorsStore::from_file(&tmp).with_to_adapter(BurnToPyTorchAdapter);
    match trained.model.valid() {
        Model::MedNeXt(m) => m.save_into(&mut store),
        Model::RsUNet(m) => m.save_into(&mut store),
    }
    .map_err(|e| anyhow::anyhow!("writing {}: {e}", weights.display()))?;
    std::fs::rename(&tmp, &weights)
        .with_context(|| format!("moving {} into place", weights.display()))?;
    let losses: Vec<f64> = trained.log.iter().map(|l| l.loss).collect();
    let curve = a.out.join("loss.png");
    em_io::png::line_chart("training loss per step", &losses, 720, 360).save_png(&curve)?;
    let last = trained.log.last();
    println!(
        "{}",
        json!({"steps": trained.log.len(), "final_loss": last.map(|l| l.loss),
               "seconds": last.map(|l| l.elapsed_s), "out": a.out.display().to_string(),
               "model": weights.display().to_string(), "metrics": log_path.display().to_string(),
               "loss_curve": curve.display().to_string()})
    );
    Ok(())
}
