//! Hardware detection and automatic training plans.
//!
//! [`probe`] finds what this process may use: CPU cores (affinity mask, cgroup quota,
//! `SLURM_CPUS_PER_TASK`), memory (cgroup limit, `/proc/meminfo`, Slurm) and NVIDIA GPUs
//! (NVML, loaded at run time: no driver means no GPU, never an error). [`plan`] turns that
//! and a model's memory cost into device, precision, patch, batch, accumulation, workers and
//! learning rate, each with its reason; values the user set are kept.
//!
//! ```
//! use em_autoconf::{plan, Gpu, Hardware, ModelCost, Request};
//!
//! // A MedNeXt-like model: 5.6 M parameters, ~300 activation floats per input voxel.
//! let model = ModelCost {
//!     parameters: 5_600_000,
//!     elements_per_voxel_cpu: 300.0,
//!     elements_per_voxel_gpu: 340.0,
//!     checkpoint_fraction: None,
//!     divisor: 16,
//!     io_channels: 2,
//! };
//! let gpu = Gpu {
//!     index: 0,
//!     name: "NVIDIA GeForce RTX 3090".into(),
//!     memory_bytes: 24 << 30,
//!     free_bytes: 24 << 30,
//!     compute_capability: (8, 6),
//!     uuid: String::new(),
//! };
//! let hw = Hardware::described(16, 64 << 30, vec![gpu]);
//! let mut req = Request::new(model, vec![[165, 768, 1024]]);
//! req.gpu_backend = true;
//! let p = plan(&hw, &req)?;
//! assert_eq!(p.patch.value, [128, 128, 128]);
//! assert!(p.step_bytes <= p.budget_bytes);
//! assert_eq!(p.batch.value * p.accumulate.value, 4);
//! for line in p.lines() {
//!     println!("{line}");
//! }
//! # Ok::<(), em_autoconf::AutoconfError>(())
//! ```

mod error;
mod nvml;
mod plan;
mod probe;

pub use error::{AutoconfError, Result};
pub use plan::{plan, Choice, Device, Explicit, ModelCost, Plan, Precision, Request};
pub use probe::{
    available_memory, bytes_of, ensure_memory, human_bytes, probe, probe_from, Gpu, Hardware,
    MemoryError, SlurmAllocation, Sources,
};
