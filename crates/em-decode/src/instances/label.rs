//! Connected components of a binary mask (6-, 18- or 26-connectivity), numbered `1..` in
//! raster (C) order of first appearance, as `cc3d.connected_components` numbers them.

use em_core::Label;

use crate::{DecodeError, Result};

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// The already-scanned neighbours (offsets `(dz, dy, dx)` earlier in raster order) for a
/// connectivity of 6, 18 or 26.
fn backward(connectivity: u8) -> Vec<[isize; 3]> {
    let mut out = Vec::new();
    for dz in -1isize..=0 {
        for dy in -1isize..=1 {
            for dx in -1isize..=1 {
                let order = (dz, dy, dx);
                if order >= (0, 0, 0) {
                    continue;
                }
                let nonzero = [dz, dy, dx].iter().filter(|&&d| d != 0).count();
                let keep = match connectivity {
                    6 => nonzero == 1,
                    18 => nonzero <= 2,
                    _ => true,
                };
                if keep {
                    out.push([dz, dy, dx]);
                }
            }
        }
    }
    out
}

/// Labels the components of `mask` (C order, shape `dims`); returns their count.
pub(crate) fn components<L: Label>(
    mask: &[bool],
    dims: [usize; 3],
    connectivity: u8,
    out: &mut [L],
) -> Result<u64> {
    let [nz, ny, nx] = dims;
    let offsets = backward(connectivity);
    let mut parent: Vec<usize> = (0..mask.len()).collect();
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * ny + y) * nx + x;
                if !mask[i] {
                    continue;
                }
                for &[dz, dy, dx] in &offsets {
                    let (qz, qy, qx) = (z as isize + dz, y as isize + dy, x as isize + dx);
                    if qz < 0 || qy < 0 || qx < 0 || qy >= ny as isize || qx >= nx as isize {
                        continue;
                    }
                    let j = (qz as usize * ny + qy as usize) * nx + qx as usize;
                    if mask[j] {
                        let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                        if a != b {
                            // Keep the earlier voxel as root.
                            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                            parent[hi] = lo;
                        }
                    }
                }
            }
        }
    }
    let mut next = 0u64;
    for i in 0..mask.len() {
        if !mask[i] {
            out[i] = L::BACKGROUND;
            continue;
        }
        let r = find(&mut parent, i);
        out[i] = if r == i {
            next += 1;
            L::from_u64(next).ok_or(DecodeError::TooManyComponents {
                label_type: L::NAME,
            })?
        } else {
            out[r]
        };
    }
    Ok(next)
}
