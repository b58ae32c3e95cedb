//! Copy-paste: a labelled object duplicated elsewhere in the patch.

use std::collections::BTreeMap;

use ndarray::{s, Array3};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{invalid, Augment};
use crate::{geometry, AugmentError, AugmentRng, Result, Sample};

/// One labelled object (of label volume 0) copied, flipped/turned and pasted where it
/// overlaps other foreground least (of `tries` random places).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CopyPaste {
    /// Give the pasted object a new id (instance labels); off for semantic labels.
    pub new_id: bool,
    /// Candidate positions.
    pub tries: usize,
}

impl Default for CopyPaste {
    fn default() -> Self {
        Self {
            new_id: true,
            tries: 8,
        }
    }
}

impl Augment for CopyPaste {
    fn name(&self) -> &'static str {
        "copy_paste"
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        if self.tries == 0 {
            return Err(invalid(self.name(), "tries = 0".into()));
        }
        Ok(())
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let Some(label) = s.labels.first() else {
            return Err(AugmentError::BadSample(
                "copy_paste needs a label volume".into(),
            ));
        };
        let boxes = bounding_boxes(label);
        if boxes.is_empty() {
            return Ok(());
        }
        let ids: Vec<u32> = boxes.keys().copied().collect();
        let id = ids[rng.random_range(0..ids.len())];
        let (lo, hi) = boxes[&id];
        let crop = |a: &Array3<u32>| {
            a.slice(s![lo[0]..=hi[0], lo[1]..=hi[1], lo[2]..=hi[2]])
                .to_owned()
        };
        let mut obj = crop(label).mapv(|v| u8::from(v == id));
        let mut img: Vec<Array3<f32>> = s
            .image
            .outer_iter()
            .map(|c| {
                c.slice(s![lo[0]..=hi[0], lo[1]..=hi[1], lo[2]..=hi[2]])
                    .to_owned()
            })
            .collect();
        // Flip in-plane at random so the copy is not a plain duplicate.
        let flips: Vec<usize> = [1usize, 2]
            .into_iter()
            .filter(|_| rng.random_bool(0.5))
            .collect();
        obj = geometry::flip(obj.view(), &flips);
        img = img
            .iter()
            .map(|c| geometry::flip(c.view(), &flips))
            .collect();
        let Some(at) = least_overlap(rng, label, &obj, self.tries) else {
            return Ok(());
        };
        let value = if self.new_id {
            label.iter().copied().max().unwrap_or(0).saturating_add(1)
        } else {
            id
        };
        for ((z, y, x), &o) in obj.indexed_iter() {
            if o == 0 {
                continue;
            }
            let p = [at[0] + z, at[1] + y, at[2] + x];
            s.labels[0][p] = value;
            for (c, src) in img.iter().enumerate() {
                s.image[[c, p[0], p[1], p[2]]] = src[[z, y, x]];
            }
        }
        Ok(())
    }
}

/// Each object's bounding box (inclusive corners), by id.
fn bounding_boxes(label: &Array3<u32>) -> BTreeMap<u32, ([usize; 3], [usize; 3])> {
    let mut boxes: BTreeMap<u32, ([usize; 3], [usize; 3])> = BTreeMap::new();
    for ((z, y, x), &l) in label.indexed_iter() {
        if l == 0 {
            continue;
        }
        let e = boxes.entry(l).or_insert(([z, y, x], [z, y, x]));
        for (a, v) in [z, y, x].into_iter().enumerate() {
            e.0[a] = e.0[a].min(v);
            e.1[a] = e.1[a].max(v);
        }
    }
    boxes
}

/// Of `tries` random corners for `obj` inside `label`, the first whose object voxels cover
/// the least foreground; `None` when `tries` is 0.
fn least_overlap(
    rng: &mut AugmentRng,
    label: &Array3<u32>,
    obj: &Array3<u8>,
    tries: usize,
) -> Option<[usize; 3]> {
    let dims = label.dim();
    let od = obj.dim();
    let mut best: Option<([usize; 3], usize)> = None;
    for _ in 0..tries {
        let at = [
            rng.random_range(0..=dims.0 - od.0),
            rng.random_range(0..=dims.1 - od.1),
            rng.random_range(0..=dims.2 - od.2),
        ];
        let overlap = obj
            .indexed_iter()
            .filter(|(_, &o)| o == 1)
            .filter(|((z, y, x), _)| label[[at[0] + z, at[1] + y, at[2] + x]] != 0)
            .count();
        if best.is_none_or(|(_, b)| overlap < b) {
            best = Some((at, overlap));
        }
    }
    best.map(|(at, _)| at)
}
