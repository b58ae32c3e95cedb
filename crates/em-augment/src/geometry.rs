//! Geometric transforms: they move the image and every label and mask volume together
//! (linear interpolation for the image, nearest for the rest; reflection at the borders).

use ndarray::{Array3, ArrayView3, Axis};

/// An element that can be resampled: nearest by default, linear for floats.
pub(crate) trait Voxel: crate::pool::Pooled + Default + Send + Sync {
    /// Value at a fractional position (already reflected into the volume).
    #[inline(always)]
    fn sample(a: &[Self], dims: (usize, usize, usize), z: f32, y: f32, x: f32) -> Self {
        // Coordinates are ≥ 0 here: truncation of c + ½ rounds without a libm call (x86-64's
        // baseline has no SSE4.1 `round`).
        let (_, ny, nx) = dims;
        let (iz, iy, ix) = ((z + 0.5) as usize, (y + 0.5) as usize, (x + 0.5) as usize);
        a[(iz * ny + iy) * nx + ix]
    }
}

impl Voxel for u8 {}
impl Voxel for u32 {}
impl Voxel for f32 {
    #[inline(always)]
    fn sample(a: &[f32], dims: (usize, usize, usize), z: f32, y: f32, x: f32) -> f32 {
        let (nz, ny, nx) = dims;
        // Coordinates are ≥ 0 here, so truncation is floor (without a libm call).
        let (z0, y0, x0) = (z as usize, y as usize, x as usize);
        let (wz, wy, wx) = (z - z0 as f32, y - y0 as f32, x - x0 as f32);
        let sx = usize::from(x0 + 1 < nx);
        let sy = if y0 + 1 < ny { nx } else { 0 };
        let i = (z0 * ny + y0) * nx + x0;
        let lerp = |a: f32, b: f32, w: f32| a + (b - a) * w;
        let plane = |i: usize| {
            lerp(
                lerp(a[i], a[i + sx], wx),
                lerp(a[i + sy], a[i + sy + sx], wx),
                wy,
            )
        };
        if wz == 0.0 || z0 + 1 >= nz {
            plane(i)
        } else {
            lerp(plane(i), plane(i + ny * nx), wz)
        }
    }
}

/// Mirror a coordinate into `[0, n − 1]` (reflection about the edge voxels' centres).
#[inline]
pub(crate) fn reflect(c: f32, n: usize) -> f32 {
    let m = n.saturating_sub(1) as f32;
    // Most samples land inside: skip the modulo.
    if (0.0..=m).contains(&c) {
        return c;
    }
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

/// A signed permutation of the three axes: output axis `i` is input axis `perm[i]`,
/// reversed where `flip[i]`. Flips, quarter turns and axis permutations are all of this
/// kind, so a run of them composes into one and the volumes are copied once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ViewOp {
    perm: [usize; 3],
    flip: [bool; 3],
}

impl ViewOp {
    pub(crate) const IDENTITY: Self = Self {
        perm: [0, 1, 2],
        flip: [false; 3],
    };

    /// Mirror the listed axes.
    pub(crate) fn flips(axes: &[usize]) -> Self {
        let mut op = Self::IDENTITY;
        for &a in axes {
            op.flip[a] = !op.flip[a];
        }
        op
    }

    /// Output axis i is input axis `perm[i]`.
    pub(crate) fn permute(perm: [usize; 3]) -> Self {
        Self {
            perm,
            flip: [false; 3],
        }
    }

    /// `k` quarter turns in the plane `(p, q)` (numpy's `rot90` convention: the first turn
    /// takes the `q` direction to `p`).
    pub(crate) fn rot90(p: usize, q: usize, k: usize) -> Self {
        let mut swap = [0, 1, 2];
        swap.swap(p, q);
        (0..k % 4).fold(Self::IDENTITY, |op, _| {
            op.then(Self::flips(&[q])).then(Self::permute(swap))
        })
    }

    /// This op followed by `next`.
    pub(crate) fn then(self, next: Self) -> Self {
        let mut out = Self::IDENTITY;
        for i in 0..3 {
            out.perm[i] = self.perm[next.perm[i]];
            out.flip[i] = next.flip[i] ^ self.flip[next.perm[i]];
        }
        out
    }

    /// The output shape for an input `shape`.
    pub(crate) fn shape(&self, shape: [usize; 3]) -> [usize; 3] {
        self.perm.map(|a| shape[a])
    }

    /// A standard-layout copy of `a` seen through this op.
    pub(crate) fn apply<T: crate::pool::Pooled>(&self, a: ArrayView3<'_, T>) -> Array3<T> {
        let mut v = a.permuted_axes(self.perm);
        for (i, &f) in self.flip.iter().enumerate() {
            if f {
                v.invert_axis(Axis(i));
            }
        }
        owned(v)
    }
}

/// A standard-layout copy of a view, row by row (contiguous rows are copied whole).
pub(crate) fn owned<T: crate::pool::Pooled>(v: ArrayView3<'_, T>) -> Array3<T> {
    let (d0, d1, d2) = v.dim();
    let mut out = crate::pool::take(d0 * d1 * d2);
    for plane in v.outer_iter() {
        for row in plane.outer_iter() {
            match row.as_slice() {
                Some(r) => out.extend_from_slice(r),
                None => out.extend(row.iter().copied()),
            }
        }
    }
    Array3::from_shape_vec((d0, d1, d2), out).expect("one element per voxel")
}

/// Flips the listed axes (0 = z).
pub(crate) fn flip<T: crate::pool::Pooled>(a: ArrayView3<'_, T>, axes: &[usize]) -> Array3<T> {
    ViewOp::flips(axes).apply(a)
}

/// Resamples every section in-plane with the same displacement field `(dy, dx)` per `(y, x)`.
pub(crate) fn warp_plane<T: Voxel>(a: ArrayView3<'_, T>, dy: &[f32], dx: &[f32]) -> Array3<T> {
    let dims = a.dim();
    let (nz, ny, nx) = dims;
    debug_assert_eq!(dy.len(), ny * nx);
    let a = a.as_standard_layout();
    let src = a.as_slice().expect("standard layout");
    let (hy, hx) = ((ny - 1) as f32, (nx - 1) as f32);
    let mut out = crate::pool::take(nz * ny * nx);
    for z in 0..nz {
        let zf = z as f32;
        for y in 0..ny {
            let row = y * nx;
            for x in 0..nx {
                let (py, px) = (y as f32 + dy[row + x], x as f32 + dx[row + x]);
                let (py, px) = if py >= 0.0 && py <= hy && px >= 0.0 && px <= hx {
                    (py, px)
                } else {
                    (reflect(py, ny), reflect(px, nx))
                };
                out.push(T::sample(src, dims, zf, py, px));
            }
        }
    }
    Array3::from_shape_vec(dims, out).expect("one element per voxel")
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
pub(crate) fn affine<T: Voxel>(a: ArrayView3<'_, T>, m: &[[f32; 3]; 3]) -> Array3<T> {
    let dims = a.dim();
    let a = a.as_standard_layout();
    let src = a.as_slice().expect("standard layout");
    let (nz, ny, nx) = dims;
    let c = [
        (nz as f32 - 1.0) / 2.0,
        (ny as f32 - 1.0) / 2.0,
        (nx as f32 - 1.0) / 2.0,
    ];
    let hi = [(nz - 1) as f32, (ny - 1) as f32, (nx - 1) as f32];
    let step = [m[0][2], m[1][2], m[2][2]];
    let mut out = crate::pool::take(nz * ny * nx);
    out.resize(nz * ny * nx, T::default());
    // Output tiles of 16³: a rotated tile reads a compact region of the input that stays in
    // cache, where whole rows would sweep the volume diagonally.
    const TILE: usize = 16;
    for tz in (0..nz).step_by(TILE) {
        for ty in (0..ny).step_by(TILE) {
            for tx in (0..nx).step_by(TILE) {
                for z in tz..(tz + TILE).min(nz) {
                    for y in ty..(ty + TILE).min(ny) {
                        // Input position of x = 0; each x step adds the last column.
                        let b = mat_vec(m, [z as f32 - c[0], y as f32 - c[1], -c[2]]);
                        let base = [b[0] + c[0], b[1] + c[1], b[2] + c[2]];
                        let row = (z * ny + y) * nx;
                        for x in tx..(tx + TILE).min(nx) {
                            let xf = x as f32;
                            let p = [
                                base[0] + step[0] * xf,
                                base[1] + step[1] * xf,
                                base[2] + step[2] * xf,
                            ];
                            let inside = (0..3).all(|i| p[i] >= 0.0 && p[i] <= hi[i]);
                            out[row + x] = if inside {
                                T::sample(src, dims, p[0], p[1], p[2])
                            } else {
                                T::sample(
                                    src,
                                    dims,
                                    reflect(p[0], nz),
                                    reflect(p[1], ny),
                                    reflect(p[2], nx),
                                )
                            };
                        }
                    }
                }
            }
        }
    }
    Array3::from_shape_vec(dims, out).expect("one element per voxel")
}

/// Separable Gaussian smoothing of a 2-D field `(ny, nx)` with reflection at the borders.
pub(crate) fn gaussian_2d(field: &mut [f32], ny: usize, nx: usize, sigma: f32) {
    let k = gaussian_kernel(sigma);
    let mut a = ndarray::Array2::from_shape_vec((ny, nx), field.to_vec()).expect("ny × nx values");
    convolve_axis(&mut a, &k, 1);
    convolve_axis(&mut a, &k, 0);
    field.copy_from_slice(a.as_slice().expect("standard layout"));
}

/// Convolution of a section along axis 0 (y) or 1 (x) with reflection at the borders.
pub(crate) fn convolve_axis(sec: &mut ndarray::Array2<f32>, k: &[f32], axis: usize) {
    let r = k.len() / 2;
    let mut src = Vec::new();
    for mut lane in sec.lanes_mut(Axis(axis)) {
        src.clear();
        src.extend(lane.iter().copied());
        let n = src.len();
        for (i, v) in lane.iter_mut().enumerate() {
            *v = if i >= r && i + r < n {
                // Interior: no reflection needed.
                k.iter().zip(&src[i - r..=i + r]).map(|(w, x)| w * x).sum()
            } else {
                k.iter()
                    .enumerate()
                    .map(|(t, w)| w * src[reflect(i as f32 + t as f32 - r as f32, n) as usize])
                    .sum()
            };
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

    fn rot90(a: &Array3<u32>, p: usize, q: usize, k: usize) -> Array3<u32> {
        ViewOp::rot90(p, q, k).apply(a.view())
    }

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
    fn composed_view_ops_equal_applying_them_in_turn() {
        let a = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (z * 100 + y * 10 + x) as u32);
        let ops = [
            ViewOp::flips(&[0, 2]),
            ViewOp::rot90(0, 2, 1),
            ViewOp::permute([1, 2, 0]),
            ViewOp::rot90(1, 2, 3),
            ViewOp::flips(&[1]),
        ];
        let mut one_by_one = a.clone();
        let mut composed = ViewOp::IDENTITY;
        for op in ops {
            one_by_one = op.apply(one_by_one.view());
            composed = composed.then(op);
        }
        assert_eq!(composed.apply(a.view()), one_by_one);
        assert_eq!(
            composed.shape([3, 4, 5]),
            [one_by_one.dim().0, one_by_one.dim().1, one_by_one.dim().2]
        );
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
        assert_eq!(affine(a.view(), &i), a);
    }
}
