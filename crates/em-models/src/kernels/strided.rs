//! The stride-2 depthwise convolution (MedNeXt's down blocks), its transpose (up blocks)
//! and their kernel gradient, and per-channel sums (bias gradients).

use rayon::prelude::*;

#[allow(unused_imports)]
use super::*;

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

    pub(super) fn small_len(&self) -> usize {
        self.n * self.c * self.small.iter().product::<usize>()
    }

    pub(super) fn big_len(&self) -> usize {
        self.n * self.c * self.big.iter().product::<usize>()
    }

    pub(super) fn check(&self, small: usize, big: usize, w: usize) -> bool {
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
    pub(super) fn rows(&self, mut f: impl FnMut(usize, usize, usize)) {
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
    pub(super) fn x_taps(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
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
