//! Synthetic EM-like volumes, seeded and built in (no download): densely packed irregular
//! cells separated by dark membranes, with intracellular texture, blur and noise.

use ndarray::{Array3, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// An image in [0, 1] and its segmentation.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthVolume {
    /// Intensities `(Z, Y, X)`.
    pub image: Array3<f32>,
    /// Labels `(Z, Y, X)` (cells numbered from 1).
    pub labels: Array3<u32>,
}

/// Settings of [`neurons`].
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronSettings {
    /// Mean cell spacing in-plane, voxels.
    pub cell_size: f32,
    /// z voxel size relative to y/x (anisotropy of serial sections, e.g. 4 for 40 vs 10 nm).
    pub z_anisotropy: f32,
    /// Membrane half-thickness in-plane, voxels.
    pub membrane: f32,
    /// Amplitude of the boundary warping (voxels): higher is more irregular.
    pub warp: f32,
    /// Gaussian noise σ added last.
    pub noise: f32,
}

impl Default for NeuronSettings {
    fn default() -> Self {
        Self {
            cell_size: 24.0,
            z_anisotropy: 2.0,
            membrane: 1.2,
            warp: 6.0,
            noise: 0.06,
        }
    }
}

/// Densely packed neuron-like cells (a warped Voronoi partition with random cell weights),
/// membranes dark, interiors of varying brightness with texture; deterministic per seed.
pub fn neurons(shape: [usize; 3], seed: u64, s: &NeuronSettings) -> SynthVolume {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let [nz, ny, nx] = shape;
    let step = s.cell_size.max(2.0);
    // Seeds on a jittered grid in physical units (z scaled by anisotropy).
    let extent = [nz as f32 * s.z_anisotropy, ny as f32, nx as f32];
    let g = extent.map(|e| ((e / step).ceil() as usize).max(1));
    let mut seeds = Vec::with_capacity(g[0] * g[1] * g[2]);
    for i in 0..g[0] {
        for j in 0..g[1] {
            for k in 0..g[2] {
                let p = [i, j, k].map(|v| (v as f32 + rng.random_range(0.1..0.9)) * step);
                let weight = rng.random_range(0.0..0.35) * step * step;
                seeds.push((p, weight));
            }
        }
    }
    // Smooth warp fields make the boundaries wavy rather than planar.
    let warp = |rng: &mut ChaCha8Rng| smooth_noise(shape, step / 3.0, rng);
    let (wz, wy, wx) = (warp(&mut rng), warp(&mut rng), warp(&mut rng));
    let cell = |p: [f32; 3]| -> usize {
        let c = p.map(|v| (v / step).floor() as i64);
        let mut best = (f32::INFINITY, 0usize);
        for di in -1..=1 {
            for dj in -1..=1 {
                for dk in -1..=1 {
                    let (i, j, k) = (c[0] + di, c[1] + dj, c[2] + dk);
                    if i < 0
                        || j < 0
                        || k < 0
                        || i >= g[0] as i64
                        || j >= g[1] as i64
                        || k >= g[2] as i64
                    {
                        continue;
                    }
                    let idx = (i as usize * g[1] + j as usize) * g[2] + k as usize;
                    let (q, w) = seeds[idx];
                    let d = (0..3).map(|a| (p[a] - q[a]).powi(2)).sum::<f32>() - w;
                    if d < best.0 {
                        best = (d, idx);
                    }
                }
            }
        }
        best.1
    };
    let mut raw = Array3::<u32>::zeros((nz, ny, nx));
    for ((z, y, x), v) in raw.indexed_iter_mut() {
        let p = [
            (z as f32 + 0.5) * s.z_anisotropy + s.warp * wz[[z, y, x]],
            y as f32 + 0.5 + s.warp * wy[[z, y, x]],
            x as f32 + 0.5 + s.warp * wx[[z, y, x]],
        ];
        *v = cell(p) as u32 + 1;
    }
    // Number cells 1..=K in order of first appearance.
    let mut map = std::collections::HashMap::new();
    let labels = raw.mapv(|v| {
        let n = map.len() as u32 + 1;
        *map.entry(v).or_insert(n)
    });

    // Membranes: in-plane distance to a label change, as a soft profile.
    let r = s.membrane.ceil() as i64;
    let mut image = Array3::<f32>::zeros((nz, ny, nx));
    let brightness: Vec<f32> = (0..=map.len())
        .map(|_| rng.random_range(0.55..0.85))
        .collect();
    let texture = smooth_noise(shape, 1.5, &mut rng);
    for ((z, y, x), v) in image.indexed_iter_mut() {
        let l = labels[[z, y, x]];
        let mut d2 = f32::INFINITY;
        for dy in -r..=r {
            for dx in -r..=r {
                let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                if yy < 0 || xx < 0 || yy >= ny as i64 || xx >= nx as i64 {
                    continue;
                }
                if labels[[z, yy as usize, xx as usize]] != l {
                    d2 = d2.min((dy * dy + dx * dx) as f32);
                }
            }
        }
        let membrane = (-d2 / (2.0 * s.membrane * s.membrane)).exp();
        let interior = brightness[l as usize] + 0.12 * texture[[z, y, x]];
        *v = interior * (1.0 - 0.8 * membrane) + 0.12 * membrane;
    }
    blur_plane(&mut image, 0.8);
    for v in image.iter_mut() {
        *v = (*v + s.noise * normal(&mut rng)).clamp(0.0, 1.0);
    }
    SynthVolume { image, labels }
}

/// Smooth noise with unit-ish amplitude: white noise blurred in-plane and along z.
fn smooth_noise(shape: [usize; 3], sigma: f32, rng: &mut ChaCha8Rng) -> Array3<f32> {
    let [nz, ny, nx] = shape;
    let mut a = Array3::from_shape_fn((nz, ny, nx), |_| rng.random_range(-1.0f32..1.0));
    blur_plane(&mut a, sigma);
    blur_axis(&mut a, Axis(0), (sigma / 2.0).max(0.5));
    let sd = (a.iter().map(|v| v * v).sum::<f32>() / a.len().max(1) as f32).sqrt();
    if sd > 0.0 {
        a.mapv_inplace(|v| v / sd);
    }
    a
}

fn blur_plane(a: &mut Array3<f32>, sigma: f32) {
    blur_axis(a, Axis(1), sigma);
    blur_axis(a, Axis(2), sigma);
}

/// Gaussian blur along one axis, edges clamped.
fn blur_axis(a: &mut Array3<f32>, axis: Axis, sigma: f32) {
    let r = (3.0 * sigma).ceil() as i64;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    let n = a.len_of(axis) as i64;
    for mut lane in a.lanes_mut(axis) {
        let src = lane.to_vec();
        for (i, v) in lane.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (j, w) in k.iter().enumerate() {
                let p = (i as i64 + j as i64 - r).clamp(0, n - 1) as usize;
                acc += w * src[p];
            }
            *v = acc / sum;
        }
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_dense_distinct_and_reproducible() {
        let s = NeuronSettings::default();
        let a = neurons([8, 64, 64], 3, &s);
        assert_eq!(a, neurons([8, 64, 64], 3, &s));
        assert_ne!(a.image, neurons([8, 64, 64], 4, &s).image);
        let k = *a.labels.iter().max().unwrap();
        assert!((4..200).contains(&k), "{k} cells");
        assert!(a.labels.iter().all(|&l| l >= 1));
        assert!(a.image.iter().all(|v| (0.0..=1.0).contains(v)));
        // Membranes are darker than interiors: boundary voxels average lower.
        let (mut edge, mut inner) = ((0.0, 0), (0.0, 0));
        for ((z, y, x), &l) in a.labels.indexed_iter() {
            if y + 1 < 64 && x + 1 < 64 {
                let b = a.labels[[z, y + 1, x]] != l || a.labels[[z, y, x + 1]] != l;
                let t = if b { &mut edge } else { &mut inner };
                t.0 += a.image[[z, y, x]];
                t.1 += 1;
            }
        }
        let (e, i) = (edge.0 / (edge.1 as f32), inner.0 / (inner.1 as f32));
        assert!(e + 0.15 < i, "membranes {e}, interiors {i}");
    }
}
