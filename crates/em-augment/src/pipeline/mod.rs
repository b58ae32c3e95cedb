//! Ordered pipelines of transforms with per-transform probabilities, loaded from TOML.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

mod mixup;
mod one_of;

pub use mixup::Mixup;
pub use one_of::Weighted;
pub(crate) use one_of::ONE_OF;

use crate::geometry::ViewOp;
use crate::transforms::{invalid, Augment, Role, Transform};
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

/// `p` when a step leaves it out: the step always fires.
const DEFAULT_P: f32 = 1.0;
/// `weight` when a `one_of` candidate leaves it out.
const DEFAULT_WEIGHT: f32 = 1.0;

/// Splits the number `key` (default `default`) off a step's table and parses the rest as
/// the transform: `p` and `weight` belong to the step, not to the transform's settings.
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
        let (p, transform) = split_table(toml::Table::deserialize(d)?, "p", DEFAULT_P)
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
            split_table(t, "weight", DEFAULT_WEIGHT).map_err(serde::de::Error::custom)?;
        Ok(Self { weight, transform })
    }
}

/// An ordered list of transforms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pipeline {
    /// What the pipeline is for.
    pub description: String,
    /// z is the section axis of anisotropic serial-section data: section transforms act on
    /// it, and nothing turns it into an in-plane axis.
    pub anisotropic: bool,
    /// The steps, in order.
    pub transforms: Vec<Step>,
}

impl Default for Pipeline {
    /// No steps, for anisotropic serial-section data (what most EM is).
    fn default() -> Self {
        Self {
            description: String::new(),
            anisotropic: true,
            transforms: Vec::new(),
        }
    }
}

/// The presets shipped in `presets/augment/`, by name.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "light",
        include_str!("../../../../presets/augment/light.toml"),
    ),
    (
        "realistic",
        include_str!("../../../../presets/augment/realistic.toml"),
    ),
    (
        "heavy",
        include_str!("../../../../presets/augment/heavy.toml"),
    ),
    (
        "superres",
        include_str!("../../../../presets/augment/superres.toml"),
    ),
    (
        "instance",
        include_str!("../../../../presets/augment/instance.toml"),
    ),
    (
        "banis",
        include_str!("../../../../presets/augment/banis.toml"),
    ),
    (
        "em_neuron",
        include_str!("../../../../presets/augment/em_neuron.toml"),
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
        let presets = em_core::config::Presets {
            kind: "augmentation",
            builtin: PRESETS,
        };
        if let Some(text) = presets.get(name_or_path) {
            return Self::from_toml(text, name_or_path);
        }
        match presets.read(name_or_path) {
            Ok(source) => Self::from_toml(&source.text, &source.origin),
            Err(em_core::CoreError::UnknownPreset { name, known, .. }) => {
                Err(AugmentError::UnknownPreset { name, known })
            }
            Err(e) => Err(AugmentError::Parse {
                source_name: name_or_path.into(),
                message: e.to_string(),
            }),
        }
    }

    /// Checks probabilities and settings.
    ///
    /// # Errors
    /// [`AugmentError::InvalidParameter`] naming the transform.
    pub fn validate(&self) -> Result<()> {
        for step in &self.transforms {
            if !(0.0..=1.0).contains(&step.p) {
                return Err(invalid(
                    step.transform.name(),
                    format!("probability p = {} is outside [0, 1]", step.p),
                ));
            }
            validate_transform(&step.transform, self.anisotropic)?;
        }
        Ok(())
    }

    /// Checks the pipeline against a patch `[Z, Y, X]` (kernels that do not fit, section
    /// transforms on 2-D patches); call it once before training.
    ///
    /// # Errors
    /// [`AugmentError::InvalidParameter`] naming the transform and the patch.
    pub fn check(&self, shape: [usize; 3]) -> Result<()> {
        self.transforms
            .iter()
            .try_for_each(|s| check_transform(&s.transform, shape))
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
            let role = step.transform.role();
            if let Role::Batch(_) = role {
                continue;
            }
            // Always draw, so that one step's probability does not shift later draws.
            let fire = rng.random::<f32>() < step.p;
            if !fire {
                continue;
            }
            if let Role::Sample(op) = role {
                let shape = pending.shape(sample.shape());
                if let Some(view) = op.view_op(rng, shape) {
                    pending = pending.then(view);
                    ran.push(op.name());
                    continue;
                }
            }
            flush(sample, &mut pending);
            ran.push(apply_transform(
                &step.transform,
                sample,
                rng,
                self.anisotropic,
            )?);
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
        let mixups: Vec<(f32, &Mixup)> = self
            .transforms
            .iter()
            .filter_map(|s| match s.transform.role() {
                Role::Batch(m) => Some((s.p, m)),
                _ => None,
            })
            .collect();
        mixup::blend(batch, &mixups, seed, &mut ran)?;
        Ok(ran)
    }
}

/// Checks a transform's settings that do not depend on the patch.
fn validate_transform(t: &Transform, anisotropic: bool) -> Result<()> {
    match t.role() {
        Role::Sample(op) => op.validate(anisotropic),
        Role::Batch(mixup) => mixup.validate(),
        Role::OneOf(candidates) => one_of::validate(candidates, anisotropic),
    }
}

/// Checks a transform against the patch shape `[Z, Y, X]`.
fn check_transform(t: &Transform, shape: [usize; 3]) -> Result<()> {
    match t.role() {
        Role::Sample(op) => check_sample_op(op, shape),
        Role::Batch(_) => Ok(()),
        Role::OneOf(candidates) => candidates
            .iter()
            .try_for_each(|c| check_transform(&c.transform, shape)),
    }
}

/// Refuses section transforms on 2-D patches before the transform's own checks, which may
/// assume more than one section.
fn check_sample_op(op: &dyn Augment, shape: [usize; 3]) -> Result<()> {
    if op.needs_sections() && shape[0] < 2 {
        return Err(invalid(
            op.name(),
            format!("acts on z sections, but the patch {shape:?} is 2-D (one section)"),
        ));
    }
    op.check_shape(shape)
}

/// Applies a transform that fires; returns the name of what ran (for `one_of`, the
/// candidate it picked). Batch steps do nothing here: they wait for the whole batch.
fn apply_transform(
    t: &Transform,
    sample: &mut Sample,
    rng: &mut AugmentRng,
    anisotropic: bool,
) -> Result<&'static str> {
    match t.role() {
        Role::Sample(op) => {
            op.apply(sample, rng, anisotropic)?;
            Ok(op.name())
        }
        Role::Batch(_) => Ok(Mixup::NAME),
        Role::OneOf(candidates) => {
            apply_transform(one_of::pick(candidates, rng)?, sample, rng, anisotropic)
        }
    }
}
