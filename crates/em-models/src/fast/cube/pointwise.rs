//! Pointwise (1×1×1) convolutions as matrix products on burn's matmul (tensor cores where
//! the card has them), with the bias and the exact (erf) GELU fused into one elementwise
//! pass, and the weight gradient split over chunks of voxels (split-K).

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use super::{elementwise_launch, Ops};

/// 1/√2 and 1/√(2π).
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `y[pos] += b[channel]`; with `gelu`, also `out = GELU(y)` (y keeps the pre-activation).
#[cube(launch)]
fn bias_kernel<F: Float>(
    y: &mut Tensor<F>,
    b: &Tensor<F>,
    out: &mut Tensor<F>,
    v: usize,
    c: usize,
    #[comptime] gelu: bool,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= y.len() {
        terminate!();
    }
    let ch = (pos / v) % c;
    let pre = f32::cast_from(y[pos]) + f32::cast_from(b[ch]);
    y[pos] = F::cast_from(pre);
    if gelu {
        let cdf = f32::new(0.5) * (f32::new(1.0) + Erf::erf(pre * f32::new(FRAC_1_SQRT_2)));
        out[pos] = F::cast_from(pre * cdf);
    }
}

/// dpre = dy·GELU′(pre) with the exact derivative Φ(x) + x·φ(x).
#[cube(launch)]
fn gelu_grad_kernel<F: Float>(
    pre: &Tensor<F>,
    dy: &Tensor<F>,
    dpre: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= dpre.len() {
        terminate!();
    }
    let x = f32::cast_from(pre[pos]);
    let cdf = f32::new(0.5) * (f32::new(1.0) + Erf::erf(x * f32::new(FRAC_1_SQRT_2)));
    let pdf = f32::exp(f32::new(-0.5) * x * x) * f32::new(FRAC_1_SQRT_2PI);
    dpre[pos] = F::cast_from(f32::cast_from(dy[pos]) * (cdf + x * pdf));
}

/// The shape of a pointwise convolution `x (N, Ci, V) → (N, Co, V)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PointwiseShape {
    pub n: usize,
    pub ci: usize,
    pub co: usize,
    /// Voxels per channel.
    pub v: usize,
}

/// `W (Co, Ci) × x[n] (Ci, V)` for every sample: `(N, Co, V)`, without bias.
pub(crate) fn product<R: CubeRuntime>(
    x: CubeTensor<R>,
    w: CubeTensor<R>,
    s: PointwiseShape,
) -> CubeTensor<R> {
    let x = Ops::<R>::float_reshape(x, Shape::from(vec![s.n, s.ci, s.v]));
    let w = Ops::<R>::float_reshape(w, Shape::from(vec![1, s.co, s.ci]));
    let w = Ops::<R>::float_expand(w, Shape::from(vec![s.n, s.co, s.ci]));
    burn_cubecl::kernel::into_contiguous(Ops::<R>::float_matmul(w, x))
}

/// The convolution with its bias; with `gelu`, `(pre-activation, GELU output)`, else
/// `(output, output)`.
pub(crate) fn forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    w: CubeTensor<R>,
    b: CubeTensor<R>,
    s: PointwiseShape,
    gelu: bool,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let y = product(x, w, s);
    let out = if gelu {
        empty_device_contiguous_dtype::<R>(
            y.client.clone(),
            y.device.clone(),
            Shape::from(vec![s.n, s.co, s.v]),
            y.dtype,
        )
    } else {
        y.clone()
    };
    let (count, dim) = elementwise_launch(&y);
    let dtype = y.dtype;
    bias_kernel::launch::<R>(
        &y.client,
        count,
        dim,
        y.clone().into_tensor_arg(),
        b.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        s.v,
        s.co,
        gelu,
        dtype.into(),
    );
    (y, out)
}

/// The gradient through the exact GELU at the pre-activation `pre`.
pub(crate) fn gelu_grad<R: CubeRuntime>(pre: CubeTensor<R>, dy: CubeTensor<R>) -> CubeTensor<R> {
    let out = empty_device_contiguous_dtype::<R>(
        pre.client.clone(),
        pre.device.clone(),
        burn::tensor::TensorMetadata::shape(&pre),
        pre.dtype,
    );
    let (count, dim) = elementwise_launch(&out);
    let dtype = pre.dtype;
    gelu_grad_kernel::launch::<R>(
        &out.client.clone(),
        count,
        dim,
        pre.into_tensor_arg(),
        dy.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        dtype.into(),
    );
    out
}

/// Gradients (x, w) for the output gradient `dy (N, Co, V)`; the weight gradient's
/// reduction over all voxels is split into chunks that run as one batched product, then
/// summed.
pub(crate) fn backward<R: CubeRuntime>(
    x: CubeTensor<R>,
    w: CubeTensor<R>,
    dy: CubeTensor<R>,
    s: PointwiseShape,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let dy3 = Ops::<R>::float_reshape(dy, Shape::from(vec![s.n, s.co, s.v]));
    // dx = Wᵀ × dy.
    let wt = Ops::<R>::float_swap_dims(
        Ops::<R>::float_reshape(w.clone(), Shape::from(vec![1, s.co, s.ci])),
        1,
        2,
    );
    let wt = Ops::<R>::float_expand(wt, Shape::from(vec![s.n, s.ci, s.co]));
    let dx = Ops::<R>::float_matmul(wt, dy3.clone());
    let dx = burn_cubecl::kernel::into_contiguous(dx);
    // dW = Σ over samples and voxel chunks of dy (Co, Vc) × xᵀ (Vc, Ci).
    let split = split_k(s.v);
    let vc = s.v / split;
    let batches = s.n * split;
    let dy_chunks = Ops::<R>::float_swap_dims(
        Ops::<R>::float_reshape(dy3, Shape::from(vec![s.n, s.co, split, vc])),
        1,
        2,
    );
    let dy_chunks = Ops::<R>::float_reshape(
        burn_cubecl::kernel::into_contiguous(dy_chunks),
        Shape::from(vec![batches, s.co, vc]),
    );
    let x_chunks = Ops::<R>::float_reshape(x, Shape::from(vec![s.n, s.ci, split, vc]));
    // (N, split, Vc, Ci)
    let x_chunks = Ops::<R>::float_swap_dims(Ops::<R>::float_swap_dims(x_chunks, 1, 2), 2, 3);
    let x_chunks = Ops::<R>::float_reshape(
        burn_cubecl::kernel::into_contiguous(x_chunks),
        Shape::from(vec![batches, vc, s.ci]),
    );
    let partial = Ops::<R>::float_matmul(dy_chunks, x_chunks);
    let dw = Ops::<R>::float_sum_dim(partial, 0);
    let dw = Ops::<R>::float_reshape(dw, burn::tensor::TensorMetadata::shape(&w));
    (dx, dw)
}

/// Voxel chunks for the weight gradient: a divisor of `v` that leaves chunks of at least
/// 4096 voxels (one chunk for small volumes).
fn split_k(v: usize) -> usize {
    const MIN_CHUNK: usize = 4096;
    const MAX_SPLIT: usize = 64;
    (1..=MAX_SPLIT)
        .rev()
        .find(|&d| v.is_multiple_of(d) && v / d >= MIN_CHUNK)
        .unwrap_or(1)
}
