//! Training targets from label volumes: affinities with masks, foreground, instance
//! boundaries, signed distance (`tanh(d/8)`), DeepEM-style erosion, and relabelling of
//! pieces a crop cut apart. Labels: 0 = background; an optional `known` mask marks voxels
//! whose label is unknown (they are masked out, never treated as background).

use em_core::{AffinityOffsets, EdgeStorage, UnionFind};
use ndarray::{Array3, Array4, ArrayView3, Axis};

/// Affinities `(C, Z, Y, X)` for `offsets` in `storage`, and their mask. An affinity is 1
/// where both ends exist and carry the same non-zero label (so 0 where the source is
/// background, as in BANIS); the mask is 1 where the other end is inside the volume and
/// both ends are known.
pub fn affinities(
    labels: ArrayView3<'_, u32>,
    known: Option<ArrayView3<'_, bool>>,
    offsets: &AffinityOffsets,
    storage: EdgeStorage,
) -> (Array4<f32>, Array4<u8>) {
    let (nz, ny, nx) = labels.dim();
    let c = offsets.len();
    let mut aff = Array4::<f32>::zeros((c, nz, ny, nx));
    let mut mask = Array4::<f32>::zeros((c, nz, ny, nx));
    affinities_into(
        labels,
        known,
        offsets,
        storage,
        [0; 3],
        aff.view_mut(),
        mask.view_mut(),
    );
    (aff, mask.mapv(|m| m as u8))
}

/// [`affinities`] for the window of `labels` starting at `lo` with the outputs' spatial
/// shape, written into `aff` and `mask` (float 0/1): edges may reach into the context
/// around the window (BANIS reads +10 voxels so that long-range edges at the patch border
/// exist).
pub fn affinities_into(
    labels: ArrayView3<'_, u32>,
    known: Option<ArrayView3<'_, bool>>,
    offsets: &AffinityOffsets,
    storage: EdgeStorage,
    lo: [usize; 3],
    mut aff: ndarray::ArrayViewMut4<'_, f32>,
    mut mask: ndarray::ArrayViewMut4<'_, f32>,
) {
    let (nz, ny, nx) = labels.dim();
    let (_, wz, wy, wx) = aff.dim();
    let labels = labels.as_standard_layout();
    let lab = labels.as_slice().expect("standard layout");
    let known = known.map(|k| k.as_standard_layout().into_owned());
    let kn = known
        .as_ref()
        .map(|k| k.as_slice().expect("standard layout"));
    let sign = match storage {
        EdgeStorage::Source => 1,
        EdgeStorage::Destination => -1,
    };
    for (ch, o) in offsets.as_slice().iter().enumerate() {
        let d = o.0.map(|v| v * sign);
        let mut a = aff.index_axis_mut(Axis(0), ch);
        let mut m = mask.index_axis_mut(Axis(0), ch);
        a.fill(0.0);
        m.fill(0.0);
        // Window x range whose partner stays inside the volume.
        let gx = lo[2] as i64;
        let x0 = (-d[2] - gx).clamp(0, wx as i64) as usize;
        let x1 = ((nx as i64 - d[2] - gx).clamp(0, wx as i64) as usize).max(x0);
        for z in 0..wz {
            let (vz, pz) = ((lo[0] + z) as i64, (lo[0] + z) as i64 + d[0]);
            if pz < 0 || pz >= nz as i64 {
                continue;
            }
            for y in 0..wy {
                let (vy, py) = ((lo[1] + y) as i64, (lo[1] + y) as i64 + d[1]);
                if py < 0 || py >= ny as i64 {
                    continue;
                }
                let row = ((vz as usize * ny) + vy as usize) * nx + lo[2];
                let prow = ((pz as usize * ny) + py as usize) * nx;
                let mut arow = a.slice_mut(ndarray::s![z, y, ..]);
                let mut mrow = m.slice_mut(ndarray::s![z, y, ..]);
                for x in x0..x1 {
                    let (i, j) = (row + x, (prow as i64 + gx + x as i64 + d[2]) as usize);
                    let (l, p) = (lab[i], lab[j]);
                    arow[x] = if l != 0 && l == p { 1.0 } else { 0.0 };
                    mrow[x] = match kn {
                        Some(k) => f32::from(u8::from(k[i] && k[j])),
                        None => 1.0,
                    };
                }
            }
        }
    }
}

/// 1 where labelled (non-zero), else 0.
pub fn foreground(labels: ArrayView3<'_, u32>) -> Array3<f32> {
    labels.mapv(|l| f32::from(u8::from(l != 0)))
}

/// 1 on labelled voxels with a face neighbour (inside the volume) of another label,
/// background included; `planar` looks at the 4 in-plane neighbours only.
pub fn boundaries(labels: ArrayView3<'_, u32>, planar: bool) -> Array3<u8> {
    let (nz, ny, nx) = labels.dim();
    let mut out = Array3::<u8>::zeros((nz, ny, nx));
    let steps: &[[i64; 3]] = if planar {
        &[[0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
    } else {
        &[
            [1, 0, 0],
            [-1, 0, 0],
            [0, 1, 0],
            [0, -1, 0],
            [0, 0, 1],
            [0, 0, -1],
        ]
    };
    for ((z, y, x), o) in out.indexed_iter_mut() {
        let l = labels[[z, y, x]];
        if l == 0 {
            continue;
        }
        let differs = steps.iter().any(|s| {
            let p = [z as i64 + s[0], y as i64 + s[1], x as i64 + s[2]];
            p[0] >= 0
                && p[1] >= 0
                && p[2] >= 0
                && (p[0] as usize) < nz
                && (p[1] as usize) < ny
                && (p[2] as usize) < nx
                && labels[[p[0] as usize, p[1] as usize, p[2] as usize]] != l
        });
        *o = u8::from(differs);
    }
    out
}

/// DeepEM-style erosion: labelled voxels with another label (background included) within
/// the in-plane square of half-width `width` become background, opening gaps between
/// touching objects.
pub fn erode(labels: ArrayView3<'_, u32>, width: usize) -> Array3<u32> {
    let (nz, ny, nx) = labels.dim();
    let w = width as i64;
    Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| {
        let l = labels[[z, y, x]];
        if l == 0 {
            return 0;
        }
        for dy in -w..=w {
            for dx in -w..=w {
                let (py, px) = (y as i64 + dy, x as i64 + dx);
                if py >= 0
                    && px >= 0
                    && (py as usize) < ny
                    && (px as usize) < nx
                    && labels[[z, py as usize, px as usize]] != l
                {
                    return 0;
                }
            }
        }
        l
    })
}

/// Splits every label into its 6-connected pieces (a crop can cut one object into several),
/// numbered `1..=K` in order of first appearance in a raster scan; 0 stays 0.
pub fn relabel_connected(labels: ArrayView3<'_, u32>) -> Array3<u32> {
    let (nz, ny, nx) = labels.dim();
    let labels = labels.as_standard_layout();
    let lab = labels.as_slice().expect("standard layout");
    let n = lab.len();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    // Unions keep the smaller root, so the root of a set is always its earliest voxel and
    // roots are first appearances.
    let plane = ny * nx;
    for i in 0..n {
        let l = lab[i];
        if l == 0 {
            continue;
        }
        let x = i % nx;
        let y = (i / nx) % ny;
        if x > 0 && lab[i - 1] == l {
            parent.union(i, i - 1);
        }
        if y > 0 && lab[i - nx] == l {
            parent.union(i, i - nx);
        }
        if i >= plane && lab[i - plane] == l {
            parent.union(i, i - plane);
        }
    }
    let mut number = vec![0u32; n];
    let mut next = 0u32;
    let mut out = vec![0u32; n];
    for i in 0..n {
        if lab[i] == 0 {
            continue;
        }
        let r = parent.find(i);
        if number[r] == 0 {
            next += 1;
            number[r] = next;
        }
        out[i] = number[r];
    }
    Array3::from_shape_vec((nz, ny, nx), out).expect("one label per voxel")
}

/// Signed distance target `tanh(d / 8)`: inside an object `d` is the Euclidean distance (in
/// units of `voxel_size`, z first) to the nearest voxel of another label, in background
/// minus the distance to the nearest labelled voxel. Objects or background filling the
/// whole volume get distance 0 (no boundary to measure from).
pub fn signed_distance(labels: ArrayView3<'_, u32>, voxel_size: [f32; 3]) -> Array3<f32> {
    let (nz, ny, nx) = labels.dim();
    let mut out = Array3::<f32>::zeros((nz, ny, nx));
    // One transform per label on its bounding box grown by one voxel: the grown box's rim
    // holds other labels, and no voxel beyond it can be nearer (the rim point on the way
    // is at least as close), so the result is exact at a cost near one pass per voxel.
    let mut boxes: std::collections::BTreeMap<u32, ([usize; 3], [usize; 3])> =
        std::collections::BTreeMap::new();
    for ((z, y, x), &l) in labels.indexed_iter() {
        let b = boxes.entry(l).or_insert(([z, y, x], [z, y, x]));
        for (a, v) in [z, y, x].into_iter().enumerate() {
            b.0[a] = b.0[a].min(v);
            b.1[a] = b.1[a].max(v);
        }
    }
    let dims = [nz, ny, nx];
    for (&id, &(lo, hi)) in &boxes {
        let lo = lo.map(|v| v.saturating_sub(1));
        let hi = [0, 1, 2].map(|a| (hi[a] + 2).min(dims[a]));
        let window = ndarray::s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]];
        let inside = labels.slice(window).mapv(|l| l == id);
        if inside.iter().all(|&b| b) {
            continue; // fills the volume: nothing to measure from
        }
        let d = edt(inside.view(), voxel_size);
        let sign = if id == 0 { -1.0 } else { 1.0 };
        let mut o = out.slice_mut(window);
        for ((v, &m), &dist) in o.iter_mut().zip(inside.iter()).zip(d.iter()) {
            if m {
                *v = sign * dist;
            }
        }
    }
    out.mapv_inplace(|d| (d / 8.0).tanh());
    out
}

/// Exact Euclidean distance from every `true` voxel to the nearest `false` voxel (0 on
/// `false` voxels), by three separable passes of the lower-envelope transform
/// (Felzenszwalb & Huttenlocher); voxels with no `false` voxel at all get +∞.
pub fn edt(mask: ArrayView3<'_, bool>, voxel_size: [f32; 3]) -> Array3<f32> {
    let mut f = mask.mapv(|b| if b { f32::INFINITY } else { 0.0 });
    for (axis, &size) in voxel_size.iter().enumerate() {
        let w = size * size;
        for mut lane in f.lanes_mut(Axis(axis)) {
            let src: Vec<f32> = lane.iter().copied().collect();
            let dst = envelope(&src, w);
            for (o, v) in lane.iter_mut().zip(dst) {
                *o = v;
            }
        }
    }
    f.mapv_inplace(f32::sqrt);
    f
}

/// One dimension of the squared distance transform: `d[i] = min_j (f[j] + w (i − j)²)`.
fn envelope(f: &[f32], w: f32) -> Vec<f32> {
    let n = f.len();
    let mut d = vec![f32::INFINITY; n];
    let mut v = vec![0usize; n];
    let mut z = vec![0f32; n + 1];
    let mut k = 0usize;
    let first = match f.iter().position(|x| x.is_finite()) {
        Some(i) => i,
        None => return d,
    };
    v[0] = first;
    z[0] = f32::NEG_INFINITY;
    z[1] = f32::INFINITY;
    let inter = |q: usize, p: usize| -> f32 {
        let (q2, p2) = ((q * q) as f32, (p * p) as f32);
        ((f[q] + w * q2) - (f[p] + w * p2)) / (2.0 * w * (q as f32 - p as f32))
    };
    for (q, fq) in f.iter().enumerate().skip(first + 1) {
        if !fq.is_finite() {
            continue;
        }
        let mut s = inter(q, v[k]);
        while s <= z[k] {
            k -= 1;
            s = inter(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f32::INFINITY;
    }
    k = 0;
    for (q, out) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f32 {
            k += 1;
        }
        let dq = q as f32 - v[k] as f32;
        *out = w * dq * dq + f[v[k]];
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edt_matches_brute_force() {
        let mask = Array3::from_shape_fn((5, 7, 6), |(z, y, x)| (z * 3 + y * 5 + x * 7) % 11 != 0);
        let vs = [3.0, 1.0, 1.5];
        let d = edt(mask.view(), vs);
        for ((z, y, x), &got) in d.indexed_iter() {
            let mut best = f32::INFINITY;
            for ((a, b, c), &m) in mask.indexed_iter() {
                if !m {
                    let dd = ((z as f32 - a as f32) * vs[0]).powi(2)
                        + ((y as f32 - b as f32) * vs[1]).powi(2)
                        + ((x as f32 - c as f32) * vs[2]).powi(2);
                    best = best.min(dd);
                }
            }
            assert!(
                (got - best.sqrt()).abs() < 1e-4,
                "{z} {y} {x}: {got} vs {}",
                best.sqrt()
            );
        }
    }
}
