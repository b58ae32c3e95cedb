//! Where training and inference run: `--device auto|cpu|cuda[:N]|wgpu`, checked before any
//! work, and the one dispatch from a device (and gradient checkpointing) to a burn backend
//! that the CLI and the examples share.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use em_autoconf::Hardware;
use em_models::{ConvBackend, Model};

use crate::evaluation::ValidationLog;
use crate::trainer::{train, Event, Opener, RunOptions, StepLog, TrainBackend, Trained};
use crate::{Result, TrainConfig, TrainError};

/// The device a user asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A GPU when this build has a CUDA backend and one is visible, else the CPU.
    #[default]
    Auto,
    /// The CPU (burn's Flex backend with this crate's kernels).
    Cpu,
    /// An NVIDIA GPU by index among the visible ones (feature `cuda`).
    Cuda(usize),
    /// The default wgpu adapter: Vulkan, Metal or DX12; Mesa's software Vulkan driver
    /// where there is no GPU (feature `wgpu`).
    Wgpu,
}

impl FromStr for DeviceChoice {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            TrainError::invalid(
                "device",
                format!("unknown {s:?}: use auto, cpu, cuda, cuda:N (N = 0, 1, …) or wgpu"),
            )
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "wgpu" | "vulkan" => Ok(Self::Wgpu),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Self::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::Wgpu => f.write_str("wgpu"),
        }
    }
}

/// A device checked to be usable by this build on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// NVIDIA GPU `index`.
    Cuda(usize),
    /// The default wgpu adapter.
    Wgpu,
}

impl Device {
    /// Whether it is a GPU (for planning and precision; the wgpu adapter counts, although
    /// a software one computes on the CPU).
    pub fn is_gpu(self) -> bool {
        !matches!(self, Self::Cpu)
    }

    /// The device's name as `--device` spells it.
    pub fn name(self) -> String {
        match self {
            Self::Cpu => "cpu".into(),
            Self::Cuda(i) => format!("cuda:{i}"),
            Self::Wgpu => "wgpu".into(),
        }
    }
}

/// Whether this build has the CUDA backend (feature `cuda`).
pub const HAS_CUDA: bool = cfg!(feature = "cuda");
/// Whether this build has the wgpu backend (feature `wgpu`).
pub const HAS_WGPU: bool = cfg!(feature = "wgpu");

/// The device for `choice` on hardware `hw`, and a sentence saying why it was chosen.
///
/// # Errors
/// A device this build lacks (naming the feature to build with), `cuda` without a driver or
/// without that GPU (naming what is missing), `wgpu` without an adapter.
pub fn resolve(choice: DeviceChoice, hw: &Hardware) -> Result<(Device, String)> {
    let no_gpu = || {
        hw.gpu_note
            .clone()
            .unwrap_or_else(|| "no NVIDIA GPU found".into())
    };
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "the CPU, as asked".into())),
        DeviceChoice::Cuda(i) => {
            if !HAS_CUDA {
                return Err(TrainError::invalid(
                    "--device cuda",
                    "this build has no CUDA backend; rebuild with `--features cuda`",
                ));
            }
            match hw.gpus.get(i) {
                Some(g) => Ok((Device::Cuda(i), format!("cuda:{i} ({}), as asked", g.name))),
                None if hw.gpus.is_empty() => Err(TrainError::invalid(
                    format!("--device cuda:{i}"),
                    format!(
                        "no usable NVIDIA GPU ({}); is the NVIDIA driver installed and the GPU \
                         visible (CUDA_VISIBLE_DEVICES, the Slurm allocation)?",
                        no_gpu()
                    ),
                )),
                None => Err(TrainError::invalid(
                    format!("--device cuda:{i}"),
                    format!(
                        "no such GPU; {} visible (cuda:0 … cuda:{})",
                        hw.gpus.len(),
                        hw.gpus.len() - 1
                    ),
                )),
            }
        }
        DeviceChoice::Wgpu => {
            if !HAS_WGPU {
                return Err(TrainError::invalid(
                    "--device wgpu",
                    "this build has no wgpu backend; rebuild with `--features wgpu`",
                ));
            }
            wgpu_adapter()?;
            Ok((Device::Wgpu, "the default wgpu adapter, as asked".into()))
        }
        DeviceChoice::Auto => match (HAS_CUDA, hw.gpus.first()) {
            (true, Some(g)) => Ok((Device::Cuda(0), format!("cuda:0 ({})", g.name))),
            (false, Some(g)) => Ok((
                Device::Cpu,
                format!(
                    "the CPU: {} is visible but this build has no CUDA backend (rebuild with \
                     `--features cuda`)",
                    g.name
                ),
            )),
            (_, None) => Ok((Device::Cpu, format!("the CPU: {}", no_gpu()))),
        },
    }
}

/// Work that runs on any inference backend; [`on_device`] picks the backend of a
/// [`Device`], so that callers need no per-backend code (or cargo features) of their own.
pub trait OnDevice {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B` and its device `device`.
    fn run<B: ConvBackend>(self, device: &B::Device) -> Self::Output;
}

/// Runs `work` on the backend of `device` (without autodiff).
///
/// # Errors
/// A device this build has no backend for.
pub fn on_device<W: OnDevice>(device: Device, work: W) -> Result<W::Output> {
    match device {
        Device::Cpu => Ok(work.run::<em_models::Cpu>(&Default::default())),
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => {
            Ok(work.run::<em_models::Cuda>(&burn::backend::cuda::CudaDevice { index: i }))
        }
        #[cfg(feature = "wgpu")]
        Device::Wgpu => Ok(work.run::<em_models::Wgpu>(&Default::default())),
        #[allow(unreachable_patterns)]
        other => Err(no_backend(other)),
    }
}

/// The error for a device this build has no backend for.
fn no_backend(device: Device) -> TrainError {
    TrainError::invalid(
        format!("--device {}", device.name()),
        "this build has no backend for it",
    )
}

/// Checks that `device` can train in `precision`: half precision needs a GPU device with
/// that type (checked before any file is written; the trainer checks again).
///
/// # Errors
/// Half precision on the CPU, or a half type the device lacks, with what to use instead.
pub fn check_precision(device: Device, precision: em_autoconf::Precision) -> Result<()> {
    use burn::tensor::DType;
    let dtype = match precision {
        em_autoconf::Precision::F32 => return Ok(()),
        em_autoconf::Precision::Bf16 => DType::BF16,
        em_autoconf::Precision::F16 => DType::F16,
    };
    if device == Device::Cpu {
        return Err(crate::trainer::precision_needs_a_gpu(precision));
    }
    struct Supports(DType);
    impl OnDevice for Supports {
        type Output = bool;
        fn run<B: ConvBackend>(self, device: &B::Device) -> bool {
            B::supports_dtype(device, self.0)
        }
    }
    let supported = on_device(device, Supports(dtype))?;
    if supported {
        Ok(())
    } else {
        Err(crate::trainer::precision_unsupported(precision, dtype))
    }
}

/// Checks that wgpu finds an adapter (burn panics on first use when it does not).
#[cfg(feature = "wgpu")]
fn wgpu_adapter() -> Result<()> {
    use burn::tensor::Tensor;
    let probe = std::panic::catch_unwind(|| {
        let t = Tensor::<em_models::Wgpu, 1>::zeros([1], &Default::default());
        t.into_data().to_vec::<f32>().map(|v| v.len())
    });
    match probe {
        Ok(Ok(1)) => Ok(()),
        _ => Err(TrainError::invalid(
            "--device wgpu",
            "no usable wgpu adapter (no Vulkan, Metal or DX12 driver); on Debian or Ubuntu \
             without a GPU, `apt-get install mesa-vulkan-drivers libvulkan1` provides a software \
             one",
        )),
    }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_adapter() -> Result<()> {
    Ok(())
}

/// A trained model on whichever backend it trained on.
// One value per run: boxing the larger GPU variants would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum TrainedModel {
    /// On the CPU.
    Cpu(Model<em_models::Cpu>),
    /// On NVIDIA GPU `index`.
    #[cfg(feature = "cuda")]
    Cuda(Model<em_models::Cuda>, usize),
    /// On a wgpu adapter.
    #[cfg(feature = "wgpu")]
    Wgpu(Model<em_models::Wgpu>),
}

impl TrainedModel {
    /// Writes the weights as safetensors (MONAI key names for MedNeXt).
    ///
    /// # Errors
    /// As [`em_models::save_weights`].
    pub fn save_weights(&self, path: &Path) -> std::result::Result<(), em_models::ModelError> {
        match self {
            Self::Cpu(m) => em_models::save_weights(m, path),
            #[cfg(feature = "cuda")]
            Self::Cuda(m, _) => em_models::save_weights(m, path),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(m) => em_models::save_weights(m, path),
        }
    }

    /// Predicts `image (C, Z, Y, X)` window by window on the model's device: `(k, Z, Y,
    /// X)` (see [`crate::evaluation::predict`]).
    ///
    /// # Errors
    /// As [`crate::evaluation::predict`].
    pub fn predict(
        &self,
        image: &ndarray::Array4<f32>,
        k: usize,
        window: &em_models::SlidingWindowConfig,
        progress: &dyn em_core::Progress,
    ) -> Result<ndarray::Array4<f32>> {
        use crate::evaluation::predict;
        match self {
            Self::Cpu(m) => predict(m, image, k, window, &Default::default(), progress),
            #[cfg(feature = "cuda")]
            Self::Cuda(m, i) => predict(
                m,
                image,
                k,
                window,
                &burn::backend::cuda::CudaDevice { index: *i },
                progress,
            ),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(m) => predict(m, image, k, window, &Default::default(), progress),
        }
    }
}

/// What a run on any device produced (see [`Trained`]).
pub struct DeviceTrained {
    /// The weights to predict with (the EMA when configured).
    pub model: TrainedModel,
    /// The records of the steps run by this call.
    pub log: Vec<StepLog>,
    /// The validations run by this call.
    pub validations: Vec<ValidationLog>,
    /// Steps done in total.
    pub step: usize,
    /// Whether the run stopped before `steps`.
    pub stopped: bool,
    /// The newest checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
}

fn finish<B: TrainBackend>(
    t: Trained<B>,
    wrap: impl FnOnce(Model<B::InnerBackend>) -> TrainedModel,
) -> DeviceTrained {
    DeviceTrained {
        model: wrap(t.inference_model()),
        log: t.log,
        validations: t.validations,
        step: t.step,
        stopped: t.stopped,
        last_checkpoint: t.last_checkpoint,
    }
}

/// [`train`] on `device`, with gradient checkpointing when `cfg.checkpointing` is set.
///
/// # Errors
/// As [`train`]; a device this build lacks.
pub fn train_on(
    device: Device,
    cfg: &TrainConfig,
    opener: Opener<'_>,
    opts: &RunOptions,
    on_event: &mut dyn FnMut(Event<'_>) -> bool,
) -> Result<DeviceTrained> {
    let run = Run {
        cfg,
        opener,
        opts,
        on_event,
    };
    match device {
        Device::Cpu => run.on::<em_models::Cpu>(&Default::default(), TrainedModel::Cpu),
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => run
            .on::<em_models::Cuda>(&burn::backend::cuda::CudaDevice { index: i }, |m| {
                TrainedModel::Cuda(m, i)
            }),
        #[cfg(feature = "wgpu")]
        Device::Wgpu => run.on::<em_models::Wgpu>(&Default::default(), TrainedModel::Wgpu),
        #[allow(unreachable_patterns)]
        other => Err(no_backend(other)),
    }
}

/// [`train_on`]'s arguments, for one backend at a time.
struct Run<'a, 'b> {
    cfg: &'a TrainConfig,
    opener: Opener<'a>,
    opts: &'a RunOptions,
    on_event: &'b mut dyn FnMut(Event<'_>) -> bool,
}

impl Run<'_, '_> {
    /// Trains on backend `B` (with gradient checkpointing when the config asks).
    fn on<B: ConvBackend>(
        self,
        device: &B::Device,
        wrap: impl FnOnce(Model<B>) -> TrainedModel,
    ) -> Result<DeviceTrained> {
        use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
        use burn::backend::Autodiff;
        let Run {
            cfg,
            opener,
            opts,
            on_event,
        } = self;
        Ok(if cfg.checkpointing {
            finish(
                train::<Autodiff<B, BalancedCheckpointing>>(cfg, opener, device, opts, on_event)?,
                wrap,
            )
        } else {
            finish(
                train::<Autodiff<B>>(cfg, opener, device, opts, on_event)?,
                wrap,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(gpus: Vec<em_autoconf::Gpu>) -> Hardware {
        let mut hw = em_autoconf::probe();
        hw.gpus = gpus;
        hw.gpu_note = hw.gpus.is_empty().then(|| "no NVML library".into());
        hw
    }

    #[test]
    fn device_names_parse_and_print() {
        for (s, d) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
            ("wgpu", DeviceChoice::Wgpu),
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), d);
        }
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
        for bad in ["tpu", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains("auto, cpu, cuda"), "{bad}: {e}");
        }
    }

    #[test]
    fn auto_falls_back_to_the_cpu_and_says_why() {
        let (d, why) = resolve(DeviceChoice::Auto, &hw(vec![])).unwrap();
        assert_eq!(d, Device::Cpu);
        assert!(why.contains("no NVML library"), "{why}");
        let a100 = em_autoconf::Gpu::described("NVIDIA A100", 80 << 30, (8, 0));
        let (d, why) = resolve(DeviceChoice::Auto, &hw(vec![a100])).unwrap();
        if HAS_CUDA {
            assert_eq!(d, Device::Cuda(0));
        } else {
            assert_eq!(d, Device::Cpu);
            assert!(why.contains("--features cuda"), "{why}");
        }
    }

    #[test]
    fn cuda_without_a_gpu_or_backend_is_refused_with_the_reason() {
        let e = resolve(DeviceChoice::Cuda(0), &hw(vec![]))
            .unwrap_err()
            .to_string();
        if HAS_CUDA {
            assert!(
                e.contains("no usable NVIDIA GPU") && e.contains("no NVML library"),
                "{e}"
            );
            let a100 = em_autoconf::Gpu::described("NVIDIA A100", 80 << 30, (8, 0));
            let e = resolve(DeviceChoice::Cuda(1), &hw(vec![a100]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("no such GPU") && e.contains("1 visible"), "{e}");
        } else {
            assert!(e.contains("--features cuda"), "{e}");
        }
        if !HAS_WGPU {
            let e = resolve(DeviceChoice::Wgpu, &hw(vec![]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("--features wgpu"), "{e}");
        }
    }
}
