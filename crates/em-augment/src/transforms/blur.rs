//! Blurred sections: motion blur and out-of-focus.

use ndarray::Axis;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{check_sigma_fits, default_sections, invalid, pick_sections, uniform, Augment};
use crate::{geometry, AugmentRng, Result, Sample};

/// Directional blur of `n` sections: a box kernel of `kernel` voxels along y or x.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionBlur {
    /// Sections per firing.
    #[serde(default = "default_sections")]
    pub n: usize,
    /// Kernel length (odd).
    pub kernel: usize,
}

/// Out-of-focus sections: in-plane Gaussian blur of `n` sections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutOfFocus {
    /// Sections per firing.
    #[serde(default = "default_sections")]
    pub n: usize,
    /// σ range (voxels).
    pub sigma: [f32; 2],
}

/// Convolves section `z` of every image channel with `kernel` along each of `axes` (0 = y,
/// 1 = x) in turn.
fn blur_section(s: &mut Sample, z: usize, kernel: &[f32], axes: &[usize]) {
    for mut ch in s.image.outer_iter_mut() {
        let mut sec = ch.index_axis_mut(Axis(0), z);
        let mut buf = sec.to_owned();
        for &a in axes {
            geometry::convolve_axis(&mut buf, kernel, a);
        }
        sec.assign(&buf);
    }
}

impl Augment for MotionBlur {
    fn name(&self) -> &'static str {
        "motion_blur"
    }

    fn needs_sections(&self) -> bool {
        true
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        let (n, kernel) = (self.n, self.kernel);
        if n == 0 || kernel.is_multiple_of(2) {
            return Err(invalid(
                self.name(),
                format!("n {n} ≥ 1 and an odd kernel, got {kernel}"),
            ));
        }
        Ok(())
    }

    fn check_shape(&self, shape: [usize; 3]) -> Result<()> {
        let kernel = self.kernel;
        if kernel > shape[1].min(shape[2]) {
            return Err(invalid(
                self.name(),
                format!(
                    "kernel {kernel} is larger than the section ({} × {})",
                    shape[1], shape[2]
                ),
            ));
        }
        Ok(())
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        for z in pick_sections(rng, s.shape()[0], self.n, 0) {
            let along_x = rng.random_bool(0.5);
            let k = vec![1.0 / self.kernel as f32; self.kernel];
            blur_section(s, z, &k, &[usize::from(along_x)]);
        }
        Ok(())
    }
}

impl Augment for OutOfFocus {
    fn name(&self) -> &'static str {
        "out_of_focus"
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
        check_sigma_fits(self.name(), self.sigma, shape)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        for z in pick_sections(rng, s.shape()[0], self.n, 0) {
            let k = geometry::gaussian_kernel(uniform(rng, self.sigma));
            blur_section(s, z, &k, &[0, 1]);
        }
        Ok(())
    }
}
