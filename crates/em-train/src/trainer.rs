//! The training loop: loader batches → model → loss → AdamW, with a schedule, gradient
//! clipping and a log record per step.

use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use em_augment::Pipeline;
use em_data::{Loader, LoaderConfig};
use em_models::Model;

use crate::{Result, TrainConfig, TrainError};

/// One logged step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepLog {
    /// Step (1-based).
    pub step: usize,
    /// Loss of this step's batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Training voxels per second over this step.
    pub voxels_per_s: f64,
    /// Seconds since the start.
    pub elapsed_s: f64,
}

/// What a run produced.
pub struct Trained<B: AutodiffBackend> {
    /// The model after the last step.
    pub model: Model<B>,
    /// Every step's record.
    pub log: Vec<StepLog>,
}

/// Opens a volume path for the data sources (em-io's `open` fits).
pub type Opener<'a> = em_data::Opener<'a>;

/// Trains `cfg` on `device`; `on_step` sees every step's record (progress bars, JSONL logs)
/// and may return `false` to stop early (signals).
///
/// # Errors
/// Data that cannot be opened, a model that does not fit the patch, a non-finite loss
/// (named with its step).
pub fn train<B: AutodiffBackend>(
    cfg: &TrainConfig,
    opener: Opener<'_>,
    device: &B::Device,
    on_step: &mut dyn FnMut(&StepLog) -> bool,
) -> Result<Trained<B>> {
    let dataset = cfg.data.build(opener)?;
    let augment = match cfg.augment.as_str() {
        "none" => None,
        name => {
            let p = Pipeline::load(name)?;
            p.check(cfg.data.patch.read_shape())?;
            Some(Arc::new(p))
        }
    };
    let mut model: Model<B> = cfg.model.build(device)?;
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.optimizer.weight_decay)
        .with_grad_clipping((cfg.optimizer.grad_clip > 0.0).then_some(
            burn::grad_clipping::GradientClippingConfig::Norm(cfg.optimizer.grad_clip),
        ))
        .init::<B, Model<B>>();
    let loader_cfg = || LoaderConfig {
        batch_size: cfg.batch_size,
        workers: cfg.workers,
        prefetch: 2 * cfg.workers.max(1),
        seed: cfg.seed,
        augment: augment.clone(),
        targets: cfg.targets.clone(),
        context: cfg.data.patch.context,
        batches: None,
    };
    let voxels = (cfg.batch_size * cfg.data.patch.patch.iter().product::<usize>()) as f64;
    let start = Instant::now();
    let mut log = Vec::with_capacity(cfg.steps);
    let mut step = 0;
    let mut epoch = 0u64;
    'outer: while step < cfg.steps {
        let mut loader = Loader::new(dataset.clone(), loader_cfg(), epoch)?;
        if loader.batches() == 0 {
            return Err(TrainError::Config(format!(
                "an epoch of {} samples holds no batch of {}; raise data.patch.epoch_len",
                dataset.len(),
                cfg.batch_size
            )));
        }
        for batch in loader.by_ref() {
            let batch = batch?;
            let t0 = Instant::now();
            let lr = cfg.optimizer.lr_at(step, cfg.steps);
            let tensor = |a: ndarray::Array5<f32>| {
                let shape = a.shape().to_vec();
                Tensor::<B, 5>::from_data(
                    TensorData::new(a.into_raw_vec_and_offset().0, shape),
                    device,
                )
            };
            let (x, t, m) = (
                tensor(batch.image),
                tensor(batch.target),
                tensor(batch.mask),
            );
            let logits = model.forward(x)?;
            let loss = cfg.loss.loss(logits, t, Some(m))?;
            let value = loss.clone().into_scalar();
            let value: f64 = burn::tensor::ElementConversion::elem(value);
            step += 1;
            if !value.is_finite() {
                return Err(TrainError::NonFinite { step, loss: value });
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            let rec = StepLog {
                step,
                loss: value,
                lr,
                voxels_per_s: voxels / t0.elapsed().as_secs_f64().max(1e-9),
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            let go_on = on_step(&rec);
            log.push(rec);
            if step >= cfg.steps || !go_on {
                break 'outer;
            }
        }
        epoch += 1;
    }
    Ok(Trained { model, log })
}

/// The model without autodiff, for inference after training.
pub fn inference_model<B: AutodiffBackend>(model: &Model<B>) -> Model<B::InnerBackend> {
    model.valid()
}
