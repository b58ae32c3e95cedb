//! Depthwise `k×k×k` convolutions with stride 1 or 2 ("same" padding `k/2`), their
//! transposes and the weight gradient, for every float dtype (sums in f32).
//!
//! Three maps cover every direction. With the convolution's input on the *fine* grid and its
//! output on the *coarse* one (the same grid for stride 1):
//! - `gather`: coarse[o] = Σₖ w[k]·fine[s·o + k − p] (the convolution; the input gradient of
//!   the transposed one);
//! - `scatter`: fine[i] = Σₖ w[k]·coarse[(i + p − k)/s] (the transposed convolution; the
//!   input gradient of the convolution);
//! - `weight_grad`: dw[k] = Σₙ,ₒ fine[s·o + k − p]·coarse[o], a reduction over every voxel,
//!   split into chunks; each unit accumulates all k³ taps for its voxels (reading the coarse
//!   gradient once), each cube sums every tap in shared memory, then one sum over the chunks.

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use super::{elementwise_launch, into_f32_sum_rows, BLOCK, LOG2_BLOCK};

/// The geometry of one depthwise convolution (all run-time values: a new patch size compiles
/// nothing new).
#[derive(CubeLaunch, CubeType, Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Channels.
    pub c: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride (1 or 2).
    pub s: usize,
    /// Padding on each side.
    pub p: usize,
    /// Fine grid (the convolution's input).
    pub fz: usize,
    pub fy: usize,
    pub fx: usize,
    /// Coarse grid (the convolution's output).
    pub cz: usize,
    pub cy: usize,
    pub cx: usize,
}

impl Geometry {
    /// The geometry for channels `c`, kernel `k`, stride `s` and the fine grid `fine`.
    pub(crate) fn new(c: usize, k: usize, s: usize, fine: [usize; 3]) -> Self {
        let p = k / 2;
        let coarse = fine.map(|f| (f + 2 * p - k) / s + 1);
        Self::between(c, k, s, fine, coarse)
    }

    /// The geometry between explicit fine and coarse grids (the transposed convolution's
    /// fine grid is `2n − 1` for a coarse `n`).
    pub(crate) fn between(
        c: usize,
        k: usize,
        s: usize,
        fine: [usize; 3],
        coarse: [usize; 3],
    ) -> Self {
        Self {
            c,
            k,
            s,
            p: k / 2,
            fz: fine[0],
            fy: fine[1],
            fx: fine[2],
            cz: coarse[0],
            cy: coarse[1],
            cx: coarse[2],
        }
    }

    fn fine(&self) -> [usize; 3] {
        [self.fz, self.fy, self.fx]
    }

    fn coarse(&self) -> [usize; 3] {
        [self.cz, self.cy, self.cx]
    }

    fn launch<R: CubeRuntime>(&self) -> GeometryLaunch<R> {
        GeometryLaunch::new(
            self.c, self.k, self.s, self.p, self.fz, self.fy, self.fx, self.cz, self.cy, self.cx,
        )
    }
}

#[cube(launch)]
fn gather_kernel<F: Float>(
    fine: &Tensor<F>,
    w: &Tensor<F>,
    b: &Tensor<F>,
    coarse: &mut Tensor<F>,
    g: Geometry,
    #[comptime] bias: bool,
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
    let c = nc % g.c;
    let k = g.k;
    let base = nc * g.fz * g.fy * g.fx;
    let wbase = c * k * k * k;
    let mut acc = f32::new(0.0);
    if bias {
        acc = f32::cast_from(b[c]);
    }
    for kz in 0..k {
        let zz = oz * g.s + kz;
        if zz >= g.p && zz - g.p < g.fz {
            let zoff = base + (zz - g.p) * g.fy * g.fx;
            for ky in 0..k {
                let yy = oy * g.s + ky;
                if yy >= g.p && yy - g.p < g.fy {
                    let yoff = zoff + (yy - g.p) * g.fx;
                    let woff = wbase + (kz * k + ky) * k;
                    for kx in 0..k {
                        let xx = ox * g.s + kx;
                        if xx >= g.p && xx - g.p < g.fx {
                            acc += f32::cast_from(fine[yoff + xx - g.p])
                                * f32::cast_from(w[woff + kx]);
                        }
                    }
                }
            }
        }
    }
    coarse[pos] = F::cast_from(acc);
}

#[cube(launch)]
fn scatter_kernel<F: Float>(
    coarse: &Tensor<F>,
    w: &Tensor<F>,
    b: &Tensor<F>,
    fine: &mut Tensor<F>,
    g: Geometry,
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
    let c = nc % g.c;
    let k = g.k;
    let base = nc * g.cz * g.cy * g.cx;
    let wbase = c * k * k * k;
    let mut acc = f32::new(0.0);
    if bias {
        acc = f32::cast_from(b[c]);
    }
    for kz in 0..k {
        let tz = iz + g.p;
        if tz >= kz && (tz - kz).is_multiple_of(g.s) && (tz - kz) / g.s < g.cz {
            let zoff = base + (tz - kz) / g.s * g.cy * g.cx;
            for ky in 0..k {
                let ty = iy + g.p;
                if ty >= ky && (ty - ky).is_multiple_of(g.s) && (ty - ky) / g.s < g.cy {
                    let yoff = zoff + (ty - ky) / g.s * g.cx;
                    let woff = wbase + (kz * k + ky) * k;
                    for kx in 0..k {
                        let tx = ix + g.p;
                        if tx >= kx && (tx - kx).is_multiple_of(g.s) && (tx - kx) / g.s < g.cx {
                            acc += f32::cast_from(coarse[yoff + (tx - kx) / g.s])
                                * f32::cast_from(w[woff + kx]);
                        }
                    }
                }
            }
        }
    }
    fine[pos] = F::cast_from(acc);
}

/// Partial sums `partial[(c·k³ + tap)·chunks + chunk]` of the weight gradient. Each unit
/// reads a coarse gradient value once and adds its products with all `k³` fine inputs it
/// meets (neighbours, mostly cached), so the coarse gradient is read once instead of once
/// per tap; the cube then sums each tap in shared memory.
#[cube(launch)]
fn weight_grad_kernel<F: Float>(
    fine: &Tensor<F>,
    coarse: &Tensor<F>,
    partial: &mut Tensor<f32>,
    g: Geometry,
    n: usize,
    chunk: usize,
    #[comptime] taps: usize,
    #[define(F)] _dtype: StorageType,
) {
    let chunks = CUBE_COUNT_X as usize;
    let j = CUBE_POS_X as usize;
    let c = CUBE_POS_Y as usize;
    let k = g.k;
    let vc = g.cz * g.cy * g.cx;
    let vf = g.fz * g.fy * g.fx;
    let total = n * vc;
    let start = j * chunk;
    let mut end = start + chunk;
    if end > total {
        end = total;
    }
    let mut acc = Array::<f32>::new(taps);
    for t in 0..taps {
        acc[t] = f32::new(0.0);
    }
    let mut e = start + UNIT_POS_X as usize;
    while e < end {
        let b = e / vc;
        let o = e % vc;
        let ox = o % g.cx;
        let oy = (o / g.cx) % g.cy;
        let oz = o / (g.cx * g.cy);
        let nc = b * g.c + c;
        let gv = f32::cast_from(coarse[nc * vc + o]);
        let base = nc * vf;
        for kz in 0..k {
            let zz = oz * g.s + kz;
            if zz >= g.p && zz - g.p < g.fz {
                for ky in 0..k {
                    let yy = oy * g.s + ky;
                    if yy >= g.p && yy - g.p < g.fy {
                        let row = base + ((zz - g.p) * g.fy + yy - g.p) * g.fx;
                        for kx in 0..k {
                            let xx = ox * g.s + kx;
                            if xx >= g.p && xx - g.p < g.fx {
                                let t = (kz * k + ky) * k + kx;
                                acc[t] += f32::cast_from(fine[row + xx - g.p]) * gv;
                            }
                        }
                    }
                }
            }
        }
        e += CUBE_DIM_X as usize;
    }
    for t in 0..taps {
        let sum = block_sum(acc[t]);
        if UNIT_POS_X == 0 {
            partial[(c * taps + t) * chunks + j] = sum;
        }
        // The next tap's sum reuses the shared memory.
        sync_cube();
    }
}

/// The sum of one value per unit of a cube of [`BLOCK`] units (a tree in shared memory);
/// valid in unit 0. Every unit must call it (it synchronises the cube).
#[cube]
pub(crate) fn block_sum(value: f32) -> f32 {
    let mut shared = SharedMemory::<f32>::new(BLOCK);
    let u = UNIT_POS_X as usize;
    shared[u] = value;
    sync_cube();
    #[unroll]
    for i in 0..LOG2_BLOCK {
        let half = comptime!(BLOCK >> (i + 1));
        if u < half {
            shared[u] = shared[u] + shared[u + half];
        }
        sync_cube();
    }
    shared[0]
}

fn out_tensor<R: CubeRuntime>(like: &CubeTensor<R>, shape: Vec<usize>) -> CubeTensor<R> {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        like.dtype,
    )
}

/// The convolution: `fine (N, C, fine…)` → `(N, C, coarse…)`, plus the bias where given.
pub(crate) fn gather<R: CubeRuntime>(
    fine: CubeTensor<R>,
    w: CubeTensor<R>,
    b: Option<CubeTensor<R>>,
    g: Geometry,
    n: usize,
) -> CubeTensor<R> {
    let [cz, cy, cx] = g.coarse();
    let out = out_tensor(&fine, vec![n, g.c, cz, cy, cx]);
    let (count, dim) = elementwise_launch(&out);
    let bias = b.is_some();
    let b = b.unwrap_or_else(|| w.clone());
    let dtype = fine.dtype;
    gather_kernel::launch::<R>(
        &out.client,
        count,
        dim,
        fine.into_tensor_arg(),
        w.into_tensor_arg(),
        b.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        g.launch(),
        bias,
        dtype.into(),
    );
    out
}

/// The transposed convolution: `coarse (N, C, coarse…)` → `(N, C, fine…)`, plus the bias
/// where given.
pub(crate) fn scatter<R: CubeRuntime>(
    coarse: CubeTensor<R>,
    w: CubeTensor<R>,
    b: Option<CubeTensor<R>>,
    g: Geometry,
    n: usize,
) -> CubeTensor<R> {
    let [fz, fy, fx] = g.fine();
    let out = out_tensor(&coarse, vec![n, g.c, fz, fy, fx]);
    let (count, dim) = elementwise_launch(&out);
    let bias = b.is_some();
    let b = b.unwrap_or_else(|| w.clone());
    let dtype = coarse.dtype;
    scatter_kernel::launch::<R>(
        &out.client,
        count,
        dim,
        coarse.into_tensor_arg(),
        w.into_tensor_arg(),
        b.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        g.launch(),
        bias,
        dtype.into(),
    );
    out
}

/// The weight gradient `(C, 1, k, k, k)` in the dtype of `fine`.
pub(crate) fn weight_grad<R: CubeRuntime>(
    fine: CubeTensor<R>,
    coarse: CubeTensor<R>,
    g: Geometry,
    n: usize,
) -> CubeTensor<R> {
    let total = n * g.cz * g.cy * g.cx;
    let (chunks, chunk) = super::chunking(total);
    let k3 = g.k * g.k * g.k;
    let partial = empty_device_contiguous_dtype::<R>(
        fine.client.clone(),
        fine.device.clone(),
        Shape::from(vec![g.c * k3, chunks]),
        DType::F32,
    );
    let dtype = fine.dtype;
    weight_grad_kernel::launch::<R>(
        &partial.client.clone(),
        CubeCount::Static(chunks as u32, g.c as u32, 1),
        CubeDim::new_1d(BLOCK as u32),
        fine.into_tensor_arg(),
        coarse.into_tensor_arg(),
        partial.clone().into_tensor_arg(),
        g.launch(),
        n,
        chunk,
        k3,
        dtype.into(),
    );
    into_f32_sum_rows(partial, vec![g.c, 1, g.k, g.k, g.k], dtype)
}
