//! The fast path of [`crate::affinity_cc`] for the short-range channels (unit offsets along
//! z, y and x, any subset, either storage).
//!
//! Method (two passes, as in classic connected-component labelling): each row's on/off
//! bits are computed from the affinity rows into a small row buffer (vectorised compares;
//! there is never a boolean copy of the volume); a raster scan then gives each voxel the
//! provisional label of a backward neighbour it is joined to, or a new one, and records
//! label equivalences in a union-find over provisional labels — a table far smaller than
//! the volume. Provisional labels are created in raster order and unions keep the smaller
//! root, so each component's root is the label created at its first voxel; numbering the
//! roots in order is the first-appearance numbering, and the second pass is a table lookup
//! per voxel. Slabs of z-sections are scanned in parallel with their own tables; the
//! tables are concatenated and joined across slab faces before numbering, so the result
//! does not depend on the number of slabs.

use em_core::{EdgeStorage, Label, UnionFind};

use crate::cc::Affinity;
use crate::{DecodeError, Result};

/// Bits of the per-voxel row mask.
const BX: u8 = 1;
const BY: u8 = 2;
const BZ: u8 = 4;
const FG: u8 = 8;

/// The z, y and x channels (full volumes, raster order); `None` means no edges on that axis.
pub(crate) struct UnitAxes<'a, A> {
    pub z: Option<&'a [A]>,
    pub y: Option<&'a [A]>,
    pub x: Option<&'a [A]>,
}

/// Labels `dims` voxels into `out` (length z·y·x), `threads` slabs at a time.
pub(crate) fn label<A: Affinity, L: Label>(
    axes: &UnitAxes<'_, A>,
    cut: A::Cut,
    dims: [usize; 3],
    storage: EdgeStorage,
    threads: usize,
    out: &mut [L],
) -> Result<()> {
    let [z, y, x] = dims;
    let plane = y * x;
    if plane == 0 || z == 0 {
        return Ok(());
    }
    let slabs = threads.clamp(1, z);
    let depth = z.div_ceil(slabs);
    let scan = |(k, part): (usize, &mut [L])| {
        let z0 = k * depth;
        let z1 = (z0 + depth).min(z);
        scan_slab(axes, cut, dims, storage, z0..z1, part)
    };
    let tables: Vec<Vec<L>> = if slabs == 1 {
        vec![scan((0, out))]
    } else {
        use rayon::prelude::*;
        out.par_chunks_mut(depth * plane)
            .enumerate()
            .map(scan)
            .collect()
    };
    let (offsets, finals) = number(axes, cut, dims, storage, depth, &tables, out)?;
    drop(tables);
    let apply = |(k, part): (usize, &mut [L])| {
        let off = offsets[k];
        for v in part.iter_mut() {
            let p = v.to_usize();
            if p != 0 {
                *v = finals[off + p];
            }
        }
    };
    if slabs == 1 {
        apply((0, out));
    } else {
        use rayon::prelude::*;
        out.par_chunks_mut(depth * plane)
            .enumerate()
            .for_each(apply);
    }
    Ok(())
}

/// Joins the slab tables across slab faces and numbers the roots in order. Returns each
/// slab's offset into the global table and the final label of every global provisional id.
fn number<A: Affinity, L: Label>(
    axes: &UnitAxes<'_, A>,
    cut: A::Cut,
    [z, y, x]: [usize; 3],
    storage: EdgeStorage,
    depth: usize,
    tables: &[Vec<L>],
    out: &[L],
) -> Result<(Vec<usize>, Vec<L>)> {
    let mut offsets = Vec::with_capacity(tables.len());
    let mut total = 0usize;
    for t in tables {
        offsets.push(total);
        // Entry 0 of each slab table is background and not carried over.
        total += t.len() - 1;
    }
    let mut parent: Vec<usize> = Vec::with_capacity(total + 1);
    parent.push(0);
    for (t, &off) in tables.iter().zip(&offsets) {
        for (p, _) in t.iter().enumerate().skip(1) {
            parent.push(off + t.root(p));
        }
    }
    // Edges between the last section of one slab and the first of the next.
    let plane = y * x;
    if let Some(zs) = axes.z {
        for (k, &off) in offsets.iter().enumerate().skip(1) {
            let z0 = k * depth;
            if z0 >= z {
                break;
            }
            let held = match storage {
                EdgeStorage::Source => &zs[(z0 - 1) * plane..z0 * plane],
                EdgeStorage::Destination => &zs[z0 * plane..(z0 + 1) * plane],
            };
            let below = offsets[k - 1];
            for (i, v) in held.iter().enumerate() {
                if v.is_on(cut) {
                    let a = off + out[z0 * plane + i].to_usize();
                    let b = below + out[(z0 - 1) * plane + i].to_usize();
                    parent.union(a, b);
                }
            }
        }
    }
    let mut finals: Vec<L> = Vec::with_capacity(total + 1);
    finals.push(L::BACKGROUND);
    let mut next = 0u64;
    for p in 1..=total {
        let r = parent.find(p);
        let label = if r == p {
            next += 1;
            L::from_u64(next).ok_or(DecodeError::TooManyComponents {
                label_type: L::NAME,
            })?
        } else {
            finals[r]
        };
        finals.push(label);
    }
    Ok((offsets, finals))
}

/// Scans the sections `zs` into `out` (that slab's part of the output) with provisional
/// labels; returns the slab's equivalence table (entry 0: background).
fn scan_slab<A: Affinity, L: Label>(
    axes: &UnitAxes<'_, A>,
    cut: A::Cut,
    [z, y, x]: [usize; 3],
    storage: EdgeStorage,
    zs: std::ops::Range<usize>,
    out: &mut [L],
) -> Vec<L> {
    let plane = y * x;
    let mut table: Vec<L> = vec![L::BACKGROUND];
    let mut mask = vec![0u8; x];
    let zeros = vec![L::BACKGROUND; x];
    // On bits of a whole section (1: x, 2: y, 4: z), so that every affinity is compared
    // once: `cur` is the section being scanned, `adj` the one whose z-edges reach it
    // (previous for Source, next for Destination).
    let mut cur = vec![0u8; plane];
    let mut adj = vec![0u8; plane];
    match storage {
        EdgeStorage::Source if zs.start > 0 => {
            section_bits(axes, cut, plane, zs.start - 1, &mut adj);
        }
        EdgeStorage::Destination => section_bits(axes, cut, plane, zs.start, &mut adj),
        EdgeStorage::Source => {}
    }
    for iz in zs.clone() {
        match storage {
            EdgeStorage::Source => section_bits(axes, cut, plane, iz, &mut cur),
            EdgeStorage::Destination => {
                std::mem::swap(&mut cur, &mut adj);
                if iz + 1 < z {
                    section_bits(axes, cut, plane, iz + 1, &mut adj);
                } else {
                    adj.fill(0);
                }
            }
        }
        // Edges to the section below another slab's last one are joined later.
        let keep = if iz == zs.start { !BZ } else { !0 };
        for iy in 0..y {
            let r = iy * x;
            match storage {
                EdgeStorage::Source => source_mask(&cur, &adj, r, x, iy, iz, &mut mask),
                EdgeStorage::Destination => {
                    destination_mask(&cur, &adj, r, [y, x], [iz, iy], &mut mask);
                }
            }
            let base = (iz - zs.start) * plane + r;
            let (done, rest) = out.split_at_mut(base);
            let above = if iy > 0 {
                &done[base - x..]
            } else {
                &zeros[..]
            };
            let below = if iz > zs.start {
                &done[base - plane..]
            } else {
                &zeros[..]
            };
            scan_row(&mask, keep, &mut rest[..x], above, below, &mut table);
        }
        if storage == EdgeStorage::Source {
            std::mem::swap(&mut cur, &mut adj);
        }
    }
    table
}

/// The on bits of section `iz`: 1 for the x channel, 2 for y, 4 for z.
fn section_bits<A: Affinity>(
    axes: &UnitAxes<'_, A>,
    cut: A::Cut,
    plane: usize,
    iz: usize,
    bits: &mut [u8],
) {
    bits.fill(0);
    let range = iz * plane..(iz + 1) * plane;
    for (values, shift) in [(axes.x, 0), (axes.y, 1), (axes.z, 2)] {
        if let Some(values) = values {
            for (b, &v) in bits.iter_mut().zip(&values[range.clone()]) {
                *b |= u8::from(v.is_on(cut)) << shift;
            }
        }
    }
}

/// Mask bits for `Source` storage: backward edges live in the backward neighbour; own values
/// point forward (or out of the volume) and label the voxel either way.
fn source_mask(cur: &[u8], prev: &[u8], r: usize, x: usize, iy: usize, iz: usize, mask: &mut [u8]) {
    let own = &cur[r..r + x];
    let ym = if iy > 0 { 2u8 } else { 0 };
    let zm = if iz > 0 { 4u8 } else { 0 };
    let above = &cur[r.saturating_sub(x)..r.saturating_sub(x) + x];
    let below = &prev[r..r + x];
    mask[0] = (above[0] & ym) | (below[0] & zm);
    mask[0] |= u8::from((own[0] | mask[0]) != 0) * FG;
    for i in 1..x {
        let b = (own[i - 1] & 1) | (above[i] & ym) | (below[i] & zm);
        mask[i] = b | (u8::from((own[i] | b) != 0) * FG);
    }
}

/// Mask bits for `Destination` storage: own values are backward edges, or point out of the
/// volume on the first row/section/column; forward edges live in the forward neighbours.
fn destination_mask(
    cur: &[u8],
    next: &[u8],
    r: usize,
    [y, x]: [usize; 2],
    [iz, iy]: [usize; 2],
    mask: &mut [u8],
) {
    let own = &cur[r..r + x];
    let has_ahead = iy + 1 < y;
    let ahead = if has_ahead {
        &cur[r + x..r + 2 * x]
    } else {
        own
    };
    let am = if has_ahead { 2u8 } else { 0 };
    let up = &next[r..r + x];
    let keep = 1 | if iy > 0 { 2u8 } else { 0 } | if iz > 0 { 4u8 } else { 0 };
    for i in 0..x {
        let b = if i > 0 {
            own[i] & keep
        } else {
            own[i] & keep & !1
        };
        let fx = if i + 1 < x { own[i + 1] & 1 } else { 0 };
        let f = fx | (ahead[i] & am) | (up[i] & 4);
        mask[i] = b | (u8::from((own[i] | f) != 0) * FG);
    }
}

/// The provisional labels of one row from its mask and the rows above/before it.
#[inline]
fn scan_row<L: Label>(
    mask: &[u8],
    keep: u8,
    row: &mut [L],
    above: &[L],
    below: &[L],
    table: &mut Vec<L>,
) {
    let mut left = L::BACKGROUND;
    // The last pair joined along y and along z: runs of voxels meet runs of the row or
    // section before, so the same pair recurs voxel after voxel and is joined only once.
    let mut joined_y = (L::BACKGROUND, L::BACKGROUND);
    let mut joined_z = (L::BACKGROUND, L::BACKGROUND);
    let n = row.len().min(mask.len()).min(above.len()).min(below.len());
    for i in 0..n {
        let m = mask[i] & keep;
        // Loaded unconditionally so that both streams are read ahead of the branches.
        let (up, down) = (above[i], below[i]);
        let label = match m & (BX | BY | BZ) {
            0 => {
                if m & FG != 0 {
                    let l = L::from_u64(table.len() as u64).unwrap_or(L::MAX);
                    table.push(l);
                    l
                } else {
                    L::BACKGROUND
                }
            }
            BX => left,
            BY => up,
            BZ => down,
            b => {
                let mut l = if b & BX != 0 { left } else { up };
                if b & (BX | BY) == BX | BY {
                    let o = up;
                    if o != l && (o, l) != joined_y {
                        let root = table.union(l.to_usize(), o.to_usize());
                        l = table[root];
                        joined_y = (o, l);
                    }
                }
                if b & BZ != 0 {
                    let o = down;
                    if o != l && (o, l) != joined_z {
                        let root = table.union(l.to_usize(), o.to_usize());
                        l = table[root];
                        joined_z = (o, l);
                    }
                }
                l
            }
        };
        row[i] = label;
        left = label;
    }
}
