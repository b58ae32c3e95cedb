//! Cut transforms: a random cuboid gets noise or a lower resolution.

use ndarray::{s, Array3};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{check_range, uniform, Augment};
use crate::geometry::Voxel;
use crate::{AugmentRng, Result, Sample};

/// Uniform noise of amplitude drawn from `scale` in a random cuboid (side fractions from
/// `ratio` per axis), clipped to [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutNoise {
    /// Cuboid side range, fraction of each axis.
    pub ratio: [f32; 2],
    /// Noise amplitude range.
    pub scale: [f32; 2],
}

/// A random cuboid downsampled by a factor from `factor` (linear) and back (nearest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutBlur {
    /// Cuboid side range, fraction of each axis.
    pub ratio: [f32; 2],
    /// Downsampling factor range.
    pub factor: [f32; 2],
    /// Also downsample along z.
    #[serde(default)]
    pub z: bool,
}

impl Augment for CutNoise {
    fn name(&self) -> &'static str {
        "cut_noise"
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        check_range(self.name(), "ratio", self.ratio, 0.0, 1.0)?;
        check_range(self.name(), "scale", self.scale, 0.0, 1.0)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let (lo, hi) = cuboid(rng, s.shape(), self.ratio, true);
        let amp = uniform(rng, self.scale);
        s.image
            .slice_mut(s![.., lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
            .mapv_inplace(|v| (v + rng.random_range(-amp..=amp)).clamp(0.0, 1.0));
        Ok(())
    }
}

impl Augment for CutBlur {
    fn name(&self) -> &'static str {
        "cut_blur"
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        check_range(self.name(), "ratio", self.ratio, 0.0, 1.0)?;
        check_range(self.name(), "factor", self.factor, 1.0, 64.0)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let (lo, hi) = cuboid(rng, s.shape(), self.ratio, true);
        let f = uniform(rng, self.factor);
        let fz = if self.z { f } else { 1.0 };
        for mut ch in s.image.outer_iter_mut() {
            let region = ch
                .slice(s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
                .to_owned();
            let blurred = down_up(&region, [fz, f, f]);
            ch.slice_mut(s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
                .assign(&blurred);
        }
        Ok(())
    }
}

/// A random cuboid with sides `ratio` of each axis (z too when `with_z`).
fn cuboid(
    rng: &mut AugmentRng,
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
