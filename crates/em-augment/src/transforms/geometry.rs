//! Geometric transforms: they move the image and every label and mask volume together.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{check_range, check_sigma_fits, invalid, uniform, Augment, SpatialAxis};
use crate::geometry::{self, ViewOp};
use crate::{AugmentRng, Result, Sample};

/// Mirror the listed axes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Flip {
    /// Axes flipped when the transform fires.
    pub axes: Vec<SpatialAxis>,
}

impl Default for Flip {
    fn default() -> Self {
        Self {
            axes: super::all_axes(),
        }
    }
}

/// 1, 2 or 3 quarter turns (uniform) in a plane; planes with unequal sides only turn by two
/// quarters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rot90 {
    /// The plane, e.g. `["y", "x"]`.
    pub plane: [SpatialAxis; 2],
}

impl Default for Rot90 {
    fn default() -> Self {
        Self {
            plane: [SpatialAxis::Y, SpatialAxis::X],
        }
    }
}

/// A random non-identity permutation of the three axes (isotropic cubes only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// Braces, not a unit struct: `type = "permute"` with stray keys must still be refused.
pub struct Permute {}

/// Rotation, scaling and shear about the patch centre; reflection padding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Affine {
    /// Largest rotation in degrees in the planes (y, x), (z, x), (z, y); anisotropic
    /// pipelines allow only the first.
    pub rotation: [f32; 3],
    /// Scale factors drawn from [1 − scale, 1 + scale] per axis (in-plane only when
    /// anisotropic).
    pub scale: f32,
    /// Shear factors drawn from [−shear, shear] for each pair of allowed axes.
    pub shear: f32,
}

/// In-plane elastic deformation: uniform noise smoothed by a Gaussian of σ (voxels), scaled
/// by α, the same field for every section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Elastic {
    /// σ range.
    pub sigma: [f32; 2],
    /// α range.
    pub alpha: [f32; 2],
}

/// Applies a drawn axis rearrangement to every volume at once.
fn apply_view(op: Option<ViewOp>, s: &mut Sample) {
    if let Some(op) = op {
        s.map_volumes(|a| op.apply(a), |a| op.apply(a), |a| op.apply(a));
    }
}

impl Augment for Flip {
    fn name(&self) -> &'static str {
        "flip"
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        if self.axes.is_empty() {
            return Err(invalid(self.name(), "`axes` is empty".into()));
        }
        Ok(())
    }

    fn view_op(&self, _rng: &mut AugmentRng, _shape: [usize; 3]) -> Option<ViewOp> {
        let axes: Vec<usize> = self.axes.iter().map(|a| a.index()).collect();
        Some(ViewOp::flips(&axes))
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        apply_view(self.view_op(rng, s.shape()), s);
        Ok(())
    }
}

impl Augment for Rot90 {
    fn name(&self) -> &'static str {
        "rot90"
    }

    fn validate(&self, anisotropic: bool) -> Result<()> {
        let plane = self.plane;
        if plane[0] == plane[1] {
            return Err(invalid(
                self.name(),
                format!("plane {plane:?} needs two different axes"),
            ));
        }
        if anisotropic && plane.contains(&SpatialAxis::Z) {
            return Err(invalid(
                self.name(),
                format!(
                    "plane {plane:?} turns the anisotropic z axis into an in-plane one; \
                     use [\"y\", \"x\"] or set `anisotropic = false`"
                ),
            ));
        }
        Ok(())
    }

    fn view_op(&self, rng: &mut AugmentRng, shape: [usize; 3]) -> Option<ViewOp> {
        let (p, q) = (self.plane[0].index(), self.plane[1].index());
        // A single quarter turn of a non-square plane would change the patch shape.
        let k = if shape[p] == shape[q] {
            rng.random_range(1..4)
        } else {
            2
        };
        Some(ViewOp::rot90(p, q, k))
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        apply_view(self.view_op(rng, s.shape()), s);
        Ok(())
    }
}

impl Augment for Permute {
    fn name(&self) -> &'static str {
        "permute"
    }

    fn validate(&self, anisotropic: bool) -> Result<()> {
        if anisotropic {
            return Err(invalid(
                self.name(),
                "permuting axes mixes the anisotropic z axis with y and x; set \
                 `anisotropic = false` for isotropic data"
                    .into(),
            ));
        }
        Ok(())
    }

    fn check_shape(&self, shape: [usize; 3]) -> Result<()> {
        if !(shape[0] == shape[1] && shape[1] == shape[2]) {
            return Err(invalid(
                self.name(),
                format!("needs a cube to keep the patch shape, got {shape:?}"),
            ));
        }
        Ok(())
    }

    fn view_op(&self, rng: &mut AugmentRng, _shape: [usize; 3]) -> Option<ViewOp> {
        const PERMS: [[usize; 3]; 5] = [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        Some(ViewOp::permute(PERMS[rng.random_range(0..5)]))
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        apply_view(self.view_op(rng, s.shape()), s);
        Ok(())
    }
}

impl Augment for Affine {
    fn name(&self) -> &'static str {
        "affine"
    }

    fn validate(&self, anisotropic: bool) -> Result<()> {
        let Self {
            rotation,
            scale,
            shear,
        } = self;
        if anisotropic && (rotation[1] != 0.0 || rotation[2] != 0.0) {
            return Err(invalid(
                self.name(),
                format!(
                    "rotation {rotation:?} tilts sections out of plane on anisotropic data; \
                     only the first (y, x) angle may be non-zero"
                ),
            ));
        }
        if rotation.iter().any(|r| !r.is_finite() || *r < 0.0) {
            return Err(invalid(
                self.name(),
                format!("rotation {rotation:?}: angles are ≥ 0"),
            ));
        }
        if !(0.0..1.0).contains(scale) || !(0.0..=1.0).contains(shear) {
            return Err(invalid(
                self.name(),
                format!("scale {scale} (in [0, 1)) and shear {shear} (in [0, 1])"),
            ));
        }
        Ok(())
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, anisotropic: bool) -> Result<()> {
        let m = self.matrix(rng, !anisotropic);
        s.map_volumes(
            |a| geometry::affine(a, &m),
            |a| geometry::affine(a, &m),
            |a| geometry::affine(a, &m),
        );
        Ok(())
    }
}

impl Affine {
    /// A random affine matrix (input = M · (output − centre) + centre); on anisotropic data
    /// shear and scale leave z alone.
    fn matrix(&self, rng: &mut AugmentRng, isotropic: bool) -> [[f32; 3]; 3] {
        let planes = [(1, 2), (0, 2), (0, 1)];
        let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        for (i, &(p, q)) in planes.iter().enumerate() {
            if self.rotation[i] > 0.0 {
                let a = rng
                    .random_range(-self.rotation[i]..=self.rotation[i])
                    .to_radians();
                m = geometry::mat_mul(&m, &geometry::rotation(p, q, a));
            }
        }
        let first = if isotropic { 0 } else { 1 };
        let shear = self.shear;
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
        let scale = self.scale;
        if scale > 0.0 {
            let mut sc = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
            for (a, row) in sc.iter_mut().enumerate().skip(first) {
                row[a] = 1.0 / rng.random_range(1.0 - scale..=1.0 + scale);
            }
            m = geometry::mat_mul(&m, &sc);
        }
        m
    }
}

impl Augment for Elastic {
    fn name(&self) -> &'static str {
        "elastic"
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        check_range(self.name(), "sigma", self.sigma, 0.1, 1e3)?;
        check_range(self.name(), "alpha", self.alpha, 0.0, 1e5)
    }

    fn check_shape(&self, shape: [usize; 3]) -> Result<()> {
        check_sigma_fits(self.name(), self.sigma, shape)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let [_, ny, nx] = s.shape();
        let sigma = uniform(rng, self.sigma);
        let alpha = uniform(rng, self.alpha);
        let field = |rng: &mut AugmentRng| {
            let mut f: Vec<f32> = (0..ny * nx).map(|_| rng.random_range(-1.0..=1.0)).collect();
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
        Ok(())
    }
}
