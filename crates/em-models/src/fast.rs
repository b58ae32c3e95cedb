//! The convolutions MedNeXt spends its time in, as a backend extension: every backend gets
//! burn's generic convolution (the reference), and the CPU backend (`Flex`) with autodiff
//! gets the direct kernels of [`crate::kernels`] for the forward pass and both gradients.
//! The model code is the same on every backend.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ActivationOps, ConvOptions, ConvTransposeOptions, FloatTensor, ModuleOps};
use burn::tensor::{Shape, TensorMetadata};

use crate::kernels::{self, DepthwiseShape, PointwiseShape, StridedShape};

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
        let opts = depthwise_options(&w.shape());
        Self::conv3d(x, w, Some(b), opts)
    }

    /// Gradients of [`ConvBackend::depthwise_conv3d`] for the output gradient `dy`.
    fn depthwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        let opts = depthwise_options(&w.shape());
        let dx = Self::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
        let dw = Self::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = Self::conv3d_bias_backward(x, b, dy);
        (dx, dw, db)
    }

    /// Stride-2 depthwise convolution, padding `k/2` (MedNeXt's down blocks): `x (N, C, Z, Y,
    /// X)`, `w (C, 1, k, k, k)`, `b (C)`.
    fn down_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let opts = down_options(&w.shape());
        Self::conv3d(x, w, Some(b), opts)
    }

    /// Gradients of [`ConvBackend::down_depthwise_conv3d`] for the output gradient `dy`.
    fn down_depthwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        let opts = down_options(&w.shape());
        let dx = Self::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
        let dw = Self::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = Self::conv3d_bias_backward(x, b, dy);
        (dx, dw, db)
    }

    /// Stride-2 depthwise transposed convolution, padding `k/2` (MedNeXt's up blocks; output
    /// side `2n − 1`): `x (N, C, Z, Y, X)`, `w (C, 1, k, k, k)`, `b (C)`.
    fn up_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let opts = up_options(&w.shape());
        Self::conv_transpose3d(x, w, Some(b), opts)
    }

    /// Gradients of [`ConvBackend::up_depthwise_conv3d`] for the output gradient `dy`.
    fn up_depthwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        let opts = up_options(&w.shape());
        let dx = Self::conv_transpose3d_x_backward(w.clone(), dy.clone(), opts.clone());
        let dw = Self::conv_transpose3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = Self::conv_transpose3d_bias_backward(x, b, dy);
        (dx, dw, db)
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
        Self::conv3d(x, w, Some(b), pointwise_options())
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
        let opts = pointwise_options();
        let dx = Self::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
        let dw = Self::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
        let db = Self::conv3d_bias_backward(x, b, dy);
        (dx, dw, db)
    }
}

// ---------------------------------------------------------------------------------------
// Flex: the direct kernels on contiguous float32 buffers.

mod flex {
    use super::*;
    use burn::backend::flex::FlexTensor;
    use burn::backend::Flex;
    use burn::tensor::{DType, TensorData};

    /// A contiguous f32 copy-free view when possible.
    fn f32s(t: &FlexTensor) -> Option<(FlexTensor, Vec<usize>)> {
        if t.dtype() != DType::F32 {
            return None;
        }
        let c = if t.is_contiguous() {
            t.clone()
        } else {
            t.to_contiguous()
        };
        let dims = c.shape().to_vec();
        Some((c, dims))
    }

    fn tensor(values: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, dims))
    }

    fn slice(t: &FlexTensor) -> &[f32] {
        t.as_slice::<f32>().expect("a contiguous float32 tensor")
    }

    fn depthwise_shape(x: &[usize], w: &[usize]) -> Option<DepthwiseShape> {
        let (&[n, c, z, y, xx], &[wc, 1, k, k2, k3]) = (x, w) else {
            return None;
        };
        (wc == c && k == k2 && k == k3 && k % 2 == 1).then_some(DepthwiseShape {
            n,
            c,
            dims: [z, y, xx],
            k,
        })
    }

    /// The strided shape for input dims `x` and kernel dims `w`: `x` is the fine grid for
    /// the stride-2 convolution (`down`), the coarse one for the transposed one.
    fn strided_shape(x: &[usize], w: &[usize], down: bool) -> Option<StridedShape> {
        let (&[n, c, z, y, xx], &[wc, 1, k, k2, k3]) = (x, w) else {
            return None;
        };
        (wc == c && k == k2 && k == k3 && k % 2 == 1).then(|| {
            if down {
                StridedShape::down(n, c, [z, y, xx], k)
            } else {
                StridedShape::up(n, c, [z, y, xx], k)
            }
        })
    }

    fn dims(s: StridedShape, spatial: [usize; 3]) -> Vec<usize> {
        vec![s.n, s.c, spatial[0], spatial[1], spatial[2]]
    }

    /// The stride-2 convolution (`down`) or its transpose by the direct kernels; `None`
    /// where they do not apply (other dtypes or shapes).
    fn strided_forward(
        x: &FlexTensor,
        w: &FlexTensor,
        b: &FlexTensor,
        down: bool,
    ) -> Option<FlexTensor> {
        let ((xc, xd), (wc, wd), (bc, _)) = (f32s(x)?, f32s(w)?, f32s(b)?);
        let s = strided_shape(&xd, &wd, down)?;
        let out_dims = if down { s.small } else { s.big };
        let mut out = vec![0.0f32; s.n * s.c * out_dims.iter().product::<usize>()];
        let (x, w, b) = (slice(&xc), slice(&wc), Some(slice(&bc)));
        let ok = if down {
            kernels::strided_gather(x, w, b, s, &mut out)
        } else {
            kernels::strided_scatter(x, w, b, s, &mut out)
        };
        ok.then(|| tensor(out, dims(s, out_dims)))
    }

    /// Gradients of [`strided_forward`]: the input gradient is the other direction's map,
    /// the kernel gradient pairs the fine and coarse volumes.
    fn strided_backward(
        x: &FlexTensor,
        w: &FlexTensor,
        dy: &FlexTensor,
        down: bool,
    ) -> Option<ConvGrads<Flex>> {
        let ((xc, xd), (wc, wd), (gc, gd)) = (f32s(x)?, f32s(w)?, f32s(dy)?);
        let s = strided_shape(&xd, &wd, down)?;
        if gd != dims(s, if down { s.small } else { s.big }) {
            return None;
        }
        let (x, w, g) = (slice(&xc), slice(&wc), slice(&gc));
        let mut dx = vec![0.0f32; x.len()];
        let mut dw = vec![0.0f32; w.len()];
        let mut db = vec![0.0f32; s.c];
        let ok = if down {
            kernels::strided_scatter(g, w, None, s, &mut dx)
                && kernels::strided_weight_grad(x, g, s, &mut dw)
        } else {
            kernels::strided_gather(g, w, None, s, &mut dx)
                && kernels::strided_weight_grad(g, x, s, &mut dw)
        };
        (ok && kernels::channel_sums(g, s.n, s.c, &mut db))
            .then(|| (tensor(dx, xd), tensor(dw, wd), tensor(db, vec![s.c])))
    }

    fn pointwise_shape(x: &[usize], w: &[usize]) -> Option<PointwiseShape> {
        let (&[n, ci, z, y, xx], &[co, wci, 1, 1, 1]) = (x, w) else {
            return None;
        };
        (wci == ci).then_some(PointwiseShape {
            n,
            ci,
            co,
            v: z * y * xx,
        })
    }

    fn norm_shape(x: &[usize], groups: usize) -> Option<kernels::NormShape> {
        let (&n, &c) = (x.first()?, x.get(1)?);
        let v = x[2..].iter().product();
        Some(kernels::NormShape { n, c, groups, v })
    }

    impl ConvBackend for Flex {
        fn fast_group_norm(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            groups: usize,
            eps: f64,
        ) -> Option<FlexTensor> {
            let ((xc, xd), (gc, _), (bc, _)) = (f32s(&x)?, f32s(&gamma)?, f32s(&beta)?);
            let s = norm_shape(&xd, groups)?;
            let mut out = vec![0.0f32; slice(&xc).len()];
            kernels::group_norm_forward(slice(&xc), slice(&gc), slice(&bc), s, eps, &mut out)
                .then(|| tensor(out, xd))
        }

        fn fast_group_norm_backward(
            x: FlexTensor,
            gamma: FlexTensor,
            dy: FlexTensor,
            groups: usize,
            eps: f64,
        ) -> Option<ConvGrads<Flex>> {
            let ((xc, xd), (gc, gd), (dc, _)) = (f32s(&x)?, f32s(&gamma)?, f32s(&dy)?);
            let s = norm_shape(&xd, groups)?;
            let mut dx = vec![0.0f32; slice(&xc).len()];
            let (mut dg, mut db) = (vec![0.0f32; s.c], vec![0.0f32; s.c]);
            kernels::group_norm_backward(
                slice(&xc),
                slice(&gc),
                slice(&dc),
                s,
                eps,
                (&mut dx, &mut dg, &mut db),
            )
            .then(|| (tensor(dx, xd), tensor(dg, gd.clone()), tensor(db, gd)))
        }

        fn depthwise_conv3d(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
            let parts = (f32s(&x), f32s(&w), f32s(&b));
            if let (Some((x, xd)), Some((w, wd)), Some((b, _))) = parts {
                if let Some(s) = depthwise_shape(&xd, &wd) {
                    let mut out = vec![0.0f32; slice(&x).len()];
                    if kernels::depthwise_forward(
                        slice(&x),
                        slice(&w),
                        Some(slice(&b)),
                        s,
                        &mut out,
                    ) {
                        return tensor(out, xd);
                    }
                }
                let opts = depthwise_options(&w.shape());
                return Flex::conv3d(x, w, Some(b), opts);
            }
            let opts = depthwise_options(&w.shape());
            Flex::conv3d(x, w, Some(b), opts)
        }

        fn depthwise_conv3d_backward(
            x: FlexTensor,
            w: FlexTensor,
            b: FlexTensor,
            dy: FlexTensor,
        ) -> ConvGrads<Flex> {
            if let (Some((xc, xd)), Some((wc, wd)), Some((gc, gd))) =
                (f32s(&x), f32s(&w), f32s(&dy))
            {
                if let Some(s) = depthwise_shape(&xd, &wd).filter(|_| gd == xd) {
                    let mut dx = vec![0.0f32; slice(&xc).len()];
                    let mut dw = vec![0.0f32; slice(&wc).len()];
                    let mut db = vec![0.0f32; s.c];
                    if kernels::depthwise_backward_input(slice(&gc), slice(&wc), s, &mut dx)
                        && kernels::depthwise_backward_weight(
                            slice(&xc),
                            slice(&gc),
                            s,
                            &mut dw,
                            Some(&mut db),
                        )
                    {
                        return (tensor(dx, xd), tensor(dw, wd), tensor(db, vec![s.c]));
                    }
                }
            }
            let opts = depthwise_options(&w.shape());
            let dx = Flex::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
            let dw = Flex::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
            (dx, dw, Flex::conv3d_bias_backward(x, b, dy))
        }

        fn pointwise_conv3d(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
            if let (Some((xc, xd)), Some((wc, wd)), Some((bc, _))) = (f32s(&x), f32s(&w), f32s(&b))
            {
                if let Some(s) = pointwise_shape(&xd, &wd) {
                    let mut out = vec![0.0f32; s.n * s.co * s.v];
                    if kernels::pointwise_forward(
                        slice(&xc),
                        slice(&wc),
                        Some(slice(&bc)),
                        s,
                        &mut out,
                    ) {
                        let mut od = xd;
                        od[1] = s.co;
                        return tensor(out, od);
                    }
                }
            }
            Flex::conv3d(x, w, Some(b), pointwise_options())
        }

        fn pointwise_conv3d_gelu_parts(
            x: FlexTensor,
            w: FlexTensor,
            b: FlexTensor,
        ) -> (FlexTensor, FlexTensor) {
            if let (Some((xc, xd)), Some((wc, wd)), Some((bc, _))) = (f32s(&x), f32s(&w), f32s(&b))
            {
                if let Some(s) = pointwise_shape(&xd, &wd) {
                    let mut pre = vec![0.0f32; s.n * s.co * s.v];
                    let mut out = vec![0.0f32; pre.len()];
                    if kernels::pointwise_gelu_forward(
                        slice(&xc),
                        slice(&wc),
                        Some(slice(&bc)),
                        s,
                        &mut pre,
                        &mut out,
                    ) {
                        let mut od = xd;
                        od[1] = s.co;
                        return (tensor(pre, od.clone()), tensor(out, od));
                    }
                }
            }
            let pre = Self::pointwise_conv3d(x, w, b);
            (pre.clone(), Flex::gelu(pre))
        }

        fn gelu_grad(pre: FlexTensor, dy: FlexTensor) -> FlexTensor {
            if let (Some((pc, pd)), Some((gc, gd))) = (f32s(&pre), f32s(&dy)) {
                let mut dpre = vec![0.0f32; slice(&pc).len()];
                if pd == gd && kernels::gelu_backward(slice(&pc), slice(&gc), &mut dpre) {
                    return tensor(dpre, pd);
                }
            }
            Flex::gelu_backward(pre, dy)
        }

        fn pointwise_conv3d_backward(
            x: FlexTensor,
            w: FlexTensor,
            b: FlexTensor,
            dy: FlexTensor,
        ) -> ConvGrads<Flex> {
            if let (Some((xc, xd)), Some((wc, wd)), Some((gc, _))) = (f32s(&x), f32s(&w), f32s(&dy))
            {
                if let Some(s) = pointwise_shape(&xd, &wd) {
                    let mut dx = vec![0.0f32; s.n * s.ci * s.v];
                    let mut dw = vec![0.0f32; s.co * s.ci];
                    let mut db = vec![0.0f32; s.co];
                    if kernels::pointwise_backward_input(slice(&gc), slice(&wc), s, &mut dx)
                        && kernels::pointwise_backward_weight(
                            slice(&xc),
                            slice(&gc),
                            s,
                            &mut dw,
                            Some(&mut db),
                        )
                    {
                        return (tensor(dx, xd), tensor(dw, wd), tensor(db, vec![s.co]));
                    }
                }
            }
            let opts = pointwise_options();
            let dx = Flex::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
            let dw = Flex::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
            (dx, dw, Flex::conv3d_bias_backward(x, b, dy))
        }
        fn down_depthwise_conv3d(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
            strided_forward(&x, &w, &b, true).unwrap_or_else(|| {
                let opts = down_options(&w.shape());
                Flex::conv3d(x, w, Some(b), opts)
            })
        }

        fn down_depthwise_conv3d_backward(
            x: FlexTensor,
            w: FlexTensor,
            b: FlexTensor,
            dy: FlexTensor,
        ) -> ConvGrads<Flex> {
            strided_backward(&x, &w, &dy, true).unwrap_or_else(|| {
                let opts = down_options(&w.shape());
                let dx = Flex::conv3d_x_backward(x.clone(), w.clone(), dy.clone(), opts.clone());
                let dw = Flex::conv3d_weight_backward(x.clone(), w, dy.clone(), opts);
                (dx, dw, Flex::conv3d_bias_backward(x, b, dy))
            })
        }

        fn up_depthwise_conv3d(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
            strided_forward(&x, &w, &b, false).unwrap_or_else(|| {
                let opts = up_options(&w.shape());
                Flex::conv_transpose3d(x, w, Some(b), opts)
            })
        }

        fn up_depthwise_conv3d_backward(
            x: FlexTensor,
            w: FlexTensor,
            b: FlexTensor,
            dy: FlexTensor,
        ) -> ConvGrads<Flex> {
            strided_backward(&x, &w, &dy, false).unwrap_or_else(|| {
                let opts = up_options(&w.shape());
                let dx = Flex::conv_transpose3d_x_backward(w.clone(), dy.clone(), opts.clone());
                let dw = Flex::conv_transpose3d_weight_backward(x.clone(), w, dy.clone(), opts);
                (dx, dw, Flex::conv_transpose3d_bias_backward(x, b, dy))
            })
        }
    }
}

#[cfg(feature = "ndarray")]
impl ConvBackend for burn::backend::NdArray {}

#[cfg(feature = "cuda")]
impl ConvBackend for burn::backend::Cuda {
    const GPU: bool = true;
}

// ---------------------------------------------------------------------------------------
// Autodiff: one graph node per convolution whose backward asks the inner backend.

#[derive(Debug)]
struct DepthwiseBackward;

#[derive(Debug)]
struct PointwiseBackward;

#[derive(Debug)]
struct DownBackward;

#[derive(Debug)]
struct PointwiseGeluBackward;

impl<B: ConvBackend> Backward<B, 3> for PointwiseGeluBackward {
    /// `x`, `w`, `b` and the pre-activation.
    type State = (NodeId, NodeId, NodeId, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (xs, ws, bs, pre) = ops.state;
        let dpre = B::gelu_grad(pre, grads.consume::<B>(&ops.node));
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(xs);
        let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(ws);
        let b = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(bs);
        let (dx, dw, db) = B::pointwise_conv3d_backward(x, w, b, dpre);
        for (node, g) in ops.parents.into_iter().zip([dx, dw, db]) {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct UpBackward;

type State = (NodeId, NodeId, NodeId);

/// A backend's gradient function `(x, w, b, dy) → (dx, dw, db)`.
type ConvBackwardFn<B> =
    fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) -> ConvGrads<B>;

fn backward_with<B: Backend>(
    ops: Ops<State, 3>,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
    f: ConvBackwardFn<B>,
) {
    let [node_x, node_w, node_b] = ops.parents;
    let dy = grads.consume::<B>(&ops.node);
    let (xs, ws, bs) = ops.state;
    let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(xs);
    let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(ws);
    let b = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(bs);
    let (dx, dw, db) = f(x, w, b, dy);
    if let Some(node) = node_x {
        grads.register::<B>(node.id, dx);
    }
    if let Some(node) = node_w {
        grads.register::<B>(node.id, dw);
    }
    if let Some(node) = node_b {
        grads.register::<B>(node.id, db);
    }
}

impl<B: ConvBackend> Backward<B, 3> for DepthwiseBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::depthwise_conv3d_backward);
    }
}

impl<B: ConvBackend> Backward<B, 3> for PointwiseBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::pointwise_conv3d_backward);
    }
}

impl<B: ConvBackend> Backward<B, 3> for DownBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::down_depthwise_conv3d_backward);
    }
}

impl<B: ConvBackend> Backward<B, 3> for UpBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::up_depthwise_conv3d_backward);
    }
}

#[derive(Debug)]
struct GroupNormBackward;

impl<B: ConvBackend> Backward<B, 3> for GroupNormBackward {
    type State = (NodeId, NodeId, usize, f64);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_g, node_b] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (xs, gs, groups, eps) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(xs);
        let gamma = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(gs);
        // The forward pass only built this node where the backend had the fused kernel,
        // for the same dtypes and shapes.
        let (dx, dg, db) = B::fast_group_norm_backward(x, gamma, dy, groups, eps)
            .expect("the fused group norm's backward exists where its forward did");
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_g {
            grads.register::<B>(node.id, dg);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, db);
        }
    }
}

impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    const GPU: bool = B::GPU;

    fn fast_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> Option<FloatTensor<Self>> {
        let out = B::fast_group_norm(
            x.primitive.clone(),
            gamma.primitive.clone(),
            beta.primitive.clone(),
            groups,
            eps,
        )?;
        Some(
            match GroupNormBackward
                .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&gamma), groups, eps);
                    prep.finish(state, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(out),
            },
        )
    }

    fn depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(DepthwiseBackward, x, w, b, B::depthwise_conv3d)
    }

    fn pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(PointwiseBackward, x, w, b, B::pointwise_conv3d)
    }

    fn pointwise_conv3d_gelu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match PointwiseGeluBackward
            .prepare::<C>([x.node.clone(), w.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (xs, ws, bs) = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&w),
                    prep.checkpoint(&b),
                );
                let (pre, out) =
                    B::pointwise_conv3d_gelu_parts(x.primitive, w.primitive, b.primitive);
                prep.finish((xs, ws, bs, pre), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::pointwise_conv3d_gelu(
                x.primitive,
                w.primitive,
                b.primitive,
            )),
        }
    }

    fn down_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(DownBackward, x, w, b, B::down_depthwise_conv3d)
    }

    fn up_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(UpBackward, x, w, b, B::up_depthwise_conv3d)
    }
}

/// One autodiff node for a convolution `forward(x, w, b)` whose backward is `op`.
fn conv_node<B, C, O>(
    op: O,
    x: FloatTensor<Autodiff<B, C>>,
    w: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: ConvBackend,
    C: CheckpointStrategy,
    O: Backward<B, 3, State = State>,
{
    match op
        .prepare::<C>([x.node.clone(), w.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (
                prep.checkpoint(&x),
                prep.checkpoint(&w),
                prep.checkpoint(&b),
            );
            prep.finish(state, forward(x.primitive, w.primitive, b.primitive))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive, w.primitive, b.primitive)),
    }
}
