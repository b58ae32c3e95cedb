//! GPU kernels (CubeCL) for burn's `CubeBackend`, the backend under both `Cuda` and `Wgpu`
//! with fusion off: one implementation for NVIDIA GPUs and for every wgpu device, Mesa's
//! software Vulkan driver included (which is how the tests run them without a GPU).
//!
//! Every kernel takes its shapes as run-time arguments, so a new patch size compiles nothing
//! new; every float dtype runs (f32, f16, bf16) with sums and statistics in f32.

pub(crate) mod depthwise;
pub(crate) mod norm;
pub(crate) mod pointwise;
pub(crate) mod resample;

use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::{CubeCount, CubeDim};

use super::{generic, ConvBackend, ConvGrads};
use depthwise::Geometry;
use norm::NormShape;
use pointwise::PointwiseShape;
use resample::Grids;

/// burn's float operations on the GPU tensors. They act on each tensor's own dtype; the
/// backend's default element types only matter to tensors created without one, which these
/// helpers never create, so one instance serves every `CubeBackend<R, _, _, _>`.
pub(crate) type Ops<R> = CubeBackend<R, f32, i32, u32>;

/// Units per cube of the reductions (a power of two).
pub(crate) const BLOCK: usize = 256;
/// log2 of [`BLOCK`].
pub(crate) const LOG2_BLOCK: usize = 8;
/// Most chunks one reduction row is split into.
const MAX_CHUNKS: usize = 1024;

/// Cube count and size for one unit per element of `out`.
pub(crate) fn elementwise_launch<R: CubeRuntime>(out: &CubeTensor<R>) -> (CubeCount, CubeDim) {
    let n = out.shape().num_elements();
    let dim = CubeDim::new(&out.client, n);
    let count = cubecl::calculate_cube_count_elemwise(&out.client, n, dim);
    (count, dim)
}

/// `(chunks, chunk length)` for a reduction over `total` values: enough chunks to fill the
/// device, each at least a few cubes' worth of work.
pub(crate) fn chunking(total: usize) -> (usize, usize) {
    let chunk = (BLOCK * 16).max(total.div_ceil(MAX_CHUNKS));
    (total.div_ceil(chunk).max(1), chunk)
}

/// Sum the f32 `partial (rows, chunks)` over chunks, reshape to `shape` and cast to `dtype`.
pub(crate) fn into_f32_sum_rows<R: CubeRuntime>(
    partial: CubeTensor<R>,
    shape: Vec<usize>,
    dtype: DType,
) -> CubeTensor<R> {
    let sums = Ops::<R>::float_sum_dim(partial, 1);
    let sums = Ops::<R>::float_reshape(sums, Shape::from(shape));
    Ops::<R>::float_cast(sums, dtype.into())
}

/// Contiguous tensors and their dims.
type Prepared<R, const N: usize> = ([CubeTensor<R>; N], [Vec<usize>; N]);

/// The contiguous tensors and their dims where all share one float dtype.
fn prepare<R: CubeRuntime, const N: usize>(ts: [CubeTensor<R>; N]) -> Option<Prepared<R, N>> {
    let dtype = ts[0].dtype;
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        || ts.iter().any(|t| t.dtype != dtype)
    {
        return None;
    }
    let ts = ts.map(into_contiguous);
    let dims = std::array::from_fn(|i| ts[i].shape().to_vec());
    Some((ts, dims))
}

/// Batch and channels of `x (N, C, Z, Y, X)`, kernel side and grid of a depthwise weight
/// `(C, 1, k, k, k)` (odd `k`).
fn depthwise_dims(x: &[usize], w: &[usize]) -> Option<(usize, usize, usize, [usize; 3])> {
    let (&[n, c, z, y, xx], &[wc, 1, k, k2, k3]) = (x, w) else {
        return None;
    };
    (wc == c && k == k2 && k == k3 && k % 2 == 1).then_some((n, c, k, [z, y, xx]))
}

/// The geometry of the depthwise convolution with `stride` on (fine) input `x`.
fn depthwise_geometry(x: &[usize], w: &[usize], stride: usize) -> Option<(usize, Geometry)> {
    let (n, c, k, spatial) = depthwise_dims(x, w)?;
    Some((n, Geometry::new(c, k, stride, spatial)))
}

/// The geometry of the up blocks' stride-2 transpose on coarse input `x` (fine side
/// `2n − 1`).
fn up_geometry(x: &[usize], w: &[usize]) -> Option<(usize, Geometry)> {
    let (n, c, k, coarse) = depthwise_dims(x, w)?;
    let fine = coarse.map(|s| 2 * s - 1);
    Some((n, Geometry::between(c, k, 2, fine, coarse)))
}

/// The fast path where `fast` accepts the contiguous inputs (one float dtype, shapes it
/// handles), else `fallback` (burn's generic operation).
fn fast_or<R: CubeRuntime, const N: usize, T>(
    ts: [&CubeTensor<R>; N],
    fast: impl FnOnce([CubeTensor<R>; N], [Vec<usize>; N]) -> Option<T>,
    fallback: impl FnOnce() -> T,
) -> T {
    prepare(ts.map(Clone::clone))
        .and_then(|(t, d)| fast(t, d))
        .unwrap_or_else(fallback)
}

/// Gradients of a depthwise convolution from fine `x` to the coarse output or, with
/// `transposed`, of its transpose from coarse `x` to the fine output, for the output
/// gradient `dy`: each direction's input gradient is the other direction's map.
fn depthwise_grads<R: CubeRuntime>(
    x: CubeTensor<R>,
    w: CubeTensor<R>,
    dy: CubeTensor<R>,
    g: Geometry,
    n: usize,
    transposed: bool,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let out_voxels = if transposed {
        g.fz * g.fy * g.fx
    } else {
        g.cz * g.cy * g.cx
    };
    let db = norm::channel_sums(&dy, n, g.c, out_voxels);
    let (dx, dw) = if transposed {
        (
            depthwise::gather(dy.clone(), w, None, g, n),
            depthwise::weight_grad(dy, x, g, n),
        )
    } else {
        (
            depthwise::scatter(dy.clone(), w, None, g, n),
            depthwise::weight_grad(x, dy, g, n),
        )
    };
    (dx, dw, db)
}

fn pointwise_dims(x: &[usize], w: &[usize]) -> Option<PointwiseShape> {
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

impl<R, F, I, BT> ConvBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    const GPU: bool = true;

    fn fast_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> Option<FloatTensor<Self>> {
        let ([x, gamma, beta], [xd, _, _]) = prepare([x, gamma, beta])?;
        let s = norm_shape(&xd, groups)?;
        Some(norm::forward(x, gamma, beta, s, eps))
    }

    fn fast_group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> Option<ConvGrads<Self>> {
        let ([x, gamma, dy], [xd, _, gd]) = prepare([x, gamma, dy])?;
        let s = norm_shape(&xd, groups).filter(|_| gd == xd)?;
        Some(norm::backward(x, gamma, dy, s, eps))
    }

    fn depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        fast_or(
            [&x, &w, &b],
            |[x, w, b], [xd, wd, _]| {
                let (n, g) = depthwise_geometry(&xd, &wd, 1)?;
                Some(depthwise::gather(x, w, Some(b), g, n))
            },
            || generic::depthwise_conv3d::<Self>(x.clone(), w.clone(), b.clone()),
        )
    }

    fn depthwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        fast_or(
            [&x, &w, &dy],
            |[x, w, dy], [xd, wd, gd]| {
                let (n, g) = depthwise_geometry(&xd, &wd, 1).filter(|_| gd == xd)?;
                Some(depthwise_grads(x, w, dy, g, n, false))
            },
            || generic::depthwise_conv3d_backward::<Self>(x.clone(), w.clone(), b, dy.clone()),
        )
    }

    fn down_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        fast_or(
            [&x, &w, &b],
            |[x, w, b], [xd, wd, _]| {
                let (n, g) = depthwise_geometry(&xd, &wd, 2)?;
                Some(depthwise::gather(x, w, Some(b), g, n))
            },
            || generic::down_depthwise_conv3d::<Self>(x.clone(), w.clone(), b.clone()),
        )
    }

    fn down_depthwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        fast_or(
            [&x, &w, &dy],
            |[x, w, dy], [xd, wd, gd]| {
                let (n, g) = depthwise_geometry(&xd, &wd, 2)
                    .filter(|(n, g)| gd == [*n, g.c, g.cz, g.cy, g.cx])?;
                Some(depthwise_grads(x, w, dy, g, n, false))
            },
            || generic::down_depthwise_conv3d_backward::<Self>(x.clone(), w.clone(), b, dy.clone()),
        )
    }

    fn up_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        fast_or(
            [&x, &w, &b],
            |[x, w, b], [xd, wd, _]| {
                let (n, g) = up_geometry(&xd, &wd)?;
                Some(depthwise::scatter(x, w, Some(b), g, n))
            },
            || generic::up_depthwise_conv3d::<Self>(x.clone(), w.clone(), b.clone()),
        )
    }

    fn up_depthwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        fast_or(
            [&x, &w, &dy],
            |[x, w, dy], [xd, wd, gd]| {
                let (n, g) =
                    up_geometry(&xd, &wd).filter(|(n, g)| gd == [*n, g.c, g.fz, g.fy, g.fx])?;
                Some(depthwise_grads(x, w, dy, g, n, true))
            },
            || generic::up_depthwise_conv3d_backward::<Self>(x.clone(), w.clone(), b, dy.clone()),
        )
    }

    fn down_pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        fast_or(
            [&x, &w, &b],
            |[x, w, b], [xd, wd, _]| {
                let (s, g) = down_residual(&xd, &wd)?;
                let xs = resample::subsample(x, s.n, g);
                let (y, _) = pointwise::forward(xs, w, b, s, false);
                Some(reshape5(y, s.n, s.co, &[0, 0, g.cz, g.cy, g.cx]))
            },
            || generic::down_pointwise_conv3d::<Self>(x.clone(), w.clone(), b.clone()),
        )
    }

    fn down_pointwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        fast_or(
            [&x, &w, &dy],
            |[x, w, dy], [xd, wd, gd]| {
                let (s, g) =
                    down_residual(&xd, &wd).filter(|(s, g)| gd == [s.n, s.co, g.cz, g.cy, g.cx])?;
                let xs = resample::subsample(x, s.n, g);
                let db = norm::channel_sums(&dy, s.n, s.co, s.v);
                let (dxs, dw) = pointwise::backward(xs, w, dy, s);
                Some((resample::insert(dxs, None, s.n, g), dw, db))
            },
            || generic::down_pointwise_conv3d_backward::<Self>(x.clone(), w.clone(), b, dy.clone()),
        )
    }

    fn up_pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        fast_or(
            [&x, &w, &b],
            |[x, w, b], [xd, wd, _]| {
                let (s, g) = up_residual(&xd, &wd)?;
                let p = pointwise::product(x, transpose_io(w), s);
                Some(resample::insert(p, Some(b), s.n, g))
            },
            || generic::up_pointwise_conv3d::<Self>(x.clone(), w.clone(), b.clone()),
        )
    }

    fn up_pointwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        fast_or(
            [&x, &w, &dy],
            |[x, w, dy], [xd, wd, gd]| {
                let (s, g) =
                    up_residual(&xd, &wd).filter(|(s, g)| gd == [s.n, s.co, g.fz, g.fy, g.fx])?;
                let db = norm::channel_sums(&dy, s.n, s.co, g.fz * g.fy * g.fx);
                let dys = resample::subsample(dy, s.n, g);
                let (dx, dwt) = pointwise::backward(x, transpose_io(w), dys, s);
                Some((reshape5(dx, s.n, s.ci, &xd), transpose_io(dwt), db))
            },
            || generic::up_pointwise_conv3d_backward::<Self>(x.clone(), w.clone(), b, dy.clone()),
        )
    }

    fn pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        fast_or(
            [&x, &w, &b],
            |[x, w, b], [xd, wd, _]| {
                let s = pointwise_dims(&xd, &wd)?;
                let (y, _) = pointwise::forward(x, w, b, s, false);
                Some(reshape5(y, s.n, s.co, &xd))
            },
            || generic::pointwise_conv3d::<Self>(x.clone(), w.clone(), b.clone()),
        )
    }

    fn pointwise_conv3d_gelu_parts(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if let Some(([xc, wc, bc], [xd, wd, _])) = prepare([x.clone(), w.clone(), b.clone()]) {
            if let Some(s) = pointwise_dims(&xd, &wd) {
                let (pre, out) = pointwise::forward(xc, wc, bc, s, true);
                return (reshape5(pre, s.n, s.co, &xd), reshape5(out, s.n, s.co, &xd));
            }
        }
        let pre = generic::pointwise_conv3d::<Self>(x, w, b);
        (
            pre.clone(),
            <Self as burn::tensor::ops::ActivationOps<Self>>::gelu(pre),
        )
    }

    fn gelu_grad(pre: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        match prepare([pre.clone(), dy.clone()]) {
            Some(([pre, dy], [pd, gd])) if pd == gd => pointwise::gelu_grad(pre, dy),
            _ => <Self as burn::tensor::ops::ActivationOps<Self>>::gelu_backward(pre, dy),
        }
    }

    fn pointwise_conv3d_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ConvGrads<Self> {
        fast_or(
            [&x, &w, &dy],
            |[x, w, dy], [xd, wd, gd]| {
                let s = pointwise_dims(&xd, &wd)
                    .filter(|s| gd[..2] == [s.n, s.co] && gd[2..] == xd[2..])?;
                let db = norm::channel_sums(&dy, s.n, s.co, s.v);
                let (dx, dw) = pointwise::backward(x, w, dy, s);
                Some((reshape5(dx, s.n, s.ci, &xd), dw, db))
            },
            || generic::pointwise_conv3d_backward::<Self>(x.clone(), w.clone(), b, dy.clone()),
        )
    }
}

/// `(N, C, V)` back to `(N, C, Z, Y, X)` with the spatial dims of `like`.
fn reshape5<R: CubeRuntime>(t: CubeTensor<R>, n: usize, c: usize, like: &[usize]) -> CubeTensor<R> {
    Ops::<R>::float_reshape(t, Shape::from(vec![n, c, like[2], like[3], like[4]]))
}

/// The pointwise shape (on the coarse grid) and grids of the down residual on fine `x`
/// with `w (Co, Ci, 1, 1, 1)`.
fn down_residual(x: &[usize], w: &[usize]) -> Option<(PointwiseShape, Grids)> {
    let (&[n, ci, z, y, xx], &[co, wci, 1, 1, 1]) = (x, w) else {
        return None;
    };
    let fine = [z, y, xx];
    let coarse = fine.map(|f| f.div_ceil(2));
    (wci == ci).then(|| {
        let v = coarse.iter().product();
        (
            PointwiseShape { n, ci, co, v },
            Grids::new(ci, fine, coarse),
        )
    })
}

/// The pointwise shape (on the coarse grid) and output grids of the up residual on coarse
/// `x` with `w (Ci, Co, 1, 1, 1)`.
fn up_residual(x: &[usize], w: &[usize]) -> Option<(PointwiseShape, Grids)> {
    let (&[n, ci, z, y, xx], &[wci, co, 1, 1, 1]) = (x, w) else {
        return None;
    };
    let coarse = [z, y, xx];
    let fine = coarse.map(|c| 2 * c - 1);
    (wci == ci && z * y * xx > 0).then(|| {
        let v = coarse.iter().product();
        (
            PointwiseShape { n, ci, co, v },
            Grids::new(co, fine, coarse),
        )
    })
}

/// `(A, B, 1, 1, 1)` → contiguous `(B, A, 1, 1, 1)`.
fn transpose_io<R: CubeRuntime>(w: CubeTensor<R>) -> CubeTensor<R> {
    into_contiguous(Ops::<R>::float_swap_dims(w, 0, 1))
}

fn norm_shape(x: &[usize], groups: usize) -> Option<NormShape> {
    let (&n, &c) = (x.first()?, x.get(1)?);
    (groups > 0 && c % groups == 0 && x.len() >= 3).then(|| NormShape {
        n,
        c,
        groups,
        v: x[2..].iter().product(),
    })
}
