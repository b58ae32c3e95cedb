//! `em infer`: sliding-window prediction of a volume with a trained model, written as zarr
//! (streamed, any size) or TIFF/npy/HDF5 (in memory), then optionally decoded.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use em_core::ChunkedVolume;
use em_core::{AnyArray, ChunkedVolumeExt, DType, InMemoryVolume};
use em_data::TargetSpec;
use em_io::{Format, VolumePath, ZarrOptions, ZarrWriter};
use em_models::{
    load_weights, model_predictor, sliding_window, ConvBackend, Model, SlidingWindowConfig,
};
use em_train::{DeviceChoice, TrainConfig};
use serde_json::json;

use crate::decode::DecodeArgs;
use crate::guard;
use crate::progress::Bar;

/// Arguments of `em infer`.
#[derive(clap::Args, Debug)]
pub(crate) struct InferArgs {
    /// A training output directory (its config.toml and model.safetensors).
    #[arg(long)]
    run: Option<PathBuf>,
    /// The training config (default: RUN/config.toml); a path or a preset name.
    #[arg(long)]
    config: Option<String>,
    /// The weights (default: RUN/model.safetensors): a .safetensors file, or a checkpoint
    /// directory (`checkpoints/step-N`, or a directory of them: the newest).
    #[arg(long, visible_alias = "checkpoint")]
    weights: Option<PathBuf>,
    /// The image: (Z, Y, X) or (C, Z, Y, X), uint8 or float32 (.npy, .tif, DIR.zarr/array,
    /// FILE.h5/dataset).
    #[arg(long)]
    input: PathBuf,
    /// Probabilities (K, Z, Y, X) float32: DIR.zarr[/array] is written window row by window
    /// row (any size); .tif, .npy and .h5 are assembled in memory.
    #[arg(long)]
    out: PathBuf,
    /// Window z,y,x (default: the config's [inference] window, else the training patch).
    #[arg(long, value_delimiter = ',')]
    window: Option<Vec<usize>>,
    /// Overlap per axis as a fraction of the window, in [0, 1).
    #[arg(long)]
    overlap: Option<f32>,
    /// Test-time augmentation: none, flip (8 flips) or rot90 (16 flips and turns).
    #[arg(long)]
    tta: Option<Tta>,
    /// Windows (augmentation variants included) per forward pass (default: the config's
    /// [inference] batch, else 1); larger batches keep a GPU busy, the result is the same.
    #[arg(long)]
    batch: Option<usize>,
    /// After predicting, write a segmentation here: affinities are decoded (BANIS
    /// connected components), one-channel probabilities thresholded into a 0/1 uint8 mask.
    #[arg(long)]
    decode: Option<PathBuf>,
    /// Threshold of the decode.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Decoded objects smaller than this many voxels go to background.
    #[arg(long, default_value_t = 0)]
    min_size: u64,
    /// Replace existing outputs (never the input, the weights, a group or a directory).
    #[arg(long)]
    overwrite: bool,
    /// Where to predict: auto (a GPU when this build has CUDA and one is visible, else the
    /// CPU), cpu, cuda, cuda:N, or wgpu.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Tta {
    None,
    Flip,
    Rot90,
}

fn load_config(a: &InferArgs) -> anyhow::Result<TrainConfig> {
    let name = match (&a.config, &a.run) {
        (Some(c), _) => c.clone(),
        (None, Some(r)) => r.join("config.toml").display().to_string(),
        (None, None) => {
            anyhow::bail!("give --run DIR (a training output) or --config and --weights")
        }
    };
    Ok(TrainConfig::load(&name, &[])?)
}

/// The config's model with `weights`: a .safetensors file or a checkpoint directory.
pub(crate) fn load_model<B: ConvBackend>(
    cfg: &TrainConfig,
    weights: &Path,
    device: &B::Device,
) -> anyhow::Result<Model<B>> {
    Ok(if weights.is_dir() {
        em_train::checkpoint::load_for_inference(weights, cfg, device)?
    } else {
        let mut model = cfg.model.build(device)?;
        load_weights(&mut model, weights)
            .with_context(|| format!("loading {} into the config's model", weights.display()))?;
        model
    })
}

/// The window, clamped to the volume (rounded up to what the model divides by): a window
/// larger than the volume only adds padding to compute on. Sides must be multiples of the
/// model's divisors.
fn fit_window(
    window: [usize; 3],
    spatial: &[u64],
    divisors: [usize; 3],
) -> anyhow::Result<[usize; 3]> {
    let mut out = window;
    for a in 0..3 {
        let d = divisors[a].max(1);
        anyhow::ensure!(
            window[a] >= 1 && window[a].is_multiple_of(d),
            "window {window:?}: each side must be a positive multiple of {divisors:?} for this \
             model"
        );
        let covering = usize::try_from(spatial[a])
            .unwrap_or(usize::MAX)
            .max(1)
            .div_ceil(d)
            .saturating_mul(d);
        out[a] = window[a].min(covering);
    }
    Ok(out)
}

/// Bytes the prediction holds: the model on one window, and for outputs assembled in
/// memory the whole prediction (twice while it is written) and an in-memory input.
fn memory_needed(
    cfg: &TrainConfig,
    window: [usize; 3],
    batch: usize,
    input_bytes: Option<u64>,
    out_shape: &[u64],
    streamed: bool,
) -> Option<u64> {
    let model = match cfg.model.mednext() {
        Some(m) => m.inference_memory(guard::bytes_of(&window.map(|w| w as u64), batch as u64)?)?,
        None => 0,
    };
    let output = if streamed {
        0
    } else {
        guard::bytes_of(out_shape, 4)?.checked_mul(2)?
    };
    model
        .checked_add(output)?
        .checked_add(input_bytes.unwrap_or(0))
}

pub(crate) fn run(a: &InferArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let cfg = load_config(a)?;
    let weights = match (&a.weights, &a.run) {
        (Some(w), _) => w.clone(),
        (None, Some(r)) => r.join("model.safetensors"),
        (None, None) => anyhow::bail!("give --weights with --config"),
    };
    // Nothing is computed before the outputs are known to be safe to write.
    let config_file = match (&a.config, &a.run) {
        (Some(c), _) => Some(PathBuf::from(c)).filter(|p| p.is_file()),
        (None, Some(r)) => Some(r.join("config.toml")),
        (None, None) => None,
    };
    let mut inputs: Vec<&Path> = vec![&a.input, &weights];
    inputs.extend(config_file.as_deref());
    let mut outputs: Vec<&Path> = vec![&a.out];
    outputs.extend(a.decode.as_deref());
    guard::outputs(&outputs, &inputs, a.overwrite)?;
    let (device, why) = em_train::resolve_device(a.device, &em_autoconf::probe())?;
    eprintln!("device: {why}");
    let mut settings = cfg.inference_config();
    if let Some(w) = &a.window {
        settings.window = match w.as_slice() {
            &[z, y, x] => [z, y, x],
            other => anyhow::bail!("--window takes z,y,x, got {other:?}"),
        };
    }
    if let Some(o) = a.overlap {
        settings.overlap = [o; 3];
    }
    if let Some(b) = a.batch {
        anyhow::ensure!(b >= 1, "--batch must be at least 1");
        settings.batch = b;
    }
    match a.tta {
        Some(Tta::None) => (settings.flip_tta, settings.rot90_tta) = (false, false),
        Some(Tta::Flip) => (settings.flip_tta, settings.rot90_tta) = (true, false),
        Some(Tta::Rot90) => (settings.flip_tta, settings.rot90_tta) = (false, true),
        None => {}
    }
    let (in_ch, k) = cfg.model.channels();
    let input = em_io::open(&a.input)?;
    let ish = input.shape().to_vec();
    let spatial: Vec<u64> = match (ish.len(), in_ch) {
        (3, 1) => ish.clone(),
        (4, c) if ish[0] as usize == c => ish[1..].to_vec(),
        _ => anyhow::bail!(
            "{}: shape {ish:?}; the model takes {in_ch} channel(s): give (Z, Y, X){} or ({in_ch}, Z, Y, X)",
            a.input.display(),
            if in_ch == 1 { "" } else { " only for 1" }
        ),
    };
    let mut out_shape = vec![k as u64];
    out_shape.extend(&spatial);
    let target = VolumePath::parse(&a.out)?;
    let tiff = target.format == Format::Tiff;
    anyhow::ensure!(
        !tiff || k == 1,
        "{}: a TIFF stack holds one channel and this model predicts {k}; write .zarr, .npy or .h5",
        a.out.display()
    );
    let requested = settings.window;
    settings.window = fit_window(requested, &spatial, cfg.model.divisors())?;
    if settings.rot90_tta {
        // Turns need a square window in y, x.
        let side = settings.window[1].max(settings.window[2]);
        settings.window[1] = side;
        settings.window[2] = side;
    }
    if settings.window != requested {
        eprintln!(
            "window {requested:?} is larger than the volume {spatial:?}; using {:?}",
            settings.window
        );
    }
    let streamed = target.format == Format::Zarr;
    let in_memory_input = match VolumePath::parse(&a.input)?.format {
        Format::Npy | Format::Tiff => Some(guard::bytes_of(&ish, 4).unwrap_or(u64::MAX)),
        _ => None,
    };
    guard::memory(
        &format!("predicting {}", a.input.display()),
        memory_needed(
            &cfg,
            settings.window,
            settings.batch,
            in_memory_input,
            &out_shape,
            streamed,
        ),
        "use a smaller --window, or write DIR.zarr (streamed, any size)",
    )?;
    let bar = Bar::new();
    let job = Prediction {
        cfg: &cfg,
        weights: &weights,
        input: input.as_ref(),
        out: &a.out,
        target: &target,
        settings: &settings,
        out_shape: &out_shape,
        spatial: &spatial,
        bar: &bar,
    };
    em_train::on_device(device, &job)??;
    bar.0.finish_and_clear();
    let predicted_s = start.elapsed().as_secs_f64();
    let voxels: u64 = spatial.iter().product();
    let mut report = json!({"out": a.out.display().to_string(), "shape": out_shape,
        "seconds": predicted_s, "voxels_per_s": voxels as f64 / predicted_s.max(1e-9),
        "window": settings.window, "flip_tta": settings.flip_tta, "rot90_tta": settings.rot90_tta});
    if let Some(seg) = &a.decode {
        match &cfg.targets {
            TargetSpec::Affinities { offsets, storage } => {
                let unit: Vec<_> = offsets.as_slice()[..3.min(offsets.len())].to_vec();
                anyhow::ensure!(
                    unit.iter()
                        .map(|o| o.0)
                        .eq([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
                    "--decode needs the unit offsets as the first three affinity channels, found {unit:?}"
                );
                crate::decode::run(&DecodeArgs::after_inference(
                    a.out.clone(),
                    seg.clone(),
                    a.threshold,
                    *storage,
                    a.min_size,
                    a.overwrite,
                ))?;
            }
            _ => {
                write_mask(&a.out, seg, a.threshold)?;
            }
        }
        report["decode"] = json!(seg.display().to_string());
    }
    println!("{report}");
    Ok(())
}

/// `probability > threshold` of a one-channel prediction as a 0/1 uint8 `(Z, Y, X)` volume.
fn write_mask(probabilities: &Path, out: &Path, threshold: f32) -> anyhow::Result<()> {
    let p = em_io::read(probabilities)?.into_typed::<f32>()?;
    // TIFF predictions are already (Z, Y, X).
    let p = if p.ndim() == 4 {
        p.index_axis_move(ndarray::Axis(0), 0)
    } else {
        p
    };
    let mask = p.mapv(|v| u8::from(v > threshold));
    em_io::write(out, &AnyArray::from(mask))?;
    Ok(())
}

/// One prediction: everything but the backend.
struct Prediction<'a> {
    cfg: &'a TrainConfig,
    weights: &'a Path,
    input: &'a dyn ChunkedVolume,
    out: &'a Path,
    target: &'a VolumePath,
    settings: &'a SlidingWindowConfig,
    out_shape: &'a [u64],
    spatial: &'a [u64],
    bar: &'a Bar,
}

impl em_train::OnDevice for &Prediction<'_> {
    type Output = anyhow::Result<()>;

    /// Loads the model on `device` and predicts the whole volume into the output.
    fn run<B: ConvBackend>(self, device: &B::Device) -> anyhow::Result<()> {
        let model = load_model::<B>(self.cfg, self.weights, device)?;
        let mut predictor = model_predictor(&model, device);
        if self.target.format == Format::Zarr {
            let w = self.settings.window;
            let options = ZarrOptions {
                chunk_shape: Some(vec![
                    1,
                    w[0].min(self.spatial[0] as usize) as u64,
                    128.min(self.spatial[1]),
                    128.min(self.spatial[2]),
                ]),
                ..ZarrOptions::default()
            };
            let writer = ZarrWriter::create(self.target, self.out_shape, DType::F32, &options)?;
            sliding_window(
                self.input,
                writer.volume(),
                self.settings,
                &mut predictor,
                self.bar,
            )?;
            writer.commit()?;
        } else {
            let dims: Vec<usize> = self.out_shape.iter().map(|&d| d as usize).collect();
            let output = InMemoryVolume::new(
                AnyArray::from(ndarray::ArrayD::<f32>::zeros(dims)),
                "prediction",
            );
            sliding_window(self.input, &output, self.settings, &mut predictor, self.bar)?;
            let mut result = output.read_all()?;
            if self.target.format == Format::Tiff {
                // (1, Z, Y, X) → (Z, Y, X): TIFF stacks have no channel axis.
                let p = result.into_typed::<f32>()?;
                result = AnyArray::from(p.index_axis_move(ndarray::Axis(0), 0));
            }
            em_io::write(self.out, &result)?;
        }
        Ok(())
    }
}
