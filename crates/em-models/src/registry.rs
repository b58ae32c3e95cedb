//! Architectures built by name from a serde (TOML/JSON) configuration.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use em_core::config::{self, Presets};
use em_core::CoreError;
use serde::{Deserialize, Serialize};

use crate::mednext::{MedNeXt, MedNeXtConfig, MedNeXtSize, Variant};
use crate::rsunet::{RsUNet, RsUNetConfig};
use crate::{ModelError, Result};

fn unreachable_config<T>() -> Result<T> {
    Err(ModelError::InvalidParameter {
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
        #[serde(default = "default_kernel_size")]
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

impl<B: crate::ConvBackend> Model<B> {
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

    /// The main output followed by any deep-supervision outputs (coarser resolutions).
    ///
    /// # Errors
    /// Input shapes the architecture cannot take.
    pub fn forward_all(&self, x: Tensor<B, 5>) -> Result<Vec<Tensor<B, 5>>> {
        match self {
            Self::MedNeXt(m) => m.forward_all(x),
            Self::RsUNet(m) => Ok(vec![m.forward(x)?]),
        }
    }
}

impl<B: Backend> Model<B> {
    /// Checks an input shape `(N, C, Z, Y, X)` before any work (MedNeXt: sides multiples
    /// of 16; RSUNet checks in its forward pass).
    ///
    /// # Errors
    /// [`ModelError::BadInput`] naming the expected shape.
    pub fn check_input(&self, shape: &[usize]) -> Result<()> {
        match self {
            Self::MedNeXt(m) => m.check_input(shape),
            Self::RsUNet(_) => Ok(()),
        }
    }
}

/// The depthwise kernel of a published MedNeXt size when the config gives none.
fn default_kernel_size() -> usize {
    3
}

/// The model presets shipped in `presets/models/`, by name.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "mednext_s_k3",
        include_str!("../../../presets/models/mednext_s_k3.toml"),
    ),
    (
        "mednext_b_k3",
        include_str!("../../../presets/models/mednext_b_k3.toml"),
    ),
    (
        "mednext_l_k5",
        include_str!("../../../presets/models/mednext_l_k5.toml"),
    ),
    (
        "mednext_cpu",
        include_str!("../../../presets/models/mednext_cpu.toml"),
    ),
    (
        "rsunet",
        include_str!("../../../presets/models/rsunet.toml"),
    ),
];

/// [`PRESETS`], for [`em_core::config`].
const MODEL_PRESETS: Presets = Presets {
    kind: "model",
    builtin: PRESETS,
};

/// A configuration error of [`em_core::config`] as a [`ModelError`]: an unknown preset
/// lists the known ones; a parse error names its origin (a preset or file) when it has one.
fn config_error(e: CoreError) -> ModelError {
    let reason = match e {
        CoreError::UnknownPreset { name, known, .. } => {
            return ModelError::InvalidParameter {
                name: "model preset",
                reason: format!("{name:?} is neither a preset ({known}) nor a file"),
            }
        }
        CoreError::Config { origin, reason } if origin.is_empty() => reason,
        other => other.to_string(),
    };
    ModelError::InvalidParameter {
        name: "model config",
        reason,
    }
}

/// Held while a model draws its initial weights.
static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Initialises every lazily initialised parameter it visits.
struct Materialise;

impl<B: Backend> burn::module::ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

impl ModelConfig {
    /// Parses a TOML configuration.
    ///
    /// # Errors
    /// [`ModelError::InvalidParameter`] with the parser's message (unknown keys and
    /// architectures are named with the allowed ones).
    pub fn from_toml(text: &str) -> Result<Self> {
        config::from_text(text, "").map_err(config_error)
    }

    /// A preset by name (see [`PRESETS`]) or a TOML file by path.
    ///
    /// # Errors
    /// [`ModelError::InvalidParameter`]: unknown names (the known ones are listed),
    /// unreadable files and bad TOML (with the preset or file).
    pub fn load(name_or_path: &str) -> Result<Self> {
        let source = MODEL_PRESETS.read(name_or_path).map_err(config_error)?;
        config::from_text(&source.text, &source.origin).map_err(config_error)
    }

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

    /// What each spatial side of an input must be a multiple of, `(z, y, x)`: 16 for
    /// MedNeXt (four halvings), for RSUNet 2 per isotropic (z) and per any (y, x) halving.
    pub fn divisors(&self) -> [usize; 3] {
        match self {
            Self::Rsunet(c) => c.divisors(),
            _ => [16; 3],
        }
    }

    /// Input and output channels.
    pub fn channels(&self) -> (usize, usize) {
        match (self, self.mednext()) {
            (Self::Rsunet(c), _) => (c.in_channels, c.out_channels),
            (_, Some(c)) => (c.in_channels, c.out_channels),
            (_, None) => (0, 0),
        }
    }

    /// Builds the model with fresh weights.
    ///
    /// # Errors
    /// Invalid settings, named.
    pub fn build<B: Backend>(&self, device: &B::Device) -> Result<Model<B>> {
        let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        let model = self.build_lazy(device)?;
        // burn draws a parameter's initial values when it is first used, which would be
        // outside the lock: draw them all now.
        model.visit(&mut Materialise);
        Ok(model)
    }

    /// Builds the model with the initial weights that `seed` gives: the same weights for
    /// the same seed, also while other threads build models.
    ///
    /// # Errors
    /// Invalid settings, named.
    pub fn build_seeded<B: crate::ConvBackend>(
        &self,
        device: &B::Device,
        seed: u64,
    ) -> Result<Model<B>> {
        // Backends draw initial weights from one global generator: seeding and drawing under
        // the lock every build takes keeps other builds from drawing in between.
        let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        B::seed(device, seed);
        let model = self.build_lazy(device)?;
        // burn draws a weight when it is first used. One pass over the smallest input draws
        // them in the order training's first step always did, so that a seed gives the
        // weights it gave before (the recipes' measured results were trained from them).
        let [z, y, x] = self.divisors();
        let input = Tensor::<B, 5>::zeros([1, self.channels().0.max(1), z, y, x], device);
        let _ = model.forward_all(input);
        model.visit(&mut Materialise);
        Ok(model)
    }

    fn build_lazy<B: Backend>(&self, device: &B::Device) -> Result<Model<B>> {
        match (self, self.mednext()) {
            (Self::Rsunet(c), _) => Ok(Model::RsUNet(c.init(device)?)),
            (_, Some(c)) => Ok(Model::MedNeXt(c.init(device)?)),
            (_, None) => unreachable_config(),
        }
    }
}
