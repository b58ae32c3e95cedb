//! The operations MedNeXt spends its time in, as a backend extension laid out as burn lays
//! out its own: the trait here (its defaults are burn's generic operations), one file per
//! backend — `flex` (the CPU kernels of [`crate::kernels`]), `cube` (CubeCL kernels for
//! CUDA and wgpu, one file per kernel family) and `autodiff` (one graph node per operation
//! whose backward asks the inner backend). The model code is the same on every backend.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor};
use burn::tensor::{Shape, TensorMetadata};

mod autodiff;
#[cfg(feature = "gpu")]
mod cube;
mod flex;

/// Gradients of a convolution: input, weight, bias.
pub type ConvGrads<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

fn depthwise_options(w: &Shape) -> ConvOptions<3> {
    let (c, k) = (w[0], w[2]);
    ConvOptions::new([1; 3], [k / 2; 3], [1; 3], c)
}

fn down_options(w: &Shape) -> ConvOptions<3> {
    let (c, k) = (w[0], w[2]);
    ConvOptions::new([2; 3], [k / 2; 3], [1; 3], c)
}

fn up_options(w: &Shape) -> ConvTransposeOptions<3> {
    let (c, k) = (w[0], w[2]);
    ConvTransposeOptions::new([2; 3], [k / 2; 3], [0; 3], [1; 3], c)
}

fn pointwise_options() -> ConvOptions<3> {
    ConvOptions::new([1; 3], [0; 3], [1; 3], 1)
}

/// A backend MedNeXt runs on: depthwise `k×k×k` (stride 1, "same" padding) and pointwise
/// `1×1×1` convolutions with biases, and their gradients. The defaults are burn's generic
/// convolutions; backends with faster kernels override them.
pub trait ConvBackend: Backend {
    /// The backend computes on a GPU (planning budgets GPU memory for it).
    const GPU: bool = false;

    /// Depthwise convolution: `x (N, C, Z, Y, X)`, `w (C, 1, k, k, k)`, `b (C)`.
    fn depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic::depthwise_conv3d::<Self>(x, w, b)
    }

    /// Gradients of [`ConvBackend::depthwise_conv3d`] for the output gradient `dy`.
    fn depthwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        generic::depthwise_conv3d_backward::<Self>(x, w, b, dy)
    }

    /// Stride-2 depthwise convolution, padding `k/2` (MedNeXt's down blocks): `x (N, C, Z, Y,
    /// X)`, `w (C, 1, k, k, k)`, `b (C)`.
    fn down_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic::down_depthwise_conv3d::<Self>(x, w, b)
    }

    /// Gradients of [`ConvBackend::down_depthwise_conv3d`] for the output gradient `dy`.
    fn down_depthwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        generic::down_depthwise_conv3d_backward::<Self>(x, w, b, dy)
    }

    /// Stride-2 depthwise transposed convolution, padding `k/2` (MedNeXt's up blocks; output
    /// side `2n − 1`): `x (N, C, Z, Y, X)`, `w (C, 1, k, k, k)`, `b (C)`.
    fn up_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic::up_depthwise_conv3d::<Self>(x, w, b)
    }

    /// Gradients of [`ConvBackend::up_depthwise_conv3d`] for the output gradient `dy`.
    fn up_depthwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        generic::up_depthwise_conv3d_backward::<Self>(x, w, b, dy)
    }

    /// 1×1×1 convolution with stride 2 (MedNeXt's down-block residual): `x (N, Ci, Z, Y,
    /// X)`, `w (Co, Ci, 1, 1, 1)`, `b (Co)`; output sides `⌈n/2⌉`.
    fn down_pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic::down_pointwise_conv3d::<Self>(x, w, b)
    }

    /// Gradients of [`ConvBackend::down_pointwise_conv3d`] for the output gradient `dy`.
    fn down_pointwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        generic::down_pointwise_conv3d_backward::<Self>(x, w, b, dy)
    }

    /// 1×1×1 transposed convolution with stride 2 (MedNeXt's up-block residual): `x (N, Ci,
    /// Z, Y, X)`, `w (Ci, Co, 1, 1, 1)`, `b (Co)`; output sides `2n − 1`.
    fn up_pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic::up_pointwise_conv3d::<Self>(x, w, b)
    }

    /// Gradients of [`ConvBackend::up_pointwise_conv3d`] for the output gradient `dy`.
    fn up_pointwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        generic::up_pointwise_conv3d_backward::<Self>(x, w, b, dy)
    }

    /// Group normalisation `x (N, C, …)` with per-channel `gamma`, `beta` by a fused kernel,
    /// or `None` where this backend has none (the caller then composes it from tensor ops).
    fn fast_group_norm(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _groups: usize,
        _eps: f64,
    ) -> Option<FloatTensor<Self>> {
        None
    }

    /// Gradients (input, gamma, beta) of [`ConvBackend::fast_group_norm`], `None` where
    /// that is `None`.
    fn fast_group_norm_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _dy: FloatTensor<Self>,
        _groups: usize,
        _eps: f64,
    ) -> Option<ConvGrads<Self>> {
        None
    }

    /// Pointwise convolution: `x (N, Ci, Z, Y, X)`, `w (Co, Ci, 1, 1, 1)`, `b (Co)`.
    fn pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic::pointwise_conv3d::<Self>(x, w, b)
    }

    /// Pointwise convolution followed by the exact (erf) GELU: `(pre-activation, output)`.
    /// The pre-activation is what the backward pass needs.
    fn pointwise_conv3d_gelu_parts(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let pre = Self::pointwise_conv3d(x, w, b);
        (pre.clone(), Self::gelu(pre))
    }

    /// GELU of a pointwise convolution (the expansion layer of a MedNeXt block); one
    /// graph node under autodiff.
    fn pointwise_conv3d_gelu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::pointwise_conv3d_gelu_parts(x, w, b).1
    }

    /// The gradient through GELU at the pre-activation `pre` for the output gradient `dy`.
    fn gelu_grad(pre: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(pre, dy)
    }

    /// Gradients of [`ConvBackend::pointwise_conv3d`] for the output gradient `dy`.
    fn pointwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        generic::pointwise_conv3d_backward::<Self>(x, w, b, dy)
    }
}

/// The defaults of [`ConvBackend`]: burn's generic convolutions, for backends (and shapes or
/// dtypes) without faster kernels.
pub(crate) mod generic {
    use super::*;

    /// burn's generic `depthwise_conv3d`.
    pub(crate) fn depthwise_conv3d<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let opts = depthwise_options(&w.shape());
        B::conv3d(x, w, Some(b), opts)
    }

    /// burn's generic `depthwise_conv3d_backward`.
    pub(crate) fn depthwise_conv3d_backward<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
        dy: FloatTensor<B>,
    ) -> ConvGrads<B> {
        let opts = depthwise_options(&w.shape());
        let dx = B::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
        let dw = B::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = B::conv3d_bias_backward(x, b, dy);
        (dx, dw, db)
    }

    /// burn's generic `down_depthwise_conv3d`.
    pub(crate) fn down_depthwise_conv3d<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let opts = down_options(&w.shape());
        B::conv3d(x, w, Some(b), opts)
    }

    /// burn's generic `down_depthwise_conv3d_backward`.
    pub(crate) fn down_depthwise_conv3d_backward<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
        dy: FloatTensor<B>,
    ) -> ConvGrads<B> {
        let opts = down_options(&w.shape());
        let dx = B::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
        let dw = B::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = B::conv3d_bias_backward(x, b, dy);
        (dx, dw, db)
    }

    /// burn's generic `up_depthwise_conv3d`.
    pub(crate) fn up_depthwise_conv3d<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let opts = up_options(&w.shape());
        B::conv_transpose3d(x, w, Some(b), opts)
    }

    /// burn's generic `up_depthwise_conv3d_backward`.
    pub(crate) fn up_depthwise_conv3d_backward<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
        dy: FloatTensor<B>,
    ) -> ConvGrads<B> {
        let opts = up_options(&w.shape());
        let dx = B::conv_transpose3d_x_backward(w.clone(), dy.clone(), opts.clone());
        let dw = B::conv_transpose3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = B::conv_transpose3d_bias_backward(x, b, dy);
        (dx, dw, db)
    }

    /// burn's generic `pointwise_conv3d`.
    pub(crate) fn pointwise_conv3d<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
    ) -> FloatTensor<B> {
        B::conv3d(x, w, Some(b), pointwise_options())
    }

    /// burn's generic `pointwise_conv3d_backward`.
    pub(crate) fn pointwise_conv3d_backward<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
        dy: FloatTensor<B>,
    ) -> ConvGrads<B> {
        let opts = pointwise_options();
        let dx = B::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
        let dw = B::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = B::conv3d_bias_backward(x, b, dy);
        (dx, dw, db)
    }

    fn stride2_options() -> ConvOptions<3> {
        ConvOptions::new([2; 3], [0; 3], [1; 3], 1)
    }

    fn stride2_transpose_options() -> ConvTransposeOptions<3> {
        ConvTransposeOptions::new([2; 3], [0; 3], [0; 3], [1; 3], 1)
    }

    /// burn's generic `down_pointwise_conv3d`.
    pub(crate) fn down_pointwise_conv3d<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
    ) -> FloatTensor<B> {
        B::conv3d(x, w, Some(b), stride2_options())
    }

    /// burn's generic `down_pointwise_conv3d_backward`.
    pub(crate) fn down_pointwise_conv3d_backward<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
        dy: FloatTensor<B>,
    ) -> ConvGrads<B> {
        let opts = stride2_options();
        let dx = B::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
        let dw = B::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = B::conv3d_bias_backward(x, b, dy);
        (dx, dw, db)
    }

    /// burn's generic `up_pointwise_conv3d`.
    pub(crate) fn up_pointwise_conv3d<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
    ) -> FloatTensor<B> {
        B::conv_transpose3d(x, w, Some(b), stride2_transpose_options())
    }

    /// burn's generic `up_pointwise_conv3d_backward`.
    pub(crate) fn up_pointwise_conv3d_backward<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
        dy: FloatTensor<B>,
    ) -> ConvGrads<B> {
        let opts = stride2_transpose_options();
        let dx = B::conv_transpose3d_x_backward(w.clone(), dy.clone(), opts.clone());
        let dw = B::conv_transpose3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = B::conv_transpose3d_bias_backward(x, b, dy);
        (dx, dw, db)
    }
}

#[cfg(feature = "ndarray")]
impl ConvBackend for burn::backend::NdArray {}
