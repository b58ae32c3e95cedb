//! The transforms' settings, one type per transform (one TOML table each, tagged by
//! `type`), and [`Transform`], the union that presets parse into.

// Adding a transform: a struct with its settings in the file of its kind (or a new file),
// implementing `Augment`, and one line in the `transforms!` list below. The pipeline reaches
// per-sample transforms only through the trait, so nothing else changes.

mod blur;
mod copy_paste;
mod cut;
mod geometry;
mod intensity;
mod sections;
mod slices;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub use crate::pipeline::{Mixup, Weighted};
pub use blur::{MotionBlur, OutOfFocus};
pub use copy_paste::CopyPaste;
pub use cut::{CutBlur, CutNoise};
pub use geometry::{Affine, Elastic, Flip, Permute, Rot90};
pub use intensity::{Intensity, Noise};
pub use sections::{
    LostMode, LostSection, MisalignMode, Misalignment, MissingParts, MissingSection,
};
pub use slices::{SliceDrop, SliceShift};

use crate::geometry::ViewOp;
use crate::{AugmentError, AugmentRng, Result, Sample};

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
    /// The axis' position in `[Z, Y, X]`.
    fn index(self) -> usize {
        self as usize
    }
}

/// What a transform that acts on each sample on its own provides. The pipeline only ever
/// sees transforms through this trait, so each concern lives with the transform's settings.
pub(crate) trait Augment {
    /// The `type` name in presets, also what [`crate::Pipeline::apply`] reports.
    fn name(&self) -> &'static str;

    /// Whether it acts on z sections: a 2-D patch (one section) cannot take it.
    fn needs_sections(&self) -> bool {
        false
    }

    /// Checks settings that do not depend on the patch, when the pipeline loads.
    fn validate(&self, _anisotropic: bool) -> Result<()> {
        Ok(())
    }

    /// Checks settings against the patch shape `[Z, Y, X]`; the pipeline has already
    /// refused section transforms on 2-D patches.
    fn check_shape(&self, _shape: [usize; 3]) -> Result<()> {
        Ok(())
    }

    /// For transforms that only rearrange axes (flips, quarter turns, permutations): the
    /// signed axis permutation this firing applies to a volume of `shape`, drawing its
    /// random parts. The pipeline composes runs of them so the volumes are copied once.
    fn view_op(&self, _rng: &mut AugmentRng, _shape: [usize; 3]) -> Option<ViewOp> {
        None
    }

    /// Applies the transform (the pipeline has decided that it fires).
    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, anisotropic: bool) -> Result<()>;
}

/// What the pipeline does with a step: most act on each sample alone; `mixup` and `one_of`
/// are the pipeline's own (they need the batch, or choose among other transforms).
pub(crate) enum Role<'a> {
    /// Acts on one sample.
    Sample(&'a dyn Augment),
    /// Blends samples of a batch, after the per-sample steps.
    Batch(&'a Mixup),
    /// Runs one of its candidates.
    OneOf(&'a [Weighted]),
}

/// The role of a variant's settings: per-sample for every [`Augment`] type (the pipeline's
/// own kinds say theirs), so a new transform needs no entry here.
pub(crate) trait HasRole {
    /// How the pipeline runs it.
    fn role(&self) -> Role<'_>;
}

impl<T: Augment> HasRole for T {
    fn role(&self) -> Role<'_> {
        Role::Sample(self)
    }
}

/// Declares [`Transform`] from the list of its variants and the one match that reaches
/// their settings, so a new transform is one line of the list.
macro_rules! transforms {
    ($($(#[$doc:meta])* $variant:ident($settings:ty),)*) => {
        /// One transform and its settings. In a preset each is a `[[transforms]]` table with
        /// `type = "…"`, the settings of the type it wraps, and `p` (the probability it
        /// fires).
        #[derive(Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        pub enum Transform {
            $($(#[$doc])* $variant($settings),)*
            /// Exactly one of `transforms` (picked by `weight`): EM defects are mutually
            /// exclusive per sample. A struct variant, unlike the others, because callers
            /// destructure it as `Transform::OneOf { transforms }`.
            OneOf {
                /// The candidates (each may carry `weight`, default 1; no `p`).
                transforms: Vec<Weighted>,
            },
        }

        impl Transform {
            /// The one place the enum meets the per-transform types.
            pub(crate) fn role(&self) -> Role<'_> {
                match self {
                    $(Self::$variant(t) => t.role(),)*
                    Self::OneOf { transforms } => Role::OneOf(transforms),
                }
            }
        }

        // By hand, so that a transform prints like its TOML table, `Flip { axes: [Z] }`,
        // rather than `Flip(Flip { … })`.
        impl std::fmt::Debug for Transform {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $(Self::$variant(t) => t.fmt(f),)*
                    Self::OneOf { transforms } => {
                        f.debug_struct("OneOf").field("transforms", transforms).finish()
                    }
                }
            }
        }
    };
}

// The order is the order of the "expected one of" list in parse errors.
transforms! {
    /// Mirror axes ([`Flip`]).
    Flip(Flip),
    /// Quarter turns in a plane ([`Rot90`]).
    Rot90(Rot90),
    /// A random permutation of the axes ([`Permute`]).
    Permute(Permute),
    /// Rotation, scaling and shear ([`Affine`]).
    Affine(Affine),
    /// In-plane elastic deformation ([`Elastic`]).
    Elastic(Elastic),
    /// Brightness, contrast and gamma ([`Intensity`]).
    Intensity(Intensity),
    /// Additive Gaussian noise ([`Noise`]).
    Noise(Noise),
    /// Shifted sections ([`Misalignment`]).
    Misalignment(Misalignment),
    /// Filled sections ([`MissingSection`]).
    MissingSection(MissingSection),
    /// Sections replaced by a neighbour ([`LostSection`]).
    LostSection(LostSection),
    /// A hole in one section ([`MissingParts`]).
    MissingParts(MissingParts),
    /// Directional blur of sections ([`MotionBlur`]).
    MotionBlur(MotionBlur),
    /// Gaussian blur of sections ([`OutOfFocus`]).
    OutOfFocus(OutOfFocus),
    /// Noise in a random cuboid ([`CutNoise`]).
    CutNoise(CutNoise),
    /// Lower resolution in a random cuboid ([`CutBlur`]).
    CutBlur(CutBlur),
    /// Zeroed slices ([`SliceDrop`]).
    SliceDrop(SliceDrop),
    /// Rolled slices ([`SliceShift`]).
    SliceShift(SliceShift),
    /// Batch-level blending ([`Mixup`]).
    Mixup(Mixup),
    /// A labelled object copied elsewhere ([`CopyPaste`]).
    CopyPaste(CopyPaste),
}

impl Transform {
    /// The `type` name.
    pub fn name(&self) -> &'static str {
        match self.role() {
            Role::Sample(op) => op.name(),
            Role::Batch(_) => Mixup::NAME,
            Role::OneOf(_) => crate::pipeline::ONE_OF,
        }
    }
}

/// The error for a setting `name` (a transform, or `pipeline`) refuses.
pub(crate) fn invalid(name: &str, reason: String) -> AugmentError {
    AugmentError::InvalidParameter {
        name: name.into(),
        reason,
    }
}

/// Checks that the range `r` is ordered and within `[lo, hi]`.
pub(crate) fn check_range(name: &str, what: &str, r: [f32; 2], lo: f32, hi: f32) -> Result<()> {
    if !(r[0].is_finite() && r[1].is_finite() && r[0] <= r[1] && r[0] >= lo && r[1] <= hi) {
        return Err(invalid(
            name,
            format!("{what} {r:?}: need lo ≤ hi within [{lo}, {hi}]"),
        ));
    }
    Ok(())
}

/// Checks that a probability lies in [0, 1].
fn check_unit(name: &str, what: &str, v: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        return Err(invalid(name, format!("{what} {v} is outside [0, 1]")));
    }
    Ok(())
}

/// Checks that a Gaussian of σ up to `sigma[1]` (kernel ±3σ) fits in the section.
fn check_sigma_fits(name: &str, sigma: [f32; 2], shape: [usize; 3]) -> Result<()> {
    if 3.0 * sigma[1] > shape[1].min(shape[2]) as f32 {
        return Err(invalid(
            name,
            format!(
                "σ up to {} needs a kernel of ±{} voxels, larger than the section ({} × {})",
                sigma[1],
                (3.0 * sigma[1]).ceil(),
                shape[1],
                shape[2]
            ),
        ));
    }
    Ok(())
}

/// The default of `n` for section defects: two sections per firing.
fn default_sections() -> usize {
    2
}

/// The default of `axes`: all three.
fn all_axes() -> Vec<SpatialAxis> {
    vec![SpatialAxis::Z, SpatialAxis::Y, SpatialAxis::X]
}

/// Uniform in `[lo, hi]`.
pub(crate) fn uniform(rng: &mut AugmentRng, r: [f32; 2]) -> f32 {
    if r[0] >= r[1] {
        r[0]
    } else {
        rng.random_range(r[0]..=r[1])
    }
}

/// `n` distinct sections (at most all of them), at least `margin` from either end.
fn pick_sections(rng: &mut AugmentRng, nz: usize, n: usize, margin: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (margin..nz.saturating_sub(margin)).collect();
    all.shuffle(rng);
    all.truncate(n);
    all
}
