//! Stride-2 sampling for the 1×1×1 stride-2 residual convolutions of MedNeXt's down and up
//! blocks: `subsample` keeps every second voxel along each axis, `insert` puts a coarse
//! volume on the even voxels of a fine one (zeros between) plus a per-channel bias. With a
//! pointwise product they make both convolutions and their gradients (burn 0.21's generic
//! transposed convolution on CubeCL drops the product when the kernel is smaller than the
//! stride, so the up block's residual must not go through it).

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use super::elementwise_launch;

/// Fine `(fz, fy, fx)` and coarse `(cz, cy, cx)` grids.
#[derive(CubeLaunch, CubeType, Clone, Copy, Debug)]
pub(crate) struct Grids {
    pub fz: usize,
    pub fy: usize,
    pub fx: usize,
    pub cz: usize,
    pub cy: usize,
    pub cx: usize,
    pub c: usize,
}

impl Grids {
    /// Channels `c`, fine grid `fine`, coarse grid `coarse`.
    pub(crate) fn new(c: usize, fine: [usize; 3], coarse: [usize; 3]) -> Self {
        Self {
            fz: fine[0],
            fy: fine[1],
            fx: fine[2],
            cz: coarse[0],
            cy: coarse[1],
            cx: coarse[2],
            c,
        }
    }

    fn launch<R: CubeRuntime>(&self) -> GridsLaunch<R> {
        GridsLaunch::new(self.fz, self.fy, self.fx, self.cz, self.cy, self.cx, self.c)
    }
}

#[cube(launch)]
fn subsample_kernel<F: Float>(
    fine: &Tensor<F>,
    coarse: &mut Tensor<F>,
    g: Grids,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= coarse.len() {
        terminate!();
    }
    let ox = pos % g.cx;
    let r = pos / g.cx;
    let oy = r % g.cy;
    let r = r / g.cy;
    let oz = r % g.cz;
    let nc = r / g.cz;
    coarse[pos] = fine[((nc * g.fz + 2 * oz) * g.fy + 2 * oy) * g.fx + 2 * ox];
}

#[cube(launch)]
fn insert_kernel<F: Float>(
    coarse: &Tensor<F>,
    b: &Tensor<F>,
    fine: &mut Tensor<F>,
    g: Grids,
    #[comptime] bias: bool,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= fine.len() {
        terminate!();
    }
    let ix = pos % g.fx;
    let r = pos / g.fx;
    let iy = r % g.fy;
    let r = r / g.fy;
    let iz = r % g.fz;
    let nc = r / g.fz;
    let mut v = f32::new(0.0);
    if bias {
        v = f32::cast_from(b[nc % g.c]);
    }
    if ix.is_multiple_of(2)
        && iy.is_multiple_of(2)
        && iz.is_multiple_of(2)
        && ix / 2 < g.cx
        && iy / 2 < g.cy
        && iz / 2 < g.cz
    {
        v += f32::cast_from(coarse[((nc * g.cz + iz / 2) * g.cy + iy / 2) * g.cx + ix / 2]);
    }
    fine[pos] = F::cast_from(v);
}

/// Every second voxel of contiguous `fine (N, C, fine…)`: `(N, C, coarse…)`.
pub(crate) fn subsample<R: CubeRuntime>(fine: CubeTensor<R>, n: usize, g: Grids) -> CubeTensor<R> {
    let out = empty_device_contiguous_dtype::<R>(
        fine.client.clone(),
        fine.device.clone(),
        Shape::from(vec![n, g.c, g.cz, g.cy, g.cx]),
        fine.dtype,
    );
    let (count, dim) = elementwise_launch(&out);
    let dtype = fine.dtype;
    subsample_kernel::launch::<R>(
        &out.client.clone(),
        count,
        dim,
        fine.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        g.launch(),
        dtype.into(),
    );
    out
}

/// Contiguous `coarse (N, C, coarse…)` on the even voxels of `(N, C, fine…)`, zeros
/// elsewhere, plus `b[c]` everywhere where given.
pub(crate) fn insert<R: CubeRuntime>(
    coarse: CubeTensor<R>,
    b: Option<CubeTensor<R>>,
    n: usize,
    g: Grids,
) -> CubeTensor<R> {
    let out = empty_device_contiguous_dtype::<R>(
        coarse.client.clone(),
        coarse.device.clone(),
        Shape::from(vec![n, g.c, g.fz, g.fy, g.fx]),
        coarse.dtype,
    );
    let (count, dim) = elementwise_launch(&out);
    let dtype = coarse.dtype;
    let bias = b.is_some();
    let b = b.unwrap_or_else(|| coarse.clone());
    insert_kernel::launch::<R>(
        &out.client.clone(),
        count,
        dim,
        coarse.into_tensor_arg(),
        b.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        g.launch(),
        bias,
        dtype.into(),
    );
    out
}
