//! The pointwise `1×1×1` convolution and its gradients as matrix products per block of
//! voxels through the `gemm` crate.

use rayon::prelude::*;

#[allow(unused_imports)]
use super::*;

/// Pointwise tasks take between `BLOCK / 8` and `8 · BLOCK` voxels. Tasks of at most `BLOCK`
/// ran single kernels 10–20% faster in `benches/kernels.rs` but a whole MedNeXt-S step 5–8%
/// slower: the wide layers pack their weights again for every task.
pub(super) const BLOCK: usize = 2048;

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
pub(super) unsafe fn sgemm_acc(
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
pub(super) fn pointwise_columns(n: usize, v: usize) -> usize {
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
pub(super) fn matmul_rows(
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
pub(super) struct SyncPtr(*mut f32);
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
