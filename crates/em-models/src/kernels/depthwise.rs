//! The depthwise `k×k×k` convolution (stride 1, zero "same" padding) and its gradients,
//! streaming over contiguous rows so that the inner loops vectorise.

use rayon::prelude::*;

#[allow(unused_imports)]
use super::*;

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
    pub(super) fn volume(&self) -> usize {
        self.dims.iter().product()
    }

    pub(super) fn check(&self, x: usize, w: usize) -> bool {
        self.k % 2 == 1 && x == self.n * self.c * self.volume() && w == self.c * self.k.pow(3)
    }
}

/// Adds `wv · src[x + off]` to `dst[x]` for every `x` where `x + off` is inside the row.
#[inline(always)]
pub(super) fn axpy_shifted(dst: &mut [f32], src: &[f32], wv: f32, off: isize) {
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
pub(super) fn dot_shifted(a: &[f32], src: &[f32], off: isize) -> f32 {
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
pub(super) fn depthwise_volume(
    x: &[f32],
    w: &[f32],
    bias: f32,
    dims: [usize; 3],
    k: usize,
    out: &mut [f32],
) {
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
