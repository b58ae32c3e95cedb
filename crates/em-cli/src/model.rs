//! `em model summary|forward|import`: MedNeXt architecture facts, one forward pass, and
//! checkpoint conversion.

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::{Tensor, TensorData};
use em_core::AnyArray;
use em_models::{config_from_checkpoint, load_mednext, Cpu, MedNeXtConfig, MedNeXtSize, Variant};
use serde_json::json;

use crate::guard;

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
    /// Replace an existing output file (never the input or the weights).
    #[arg(long)]
    overwrite: bool,
    /// Where to run: auto, cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: em_train::DeviceChoice,
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
    /// Replace an existing output file (never the checkpoint read).
    #[arg(long)]
    overwrite: bool,
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
    config.validate()?;
    // Counted, not built: a summary of any size costs nothing.
    let params = config
        .parameter_count()
        .and_then(|p| usize::try_from(p).ok())
        .with_context(|| {
            format!(
                "kernel {}, {} input and {} output channels: the parameter count overflows",
                a.kernel, a.in_channels, a.out_channels
            )
        })?;
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

/// Bytes of building a MedNeXt and running a forward pass on `input` `(N, C, Z, Y, X)`
/// (or `(C, Z, Y, X)`).
fn forward_memory(config: &MedNeXtConfig, input: &[u64]) -> Option<u64> {
    let voxels = match input {
        [n, _, z, y, x] => em_autoconf::bytes_of(&[*n, *z, *y, *x], 1)?,
        [_, z, y, x] => em_autoconf::bytes_of(&[*z, *y, *x], 1)?,
        _ => 0,
    };
    config.inference_memory(voxels)
}

/// Notes the float types converted to float32 on load.
fn note_conversions(path: &std::path::Path, converted: &[(String, usize)]) {
    for (dtype, n) in converted {
        eprintln!(
            "note: {}: {n} {dtype} tensors converted to float32",
            path.display()
        );
    }
}

fn forward(a: &ForwardArgs) -> anyhow::Result<()> {
    guard::outputs(&[&a.out], &[&a.input, &a.weights], a.overwrite)?;
    let config = config_from_checkpoint(&a.weights)?;
    if let Some((shape, _)) = guard::peek(&a.input)? {
        guard::memory(
            &format!("a forward pass on {}", a.input.display()),
            forward_memory(&config, &shape),
            "crop the input, or predict it window by window with `em infer`",
        )?;
    }
    let (device, why) = em_train::resolve_device(a.device, &em_autoconf::probe())?;
    eprintln!("device: {why}");
    let (dims, values, report) = em_train::on_device(device, Forward { a, config: &config })??;
    let out = ndarray::ArrayD::from_shape_vec(dims.to_vec(), values)?;
    em_io::write(&a.out, &AnyArray::from(out))?;
    println!(
        "{}",
        json!({"out": a.out.display().to_string(), "shape": dims, "unused_tensors": report.unused,
               "device": device.name()})
    );
    Ok(())
}

/// `em model forward`'s work on a backend.
struct Forward<'a> {
    a: &'a ForwardArgs,
    config: &'a MedNeXtConfig,
}

impl em_train::OnDevice for Forward<'_> {
    type Output = anyhow::Result<(Vec<usize>, Vec<f32>, em_models::LoadReport)>;

    /// Loads the weights on `device` and runs the input through: `(dims, values, report)`.
    fn run<B: em_models::ConvBackend>(self, device: &B::Device) -> Self::Output {
        let (a, config) = (self.a, self.config);
        let mut model = config.init::<B>(device)?;
        let report = load_mednext(&mut model, &a.weights, false)?;
        note_conversions(&a.weights, &report.converted);
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
        let y = model.forward(Tensor::<B, 5>::from_data(data, device))?;
        let dims = y.dims().to_vec();
        let values: Vec<f32> = y
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok((dims, values, report))
    }
}

fn import(a: &ImportArgs) -> anyhow::Result<()> {
    guard::outputs(&[&a.out], &[&a.from], a.overwrite)?;
    let config = config_from_checkpoint(&a.from)?;
    guard::memory(
        &format!("importing {}", a.from.display()),
        config.parameter_count().and_then(|p| p.checked_mul(8)),
        "this checkpoint is larger than the memory this process may use",
    )?;
    let mut model = config.init::<Cpu>(&Default::default())?;
    let report = load_mednext(&mut model, &a.from, !a.partial)?;
    note_conversions(&a.from, &report.converted);
    // Staged and renamed: never a half-written file under the final name.
    em_models::save_weights(&em_models::Model::MedNeXt(model), &a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{}",
        json!({"out": a.out.display().to_string(), "naming": format!("{:?}", report.naming), "applied": report.applied,
               "missing": report.missing, "unused": report.unused, "config": config})
    );
    Ok(())
}
