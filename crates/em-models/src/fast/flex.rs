//! Flex: the direct kernels of [`crate::kernels`] on contiguous float32 buffers.

use burn::tensor::ops::{ActivationOps, ModuleOps};
use burn::tensor::TensorMetadata;

use super::{
    depthwise_options, down_options, pointwise_options, up_options, ConvBackend, ConvGrads,
};
use crate::kernels::{self, DepthwiseShape, PointwiseShape, StridedShape};
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
                if kernels::depthwise_forward(slice(&x), slice(&w), Some(slice(&b)), s, &mut out) {
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
        if let (Some((xc, xd)), Some((wc, wd)), Some((gc, gd))) = (f32s(&x), f32s(&w), f32s(&dy)) {
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
        if let (Some((xc, xd)), Some((wc, wd)), Some((bc, _))) = (f32s(&x), f32s(&w), f32s(&b)) {
            if let Some(s) = pointwise_shape(&xd, &wd) {
                let mut out = vec![0.0f32; s.n * s.co * s.v];
                if kernels::pointwise_forward(slice(&xc), slice(&wc), Some(slice(&bc)), s, &mut out)
                {
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
        if let (Some((xc, xd)), Some((wc, wd)), Some((bc, _))) = (f32s(&x), f32s(&w), f32s(&b)) {
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
        if let (Some((xc, xd)), Some((wc, wd)), Some((gc, _))) = (f32s(&x), f32s(&w), f32s(&dy)) {
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
