//! Geometric transforms: they move the image and every label and mask volume together
//! (linear interpolation for the image, nearest for the rest; reflection at the borders).

use ndarray::{Array3, ArrayView3, Axis};

/// An element that can be resampled: nearest by default, linear for floats.
pub(crate) trait Voxel: Copy + Default + Send + Sync {
    /// Value at a fractional position (already reflected into the volume).
    fn sample(a: &[Self], dims: (usize, usize, usize), z: f32, y: f32, x: f32) -> Self {
        let (_, ny, nx) = dims;
        let (iz, iy, ix) = (
            z.round() as usize,
            y.round() as usize,
            x.round() as usize,
        );
        a[(iz * ny + iy) * nx + ix]
    }
}

impl Voxel for u8 {}
impl Voxel for u32 {}
impl Voxel for f32 {
    fn sample(a: &[f32], dims: (usize, usize, usize), z: f32, y: f32, x: f32) -> f32 {
        let (nz, ny, nx) = dims;
        let (z0, y0, x0) = (z.floor(), y.floor(), x.floor());
        let (wz, wy, wx) = (z - z0, y - y0, x - x0);
        let (z0, y0, x0) = (z0 as usize, y0 as usize, x0 as usize);
        let (z1, y1, x1) = ((z0 + 1).min(nz - 1), (y0 + 1).min(ny - 1), (x0 + 1).min(nx - 1));
        let at = |z: usize, y: usize, x: usize| a[(z * ny + y) * nx + x];
        let lerp = |a: f32, b: f32, w: f32| a + (b - a) * w;
        let plane = |z: usize| {
            lerp(
                lerp(at(z, y0, x0), at(z, y0, x1), wx),
                lerp(at(z, y1, x0), at(z, y1, x1), wx),
                wy,
            )
        };
        if wz == 0.0 {
            plane(z0)
        } else {
            lerp(plane(z0), plane(z1), wz)
        }
    }
}

/// Mirror a coordinate into `[0, n − 1]` (reflection about the edge voxels' centres).
pub(crate) fn reflect(c: f32, n: usize) -> f32 {
    if n <= 1 {
        return 0.0;
    }
    let m = (n - 1) as f32;
    let period = 2.0 * m;
    let mut c = c.abs() % period;
    if c > m {
        c = period - c;
    }
    c.clamp(0.0, m)
}

/// A standard-layout copy of a view (flips and transposes leave odd strides).
pub(crate) fn owned<T: Clone>(v: ArrayView3<'_, T>) -> Array3<T> {
    v.as_standard_layout().into_owned()
}

/// Flips the listed axes (0 = z).
pub(crate) fn flip<T: Clone>(a: &Array3<T>, axes: &[usize]) -> Array3<T> {
    let mut v = a.view();
    for &ax in axes {
        v.invert_axis(Axis(ax));
    }
    owned(v)
}

/// Rotates by `k` quarter turns in the plane of axes `(p, q)` (numpy's `rot90` convention:
/// the first turn takes the `q` direction to `p`).
pub(crate) fn rot90<T: Clone>(a: &Array3<T>, p: usize, q: usize, k: usize) -> Array3<T> {
    let mut v = a.view();
    for _ in 0..k % 4 {
        v.invert_axis(Axis(q));
        v.swap_axes(p, q);
    }
    owned(v)
}

/// Permutes the spatial axes: output axis i is input axis `perm[i]`.
pub(crate) fn permute<T: Clone>(a: &Array3<T>, perm: [usize; 3]) -> Array3<T> {
    owned(a.view().permuted_axes(perm))
}

/// Resamples `a` at `map(z, y, x)` for every output voxel (coordinates reflected into the
/// volume); `map` gets output coordinates and returns input coordinates.
pub(crate) fn warp<T: Voxel>(
    a: &Array3<T>,
    map: &(dyn Fn(f32, f32, f32) -> (f32, f32, f32) + Sync),
) -> Array3<T> {
    let dims = a.dim();
    let src = a.as_slice().expect("standard layout");
    let mut out = Array3::<T>::default(dims);
    let (nz, ny, nx) = dims;
    let dst = out.as_slice_mut().expect("fresh array");
    for z in 0..nz {
        for y in 0..ny {
            let row = &mut dst[(z * ny + y) * nx..(z * ny + y + 1) * nx];
            for (x, v) in row.iter_mut().enumerate() {
                let (fz, fy, fx) = map(z as f32, y as f32, x as f32);
                *v = T::sample(
                    src,
                    dims,
                    reflect(fz, nz),
                    reflect(fy, ny),
                    reflect(fx, nx),
                );
            }
        }
    }
    out
}

/// Resamples every section in-plane with the same displacement field `(dy, dx)` per `(y, x)`.
pub(crate) fn warp_plane<T: Voxel>(a: &Array3<T>, dy: &[f32], dx: &[f32]) -> Array3<T> {
    let (_, ny, nx) = a.dim();
    let map = move |z: f32, y: f32, x: f32| {
        let i = y as usize * nx + x as usize;
        (z, y + dy[i], x + dx[i])
    };
    debug_assert_eq!(dy.len(), ny * nx);
    warp(a, &map)
}

/// A 3×3 matrix times a vector.
pub(crate) fn mat_vec(m: &[[f32; 3]; 3], v: [f32; 3]) -> [f32; 3] {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}

/// A 3×3 matrix product.
pub(crate) fn mat_mul(a: &[[f32; 3]; 3], b: &[[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let mut m = [[0f32; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

/// Rotation by `angle` radians in the plane of axes `(p, q)`.
pub(crate) fn rotation(p: usize, q: usize, angle: f32) -> [[f32; 3]; 3] {
    let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let (s, c) = angle.sin_cos();
    m[p][p] = c;
    m[p][q] = -s;
    m[q][p] = s;
    m[q][q] = c;
    m
}

/// Resamples with input = `m · (output − centre) + centre`.
pub(crate) fn affine<T: Voxel>(a: &Array3<T>, m: &[[f32; 3]; 3]) -> Array3<T> {
    let (nz, ny, nx) = a.dim();
    let c = [
        (nz as f32 - 1.0) / 2.0,
        (ny as f32 - 1.0) / 2.0,
        (nx as f32 - 1.0) / 2.0,
    ];
    let m = *m;
    let map = move |z: f32, y: f32, x: f32| {
        let v = mat_vec(&m, [z - c[0], y - c[1], x - c[2]]);
        (v[0] + c[0], v[1] + c[1], v[2] + c[2])
    };
    warp(a, &map)
}

/// Separable Gaussian smoothing of a 2-D field `(ny, nx)` with reflection at the borders.
pub(crate) fn gaussian_2d(field: &mut [f32], ny: usize, nx: usize, sigma: f32) {
    let k = gaussian_kernel(sigma);
    let r = k.len() / 2;
    let mut tmp = vec![0f32; field.len()];
    for y in 0..ny {
        for x in 0..nx {
            let mut s = 0.0;
            for (i, w) in k.iter().enumerate() {
                let xx = reflect(x as f32 + i as f32 - r as f32, nx) as usize;
                s += w * field[y * nx + xx];
            }
            tmp[y * nx + x] = s;
        }
    }
    for y in 0..ny {
        for x in 0..nx {
            let mut s = 0.0;
            for (i, w) in k.iter().enumerate() {
                let yy = reflect(y as f32 + i as f32 - r as f32, ny) as usize;
                s += w * tmp[yy * nx + x];
            }
            field[y * nx + x] = s;
        }
    }
}

/// A normalised Gaussian kernel of radius ⌈3σ⌉.
pub(crate) fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// Shifts one section `z` by whole voxels `(dy, dx)` (content moves by +d), replicating the
/// edge into the revealed strip; returns the revealed strip as a mask when asked.
pub(crate) fn shift_section<T: Copy>(a: &mut Array3<T>, z: usize, dy: i64, dx: i64) {
    let (_, ny, nx) = a.dim();
    let src = a.index_axis(Axis(0), z).to_owned();
    let mut dst = a.index_axis_mut(Axis(0), z);
    for y in 0..ny {
        let sy = (y as i64 - dy).clamp(0, ny as i64 - 1) as usize;
        for x in 0..nx {
            let sx = (x as i64 - dx).clamp(0, nx as i64 - 1) as usize;
            dst[[y, x]] = src[[sy, sx]];
        }
    }
}

/// Whether voxel `(y, x)` of a section shifted by `(dy, dx)` shows replicated edge content.
pub(crate) fn revealed(y: usize, x: usize, dy: i64, dx: i64, ny: usize, nx: usize) -> bool {
    let (sy, sx) = (y as i64 - dy, x as i64 - dx);
    sy < 0 || sx < 0 || sy >= ny as i64 || sx >= nx as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rot90_matches_numpy_convention() {
        // numpy: rot90([[1, 2], [3, 4]]) == [[2, 4], [1, 3]]
        let a = Array3::from_shape_vec((1, 2, 2), vec![1, 2, 3, 4]).unwrap();
        let r = rot90(&a, 1, 2, 1);
        assert_eq!(r.as_slice().unwrap(), &[2, 4, 1, 3]);
        assert_eq!(rot90(&a, 1, 2, 4), a);
        assert_eq!(rot90(&rot90(&a, 1, 2, 1), 1, 2, 3), a);
    }

    #[test]
    fn reflection_mirrors_about_edge_centres() {
        assert_eq!(reflect(-1.0, 5), 1.0);
        assert_eq!(reflect(5.0, 5), 3.0);
        assert_eq!(reflect(9.0, 5), 1.0);
        assert_eq!(reflect(2.5, 5), 2.5);
        assert_eq!(reflect(7.0, 1), 0.0);
    }

    #[test]
    fn identity_affine_keeps_values() {
        let a = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (z * 20 + y * 5 + x) as f32);
        let i = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(affine(&a, &i), a);
    }
}
