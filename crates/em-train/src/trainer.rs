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
use crate::evaluation::{ValidationLog, Validator};
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
    let (mut run, mut model) = Training::<B>::start(cfg, opener, device, opts)?;
    if let Some(from) = &opts.resume {
        let path = checkpoint::find(from)?;
        (run, model) = run.resume(&path, model)?;
        if !on_event(Event::Resumed {
            step: run.step,
            path: &path,
        }) {
            return Ok(run.finish(model, true));
        }
    }
    run.train(model, on_event)
}

/// AdamW as burn builds it for a model.
type AdamW<B> = burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, Model<B>, B>;

/// A run in progress, all but the model (which each optimizer step replaces): the settings,
/// the data, the optimizer, the EMA and loss scale, where the run is, and what it logged.
struct Training<'a, B: TrainBackend> {
    cfg: &'a TrainConfig,
    device: &'a B::Device,
    opts: &'a RunOptions,
    dataset: Arc<dyn em_data::Dataset>,
    loader: LoaderOptions,
    validator: Option<Validator>,
    /// Mixed precision: the activations' dtype.
    half: Option<DType>,
    /// Deep-supervision targets of binary tasks are subsampled, soft ones averaged.
    average: bool,
    /// Training voxels per optimizer step.
    voxels: f64,
    optim: AdamW<B>,
    ema: Option<Model<B::InnerBackend>>,
    scaler: Option<LossScaleState>,
    /// Optimizer steps done (resumed ones included).
    step: usize,
    /// The loader's epoch and next batch in it.
    epoch: u64,
    next_batch: usize,
    /// Seconds of training before this call (resumed runs keep counting).
    elapsed0: f64,
    last_checkpoint: Option<PathBuf>,
    log: Vec<StepLog>,
    validations: Vec<ValidationLog>,
    /// The micro-batches of the step in progress: their gradients, count and loss sum, and
    /// whether one overflowed.
    accumulator: GradientsAccumulator<Model<B>>,
    micro: usize,
    loss_sum: f64,
    overflow: bool,
    /// float16: steps skipped in a row for overflowing gradients.
    skipped_in_row: usize,
    /// When this call's training began, and when the step in progress began.
    start: Instant,
    step_t0: Instant,
}

/// How an optimizer step went, for its log record.
struct StepOutcome {
    lr: f64,
    skipped: bool,
    loss_scale: Option<f64>,
}

impl<'a, B: TrainBackend> Training<'a, B> {
    /// Checks the config against the backend, the data and the model, and sets up a run at
    /// step 0: the seeded model, the data, the validation volume, AdamW, the EMA and the
    /// loss scale.
    fn start(
        cfg: &'a TrainConfig,
        opener: Opener<'_>,
        device: &'a B::Device,
        opts: &'a RunOptions,
    ) -> Result<(Self, Model<B>)> {
        let half = half_dtype::<B>(cfg.precision, device)?;
        let (in_ch, out_ch) = cfg.model.channels();
        if out_ch != cfg.targets.channels() {
            return Err(TrainError::invalid(
                "targets",
                format!(
                    "the model has {out_ch} output channels but the targets have {}",
                    cfg.targets.channels()
                ),
            ));
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
        let model: Model<B> = cfg.model.build_seeded(device, cfg.seed)?;
        model.check_input(&[cfg.batch_size, in_ch, patch[0], patch[1], patch[2]])?;
        let validator = Validator::new(cfg, opener)?;
        let optim = AdamWConfig::new()
            .with_weight_decay(cfg.optimizer.weight_decay)
            .with_grad_clipping((cfg.optimizer.grad_clip > 0.0).then_some(
                burn::grad_clipping::GradientClippingConfig::Norm(cfg.optimizer.grad_clip),
            ))
            .init::<B, Model<B>>();
        let ema = cfg.ema.as_ref().map(|_| ema::init(&model));
        let scaler = (cfg.precision == em_autoconf::Precision::F16).then_some(LossScaleState {
            scale: cfg.loss_scale.initial,
            good_steps: 0,
        });
        let loader = LoaderOptions {
            batch_size: cfg.batch_size,
            workers: cfg.workers,
            prefetch: 2 * cfg.workers.max(1),
            seed: cfg.seed,
            augment,
            targets: cfg.targets.clone(),
            context: cfg.data.patch.context,
            batches: None,
        };
        let run = Self {
            cfg,
            device,
            opts,
            dataset,
            loader,
            validator,
            half,
            average: matches!(cfg.targets, TargetSpec::SignedDistance { .. }),
            voxels: (cfg.batch_size * cfg.accumulate * patch.iter().product::<usize>()) as f64,
            optim,
            ema,
            scaler,
            step: 0,
            epoch: 0,
            next_batch: 0,
            elapsed0: 0.0,
            last_checkpoint: None,
            log: Vec::new(),
            validations: Vec::new(),
            accumulator: GradientsAccumulator::new(),
            micro: 0,
            loss_sum: 0.0,
            overflow: false,
            skipped_in_row: 0,
            start: Instant::now(),
            step_t0: Instant::now(),
        };
        Ok((run, model))
    }

    /// Continues from the checkpoint at `path`: its weights, optimizer state, EMA, loss
    /// scale and position in the data.
    fn resume(mut self, path: &Path, model: Model<B>) -> Result<(Self, Model<B>)> {
        let state: CheckpointState = checkpoint::read_state(path, self.cfg)?;
        let (model, optim, ema) = checkpoint::load(path, model, self.optim, self.ema, self.device)?;
        (self.optim, self.ema) = (optim, ema);
        (self.step, self.epoch, self.next_batch, self.elapsed0) =
            (state.step, state.epoch, state.batch, state.elapsed_s);
        if let (Some(s), Some(saved)) = (self.scaler.as_mut(), state.loss_scale) {
            *s = saved;
        }
        self.last_checkpoint = Some(path.to_path_buf());
        Ok((self, model))
    }

    /// Trains from where the run stands to `steps`, or until stopped.
    fn train(
        mut self,
        mut model: Model<B>,
        on_event: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<Trained<B>> {
        let cfg = self.cfg;
        (self.start, self.step_t0) = (Instant::now(), Instant::now());
        let mut stopped = false;
        'outer: while self.step < cfg.steps {
            let mut loader = Loader::starting_at(
                self.dataset.clone(),
                self.loader.clone(),
                self.epoch,
                self.next_batch,
            )?;
            if loader.batches() == 0 {
                return Err(TrainError::invalid(
                    "data.patch.epoch_len",
                    format!(
                        "an epoch of {} samples holds no batch of {}; raise it",
                        self.dataset.len(),
                        cfg.batch_size
                    ),
                ));
            }
            let total = loader.batches();
            for batch in loader.by_ref() {
                let batch = batch?;
                self.next_batch = batch.index + 1;
                if !self.micro_step(&model, batch)? {
                    continue;
                }
                let outcome;
                (model, outcome) = self.optimizer_step(model)?;
                if let Some(ended_early) = self.after_step(&model, outcome, total, on_event)? {
                    stopped = ended_early;
                    break 'outer;
                }
            }
            self.epoch += 1;
            self.next_batch = 0;
        }
        Ok(self.finish(model, stopped))
    }

    /// One micro-batch: forward pass and loss, and its gradients added to the step's
    /// (unless they overflow). Returns whether the step's micro-batches are complete.
    fn micro_step(&mut self, model: &Model<B>, batch: em_data::Batch) -> Result<bool> {
        let (cfg, device) = (self.cfg, self.device);
        let (x, t, m) = (
            tensor::<B>(batch.image, device),
            tensor::<B>(batch.target, device),
            tensor::<B>(batch.mask, device),
        );
        // Mixed precision: activations in half precision, the loss in float32.
        let x = match self.half {
            Some(dtype) => x.cast(dtype),
            None => x,
        };
        let mut outputs = model.forward_all(x)?;
        if self.half.is_some() {
            outputs = outputs.into_iter().map(|o| o.cast(DType::F32)).collect();
        }
        let loss = if outputs.len() > 1 {
            cfg.loss
                .deep_supervision(&outputs, t, Some(m), None, self.average)?
        } else {
            let logits = outputs.into_iter().next().expect("one output");
            cfg.loss.loss(logits, t, Some(m))?
        };
        let value: f64 = burn::tensor::ElementConversion::elem(loss.clone().into_scalar());
        self.micro += 1;
        if !value.is_finite() && self.scaler.is_none() {
            return Err(TrainError::NonFinite {
                step: self.step + 1,
                loss: value,
                last_good: self.last_checkpoint.clone(),
            });
        }
        if value.is_finite() && !self.overflow {
            self.loss_sum += value;
            let loss = if cfg.accumulate > 1 {
                loss / cfg.accumulate as f64
            } else {
                loss
            };
            let grads = match &self.scaler {
                Some(s) => {
                    let grads = GradientsParams::from_grads((loss * s.scale).backward(), model);
                    unscale(model, grads, s.scale)
                }
                None => Some(GradientsParams::from_grads(loss.backward(), model)),
            };
            match grads {
                Some(g) => self.accumulator.accumulate(model, g),
                None => self.overflow = true,
            }
        } else {
            // A float16 forward pass overflowed: the same as overflowing gradients.
            self.overflow = true;
        }
        Ok(self.micro >= cfg.accumulate)
    }

    /// One optimizer step with the accumulated gradients, or a skipped one when they
    /// overflowed (the loss scale halves); the loss scale grows after enough good steps.
    fn optimizer_step(&mut self, model: Model<B>) -> Result<(Model<B>, StepOutcome)> {
        let cfg = self.cfg;
        let outcome = StepOutcome {
            lr: cfg.optimizer.lr_at(self.step, cfg.steps),
            skipped: self.overflow,
            loss_scale: self.scaler.map(|s| s.scale),
        };
        let model = if self.overflow {
            // Drop whatever the other micro-batches accumulated: the step is skipped.
            let _ = self.accumulator.grads();
            if let Some(s) = self.scaler.as_mut() {
                s.scale = (s.scale / 2.0).max(1.0);
                s.good_steps = 0;
            }
            self.overflow = false;
            self.skipped_in_row += 1;
            if self.skipped_in_row > MAX_SKIPPED_IN_ROW {
                return Err(TrainError::NonFinite {
                    step: self.step + 1,
                    loss: f64::INFINITY,
                    last_good: self.last_checkpoint.clone(),
                });
            }
            model
        } else {
            let model = self.optim.step(outcome.lr, model, self.accumulator.grads());
            self.skipped_in_row = 0;
            if let Some(s) = self.scaler.as_mut() {
                s.good_steps += 1;
                if s.good_steps >= cfg.loss_scale.growth_interval {
                    s.scale *= 2.0;
                    s.good_steps = 0;
                }
            }
            model
        };
        self.step += 1;
        Ok((model, outcome))
    }

    /// What follows an optimizer step: the EMA update, the log record, validation and
    /// checkpoint when due. Returns `Some(stopped early)` when the run ends here.
    fn after_step(
        &mut self,
        model: &Model<B>,
        outcome: StepOutcome,
        total: usize,
        on_event: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<Option<bool>> {
        let (cfg, step) = (self.cfg, self.step);
        if let (Some(e), Some(c), false) = (self.ema.take(), &cfg.ema, outcome.skipped) {
            self.ema = Some(if step <= c.start {
                ema::init(model)
            } else {
                ema::update(e, model, c.decay)
            });
        }
        let rec = StepLog {
            step,
            loss: self.loss_sum / self.micro as f64,
            lr: outcome.lr,
            voxels_per_s: self.voxels / self.step_t0.elapsed().as_secs_f64().max(1e-9),
            elapsed_s: self.elapsed(),
            skipped: outcome.skipped,
            loss_scale: outcome.loss_scale,
        };
        (self.micro, self.loss_sum) = (0, 0.0);
        let mut go_on = on_event(Event::Step(&rec));
        self.log.push(rec);
        let last = step >= cfg.steps;
        go_on &= self.validate_if_due(model, last, on_event)?;
        let stop_requested = self
            .opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst));
        let stop_now = !go_on || stop_requested;
        let periodic = cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0;
        if periodic || last || stop_now {
            go_on &= self.checkpoint(model, total, on_event)?;
        }
        self.step_t0 = Instant::now();
        Ok((last || stop_now || !go_on).then_some(!last))
    }

    /// Seconds of training so far, resumed runs included.
    fn elapsed(&self) -> f64 {
        self.elapsed0 + self.start.elapsed().as_secs_f64()
    }

    /// Validates the EMA (else the model) every `validation.every` steps and after the
    /// last; returns what `on_event` said (`true` when nothing ran).
    fn validate_if_due(
        &mut self,
        model: &Model<B>,
        last: bool,
        on_event: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<bool> {
        let (Some(v), Some(vc)) = (&self.validator, &self.cfg.validation) else {
            return Ok(true);
        };
        let due = self.step.is_multiple_of(vc.every) || last;
        if !due {
            return Ok(true);
        }
        let eval_model = self.ema.clone().unwrap_or_else(|| model.valid());
        let (vlog, _) = v.run(&eval_model, self.device, self.step)?;
        let go_on = on_event(Event::Validation(&vlog));
        self.validations.push(vlog);
        Ok(go_on)
    }

    /// Writes a checkpoint (when checkpoints are on) holding the position after the batch
    /// just used, `total` being the batches of the epoch; returns what `on_event` said.
    fn checkpoint(
        &mut self,
        model: &Model<B>,
        total: usize,
        on_event: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<bool> {
        let Some(dir) = &self.opts.checkpoint_dir else {
            return Ok(true);
        };
        let cfg = self.cfg;
        let (e, b) = if self.next_batch >= total {
            (self.epoch + 1, 0)
        } else {
            (self.epoch, self.next_batch)
        };
        let mut state = checkpoint::state(cfg, self.step, e, b, self.elapsed());
        state.loss_scale = self.scaler;
        let path = checkpoint::save(
            dir,
            cfg.checkpoint.keep,
            &state,
            model,
            &self.optim,
            self.ema.as_ref(),
        )?;
        let go_on = on_event(Event::Checkpoint {
            step: self.step,
            path: &path,
        });
        self.last_checkpoint = Some(path);
        Ok(go_on)
    }

    /// What the run produced.
    fn finish(self, model: Model<B>, stopped: bool) -> Trained<B> {
        Trained {
            model,
            ema: self.ema,
            log: self.log,
            validations: self.validations,
            step: self.step,
            stopped,
            last_checkpoint: self.last_checkpoint,
        }
    }
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
        return Err(precision_needs_a_gpu(precision));
    }
    if !B::supports_dtype(device, dtype) {
        return Err(precision_unsupported(precision, dtype));
    }
    Ok(Some(dtype))
}

/// The error for mixed precision on the CPU.
pub(crate) fn precision_needs_a_gpu(precision: em_autoconf::Precision) -> TrainError {
    TrainError::invalid(
        "precision",
        format!(
            "{precision:?}: mixed precision runs on a GPU device (--device cuda or wgpu); the \
             CPU trains in \"f32\""
        ),
    )
}

/// The error for a half-precision type the device lacks.
pub(crate) fn precision_unsupported(precision: em_autoconf::Precision, dtype: DType) -> TrainError {
    TrainError::invalid(
        "precision",
        format!(
            "{precision:?}: this device has no {dtype:?} arithmetic; use \"f16\" (float16 with \
             loss scaling) or \"f32\""
        ),
    )
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
