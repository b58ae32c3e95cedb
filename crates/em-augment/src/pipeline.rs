//! Ordered pipelines of transforms with per-transform probabilities, loaded from TOML.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::geometry::ViewOp;
use crate::transforms::{uniform, Transform, Weighted};
use crate::{AugmentError, Result, Sample};

/// The random generator pipelines draw from (ChaCha8: the same stream on every platform).
pub type AugmentRng = ChaCha8Rng;

/// A generator for `seed`.
pub fn rng_from_seed(seed: u64) -> AugmentRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A transform and the probability that it fires.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// Probability in [0, 1].
    pub p: f32,
    /// The transform.
    #[serde(flatten)]
    pub transform: Transform,
}

fn split_table(
    mut t: toml::Table,
    key: &str,
    default: f32,
) -> std::result::Result<(f32, Transform), String> {
    let v = match t.remove(key) {
        None => default,
        Some(toml::Value::Float(f)) => f as f32,
        Some(toml::Value::Integer(i)) => i as f32,
        Some(other) => return Err(format!("`{key}` must be a number, got {other}")),
    };
    let transform: Transform = t.try_into().map_err(|e: toml::de::Error| e.to_string())?;
    Ok((v, transform))
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (p, transform) = split_table(toml::Table::deserialize(d)?, "p", 1.0)
            .map_err(serde::de::Error::custom)?;
        Ok(Self { p, transform })
    }
}

impl<'de> Deserialize<'de> for Weighted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let t = toml::Table::deserialize(d)?;
        if t.contains_key("p") {
            return Err(serde::de::Error::custom(
                "a `one_of` candidate takes `weight`, not `p` (the `one_of` itself has `p`)",
            ));
        }
        let (weight, transform) =
            split_table(t, "weight", 1.0).map_err(serde::de::Error::custom)?;
        Ok(Self { weight, transform })
    }
}

/// An ordered list of transforms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// What the pipeline is for.
    #[serde(default)]
    pub description: String,
    /// z is the section axis of anisotropic serial-section data: section transforms act on
    /// it, and nothing turns it into an in-plane axis.
    #[serde(default = "yes")]
    pub anisotropic: bool,
    /// The steps, in order.
    #[serde(default)]
    pub transforms: Vec<Step>,
}

fn yes() -> bool {
    true
}

/// The presets shipped in `presets/augment/`, by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("light", include_str!("../../../presets/augment/light.toml")),
    (
        "realistic",
        include_str!("../../../presets/augment/realistic.toml"),
    ),
    ("heavy", include_str!("../../../presets/augment/heavy.toml")),
    (
        "superres",
        include_str!("../../../presets/augment/superres.toml"),
    ),
    (
        "instance",
        include_str!("../../../presets/augment/instance.toml"),
    ),
    ("banis", include_str!("../../../presets/augment/banis.toml")),
    (
        "em_neuron",
        include_str!("../../../presets/augment/em_neuron.toml"),
    ),
];

impl Pipeline {
    /// Parses and validates a TOML pipeline; `source_name` names it in errors.
    ///
    /// # Errors
    /// Parse errors (unknown keys and transform types with the allowed ones) and settings
    /// out of range.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self> {
        let p: Self = toml::from_str(text).map_err(|e| AugmentError::Parse {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
        p.validate()?;
        Ok(p)
    }

    /// A preset by name ([`PRESETS`]) or a TOML file by path.
    ///
    /// # Errors
    /// As [`Pipeline::from_toml`]; unknown names list the presets.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((name, text)) = PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_toml(text, name);
        }
        let path = std::path::Path::new(name_or_path);
        if !path.is_file() {
            return Err(AugmentError::UnknownPreset {
                name: name_or_path.into(),
                known: PRESETS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| AugmentError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Checks probabilities and settings.
    ///
    /// # Errors
    /// [`AugmentError::InvalidSetting`] naming the transform.
    pub fn validate(&self) -> Result<()> {
        for step in &self.transforms {
            if !(0.0..=1.0).contains(&step.p) {
                return Err(AugmentError::InvalidSetting {
                    transform: step.transform.name().into(),
                    reason: format!("probability p = {} is outside [0, 1]", step.p),
                });
            }
            step.transform.validate(self.anisotropic)?;
        }
        Ok(())
    }

    /// Checks the pipeline against a patch `[Z, Y, X]` (kernels that do not fit, section
    /// transforms on 2-D patches); call it once before training.
    ///
    /// # Errors
    /// [`AugmentError::InvalidSetting`] naming the transform and the patch.
    pub fn check(&self, shape: [usize; 3]) -> Result<()> {
        self.transforms
            .iter()
            .try_for_each(|s| s.transform.check_shape(shape))
    }

    /// Applies the pipeline to one sample: each step fires with its probability, in order
    /// (batch-level `mixup` is left to [`Pipeline::apply_batch`]). Returns the names of the
    /// transforms that ran.
    ///
    /// # Errors
    /// Samples whose volumes disagree in shape, or that the pipeline does not fit.
    pub fn apply(&self, sample: &mut Sample, rng: &mut AugmentRng) -> Result<Vec<&'static str>> {
        sample.check()?;
        self.check(sample.shape())?;
        sample.standardize();
        let mut ran = Vec::new();
        // Runs of flips, turns and permutations compose into one copy of each volume.
        let mut pending = ViewOp::IDENTITY;
        let flush = |sample: &mut Sample, op: &mut ViewOp| {
            if *op != ViewOp::IDENTITY {
                let o = *op;
                sample.map_volumes(|a| o.apply(a), |a| o.apply(a), |a| o.apply(a));
                *op = ViewOp::IDENTITY;
            }
        };
        for step in &self.transforms {
            if matches!(step.transform, Transform::Mixup { .. }) {
                continue;
            }
            // Always draw, so that one step's probability does not shift later draws.
            let fire = rng.random::<f32>() < step.p;
            if !fire {
                continue;
            }
            let shape = pending.shape(sample.shape());
            if let Some(op) = step.transform.view_op(rng, shape) {
                pending = pending.then(op);
                ran.push(step.transform.name());
            } else {
                flush(sample, &mut pending);
                ran.push(step.transform.apply(sample, rng, self.anisotropic)?);
            }
        }
        flush(sample, &mut pending);
        Ok(ran)
    }

    /// [`Pipeline::apply`] with a generator seeded by `seed`.
    ///
    /// # Errors
    /// As [`Pipeline::apply`].
    pub fn apply_seeded(&self, sample: &mut Sample, seed: u64) -> Result<Vec<&'static str>> {
        self.apply(sample, &mut rng_from_seed(seed))
    }

    /// Applies the pipeline to every sample of a batch (sample i seeded from `seed` and i),
    /// then the batch-level steps (`mixup`: each sample, with the step's probability, is
    /// blended with another sample of the batch as it was before mixing).
    ///
    /// # Errors
    /// As [`Pipeline::apply`]; batches whose images differ in shape.
    pub fn apply_batch(&self, batch: &mut [Sample], seed: u64) -> Result<Vec<Vec<&'static str>>> {
        let mut ran = Vec::with_capacity(batch.len());
        for (i, s) in batch.iter_mut().enumerate() {
            let mut rng = rng_from_seed(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            ran.push(self.apply(s, &mut rng)?);
        }
        let mixups: Vec<(f32, [f32; 2])> = self
            .transforms
            .iter()
            .filter_map(|s| match s.transform {
                Transform::Mixup { alpha } => Some((s.p, alpha)),
                _ => None,
            })
            .collect();
        if mixups.is_empty() || batch.len() < 2 {
            return Ok(ran);
        }
        if batch.iter().any(|s| s.image.dim() != batch[0].image.dim()) {
            return Err(AugmentError::BadSample(
                "mixup needs images of one shape across the batch".into(),
            ));
        }
        let mut rng = rng_from_seed(seed.wrapping_add(0x006d_6978_7570));
        for (p, alpha) in mixups {
            let originals: Vec<_> = batch.iter().map(|s| s.image.clone()).collect();
            for (i, s) in batch.iter_mut().enumerate() {
                let fire = rng.random::<f32>() < p;
                if !fire {
                    continue;
                }
                let mut j = rng.random_range(0..originals.len() - 1);
                if j >= i {
                    j += 1;
                }
                let a = uniform(&mut rng, alpha);
                s.image
                    .zip_mut_with(&originals[j], |x, &y| *x = a * *x + (1.0 - a) * y);
                ran[i].push("mixup");
            }
        }
        Ok(ran)
    }
}
