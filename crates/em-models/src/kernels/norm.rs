//! Group normalisation and its gradients.

use rayon::prelude::*;

#[allow(unused_imports)]
use super::*;

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
    pub(super) fn check(&self, x: usize, gamma: usize) -> bool {
        self.groups > 0
            && self.c.is_multiple_of(self.groups)
            && x == self.n * self.c * self.v
            && gamma == self.c
            && self.v > 0
    }
}

/// Mean and `1 / sqrt(var + eps)` of one group (float64 sums: groups hold up to millions
/// of voxels).
pub(super) fn group_stats(x: &[f32], eps: f64) -> (f32, f32) {
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
