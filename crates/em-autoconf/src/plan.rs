//! Run plans: device, precision, patch, batch, accumulation, loader workers and learning
//! rate for a training run on the probed [`Hardware`], each with the reason it was chosen.
//! Values the user gave are kept as they are ([`Explicit`]); the plan fills the rest.

use serde::{Deserialize, Serialize};

use crate::{AutoconfError, Hardware, Result};

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

/// Plans a training run on `hw`.
pub fn plan(hw: &Hardware, req: &Request) -> Result<Plan> {
    let ex = &req.explicit;
    let m = &req.model;
    if m.divisor == 0 || req.effective_batch == 0 {
        return Err(AutoconfError::InvalidParameter {
            name: "the model's patch divisor and the effective batch",
            reason: "must be at least 1".into(),
        });
    }
    let mut warnings = Vec::new();

    // Device.
    let gpu = hw.gpus.first();
    let device = match ex.device {
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
    };
    let on_gpu = device.value == Device::Gpu;

    // Precision: the narrowest the GPU and the trainer both support.
    let can = |p: Precision| req.precisions.contains(&p);
    let precision = match ex.precision {
        Some(p) => {
            if !can(p) {
                return Err(AutoconfError::Unavailable(format!(
                    "precision {p:?} is not supported by this trainer (it runs {:?})",
                    req.precisions
                )));
            }
            Choice::given(p)
        }
        None => {
            match gpu.filter(|_| on_gpu) {
                None => Choice::auto(Precision::F32, "CPU training runs in float32"),
                Some(g) => {
                    let cc = format!(
                        "compute capability {}.{}",
                        g.compute_capability.0, g.compute_capability.1
                    );
                    if g.supports_bf16() && can(Precision::Bf16) {
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
                    }
                }
            }
        }
    };

    // Memory budget of one step on the device.
    let host_free = hw
        .memory_bytes
        .saturating_sub(HOST_RESERVED + req.data_bytes);
    let budget = match gpu.filter(|_| on_gpu) {
        Some(g) => {
            let usable = g.memory_bytes.min(g.free_bytes.max(g.memory_bytes / 2));
            (usable as f64 * req.memory_fraction) as u64 - GPU_RESERVED.min(usable / 4)
        }
        None => (host_free as f64 * req.memory_fraction) as u64,
    };
    if !on_gpu && req.data_bytes + HOST_RESERVED > hw.memory_bytes {
        warnings.push(format!(
            "the training volumes need {} in memory but {} is available",
            gib(req.data_bytes),
            gib(hw.memory_bytes)
        ));
    }

    let smallest = req
        .volumes
        .iter()
        .fold([usize::MAX; 3], |a, v| [0, 1, 2].map(|i| a[i].min(v[i])));
    let fits_volume = |p: [usize; 3]| req.volumes.is_empty() || (0..3).all(|i| p[i] <= smallest[i]);
    let step =
        |p: [usize; 3], b: usize, ck: bool| m.step_bytes(device.value, precision.value, p, b, ck);
    let can_checkpoint = m.checkpoint_fraction.is_some();
    let checkpoint_options: Vec<bool> = match ex.checkpointing {
        Some(true) if !can_checkpoint => {
            return Err(AutoconfError::Unavailable(
                "checkpointing = true but this trainer cannot checkpoint gradients".into(),
            ))
        }
        Some(c) => vec![c],
        None if can_checkpoint => vec![false, true],
        None => vec![false],
    };
    // The largest batch ≤ the effective target that fits with patch p; down to half of it
    // where a smaller batch divides the effective batch (so accumulation reaches it exactly).
    let max_batch = |p: [usize; 3], ck: bool| -> usize {
        let cap = ex.batch.unwrap_or(req.effective_batch);
        let fit = (1..=cap)
            .rev()
            .find(|&b| step(p, b, ck) <= budget)
            .unwrap_or(0);
        if fit == 0 || ex.batch.is_some() {
            return fit;
        }
        (fit.div_ceil(2)..=fit)
            .rev()
            .find(|b| req.effective_batch.is_multiple_of(*b))
            .unwrap_or(fit)
    };

    // Patch and batch.
    let (patch, batch, checkpointing) = match ex.patch {
        Some(p) => {
            if !fits_volume(p) {
                warnings.push(format!(
                    "patch {p:?} is larger than the smallest training volume {smallest:?}"
                ));
            }
            if p.iter().any(|s| s % m.divisor != 0) {
                warnings.push(format!(
                    "patch {p:?} has sides that are not multiples of {} (the model pads them)",
                    m.divisor
                ));
            }
            let (b, ck) = checkpoint_options
                .iter()
                .map(|&ck| (max_batch(p, ck), ck))
                .find(|&(b, _)| b > 0)
                .unwrap_or((1, false));
            (Choice::given(p), b, ck)
        }
        None => {
            let sides = candidate_patches(
                if on_gpu { MAX_SIDE_GPU } else { MAX_SIDE_CPU },
                m.divisor,
                req.voxel_size,
                &req.volumes,
            )?;
            // On GPUs at least two samples per step (GroupNorm is fine with one, but the
            // steps get noisy); on CPUs one is the usual.
            let min_batch = if on_gpu {
                req.effective_batch.min(2)
            } else {
                1
            };
            let mut found = None;
            'search: for &ck in &checkpoint_options {
                for &p in &sides {
                    let b = max_batch(p, ck);
                    if b >= min_batch.min(ex.batch.unwrap_or(usize::MAX)) && b > 0 {
                        found = Some((p, b, ck));
                        break 'search;
                    }
                }
            }
            let Some((p, b, ck)) = found else {
                let p = *sides.last().expect("at least one candidate");
                return Err(AutoconfError::DoesNotFit(format!(
                    "even a {p:?} patch with batch 1 needs {} but {} is allowed ({} available{}).",
                    gib(step(p, 1, can_checkpoint)),
                    gib(budget),
                    gib(if on_gpu {
                        gpu.map_or(0, |g| g.memory_bytes)
                    } else {
                        hw.memory_bytes
                    }),
                    if on_gpu { "" } else { ", after the data" }
                )));
            };
            let why = format!(
                "the largest patch (≤ {} in-plane on a {}, multiple of {}, within {:?}, anisotropy {:?}) that fits batch ≥ {}",
                if on_gpu { MAX_SIDE_GPU } else { MAX_SIDE_CPU },
                if on_gpu { "GPU" } else { "CPU" },
                m.divisor,
                smallest,
                anisotropy(req.voxel_size),
                min_batch
            );
            (Choice::auto(p, why), b, ck)
        }
    };
    let batch = match ex.batch {
        Some(b) => {
            if step(patch.value, b, checkpointing) > budget {
                warnings.push(format!(
                    "batch {b} with patch {:?} needs about {} but {} is allowed",
                    patch.value,
                    gib(step(patch.value, b, checkpointing)),
                    gib(budget)
                ));
            }
            Choice::given(b)
        }
        None => Choice::auto(
            batch,
            if batch >= req.effective_batch {
                format!(
                    "the effective batch {} fits in one step",
                    req.effective_batch
                )
            } else {
                format!(
                    "the largest batch{} within {:.0}% of {} ({} per step)",
                    if req.effective_batch.is_multiple_of(batch) {
                        format!(" dividing the effective batch {}", req.effective_batch)
                    } else {
                        String::new()
                    },
                    req.memory_fraction * 100.0,
                    gib(if on_gpu {
                        gpu.map_or(0, |g| g.memory_bytes)
                    } else {
                        host_free
                    }),
                    gib(step(patch.value, batch, checkpointing))
                )
            },
        ),
    };
    let checkpointing = match ex.checkpointing {
        Some(c) => Choice::given(c),
        None if checkpointing => Choice::auto(
            true,
            "without it not even batch 1 fits; it recomputes activations in the backward pass",
        ),
        None if can_checkpoint => Choice::auto(false, "the step fits without it"),
        None => Choice::auto(false, "this trainer does not checkpoint gradients"),
    };

    let accumulate = match ex.accumulate {
        Some(a) => Choice::given(a),
        None => {
            let a = req.effective_batch.div_ceil(batch.value).max(1);
            Choice::auto(
                a,
                if a == 1 {
                    "the batch reaches the effective batch".to_string()
                } else {
                    format!(
                        "{a} × batch {} reaches the effective batch {}",
                        batch.value, req.effective_batch
                    )
                },
            )
        }
    };

    let workers = match ex.workers {
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
    };

    let effective = batch.value * accumulate.value;
    let lr = match ex.lr {
        Some(l) => Choice::given(l),
        None => {
            let l = req.base_lr * (effective as f64 / req.base_batch as f64).sqrt();
            Choice::auto(
                l,
                format!(
                    "{:e} at batch {}, scaled by √({effective}/{}) for effective batch {effective}",
                    req.base_lr, req.base_batch, req.base_batch
                ),
            )
        }
    };

    let step_bytes = step(patch.value, batch.value, checkpointing.value);
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
        budget_bytes: budget,
        warnings,
    })
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
}
