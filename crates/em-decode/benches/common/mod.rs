//! Inputs shared by em-decode's benches.

use ndarray::Array4;

/// Affinities of a volume of wavy cells of about 16³ voxels: 0.9 inside a cell, 0.1 across
/// its boundary, ±0.08 of deterministic noise (never across the 0.5 threshold). Channels
/// 0–2 link a voxel to its neighbour along z, y, x; channels 3–5 to the voxel 10 away.
pub(crate) fn cell_affinities(channels: usize, n: usize) -> Array4<f32> {
    let cell = |z: usize, y: usize, x: usize| {
        let yy = y as f32 + 3.0 * (z as f32 / 5.0).sin();
        let xx = x as f32 + 3.0 * (y as f32 / 7.0).sin();
        (
            z / 16,
            (yy / 16.0).floor() as i64,
            (xx / 16.0).floor() as i64,
        )
    };
    let noise = |i: usize| {
        let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        (h % 1000) as f32 / 1000.0 * 0.16 - 0.08
    };
    Array4::from_shape_fn((channels, n, n, n), |(c, z, y, x)| {
        let d = if c < 3 { 1 } else { 10 };
        let (pz, py, px) = match c % 3 {
            0 => (z + d, y, x),
            1 => (z, y + d, x),
            _ => (z, y, x + d),
        };
        let inside = pz < n && py < n && px < n && cell(z, y, x) == cell(pz, py, px);
        let base = if inside { 0.9 } else { 0.1 };
        base + noise(((c * n + z) * n + y) * n + x)
    })
}
