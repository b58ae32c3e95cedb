//! waterz's initial watershed on an affinity graph, voxel for voxel.
//!
//! Every voxel marks the directions of its strongest incident edge (all of them when
//! several tie) and of every edge at or above `high`; voxels whose strongest edge is at or
//! below `low` stay background. Plateaus (voxels pointing at each other) are split by a
//! breadth-first search from their rims, so each plateau voxel then points at one
//! neighbour, downhill towards an exit. Following the pointers leads every voxel into a
//! basin (a plateau without exit); basins are numbered from 1 in the raster order of the
//! first voxel that drains into them. No sizes are merged afterwards.

use super::Affs;

/// Direction bits: −z, −y, −x, +z, +y, +x (waterz's order, which decides plateau ties).
const DIR_BITS: [u32; 6] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20];
/// The bit of the opposite direction, seen from the neighbour.
const BACK_BITS: [u32; 6] = [0x08, 0x10, 0x20, 0x01, 0x02, 0x04];
/// Queued (plateau split) or visited (basin search).
const SEEN: u32 = 0x40;
/// An assigned voxel: the rest of the word is its basin id.
const DONE: u32 = 0x8000_0000;

/// The watershed fragments (0 = background, basins 1..=count) and their count.
pub(crate) fn watershed(aff: &Affs<'_>, low: f32, high: f32) -> (Vec<u32>, u32) {
    let [zdim, ydim, xdim] = aff.shape;
    let size = zdim * ydim * xdim;
    let mut seg = mark_directions(aff, low, high);
    let step: [isize; 6] = [
        -((ydim * xdim) as isize),
        -(xdim as isize),
        -1,
        (ydim * xdim) as isize,
        xdim as isize,
        1,
    ];
    let neighbour = |idx: usize, d: usize| (idx as isize + step[d]) as usize;

    // Rim voxels of plateaus: a marked neighbour that does not point back.
    let mut bfs: Vec<usize> = Vec::new();
    for idx in 0..size {
        for d in 0..6 {
            if seg[idx] & DIR_BITS[d] != 0 && seg[neighbour(idx, d)] & BACK_BITS[d] == 0 {
                seg[idx] |= SEEN;
                bfs.push(idx);
                break;
            }
        }
    }
    // Split plateaus inwards from their rims: each voxel keeps the last direction (in
    // waterz's order) that leads to a voxel not pointing back.
    let mut head = 0;
    while head < bfs.len() {
        let idx = bfs[head];
        let mut keep = 0;
        for d in 0..6 {
            if seg[idx] & DIR_BITS[d] == 0 {
                continue;
            }
            let him = neighbour(idx, d);
            if seg[him] & BACK_BITS[d] != 0 {
                if seg[him] & SEEN == 0 {
                    bfs.push(him);
                    seg[him] |= SEEN;
                }
            } else {
                keep = DIR_BITS[d];
            }
        }
        seg[idx] = keep;
        head += 1;
    }
    bfs.clear();

    // Follow the pointers into basins; a search that reaches a numbered voxel joins it.
    let mut next_id: u32 = 1;
    for idx in 0..size {
        if seg[idx] == 0 {
            seg[idx] = DONE;
        }
        if seg[idx] & DONE != 0 || seg[idx] == 0 {
            continue;
        }
        bfs.push(idx);
        seg[idx] |= SEEN;
        let mut head = 0;
        'search: while head < bfs.len() {
            let me = bfs[head];
            for (d, bit) in DIR_BITS.iter().enumerate() {
                if seg[me] & bit == 0 {
                    continue;
                }
                let him = neighbour(me, d);
                if seg[him] & DONE != 0 {
                    let id = seg[him];
                    for &it in &bfs {
                        seg[it] = id;
                    }
                    bfs.clear();
                    break 'search;
                } else if seg[him] & SEEN == 0 {
                    seg[him] |= SEEN;
                    bfs.push(him);
                }
            }
            head += 1;
        }
        if !bfs.is_empty() {
            for &it in &bfs {
                seg[it] = DONE | next_id;
            }
            next_id += 1;
            bfs.clear();
        }
    }
    for v in &mut seg {
        *v &= !DONE;
    }
    (seg, next_id - 1)
}

/// The direction bits of every voxel (independent per voxel, so computed in parallel).
fn mark_directions(aff: &Affs<'_>, low: f32, high: f32) -> Vec<u32> {
    use rayon::prelude::*;
    let [zdim, ydim, xdim] = aff.shape;
    let plane = ydim * xdim;
    let mut seg = vec![0u32; zdim * plane];
    seg.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(z, slice)| {
            for y in 0..ydim {
                for x in 0..xdim {
                    let idx = z * plane + y * xdim + x;
                    let negz = if z > 0 { aff.back(0, idx) } else { low };
                    let negy = if y > 0 { aff.back(1, idx) } else { low };
                    let negx = if x > 0 { aff.back(2, idx) } else { low };
                    let posz = if z + 1 < zdim {
                        aff.back(0, idx + plane)
                    } else {
                        low
                    };
                    let posy = if y + 1 < ydim {
                        aff.back(1, idx + xdim)
                    } else {
                        low
                    };
                    let posx = if x + 1 < xdim {
                        aff.back(2, idx + 1)
                    } else {
                        low
                    };
                    let values = [negz, negy, negx, posz, posy, posx];
                    // std::max over an initializer list keeps the first of equal values;
                    // with finite inputs only the value matters.
                    let m = values.iter().copied().fold(negx, f32::max);
                    let mut bits = 0;
                    if m > low {
                        for (v, bit) in values.iter().zip(DIR_BITS) {
                            if *v == m || *v >= high {
                                bits |= bit;
                            }
                        }
                    }
                    slice[y * xdim + x] = bits;
                }
            }
        });
    seg
}
