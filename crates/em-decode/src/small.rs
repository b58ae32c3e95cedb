//! Removal of small objects from a label volume, then renumbering.
//!
//! Sizes are voxel counts per label id (over the volume, or per z-section for the `_2d`
//! modes), as PyTC measures them; an object is small when its size is below the threshold.
//! Label 0 is background: never measured, never removed, never merged.
//!
//! `Background` modes zero small objects in one pass. `Neighbor` modes merge each small
//! object into the label most frequent on its rim — the voxels that touch it in-plane
//! (8-neighbourhood within its z-section, PyTC's 1×3×3 dilation), each rim voxel counted
//! once; background counts only when nothing else touches it, and an object touching only
//! background becomes background. As in PyTC, sizes are taken once before any merge and
//! merges are applied one after another (a later object sees the earlier merges). Unlike
//! PyTC, objects are visited, and vote ties broken, in order of first appearance in the
//! volume rather than of id, so the result does not depend on how the input is numbered (on the decoder's
//! output, whose ids follow first appearance, both orders agree).
//!
//! Every mode ends with a raster pass that renumbers the survivors `1..=K` in order of first
//! appearance, the numbering convention of [`crate::affinity_cc`].

use std::collections::{HashMap, HashSet};

use em_core::Label;
use ndarray::{ArrayView3, ArrayViewMut3, Axis};

use crate::{DecodeError, Result};

/// Where a small object goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmallObjectMode {
    /// Set its voxels to 0 (background).
    #[default]
    Background,
    /// Set them to 0 within each z-section separately (objects are measured per section).
    #[serde(rename = "background_2d")]
    Background2d,
    /// Merge it into the most frequent label on its in-plane rim.
    Neighbor,
    /// As `Neighbor`, within each z-section separately (measured per section).
    #[serde(rename = "neighbor_2d")]
    Neighbor2d,
}

impl std::str::FromStr for SmallObjectMode {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "background" => Ok(Self::Background),
            "background_2d" => Ok(Self::Background2d),
            "neighbor" => Ok(Self::Neighbor),
            "neighbor_2d" => Ok(Self::Neighbor2d),
            other => Err(DecodeError::InvalidParameter {
                name: "small-object mode",
                reason: format!(
                    "{other:?}; allowed: background, background_2d, neighbor, neighbor_2d"
                ),
            }),
        }
    }
}

/// Removes (or merges) every object with fewer than `min_size` voxels and renumbers the rest
/// in raster order of first appearance. Returns the number of objects kept.
///
/// # Errors
/// None today; the `Result` leaves room for modes that can fail.
pub fn remove_small_objects<L: Label>(
    mut labels: ArrayViewMut3<'_, L>,
    min_size: u64,
    mode: SmallObjectMode,
) -> Result<u64> {
    if min_size > 1 {
        match mode {
            SmallObjectMode::Background => zero_small(labels.view_mut(), min_size),
            SmallObjectMode::Background2d => {
                for section in labels.axis_iter_mut(Axis(0)) {
                    zero_small(section.insert_axis(Axis(0)), min_size);
                }
            }
            SmallObjectMode::Neighbor => {
                let (sizes, order) = census(&labels.view());
                merge_small(labels.view_mut(), min_size, &sizes, &order);
            }
            SmallObjectMode::Neighbor2d => {
                // Order and ties follow first appearance in the whole volume.
                let (_, order) = census(&labels.view());
                for section in labels.axis_iter_mut(Axis(0)) {
                    let section = section.insert_axis(Axis(0));
                    let (sizes, _) = census(&section.view());
                    merge_small(section, min_size, &sizes, &order);
                }
            }
        }
    }
    Ok(renumber(labels))
}

/// Voxels per non-zero label, and each label's rank in order of first appearance.
fn census<L: Label>(labels: &ArrayView3<'_, L>) -> (HashMap<L, u64>, HashMap<L, usize>) {
    let mut sizes: HashMap<L, u64> = HashMap::new();
    let mut order: HashMap<L, usize> = HashMap::new();
    let mut run: Option<(L, u64)> = None;
    let mut flush = |id: L, n: u64, sizes: &mut HashMap<L, u64>| {
        if id != L::BACKGROUND {
            let next = order.len();
            order.entry(id).or_insert(next);
            *sizes.entry(id).or_default() += n;
        }
    };
    // Runs of one id along x are counted once: label volumes are mostly runs.
    for &v in labels.iter() {
        match &mut run {
            Some((id, n)) if *id == v => *n += 1,
            _ => {
                if let Some((id, n)) = run.take() {
                    flush(id, n, &mut sizes);
                }
                run = Some((v, 1));
            }
        }
    }
    if let Some((id, n)) = run {
        flush(id, n, &mut sizes);
    }
    (sizes, order)
}

fn zero_small<L: Label>(mut labels: ArrayViewMut3<'_, L>, min_size: u64) {
    let (sizes, _) = census(&labels.view());
    for v in labels.iter_mut() {
        if *v != L::BACKGROUND && sizes.get(v).is_some_and(|&n| n < min_size) {
            *v = L::BACKGROUND;
        }
    }
}

fn merge_small<L: Label>(
    mut labels: ArrayViewMut3<'_, L>,
    min_size: u64,
    sizes: &HashMap<L, u64>,
    order: &HashMap<L, usize>,
) {
    let mut small: Vec<L> = sizes
        .iter()
        .filter(|&(_, &n)| n < min_size)
        .map(|(&id, _)| id)
        .collect();
    if small.is_empty() {
        return;
    }
    small.sort_unstable_by_key(|id| order[id]);
    // The voxels of each small object, grown as earlier objects merge into it.
    let mut members: HashMap<L, Vec<[usize; 3]>> =
        small.iter().map(|&id| (id, Vec::new())).collect();
    for ((z, y, x), v) in labels.indexed_iter() {
        if let Some(list) = members.get_mut(v) {
            list.push([z, y, x]);
        }
    }
    let (_, ny, nx) = labels.dim();
    let mut rim: HashSet<[usize; 3]> = HashSet::new();
    let mut votes: HashMap<L, u64> = HashMap::new();
    for id in small {
        let voxels = members.remove(&id).unwrap_or_default();
        rim.clear();
        for &[z, y, x] in &voxels {
            for dy in [-1i64, 0, 1] {
                for dx in [-1i64, 0, 1] {
                    let (py, px) = (y as i64 + dy, x as i64 + dx);
                    if py < 0 || px < 0 || py >= ny as i64 || px >= nx as i64 {
                        continue;
                    }
                    let p = [z, py as usize, px as usize];
                    if labels[p] != id {
                        rim.insert(p);
                    }
                }
            }
        }
        votes.clear();
        for &p in &rim {
            *votes.entry(labels[p]).or_default() += 1;
        }
        // Most votes; ties to the label that appeared first; background only if alone.
        let winner = votes
            .iter()
            .filter(|(&l, _)| l != L::BACKGROUND)
            .max_by(|(a, na), (b, nb)| na.cmp(nb).then(order[b].cmp(&order[a])))
            .map_or(L::BACKGROUND, |(&l, _)| l);
        for &p in &voxels {
            labels[p] = winner;
        }
        if let Some(list) = members.get_mut(&winner) {
            list.extend_from_slice(&voxels);
        }
    }
}

/// Renumbers non-zero labels `1..=K` in raster order of first appearance; returns K.
pub fn renumber<L: Label>(mut labels: ArrayViewMut3<'_, L>) -> u64 {
    let mut map: HashMap<L, L> = HashMap::new();
    let mut next = 0u64;
    let mut last: Option<(L, L)> = None;
    for v in labels.iter_mut() {
        if *v == L::BACKGROUND {
            continue;
        }
        if let Some((old, new)) = last {
            if old == *v {
                *v = new;
                continue;
            }
        }
        let old = *v;
        let new = *map.entry(old).or_insert_with(|| {
            next += 1;
            L::from_u64(next).unwrap_or(L::MAX)
        });
        *v = new;
        last = Some((old, new));
    }
    next
}
