//! The training loop: loader batches → model → loss → AdamW, with a schedule, gradient
//! clipping and accumulation, an EMA of the weights, periodic validation, atomic
//! checkpoints and exact resumption.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor, TensorData};
use serde::Serialize;

use em_augment::Pipeline;
use em_data::{Loader, LoaderOptions, TargetSpec};
use em_models::{ConvBackend, Model};

use crate::checkpoint::{self, CheckpointState, LossScaleState};
use crate::validate::{ValidationLog, Validator};
use crate::{ema, Result, TrainConfig, TrainError};

/// One logged optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepLog {
    /// Step (1-based).
    pub step: usize,
    /// Loss of this step's batches (their mean when accumulating).
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Training voxels per second over this step, waiting for data included.
    pub voxels_per_s: f64,
    /// Seconds of training since the run began (resumed runs keep counting).
    pub elapsed_s: f64,
    /// float16 training: the gradients overflowed, so this step left the weights as they
    /// were and the loss scale halved.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// float16 training: the loss scale this step ran with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
}

/// What the loop reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// Training continues from a checkpoint.
    Resumed {
        /// Steps already done.
        step: usize,
        /// The checkpoint.
        path: &'a Path,
    },
    /// An optimizer step finished.
    Step(&'a StepLog),
    /// A validation finished.
    Validation(&'a ValidationLog),
    /// `"auto"` values were filled from this plan (the config had them unresolved).
    Plan(&'a em_autoconf::Plan),
    /// A checkpoint was written.
    Checkpoint {
        /// Steps it holds.
        step: usize,
        /// Its directory.
        path: &'a Path,
    },
}

impl Event<'_> {
    /// The event as one metrics-log record (`"event": "step"` with the [`StepLog`] fields,
    /// or `"validation"` with `step`, `metrics`, `seconds`); `None` for resumptions and
    /// checkpoints.
    pub fn record(&self) -> Option<serde_json::Value> {
        match self {
            Event::Step(s) => {
                let mut v = serde_json::json!({ "event": "step" });
                if let (Some(o), Ok(serde_json::Value::Object(fields))) =
                    (v.as_object_mut(), serde_json::to_value(s))
                {
                    o.extend(fields);
                }
                Some(v)
            }
            Event::Validation(v) => Some(serde_json::json!({
                "event": "validation", "step": v.step, "metrics": v.metrics, "seconds": v.seconds,
            })),
            Event::Plan(p) => Some(serde_json::json!({ "event": "plan", "plan": p })),
            Event::Resumed { .. } | Event::Checkpoint { .. } => None,
        }
    }
}

/// Where checkpoints go, where to resume from, and the stop flag signal handlers set.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Checkpoints are written here (none: no checkpoints).
    pub checkpoint_dir: Option<PathBuf>,
    /// Resume from this checkpoint, or from the newest one in this directory (or in its
    /// `checkpoints/`).
    pub resume: Option<PathBuf>,
    /// When set (SIGTERM/SIGUSR1 handlers), the loop checkpoints after the current step
    /// and returns.
    pub stop: Option<Arc<AtomicBool>>,
}

/// What a run produced.
pub struct Trained<B: AutodiffBackend> {
    /// The model after the last step.
    pub model: Model<B>,
    /// The averaged weights, when `ema` is configured.
    pub ema: Option<Model<B::InnerBackend>>,
    /// The records of the steps run by this call.
    pub log: Vec<StepLog>,
    /// The validations run by this call.
    pub validations: Vec<ValidationLog>,
    /// Steps done in total (including those before a resume).
    pub step: usize,
    /// Whether the run stopped before `steps` (stop flag or callback).
    pub stopped: bool,
    /// The newest checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
}

impl<B: AutodiffBackend> Trained<B> {
    /// The weights to predict with: the EMA when there is one, else the model.
    pub fn inference_model(&self) -> Model<B::InnerBackend> {
        self.ema.clone().unwrap_or_else(|| self.model.valid())
    }
}

/// A backend to train on: autodiff over a backend with MedNeXt's convolutions
/// ([`em_models::ConvBackend`]), e.g. [`em_models::CpuTrain`].
pub trait TrainBackend: AutodiffBackend<InnerBackend: ConvBackend> + ConvBackend {}

impl<B> TrainBackend for B
where
    B: AutodiffBackend + ConvBackend,
    B::InnerBackend: ConvBackend,
{
}

/// Opens a volume path for the data sources (em-io's `open` fits).
pub type Opener<'a> = em_data::Opener<'a>;

fn tensor<B: AutodiffBackend>(a: ndarray::Array5<f32>, device: &B::Device) -> Tensor<B, 5> {
    let shape = a.shape().to_vec();
    let data = if a.is_standard_layout() {
        a.into_raw_vec_and_offset().0
    } else {
        a.iter().copied().collect()
    };
    Tensor::<B, 5>::from_data(TensorData::new(data, shape), device)
}

/// Trains `cfg` on `device`. `on_event` sees every step, validation and checkpoint and may
/// return `false` to stop (after a checkpoint, when checkpoints are on).
///
/// Everything that can be checked is checked before the first step: data files, the patch
/// against the volumes and the model, the validation volume, the checkpoint to resume from.
///
/// # Errors
/// Data that cannot be opened, a model that does not fit the patch or the targets, a
/// checkpoint of another model, a non-finite loss (named with its step and the last good
/// checkpoint).
pub fn train<B: TrainBackend>(
    cfg: &TrainConfig,
    opener: Opener<'_>,
    device: &B::Device,
    opts: &RunOptions,
    on_event: &mut dyn FnMut(Event<'_>) -> bool,
) -> Result<Trained<B>> {
    // A config with "auto" values left is planned here, on this machine.
    let planned;
    let cfg = if cfg.auto.is_empty() {
        cfg
    } else {
        let mut c = cfg.clone();
        if let Some(plan) = c.resolve_auto(&em_autoconf::probe(), opener, B::GPU)? {
            on_event(Event::Plan(&plan));
        }
        planned = c;
        &planned
    };
    let half = half_dtype::<B>(cfg.precision, device)?;
    let (in_ch, out_ch) = cfg.model.channels();
    if out_ch != cfg.targets.channels() {
        return Err(TrainError::Config(format!(
            "the model has {out_ch} output channels but the targets have {}",
            cfg.targets.channels()
        )));
    }
    let dataset = cfg.data.build(opener)?;
    let augment = match cfg.augment.as_str() {
        "none" => None,
        name => {
            let p = Pipeline::load(name)?;
            p.check(cfg.data.patch.read_shape())?;
            Some(Arc::new(p))
        }
    };
    let patch = cfg.data.patch.patch;
    let mut model: Model<B> = cfg.model.build_seeded(device, cfg.seed)?;
    model.check_input(&[cfg.batch_size, in_ch, patch[0], patch[1], patch[2]])?;
    let validator = Validator::new(cfg, opener)?;
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.optimizer.weight_decay)
        .with_grad_clipping((cfg.optimizer.grad_clip > 0.0).then_some(
            burn::grad_clipping::GradientClippingConfig::Norm(cfg.optimizer.grad_clip),
        ))
        .init::<B, Model<B>>();
    let mut ema_model = cfg.ema.as_ref().map(|_| ema::init(&model));
    let mut scaler = (cfg.precision == em_autoconf::Precision::F16).then_some(LossScaleState {
        scale: cfg.loss_scale.initial,
        good_steps: 0,
    });

    let (mut step, mut epoch, mut next_batch, mut elapsed0) = (0usize, 0u64, 0usize, 0.0);
    let mut last_checkpoint = None;
    if let Some(from) = &opts.resume {
        let path = checkpoint::find(from)?;
        let state: CheckpointState = checkpoint::read_state(&path, cfg)?;
        let loaded = checkpoint::load(&path, model, optim, ema_model, device)?;
        (model, optim, ema_model) = loaded;
        (step, epoch, next_batch, elapsed0) =
            (state.step, state.epoch, state.batch, state.elapsed_s);
        if let (Some(s), Some(saved)) = (scaler.as_mut(), state.loss_scale) {
            *s = saved;
        }
        if !on_event(Event::Resumed { step, path: &path }) {
            return Ok(Trained {
                model,
                ema: ema_model,
                log: Vec::new(),
                validations: Vec::new(),
                step,
                stopped: true,
                last_checkpoint: Some(path),
            });
        }
        last_checkpoint = Some(path);
    }

    let loader_cfg = LoaderOptions {
        batch_size: cfg.batch_size,
        workers: cfg.workers,
        prefetch: 2 * cfg.workers.max(1),
        seed: cfg.seed,
        augment,
        targets: cfg.targets.clone(),
        context: cfg.data.patch.context,
        batches: None,
    };
    // Deep-supervision targets of binary tasks are subsampled, soft ones averaged.
    let average = matches!(cfg.targets, TargetSpec::SignedDistance { .. });
    let voxels = (cfg.batch_size * cfg.accumulate * patch.iter().product::<usize>()) as f64;
    let start = Instant::now();
    let mut log = Vec::new();
    let mut validations = Vec::new();
    let mut accumulator = GradientsAccumulator::new();
    let (mut micro, mut loss_sum, mut overflow) = (0usize, 0.0f64, false);
    let mut step_t0 = Instant::now();
    let stop_requested = || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    let mut stopped = false;
    let mut skipped_in_row = 0usize;

    'outer: while step < cfg.steps {
        let mut loader =
            Loader::starting_at(dataset.clone(), loader_cfg.clone(), epoch, next_batch)?;
        if loader.batches() == 0 {
            return Err(TrainError::Config(format!(
                "an epoch of {} samples holds no batch of {}; raise data.patch.epoch_len",
                dataset.len(),
                cfg.batch_size
            )));
        }
        let total = loader.batches();
        for batch in loader.by_ref() {
            let batch = batch?;
            next_batch = batch.index + 1;
            let lr = cfg.optimizer.lr_at(step, cfg.steps);
            let (x, t, m) = (
                tensor::<B>(batch.image, device),
                tensor::<B>(batch.target, device),
                tensor::<B>(batch.mask, device),
            );
            // Mixed precision: activations in half precision, the loss in float32.
            let x = match half {
                Some(dtype) => x.cast(dtype),
                None => x,
            };
            let mut outputs = model.forward_all(x)?;
            if half.is_some() {
                outputs = outputs.into_iter().map(|o| o.cast(DType::F32)).collect();
            }
            let loss = if outputs.len() > 1 {
                cfg.loss
                    .deep_supervision(&outputs, t, Some(m), None, average)?
            } else {
                let logits = outputs.into_iter().next().expect("one output");
                cfg.loss.loss(logits, t, Some(m))?
            };
            let value: f64 = burn::tensor::ElementConversion::elem(loss.clone().into_scalar());
            micro += 1;
            if !value.is_finite() && scaler.is_none() {
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    loss: value,
                    last_good: last_checkpoint,
                });
            }
            if value.is_finite() && !overflow {
                loss_sum += value;
                let loss = if cfg.accumulate > 1 {
                    loss / cfg.accumulate as f64
                } else {
                    loss
                };
                let grads = match &scaler {
                    Some(s) => {
                        let grads =
                            GradientsParams::from_grads((loss * s.scale).backward(), &model);
                        unscale(&model, grads, s.scale)
                    }
                    None => Some(GradientsParams::from_grads(loss.backward(), &model)),
                };
                match grads {
                    Some(g) => accumulator.accumulate(&model, g),
                    None => overflow = true,
                }
            } else {
                // A float16 forward pass overflowed: the same as overflowing gradients.
                overflow = true;
            }
            if micro < cfg.accumulate {
                continue;
            }
            let scale_used = scaler.map(|s| s.scale);
            let skipped = overflow;
            if overflow {
                // Drop whatever the other micro-batches accumulated: the step is skipped.
                let _ = accumulator.grads();
                if let Some(s) = scaler.as_mut() {
                    s.scale = (s.scale / 2.0).max(1.0);
                    s.good_steps = 0;
                }
                overflow = false;
                skipped_in_row += 1;
                if skipped_in_row > MAX_SKIPPED_IN_ROW {
                    return Err(TrainError::NonFinite {
                        step: step + 1,
                        loss: f64::INFINITY,
                        last_good: last_checkpoint,
                    });
                }
            } else {
                model = optim.step(lr, model, accumulator.grads());
                skipped_in_row = 0;
                if let Some(s) = scaler.as_mut() {
                    s.good_steps += 1;
                    if s.good_steps >= cfg.loss_scale.growth_interval {
                        s.scale *= 2.0;
                        s.good_steps = 0;
                    }
                }
            }
            step += 1;
            if let (Some(e), Some(c), false) = (ema_model.take(), &cfg.ema, skipped) {
                ema_model = Some(if step <= c.start {
                    ema::init(&model)
                } else {
                    ema::update(e, &model, c.decay)
                });
            }
            let rec = StepLog {
                step,
                loss: loss_sum / micro as f64,
                lr,
                voxels_per_s: voxels / step_t0.elapsed().as_secs_f64().max(1e-9),
                elapsed_s: elapsed0 + start.elapsed().as_secs_f64(),
                skipped,
                loss_scale: scale_used,
            };
            (micro, loss_sum) = (0, 0.0);
            let mut go_on = on_event(Event::Step(&rec));
            log.push(rec);
            let last = step >= cfg.steps;
            if let (Some(v), Some(vc)) = (&validator, &cfg.validation) {
                if step % vc.every == 0 || last {
                    let eval_model = ema_model.clone().unwrap_or_else(|| model.valid());
                    let (vlog, _) = v.run(&eval_model, device, step)?;
                    go_on &= on_event(Event::Validation(&vlog));
                    validations.push(vlog);
                }
            }
            let stop_now = !go_on || stop_requested();
            let periodic = cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0;
            if let Some(dir) = &opts.checkpoint_dir {
                if periodic || last || stop_now {
                    let (e, b) = if next_batch >= total {
                        (epoch + 1, 0)
                    } else {
                        (epoch, next_batch)
                    };
                    let elapsed = elapsed0 + start.elapsed().as_secs_f64();
                    let mut state = checkpoint::state(cfg, step, e, b, elapsed);
                    state.loss_scale = scaler;
                    let path = checkpoint::save(
                        dir,
                        cfg.checkpoint.keep,
                        &state,
                        &model,
                        &optim,
                        ema_model.as_ref(),
                    )?;
                    go_on &= on_event(Event::Checkpoint { step, path: &path });
                    last_checkpoint = Some(path);
                }
            }
            step_t0 = Instant::now();
            if last || stop_now || !go_on {
                stopped = !last;
                break 'outer;
            }
        }
        epoch += 1;
        next_batch = 0;
    }
    Ok(Trained {
        model,
        ema: ema_model,
        log,
        validations,
        step,
        stopped,
        last_checkpoint,
    })
}

/// The model without autodiff, for inference after training.
pub fn inference_model<B: AutodiffBackend>(model: &Model<B>) -> Model<B::InnerBackend> {
    model.valid()
}

/// Steps skipped in a row for overflowing float16 gradients before training gives up (the
/// scale has then halved this many times: the model does not fit float16).
const MAX_SKIPPED_IN_ROW: usize = 50;

/// The half-precision dtype of `precision`, checked against the backend and device.
fn half_dtype<B: TrainBackend>(
    precision: em_autoconf::Precision,
    device: &B::Device,
) -> Result<Option<DType>> {
    let dtype = match precision {
        em_autoconf::Precision::F32 => return Ok(None),
        em_autoconf::Precision::Bf16 => DType::BF16,
        em_autoconf::Precision::F16 => DType::F16,
    };
    if !B::GPU {
        return Err(TrainError::Config(format!(
            "precision = {precision:?}: mixed precision runs on a GPU device (--device cuda or \
             wgpu); the CPU trains in \"f32\""
        )));
    }
    if !B::supports_dtype(device, dtype) {
        return Err(TrainError::Config(format!(
            "precision = {precision:?}: this device has no {dtype:?} arithmetic; use \"f16\" \
             (float16 with loss scaling) or \"f32\""
        )));
    }
    Ok(Some(dtype))
}

/// Divides every gradient by `scale`; `None` when any is NaN or infinite (one read-back for
/// the whole model: the sum of all gradients is finite exactly when no gradient overflowed,
/// short of the sum itself overflowing float32, which counts as an overflow too).
fn unscale<B: AutodiffBackend>(
    model: &Model<B>,
    grads: GradientsParams,
    scale: f64,
) -> Option<GradientsParams> {
    struct Unscale<B: AutodiffBackend> {
        grads: GradientsParams,
        factor: f64,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unscale<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let g = g.mul_scalar(self.factor);
                let sum = g.clone().cast(DType::F32).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + sum,
                    None => sum,
                });
                self.grads.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
    let mut v = Unscale::<B> {
        grads,
        factor: 1.0 / scale,
        total: None,
    };
    model.visit(&mut v);
    let finite = match v.total {
        Some(t) => {
            let total: f64 = burn::tensor::ElementConversion::elem(t.into_scalar());
            total.is_finite()
        }
        None => true,
    };
    finite.then_some(v.grads)
}
