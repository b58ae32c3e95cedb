//! Run plans: device, precision, patch, batch, accumulation, loader workers and learning
//! rate for a training run on the probed [`Hardware`], each with the reason it was chosen.
//! Values the user gave are kept as they are ([`Explicit`]); the plan fills the rest.

use serde::{Deserialize, Serialize};

use crate::{AutoconfError, Gpu, Hardware, Result};

/// Where training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// The CPU cores of [`Hardware::cpus`].
    Cpu,
    /// The first visible NVIDIA GPU.
    Gpu,
}

/// Number format of activations (parameters and optimizer state stay float32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float32 throughout.
    F32,
    /// bfloat16 activations (GPUs with compute capability ≥ 8.0).
    Bf16,
    /// float16 activations with loss scaling (compute capability ≥ 7.0).
    F16,
}

impl Precision {
    /// Bytes per activation element.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 | Self::F16 => 2,
        }
    }
}

/// What a model's training step costs in memory, as the model crate knows it (for MedNeXt:
/// `em_models::MedNeXtConfig::activation_floats_per_voxel`, checked against measured steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCost {
    /// Trainable parameters.
    pub parameters: usize,
    /// Activation elements kept for the backward pass (plus the backward's widest transient)
    /// per input voxel of one batch item, on the CPU backend.
    pub elements_per_voxel_cpu: f64,
    /// The same on the GPU backend (its generic GroupNorm keeps more).
    pub elements_per_voxel_gpu: f64,
    /// Share of those elements kept with gradient checkpointing; `None` where the trainer
    /// cannot checkpoint.
    pub checkpoint_fraction: Option<f64>,
    /// Patch sides must be multiples of this (2^downsamplings; 16 for MedNeXt).
    pub divisor: usize,
    /// Input plus output channels of one sample (for the loader's buffers).
    pub io_channels: usize,
}

impl ModelCost {
    /// Bytes of one training step: float32 weights, gradients and AdamW's two moments (plus
    /// a half-precision copy of the weights under mixed precision), and the activations of
    /// `batch` patches.
    pub fn step_bytes(
        &self,
        device: Device,
        precision: Precision,
        patch: [usize; 3],
        batch: usize,
        checkpointing: bool,
    ) -> u64 {
        let per_param = if precision == Precision::F32 { 16 } else { 18 };
        let elements = match device {
            Device::Cpu => self.elements_per_voxel_cpu,
            Device::Gpu => self.elements_per_voxel_gpu,
        };
        let keep = if checkpointing {
            self.checkpoint_fraction.unwrap_or(1.0)
        } else {
            1.0
        };
        let voxels = patch.iter().product::<usize>() as f64;
        let act = elements * keep * precision.bytes() as f64 * voxels * batch as f64;
        // Saturating: an absurd model or patch reads as "more than any machine has".
        (per_param as u64)
            .saturating_mul(self.parameters as u64)
            .saturating_add(act.ceil() as u64)
    }
}

/// Values the user set; the plan keeps them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Explicit {
    /// Device.
    pub device: Option<Device>,
    /// Precision.
    pub precision: Option<Precision>,
    /// Patch `(z, y, x)`.
    pub patch: Option<[usize; 3]>,
    /// Batch size.
    pub batch: Option<usize>,
    /// Gradient accumulation steps.
    pub accumulate: Option<usize>,
    /// Loader workers.
    pub workers: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Gradient checkpointing.
    pub checkpointing: Option<bool>,
}

/// What the plan is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The model's memory.
    pub model: ModelCost,
    /// Shapes `(z, y, x)` of the training volumes: the patch must fit in the smallest.
    pub volumes: Vec<[usize; 3]>,
    /// Voxel size `(z, y, x)` in nm: patches cover about the same physical extent per axis.
    pub voxel_size: [f64; 3],
    /// Host memory the data needs outside the step (volumes held in memory), bytes.
    pub data_bytes: u64,
    /// The trainer can run on a GPU (built with `cuda`).
    pub gpu_backend: bool,
    /// Precisions the trainer can run.
    pub precisions: Vec<Precision>,
    /// Samples per optimizer step to reach with batch × accumulation.
    pub effective_batch: usize,
    /// The learning rate tuned for [`Request::base_batch`]; scaled with the square root of
    /// the effective batch (AdamW).
    pub base_lr: f64,
    /// The effective batch `base_lr` belongs to.
    pub base_batch: usize,
    /// Share of memory a step may take (the rest: allocator slack, runtime, fragmentation).
    pub memory_fraction: f64,
    /// What the user set.
    pub explicit: Explicit,
}

impl Request {
    /// A request with PyTC/BANIS-like defaults: effective batch 4, AdamW 1e-3 at batch 4,
    /// 85% of memory, isotropic voxels, float32 only, no GPU backend.
    pub fn new(model: ModelCost, volumes: Vec<[usize; 3]>) -> Self {
        Self {
            model,
            volumes,
            voxel_size: [1.0; 3],
            data_bytes: 0,
            gpu_backend: false,
            precisions: vec![Precision::F32],
            effective_batch: 4,
            base_lr: 1e-3,
            base_batch: 4,
            memory_fraction: 0.85,
            explicit: Explicit::default(),
        }
    }
}

/// One planned value and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice<T> {
    /// The value.
    pub value: T,
    /// `true` when the user set it.
    pub explicit: bool,
    /// Why this value.
    pub reason: String,
}

impl<T> Choice<T> {
    fn auto(value: T, reason: impl Into<String>) -> Self {
        Self {
            value,
            explicit: false,
            reason: reason.into(),
        }
    }

    fn given(value: T) -> Self {
        Self {
            value,
            explicit: true,
            reason: "set in the configuration".into(),
        }
    }
}

/// A complete plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// What the probe found.
    pub hardware: Hardware,
    /// Device.
    pub device: Choice<Device>,
    /// Activation precision.
    pub precision: Choice<Precision>,
    /// Patch `(z, y, x)`.
    pub patch: Choice<[usize; 3]>,
    /// Batch size.
    pub batch: Choice<usize>,
    /// Gradient accumulation steps.
    pub accumulate: Choice<usize>,
    /// Loader worker threads.
    pub workers: Choice<usize>,
    /// Learning rate.
    pub lr: Choice<f64>,
    /// Gradient checkpointing.
    pub checkpointing: Choice<bool>,
    /// Estimated peak bytes of a training step on the device.
    pub step_bytes: u64,
    /// Bytes the step may use on the device.
    pub budget_bytes: u64,
    /// Explicit values the plan would not have chosen (over budget, patch larger than a
    /// volume, …).
    pub warnings: Vec<String>,
}

impl Plan {
    /// One line per choice, for logs: `batch = 4 (auto: …)`.
    pub fn lines(&self) -> Vec<String> {
        fn line<T: std::fmt::Debug>(key: &str, c: &Choice<T>) -> String {
            let how = if c.explicit { "set" } else { "auto" };
            format!("{key} = {:?} ({how}: {})", c.value, c.reason)
        }
        let mut out = vec![
            line("device", &self.device),
            line("precision", &self.precision),
            line("patch", &self.patch),
            line("batch_size", &self.batch),
            line("accumulate", &self.accumulate),
            line("workers", &self.workers),
            line("lr", &self.lr),
            line("checkpointing", &self.checkpointing),
            format!(
                "step memory ≈ {} of {} allowed",
                gib(self.step_bytes),
                gib(self.budget_bytes)
            ),
        ];
        out.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        out
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / f64::from(1u32 << 30))
}

/// Largest patch side (in-plane) per device: PyTC/BANIS train at 128³ on GPUs; on CPUs the
/// step time grows with the voxels, so patches stay small.
const MAX_SIDE_GPU: usize = 128;
const MAX_SIDE_CPU: usize = 64;
/// Memory a GPU context and the framework's workspace take before any tensor.
const GPU_RESERVED: u64 = 1 << 30;
/// Host memory of the runtime itself (binary, allocator, threads).
const HOST_RESERVED: u64 = 256 << 20;

/// Plans a training run on `hw`: the device, its precision, the memory budget of a step,
/// patch and batch (with gradient checkpointing where needed), accumulation, loader workers
/// and learning rate, in that order (each choice may depend on the ones before).
pub fn plan(hw: &Hardware, req: &Request) -> Result<Plan> {
    check_request(req)?;
    let device = choose_device(hw, req)?;
    let on_gpu = device.value == Device::Gpu;
    // The GPU trained on, if any.
    let gpu = hw.gpus.first().filter(|_| on_gpu);
    let precision = choose_precision(req, gpu)?;
    let budget = memory_budget(hw, req, gpu);
    let mut warnings: Vec<String> = budget.warning.iter().cloned().collect();
    let sizing = Sizing::new(hw, req, gpu, device.value, precision.value, budget.bytes);
    let PatchAndBatch {
        patch,
        batch,
        checkpointing,
    } = choose_patch_and_batch(&sizing, budget.host_free, &mut warnings)?;
    let accumulate = choose_accumulate(req, batch.value);
    let workers = choose_workers(hw, req, on_gpu);
    let lr = choose_lr(req, batch.value * accumulate.value);
    let step_bytes = sizing.step(patch.value, batch.value, checkpointing.value);
    Ok(Plan {
        hardware: hw.clone(),
        device,
        precision,
        patch,
        batch,
        accumulate,
        workers,
        lr,
        checkpointing,
        step_bytes,
        budget_bytes: budget.bytes,
        warnings,
    })
}

/// Refuses a request no plan can serve.
fn check_request(req: &Request) -> Result<()> {
    if req.model.divisor == 0 || req.effective_batch == 0 {
        return Err(AutoconfError::InvalidParameter {
            name: "the model's patch divisor and the effective batch",
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

/// The device: the one set (refused where this machine or build lacks it), else the first
/// GPU when the trainer can use one, else the CPU.
fn choose_device(hw: &Hardware, req: &Request) -> Result<Choice<Device>> {
    let gpu = hw.gpus.first();
    Ok(match req.explicit.device {
        Some(Device::Gpu) if gpu.is_none() || !req.gpu_backend => {
            return Err(AutoconfError::Unavailable(if req.gpu_backend {
                format!(
                    "device = \"gpu\" but no GPU is visible ({})",
                    hw.gpu_note.as_deref().unwrap_or("none found")
                )
            } else {
                "device = \"gpu\" but this build has no GPU backend (build with --features cuda)"
                    .into()
            }))
        }
        Some(d) => Choice::given(d),
        None => match (gpu, req.gpu_backend) {
            (Some(g), true) => Choice::auto(
                Device::Gpu,
                format!("{} with {} visible", g.name, gib(g.memory_bytes)),
            ),
            (Some(g), false) => Choice::auto(
                Device::Cpu,
                format!(
                    "{} is visible, but this build has no GPU backend (--features cuda)",
                    g.name
                ),
            ),
            (None, _) => Choice::auto(
                Device::Cpu,
                format!(
                    "no GPU ({}); {} CPUs",
                    hw.gpu_note.as_deref().unwrap_or("none found"),
                    hw.cpus
                ),
            ),
        },
    })
}

/// Precision: the one set (refused where the trainer lacks it), else the narrowest that
/// `gpu` (the GPU trained on; `None` on the CPU) and the trainer both support.
fn choose_precision(req: &Request, gpu: Option<&Gpu>) -> Result<Choice<Precision>> {
    let can = |p: Precision| req.precisions.contains(&p);
    if let Some(p) = req.explicit.precision {
        if !can(p) {
            return Err(AutoconfError::Unavailable(format!(
                "precision {p:?} is not supported by this trainer (it runs {:?})",
                req.precisions
            )));
        }
        return Ok(Choice::given(p));
    }
    let Some(g) = gpu else {
        return Ok(Choice::auto(Precision::F32, "CPU training runs in float32"));
    };
    let cc = format!(
        "compute capability {}.{}",
        g.compute_capability.0, g.compute_capability.1
    );
    Ok(if g.supports_bf16() && can(Precision::Bf16) {
        Choice::auto(Precision::Bf16, format!("{cc} has bfloat16 tensor cores"))
    } else if g.supports_f16() && can(Precision::F16) {
        Choice::auto(Precision::F16, format!("{cc} has float16 tensor cores"))
    } else if g.supports_f16() {
        Choice::auto(
            Precision::F32,
            format!("mixed precision would suit {cc}, but this trainer runs float32 only"),
        )
    } else {
        Choice::auto(Precision::F32, format!("{cc} has no tensor cores"))
    })
}

/// The memory one training step may use.
#[derive(Clone, Debug, PartialEq)]
struct Budget {
    /// Bytes of the step on the device.
    bytes: u64,
    /// Host memory left after the runtime and the data held in memory.
    host_free: u64,
    /// Set when the data alone needs more host memory than there is (CPU training).
    warning: Option<String>,
}

/// The memory budget of one step on `gpu` (the GPU trained on), or on the host.
fn memory_budget(hw: &Hardware, req: &Request, gpu: Option<&Gpu>) -> Budget {
    let host_free = hw
        .memory_bytes
        .saturating_sub(HOST_RESERVED + req.data_bytes);
    let bytes = match gpu {
        Some(g) => {
            let usable = g.memory_bytes.min(g.free_bytes.max(g.memory_bytes / 2));
            (usable as f64 * req.memory_fraction) as u64 - GPU_RESERVED.min(usable / 4)
        }
        None => (host_free as f64 * req.memory_fraction) as u64,
    };
    let warning = (gpu.is_none() && req.data_bytes + HOST_RESERVED > hw.memory_bytes).then(|| {
        format!(
            "the training volumes need {} in memory but {} is available",
            gib(req.data_bytes),
            gib(hw.memory_bytes)
        )
    });
    Budget {
        bytes,
        host_free,
        warning,
    }
}

/// What sizing the patch and batch works with: the request, the device and precision
/// chosen, and the budget of a step.
struct Sizing<'a> {
    hw: &'a Hardware,
    req: &'a Request,
    /// The GPU trained on (`None` on the CPU).
    gpu: Option<&'a Gpu>,
    device: Device,
    precision: Precision,
    /// Bytes a step may take.
    budget: u64,
    /// The smallest training volume's side per axis.
    smallest: [usize; 3],
}

impl<'a> Sizing<'a> {
    fn new(
        hw: &'a Hardware,
        req: &'a Request,
        gpu: Option<&'a Gpu>,
        device: Device,
        precision: Precision,
        budget: u64,
    ) -> Self {
        let smallest = req
            .volumes
            .iter()
            .fold([usize::MAX; 3], |a, v| [0, 1, 2].map(|i| a[i].min(v[i])));
        Self {
            hw,
            req,
            gpu,
            device,
            precision,
            budget,
            smallest,
        }
    }

    fn on_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// Bytes of a step with patch `p`, batch `b`, checkpointing `ck`.
    fn step(&self, p: [usize; 3], b: usize, ck: bool) -> u64 {
        self.req
            .model
            .step_bytes(self.device, self.precision, p, b, ck)
    }

    fn fits_volume(&self, p: [usize; 3]) -> bool {
        self.req.volumes.is_empty() || (0..3).all(|i| p[i] <= self.smallest[i])
    }

    /// The largest batch ≤ the effective target that fits with patch p; down to half of it
    /// where a smaller batch divides the effective batch (so accumulation reaches it
    /// exactly).
    fn max_batch(&self, p: [usize; 3], ck: bool) -> usize {
        let (ex, effective) = (&self.req.explicit, self.req.effective_batch);
        let cap = ex.batch.unwrap_or(effective);
        let fit = (1..=cap)
            .rev()
            .find(|&b| self.step(p, b, ck) <= self.budget)
            .unwrap_or(0);
        if fit == 0 || ex.batch.is_some() {
            return fit;
        }
        (fit.div_ceil(2)..=fit)
            .rev()
            .find(|b| effective.is_multiple_of(*b))
            .unwrap_or(fit)
    }

    /// The patch set in the configuration (with warnings where it does not suit), the
    /// largest batch it fits and whether that needs checkpointing.
    fn given_patch(
        &self,
        p: [usize; 3],
        checkpoint_options: &[bool],
        warnings: &mut Vec<String>,
    ) -> (Choice<[usize; 3]>, usize, bool) {
        let divisor = self.req.model.divisor;
        if !self.fits_volume(p) {
            warnings.push(format!(
                "patch {p:?} is larger than the smallest training volume {:?}",
                self.smallest
            ));
        }
        if p.iter().any(|s| s % divisor != 0) {
            warnings.push(format!(
                "patch {p:?} has sides that are not multiples of {divisor} (the model pads them)"
            ));
        }
        let (b, ck) = checkpoint_options
            .iter()
            .map(|&ck| (self.max_batch(p, ck), ck))
            .find(|&(b, _)| b > 0)
            .unwrap_or((1, false));
        (Choice::given(p), b, ck)
    }

    /// The largest candidate patch that fits a batch of at least two samples on a GPU (one
    /// on the CPU), first without checkpointing; its batch and checkpointing.
    fn search_patch(
        &self,
        checkpoint_options: &[bool],
    ) -> Result<(Choice<[usize; 3]>, usize, bool)> {
        let (req, on_gpu) = (self.req, self.on_gpu());
        let m = &req.model;
        let max_side = if on_gpu { MAX_SIDE_GPU } else { MAX_SIDE_CPU };
        let sides = candidate_patches(max_side, m.divisor, req.voxel_size, &req.volumes)?;
        // On GPUs at least two samples per step (GroupNorm is fine with one, but the steps
        // get noisy); on CPUs one is the usual.
        let min_batch = if on_gpu {
            req.effective_batch.min(2)
        } else {
            1
        };
        let wanted = min_batch.min(req.explicit.batch.unwrap_or(usize::MAX));
        let found = checkpoint_options.iter().find_map(|&ck| {
            sides.iter().find_map(|&p| {
                let b = self.max_batch(p, ck);
                (b >= wanted && b > 0).then_some((p, b, ck))
            })
        });
        let Some((p, b, ck)) = found else {
            let p = *sides.last().expect("at least one candidate");
            return Err(AutoconfError::DoesNotFit(format!(
                "even a {p:?} patch with batch 1 needs {} but {} is allowed ({} available{}).",
                gib(self.step(p, 1, m.checkpoint_fraction.is_some())),
                gib(self.budget),
                gib(if on_gpu {
                    self.gpu.map_or(0, |g| g.memory_bytes)
                } else {
                    self.hw.memory_bytes
                }),
                if on_gpu { "" } else { ", after the data" }
            )));
        };
        let why = format!(
            "the largest patch (≤ {} in-plane on a {}, multiple of {}, within {:?}, anisotropy {:?}) that fits batch ≥ {}",
            max_side,
            if on_gpu { "GPU" } else { "CPU" },
            m.divisor,
            self.smallest,
            anisotropy(req.voxel_size),
            min_batch
        );
        Ok((Choice::auto(p, why), b, ck))
    }

    /// The batch: the one set (with a warning when it exceeds the budget), else `batch`,
    /// the largest that fits `patch`.
    fn batch_choice(
        &self,
        patch: [usize; 3],
        batch: usize,
        checkpointing: bool,
        host_free: u64,
        warnings: &mut Vec<String>,
    ) -> Choice<usize> {
        let req = self.req;
        if let Some(b) = req.explicit.batch {
            if self.step(patch, b, checkpointing) > self.budget {
                warnings.push(format!(
                    "batch {b} with patch {patch:?} needs about {} but {} is allowed",
                    gib(self.step(patch, b, checkpointing)),
                    gib(self.budget)
                ));
            }
            return Choice::given(b);
        }
        if batch >= req.effective_batch {
            return Choice::auto(
                batch,
                format!(
                    "the effective batch {} fits in one step",
                    req.effective_batch
                ),
            );
        }
        let dividing = if req.effective_batch.is_multiple_of(batch) {
            format!(" dividing the effective batch {}", req.effective_batch)
        } else {
            String::new()
        };
        let memory = if self.on_gpu() {
            self.gpu.map_or(0, |g| g.memory_bytes)
        } else {
            host_free
        };
        Choice::auto(
            batch,
            format!(
                "the largest batch{dividing} within {:.0}% of {} ({} per step)",
                req.memory_fraction * 100.0,
                gib(memory),
                gib(self.step(patch, batch, checkpointing))
            ),
        )
    }
}

/// The patch, the batch and gradient checkpointing, chosen together.
struct PatchAndBatch {
    patch: Choice<[usize; 3]>,
    batch: Choice<usize>,
    checkpointing: Choice<bool>,
}

/// Whether gradient checkpointing may be used, in the order to try: the value set, else
/// without and then with it where the trainer can checkpoint.
fn checkpoint_options(req: &Request) -> Result<Vec<bool>> {
    let can_checkpoint = req.model.checkpoint_fraction.is_some();
    Ok(match req.explicit.checkpointing {
        Some(true) if !can_checkpoint => {
            return Err(AutoconfError::Unavailable(
                "checkpointing = true but this trainer cannot checkpoint gradients".into(),
            ))
        }
        Some(c) => vec![c],
        None if can_checkpoint => vec![false, true],
        None => vec![false],
    })
}

/// Patch, batch and gradient checkpointing: the patch set (kept, with warnings), else the
/// largest candidate that fits; the largest batch that fits it; checkpointing only where
/// nothing fits without it. `host_free` is named in the batch's reason on the CPU.
fn choose_patch_and_batch(
    sizing: &Sizing<'_>,
    host_free: u64,
    warnings: &mut Vec<String>,
) -> Result<PatchAndBatch> {
    let req = sizing.req;
    let options = checkpoint_options(req)?;
    let (patch, batch, checkpointing) = match req.explicit.patch {
        Some(p) => sizing.given_patch(p, &options, warnings),
        None => sizing.search_patch(&options)?,
    };
    let batch = sizing.batch_choice(patch.value, batch, checkpointing, host_free, warnings);
    let checkpointing = match req.explicit.checkpointing {
        Some(c) => Choice::given(c),
        None if checkpointing => Choice::auto(
            true,
            "without it not even batch 1 fits; it recomputes activations in the backward pass",
        ),
        None if req.model.checkpoint_fraction.is_some() => {
            Choice::auto(false, "the step fits without it")
        }
        None => Choice::auto(false, "this trainer does not checkpoint gradients"),
    };
    Ok(PatchAndBatch {
        patch,
        batch,
        checkpointing,
    })
}

/// Accumulation: the value set, else enough steps of `batch` to reach the effective batch.
fn choose_accumulate(req: &Request, batch: usize) -> Choice<usize> {
    if let Some(a) = req.explicit.accumulate {
        return Choice::given(a);
    }
    let a = req.effective_batch.div_ceil(batch).max(1);
    Choice::auto(
        a,
        if a == 1 {
            "the batch reaches the effective batch".to_string()
        } else {
            format!(
                "{a} × batch {batch} reaches the effective batch {}",
                req.effective_batch
            )
        },
    )
}

/// Loader workers: the value set, else all CPUs but the one driving a GPU (at most 8), or
/// few on the CPU, where loading competes with the step's threads.
fn choose_workers(hw: &Hardware, req: &Request, on_gpu: bool) -> Choice<usize> {
    match req.explicit.workers {
        Some(w) => Choice::given(w),
        None if on_gpu => {
            let w = hw.cpus.saturating_sub(1).clamp(1, 8);
            Choice::auto(
                w,
                format!(
                    "{} CPUs: one drives the GPU, the rest load (at most 8)",
                    hw.cpus
                ),
            )
        }
        None => {
            let w = if hw.cpus <= 4 {
                1
            } else {
                (hw.cpus / 8).clamp(1, 4)
            };
            Choice::auto(
                w,
                format!(
                    "{} CPUs: loading competes with the training step's threads, so few loaders",
                    hw.cpus
                ),
            )
        }
    }
}

/// The learning rate: the value set, else the base rate scaled by the square root of the
/// effective batch (`batch × accumulate`) over the base batch.
fn choose_lr(req: &Request, effective: usize) -> Choice<f64> {
    if let Some(l) = req.explicit.lr {
        return Choice::given(l);
    }
    let l = req.base_lr * (effective as f64 / req.base_batch as f64).sqrt();
    Choice::auto(
        l,
        format!(
            "{:e} at batch {}, scaled by √({effective}/{}) for effective batch {effective}",
            req.base_lr, req.base_batch, req.base_batch
        ),
    )
}

/// `voxel_size` relative to its finest axis.
fn anisotropy(v: [f64; 3]) -> [f64; 3] {
    let min = v
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(f64::MIN_POSITIVE);
    v.map(|s| (s / min * 100.0).round() / 100.0)
}

/// Patches from the largest down, one per in-plane side (multiples of `divisor` up to
/// `max_side`): the z side covers about the same physical extent, every side is a multiple
/// of `divisor` and at most the smallest volume's side (rounded down).
fn candidate_patches(
    max_side: usize,
    divisor: usize,
    voxel_size: [f64; 3],
    volumes: &[[usize; 3]],
) -> Result<Vec<[usize; 3]>> {
    let smallest = volumes
        .iter()
        .fold([usize::MAX; 3], |a, v| [0, 1, 2].map(|i| a[i].min(v[i])));
    let cap = smallest.map(|s| s / divisor * divisor);
    if cap.contains(&0) {
        return Err(AutoconfError::DoesNotFit(format!(
            "the smallest training volume {smallest:?} is thinner than {divisor} voxels along an axis; the model needs patch sides that are multiples of {divisor}"
        )));
    }
    let [vz, vy, vx] = voxel_size.map(|v| if v > 0.0 { v } else { 1.0 });
    let round = |s: f64| ((s / divisor as f64).round() as usize).max(1) * divisor;
    let mut out: Vec<[usize; 3]> = Vec::new();
    for side in (1..=max_side / divisor).rev().map(|k| k * divisor) {
        let p = [
            round(side as f64 * vy.min(vx) / vz).min(cap[0]),
            side.min(cap[1]),
            round(side as f64 * vy / vx).min(cap[2]),
        ];
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_anisotropy_and_the_volume() {
        let c = candidate_patches(128, 16, [30.0, 6.0, 6.0], &[[100, 1024, 1024]]).unwrap();
        assert_eq!(c[0], [32, 128, 128]);
        assert!(c.iter().all(|p| p.iter().all(|s| s % 16 == 0)));
        let c = candidate_patches(64, 16, [1.0; 3], &[[40, 200, 50]]).unwrap();
        assert_eq!(c[0], [32, 64, 48]);
        assert!(candidate_patches(64, 16, [1.0; 3], &[[8, 200, 200]]).is_err());
    }

    fn request() -> Request {
        let model = ModelCost {
            parameters: 1_000_000,
            elements_per_voxel_cpu: 300.0,
            elements_per_voxel_gpu: 340.0,
            checkpoint_fraction: None,
            divisor: 16,
            io_channels: 2,
        };
        Request::new(model, vec![[100, 500, 500]])
    }

    #[test]
    fn precision_is_the_narrowest_the_gpu_and_trainer_share() {
        let mut req = request();
        let cpu = choose_precision(&req, None).unwrap();
        assert_eq!((cpu.value, cpu.explicit), (Precision::F32, false));
        let a100 = Gpu::described("A100", 80 << 30, (8, 0));
        let v100 = Gpu::described("V100", 32 << 30, (7, 0));
        // A float32-only trainer stays in float32 on any GPU.
        assert_eq!(
            choose_precision(&req, Some(&a100)).unwrap().value,
            Precision::F32
        );
        req.precisions = vec![Precision::F32, Precision::Bf16, Precision::F16];
        assert_eq!(
            choose_precision(&req, Some(&a100)).unwrap().value,
            Precision::Bf16
        );
        assert_eq!(
            choose_precision(&req, Some(&v100)).unwrap().value,
            Precision::F16
        );
        req.explicit.precision = Some(Precision::F32);
        assert!(choose_precision(&req, Some(&a100)).unwrap().explicit);
        req.precisions = vec![Precision::Bf16];
        assert!(choose_precision(&req, Some(&a100)).is_err());
    }

    #[test]
    fn the_budget_leaves_room_for_the_runtime_and_the_data() {
        let mut req = request();
        req.data_bytes = 1 << 30;
        let hw = Hardware::described(8, 16 << 30, vec![]);
        let b = memory_budget(&hw, &req, None);
        assert_eq!(b.host_free, (16 << 30) - (1 << 30) - HOST_RESERVED);
        assert_eq!(b.bytes, (b.host_free as f64 * 0.85) as u64);
        assert_eq!(b.warning, None);
        // On a GPU: 85% of its memory less the context's reserve.
        let g = Gpu::described("g", 8 << 30, (8, 0));
        let b = memory_budget(&hw, &req, Some(&g));
        assert_eq!(b.bytes, ((8u64 << 30) as f64 * 0.85) as u64 - GPU_RESERVED);
        // Data larger than the host memory is a warning on the CPU.
        req.data_bytes = 32 << 30;
        let b = memory_budget(&hw, &req, None);
        assert_eq!((b.bytes, b.host_free), (0, 0));
        assert!(b.warning.unwrap().contains("training volumes need"));
    }

    #[test]
    fn workers_leave_the_cpus_to_the_step() {
        let req = request();
        let w = |cpus, gpu| choose_workers(&Hardware::described(cpus, 1 << 30, vec![]), &req, gpu);
        assert_eq!([1, 4, 8, 64].map(|c| w(c, false).value), [1, 1, 1, 4]);
        assert_eq!([1, 4, 16].map(|c| w(c, true).value), [1, 3, 8]);
        let mut req = request();
        req.explicit.workers = Some(5);
        let hw = Hardware::described(2, 1 << 30, vec![]);
        assert!(choose_workers(&hw, &req, false).explicit);
    }

    #[test]
    fn the_learning_rate_scales_with_the_root_of_the_effective_batch() {
        let req = request();
        assert_eq!(choose_lr(&req, 4).value, 1e-3);
        assert!((choose_lr(&req, 16).value - 2e-3).abs() < 1e-15);
        assert_eq!(choose_accumulate(&req, 3).value, 2);
        assert_eq!(choose_accumulate(&req, 8).value, 1);
    }
}
