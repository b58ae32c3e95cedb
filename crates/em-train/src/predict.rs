//! Predicting a whole volume with a trained model, as `em infer` does: checks before any
//! work (outputs never replace inputs, the image fits the model, the memory suffices), the
//! sliding window on the chosen device — streamed into zarr window row by window row, or
//! assembled in memory for TIFF, npy and HDF5 — and optionally a segmentation of the
//! prediction (affinities decoded, one-channel probabilities thresholded).

use std::path::{Path, PathBuf};
use std::time::Instant;

use em_autoconf::bytes_of;
use em_core::{AnyArray, ChunkedVolume, ChunkedVolumeExt, DType, InMemoryVolume, Progress};
use em_data::TargetSpec;
use em_io::{Existing, Format, VolumePath, ZarrOptions, ZarrWriter};
use em_models::{model_predictor, sliding_window, ConvBackend, SlidingWindowConfig};

use crate::{load_model, on_device, resolve_device, Device, DeviceChoice, OnDevice};
use crate::{Result, TrainConfig, TrainError};

/// Test-time augmentation of a prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tta {
    /// None.
    None,
    /// The 8 flips.
    Flip,
    /// The 16 flips and in-plane turns.
    Rot90,
}

/// What `em infer` asks for.
#[derive(Clone, Debug)]
pub struct PredictVolumeOptions {
    /// The training config: a path or a preset name.
    pub config: String,
    /// The config's file, if it is one (checked against the outputs).
    pub config_file: Option<PathBuf>,
    /// The weights: a .safetensors file or a checkpoint directory.
    pub weights: PathBuf,
    /// The image: (Z, Y, X) or (C, Z, Y, X).
    pub input: PathBuf,
    /// The probabilities `(K, Z, Y, X)`.
    pub out: PathBuf,
    /// The window, instead of the config's.
    pub window: Option<[usize; 3]>,
    /// The overlap per axis, instead of the config's.
    pub overlap: Option<f32>,
    /// Test-time augmentation, instead of the config's.
    pub tta: Option<Tta>,
    /// Windows per forward pass, instead of the config's.
    pub batch: Option<usize>,
    /// A segmentation of the prediction, written here.
    pub decode: Option<PathBuf>,
    /// The threshold of that segmentation.
    pub threshold: f32,
    /// Decoded objects smaller than this go to background.
    pub min_size: u64,
    /// Replace existing outputs (never an input).
    pub overwrite: bool,
    /// Where to predict.
    pub device: DeviceChoice,
}

/// What [`VolumePrediction::run`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PredictVolumeReport {
    /// The probabilities.
    pub out: PathBuf,
    /// Their shape `(K, Z, Y, X)`.
    pub shape: Vec<u64>,
    /// Seconds of prediction.
    pub seconds: f64,
    /// Voxels per second.
    pub voxels_per_s: f64,
    /// The window used.
    pub window: [usize; 3],
    /// Flip test-time augmentation.
    pub flip_tta: bool,
    /// Turn test-time augmentation.
    pub rot90_tta: bool,
    /// The segmentation, if one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode: Option<PathBuf>,
}

/// A prediction ready to run: the checks passed, the device resolved.
pub struct VolumePrediction {
    opts: PredictVolumeOptions,
    cfg: TrainConfig,
    /// The device it runs on.
    pub device: Device,
    /// Why that device.
    pub device_reason: String,
    /// Notes for the user (a window clamped to the volume).
    pub notes: Vec<String>,
    config: SlidingWindowConfig,
    out_shape: Vec<u64>,
    spatial: Vec<u64>,
    /// The image, when its shape could only be known by reading it (TIFF).
    input: Option<crate::distributed::Volume>,
}

fn bad(reason: String) -> TrainError {
    TrainError::Run(reason)
}

/// The window, clamped to the volume (rounded up to what the model divides by): a window
/// larger than the volume only adds padding to compute on. Sides must be multiples of the
/// model's divisors.
fn fit_window(window: [usize; 3], spatial: &[u64], divisors: [usize; 3]) -> Result<[usize; 3]> {
    let mut out = window;
    for a in 0..3 {
        let d = divisors[a].max(1);
        if window[a] < 1 || !window[a].is_multiple_of(d) {
            return Err(bad(format!(
                "window {window:?}: each side must be a positive multiple of {divisors:?} for \
                 this model"
            )));
        }
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
    config: &SlidingWindowConfig,
    input_bytes: Option<u64>,
    out_shape: &[u64],
    streamed: bool,
) -> Option<u64> {
    let window = config.window.map(|w| w as u64);
    let model = match cfg.model.mednext() {
        Some(m) => m.inference_memory(bytes_of(&window, config.batch as u64)?)?,
        None => 0,
    };
    let output = if streamed {
        0
    } else {
        bytes_of(out_shape, 4)?.checked_mul(2)?
    };
    model
        .checked_add(output)?
        .checked_add(input_bytes.unwrap_or(0))
}

/// The config's sliding window with the options' changes.
fn window_config(cfg: &TrainConfig, opts: &PredictVolumeOptions) -> Result<SlidingWindowConfig> {
    let mut config = cfg.inference_config();
    if let Some(w) = opts.window {
        config.window = w;
    }
    if let Some(o) = opts.overlap {
        config.overlap = [o; 3];
    }
    if let Some(b) = opts.batch {
        if b < 1 {
            return Err(bad("--batch must be at least 1".into()));
        }
        config.batch = b;
    }
    match opts.tta {
        Some(Tta::None) => (config.flip_tta, config.rot90_tta) = (false, false),
        Some(Tta::Flip) => (config.flip_tta, config.rot90_tta) = (true, false),
        Some(Tta::Rot90) => (config.flip_tta, config.rot90_tta) = (false, true),
        None => {}
    }
    Ok(config)
}

impl VolumePrediction {
    /// Checks everything that can be refused before any work: outputs against inputs, the
    /// device, the image against the model, the output format, the memory.
    ///
    /// # Errors
    /// A bad config or weights path, outputs that would replace inputs or existing files
    /// without `overwrite`, a device this build lacks, an image the model cannot take, a
    /// TIFF output for several channels, a prediction too large for memory.
    pub fn prepare(opts: &PredictVolumeOptions) -> Result<Self> {
        let cfg = TrainConfig::load(&opts.config, &[])?;
        // Nothing is computed before the outputs are known to be safe to write.
        let mut inputs: Vec<&Path> = vec![&opts.input, &opts.weights];
        inputs.extend(opts.config_file.as_deref());
        let mut outputs: Vec<&Path> = vec![&opts.out];
        outputs.extend(opts.decode.as_deref());
        em_io::check_outputs(&outputs, &inputs, Existing::from_overwrite(opts.overwrite))?;
        let (device, device_reason) = resolve_device(opts.device, &em_autoconf::probe())?;
        let mut config = window_config(&cfg, opts)?;
        let k = cfg.model.channels().1;
        let (dims, input) = crate::distributed::image_dims(&cfg, &opts.input)?;
        let spatial = dims.to_vec();
        let mut out_shape = vec![k as u64];
        out_shape.extend(&spatial);
        let target = VolumePath::parse(&opts.out)?;
        if target.format == Format::Tiff && k != 1 {
            return Err(bad(format!(
                "{}: a TIFF stack holds one channel and this model predicts {k}; write .zarr, \
                 .npy or .h5",
                opts.out.display()
            )));
        }
        let mut notes = Vec::new();
        let requested = config.window;
        config.window = fit_window(requested, &spatial, cfg.model.divisors())?;
        if config.rot90_tta {
            // Turns need a square window in y, x.
            let side = config.window[1].max(config.window[2]);
            config.window[1] = side;
            config.window[2] = side;
        }
        if config.window != requested {
            notes.push(format!(
                "window {requested:?} is larger than the volume {spatial:?}; using {:?}",
                config.window
            ));
        }
        let in_memory_input = match VolumePath::parse(&opts.input)?.format {
            Format::Npy | Format::Tiff => {
                Some(bytes_of(&spatial, 4 * cfg.model.channels().0 as u64).unwrap_or(u64::MAX))
            }
            _ => None,
        };
        let streamed = target.format == Format::Zarr;
        em_autoconf::ensure_memory(
            &format!("predicting {}", opts.input.display()),
            memory_needed(&cfg, &config, in_memory_input, &out_shape, streamed),
            "use a smaller --window, or write DIR.zarr (streamed, any size)",
        )
        .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            opts: opts.clone(),
            cfg,
            device,
            device_reason,
            notes,
            config,
            out_shape,
            spatial,
            input,
        })
    }

    /// Predicts, writes the probabilities, and the segmentation if one was asked for.
    ///
    /// # Errors
    /// Model, storage and decoding errors; a decode of affinities whose first three
    /// channels are not the unit offsets.
    pub fn run(self, progress: &dyn Progress) -> Result<PredictVolumeReport> {
        let start = Instant::now();
        let opened;
        let input = match &self.input {
            Some(v) => v.as_ref(),
            None => {
                opened = em_io::open(&self.opts.input)?;
                opened.as_ref()
            }
        };
        let job = Job {
            p: &self,
            input,
            progress,
        };
        on_device(self.device, &job)??;
        let seconds = start.elapsed().as_secs_f64();
        let voxels: u64 = self.spatial.iter().product();
        if let Some(seg) = &self.opts.decode {
            self.segment(seg)?;
        }
        Ok(PredictVolumeReport {
            out: self.opts.out.clone(),
            shape: self.out_shape.clone(),
            seconds,
            voxels_per_s: voxels as f64 / seconds.max(1e-9),
            window: self.config.window,
            flip_tta: self.config.flip_tta,
            rot90_tta: self.config.rot90_tta,
            decode: self.opts.decode.clone(),
        })
    }

    /// Affinities decoded (BANIS connected components on the unit offsets), one-channel
    /// probabilities thresholded into a 0/1 uint8 mask.
    fn segment(&self, seg: &Path) -> Result<()> {
        let o = &self.opts;
        let TargetSpec::Affinities { offsets, storage } = &self.cfg.targets else {
            return write_mask(&o.out, seg, o.threshold);
        };
        let unit: Vec<_> = offsets.as_slice()[..3.min(offsets.len())].to_vec();
        if !unit
            .iter()
            .map(|o| o.0)
            .eq([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
        {
            return Err(bad(format!(
                "--decode needs the unit offsets as the first three affinity channels, found \
                 {unit:?}"
            )));
        }
        let decode = em_decode::DecodeOptions {
            cc: em_decode::CcOptions {
                threshold: o.threshold,
                storage: *storage,
                ..em_decode::CcOptions::default()
            },
            min_size: o.min_size,
            ..em_decode::DecodeOptions::default()
        };
        em_decode::decode_files(
            &em_decode::FileDecodeOptions {
                affinities: o.out.clone(),
                out: seg.to_path_buf(),
                method: em_decode::Method::Cc(decode),
                block: None,
                label_u64: false,
                overwrite: o.overwrite,
            },
            &em_core::NoProgress,
        )?;
        Ok(())
    }
}

/// `probability > threshold` of a one-channel prediction as a 0/1 uint8 `(Z, Y, X)` volume.
fn write_mask(probabilities: &Path, out: &Path, threshold: f32) -> Result<()> {
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
struct Job<'a> {
    p: &'a VolumePrediction,
    input: &'a dyn ChunkedVolume,
    progress: &'a dyn Progress,
}

impl OnDevice for &Job<'_> {
    type Output = Result<()>;

    /// Loads the model on `device` and predicts the whole volume into the output.
    fn run<B: ConvBackend>(self, device: &B::Device) -> Result<()> {
        let p = self.p;
        let model = load_model::<B>(&p.cfg, &p.opts.weights, device)?;
        let mut predictor = model_predictor(&model, device);
        let target = VolumePath::parse(&p.opts.out)?;
        if target.format == Format::Zarr {
            let (w, s) = (p.config.window, &p.spatial);
            let options = ZarrOptions {
                chunk_shape: Some(vec![
                    1,
                    w[0].min(s[0] as usize) as u64,
                    128.min(s[1]),
                    128.min(s[2]),
                ]),
                ..ZarrOptions::default()
            };
            let writer = ZarrWriter::create(&target, &p.out_shape, DType::F32, &options)?;
            sliding_window(
                self.input,
                writer.volume(),
                &p.config,
                &mut predictor,
                self.progress,
            )?;
            writer.commit()?;
            return Ok(());
        }
        let dims: Vec<usize> = p.out_shape.iter().map(|&d| d as usize).collect();
        let output = InMemoryVolume::new(
            AnyArray::from(ndarray::ArrayD::<f32>::zeros(dims)),
            "prediction",
        );
        sliding_window(
            self.input,
            &output,
            &p.config,
            &mut predictor,
            self.progress,
        )?;
        let mut result = output.read_all()?;
        if target.format == Format::Tiff {
            // (1, Z, Y, X) → (Z, Y, X): TIFF stacks have no channel axis.
            let a = result.into_typed::<f32>()?;
            result = AnyArray::from(a.index_axis_move(ndarray::Axis(0), 0));
        }
        em_io::write(&p.opts.out, &result)?;
        Ok(())
    }
}
