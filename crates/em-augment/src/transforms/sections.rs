//! Section defects of serial-section EM: misaligned, missing and lost sections, holes.

use ndarray::{s, Array3, Axis};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{check_range, check_unit, default_sections, invalid, pick_sections, uniform, Augment};
use crate::geometry::{self, Voxel};
use crate::{AugmentRng, Result, Sample};

/// Which sections a misalignment moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MisalignMode {
    /// One section.
    Slip,
    /// Every section from a random one on.
    Translation,
    /// Slip or translation, 50/50.
    #[default]
    Either,
}

/// What replaces a lost section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LostMode {
    /// The section before it.
    Previous,
    /// The section after it.
    Next,
    /// The mean of both neighbours.
    Average,
    /// One of the three, at random.
    #[default]
    Random,
}

/// Sections shifted in-plane by up to `displacement` voxels (labels move with them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Misalignment {
    /// Largest shift per axis, voxels.
    pub displacement: usize,
    /// Slip (one section) or translation (all from one on).
    #[serde(default)]
    pub mode: MisalignMode,
    /// Largest extra in-plane rotation in degrees (0 = none).
    #[serde(default)]
    pub rotation: f32,
    /// Exclude the revealed border from the loss.
    #[serde(default)]
    pub mask: bool,
}

/// `n` sections (or a rectangle of 25–75% of each side of them) filled with `fill`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MissingSection {
    /// Sections per firing.
    pub n: usize,
    /// Probability that a section loses a rectangle rather than all of it.
    pub partial: f32,
    /// Fill value.
    pub fill: f32,
    /// Exclude the filled voxels from the loss.
    pub mask: bool,
}

impl Default for MissingSection {
    fn default() -> Self {
        Self {
            n: default_sections(),
            partial: 0.0,
            fill: 0.0,
            mask: false,
        }
    }
}

/// `n` sections replaced by a neighbour (or their average): the section was lost and the
/// stack re-used the one beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LostSection {
    /// Sections per firing.
    pub n: usize,
    /// What replaces it.
    pub mode: LostMode,
}

impl Default for LostSection {
    fn default() -> Self {
        Self {
            n: default_sections(),
            mode: LostMode::default(),
        }
    }
}

/// A square hole (side a fraction of the plane) in one section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingParts {
    /// Side range as a fraction of the section's smaller side.
    pub ratio: [f32; 2],
    /// Fill value.
    #[serde(default)]
    pub fill: f32,
    /// Exclude the hole from the loss.
    #[serde(default)]
    pub mask: bool,
}

/// Refuses more sections than the patch has.
fn check_section_count(name: &str, n: usize, shape: [usize; 3]) -> Result<()> {
    if n > shape[0] {
        return Err(invalid(
            name,
            format!("{n} sections of a patch with {} sections", shape[0]),
        ));
    }
    Ok(())
}

impl Augment for Misalignment {
    fn name(&self) -> &'static str {
        "misalignment"
    }

    fn needs_sections(&self) -> bool {
        true
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        let rotation = self.rotation;
        if !(0.0..=90.0).contains(&rotation) {
            return Err(invalid(
                self.name(),
                format!("rotation {rotation} is outside [0, 90] degrees"),
            ));
        }
        Ok(())
    }

    fn check_shape(&self, shape: [usize; 3]) -> Result<()> {
        let displacement = self.displacement;
        if 2 * displacement >= shape[1].min(shape[2]) {
            return Err(invalid(
                self.name(),
                format!(
                    "displacement {displacement} is at least half the section ({} × {})",
                    shape[1], shape[2]
                ),
            ));
        }
        Ok(())
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let [nz, ny, nx] = s.shape();
        let d = self.displacement as i64;
        let (dy, dx) = (rng.random_range(-d..=d), rng.random_range(-d..=d));
        let slip = match self.mode {
            MisalignMode::Slip => true,
            MisalignMode::Translation => false,
            MisalignMode::Either => rng.random_bool(0.5),
        };
        // A slip moves any one section; a translation moves all from section 1 or later on.
        let start = if slip {
            rng.random_range(0..nz)
        } else {
            rng.random_range(1..nz)
        };
        let end = if slip { start + 1 } else { nz };
        let angle = if self.rotation > 0.0 {
            rng.random_range(-self.rotation..=self.rotation)
                .to_radians()
        } else {
            0.0
        };
        for z in start..end {
            for c in 0..s.image.dim().0 {
                let sec = moved(
                    s.image.slice(s![c, z..z + 1, .., ..]).to_owned(),
                    angle,
                    dy,
                    dx,
                );
                s.image.slice_mut(s![c, z..z + 1, .., ..]).assign(&sec);
            }
            for l in &mut s.labels {
                move_section(l, z, angle, dy, dx);
            }
            for m in &mut s.masks {
                move_section(m, z, angle, dy, dx);
            }
            if let Some(v) = &mut s.valid {
                move_section(v, z, angle, dy, dx);
            }
            if self.mask {
                let v = s.valid_mut();
                for y in 0..ny {
                    for x in 0..nx {
                        if geometry::revealed(y, x, dy, dx, ny, nx) {
                            v[[z, y, x]] = 0;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A one-section volume rotated in-plane by `angle` and shifted by `(dy, dx)`.
fn moved<T: Voxel>(mut sec: Array3<T>, angle: f32, dy: i64, dx: i64) -> Array3<T> {
    if angle != 0.0 {
        sec = geometry::affine(sec.view(), &geometry::rotation(1, 2, angle));
    }
    geometry::shift_section(&mut sec, 0, dy, dx);
    sec
}

/// Section `z` of `a`, [`moved`] in place.
fn move_section<T: Voxel>(a: &mut Array3<T>, z: usize, angle: f32, dy: i64, dx: i64) {
    let sec = moved(a.slice(s![z..z + 1, .., ..]).to_owned(), angle, dy, dx);
    a.slice_mut(s![z..z + 1, .., ..]).assign(&sec);
}

impl Augment for MissingSection {
    fn name(&self) -> &'static str {
        "missing_section"
    }

    fn needs_sections(&self) -> bool {
        true
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        check_unit(self.name(), "partial", self.partial)?;
        if self.n == 0 {
            return Err(invalid(self.name(), "n = 0".into()));
        }
        Ok(())
    }

    fn check_shape(&self, shape: [usize; 3]) -> Result<()> {
        check_section_count(self.name(), self.n, shape)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let [nz, ny, nx] = s.shape();
        for z in pick_sections(rng, nz, self.n, 0) {
            let (y0, y1, x0, x1) = if rng.random_bool(f64::from(self.partial)) {
                let h = ((ny as f32 * rng.random_range(0.25..=0.75)) as usize).max(1);
                let w = ((nx as f32 * rng.random_range(0.25..=0.75)) as usize).max(1);
                let y0 = rng.random_range(0..=ny - h);
                let x0 = rng.random_range(0..=nx - w);
                (y0, y0 + h, x0, x0 + w)
            } else {
                (0, ny, 0, nx)
            };
            s.image.slice_mut(s![.., z, y0..y1, x0..x1]).fill(self.fill);
            if self.mask {
                s.valid_mut().slice_mut(s![z, y0..y1, x0..x1]).fill(0);
            }
        }
        Ok(())
    }
}

impl Augment for LostSection {
    fn name(&self) -> &'static str {
        "lost_section"
    }

    fn needs_sections(&self) -> bool {
        true
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        if self.n == 0 {
            return Err(invalid(self.name(), "n = 0".into()));
        }
        Ok(())
    }

    fn check_shape(&self, shape: [usize; 3]) -> Result<()> {
        check_section_count(self.name(), self.n, shape)?;
        if shape[0] < 3 {
            return Err(invalid(
                self.name(),
                format!(
                    "needs a section with two neighbours, the patch has {} sections",
                    shape[0]
                ),
            ));
        }
        Ok(())
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        // Interior sections only: each needs both neighbours.
        for z in pick_sections(rng, s.shape()[0], self.n, 1) {
            let mode = match self.mode {
                LostMode::Random => {
                    [LostMode::Previous, LostMode::Next, LostMode::Average][rng.random_range(0..3)]
                }
                m => m,
            };
            for mut ch in s.image.outer_iter_mut() {
                let (prev, next) = (
                    ch.index_axis(Axis(0), z - 1).to_owned(),
                    ch.index_axis(Axis(0), z + 1).to_owned(),
                );
                let new = match mode {
                    LostMode::Previous => prev,
                    LostMode::Next => next,
                    _ => (prev + next) * 0.5,
                };
                ch.index_axis_mut(Axis(0), z).assign(&new);
            }
        }
        Ok(())
    }
}

impl Augment for MissingParts {
    fn name(&self) -> &'static str {
        "missing_parts"
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        check_range(self.name(), "ratio", self.ratio, 0.0, 1.0)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let [nz, ny, nx] = s.shape();
        let z = rng.random_range(0..nz);
        let side = ((ny.min(nx) as f32 * uniform(rng, self.ratio)) as usize).max(1);
        let y0 = rng.random_range(0..=ny - side);
        let x0 = rng.random_range(0..=nx - side);
        s.image
            .slice_mut(s![.., z, y0..y0 + side, x0..x0 + side])
            .fill(self.fill);
        if self.mask {
            s.valid_mut()
                .slice_mut(s![z, y0..y0 + side, x0..x0 + side])
                .fill(0);
        }
        Ok(())
    }
}
