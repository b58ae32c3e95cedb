//! `em infer`: sliding-window prediction of a volume with a trained model, written as zarr
//! (streamed, any size) or TIFF/npy/HDF5 (in memory), then optionally decoded.

use std::path::PathBuf;

use em_io::ome::PyramidKind;
use em_train::{DeviceChoice, PredictVolumeOptions, Tta, VolumePrediction};

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
    tta: Option<TtaArg>,
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
    #[command(flatten)]
    ome: crate::ome::OmeArgs,
}

/// `--tta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TtaArg {
    None,
    Flip,
    Rot90,
}

pub(crate) fn run(a: &InferArgs) -> anyhow::Result<()> {
    let config = match (&a.config, &a.run) {
        (Some(c), _) => c.clone(),
        (None, Some(r)) => r.join("config.toml").display().to_string(),
        (None, None) => {
            anyhow::bail!("give --run DIR (a training output) or --config and --weights")
        }
    };
    let weights = match (&a.weights, &a.run) {
        (Some(w), _) => w.clone(),
        (None, Some(r)) => r.join("model.safetensors"),
        (None, None) => anyhow::bail!("give --weights with --config"),
    };
    let config_file = match (&a.config, &a.run) {
        (Some(c), _) => Some(PathBuf::from(c)).filter(|p| p.is_file()),
        (None, Some(r)) => Some(r.join("config.toml")),
        (None, None) => None,
    };
    let window = match a.window.as_deref() {
        None => None,
        Some(&[z, y, x]) => Some([z, y, x]),
        Some(other) => anyhow::bail!("--window takes z,y,x, got {other:?}"),
    };
    let mut outputs = vec![a.out.as_path()];
    outputs.extend(a.decode.as_deref());
    a.ome.check(&outputs)?;
    let prediction = VolumePrediction::prepare(&PredictVolumeOptions {
        config,
        config_file,
        weights,
        input: a.input.clone(),
        out: a.out.clone(),
        window,
        overlap: a.overlap,
        tta: a.tta.map(|t| match t {
            TtaArg::None => Tta::None,
            TtaArg::Flip => Tta::Flip,
            TtaArg::Rot90 => Tta::Rot90,
        }),
        batch: a.batch,
        decode: a.decode.clone(),
        threshold: a.threshold,
        min_size: a.min_size,
        overwrite: a.overwrite,
        device: a.device,
    })?;
    eprintln!("device: {}", prediction.device_reason);
    for note in &prediction.notes {
        eprintln!("{note}");
    }
    let bar = Bar::new();
    let report = prediction.run(&bar);
    bar.0.finish_and_clear();
    let mut report = serde_json::to_value(report?)?;
    let input = Some(a.input.as_path());
    let mut ome = a
        .ome
        .apply(std::slice::from_ref(&a.out), input, PyramidKind::Image)?;
    if let Some(seg) = &a.decode {
        ome.extend(
            a.ome
                .apply(std::slice::from_ref(seg), input, PyramidKind::Labels)?,
        );
    }
    if !ome.is_empty() {
        report["ome"] = serde_json::to_value(&ome)?;
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
