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
pub struct NeuronOptions {
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

impl Default for NeuronOptions {
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
pub fn neurons(shape: [usize; 3], seed: u64, s: &NeuronOptions) -> SynthVolume {
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

/// The best foreground IoU a plain intensity threshold reaches (`image < t`, t swept over
/// 100 levels) and its threshold: the baseline a trained model must beat.
pub fn threshold_baseline_iou(image: &Array3<f32>, labels: &Array3<u32>) -> (f32, f32) {
    let mut best = (0.0f32, 0.0f32);
    for i in 1..100 {
        let t = i as f32 / 100.0;
        let iou = threshold_iou(image, labels, t);
        if iou > best.0 {
            best = (iou, t);
        }
    }
    best
}

/// Foreground IoU of `image < t` against `labels ≠ 0` (apply a threshold tuned on one
/// volume to another).
pub fn threshold_iou(image: &Array3<f32>, labels: &Array3<u32>, t: f32) -> f32 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&v, &l) in image.iter().zip(labels.iter()) {
        let (p, g) = (v < t, l != 0);
        inter += usize::from(p && g);
        union += usize::from(p || g);
    }
    if union == 0 {
        0.0
    } else {
        inter as f32 / union as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mitochondria_are_not_thresholdable() {
        let v = mitochondria([12, 96, 96], 5, &MitoOptions::default());
        assert_eq!(v, mitochondria([12, 96, 96], 5, &MitoOptions::default()));
        let fg = v.labels.iter().filter(|&&l| l != 0).count() as f32 / v.labels.len() as f32;
        assert!((0.03..0.3).contains(&fg), "foreground fraction {fg}");
        let (iou, t) = threshold_baseline_iou(&v.image, &v.labels);
        assert!(iou < 0.6, "a threshold at {t} already reaches IoU {iou}");
        assert!(
            iou > 0.1,
            "organelles should still be darker on average ({iou})"
        );
    }

    #[test]
    fn section_skeletons_follow_cells_through_z() {
        let v = neurons([6, 32, 32], 1, &NeuronOptions::default());
        let (nodes, edges) = section_skeletons(&v.labels);
        assert!(!nodes.is_empty() && !edges.is_empty());
        for [a, b] in edges {
            assert_eq!(nodes[a].0, nodes[b].0);
            assert_eq!(nodes[a].1[0] + 1.0, nodes[b].1[0]);
        }
    }

    #[test]
    fn cells_are_dense_distinct_and_reproducible() {
        let s = NeuronOptions::default();
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

/// Settings of [`mitochondria`].
#[derive(Clone, Debug, PartialEq)]
pub struct MitoOptions {
    /// Organelles per 10⁶ voxels.
    pub density: f32,
    /// Tube radius range in-plane (voxels).
    pub radius: [f32; 2],
    /// Tube length range (voxels, in-plane units).
    pub length: [f32; 2],
    /// z voxel size relative to y/x.
    pub z_anisotropy: f32,
    /// Dark vesicles (distractors) per 10⁶ voxels.
    pub vesicles: f32,
    /// Gaussian noise σ added last.
    pub noise: f32,
}

impl Default for MitoOptions {
    fn default() -> Self {
        Self {
            density: 8.0,
            radius: [8.0, 14.0],
            length: [24.0, 80.0],
            z_anisotropy: 2.0,
            vesicles: 300.0,
            noise: 0.07,
        }
    }
}

/// Mitochondria-like organelles in neuropil: tubes and ellipsoids (capsules) with a dark
/// double membrane and striped cristae inside, among cell membranes and dark vesicles of
/// the same grey levels, so that intensity alone does not separate them; binary labels
/// (1 = mitochondrion). Deterministic per seed.
pub fn mitochondria(shape: [usize; 3], seed: u64, s: &MitoOptions) -> SynthVolume {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_746f);
    let [nz, ny, nx] = shape;
    // Neuropil: cells with membranes, at lower contrast, as the background.
    let cells = neurons(
        shape,
        seed,
        &NeuronOptions {
            cell_size: 40.0,
            z_anisotropy: s.z_anisotropy,
            membrane: 1.0,
            warp: 8.0,
            noise: 0.0,
        },
    );
    // Cell membranes reach the organelles' grey levels, and about a third of the cells
    // (dark dendrites, glia) have cytoplasm as dark as mitochondria: intensity alone
    // cannot tell them apart, shape and texture can.
    let ncells = cells.labels.iter().copied().max().unwrap_or(0) as usize;
    let dark: Vec<bool> = (0..=ncells).map(|_| rng.random_bool(0.35)).collect();
    let mut image = ndarray::Zip::from(&cells.image)
        .and(&cells.labels)
        .map_collect(|&v, &l| {
            if dark[l as usize] {
                0.12 + 0.45 * v
            } else {
                0.3 + 0.65 * v
            }
        });
    let mut labels = Array3::<u32>::zeros((nz, ny, nx));
    let voxels = (nz * ny * nx) as f32;
    let za = s.z_anisotropy;
    // Capsules: segment from a to b (physical units, z scaled), radius r.
    let count = ((s.density * voxels / 1e6).round() as usize).max(1);
    for _ in 0..count {
        let r = rng.random_range(s.radius[0]..=s.radius[1]);
        let len = rng.random_range(s.length[0]..=s.length[1]);
        let c = [
            rng.random_range(0.0..nz as f32) * za,
            rng.random_range(0.0..ny as f32),
            rng.random_range(0.0..nx as f32),
        ];
        // Mostly in-plane directions, as mitochondria run along neurites.
        let theta = rng.random_range(0.0..std::f32::consts::TAU);
        let tilt = rng.random_range(-0.5f32..0.5);
        let dir = [
            tilt.sin(),
            tilt.cos() * theta.sin(),
            tilt.cos() * theta.cos(),
        ];
        let a = [0, 1, 2].map(|i| c[i] - dir[i] * len / 2.0);
        let b = [0, 1, 2].map(|i| c[i] + dir[i] * len / 2.0);
        let phase = rng.random_range(0.0..std::f32::consts::TAU);
        let fill = rng.random_range(0.3..0.42);
        let lo = [0, 1, 2].map(|i| a[i].min(b[i]) - r - 1.0);
        let hi = [0, 1, 2].map(|i| a[i].max(b[i]) + r + 1.0);
        let zr = ((lo[0] / za).floor().max(0.0) as usize)
            ..((hi[0] / za).ceil().max(0.0) as usize).min(nz);
        let yr = (lo[1].floor().max(0.0) as usize)..(hi[1].ceil().max(0.0) as usize).min(ny);
        let xr = (lo[2].floor().max(0.0) as usize)..(hi[2].ceil().max(0.0) as usize).min(nx);
        for z in zr.clone() {
            for y in yr.clone() {
                for x in xr.clone() {
                    let p = [z as f32 * za, y as f32, x as f32];
                    let ab = [0, 1, 2].map(|i| b[i] - a[i]);
                    let ap = [0, 1, 2].map(|i| p[i] - a[i]);
                    let t = ((0..3).map(|i| ab[i] * ap[i]).sum::<f32>()
                        / (0..3).map(|i| ab[i] * ab[i]).sum::<f32>().max(1e-6))
                    .clamp(0.0, 1.0);
                    let d = (0..3)
                        .map(|i| (p[i] - (a[i] + t * ab[i])).powi(2))
                        .sum::<f32>()
                        .sqrt();
                    if d <= r {
                        labels[[z, y, x]] = 1;
                        let edge = r - d;
                        // Double membrane: two dark rims; inside, cristae stripes across the
                        // long axis.
                        let v = if edge < 1.0 || (1.8..2.6).contains(&edge) {
                            0.18
                        } else {
                            let stripes = (t * len * 0.8 + phase).sin();
                            fill + 0.12 * stripes
                        };
                        image[[z, y, x]] = v;
                    }
                }
            }
        }
    }
    // Vesicles: small dark-rimmed spheres with mid-grey cores, not labelled.
    let nves = (s.vesicles * voxels / 1e6).round() as usize;
    for _ in 0..nves {
        let r = rng.random_range(1.5f32..3.5);
        let c = [
            rng.random_range(0.0..nz as f32),
            rng.random_range(0.0..ny as f32),
            rng.random_range(0.0..nx as f32),
        ];
        let rz = (r / za).ceil() as i64;
        for dz in -rz..=rz {
            for dy in -(r.ceil() as i64)..=r.ceil() as i64 {
                for dx in -(r.ceil() as i64)..=r.ceil() as i64 {
                    let (z, y, x) = (c[0] as i64 + dz, c[1] as i64 + dy, c[2] as i64 + dx);
                    if z < 0 || y < 0 || x < 0 || z >= nz as i64 || y >= ny as i64 || x >= nx as i64
                    {
                        continue;
                    }
                    let (z, y, x) = (z as usize, y as usize, x as usize);
                    if labels[[z, y, x]] != 0 {
                        continue;
                    }
                    let d = ((dz as f32 * za).powi(2) + (dy * dy + dx * dx) as f32).sqrt();
                    if d <= r {
                        image[[z, y, x]] = if r - d < 1.0 { 0.2 } else { 0.38 };
                    }
                }
            }
        }
    }
    blur_plane(&mut image, 0.7);
    for v in image.iter_mut() {
        *v = (*v + s.noise * normal(&mut rng)).clamp(0.0, 1.0);
    }
    SynthVolume { image, labels }
}

/// A skeleton node: the cell (skeleton id) and its position `(z, y, x)` in voxels.
pub type SkeletonNode = (u32, [f32; 3]);

/// One skeleton node per cell and section (the centroid of the cell's voxels in that
/// section), joined in z order: enough structure for ERL on synthetic neurons. Returns
/// `(nodes [(skeleton id, z, y, x)], edges [(node i, node j)])`.
pub fn section_skeletons(labels: &Array3<u32>) -> (Vec<SkeletonNode>, Vec<[usize; 2]>) {
    let mut sums: std::collections::BTreeMap<(u32, usize), ([f64; 2], f64)> =
        std::collections::BTreeMap::new();
    for ((z, y, x), &l) in labels.indexed_iter() {
        if l != 0 {
            let e = sums.entry((l, z)).or_insert(([0.0; 2], 0.0));
            e.0[0] += y as f64;
            e.0[1] += x as f64;
            e.1 += 1.0;
        }
    }
    let mut nodes = Vec::with_capacity(sums.len());
    let mut edges = Vec::new();
    let mut last: Option<(u32, usize, usize)> = None;
    for ((l, z), (s, n)) in sums {
        let i = nodes.len();
        nodes.push((l, [z as f32, (s[0] / n) as f32, (s[1] / n) as f32]));
        if let Some((pl, pz, pi)) = last {
            if pl == l && pz + 1 == z {
                edges.push([pi, i]);
            }
        }
        last = Some((l, z, i));
    }
    (nodes, edges)
}
