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

mod depthwise;
mod gelu;
mod norm;
mod pointwise;
mod strided;

pub use depthwise::*;
pub use gelu::*;
pub use norm::*;
pub use pointwise::*;
pub use strided::*;

#[cfg(test)]
mod tests {
    use super::pointwise::BLOCK;
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
