//! Intensity transforms: they change image values only.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{check_range, uniform, Augment};
use crate::{AugmentRng, Result, Sample};

/// `x → ((x·m + a − mean)·contrast + mean)^γ`, optionally per section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Intensity {
    /// Multiplier range.
    pub multiply: [f32; 2],
    /// Offset range.
    pub add: [f32; 2],
    /// Contrast range (around the mean).
    pub contrast: [f32; 2],
    /// Gamma range (applied to values clipped to [0, 1]).
    pub gamma: [f32; 2],
    /// Draw the factors per section (EM sections differ in brightness).
    pub per_section: bool,
    /// Clip the result to [0, 1].
    pub clip: bool,
}

impl Default for Intensity {
    /// The identity: every factor 1, no offset.
    fn default() -> Self {
        Self {
            multiply: [1.0, 1.0],
            add: [0.0, 0.0],
            contrast: [1.0, 1.0],
            gamma: [1.0, 1.0],
            per_section: false,
            clip: false,
        }
    }
}

/// Additive Gaussian noise with σ drawn from `std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    /// σ range.
    pub std: [f32; 2],
    /// Clip the result to [0, 1].
    #[serde(default)]
    pub clip: bool,
}

impl Augment for Intensity {
    fn name(&self) -> &'static str {
        "intensity"
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        let name = self.name();
        check_range(name, "multiply", self.multiply, 0.0, 100.0)?;
        check_range(name, "add", self.add, -100.0, 100.0)?;
        check_range(name, "contrast", self.contrast, 0.0, 100.0)?;
        check_range(name, "gamma", self.gamma, 0.01, 100.0)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let (per_section, clip) = (self.per_section, self.clip);
        let draws = if per_section { s.shape()[0] } else { 1 };
        let factors: Vec<[f32; 4]> = (0..draws)
            .map(|_| {
                [
                    uniform(rng, self.multiply),
                    uniform(rng, self.add),
                    uniform(rng, self.contrast),
                    uniform(rng, self.gamma),
                ]
            })
            .collect();
        for mut ch in s.image.outer_iter_mut() {
            for (z, mut sec) in ch.outer_iter_mut().enumerate() {
                let [m, a, c, g] = factors[if per_section { z } else { 0 }];
                let mean = if c != 1.0 {
                    sec.mean().unwrap_or(0.0) * m + a
                } else {
                    0.0
                };
                // γ through a table over [0, 1]: powf per voxel was the pipeline's single
                // largest cost.
                let lut = (g != 1.0).then(|| GammaTable::new(g));
                sec.mapv_inplace(|v| {
                    let mut v = (v * m + a - mean) * c + mean;
                    if let Some(t) = &lut {
                        v = t.get(v.clamp(0.0, 1.0));
                    }
                    if clip {
                        v = v.clamp(0.0, 1.0);
                    }
                    v
                });
            }
        }
        Ok(())
    }
}

impl Augment for Noise {
    fn name(&self) -> &'static str {
        "noise"
    }

    fn validate(&self, _anisotropic: bool) -> Result<()> {
        check_range(self.name(), "std", self.std, 0.0, 100.0)
    }

    fn apply(&self, s: &mut Sample, rng: &mut AugmentRng, _anisotropic: bool) -> Result<()> {
        let (sd, clip) = (uniform(rng, self.std), self.clip);
        let data = s.image.as_slice_mut().expect("standard layout");
        // Box–Muller gives two independent normals per pair of uniforms.
        for pair in data.chunks_mut(2) {
            let (a, b) = normal_pair(rng);
            for (v, n) in pair.iter_mut().zip([a, b]) {
                *v += sd * n;
                if clip {
                    *v = v.clamp(0.0, 1.0);
                }
            }
        }
        Ok(())
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

/// Two independent standard normal draws (Box–Muller).
fn normal_pair(rng: &mut AugmentRng) -> (f32, f32) {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
    (r * c, r * s)
}
