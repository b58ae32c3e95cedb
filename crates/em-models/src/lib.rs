//! Models for EM segmentation on burn: MedNeXt (sizes S/B/M/L, any odd kernel, deep
//! supervision, original and MONAI conventions), PyTorch/MONAI weight import and UpKern,
//! training losses, and sliding-window inference over chunked volumes.
//!
//! ```
//! use burn::backend::Flex;
//! use em_models::{MedNeXtConfig, MedNeXtSize};
//!
//! let config = MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 3);
//! let model = config.init::<Flex>(&Default::default())?;
//! assert_eq!(burn::module::Module::num_params(&model), 5_550_947);
//! # Ok::<(), em_models::ModelError>(())
//! ```

mod blockwise;
mod error;
mod fast;
mod inference;
pub mod kernels;
mod losses;
mod mednext;
mod memory;
mod registry;
mod rsunet;
mod weights;

pub use blockwise::predict_block;
pub use error::{ModelError, Result};
pub use fast::{ConvBackend, ConvGrads};
pub use inference::{
    mednext_predictor, model_predictor, sliding_window, Blend, OutputActivation,
    SlidingWindowConfig,
};
pub use losses::{bce_with_logits, downsample, soft_dice, LossConfig, PosWeight};
pub use mednext::{MedNeXt, MedNeXtConfig, MedNeXtSize, Variant};
pub use memory::MemoryEstimate;
pub use registry::{Model, ModelConfig, PRESETS as MODEL_PRESETS};
pub use rsunet::{RsUNet, RsUNetConfig};
pub use weights::{
    checkpoint_keys, checkpoint_shapes, config_from_checkpoint, load_mednext, load_weights,
    read_f32_tensor, resample_matrix, save_weights, upkern, KeyNaming, LoadReport,
};

/// The default CPU backend (burn's `Flex`: its 3-D convolution backward was measured
/// 20–80× faster than `ndarray`'s).
pub type Cpu = burn::backend::Flex;

/// [`Cpu`] with automatic differentiation, for training.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

/// NVIDIA GPUs: burn's CUDA runtime under its generic GPU backend, named explicitly with
/// fusion off so that a burn feature enabled elsewhere cannot swap the type (feature `cuda`).
#[cfg(feature = "cuda")]
pub type Cuda = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

/// Any wgpu device (Vulkan, Metal, DX12; Mesa's software Vulkan without a GPU) under the
/// same generic GPU backend as [`Cuda`] (feature `wgpu`).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn_cubecl::CubeBackend<cubecl::wgpu::WgpuRuntime, f32, i32, u32>;

/// [`Cuda`], the GPU the examples and training pick first.
#[cfg(feature = "cuda")]
pub type Gpu = Cuda;

/// [`Gpu`] with automatic differentiation, for training.
#[cfg(feature = "cuda")]
pub type GpuTrain = burn::backend::Autodiff<Gpu>;

/// [`CpuTrain`] with gradient checkpointing: burn recomputes cheap activations during the
/// backward pass instead of keeping them, which lowers peak memory; gradients are the same.
pub type CpuTrainCheckpointed = burn::backend::Autodiff<
    Cpu,
    burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing,
>;

/// [`GpuTrain`] with gradient checkpointing (see [`CpuTrainCheckpointed`]).
#[cfg(feature = "cuda")]
pub type GpuTrainCheckpointed = burn::backend::Autodiff<
    Gpu,
    burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing,
>;
