//! The exact (erf) GELU and its derivative, vectorisable.

use rayon::prelude::*;

#[allow(unused_imports)]
use super::*;

/// `e^x` in float32 without a libm call, so that loops over it vectorise: `2^k · p(r)` with
/// `x = k ln 2 + r`, `|r| ≤ ln 2 / 2`, `p` the degree-7 Taylor polynomial (relative error
/// below 2e-7 on [-87, 88]; inputs beyond are clamped).
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
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
pub(super) fn normal_cdf_pdf(x: f32) -> (f32, f32) {
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

pub(super) fn gelu_rows(pre: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(pre) {
        *o = x * normal_cdf_pdf(x).0;
    }
}

/// Elements per parallel task of the element-wise kernels.
pub(super) const CHUNK: usize = 1 << 14;

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
