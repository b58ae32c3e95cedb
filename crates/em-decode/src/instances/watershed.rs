//! Seeded watershed by priority flood, with the exact visiting order of the two libraries
//! PyTC has used: scikit-image (≥ 0.25) `segmentation.watershed(image, markers, mask=…)`
//! and mahotas `cwatershed(image, markers)`.
//!
//! Both label a voxel when it is pushed (never relabel it), pop the smallest
//! `(cost, age)` first and visit the 6 face neighbours in the order −z, −y, −x, +x, +y, +z.
//! They differ in three points, reproduced here:
//! * scikit-image floods inside the mask only, drops markers outside it, gives every
//!   marker age 0 (ties among markers fall to its binary heap, ported below as is) and
//!   raises a neighbour's cost to at least its parent's (`max(image[n], cost[p])`);
//! * mahotas floods everywhere, numbers markers 0, 1, … in raster order (a total order)
//!   and pushes a neighbour with its own value.

use em_core::Label;

/// How the flood treats the foreground mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flood {
    /// Flood inside the foreground only: `skimage.segmentation.watershed(-surface,
    /// seeds, mask=foreground)` (scikit-image ≥ 0.25), as PyTC's docstrings describe and
    /// PyTC 1.0 (`binary_watershed`, `bc_watershed`) runs it.
    Masked,
    /// Flood the whole volume, then zero what lies outside the foreground:
    /// `mahotas.cwatershed(-surface, seeds)` followed by `seg[~foreground] = 0`, as PyTC's
    /// current `decode_binary_*_watershed` functions do. A seed may then reach foreground
    /// voxels through background, and a region may fall apart. The default, so that the
    /// result is current PyTC's.
    #[default]
    Unmasked,
}

#[derive(Clone, Copy)]
struct Item {
    cost: f32,
    age: u64,
    index: usize,
}

#[inline]
fn smaller(a: &Item, b: &Item) -> bool {
    if a.cost != b.cost {
        a.cost < b.cost
    } else {
        a.age < b.age
    }
}

/// scikit-image's watershed heap (`heap_general.pxi`): the same sift-up and sift-down,
/// so that items comparing equal (markers of equal value) come out in the same order.
struct Heap(Vec<Item>);

impl Heap {
    fn push(&mut self, item: Item) {
        let h = &mut self.0;
        h.push(item);
        let mut child = h.len() - 1;
        while child > 0 {
            let parent = (child - 1) / 2; // skimage: (child + 1) // 2 - 1
            if smaller(&h[child], &h[parent]) {
                h.swap(parent, child);
                child = parent;
            } else {
                break;
            }
        }
    }

    fn pop(&mut self) -> Option<Item> {
        let h = &mut self.0;
        let last = h.pop()?;
        if h.is_empty() {
            return Some(last);
        }
        let top = std::mem::replace(&mut h[0], last);
        let n = h.len();
        let mut i = 0;
        let mut smallest = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            if l < n {
                if smaller(&h[l], &h[i]) {
                    smallest = l;
                }
                if r < n && smaller(&h[r], &h[smallest]) {
                    smallest = r;
                }
            } else {
                break;
            }
            if smallest == i {
                break;
            }
            h.swap(i, smallest);
            i = smallest;
        }
        Some(top)
    }
}

/// The face neighbours of `index` in the libraries' order (−z, −y, −x, +x, +y, +z).
#[inline]
fn neighbours(index: usize, dims: [usize; 3], out: &mut [usize; 6]) -> usize {
    let [_, ny, nx] = dims;
    let plane = ny * nx;
    let (z, rem) = (index / plane, index % plane);
    let (y, x) = (rem / nx, rem % nx);
    let mut k = 0;
    let mut add = |ok: bool, i: usize| {
        if ok {
            out[k] = i;
            k += 1;
        }
    };
    add(z > 0, index.wrapping_sub(plane));
    add(y > 0, index.wrapping_sub(nx));
    add(x > 0, index.wrapping_sub(1));
    add(x + 1 < nx, index + 1);
    add(y + 1 < ny, index + nx);
    add(z + 1 < dims[0], index + plane);
    k
}

/// Floods `labels` (seeds in, regions out; C order, shape `dims`) over `cost` (lowest
/// first; no NaN). `mask` is the foreground: flooded within (`Masked`) or applied after
/// (`Unmasked`).
pub(crate) fn flood<L: Label>(
    cost: &[f32],
    labels: &mut [L],
    mask: &[bool],
    dims: [usize; 3],
    mode: Flood,
) {
    let masked = mode == Flood::Masked;
    let mut heap = Heap(Vec::new());
    let mut age: u64 = 0;
    for (i, l) in labels.iter_mut().enumerate() {
        if *l == L::BACKGROUND {
            continue;
        }
        if masked {
            if !mask[i] {
                *l = L::BACKGROUND;
                continue;
            }
            heap.push(Item {
                cost: cost[i],
                age: 0,
                index: i,
            });
        } else {
            heap.push(Item {
                cost: cost[i],
                age,
                index: i,
            });
            age += 1;
        }
    }
    if masked {
        age = 1;
    }
    let mut nb = [0usize; 6];
    while let Some(item) = heap.pop() {
        let label = labels[item.index];
        let k = neighbours(item.index, dims, &mut nb);
        for &n in &nb[..k] {
            if (masked && !mask[n]) || labels[n] != L::BACKGROUND {
                continue;
            }
            labels[n] = label;
            let mut c = cost[n];
            if masked {
                age += 1;
                if c < item.cost {
                    c = item.cost;
                }
                heap.push(Item {
                    cost: c,
                    age,
                    index: n,
                });
            } else {
                heap.push(Item {
                    cost: c,
                    age,
                    index: n,
                });
                age += 1;
            }
        }
    }
    if !masked {
        for (l, &m) in labels.iter_mut().zip(mask) {
            if !m {
                *l = L::BACKGROUND;
            }
        }
    }
}
