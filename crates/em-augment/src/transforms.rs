//! The transforms: their settings (one TOML table each, tagged by `type`) and what they do.

use ndarray::{s, Array3, Axis};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::geometry::{self, Voxel};
use crate::{AugmentError, Result, Sample};

/// A spatial axis by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpatialAxis {
    /// Sections (the anisotropic axis of serial-section EM).
    Z,
    /// Rows.
    Y,
    /// Columns.
    X,
}

impl SpatialAxis {
    fn index(self) -> usize {
        self as usize
    }
}

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

fn zyx() -> Vec<SpatialAxis> {
    vec![SpatialAxis::Z, SpatialAxis::Y, SpatialAxis::X]
}
fn yx() -> [SpatialAxis; 2] {
    [SpatialAxis::Y, SpatialAxis::X]
}
fn two() -> usize {
    2
}
fn one_f() -> f32 {
    1.0
}

/// One transform and its settings. In a preset each is a `[[transforms]]` table with
/// `type = "…"`, the settings below, and `p` (the probability it fires).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// Mirror the listed axes.
    Flip {
        /// Axes flipped when the transform fires.
        #[serde(default = "zyx")]
        axes: Vec<SpatialAxis>,
    },
    /// 1, 2 or 3 quarter turns (uniform) in a plane; planes with unequal sides only turn by
    /// two quarters.
    Rot90 {
        /// The plane, e.g. `["y", "x"]`.
        #[serde(default = "yx")]
        plane: [SpatialAxis; 2],
    },
    /// A random non-identity permutation of the three axes (isotropic cubes only).
    Permute {},
    /// Rotation, scaling and shear about the patch centre; reflection padding.
    Affine {
        /// Largest rotation in degrees in the planes (y, x), (z, x), (z, y); anisotropic
        /// pipelines allow only the first.
        #[serde(default)]
        rotation: [f32; 3],
        /// Scale factors drawn from [1 − scale, 1 + scale] per axis (in-plane only when
        /// anisotropic).
        #[serde(default)]
        scale: f32,
        /// Shear factors drawn from [−shear, shear] for each pair of allowed axes.
        #[serde(default)]
        shear: f32,
    },
    /// In-plane elastic deformation: uniform noise smoothed by a Gaussian of σ (voxels),
    /// scaled by α, the same field for every section.
    Elastic {
        /// σ range.
        sigma: [f32; 2],
        /// α range.
        alpha: [f32; 2],
    },
    /// `x → ((x·m + a − mean)·contrast + mean)^γ`, optionally per section.
    Intensity {
        /// Multiplier range.
        #[serde(default = "unit_range")]
        multiply: [f32; 2],
        /// Offset range.
        #[serde(default)]
        add: [f32; 2],
        /// Contrast range (around the mean).
        #[serde(default = "unit_range")]
        contrast: [f32; 2],
        /// Gamma range (applied to values clipped to [0, 1]).
        #[serde(default = "unit_range")]
        gamma: [f32; 2],
        /// Draw the factors per section (EM sections differ in brightness).
        #[serde(default)]
        per_section: bool,
        /// Clip the result to [0, 1].
        #[serde(default)]
        clip: bool,
    },
    /// Additive Gaussian noise with σ drawn from `std`.
    Noise {
        /// σ range.
        std: [f32; 2],
        /// Clip the result to [0, 1].
        #[serde(default)]
        clip: bool,
    },
    /// Sections shifted in-plane by up to `displacement` voxels (labels move with them).
    Misalignment {
        /// Largest shift per axis, voxels.
        displacement: usize,
        /// Slip (one section) or translation (all from one on).
        #[serde(default)]
        mode: MisalignMode,
        /// Largest extra in-plane rotation in degrees (0 = none).
        #[serde(default)]
        rotation: f32,
        /// Exclude the revealed border from the loss.
        #[serde(default)]
        mask: bool,
    },
    /// `n` sections (or a rectangle of 25–75% of each side of them) filled with `fill`.
    MissingSection {
        /// Sections per firing.
        #[serde(default = "two")]
        n: usize,
        /// Probability that a section loses a rectangle rather than all of it.
        #[serde(default)]
        partial: f32,
        /// Fill value.
        #[serde(default)]
        fill: f32,
        /// Exclude the filled voxels from the loss.
        #[serde(default)]
        mask: bool,
    },
    /// `n` sections replaced by a neighbour (or their average): the section was lost and
    /// the stack re-used the one beside it.
    LostSection {
        /// Sections per firing.
        #[serde(default = "two")]
        n: usize,
        /// What replaces it.
        #[serde(default)]
        mode: LostMode,
    },
    /// A square hole (side a fraction of the plane) in one section.
    MissingParts {
        /// Side range as a fraction of the section's smaller side.
        ratio: [f32; 2],
        /// Fill value.
        #[serde(default)]
        fill: f32,
        /// Exclude the hole from the loss.
        #[serde(default)]
        mask: bool,
    },
    /// Directional blur of `n` sections: a box kernel of `kernel` voxels along y or x.
    MotionBlur {
        /// Sections per firing.
        #[serde(default = "two")]
        n: usize,
        /// Kernel length (odd).
        kernel: usize,
    },
    /// Out-of-focus sections: in-plane Gaussian blur of `n` sections.
    OutOfFocus {
        /// Sections per firing.
        #[serde(default = "two")]
        n: usize,
        /// σ range (voxels).
        sigma: [f32; 2],
    },
    /// Uniform noise of amplitude drawn from `scale` in a random cuboid (side fractions
    /// from `ratio` per axis), clipped to [0, 1].
    CutNoise {
        /// Cuboid side range, fraction of each axis.
        ratio: [f32; 2],
        /// Noise amplitude range.
        scale: [f32; 2],
    },
    /// A random cuboid downsampled by a factor from `factor` (linear) and back (nearest).
    CutBlur {
        /// Cuboid side range, fraction of each axis.
        ratio: [f32; 2],
        /// Downsampling factor range.
        factor: [f32; 2],
        /// Also downsample along z.
        #[serde(default)]
        z: bool,
    },
    /// Along one of `axes` (random), each slice zeroed with probability `p_slice` (BANIS).
    SliceDrop {
        /// Candidate axes.
        #[serde(default = "zyx")]
        axes: Vec<SpatialAxis>,
        /// Per-slice probability.
        p_slice: f32,
    },
    /// Along one of `axes` (random), each slice with probability `p_slice` rolled
    /// (circularly) within its own plane by up to `max_shift` voxels per in-plane axis —
    /// BANIS's slice roll, done along the axis it picks; labels roll with the image.
    SliceShift {
        /// Candidate axes.
        #[serde(default = "zyx")]
        axes: Vec<SpatialAxis>,
        /// Per-slice probability.
        #[serde(default = "one_f")]
        p_slice: f32,
        /// Largest roll.
        max_shift: usize,
    },
    /// Batch-level: the image becomes `α·image + (1 − α)·other` with another sample of the
    /// batch (labels unchanged). Applied by [`crate::Pipeline::apply_batch`].
    Mixup {
        /// α range.
        alpha: [f32; 2],
    },
    /// One labelled object (of label volume 0) copied, flipped/turned and pasted where it
    /// overlaps other foreground least (of `tries` random places).
    CopyPaste {
        /// Give the pasted object a new id (instance labels); off for semantic labels.
        #[serde(default = "yes")]
        new_id: bool,
        /// Candidate positions.
        #[serde(default = "eight")]
        tries: usize,
    },
    /// Exactly one of `transforms` (picked by `weight`): EM defects are mutually
    /// exclusive per sample.
    OneOf {
        /// The candidates (each may carry `weight`, default 1; no `p`).
        transforms: Vec<Weighted>,
    },
}

fn unit_range() -> [f32; 2] {
    [1.0, 1.0]
}
fn yes() -> bool {
    true
}
fn eight() -> usize {
    8
}

/// A candidate of `one_of`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Weighted {
    /// Relative weight.
    #[serde(default = "one_f")]
    pub weight: f32,
    /// The transform.
    #[serde(flatten)]
    pub transform: Transform,
}

impl Transform {
    /// The `type` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Flip { .. } => "flip",
            Self::Rot90 { .. } => "rot90",
            Self::Permute {} => "permute",
            Self::Affine { .. } => "affine",
            Self::Elastic { .. } => "elastic",
            Self::Intensity { .. } => "intensity",
            Self::Noise { .. } => "noise",
            Self::Misalignment { .. } => "misalignment",
            Self::MissingSection { .. } => "missing_section",
            Self::LostSection { .. } => "lost_section",
            Self::MissingParts { .. } => "missing_parts",
            Self::MotionBlur { .. } => "motion_blur",
            Self::OutOfFocus { .. } => "out_of_focus",
            Self::CutNoise { .. } => "cut_noise",
            Self::CutBlur { .. } => "cut_blur",
            Self::SliceDrop { .. } => "slice_drop",
            Self::SliceShift { .. } => "slice_shift",
            Self::Mixup { .. } => "mixup",
            Self::CopyPaste { .. } => "copy_paste",
            Self::OneOf { .. } => "one_of",
        }
    }

    /// Whether it acts on sections (and so needs more than one along z).
    fn needs_sections(&self) -> bool {
        matches!(
            self,
            Self::Misalignment { .. }
                | Self::MissingSection { .. }
                | Self::LostSection { .. }
                | Self::MotionBlur { .. }
                | Self::OutOfFocus { .. }
        )
    }

    /// Checks settings that do not depend on the patch.
    pub(crate) fn validate(&self, anisotropic: bool) -> Result<()> {
        let name = self.name();
        let bad = |reason: String| {
            Err(AugmentError::InvalidSetting {
                transform: name.into(),
                reason,
            })
        };
        let range = |what: &str, r: [f32; 2], lo: f32, hi: f32| -> Result<()> {
            if !(r[0].is_finite() && r[1].is_finite() && r[0] <= r[1] && r[0] >= lo && r[1] <= hi) {
                return Err(AugmentError::InvalidSetting {
                    transform: name.into(),
                    reason: format!("{what} {r:?}: need lo ≤ hi within [{lo}, {hi}]"),
                });
            }
            Ok(())
        };
        let unit = |what: &str, v: f32| -> Result<()> {
            if !(0.0..=1.0).contains(&v) {
                return Err(AugmentError::InvalidSetting {
                    transform: name.into(),
                    reason: format!("{what} {v} is outside [0, 1]"),
                });
            }
            Ok(())
        };
        match self {
            Self::Flip { axes } | Self::SliceDrop { axes, .. } | Self::SliceShift { axes, .. }
                if axes.is_empty() =>
            {
                bad("`axes` is empty".into())
            }
            Self::Rot90 { plane } => {
                if plane[0] == plane[1] {
                    return bad(format!("plane {plane:?} needs two different axes"));
                }
                if anisotropic && plane.contains(&SpatialAxis::Z) {
                    return bad(format!(
                        "plane {plane:?} turns the anisotropic z axis into an in-plane one; \
                         use [\"y\", \"x\"] or set `anisotropic = false`"
                    ));
                }
                Ok(())
            }
            Self::Permute {} if anisotropic => bad(
                "permuting axes mixes the anisotropic z axis with y and x; set \
                 `anisotropic = false` for isotropic data"
                    .into(),
            ),
            Self::Affine {
                rotation,
                scale,
                shear,
            } => {
                if anisotropic && (rotation[1] != 0.0 || rotation[2] != 0.0) {
                    return bad(format!(
                        "rotation {rotation:?} tilts sections out of plane on anisotropic data; \
                         only the first (y, x) angle may be non-zero"
                    ));
                }
                if rotation.iter().any(|r| !r.is_finite() || *r < 0.0) {
                    return bad(format!("rotation {rotation:?}: angles are ≥ 0"));
                }
                if !(0.0..1.0).contains(scale) || !(0.0..=1.0).contains(shear) {
                    return bad(format!(
                        "scale {scale} (in [0, 1)) and shear {shear} (in [0, 1])"
                    ));
                }
                Ok(())
            }
            Self::Elastic { sigma, alpha } => {
                range("sigma", *sigma, 0.1, 1e3)?;
                range("alpha", *alpha, 0.0, 1e5)
            }
            Self::Intensity {
                multiply,
                add,
                contrast,
                gamma,
                ..
            } => {
                range("multiply", *multiply, 0.0, 100.0)?;
                range("add", *add, -100.0, 100.0)?;
                range("contrast", *contrast, 0.0, 100.0)?;
                range("gamma", *gamma, 0.01, 100.0)
            }
            Self::Noise { std, .. } => range("std", *std, 0.0, 100.0),
            Self::Misalignment { rotation, .. } if !(0.0..=90.0).contains(rotation) => {
                bad(format!("rotation {rotation} is outside [0, 90] degrees"))
            }
            Self::MissingSection { n, partial, .. } => {
                unit("partial", *partial)?;
                if *n == 0 {
                    return bad("n = 0".into());
                }
                Ok(())
            }
            Self::LostSection { n, .. } | Self::OutOfFocus { n, .. } if *n == 0 => {
                bad("n = 0".into())
            }
            Self::MissingParts { ratio, .. } => range("ratio", *ratio, 0.0, 1.0),
            Self::MotionBlur { n, kernel } => {
                if *n == 0 || kernel.is_multiple_of(2) {
                    return bad(format!("n {n} ≥ 1 and an odd kernel, got {kernel}"));
                }
                Ok(())
            }
            Self::CutNoise { ratio, scale } => {
                range("ratio", *ratio, 0.0, 1.0)?;
                range("scale", *scale, 0.0, 1.0)
            }
            Self::CutBlur { ratio, factor, .. } => {
                range("ratio", *ratio, 0.0, 1.0)?;
                range("factor", *factor, 1.0, 64.0)
            }
            Self::SliceDrop { axes, p_slice } | Self::SliceShift { axes, p_slice, .. } => {
                unit("p_slice", *p_slice)?;
                if anisotropic && axes.iter().any(|&a| a != SpatialAxis::Z) {
                    return bad(format!(
                        "axes {axes:?}: on anisotropic data only z slices are physical sections"
                    ));
                }
                Ok(())
            }
            Self::Mixup { alpha } => range("alpha", *alpha, 0.0, 1.0),
            Self::CopyPaste { tries, .. } if *tries == 0 => bad("tries = 0".into()),
            Self::OneOf { transforms } => {
                if transforms.is_empty() {
                    return bad("no candidates".into());
                }
                for t in transforms {
                    if !(t.weight.is_finite() && t.weight > 0.0) {
                        return bad(format!(
                            "weight {} of {} must be > 0",
                            t.weight,
                            t.transform.name()
                        ));
                    }
                    if matches!(t.transform, Self::OneOf { .. } | Self::Mixup { .. }) {
                        return bad(format!("{} cannot be a candidate", t.transform.name()));
                    }
                    t.transform.validate(anisotropic)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Checks settings against the patch shape `[Z, Y, X]`.
    pub(crate) fn check_shape(&self, shape: [usize; 3]) -> Result<()> {
        let name = self.name();
        let bad = |reason: String| {
            Err(AugmentError::InvalidSetting {
                transform: name.into(),
                reason,
            })
        };
        if self.needs_sections() && shape[0] < 2 {
            return bad(format!(
                "acts on z sections, but the patch {shape:?} is 2-D (one section)"
            ));
        }
        let plane = shape[1].min(shape[2]);
        match self {
            Self::Permute {} if !(shape[0] == shape[1] && shape[1] == shape[2]) => bad(format!(
                "needs a cube to keep the patch shape, got {shape:?}"
            )),
            Self::MotionBlur { kernel, .. } if *kernel > plane => bad(format!(
                "kernel {kernel} is larger than the section ({} × {})",
                shape[1], shape[2]
            )),
            Self::OutOfFocus { sigma, .. } | Self::Elastic { sigma, .. }
                if 3.0 * sigma[1] > plane as f32 =>
            {
                bad(format!(
                    "σ up to {} needs a kernel of ±{} voxels, larger than the section ({} × {})",
                    sigma[1],
                    (3.0 * sigma[1]).ceil(),
                    shape[1],
                    shape[2]
                ))
            }
            Self::Misalignment { displacement, .. } if 2 * displacement >= plane => bad(format!(
                "displacement {displacement} is at least half the section ({} × {})",
                shape[1], shape[2]
            )),
            Self::MissingSection { n, .. } | Self::LostSection { n, .. } if *n > shape[0] => bad(
                format!("{n} sections of a patch with {} sections", shape[0]),
            ),
            Self::LostSection { .. } if shape[0] < 3 => bad(format!(
                "needs a section with two neighbours, the patch has {} sections",
                shape[0]
            )),
            Self::OneOf { transforms } => transforms
                .iter()
                .try_for_each(|t| t.transform.check_shape(shape)),
            _ => Ok(()),
        }
    }

    /// For flips, quarter turns and permutations: the signed axis permutation this firing
    /// applies to a volume of `shape` (drawing its random parts); `None` for the others.
    pub(crate) fn view_op(
        &self,
        rng: &mut ChaCha8Rng,
        shape: [usize; 3],
    ) -> Option<geometry::ViewOp> {
        Some(match self {
            Self::Flip { axes } => {
                let axes: Vec<usize> = axes.iter().map(|a| a.index()).collect();
                geometry::ViewOp::flips(&axes)
            }
            Self::Rot90 { plane } => {
                let (p, q) = (plane[0].index(), plane[1].index());
                let k = if shape[p] == shape[q] {
                    rng.random_range(1..4)
                } else {
                    2
                };
                geometry::ViewOp::rot90(p, q, k)
            }
            Self::Permute {} => {
                const PERMS: [[usize; 3]; 5] =
                    [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
                geometry::ViewOp::permute(PERMS[rng.random_range(0..5)])
            }
            _ => return None,
        })
    }

    /// Applies the transform (it has already been decided that it fires). Returns the
    /// name of what ran (the chosen candidate for `one_of`).
    pub(crate) fn apply(
        &self,
        s: &mut Sample,
        rng: &mut ChaCha8Rng,
        anisotropic: bool,
    ) -> Result<&'static str> {
        let [nz, ny, nx] = s.shape();
        match self {
            Self::Flip { .. } | Self::Rot90 { .. } | Self::Permute {} => {
                if let Some(op) = self.view_op(rng, [nz, ny, nx]) {
                    s.map_volumes(|a| op.apply(a), |a| op.apply(a), |a| op.apply(a));
                }
            }
            Self::Affine {
                rotation,
                scale,
                shear,
            } => {
                let m = affine_matrix(rng, *rotation, *scale, *shear, !anisotropic);
                s.map_volumes(
                    |a| geometry::affine(a, &m),
                    |a| geometry::affine(a, &m),
                    |a| geometry::affine(a, &m),
                );
            }
            Self::Elastic { sigma, alpha } => {
                let sigma = uniform(rng, *sigma);
                let alpha = uniform(rng, *alpha);
                let field = |rng: &mut ChaCha8Rng| {
                    let mut f: Vec<f32> =
                        (0..ny * nx).map(|_| rng.random_range(-1.0..=1.0)).collect();
                    geometry::gaussian_2d(&mut f, ny, nx, sigma);
                    f.iter_mut().for_each(|v| *v *= alpha);
                    f
                };
                let (dy, dx) = (field(rng), field(rng));
                s.map_volumes(
                    |a| geometry::warp_plane(a, &dy, &dx),
                    |a| geometry::warp_plane(a, &dy, &dx),
                    |a| geometry::warp_plane(a, &dy, &dx),
                );
            }
            Self::Intensity {
                multiply,
                add,
                contrast,
                gamma,
                per_section,
                clip,
            } => {
                let draws = if *per_section { nz } else { 1 };
                let factors: Vec<[f32; 4]> = (0..draws)
                    .map(|_| {
                        [
                            uniform(rng, *multiply),
                            uniform(rng, *add),
                            uniform(rng, *contrast),
                            uniform(rng, *gamma),
                        ]
                    })
                    .collect();
                for mut ch in s.image.outer_iter_mut() {
                    for (z, mut sec) in ch.outer_iter_mut().enumerate() {
                        let [m, a, c, g] = factors[if *per_section { z } else { 0 }];
                        let mean = if c != 1.0 {
                            sec.mean().unwrap_or(0.0) * m + a
                        } else {
                            0.0
                        };
                        // γ through a table over [0, 1]: powf per voxel was the
                        // pipeline's single largest cost.
                        let lut = (g != 1.0).then(|| GammaTable::new(g));
                        sec.mapv_inplace(|v| {
                            let mut v = (v * m + a - mean) * c + mean;
                            if let Some(t) = &lut {
                                v = t.get(v.clamp(0.0, 1.0));
                            }
                            if *clip {
                                v = v.clamp(0.0, 1.0);
                            }
                            v
                        });
                    }
                }
            }
            Self::Noise { std, clip } => {
                let sd = uniform(rng, *std);
                let data = s.image.as_slice_mut().expect("standard layout");
                // Box–Muller gives two independent normals per pair of uniforms.
                for pair in data.chunks_mut(2) {
                    let (a, b) = normal_pair(rng);
                    for (v, n) in pair.iter_mut().zip([a, b]) {
                        *v += sd * n;
                        if *clip {
                            *v = v.clamp(0.0, 1.0);
                        }
                    }
                }
            }
            Self::Misalignment {
                displacement,
                mode,
                rotation,
                mask,
            } => misalign(s, rng, *displacement, *mode, *rotation, *mask),
            Self::MissingSection {
                n,
                partial,
                fill,
                mask,
            } => {
                for z in pick_sections(rng, nz, *n, 0) {
                    let (y0, y1, x0, x1) = if rng.random_bool(f64::from(*partial)) {
                        let h = ((ny as f32 * rng.random_range(0.25..=0.75)) as usize).max(1);
                        let w = ((nx as f32 * rng.random_range(0.25..=0.75)) as usize).max(1);
                        let y0 = rng.random_range(0..=ny - h);
                        let x0 = rng.random_range(0..=nx - w);
                        (y0, y0 + h, x0, x0 + w)
                    } else {
                        (0, ny, 0, nx)
                    };
                    s.image.slice_mut(s![.., z, y0..y1, x0..x1]).fill(*fill);
                    if *mask {
                        s.valid_mut().slice_mut(s![z, y0..y1, x0..x1]).fill(0);
                    }
                }
            }
            Self::LostSection { n, mode } => {
                // Interior sections only: each needs both neighbours.
                for z in pick_sections(rng, nz, *n, 1) {
                    let mode = match mode {
                        LostMode::Random => [LostMode::Previous, LostMode::Next, LostMode::Average]
                            [rng.random_range(0..3)],
                        m => *m,
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
            }
            Self::MissingParts { ratio, fill, mask } => {
                let z = rng.random_range(0..nz);
                let side = ((ny.min(nx) as f32 * uniform(rng, *ratio)) as usize).max(1);
                let y0 = rng.random_range(0..=ny - side);
                let x0 = rng.random_range(0..=nx - side);
                s.image
                    .slice_mut(s![.., z, y0..y0 + side, x0..x0 + side])
                    .fill(*fill);
                if *mask {
                    s.valid_mut()
                        .slice_mut(s![z, y0..y0 + side, x0..x0 + side])
                        .fill(0);
                }
            }
            Self::MotionBlur { n, kernel } => {
                for z in pick_sections(rng, nz, *n, 0) {
                    let along_x = rng.random_bool(0.5);
                    let k = vec![1.0 / *kernel as f32; *kernel];
                    for mut ch in s.image.outer_iter_mut() {
                        let mut sec = ch.index_axis_mut(Axis(0), z);
                        let mut buf = sec.to_owned();
                        geometry::convolve_axis(&mut buf, &k, usize::from(along_x));
                        sec.assign(&buf);
                    }
                }
            }
            Self::OutOfFocus { n, sigma } => {
                for z in pick_sections(rng, nz, *n, 0) {
                    let k = geometry::gaussian_kernel(uniform(rng, *sigma));
                    for mut ch in s.image.outer_iter_mut() {
                        let mut sec = ch.index_axis_mut(Axis(0), z);
                        let mut buf = sec.to_owned();
                        geometry::convolve_axis(&mut buf, &k, 0);
                        geometry::convolve_axis(&mut buf, &k, 1);
                        sec.assign(&buf);
                    }
                }
            }
            Self::CutNoise { ratio, scale } => {
                let (lo, hi) = cuboid(rng, [nz, ny, nx], *ratio, true);
                let amp = uniform(rng, *scale);
                s.image
                    .slice_mut(s![.., lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
                    .mapv_inplace(|v| (v + rng.random_range(-amp..=amp)).clamp(0.0, 1.0));
            }
            Self::CutBlur { ratio, factor, z } => {
                let (lo, hi) = cuboid(rng, [nz, ny, nx], *ratio, true);
                let f = uniform(rng, *factor);
                let fz = if *z { f } else { 1.0 };
                for mut ch in s.image.outer_iter_mut() {
                    let region = ch
                        .slice(s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
                        .to_owned();
                    let blurred = down_up(&region, [fz, f, f]);
                    ch.slice_mut(s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
                        .assign(&blurred);
                }
            }
            Self::SliceDrop { axes, p_slice } => {
                let ax = axes[rng.random_range(0..axes.len())].index();
                let n = [nz, ny, nx][ax];
                for i in 0..n {
                    if rng.random_bool(f64::from(*p_slice)) {
                        s.image.index_axis_mut(Axis(1 + ax), i).fill(0.0);
                    }
                }
            }
            Self::SliceShift {
                axes,
                p_slice,
                max_shift,
            } => {
                let ax = axes[rng.random_range(0..axes.len())].index();
                let n = [nz, ny, nx][ax];
                let m = *max_shift as i64;
                for i in 0..n {
                    if !rng.random_bool(f64::from(*p_slice)) {
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
            }
            Self::Mixup { .. } => {}
            Self::CopyPaste { new_id, tries } => copy_paste(s, rng, *new_id, *tries)?,
            Self::OneOf { transforms } => {
                let total: f32 = transforms.iter().map(|t| t.weight).sum();
                let mut r = rng.random_range(0.0..total);
                let mut pick = &transforms[transforms.len() - 1].transform;
                for t in transforms {
                    if r < t.weight {
                        pick = &t.transform;
                        break;
                    }
                    r -= t.weight;
                }
                return pick.apply(s, rng, anisotropic);
            }
        }
        Ok(self.name())
    }
}

/// Rolls slice `i` along `ax` circularly by `(d0, d1)` within its plane.
fn roll_slice<T: Copy>(
    a: &mut ndarray::ArrayViewMut3<'_, T>,
    ax: usize,
    i: usize,
    d0: i64,
    d1: i64,
) {
    let mut sl = a.index_axis_mut(Axis(ax), i);
    let src = sl.to_owned();
    let (h, w) = src.dim();
    for ((p, q), v) in sl.indexed_iter_mut() {
        let sp = (p as i64 - d0).rem_euclid(h as i64) as usize;
        let sq = (q as i64 - d1).rem_euclid(w as i64) as usize;
        *v = src[[sp, sq]];
    }
}

/// `x^γ` on [0, 1], linearly interpolated between 1025 exact values: error below 1e-3
/// (a quarter of an 8-bit grey level) for the γ ranges presets use, worst next to 0 where
/// γ < 1 makes the curve steep; one table per section costs ~1,000 `powf` instead of one
/// per voxel.
struct GammaTable(Vec<f32>);

impl GammaTable {
    const N: usize = 1024;

    fn new(g: f32) -> Self {
        Self(
            (0..=Self::N)
                .map(|i| (i as f32 / Self::N as f32).powf(g))
                .collect(),
        )
    }

    fn get(&self, v: f32) -> f32 {
        let t = v * Self::N as f32;
        let i = (t as usize).min(Self::N - 1);
        let w = t - i as f32;
        self.0[i] + (self.0[i + 1] - self.0[i]) * w
    }
}

/// Uniform in `[lo, hi]`.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, r: [f32; 2]) -> f32 {
    if r[0] >= r[1] {
        r[0]
    } else {
        rng.random_range(r[0]..=r[1])
    }
}

/// Two independent standard normal draws (Box–Muller).
fn normal_pair(rng: &mut ChaCha8Rng) -> (f32, f32) {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
    (r * c, r * s)
}

/// `n` distinct sections (at most all of them), at least `margin` from either end.
fn pick_sections(rng: &mut ChaCha8Rng, nz: usize, n: usize, margin: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (margin..nz.saturating_sub(margin)).collect();
    all.shuffle(rng);
    all.truncate(n);
    all
}

/// A random cuboid with sides `ratio` of each axis (z too when `with_z`).
fn cuboid(
    rng: &mut ChaCha8Rng,
    shape: [usize; 3],
    ratio: [f32; 2],
    with_z: bool,
) -> ([usize; 3], [usize; 3]) {
    let mut lo = [0; 3];
    let mut hi = shape;
    for a in 0..3 {
        if a == 0 && !with_z {
            continue;
        }
        let side = ((shape[a] as f32 * uniform(rng, ratio)).round() as usize).clamp(1, shape[a]);
        lo[a] = rng.random_range(0..=shape[a] - side);
        hi[a] = lo[a] + side;
    }
    (lo, hi)
}

/// Downsample by `f` per axis (linear sampling at the coarse voxel centres) and back up
/// (nearest): the look of a lower-resolution acquisition.
fn down_up(region: &Array3<f32>, f: [f32; 3]) -> Array3<f32> {
    let dims = region.dim();
    let src = region.as_slice().expect("owned region");
    let n = [dims.0, dims.1, dims.2];
    Array3::from_shape_fn(dims, |(z, y, x)| {
        let c = |i: usize, a: usize| {
            let coarse = ((i as f32 / f[a]) as usize) as f32;
            ((coarse + 0.5) * f[a] - 0.5).clamp(0.0, (n[a] - 1) as f32)
        };
        f32::sample(src, dims, c(z, 0), c(y, 1), c(x, 2))
    })
}

/// A random affine matrix (input = M · (output − centre) + centre).
fn affine_matrix(
    rng: &mut ChaCha8Rng,
    rotation: [f32; 3],
    scale: f32,
    shear: f32,
    isotropic: bool,
) -> [[f32; 3]; 3] {
    let planes = [(1, 2), (0, 2), (0, 1)];
    let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for (i, &(p, q)) in planes.iter().enumerate() {
        if rotation[i] > 0.0 {
            let a = rng.random_range(-rotation[i]..=rotation[i]).to_radians();
            m = geometry::mat_mul(&m, &geometry::rotation(p, q, a));
        }
    }
    let first = if isotropic { 0 } else { 1 };
    if shear > 0.0 {
        let mut sh = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        for (i, row) in sh.iter_mut().enumerate().skip(first) {
            for (j, v) in row.iter_mut().enumerate().skip(first) {
                if i != j {
                    *v = rng.random_range(-shear..=shear);
                }
            }
        }
        m = geometry::mat_mul(&m, &sh);
    }
    if scale > 0.0 {
        let mut sc = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        for (a, row) in sc.iter_mut().enumerate().skip(first) {
            row[a] = 1.0 / rng.random_range(1.0 - scale..=1.0 + scale);
        }
        m = geometry::mat_mul(&m, &sc);
    }
    m
}

fn misalign(
    s: &mut Sample,
    rng: &mut ChaCha8Rng,
    displacement: usize,
    mode: MisalignMode,
    rotation: f32,
    mask: bool,
) {
    let [nz, ny, nx] = s.shape();
    let d = displacement as i64;
    let (dy, dx) = (rng.random_range(-d..=d), rng.random_range(-d..=d));
    let slip = match mode {
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
    let angle = if rotation > 0.0 {
        rng.random_range(-rotation..=rotation).to_radians()
    } else {
        0.0
    };
    fn moved<T: Voxel>(mut sec: Array3<T>, angle: f32, dy: i64, dx: i64) -> Array3<T> {
        if angle != 0.0 {
            sec = geometry::affine(sec.view(), &geometry::rotation(1, 2, angle));
        }
        geometry::shift_section(&mut sec, 0, dy, dx);
        sec
    }
    fn move_section<T: Voxel>(a: &mut Array3<T>, z: usize, angle: f32, dy: i64, dx: i64) {
        let sec = moved(a.slice(s![z..z + 1, .., ..]).to_owned(), angle, dy, dx);
        a.slice_mut(s![z..z + 1, .., ..]).assign(&sec);
    }
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
        if mask {
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
}

fn copy_paste(s: &mut Sample, rng: &mut ChaCha8Rng, new_id: bool, tries: usize) -> Result<()> {
    let Some(label) = s.labels.first() else {
        return Err(AugmentError::BadSample(
            "copy_paste needs a label volume".into(),
        ));
    };
    let dims = label.dim();
    // Objects and their bounding boxes.
    let mut boxes: std::collections::BTreeMap<u32, ([usize; 3], [usize; 3])> =
        std::collections::BTreeMap::new();
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
    let Some((at, _)) = best else { return Ok(()) };
    let value = if new_id {
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
