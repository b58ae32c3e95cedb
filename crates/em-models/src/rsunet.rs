//! A plain residual symmetric 3-D U-Net for anisotropic EM (after PyTC's RSUNet): levels
//! that downsample only in-plane (1, 2, 2) while sections are thick, then isotropically;
//! in-plane (1, 3, 3) convolutions on the anisotropic levels; residual blocks with
//! GroupNorm and ELU; skips added, not concatenated.

use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig3d};
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Tensor};
use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// RSUNet settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsUNetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Channels per level, shallow to deep (PyTC: 28, 36, 48, 64, 80).
    #[serde(default = "default_widths")]
    pub widths: Vec<usize>,
    /// Per level: whether it is isotropic (3×3×3 convs, and 2×2×2 downsampling into it).
    #[serde(default = "default_isotropic")]
    pub isotropic: Vec<bool>,
}

fn default_widths() -> Vec<usize> {
    vec![28, 36, 48, 64, 80]
}
fn default_isotropic() -> Vec<bool> {
    vec![false, false, false, true, true]
}

impl RsUNetConfig {
    /// What each input side `(z, y, x)` must be a multiple of: 2 per halving (in z only
    /// into isotropic levels).
    pub fn divisors(&self) -> [usize; 3] {
        let z = 1usize
            << self
                .isotropic
                .iter()
                .skip(1)
                .filter(|&&b| b)
                .count()
                .min(16);
        let xy = 1usize << self.widths.len().saturating_sub(1).min(16);
        [z, xy, xy]
    }

    /// PyTC's default widths and anisotropy for `in_channels` → `out_channels`.
    pub fn new(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            widths: default_widths(),
            isotropic: default_isotropic(),
        }
    }

    /// Builds the model with fresh weights.
    ///
    /// # Errors
    /// [`ModelError::InvalidParameter`] for empty or mismatched level lists or zero channels.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<RsUNet<B>> {
        if self.widths.is_empty()
            || self.widths.len() != self.isotropic.len()
            || self.widths.contains(&0)
            || self.in_channels == 0
            || self.out_channels == 0
        {
            return Err(ModelError::InvalidParameter {
                name: "rsunet",
                reason: format!(
                    "widths {:?} and isotropic {:?}: one entry per level, channels ≥ 1",
                    self.widths, self.isotropic
                ),
            });
        }
        let n = self.widths.len();
        let w = &self.widths;
        let stride = |i: usize| {
            if self.isotropic[i] {
                [2, 2, 2]
            } else {
                [1, 2, 2]
            }
        };
        Ok(RsUNet {
            stem: conv(self.in_channels, w[0], self.isotropic[0], device),
            down_blocks: (0..n)
                .map(|i| ResBlock::new(w[i], self.isotropic[i], device))
                .collect(),
            downs: (1..n)
                .map(|i| {
                    Conv3dConfig::new([w[i - 1], w[i]], stride(i))
                        .with_stride(stride(i))
                        .init(device)
                })
                .collect(),
            ups: (1..n)
                .rev()
                .map(|i| {
                    ConvTranspose3dConfig::new([w[i], w[i - 1]], stride(i))
                        .with_stride(stride(i))
                        .init(device)
                })
                .collect(),
            up_blocks: (0..n - 1)
                .rev()
                .map(|i| ResBlock::new(w[i], self.isotropic[i], device))
                .collect(),
            head: Conv3dConfig::new([w[0], self.out_channels], [1, 1, 1]).init(device),
            z_factor: self.divisors()[0],
            xy_factor: self.divisors()[1],
        })
    }
}

fn conv<B: Backend>(c_in: usize, c_out: usize, iso: bool, device: &B::Device) -> Conv3d<B> {
    let (k, p) = if iso { ([3, 3, 3], 1) } else { ([1, 3, 3], 0) };
    Conv3dConfig::new([c_in, c_out], k)
        .with_padding(PaddingConfig3d::Explicit(p, 1, 1))
        .init(device)
}

fn norm<B: Backend>(c: usize, device: &B::Device) -> GroupNorm<B> {
    // Up to 8 groups that divide the channels.
    let groups = (1..=8).rev().find(|g| c.is_multiple_of(*g)).unwrap_or(1);
    GroupNormConfig::new(groups, c).init(device)
}

/// conv → norm → ELU → conv → norm, plus the input, → ELU.
#[derive(Module, Debug)]
struct ResBlock<B: Backend> {
    conv1: Conv3d<B>,
    norm1: GroupNorm<B>,
    conv2: Conv3d<B>,
    norm2: GroupNorm<B>,
}

impl<B: Backend> ResBlock<B> {
    fn new(c: usize, iso: bool, device: &B::Device) -> Self {
        Self {
            conv1: conv(c, c, iso, device),
            norm1: norm(c, device),
            conv2: conv(c, c, iso, device),
            norm2: norm(c, device),
        }
    }

    fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let y = activation::elu(self.norm1.forward(self.conv1.forward(x.clone())), 1.0);
        let y = self.norm2.forward(self.conv2.forward(y));
        activation::elu(y + x, 1.0)
    }
}

/// The network.
#[derive(Module, Debug)]
pub struct RsUNet<B: Backend> {
    stem: Conv3d<B>,
    down_blocks: Vec<ResBlock<B>>,
    downs: Vec<Conv3d<B>>,
    ups: Vec<ConvTranspose3d<B>>,
    up_blocks: Vec<ResBlock<B>>,
    head: Conv3d<B>,
    z_factor: usize,
    xy_factor: usize,
}

impl<B: Backend> RsUNet<B> {
    /// Logits `(N, out, Z, Y, X)`; Z must be a multiple of 2^(isotropic levels below the
    /// top) and Y, X of 2^(levels − 1).
    ///
    /// # Errors
    /// [`ModelError::BadInput`] naming the expected and found shapes.
    pub fn forward(&self, x: Tensor<B, 5>) -> Result<Tensor<B, 5>> {
        let d = x.dims();
        let c = self.stem.weight.dims()[1];
        if d[1] != c
            || !d[2].is_multiple_of(self.z_factor)
            || !d[3].is_multiple_of(self.xy_factor)
            || !d[4].is_multiple_of(self.xy_factor)
            || d[2..].contains(&0)
        {
            return Err(ModelError::BadInput {
                expected: format!(
                    "(N, {c}, Z, Y, X) with Z a multiple of {} and Y, X of {}",
                    self.z_factor, self.xy_factor
                ),
                found: d.to_vec(),
            });
        }
        let mut x = self.stem.forward(x);
        let mut skips = Vec::new();
        for (i, block) in self.down_blocks.iter().enumerate() {
            if i > 0 {
                x = self.downs[i - 1].forward(x);
            }
            x = block.forward(x);
            skips.push(x.clone());
        }
        skips.pop();
        for (up, block) in self.ups.iter().zip(&self.up_blocks) {
            x = up.forward(x);
            if let Some(s) = skips.pop() {
                x = x + s;
            }
            x = block.forward(x);
        }
        Ok(self.head.forward(x))
    }
}
