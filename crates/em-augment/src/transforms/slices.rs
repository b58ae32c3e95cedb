//! Slice transforms after BANIS: whole slices along a random axis dropped or rolled.

use ndarray::{ArrayViewMut3, Axis};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{all_axes, check_unit, invalid, Augment, SpatialAxis};
use crate::{AugmentRng, Result, Sample};

/// Along one of `axes` (random), each slice zeroed with probability `p_slice` (BANIS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceDrop {
    /// Candidate axes.
    #[serde(default = "all_axes")]
    pub axes: Vec<SpatialAxis>,
    /// Per-slice probability.
    pub p_slice: f32,
}

/// Along one of `axes` (random), each slice with probability `p_slice` rolled (circularly)
/// within its own plane by up to `max_shift` voxels per in-plane axis — BANIS's slice roll,
/// done along the axis it picks; labels roll with the image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceShift {
    /// Candidate axes.
    #[serde(default = "all_axes")]
    pub axes: Vec<SpatialAxis>,
    /// Per-slice probability.
    #[serde(default = "every_slice")]
    pub p_slice: f32,
    /// Largest roll.
    pub max_shift: usize,
}

/// The default of [`SliceShift::p_slice`]: every slice rolls.
fn every_slice() -> f32 {
    1.0
}

/// The settings both slice transforms check: candidate axes and the per-slice probability.
fn validate_slices(
    name: &str,
    axes: &[SpatialAxis],
    p_slice: f32,
    anisotropic: bool,
) -> Result<()> {
    if axes.is_empty() {
        return Err(invalid(name, "`axes` is empty".into()));
    }
    check_unit(name, "p_slice", p_slice)?;
    if anisotropic && axes.iter().any(|&a| a != SpatialAxis::Z) {
        return Err(invalid(
            name,
            format!("axes {axes:?}: on anisotropic data only z slices are physical sections"),
        ));
    }
    Ok(())
}

/// One of `axes`, drawn, and the number of slices along it.
fn pick_axis(rng: &mut AugmentRng, axes: &[SpatialAxis], shape: [usize; 3]) -> (usize, usize) {
    let ax = axes[rng.random_range(0..axes.len())].index();
    (ax, shape[ax])
}

impl Augment for SliceDrop {
    fn name(&self) -> &'static str {
        "slice_drop"
    }

    fn validate(&self, anisotropic: bool) -> Result<()> {
        validate_slices(self.name(), &self.axes, self.p_slice, anisotropic)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let (ax, n) = pick_axis(rng, &self.axes, s.shape());
        for i in 0..n {
            if rng.random_bool(f64::from(self.p_slice)) {
                s.image.index_axis_mut(Axis(1 + ax), i).fill(0.0);
            }
        }
        Ok(())
    }
}

impl Augment for SliceShift {
    fn name(&self) -> &'static str {
        "slice_shift"
    }

    fn validate(&self, anisotropic: bool) -> Result<()> {
        validate_slices(self.name(), &self.axes, self.p_slice, anisotropic)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let (ax, n) = pick_axis(rng, &self.axes, s.shape());
        let m = self.max_shift as i64;
        for i in 0..n {
            if !rng.random_bool(f64::from(self.p_slice)) {
                continue;
            }
            let (d0, d1) = (rng.random_range(-m..=m), rng.random_range(-m..=m));
            for mut ch in s.image.outer_iter_mut() {
                roll_slice(&mut ch, ax, i, d0, d1);
            }
            // Labels and masks roll with the image, as with misalignment.
            for l in &mut s.labels {
                roll_slice(&mut l.view_mut(), ax, i, d0, d1);
            }
            for mk in &mut s.masks {
                roll_slice(&mut mk.view_mut(), ax, i, d0, d1);
            }
            if let Some(v) = &mut s.valid {
                roll_slice(&mut v.view_mut(), ax, i, d0, d1);
            }
        }
        Ok(())
    }
}

/// Rolls slice `i` along `ax` circularly by `(d0, d1)` within its plane.
fn roll_slice<T: Copy>(a: &mut ArrayViewMut3<'_, T>, ax: usize, i: usize, d0: i64, d1: i64) {
    let mut sl = a.index_axis_mut(Axis(ax), i);
    let src = sl.to_owned();
    let (h, w) = src.dim();
    for ((p, q), v) in sl.indexed_iter_mut() {
        let sp = (p as i64 - d0).rem_euclid(h as i64) as usize;
        let sq = (q as i64 - d1).rem_euclid(w as i64) as usize;
        *v = src[[sp, sq]];
    }
}
