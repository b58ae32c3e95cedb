//! `em model summary|forward|import`: MedNeXt architecture facts, one forward pass, and
//! checkpoint conversion.

use std::path::PathBuf;

use anyhow::Context;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use em_core::AnyArray;
use em_models::{config_from_checkpoint, load_mednext, Cpu, MedNeXtConfig, MedNeXtSize, Variant};
use serde_json::json;

/// `em model …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum ModelCommand {
    /// Layers, parameter count and activation memory of an architecture.
    Summary(SummaryArgs),
    /// One forward pass (eval mode) of an .npy input with given weights.
    Forward(ForwardArgs),
    /// Convert a PyTorch/MONAI/original checkpoint into MONAI-named safetensors.
    Import(ImportArgs),
}

/// Arguments of `em model summary`.
#[derive(clap::Args, Debug)]
pub(crate) struct SummaryArgs {
    /// Architecture (only `mednext` today).
    #[arg(long, default_value = "mednext")]
    arch: String,
    /// Size: S, B, M or L.
    #[arg(long, default_value = "S")]
    size: String,
    /// Depthwise kernel side (odd).
    #[arg(long, default_value_t = 3)]
    kernel: usize,
    /// Input channels.
    #[arg(long = "in", default_value_t = 1)]
    in_channels: usize,
    /// Output channels.
    #[arg(long = "out", default_value_t = 3)]
    out_channels: usize,
    /// Deep-supervision heads.
    #[arg(long)]
    deep_supervision: bool,
    /// Down-block ratio convention: original or monai.
    #[arg(long, default_value = "original")]
    variant: String,
    /// Patch z,y,x for the memory estimate.
    #[arg(long, value_delimiter = ',', default_value = "128,128,128")]
    patch: Vec<usize>,
    /// Batch size for the memory estimate.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `em model forward`.
#[derive(clap::Args, Debug)]
pub(crate) struct ForwardArgs {
    /// Weights (.safetensors, .pt, .pth; MONAI or original names; configuration read off it).
    #[arg(long)]
    weights: PathBuf,
    /// Input `(N, C, Z, Y, X)` or `(C, Z, Y, X)` float32 .npy.
    #[arg(long)]
    input: PathBuf,
    /// Output logits .npy `(N, K, Z, Y, X)`.
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `em model import`.
#[derive(clap::Args, Debug)]
pub(crate) struct ImportArgs {
    /// Checkpoint to read.
    #[arg(long)]
    from: PathBuf,
    /// MONAI-named .safetensors to write.
    #[arg(long)]
    out: PathBuf,
    /// Accept missing or unused tensors (reported) instead of failing.
    #[arg(long)]
    partial: bool,
}

pub(crate) fn run(cmd: &ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Summary(a) => summary(a),
        ModelCommand::Forward(a) => forward(a),
        ModelCommand::Import(a) => import(a),
    }
}

fn summary(a: &SummaryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.arch == "mednext", "--arch {:?}: allowed: mednext", a.arch);
    let size: MedNeXtSize = a.size.parse()?;
    let variant: Variant = a.variant.parse()?;
    let config = MedNeXtConfig::size(size, a.kernel, a.in_channels, a.out_channels)
        .with_deep_supervision(a.deep_supervision)
        .with_variant(variant);
    let model = config.init::<Cpu>(&Default::default())?;
    let params = model.num_params();
    let [pz, py, px] = match a.patch.as_slice() {
        &[z, y, x] => [z, y, x],
        other => anyhow::bail!("--patch takes z,y,x, got {other:?}"),
    };
    let names = [
        "enc 0",
        "enc 1",
        "enc 2",
        "enc 3",
        "bottleneck",
        "dec 3",
        "dec 2",
        "dec 1",
        "dec 0",
    ];
    let levels = [0usize, 1, 2, 3, 4, 3, 2, 1, 0];
    let stages: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"stage": name, "channels": config.width << levels[i], "ratio": config.ratios[i],
                   "blocks": config.blocks[i], "resolution": format!("1/{}", 1 << levels[i])})
        })
        .collect();
    let memory = config.training_memory([pz, py, px], a.batch, 4, params);
    if a.json {
        println!(
            "{}",
            json!({"arch": "mednext", "size": a.size.to_uppercase(), "kernel": a.kernel, "variant": a.variant,
                   "deep_supervision": a.deep_supervision, "parameters": params, "stages": stages,
                   "training_memory": memory})
        );
    } else {
        println!(
            "MedNeXt-{} k{} ({}), in {} out {}{}",
            a.size.to_uppercase(),
            a.kernel,
            a.variant,
            a.in_channels,
            a.out_channels,
            if a.deep_supervision {
                ", deep supervision"
            } else {
                ""
            }
        );
        for s in &stages {
            println!(
                "  {:<11} {:>4} ch  ratio {}  {} blocks  at {}",
                s["stage"].as_str().unwrap_or(""),
                s["channels"],
                s["ratio"],
                s["blocks"],
                s["resolution"].as_str().unwrap_or("")
            );
        }
        println!(
            "{params} parameters ({:.0} MiB with gradients and AdamW moments)",
            memory.parameter_bytes as f64 / 1048576.0
        );
        println!(
            "training step, {pz}×{py}×{px} × batch {}: activations {:.0} + backward {:.0} bytes/voxel; peak ≈ {:.2} GiB (float32, estimate within ~10% of measured steps on the CPU backend)",
            a.batch,
            memory.activation_bytes_per_voxel,
            memory.backward_bytes_per_voxel,
            memory.total_bytes as f64 / f64::from(1 << 30)
        );
    }
    Ok(())
}

fn forward(a: &ForwardArgs) -> anyhow::Result<()> {
    let config = config_from_checkpoint(&a.weights)?;
    let device = Default::default();
    let mut model = config.init::<Cpu>(&device)?;
    let report = load_mednext(&mut model, &a.weights, false)?;
    anyhow::ensure!(
        report.missing.is_empty() && report.errors.is_empty(),
        "{}: missing {:?}, mismatched {:?}",
        a.weights.display(),
        report.missing,
        report.errors
    );
    let input = em_io::read(&a.input)?
        .into_typed::<f32>()
        .with_context(|| format!("{} must be float32", a.input.display()))?;
    let mut shape = input.shape().to_vec();
    if shape.len() == 4 {
        shape.insert(0, 1);
    }
    anyhow::ensure!(
        shape.len() == 5,
        "{}: shape {:?}; give (N, C, Z, Y, X) or (C, Z, Y, X)",
        a.input.display(),
        input.shape()
    );
    let data = TensorData::new(
        input
            .as_standard_layout()
            .iter()
            .copied()
            .collect::<Vec<f32>>(),
        shape,
    );
    let y = model.forward(Tensor::<Cpu, 5>::from_data(data, &device))?;
    let dims = y.dims();
    let values: Vec<f32> = y
        .into_data()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let out = ndarray::ArrayD::from_shape_vec(dims.to_vec(), values)?;
    em_io::write(&a.out, &AnyArray::from(out))?;
    println!(
        "{}",
        json!({"out": a.out.display().to_string(), "shape": dims, "unused_tensors": report.unused})
    );
    Ok(())
}

fn import(a: &ImportArgs) -> anyhow::Result<()> {
    use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
    let config = config_from_checkpoint(&a.from)?;
    let mut model = config.init::<Cpu>(&Default::default())?;
    let report = load_mednext(&mut model, &a.from, !a.partial)?;
    // Write to a staging name, then rename: never a half-written file under the final name.
    let tmp = a.out.with_extension("safetensors.partial");
    let mut store = SafetensorsStore::from_file(&tmp).with_to_adapter(BurnToPyTorchAdapter);
    model
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", a.out.display()))?;
    std::fs::rename(&tmp, &a.out)
        .with_context(|| format!("moving {} into place", a.out.display()))?;
    println!(
        "{}",
        json!({"out": a.out.display().to_string(), "naming": format!("{:?}", report.naming), "applied": report.applied,
               "missing": report.missing, "unused": report.unused, "config": config})
    );
    Ok(())
}
