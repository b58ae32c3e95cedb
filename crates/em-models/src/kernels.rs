//! Direct CPU kernels for MedNeXt's two convolution shapes, on `(N, C, Z, Y, X)` row-major
//! float32 buffers: the depthwise `k×k×k` convolution (stride 1, zero "same" padding) and
//! the pointwise `1×1×1` convolution, each with its input and weight gradients.
//!
//! burn's generic backward of a grouped convolution runs one full convolution per channel
//! on strided copies, and its pointwise backward goes through im2col-style paths: together
//! most of a CPU training step. The depthwise kernels stream over contiguous
//! rows so the inner loops vectorise; the pointwise ones are matrix products per block of
//! voxels through the `gemm` crate (packed operands, register-blocked FMA kernels: a
//! channel-by-channel multiply-add loop spent half of a MedNeXt-S step there). Both split
//! the work over rayon's pool.

use rayon::prelude::*;

/// Pointwise tasks take between `BLOCK / 8` and `8 · BLOCK` voxels. Tasks of at most `BLOCK`
/// ran single kernels 10–20% faster in `benches/kernels.rs` but a whole MedNeXt-S step 5–8%
/// slower: the wide layers pack their weights again for every task.
const BLOCK: usize = 2048;

/// Shape of a depthwise convolution: batch, channels, spatial sides, odd kernel side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseShape {
    /// Batch.
    pub n: usize,
    /// Channels (each convolved with its own kernel).
    pub c: usize,
    /// Spatial sides `(z, y, x)`.
    pub dims: [usize; 3],
    /// Kernel side (odd); padding is `k / 2` on every side.
    pub k: usize,
}

impl DepthwiseShape {
    fn volume(&self) -> usize {
        self.dims.iter().product()
    }

    fn check(&self, x: usize, w: usize) -> bool {
        self.k % 2 == 1 && x == self.n * self.c * self.volume() && w == self.c * self.k.pow(3)
    }
}

/// Adds `wv · src[x + off]` to `dst[x]` for every `x` where `x + off` is inside the row.
#[inline(always)]
fn axpy_shifted(dst: &mut [f32], src: &[f32], wv: f32, off: isize) {
    let w = dst.len() as isize;
    let lo = (-off).max(0);
    let hi = (w - off).min(w);
    if lo >= hi {
        return;
    }
    let (lo, hi) = (lo as usize, hi as usize);
    let s = (lo as isize + off) as usize;
    for (d, &v) in dst[lo..hi].iter_mut().zip(&src[s..s + (hi - lo)]) {
        *d += wv * v;
    }
}

/// `Σ dst[x] · src[x + off]` over the `x` where `x + off` is inside the row.
#[inline(always)]
fn dot_shifted(a: &[f32], src: &[f32], off: isize) -> f32 {
    let w = a.len() as isize;
    let lo = (-off).max(0);
    let hi = (w - off).min(w);
    if lo >= hi {
        return 0.0;
    }
    let (lo, hi) = (lo as usize, hi as usize);
    let s = (lo as isize + off) as usize;
    // Eight partial sums let the compiler keep a vector accumulator.
    let mut acc = [0.0f32; 8];
    let (a, b) = (&a[lo..hi], &src[s..s + (hi - lo)]);
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            acc[j] += a[8 * i + j] * b[8 * i + j];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in 8 * chunks..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// One channel volume: `out = bias + Σ w ⋆ x` (cross-correlation, zero padding).
fn depthwise_volume(x: &[f32], w: &[f32], bias: f32, dims: [usize; 3], k: usize, out: &mut [f32]) {
    let [nz, ny, nx] = dims;
    let p = (k / 2) as isize;
    out.fill(bias);
    for z in 0..nz {
        for y in 0..ny {
            let row = &mut out[(z * ny + y) * nx..][..nx];
            for dz in 0..k {
                let sz = z as isize + dz as isize - p;
                if sz < 0 || sz >= nz as isize {
                    continue;
                }
                for dy in 0..k {
                    let sy = y as isize + dy as isize - p;
                    if sy < 0 || sy >= ny as isize {
                        continue;
                    }
                    let src = &x[(sz as usize * ny + sy as usize) * nx..][..nx];
                    for dx in 0..k {
                        axpy_shifted(row, src, w[(dz * k + dy) * k + dx], dx as isize - p);
                    }
                }
            }
        }
    }
}

/// Depthwise convolution forward: `out[n, c] = bias[c] + w[c] ⋆ x[n, c]`.
///
/// Returns `false` (and leaves `out` alone) when the buffer lengths do not match the shape.
pub fn depthwise_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: DepthwiseShape,
    out: &mut [f32],
) -> bool {
    if !s.check(x.len(), w.len()) || out.len() != x.len() || bias.is_some_and(|b| b.len() != s.c) {
        return false;
    }
    let (v, k3) = (s.volume(), s.k.pow(3));
    out.par_chunks_mut(v)
        .zip(x.par_chunks(v))
        .enumerate()
        .for_each(|(i, (o, xi))| {
            let c = i % s.c;
            let b = bias.map_or(0.0, |b| b[c]);
            depthwise_volume(xi, &w[c * k3..][..k3], b, s.dims, s.k, o);
        });
    true
}

/// Gradient of the input: the output gradient correlated with the flipped kernels.
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn depthwise_backward_input(dy: &[f32], w: &[f32], s: DepthwiseShape, dx: &mut [f32]) -> bool {
    if !s.check(dy.len(), w.len()) || dx.len() != dy.len() {
        return false;
    }
    let k3 = s.k.pow(3);
    let flipped: Vec<f32> = (0..s.c)
        .flat_map(|c| (0..k3).rev().map(move |i| (c, i)))
        .map(|(c, i)| w[c * k3 + i])
        .collect();
    depthwise_forward(dy, &flipped, None, s, dx)
}

/// Gradients of the kernels `(C, k, k, k)` and, when asked, the biases: summed over the
/// batch and every voxel.
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn depthwise_backward_weight(
    x: &[f32],
    dy: &[f32],
    s: DepthwiseShape,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> bool {
    if !s.check(x.len(), dw.len())
        || dy.len() != x.len()
        || db.as_ref().is_some_and(|b| b.len() != s.c)
    {
        return false;
    }
    let (v, k, k3) = (s.volume(), s.k, s.k.pow(3));
    let [nz, ny, nx] = s.dims;
    let p = (k / 2) as isize;
    // One task per (channel, z-slab) keeps both cores busy when channels are few.
    let slabs = nz.clamp(1, 8);
    let per = nz.div_ceil(slabs);
    let partial: Vec<Vec<f32>> = (0..s.c * slabs)
        .into_par_iter()
        .map(|t| {
            let (c, slab) = (t / slabs, t % slabs);
            let mut acc = vec![0.0f32; k3 + 1];
            for n in 0..s.n {
                let base = (n * s.c + c) * v;
                let (xi, gi) = (&x[base..base + v], &dy[base..base + v]);
                for z in slab * per..((slab + 1) * per).min(nz) {
                    for y in 0..ny {
                        let g = &gi[(z * ny + y) * nx..][..nx];
                        acc[k3] += g.iter().sum::<f32>();
                        for dz in 0..k {
                            let sz = z as isize + dz as isize - p;
                            if sz < 0 || sz >= nz as isize {
                                continue;
                            }
                            for ddy in 0..k {
                                let sy = y as isize + ddy as isize - p;
                                if sy < 0 || sy >= ny as isize {
                                    continue;
                                }
                                let src = &xi[(sz as usize * ny + sy as usize) * nx..][..nx];
                                for ddx in 0..k {
                                    acc[(dz * k + ddy) * k + ddx] +=
                                        dot_shifted(g, src, ddx as isize - p);
                                }
                            }
                        }
                    }
                }
            }
            acc
        })
        .collect();
    dw.fill(0.0);
    let mut sums = vec![0.0f32; s.c];
    for (t, acc) in partial.iter().enumerate() {
        let c = t / slabs;
        for (d, a) in dw[c * k3..][..k3].iter_mut().zip(acc) {
            *d += a;
        }
        sums[c] += acc[k3];
    }
    if let Some(db) = db {
        db.copy_from_slice(&sums);
    }
    true
}

/// Shape of a pointwise convolution: batch, input and output channels, voxels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointwiseShape {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
    /// Voxels per channel.
    pub v: usize,
}

/// `dst = dst + lhs · rhs` (`m × k` times `k × n`) through the `gemm` crate's packed,
/// register-blocked kernels; `dst` has unit column stride and row stride `dst_rs`, the
/// operands any strides.
///
/// # Safety
/// Every index the shapes and strides reach must lie inside its buffer, and `dst` must not
/// overlap the operands or be written by anyone else during the call.
/// Runs on the calling thread: the callers split the work into tasks themselves.
unsafe fn sgemm_acc(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            true,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Voxel columns per task of the pointwise kernels: enough tasks for every thread, each
/// long enough that the packed weights are reused over many columns.
fn pointwise_columns(n: usize, v: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per_task = (n * v).div_ceil(4 * threads);
    per_task
        .next_multiple_of(64)
        .clamp(BLOCK / 8, 8 * BLOCK)
        .min(v.max(1))
}

/// `out[n, o, v] = bias[o] + Σ_i w[o, i] · x[n, i, v]` for a `w` of `rows × cols`, one
/// matrix product per block of voxels; `transpose` reads `w` as its transpose (`cols ×
/// rows` stored). With `gelu_out`, each block's GELU is taken while it is in cache.
fn matmul_rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (n, cin, cout, v): (usize, usize, usize, usize),
    transpose: bool,
    out: &mut [f32],
    gelu_out: Option<&mut [f32]>,
) {
    if n * v == 0 || cout == 0 {
        return;
    }
    let cols = pointwise_columns(n, v);
    let blocks = v.div_ceil(cols);
    let tasks: Vec<(usize, usize)> = (0..n)
        .flat_map(|b| (0..blocks).map(move |j| (b, j)))
        .collect();
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let gelu_ptr = gelu_out.map(|g| SyncPtr(g.as_mut_ptr()));
    // w[o, i] is at o·cin + i; its transpose at i·cout + o.
    let (w_rs, w_cs) = if transpose { (1, cout) } else { (cin, 1) };
    tasks.par_iter().for_each(|&(b, j)| {
        let lo = j * cols;
        let len = cols.min(v - lo);
        let base = b * cout * v + lo;
        for o in 0..cout {
            // SAFETY: tasks write disjoint ranges (sample b, block j, every channel) of
            // `out`, which outlives the parallel loop.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(base + o * v), len) };
            dst.fill(bias.map_or(0.0, |bs| bs[o]));
        }
        let xs = &x[b * cin * v + lo..];
        // SAFETY: the product reads rows `0..cin` of `x` (stride v) and `w` within their
        // lengths (checked by the public callers) and writes this task's block of `out`.
        unsafe {
            sgemm_acc(
                (cout, len, cin),
                out_ptr.get().add(base),
                v,
                (w.as_ptr(), w_rs, w_cs),
                (xs.as_ptr(), v, 1),
            );
        }
        if let Some(g) = gelu_ptr {
            for o in 0..cout {
                // SAFETY: as above; `g` is a second output of the same shape.
                let (pre, dst) = unsafe {
                    (
                        std::slice::from_raw_parts(out_ptr.get().add(base + o * v), len),
                        std::slice::from_raw_parts_mut(g.get().add(base + o * v), len),
                    )
                };
                gelu_rows(pre, dst);
            }
        }
    });
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: only used for disjoint writes inside one parallel loop (see `matmul_rows`).
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Pointwise convolution forward: `out[n, o] = bias[o] + Σ_i w[o, i] · x[n, i]`, `w`
/// stored `(co, ci)`.
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn pointwise_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: PointwiseShape,
    out: &mut [f32],
) -> bool {
    if x.len() != s.n * s.ci * s.v
        || w.len() != s.co * s.ci
        || out.len() != s.n * s.co * s.v
        || bias.is_some_and(|b| b.len() != s.co)
    {
        return false;
    }
    matmul_rows(x, w, bias, (s.n, s.ci, s.co, s.v), false, out, None);
    true
}

/// Pointwise convolution followed by GELU: `pre` gets the convolution (what the backward
/// pass needs), `out` its GELU, in one pass over the voxels.
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn pointwise_gelu_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: PointwiseShape,
    pre: &mut [f32],
    out: &mut [f32],
) -> bool {
    if x.len() != s.n * s.ci * s.v
        || w.len() != s.co * s.ci
        || pre.len() != s.n * s.co * s.v
        || out.len() != pre.len()
        || bias.is_some_and(|b| b.len() != s.co)
    {
        return false;
    }
    matmul_rows(x, w, bias, (s.n, s.ci, s.co, s.v), false, pre, Some(out));
    true
}

/// Gradient of the input: `dx[n, i] = Σ_o w[o, i] · dy[n, o]`.
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn pointwise_backward_input(dy: &[f32], w: &[f32], s: PointwiseShape, dx: &mut [f32]) -> bool {
    if dy.len() != s.n * s.co * s.v || w.len() != s.co * s.ci || dx.len() != s.n * s.ci * s.v {
        return false;
    }
    matmul_rows(dy, w, None, (s.n, s.co, s.ci, s.v), true, dx, None);
    true
}

/// Gradients of the weights `(co, ci)` and, when asked, the biases:
/// `dw[o, i] = Σ_{n, v} dy[n, o, v] · x[n, i, v]`.
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn pointwise_backward_weight(
    x: &[f32],
    dy: &[f32],
    s: PointwiseShape,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> bool {
    if x.len() != s.n * s.ci * s.v
        || dy.len() != s.n * s.co * s.v
        || dw.len() != s.co * s.ci
        || db.as_ref().is_some_and(|b| b.len() != s.co)
    {
        return false;
    }
    let (co, ci, v) = (s.co, s.ci, s.v);
    // No voxels: no tasks, and the zero partial sums below are the gradients.
    let cols = pointwise_columns(s.n, v);
    let blocks = v.div_ceil(cols);
    // Bias sums in f64: a bias gradient sums every voxel's gradient, and summing millions
    // of like-signed values in f32 loses digits.
    let (partial, bias) = (0..s.n * blocks)
        .into_par_iter()
        .fold(
            || (vec![0.0f32; co * ci], vec![0.0f64; co]),
            |(mut acc, mut bias), t| {
                let (b, j) = (t / blocks, t % blocks);
                let lo = j * cols;
                let len = cols.min(v - lo);
                let g = &dy[b * co * v + lo..];
                let xs = &x[b * ci * v + lo..];
                for (o, sum) in bias.iter_mut().enumerate() {
                    *sum += g[o * v..][..len].iter().map(|&a| f64::from(a)).sum::<f64>();
                }
                // dw (co × ci) += dy block (co × len) · x block transposed (len × ci).
                // SAFETY: rows 0..co of dy and 0..ci of x (stride v) from `lo` for `len`
                // columns lie inside the checked buffers; `acc` is this fold's own.
                unsafe {
                    sgemm_acc(
                        (co, ci, len),
                        acc.as_mut_ptr(),
                        ci,
                        (g.as_ptr(), v, 1),
                        (xs.as_ptr(), 1, v),
                    );
                }
                (acc, bias)
            },
        )
        .reduce(
            || (vec![0.0f32; co * ci], vec![0.0f64; co]),
            |(mut a, mut ab), (b, bb)| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += y;
                }
                for (x, y) in ab.iter_mut().zip(&bb) {
                    *x += y;
                }
                (a, ab)
            },
        );
    dw.copy_from_slice(&partial);
    if let Some(db) = db {
        for (d, s) in db.iter_mut().zip(bias) {
            *d = s as f32;
        }
    }
    true
}

/// Shape of a group normalisation: batch, channels, groups (dividing the channels), voxels
/// per channel. Each group's channels are contiguous in `(N, C, Z, Y, X)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormShape {
    /// Batch.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Groups.
    pub groups: usize,
    /// Voxels per channel.
    pub v: usize,
}

impl NormShape {
    fn check(&self, x: usize, gamma: usize) -> bool {
        self.groups > 0
            && self.c.is_multiple_of(self.groups)
            && x == self.n * self.c * self.v
            && gamma == self.c
            && self.v > 0
    }
}

/// Mean and `1 / sqrt(var + eps)` of one group (float64 sums: groups hold up to millions
/// of voxels).
fn group_stats(x: &[f32], eps: f64) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

/// Group normalisation forward: `out = (x − mean) / sqrt(var + eps) · gamma + beta`, the
/// statistics per sample and group (biased variance, as PyTorch and burn).
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn group_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: NormShape,
    eps: f64,
    out: &mut [f32],
) -> bool {
    if !s.check(x.len(), gamma.len()) || beta.len() != s.c || out.len() != x.len() {
        return false;
    }
    let cg = s.c / s.groups;
    let len = cg * s.v;
    out.par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .enumerate()
        .for_each(|(i, (o, xg))| {
            let g = i % s.groups;
            let (mean, rstd) = group_stats(xg, eps);
            for (j, (oc, xc)) in o.chunks_mut(s.v).zip(xg.chunks(s.v)).enumerate() {
                let c = g * cg + j;
                let (a, b) = (rstd * gamma[c], beta[c] - mean * rstd * gamma[c]);
                for (ov, &xv) in oc.iter_mut().zip(xc) {
                    *ov = a * xv + b;
                }
            }
        });
    true
}

/// Group normalisation backward: the input gradient and the gradients of `gamma` and
/// `beta`, for the output gradient `dy` (statistics recomputed from `x`).
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn group_norm_backward(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    s: NormShape,
    eps: f64,
    (dx, dgamma, dbeta): (&mut [f32], &mut [f32], &mut [f32]),
) -> bool {
    if !s.check(x.len(), gamma.len())
        || dy.len() != x.len()
        || dx.len() != x.len()
        || dgamma.len() != s.c
        || dbeta.len() != s.c
    {
        return false;
    }
    let cg = s.c / s.groups;
    let len = cg * s.v;
    // Per (sample, group): dx, and per channel Σ dy·x̂ and Σ dy.
    let per_group: Vec<Vec<(f64, f64)>> = dx
        .par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .zip(dy.par_chunks(len))
        .enumerate()
        .map(|(i, ((dxg, xg), gg))| {
            let g = i % s.groups;
            let (mean, rstd) = group_stats(xg, eps);
            let mut sums = Vec::with_capacity(cg);
            // m1 = mean(dy·γ), m2 = mean(dy·γ·x̂) over the group.
            let (mut m1, mut m2) = (0.0f64, 0.0f64);
            for (j, (xc, gc)) in xg.chunks(s.v).zip(gg.chunks(s.v)).enumerate() {
                let gm = gamma[g * cg + j];
                let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
                for (&xv, &gv) in xc.iter().zip(gc) {
                    let xh = (xv - mean) * rstd;
                    sdy += f64::from(gv);
                    sdyx += f64::from(gv * xh);
                }
                m1 += sdy * f64::from(gm);
                m2 += sdyx * f64::from(gm);
                sums.push((sdyx, sdy));
            }
            let (m1, m2) = ((m1 / len as f64) as f32, (m2 / len as f64) as f32);
            for (j, ((dc, xc), gc)) in dxg
                .chunks_mut(s.v)
                .zip(xg.chunks(s.v))
                .zip(gg.chunks(s.v))
                .enumerate()
            {
                let gm = gamma[g * cg + j];
                for ((d, &xv), &gv) in dc.iter_mut().zip(xc).zip(gc) {
                    let xh = (xv - mean) * rstd;
                    *d = rstd * (gv * gm - m1 - xh * m2);
                }
            }
            sums
        })
        .collect();
    dgamma.fill(0.0);
    dbeta.fill(0.0);
    for (i, sums) in per_group.iter().enumerate() {
        let g = i % s.groups;
        for (j, &(sdyx, sdy)) in sums.iter().enumerate() {
            dgamma[g * cg + j] += sdyx as f32;
            dbeta[g * cg + j] += sdy as f32;
        }
    }
    true
}

/// Shape of a stride-2 depthwise convolution (MedNeXt's down blocks) and of its transpose
/// (the up blocks): the fine grid `big` and the coarse grid `small` are linked by
/// `big = 2·small − k/2 + t` for kernel offsets `t` in `0..k` on each axis; taps that fall
/// outside `big` read or write zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StridedShape {
    /// Batch.
    pub n: usize,
    /// Channels (each with its own kernel).
    pub c: usize,
    /// Coarse spatial sides `(z, y, x)`.
    pub small: [usize; 3],
    /// Fine spatial sides `(z, y, x)`.
    pub big: [usize; 3],
    /// Kernel side (odd).
    pub k: usize,
}

impl StridedShape {
    /// The shape of a stride-2 convolution with padding `k / 2` of a `big` volume, as burn
    /// and PyTorch size it.
    pub fn down(n: usize, c: usize, big: [usize; 3], k: usize) -> Self {
        let small = big.map(|b| (b + 2 * (k / 2)).saturating_sub(k) / 2 + 1);
        Self {
            n,
            c,
            small,
            big,
            k,
        }
    }

    /// The shape of a stride-2 transposed convolution with padding `k / 2` of a `small`
    /// volume (output side `2·(s − 1) − 2·(k/2) + k`).
    pub fn up(n: usize, c: usize, small: [usize; 3], k: usize) -> Self {
        let big = small.map(|s| (2 * s.saturating_sub(1) + k).saturating_sub(2 * (k / 2)));
        Self {
            n,
            c,
            small,
            big,
            k,
        }
    }

    fn small_len(&self) -> usize {
        self.n * self.c * self.small.iter().product::<usize>()
    }

    fn big_len(&self) -> usize {
        self.n * self.c * self.big.iter().product::<usize>()
    }

    fn check(&self, small: usize, big: usize, w: usize) -> bool {
        self.k % 2 == 1
            && small == self.small_len()
            && big == self.big_len()
            && w == self.c * self.k.pow(3)
            && self.small.iter().chain(&self.big).all(|&d| d > 0)
    }

    /// The coarse indices `lo..hi` whose tap `t` lands inside a fine axis of length `big`.
    fn range(small: usize, big: usize, p: usize, t: usize) -> (usize, usize) {
        // 2i + t − p ≥ 0 and 2i + t − p < big
        let lo = p.saturating_sub(t).div_ceil(2);
        let hi = if big + p > t {
            ((big + p - t - 1) / 2 + 1).min(small)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    /// Calls `f(small_row, big_row, tap_row)` for every pair of x-rows one `(tz, ty)` tap
    /// apart inside both volumes: offsets of the rows in one channel volume and of the taps
    /// `(tz, ty, 0)` in one kernel. Along x, [`StridedShape::x_taps`] gives the ranges.
    fn rows(&self, mut f: impl FnMut(usize, usize, usize)) {
        let ([mz, my, mx], [bz, by, bx], k, p) = (self.small, self.big, self.k, self.k / 2);
        for tz in 0..k {
            let (z0, z1) = Self::range(mz, bz, p, tz);
            for z in z0..z1 {
                for ty in 0..k {
                    let (y0, y1) = Self::range(my, by, p, ty);
                    for y in y0..y1 {
                        let (bzz, byy) = (2 * z + tz - p, 2 * y + ty - p);
                        f((z * my + y) * mx, (bzz * by + byy) * bx, (tz * k + ty) * k);
                    }
                }
            }
        }
    }

    /// For each x tap `tx`: the coarse x range whose fine partner `2x + tx − k/2` is inside.
    fn x_taps(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let p = self.k / 2;
        (0..self.k).map(move |tx| {
            let (x0, x1) = Self::range(self.small[2], self.big[2], p, tx);
            (tx, x0, x1)
        })
    }
}

/// `out[i] = bias + Σ_t w[t] · big[2i − k/2 + t]` for every channel volume: the stride-2
/// convolution (down blocks), and the input gradient of the transposed one.
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn strided_gather(
    big: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: StridedShape,
    out: &mut [f32],
) -> bool {
    if !s.check(out.len(), big.len(), w.len()) || bias.is_some_and(|b| b.len() != s.c) {
        return false;
    }
    let (vs, vb, k3, p) = (
        s.small.iter().product::<usize>(),
        s.big.iter().product::<usize>(),
        s.k.pow(3),
        s.k / 2,
    );
    let (mx, bx) = (s.small[2], s.big[2]);
    out.par_chunks_mut(vs)
        .zip(big.par_chunks(vb))
        .enumerate()
        .for_each(|(i, (o, b))| {
            let c = i % s.c;
            let wc = &w[c * k3..][..k3];
            o.fill(bias.map_or(0.0, |b| b[c]));
            s.rows(|sr, br, t| {
                let (src, row) = (&b[br..][..bx], &mut o[sr..][..mx]);
                for (tx, x0, x1) in s.x_taps() {
                    let wv = wc[t + tx];
                    for (xx, r) in row.iter_mut().enumerate().take(x1).skip(x0) {
                        *r += wv * src[2 * xx + tx - p];
                    }
                }
            });
        });
    true
}

/// `out[2i − k/2 + t] += w[t] · small[i]` over every coarse voxel and tap, after
/// `out = bias`: the stride-2 transposed convolution (up blocks), and the input gradient of
/// the stride-2 one.
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn strided_scatter(
    small: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: StridedShape,
    out: &mut [f32],
) -> bool {
    if !s.check(small.len(), out.len(), w.len()) || bias.is_some_and(|b| b.len() != s.c) {
        return false;
    }
    let (vs, vb, k3, p) = (
        s.small.iter().product::<usize>(),
        s.big.iter().product::<usize>(),
        s.k.pow(3),
        s.k / 2,
    );
    let (mx, bx) = (s.small[2], s.big[2]);
    out.par_chunks_mut(vb)
        .zip(small.par_chunks(vs))
        .enumerate()
        .for_each(|(i, (o, sm))| {
            let c = i % s.c;
            let wc = &w[c * k3..][..k3];
            o.fill(bias.map_or(0.0, |b| b[c]));
            s.rows(|sr, br, t| {
                let (src, row) = (&sm[sr..][..mx], &mut o[br..][..bx]);
                for (tx, x0, x1) in s.x_taps() {
                    let wv = wc[t + tx];
                    for (xx, &v) in src.iter().enumerate().take(x1).skip(x0) {
                        row[2 * xx + tx - p] += wv * v;
                    }
                }
            });
        });
    true
}

/// `dw[c, t] = Σ_{n, i} small[n, c, i] · big[n, c, 2i − k/2 + t]`: the kernel gradient of
/// both strided convolutions (for the stride-2 one `small` is the output gradient and `big`
/// the input; for the transposed one the other way round).
///
/// Returns `false` when the buffer lengths do not match the shape.
pub fn strided_weight_grad(big: &[f32], small: &[f32], s: StridedShape, dw: &mut [f32]) -> bool {
    if !s.check(small.len(), big.len(), dw.len()) {
        return false;
    }
    let (vs, vb, k3, p) = (
        s.small.iter().product::<usize>(),
        s.big.iter().product::<usize>(),
        s.k.pow(3),
        s.k / 2,
    );
    let (mx, bx) = (s.small[2], s.big[2]);
    dw.par_chunks_mut(k3).enumerate().for_each(|(c, dwc)| {
        let mut acc = vec![0.0f64; k3];
        for n in 0..s.n {
            let base = n * s.c + c;
            let (b, sm) = (&big[base * vb..][..vb], &small[base * vs..][..vs]);
            s.rows(|sr, br, t| {
                let (src, row) = (&b[br..][..bx], &sm[sr..][..mx]);
                for (tx, x0, x1) in s.x_taps() {
                    let dot: f32 = (x0..x1).map(|xx| row[xx] * src[2 * xx + tx - p]).sum();
                    acc[t + tx] += f64::from(dot);
                }
            });
        }
        for (d, a) in dwc.iter_mut().zip(acc) {
            *d = a as f32;
        }
    });
    true
}

/// Per-channel sums over batch and voxels (a bias gradient), in float64.
pub fn channel_sums(x: &[f32], n: usize, c: usize, out: &mut [f32]) -> bool {
    if out.len() != c || n * c == 0 || !x.len().is_multiple_of(n * c) {
        return false;
    }
    let v = x.len() / (n * c);
    let sums: Vec<f64> = (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n)
                .map(|b| {
                    x[(b * c + ch) * v..][..v]
                        .iter()
                        .map(|&a| f64::from(a))
                        .sum::<f64>()
                })
                .sum()
        })
        .collect();
    for (o, s) in out.iter_mut().zip(sums) {
        *o = s as f32;
    }
    true
}

/// `e^x` in float32 without a libm call, so that loops over it vectorise: `2^k · p(r)` with
/// `x = k ln 2 + r`, `|r| ≤ ln 2 / 2`, `p` the degree-7 Taylor polynomial (relative error
/// below 2e-7 on [-87, 88]; inputs beyond are clamped).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    // 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let k = t - SHIFTER;
    let ki = t.to_bits() as i32 - SHIFTER.to_bits() as i32;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((ki + 127) << 23) as u32)
}

/// The standard normal CDF `Φ(x)` and density `φ(x)`: `erfc` by Abramowitz & Stegun 7.1.26
/// (absolute error below 1.5e-7), written branch-free so that loops over it vectorise,
/// and in the `erfc` form on both sides so that small tails keep their relative precision.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let e = exp_f32(-z * z);
    let q = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4])))) * e;
    // q = erfc(|x| / √2): Φ(x) = q / 2 below zero, 1 − q / 2 above.
    let half = 0.5 * q;
    let cdf = if x < 0.0 { half } else { 1.0 - half };
    // e = exp(−x² / 2) as well.
    (
        cdf,
        e * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2),
    )
}

fn gelu_rows(pre: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(pre) {
        *o = x * normal_cdf_pdf(x).0;
    }
}

/// Elements per parallel task of the element-wise kernels.
const CHUNK: usize = 1 << 14;

/// GELU (the exact, erf-based one of PyTorch's `nn.GELU()`): `out = x · Φ(x)`.
///
/// Returns `false` when the lengths differ.
pub fn gelu_forward(pre: &[f32], out: &mut [f32]) -> bool {
    if pre.len() != out.len() {
        return false;
    }
    out.par_chunks_mut(CHUNK)
        .zip(pre.par_chunks(CHUNK))
        .for_each(|(o, p)| gelu_rows(p, o));
    true
}

/// Gradient of GELU at `pre`: `dpre = dy · (Φ(x) + x φ(x))`.
///
/// Returns `false` when the lengths differ.
pub fn gelu_backward(pre: &[f32], dy: &[f32], dpre: &mut [f32]) -> bool {
    if pre.len() != dy.len() || dy.len() != dpre.len() {
        return false;
    }
    dpre.par_chunks_mut(CHUNK)
        .zip(pre.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(d, (p, g))| {
            for ((d, &x), &g) in d.iter_mut().zip(p).zip(g) {
                let (cdf, pdf) = normal_cdf_pdf(x);
                *d = g * (cdf + x * pdf);
            }
        });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain loops: the definition the kernels must match.
    fn naive_depthwise(x: &[f32], w: &[f32], b: &[f32], s: DepthwiseShape) -> Vec<f32> {
        let [nz, ny, nx] = s.dims;
        let (k, p) = (s.k as isize, (s.k / 2) as isize);
        let v = s.volume();
        let mut out = vec![0.0; x.len()];
        for n in 0..s.n {
            for c in 0..s.c {
                for z in 0..nz as isize {
                    for y in 0..ny as isize {
                        for xx in 0..nx as isize {
                            let mut acc = b[c];
                            for dz in 0..k {
                                for dy in 0..k {
                                    for dx in 0..k {
                                        let (sz, sy, sx) = (z + dz - p, y + dy - p, xx + dx - p);
                                        if sz < 0
                                            || sy < 0
                                            || sx < 0
                                            || sz >= nz as isize
                                            || sy >= ny as isize
                                            || sx >= nx as isize
                                        {
                                            continue;
                                        }
                                        acc += w
                                            [c * (s.k.pow(3)) + ((dz * k + dy) * k + dx) as usize]
                                            * x[(n * s.c + c) * v
                                                + ((sz as usize * ny) + sy as usize) * nx
                                                + sx as usize];
                                    }
                                }
                            }
                            out[(n * s.c + c) * v
                                + (z as usize * ny + y as usize) * nx
                                + xx as usize] = acc;
                        }
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    /// Plain loops over the definition of the stride-2 convolution.
    fn naive_gather(big: &[f32], w: &[f32], s: StridedShape) -> Vec<f32> {
        let ([mz, my, mx], [bz, by, bx]) = (s.small, s.big);
        let (k, p) = (s.k as isize, (s.k / 2) as isize);
        let mut out = vec![0.0; s.small_len()];
        let mut o = 0;
        for nc in 0..s.n * s.c {
            let c = nc % s.c;
            for z in 0..mz as isize {
                for y in 0..my as isize {
                    for x in 0..mx as isize {
                        for t in 0..k * k * k {
                            let (tz, ty, tx) = (t / (k * k), t / k % k, t % k);
                            let (sz, sy, sx) = (2 * z + tz - p, 2 * y + ty - p, 2 * x + tx - p);
                            if sz >= 0
                                && sy >= 0
                                && sx >= 0
                                && sz < bz as isize
                                && sy < by as isize
                                && sx < bx as isize
                            {
                                out[o] += w[c * s.k.pow(3) + t as usize]
                                    * big[((nc * bz + sz as usize) * by + sy as usize) * bx
                                        + sx as usize];
                            }
                        }
                        o += 1;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn strided_kernels_match_the_definition_and_are_adjoint() {
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum::<f64>()
        };
        for s in [
            StridedShape::down(2, 3, [6, 7, 8], 3),
            StridedShape::up(1, 2, [3, 4, 5], 3),
            StridedShape::down(1, 2, [5, 9, 6], 5),
            StridedShape::up(2, 1, [2, 3, 4], 5),
            StridedShape::down(1, 1, [1, 1, 2], 3),
        ] {
            let (k3, nb, ns) = (s.c * s.k.pow(3), s.big_len(), s.small_len());
            let (big, small, w) = (values(nb, 1), values(ns, 2), values(k3, 3));
            let mut g = vec![0.0; ns];
            assert!(strided_gather(&big, &w, None, s, &mut g), "{s:?}");
            close(&g, &naive_gather(&big, &w, s), 1e-5);
            // The scatter is the gather's adjoint: ⟨gather(big), small⟩ = ⟨big, scatter(small)⟩.
            let mut sc = vec![0.0; nb];
            assert!(strided_scatter(&small, &w, None, s, &mut sc));
            let lhs = dot(&g, &small);
            assert!(
                (lhs - dot(&big, &sc)).abs() < 1e-4 * (1.0 + lhs.abs()),
                "{s:?}"
            );
            // …and linear in w with gradient ⟨small, ∂gather/∂w⟩ = dw.
            let mut dw = vec![0.0; k3];
            assert!(strided_weight_grad(&big, &small, s, &mut dw));
            assert!(
                (lhs - dot(&w, &dw)).abs() < 1e-4 * (1.0 + lhs.abs()),
                "{s:?}"
            );
            // A bias fills the output before the taps add up.
            let b = values(s.c, 4);
            let mut gb = vec![0.0; ns];
            strided_gather(&big, &w, Some(&b), s, &mut gb);
            let per = ns / (s.n * s.c);
            for (i, (x, y)) in gb.iter().zip(&g).enumerate() {
                assert!((x - y - b[i / per % s.c]).abs() < 1e-5);
            }
            let mut sums = vec![0.0; s.c];
            assert!(channel_sums(&small, s.n, s.c, &mut sums));
            let direct: f32 = small.iter().sum();
            assert!((sums.iter().sum::<f32>() - direct).abs() < 1e-3);
        }
        let s = StridedShape::down(1, 1, [4, 4, 4], 3);
        assert_eq!(s.small, [2, 2, 2]);
        assert_eq!(StridedShape::up(1, 1, [2, 2, 2], 3).big, [3, 3, 3]);
        assert!(!strided_gather(
            &[0.0; 63],
            &[0.0; 27],
            None,
            s,
            &mut [0.0; 8]
        ));
        assert!(!strided_scatter(
            &[0.0; 8],
            &[0.0; 26],
            None,
            s,
            &mut [0.0; 64]
        ));
        assert!(!channel_sums(&[0.0; 5], 1, 2, &mut [0.0; 2]));
    }

    #[test]
    fn depthwise_matches_the_definition_and_its_gradients_are_adjoint() {
        for s in [
            DepthwiseShape {
                n: 2,
                c: 3,
                dims: [4, 5, 7],
                k: 3,
            },
            DepthwiseShape {
                n: 1,
                c: 2,
                dims: [3, 6, 9],
                k: 5,
            },
            DepthwiseShape {
                n: 1,
                c: 1,
                dims: [1, 1, 2],
                k: 3,
            },
        ] {
            let (len, k3) = (s.n * s.c * s.volume(), s.c * s.k.pow(3));
            let (x, w, b) = (values(len, 1), values(k3, 2), values(s.c, 3));
            let mut out = vec![0.0; len];
            assert!(depthwise_forward(&x, &w, Some(&b), s, &mut out));
            close(&out, &naive_depthwise(&x, &w, &b, s), 1e-5);
            // ⟨conv(x), g⟩ = ⟨x, dx⟩ and = ⟨w, dw⟩ + ⟨b, db⟩ for the linear map's adjoints.
            let g = values(len, 4);
            let (mut dx, mut dw, mut db) = (vec![0.0; len], vec![0.0; k3], vec![0.0; s.c]);
            assert!(depthwise_backward_input(&g, &w, s, &mut dx));
            assert!(depthwise_backward_weight(&x, &g, s, &mut dw, Some(&mut db)));
            let dot = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| f64::from(*x) * f64::from(*y))
                    .sum::<f64>()
            };
            let mut lin = vec![0.0; len];
            depthwise_forward(&x, &w, None, s, &mut lin);
            let lhs = dot(&lin, &g);
            assert!(
                (lhs - dot(&x, &dx)).abs() < 1e-3 * (1.0 + lhs.abs()),
                "input adjoint"
            );
            assert!(
                (lhs - dot(&w, &dw)).abs() < 1e-3 * (1.0 + lhs.abs()),
                "weight adjoint"
            );
            let ones_out = naive_depthwise(&vec![0.0; len], &vec![0.0; k3], &vec![1.0; s.c], s);
            assert!(
                (dot(&ones_out, &g) - dot(&vec![1.0; s.c], &db)).abs() < 1e-3 * (1.0 + lhs.abs())
            );
        }
        // Bad lengths are refused, not a panic.
        let s = DepthwiseShape {
            n: 1,
            c: 1,
            dims: [2, 2, 2],
            k: 3,
        };
        assert!(!depthwise_forward(
            &[0.0; 7],
            &[0.0; 27],
            None,
            s,
            &mut [0.0; 7]
        ));
    }

    #[test]
    fn pointwise_matches_the_definition_and_its_gradients_are_adjoint() {
        let s = PointwiseShape {
            n: 2,
            ci: 3,
            co: 5,
            v: 2 * BLOCK + 17,
        };
        let (x, w, b) = (
            values(s.n * s.ci * s.v, 1),
            values(s.co * s.ci, 2),
            values(s.co, 3),
        );
        let mut out = vec![0.0; s.n * s.co * s.v];
        assert!(pointwise_forward(&x, &w, Some(&b), s, &mut out));
        for n in 0..s.n {
            for o in 0..s.co {
                for v in [0, 5, BLOCK, s.v - 1] {
                    let want: f32 = b[o]
                        + (0..s.ci)
                            .map(|i| w[o * s.ci + i] * x[(n * s.ci + i) * s.v + v])
                            .sum::<f32>();
                    close(&[out[(n * s.co + o) * s.v + v]], &[want], 1e-5);
                }
            }
        }
        let g = values(out.len(), 4);
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; s.co]);
        assert!(pointwise_backward_input(&g, &w, s, &mut dx));
        assert!(pointwise_backward_weight(&x, &g, s, &mut dw, Some(&mut db)));
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum::<f64>()
        };
        let mut lin = vec![0.0; out.len()];
        pointwise_forward(&x, &w, None, s, &mut lin);
        let lhs = dot(&lin, &g);
        assert!((lhs - dot(&x, &dx)).abs() < 1e-3 * (1.0 + lhs.abs()));
        assert!((lhs - dot(&w, &dw)).abs() < 1e-3 * (1.0 + lhs.abs()));
        let gsum: f64 = (0..s.co)
            .map(|o| {
                (0..s.n)
                    .map(|n| {
                        g[(n * s.co + o) * s.v..][..s.v]
                            .iter()
                            .map(|&v| f64::from(v))
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    - f64::from(db[o])
            })
            .map(f64::abs)
            .sum();
        assert!(gsum < 1e-2);
        assert!(!pointwise_forward(
            &x,
            &w,
            None,
            PointwiseShape { v: 3, ..s },
            &mut out
        ));
    }

    #[test]
    fn gelu_matches_libm_erf_and_its_derivative() {
        let xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 6e-4).collect();
        let (mut y, mut d) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
        let ones = vec![1.0; xs.len()];
        assert!(gelu_forward(&xs, &mut y));
        assert!(gelu_backward(&xs, &ones, &mut d));
        // Errors relative to max(1, |x|), the scale of both values.
        let (mut ey, mut ed) = (0.0f64, 0.0f64);
        for ((&x, &y), &d) in xs.iter().zip(&y).zip(&d) {
            let x64 = f64::from(x);
            let cdf = 0.5 * (1.0 + libm::erf(x64 / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let scale = x64.abs().max(1.0);
            ey = ey.max((f64::from(y) - x64 * cdf).abs() / scale);
            ed = ed.max((f64::from(d) - (cdf + x64 * pdf)).abs() / scale);
        }
        assert!(
            ey < 4e-7 && ed < 4e-7,
            "max errors: gelu {ey:e}, gelu' {ed:e}"
        );
        // Far tails: exactly x above, a vanishing value (not NaN) below; NaN stays NaN.
        let tails = [-200.0f32, -30.0, 30.0, 200.0, f32::NAN];
        let mut out = [0.0; 5];
        assert!(gelu_forward(&tails, &mut out));
        assert_eq!(&out[2..4], &[30.0, 200.0]);
        assert!(out[..2].iter().all(|v| v.abs() < 1e-30) && out[4].is_nan());
        assert!(!gelu_forward(&tails, &mut [0.0; 4]));
        assert!(!gelu_backward(&tails, &tails, &mut [0.0; 4]));
    }

    #[test]
    fn the_fused_pointwise_gelu_equals_its_two_steps() {
        let s = PointwiseShape {
            n: 2,
            ci: 4,
            co: 6,
            v: BLOCK + 33,
        };
        let (x, w, b) = (
            values(s.n * s.ci * s.v, 5),
            values(s.co * s.ci, 6),
            values(s.co, 7),
        );
        let (mut pre, mut out) = (vec![0.0; s.n * s.co * s.v], vec![0.0; s.n * s.co * s.v]);
        assert!(pointwise_gelu_forward(
            &x,
            &w,
            Some(&b),
            s,
            &mut pre,
            &mut out
        ));
        let (mut want_pre, mut want) = (vec![0.0; pre.len()], vec![0.0; pre.len()]);
        assert!(pointwise_forward(&x, &w, Some(&b), s, &mut want_pre));
        assert!(gelu_forward(&want_pre, &mut want));
        assert_eq!((pre, out), (want_pre, want));
    }

    #[test]
    fn group_norm_matches_the_definition_and_finite_differences() {
        let s = NormShape {
            n: 2,
            c: 4,
            groups: 2,
            v: 30,
        };
        let (x, gamma, beta) = (values(s.n * s.c * s.v, 1), values(s.c, 2), values(s.c, 3));
        let eps = 1e-5;
        let mut out = vec![0.0; x.len()];
        assert!(group_norm_forward(&x, &gamma, &beta, s, eps, &mut out));
        // Direct definition for one sample and group.
        let grp = &x[60..120];
        let mean: f32 = grp.iter().sum::<f32>() / 60.0;
        let var: f32 = grp.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 60.0;
        let want = (x[61] - mean) / (var + 1e-5).sqrt() * gamma[2] + beta[2];
        close(&[out[61]], &[want], 1e-4);
        // Gradients of L = Σ out·g against central differences.
        let g = values(x.len(), 4);
        let loss = |x: &[f32], gm: &[f32], bt: &[f32]| {
            let mut o = vec![0.0; x.len()];
            group_norm_forward(x, gm, bt, s, eps, &mut o);
            o.iter()
                .zip(&g)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum::<f64>()
        };
        let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; s.c], vec![0.0; s.c]);
        assert!(group_norm_backward(
            &x,
            &gamma,
            &g,
            s,
            eps,
            (&mut dx, &mut dg, &mut db)
        ));
        let h = 1e-2f32;
        for i in [0, 7, 65, 200] {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[i] += h;
            b[i] -= h;
            let fd = (loss(&a, &gamma, &beta) - loss(&b, &gamma, &beta)) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(dx[i])).abs() < 2e-2 * (1.0 + fd.abs()),
                "dx[{i}] {} vs {fd}",
                dx[i]
            );
        }
        for c in 0..s.c {
            let (mut a, mut b) = (gamma.clone(), gamma.clone());
            a[c] += h;
            b[c] -= h;
            let fd = (loss(&x, &a, &beta) - loss(&x, &b, &beta)) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(dg[c])).abs() < 2e-2 * (1.0 + fd.abs()),
                "dgamma"
            );
            let (mut a, mut b) = (beta.clone(), beta.clone());
            a[c] += h;
            b[c] -= h;
            let fd = (loss(&x, &gamma, &a) - loss(&x, &gamma, &b)) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(db[c])).abs() < 2e-2 * (1.0 + fd.abs()),
                "dbeta"
            );
        }
        assert!(!group_norm_forward(
            &x,
            &gamma,
            &beta,
            NormShape { groups: 3, ..s },
            eps,
            &mut out
        ));
    }
}
