//! MedNeXt (Roy et al., MICCAI 2023) for 3-D segmentation, with MONAI's module names so that
//! MONAI checkpoints load by name and original (MIC-DKFZ) ones after a key mapping.
//!
//! Structure: a 1×1 stem, four encoder stages of ConvNeXt-style blocks (depthwise k³ conv →
//! GroupNorm with one group per channel → 1×1 expansion → GELU → 1×1 projection, plus the
//! input), stride-2 down blocks with a 1×1 stride-2 residual, a bottleneck, and four
//! decoder stages fed by transposed-conv up blocks whose output is padded by one plane at
//! the front of each axis and added (not concatenated) to the encoder skip. Deep supervision
//! adds 1×1 heads on the bottleneck and decoder stages 3, 2, 1.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig3d};
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;

use crate::fast::ConvBackend;
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Tensor};
use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// The published sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MedNeXtSize {
    /// Small: ratio 2, two blocks per stage (5.6 M parameters at k3).
    S,
    /// Base.
    B,
    /// Medium.
    M,
    /// Large.
    L,
}

impl std::str::FromStr for MedNeXtSize {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "S" => Ok(Self::S),
            "B" => Ok(Self::B),
            "M" => Ok(Self::M),
            "L" => Ok(Self::L),
            other => Err(ModelError::InvalidParameter {
                name: "size",
                reason: format!("{other:?}; allowed: S, B, M, L"),
            }),
        }
    }
}

/// Which expansion ratio a down block takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// MIC-DKFZ's original: the ratio of the stage the block feeds.
    #[default]
    Original,
    /// MONAI's port: the ratio of the stage it leaves (S is identical; B/M/L differ).
    Monai,
}

impl std::str::FromStr for Variant {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "original" => Ok(Self::Original),
            "monai" => Ok(Self::Monai),
            other => Err(ModelError::InvalidParameter {
                name: "variant",
                reason: format!("{other:?}; allowed: original, monai"),
            }),
        }
    }
}

/// Everything that defines a MedNeXt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedNeXtConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (classes or affinity channels).
    pub out_channels: usize,
    /// Channels after the stem (32 in the paper); doubled at every level.
    #[serde(default = "default_width")]
    pub width: usize,
    /// Depthwise kernel side (odd; 3 or 5 in the paper).
    #[serde(default = "default_kernel")]
    pub kernel_size: usize,
    /// Expansion ratio per stage: encoder 0–3, bottleneck, decoder 3–0.
    pub ratios: [usize; 9],
    /// Blocks per stage, same order.
    pub blocks: [usize; 9],
    /// Extra 1×1 heads at 1/2 … 1/16 resolution.
    #[serde(default)]
    pub deep_supervision: bool,
    /// Down-block ratio convention.
    #[serde(default)]
    pub variant: Variant,
    /// Global response normalisation in the blocks (ConvNeXt-V2).
    #[serde(default)]
    pub grn: bool,
}

fn default_width() -> usize {
    32
}
fn default_kernel() -> usize {
    3
}

impl MedNeXtConfig {
    /// A published size.
    pub fn size(
        size: MedNeXtSize,
        kernel_size: usize,
        in_channels: usize,
        out_channels: usize,
    ) -> Self {
        let (ratios, blocks) = match size {
            MedNeXtSize::S => ([2; 9], [2; 9]),
            MedNeXtSize::B => ([2, 3, 4, 4, 4, 4, 4, 3, 2], [2; 9]),
            MedNeXtSize::M => ([2, 3, 4, 4, 4, 4, 4, 3, 2], [3, 4, 4, 4, 4, 4, 4, 4, 3]),
            MedNeXtSize::L => ([3, 4, 8, 8, 8, 8, 8, 4, 3], [3, 4, 8, 8, 8, 8, 8, 4, 3]),
        };
        Self {
            in_channels,
            out_channels,
            width: 32,
            kernel_size,
            ratios,
            blocks,
            deep_supervision: false,
            variant: Variant::Original,
            grn: false,
        }
    }

    /// With deep supervision on or off.
    pub fn with_deep_supervision(mut self, on: bool) -> Self {
        self.deep_supervision = on;
        self
    }

    /// With a down-block ratio convention.
    pub fn with_variant(mut self, variant: Variant) -> Self {
        self.variant = variant;
        self
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`ModelError::InvalidParameter`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(ModelError::InvalidParameter { name, reason });
        if self.kernel_size.is_multiple_of(2) {
            return bad(
                "kernel_size",
                format!("{} is even; use an odd side (3, 5, 7)", self.kernel_size),
            );
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.width == 0 {
            return bad(
                "channels",
                format!(
                    "in {}, out {}, width {}: all must be ≥ 1",
                    self.in_channels, self.out_channels, self.width
                ),
            );
        }
        if self.ratios.contains(&0) {
            return bad("ratios", format!("{:?} has a 0", self.ratios));
        }
        Ok(())
    }

    /// Builds the model with fresh weights (PyTorch's default initialisation scheme).
    ///
    /// # Errors
    /// As [`MedNeXtConfig::validate`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<MedNeXt<B>> {
        self.validate()?;
        let (w, k, r) = (self.width, self.kernel_size, &self.ratios);
        let ch = |level: usize| w << level;
        let enc_stages = (0..4)
            .map(|i| {
                (0..self.blocks[i])
                    .map(|_| Block::new(ch(i), ch(i), r[i], k, self.grn, device))
                    .collect()
            })
            .collect();
        let down_blocks = (0..4)
            .map(|i| {
                let ratio = match self.variant {
                    Variant::Original => r[i + 1],
                    Variant::Monai => r[i],
                };
                Down::new(ch(i), ch(i + 1), ratio, k, self.grn, device)
            })
            .collect();
        let bottleneck = (0..self.blocks[4])
            .map(|_| Block::new(ch(4), ch(4), r[4], k, self.grn, device))
            .collect();
        // Decoder lists run deepest first (MONAI's order): index i feeds level 3 − i.
        let up_blocks = (0..4)
            .map(|i| Up::new(ch(4 - i), ch(3 - i), r[5 + i], k, self.grn, device))
            .collect();
        let dec_stages = (0..4)
            .map(|i| {
                (0..self.blocks[5 + i])
                    .map(|_| Block::new(ch(3 - i), ch(3 - i), r[5 + i], k, self.grn, device))
                    .collect()
            })
            .collect();
        let out_blocks = if self.deep_supervision {
            (0..4)
                .map(|i| Head::new(ch(4 - i), self.out_channels, device))
                .collect()
        } else {
            Vec::new()
        };
        Ok(MedNeXt {
            stem: Conv3dConfig::new([self.in_channels, w], [1, 1, 1]).init(device),
            enc_stages,
            down_blocks,
            bottleneck,
            up_blocks,
            dec_stages,
            out_0: Head::new(w, self.out_channels, device),
            out_blocks,
        })
    }
}

/// The network. Field names follow MONAI's state-dict keys.
#[derive(Module, Debug)]
pub struct MedNeXt<B: Backend> {
    pub(crate) stem: Conv3d<B>,
    pub(crate) enc_stages: Vec<Vec<Block<B>>>,
    pub(crate) down_blocks: Vec<Down<B>>,
    pub(crate) bottleneck: Vec<Block<B>>,
    pub(crate) up_blocks: Vec<Up<B>>,
    pub(crate) dec_stages: Vec<Vec<Block<B>>>,
    pub(crate) out_0: Head<B>,
    pub(crate) out_blocks: Vec<Head<B>>,
}

impl<B: Backend> MedNeXt<B> {
    /// Checks that an input `(N, C, Z, Y, X)` fits: `in_channels` and every side a multiple
    /// of 16 (four halvings).
    ///
    /// # Errors
    /// [`ModelError::BadInput`] naming the expected and found shapes.
    pub fn check_input(&self, shape: &[usize]) -> Result<()> {
        let c = self.stem.weight.dims()[1];
        if shape.len() != 5 || shape[1] != c || shape[2..].iter().any(|&s| s == 0 || s % 16 != 0) {
            return Err(ModelError::BadInput {
                expected: format!("(N, {c}, Z, Y, X) with Z, Y, X positive multiples of 16"),
                found: shape.to_vec(),
            });
        }
        Ok(())
    }
}

impl<B: ConvBackend> MedNeXt<B> {
    /// The main output `(N, out, Z, Y, X)` (logits).
    ///
    /// # Errors
    /// As [`MedNeXt::check_input`].
    pub fn forward(&self, x: Tensor<B, 5>) -> Result<Tensor<B, 5>> {
        Ok(self.run(x, false)?.swap_remove(0))
    }

    /// The main output followed by the deep-supervision outputs at 1/2, 1/4, 1/8, 1/16
    /// resolution (only the main one without deep supervision).
    ///
    /// # Errors
    /// As [`MedNeXt::check_input`].
    pub fn forward_all(&self, x: Tensor<B, 5>) -> Result<Vec<Tensor<B, 5>>> {
        self.run(x, true)
    }

    /// Whether the model has deep-supervision heads.
    pub fn deep_supervision(&self) -> bool {
        !self.out_blocks.is_empty()
    }

    fn run(&self, x: Tensor<B, 5>, heads: bool) -> Result<Vec<Tensor<B, 5>>> {
        self.check_input(&x.dims())?;
        let mut x = pointwise(&self.stem, x);
        let mut skips = Vec::with_capacity(4);
        for (stage, down) in self.enc_stages.iter().zip(&self.down_blocks) {
            for block in stage {
                x = block.forward(x);
            }
            skips.push(x.clone());
            x = down.forward(x);
        }
        for block in &self.bottleneck {
            x = block.forward(x);
        }
        let mut ds = Vec::new();
        for (i, (up, stage)) in self.up_blocks.iter().zip(&self.dec_stages).enumerate() {
            if heads {
                if let Some(head) = self.out_blocks.get(i) {
                    ds.push(head.forward(x.clone()));
                }
            }
            x = up.forward(x);
            if let Some(skip) = skips.pop() {
                x = x + skip;
            }
            for block in stage {
                x = block.forward(x);
            }
        }
        let mut out = vec![self.out_0.forward(x)];
        ds.reverse();
        out.extend(ds);
        Ok(out)
    }
}

/// Global response normalisation parameters (MONAI names).
#[derive(Module, Debug)]
pub(crate) struct Grn<B: Backend> {
    pub(crate) global_resp_gamma: Param<Tensor<B, 5>>,
    pub(crate) global_resp_beta: Param<Tensor<B, 5>>,
}

/// The shared path of every block: depthwise conv → norm → expand → GELU (→ GRN) → project.
#[derive(Module, Debug)]
pub(crate) struct Block<B: Backend> {
    pub(crate) conv1: Conv3d<B>,
    pub(crate) norm: GroupNorm<B>,
    pub(crate) conv2: Conv3d<B>,
    pub(crate) conv3: Conv3d<B>,
    pub(crate) grn: Option<Grn<B>>,
}

fn depthwise<B: Backend>(c: usize, k: usize, stride: usize, device: &B::Device) -> Conv3d<B> {
    Conv3dConfig::new([c, c], [k; 3])
        .with_stride([stride; 3])
        .with_padding(PaddingConfig3d::Explicit(k / 2, k / 2, k / 2))
        .with_groups(c)
        .init(device)
}

/// The layers after `conv1` that every block kind has, built once for all of them.
struct TailLayers<B: Backend> {
    norm: GroupNorm<B>,
    conv2: Conv3d<B>,
    conv3: Conv3d<B>,
    grn: Option<Grn<B>>,
}

impl<B: Backend> TailLayers<B> {
    fn new(c_in: usize, c_out: usize, r: usize, grn: bool, device: &B::Device) -> Self {
        let grn_param = || Param::from_tensor(Tensor::zeros([1, r * c_in, 1, 1, 1], device));
        Self {
            norm: GroupNormConfig::new(c_in, c_in).init(device),
            conv2: Conv3dConfig::new([c_in, r * c_in], [1, 1, 1]).init(device),
            conv3: Conv3dConfig::new([r * c_in, c_out], [1, 1, 1]).init(device),
            grn: grn.then(|| Grn {
                global_resp_gamma: grn_param(),
                global_resp_beta: grn_param(),
            }),
        }
    }
}

impl<B: Backend> Block<B> {
    fn new(c_in: usize, c_out: usize, r: usize, k: usize, grn: bool, device: &B::Device) -> Self {
        let t = TailLayers::new(c_in, c_out, r, grn, device);
        Self {
            conv1: depthwise(c_in, k, 1, device),
            norm: t.norm,
            conv2: t.conv2,
            conv3: t.conv3,
            grn: t.grn,
        }
    }
}

impl<B: ConvBackend> Block<B> {
    fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let path = tail(
            &self.norm,
            &self.conv2,
            &self.conv3,
            self.grn.as_ref(),
            depthwise_conv(&self.conv1, x.clone()),
        );
        x + path
    }
}

/// Stride-2 down block: path + 1×1 stride-2 residual, no identity.
#[derive(Module, Debug)]
pub(crate) struct Down<B: Backend> {
    pub(crate) conv1: Conv3d<B>,
    pub(crate) norm: GroupNorm<B>,
    pub(crate) conv2: Conv3d<B>,
    pub(crate) conv3: Conv3d<B>,
    pub(crate) grn: Option<Grn<B>>,
    pub(crate) res_conv: Conv3d<B>,
}

impl<B: Backend> Down<B> {
    fn new(c_in: usize, c_out: usize, r: usize, k: usize, grn: bool, device: &B::Device) -> Self {
        let t = TailLayers::new(c_in, c_out, r, grn, device);
        Self {
            conv1: depthwise(c_in, k, 2, device),
            norm: t.norm,
            conv2: t.conv2,
            conv3: t.conv3,
            grn: t.grn,
            res_conv: Conv3dConfig::new([c_in, c_out], [1, 1, 1])
                .with_stride([2; 3])
                .init(device),
        }
    }
}

impl<B: ConvBackend> Down<B> {
    fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let path = tail(
            &self.norm,
            &self.conv2,
            &self.conv3,
            self.grn.as_ref(),
            through(&self.conv1, x.clone(), B::down_depthwise_conv3d),
        );
        path + through(&self.res_conv, x, B::down_pointwise_conv3d)
    }
}

/// Transposed-conv up block: path + 1×1 stride-2 transposed residual, each padded by one
/// plane at the front of every axis (2n − 1 → 2n).
#[derive(Module, Debug)]
pub(crate) struct Up<B: Backend> {
    pub(crate) conv1: ConvTranspose3d<B>,
    pub(crate) norm: GroupNorm<B>,
    pub(crate) conv2: Conv3d<B>,
    pub(crate) conv3: Conv3d<B>,
    pub(crate) grn: Option<Grn<B>>,
    pub(crate) res_conv: ConvTranspose3d<B>,
}

impl<B: Backend> Up<B> {
    fn new(c_in: usize, c_out: usize, r: usize, k: usize, grn: bool, device: &B::Device) -> Self {
        let t = TailLayers::new(c_in, c_out, r, grn, device);
        Self {
            conv1: ConvTranspose3dConfig::new([c_in, c_in], [k; 3])
                .with_stride([2; 3])
                .with_padding([k / 2; 3])
                .with_groups(c_in)
                .init(device),
            norm: t.norm,
            conv2: t.conv2,
            conv3: t.conv3,
            grn: t.grn,
            res_conv: ConvTranspose3dConfig::new([c_in, c_out], [1, 1, 1])
                .with_stride([2; 3])
                .init(device),
        }
    }
}

impl<B: ConvBackend> Up<B> {
    fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let path = tail(
            &self.norm,
            &self.conv2,
            &self.conv3,
            self.grn.as_ref(),
            up_depthwise_conv(&self.conv1, x.clone()),
        );
        let residual = transposed(&self.res_conv, x, B::up_pointwise_conv3d, false);
        // Both branches get the same zero front planes: pad once, after the sum.
        pad_front(path + residual)
    }
}

/// Everything after `conv1`: norm → expand → GELU (→ GRN) → project.
fn tail<B: ConvBackend>(
    norm: &GroupNorm<B>,
    conv2: &Conv3d<B>,
    conv3: &Conv3d<B>,
    grn: Option<&Grn<B>>,
    x: Tensor<B, 5>,
) -> Tensor<B, 5> {
    let mut x = pointwise_gelu(conv2, group_norm(norm, x));
    if let Some(g) = grn {
        let gx = x
            .clone()
            .powi_scalar(2)
            .sum_dim(2)
            .sum_dim(3)
            .sum_dim(4)
            .sqrt();
        let nx = gx.clone() / (gx.mean_dim(1) + 1e-6);
        x = param_as(&g.global_resp_gamma, &x) * (x.clone() * nx)
            + param_as(&g.global_resp_beta, &x)
            + x;
    }
    pointwise(conv3, x)
}

/// GroupNorm through [`ConvBackend`]'s fused kernel where the backend has one.
fn group_norm<B: ConvBackend>(norm: &GroupNorm<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    if let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) {
        let fused = B::fast_group_norm(
            x.clone().into_primitive().tensor(),
            param_as(gamma, &x).into_primitive().tensor(),
            param_as(beta, &x).into_primitive().tensor(),
            norm.num_groups,
            norm.epsilon,
        );
        if let Some(out) = fused {
            return Tensor::from_primitive(TensorPrimitive::Float(out));
        }
    }
    norm.forward(x)
}

/// A stride-1 depthwise convolution through [`ConvBackend`] (fast kernels where the backend
/// has them).
fn depthwise_conv<B: ConvBackend>(conv: &Conv3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    through(conv, x, B::depthwise_conv3d)
}

/// A stride-1 1×1×1 convolution through [`ConvBackend`].
fn pointwise<B: ConvBackend>(conv: &Conv3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    through(conv, x, B::pointwise_conv3d)
}

/// GELU of a stride-1 1×1×1 convolution, fused where the backend can.
fn pointwise_gelu<B: ConvBackend>(conv: &Conv3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    if conv.bias.is_none() {
        return activation::gelu(conv.forward(x));
    }
    through(conv, x, B::pointwise_conv3d_gelu)
}

/// `conv` applied by a [`ConvBackend`] operation `(x, weight, bias)`; burn's own forward
/// for a convolution without bias.
fn through<B: ConvBackend>(
    conv: &Conv3d<B>,
    x: Tensor<B, 5>,
    op: fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> Tensor<B, 5> {
    let Some(bias) = &conv.bias else {
        return conv.forward(x);
    };
    let (w, b) = (param_as(&conv.weight, &x), param_as(bias, &x));
    Tensor::from_primitive(TensorPrimitive::Float(op(
        x.into_primitive().tensor(),
        w.into_primitive().tensor(),
        b.into_primitive().tensor(),
    )))
}

/// A parameter in the dtype of the activations it meets: under mixed precision the weights
/// stay float32 (the optimizer's copy) and the cast's gradient returns to float32.
fn param_as<B: Backend, const D: usize>(
    p: &Param<Tensor<B, D>>,
    like: &Tensor<B, 5>,
) -> Tensor<B, D> {
    let v = p.val();
    let dtype = like.dtype();
    if v.dtype() == dtype {
        v
    } else {
        v.cast(dtype)
    }
}

/// A transposed convolution `conv` applied by a [`ConvBackend`] operation `(x, weight,
/// bias)`; with `swap`, the weight `(Ci, Co, …)` is handed over as `(Co, Ci, …)` (a 1×1×1
/// transposed convolution with stride 1 is that pointwise convolution).
fn transposed<B: ConvBackend>(
    conv: &ConvTranspose3d<B>,
    x: Tensor<B, 5>,
    op: fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    swap: bool,
) -> Tensor<B, 5> {
    let Some(bias) = &conv.bias else {
        return conv.forward(x);
    };
    let w = param_as(&conv.weight, &x);
    let w = if swap { w.swap_dims(0, 1) } else { w };
    let b = param_as(bias, &x);
    Tensor::from_primitive(TensorPrimitive::Float(op(
        x.into_primitive().tensor(),
        w.into_primitive().tensor(),
        b.into_primitive().tensor(),
    )))
}

/// The up blocks' stride-2 depthwise transposed convolution through [`ConvBackend`].
fn up_depthwise_conv<B: ConvBackend>(conv: &ConvTranspose3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    transposed(conv, x, B::up_depthwise_conv3d, false)
}

/// One zero plane in front of each spatial axis.
fn pad_front<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 5> {
    let [n, c, z, y, w] = x.dims();
    let mut out = Tensor::<B, 5>::zeros([n, c, z + 1, y + 1, w + 1], &x.device());
    if out.dtype() != x.dtype() {
        out = out.cast(x.dtype());
    }
    out.slice_assign([0..n, 0..c, 1..z + 1, 1..y + 1, 1..w + 1], x)
}

/// 1×1 transposed-conv output head (MONAI's `conv_out`).
#[derive(Module, Debug)]
pub(crate) struct Head<B: Backend> {
    pub(crate) conv_out: ConvTranspose3d<B>,
}

impl<B: Backend> Head<B> {
    fn new(c_in: usize, c_out: usize, device: &B::Device) -> Self {
        Self {
            conv_out: ConvTranspose3dConfig::new([c_in, c_out], [1, 1, 1]).init(device),
        }
    }
}

impl<B: ConvBackend> Head<B> {
    fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        transposed(&self.conv_out, x, B::pointwise_conv3d, true)
    }
}

#[cfg(test)]
mod tests {
    //! Gradients of `mean(output)` against PyTorch's (shared fixture): the input and one
    //! parameter of every kind of layer.
    use std::path::{Path, PathBuf};

    use burn::backend::Autodiff;
    use burn::tensor::{Tensor, TensorData};

    use super::*;
    use crate::{load_mednext, Cpu};

    type A = Autodiff<Cpu>;

    fn read(path: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
        crate::read_f32_tensor(path, name).unwrap()
    }

    fn close(got: Vec<f32>, want: &[f32], what: &str) {
        let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max).max(1e-12);
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(got.len(), want.len(), "{what}");
        assert!(
            err <= 1e-4 * scale,
            "{what}: max error {err} relative to max |grad| {scale}"
        );
    }

    #[test]
    fn gradients_match_pytorch() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let weights = dir.join("mednext_s_k3_32.safetensors");
        let grads_file = dir.join("mednext_s_k3_32_grads.safetensors");
        let device = Default::default();
        let mut model = MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 3)
            .init::<A>(&device)
            .unwrap();
        load_mednext(&mut model, &weights, false).unwrap();
        let (input, shape) = read(&weights, "test.input");
        let x = Tensor::<A, 5>::from_data(TensorData::new(input, shape), &device).require_grad();
        let grads = model.forward(x.clone()).unwrap().mean().backward();
        let g =
            |t: Tensor<A, 5>| -> Vec<f32> { t.grad(&grads).unwrap().into_data().to_vec().unwrap() };
        let g1 =
            |t: Tensor<A, 1>| -> Vec<f32> { t.grad(&grads).unwrap().into_data().to_vec().unwrap() };
        let want = |k: &str| read(&grads_file, &format!("grad.{k}")).0;
        close(g(x), &want("test.input"), "input");
        close(
            g(model.stem.weight.val()),
            &want("stem.weight"),
            "stem (1×1 conv)",
        );
        let b = &model.enc_stages[0][0];
        close(
            g(b.conv1.weight.val()),
            &want("enc_stages.0.0.conv1.weight"),
            "depthwise conv",
        );
        close(
            g1(b.norm.gamma.as_ref().unwrap().val()),
            &want("enc_stages.0.0.norm.weight"),
            "group norm γ",
        );
        close(
            g(b.conv2.weight.val()),
            &want("enc_stages.0.0.conv2.weight"),
            "expansion conv",
        );
        let d = &model.down_blocks[1];
        close(
            g(d.conv1.weight.val()),
            &want("down_blocks.1.conv1.weight"),
            "strided depthwise conv",
        );
        close(
            g(d.res_conv.weight.val()),
            &want("down_blocks.1.res_conv.weight"),
            "strided residual",
        );
        let u = &model.up_blocks[2];
        close(
            g(u.conv1.weight.val()),
            &want("up_blocks.2.conv1.weight"),
            "transposed depthwise conv",
        );
        close(
            g(u.res_conv.weight.val()),
            &want("up_blocks.2.res_conv.weight"),
            "transposed residual",
        );
        close(
            g(model.out_0.conv_out.weight.val()),
            &want("out_0.conv_out.weight"),
            "output head",
        );
        close(
            g1(model.out_0.conv_out.bias.as_ref().unwrap().val()),
            &want("out_0.conv_out.bias"),
            "head bias",
        );
    }
}
