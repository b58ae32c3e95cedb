//! Architectures built by name from a serde (TOML/JSON) configuration.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::mednext::{MedNeXt, MedNeXtConfig, MedNeXtSize, Variant};
use crate::rsunet::{RsUNet, RsUNetConfig};
use crate::{ModelError, Result};

fn unreachable_config<T>() -> Result<T> {
    Err(ModelError::InvalidConfig {
        name: "arch",
        reason: "no MedNeXt configuration".into(),
    })
}

/// A model configuration, tagged by `arch`:
///
/// ```toml
/// arch = "mednext"
/// size = "S"
/// kernel_size = 3
/// in_channels = 1
/// out_channels = 3
/// ```
/// or `arch = "mednext_custom"` with every [`MedNeXtConfig`] field (small widths and depths
/// for CPU runs), or `arch = "rsunet"` with [`RsUNetConfig`]'s fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// A published MedNeXt size.
    Mednext {
        /// S, B, M or L.
        size: MedNeXtSize,
        /// Depthwise kernel side (odd).
        #[serde(default = "three")]
        kernel_size: usize,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Deep-supervision heads.
        #[serde(default)]
        deep_supervision: bool,
        /// Down-block convention.
        #[serde(default)]
        variant: Variant,
    },
    /// Any width, depth and ratios.
    MednextCustom(MedNeXtConfig),
    /// The residual U-Net baseline with anisotropic downsampling.
    Rsunet(RsUNetConfig),
}

/// A built model of any registered architecture.
#[derive(Module, Debug)]
pub enum Model<B: Backend> {
    /// MedNeXt (either form).
    MedNeXt(MedNeXt<B>),
    /// RSUNet.
    RsUNet(RsUNet<B>),
}

impl<B: Backend> Model<B> {
    /// The main output (logits).
    ///
    /// # Errors
    /// Input shapes the architecture cannot take.
    pub fn forward(&self, x: Tensor<B, 5>) -> Result<Tensor<B, 5>> {
        match self {
            Self::MedNeXt(m) => m.forward(x),
            Self::RsUNet(m) => m.forward(x),
        }
    }
}

fn three() -> usize {
    3
}

impl ModelConfig {
    /// The MedNeXt configuration this names (`None` for other architectures).
    pub fn mednext(&self) -> Option<MedNeXtConfig> {
        Some(match self {
            Self::Mednext {
                size,
                kernel_size,
                in_channels,
                out_channels,
                deep_supervision,
                variant,
            } => MedNeXtConfig::size(*size, *kernel_size, *in_channels, *out_channels)
                .with_deep_supervision(*deep_supervision)
                .with_variant(*variant),
            Self::MednextCustom(c) => c.clone(),
            Self::Rsunet(_) => return None,
        })
    }

    /// Builds the model with fresh weights.
    ///
    /// # Errors
    /// Invalid settings, named.
    pub fn build<B: Backend>(&self, device: &B::Device) -> Result<Model<B>> {
        match (self, self.mednext()) {
            (Self::Rsunet(c), _) => Ok(Model::RsUNet(c.init(device)?)),
            (_, Some(c)) => Ok(Model::MedNeXt(c.init(device)?)),
            (_, None) => unreachable_config(),
        }
    }
}
