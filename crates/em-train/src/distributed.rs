//! A trained model's work on volumes too large for one process: loading the model of a
//! run for inference, and the prediction stage of a distributed decode (block by block, as
//! Slurm array tasks, before the decode's own tasks).

use std::path::{Path, PathBuf};

use em_core::BlockGrid;
use em_models::{load_weights, model_predictor, predict_block, ConvBackend, Model};
use em_slurm::{DecodeJobOptions, DecodeJobPlan, PredictionInput, PreparedDecode};

use crate::{on_device, resolve_device, DeviceChoice, OnDevice, Result, TrainConfig, TrainError};

/// Builds the model of `cfg` on `device` and loads `weights`: a weights file
/// (`.safetensors`, `.pt`/`.pth`), or a checkpoint directory (its EMA weights when it has
/// them).
///
/// # Errors
/// Weights of another model, unreadable files.
pub fn load_model<B: ConvBackend>(
    cfg: &TrainConfig,
    weights: &Path,
    device: &B::Device,
) -> Result<Model<B>> {
    if weights.is_dir() {
        return crate::checkpoint::load_for_inference(weights, cfg, device);
    }
    let mut model = cfg.model.build(device)?;
    load_weights(&mut model, weights).map_err(|e| {
        TrainError::Run(format!(
            "loading {} into the config's model: {e}",
            weights.display()
        ))
    })?;
    Ok(model)
}

/// An opened volume.
pub(crate) type Volume = Box<dyn em_core::ChunkedVolume>;

/// The spatial shape `(Z, Y, X)` of an image the model of `cfg` takes: `(Z, Y, X)` for a
/// one-channel model, `(C, Z, Y, X)` with the model's C. The shape comes from the file's
/// header where it has one; a TIFF stack must be read for it, and is returned, read, so
/// that it is not read twice.
///
/// # Errors
/// An unreadable image, or one of another shape, named with the shapes the model takes.
pub(crate) fn image_dims(cfg: &TrainConfig, image: &Path) -> Result<([u64; 3], Option<Volume>)> {
    let in_ch = cfg.model.channels().0;
    let (shape, opened) = match em_io::peek(image)? {
        Some((shape, _)) => (shape, None),
        None => {
            let v = em_io::open(image)?;
            (v.shape().to_vec(), Some(v))
        }
    };
    match (shape.as_slice(), in_ch) {
        (&[z, y, x], 1) => Ok(([z, y, x], opened)),
        (&[c, z, y, x], _) if c as usize == in_ch => Ok(([z, y, x], opened)),
        _ => Err(TrainError::Run(format!(
            "{}: shape {shape:?}; the model takes {in_ch} channel(s): give (Z, Y, X){} or \
             ({in_ch}, Z, Y, X)",
            image.display(),
            if in_ch == 1 { "" } else { " only for 1" }
        ))),
    }
}

/// The training run whose model predicts the affinities of a distributed decode.
#[derive(Clone, Debug)]
pub struct PredictOptions {
    /// The run directory (config.toml, model.safetensors).
    pub run: PathBuf,
    /// The image, `(Z, Y, X)` or `(C, Z, Y, X)`.
    pub image: PathBuf,
    /// Context read around each block (default: half the inference window), so that
    /// window borders stay outside the block.
    pub context: Option<[u64; 3]>,
    /// Where the prediction tasks run (resolved on the compute node).
    pub device: DeviceChoice,
}

/// Prepares a distributed decode (see [`em_slurm::prepare_decode`]); with `predict`, the
/// affinities are predicted first, block by block, by the run's model: the model and the
/// image are checked here, before anything is written.
///
/// # Errors
/// A run whose weights do not load into its config's model, an image the model cannot
/// take, and the errors of [`em_slurm::prepare_decode`].
pub fn prepare_distributed_decode(
    opts: &DecodeJobOptions,
    predict: Option<&PredictOptions>,
) -> Result<PreparedDecode> {
    let input = match predict {
        Some(p) => Some(prediction_input(p, opts.block)?),
        None => None,
    };
    Ok(em_slurm::prepare_decode(opts, input.as_ref())?)
}

fn run_config(run: &Path) -> Result<TrainConfig> {
    TrainConfig::load(&run.join("config.toml").display().to_string(), &[])
        .map_err(|e| TrainError::Run(format!("{} is not a training run: {e}", run.display())))
}

/// Checks the run and the image and works out the predicted affinities' shape.
fn prediction_input(p: &PredictOptions, block: [u64; 3]) -> Result<PredictionInput> {
    let config = p.run.join("config.toml");
    let weights = p.run.join("model.safetensors");
    let cfg = run_config(&p.run)?;
    // The weights must load into the config's model: fail here, not in every task.
    load_model::<em_models::Cpu>(&cfg, &weights, &Default::default())?;
    let k = cfg.model.channels().1;
    let dims = image_dims(&cfg, &p.image)?.0;
    let window = cfg.inference_config().window;
    let context = p.context.unwrap_or([0, 1, 2].map(|i| window[i] as u64 / 2));
    // The grid must exist for this block and context.
    BlockGrid::new(&dims, &block, &context)?;
    Ok(PredictionInput {
        run: p.run.clone(),
        image: p.image.clone(),
        inputs: vec![p.image.clone(), config, weights],
        channels: k as u64,
        dims,
        context,
        device: p.device.to_string(),
    })
}

/// What one prediction task did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PredictReport {
    /// The task.
    pub task: u64,
    /// Blocks predicted now.
    pub predicted: u64,
    /// Blocks an earlier run of the task had predicted.
    pub already_done: u64,
}

/// One prediction task of a distributed decode: predicts its share of the prediction grid
/// (raster order) on the plan's device and writes the blocks' cores into the affinities; a
/// marker file per block records it as done, so a rerun skips it.
///
/// # Errors
/// A plan without a prediction stage, a task outside the plan, a device this build or node
/// lacks, model and storage errors.
pub fn predict_task(plan_path: &Path, task: u64) -> Result<(PredictReport, String)> {
    let plan = DecodeJobPlan::load(plan_path)?;
    if plan.predict.is_none() {
        return Err(TrainError::Run(format!(
            "{} has no prediction stage",
            plan_path.display()
        )));
    }
    plan.decode.check_task(task)?;
    let stage = plan
        .predict
        .as_ref()
        .map(|p| (p.run.clone(), p.device.clone()));
    let (run, device) = stage.unwrap_or_default();
    let cfg = run_config(&run)?;
    let choice: DeviceChoice = device.parse()?;
    let (device, why) = resolve_device(choice, &em_autoconf::probe())?;
    let report = on_device(
        device,
        Blocks {
            plan: &plan,
            cfg: &cfg,
            task,
        },
    )??;
    Ok((report, why))
}

/// One prediction task's blocks.
struct Blocks<'a> {
    plan: &'a DecodeJobPlan,
    cfg: &'a TrainConfig,
    task: u64,
}

impl OnDevice for Blocks<'_> {
    type Output = Result<PredictReport>;

    fn run<B: ConvBackend>(self, device: &B::Device) -> Self::Output {
        let Blocks { plan, cfg, task } = self;
        let Some(stage) = &plan.predict else {
            return Ok(PredictReport::default());
        };
        let model = load_model::<B>(cfg, &stage.run.join("model.safetensors"), device)?;
        let config = cfg.inference_config();
        let mut predictor = model_predictor(&model, device);
        let image = em_io::open(&stage.image)?;
        let aff = em_io::open(&plan.decode.affinities)?;
        let grid = BlockGrid::new(&aff.shape()[1..], &plan.decode.block, &stage.context)?;
        let mine = em_decode::task_share(stage.blocks, plan.decode.tasks, task);
        let mut report = PredictReport {
            task,
            ..PredictReport::default()
        };
        for (i, block) in grid.iter().enumerate() {
            let i = i as u64;
            if !mine.contains(&i) {
                continue;
            }
            if stage.marker(i).is_file() {
                report.already_done += 1;
                continue;
            }
            predict_block(
                image.as_ref(),
                aff.as_ref(),
                &block,
                &config,
                &mut predictor,
            )
            .map_err(|e| TrainError::Run(format!("predicting block {i} ({}): {e}", block.core)))?;
            em_io::write_atomic(&stage.marker(i), b"")?;
            report.predicted += 1;
        }
        Ok(report)
    }
}
