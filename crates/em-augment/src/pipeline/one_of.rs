//! `one_of`: each firing runs exactly one of its candidates, picked by weight — EM defects
//! are mutually exclusive per sample.

use rand::Rng;
use serde::Serialize;

use crate::transforms::{invalid, Role};
use crate::{AugmentRng, Result, Transform};

/// The `type` name of a `one_of` step.
pub(crate) const ONE_OF: &str = "one_of";

/// A candidate of `one_of`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Weighted {
    /// Relative weight (default 1).
    pub weight: f32,
    /// The transform.
    #[serde(flatten)]
    pub transform: Transform,
}

/// Checks weights and candidates: they must be per-sample transforms, since neither a batch
/// step nor another choice can run inside a choice.
pub(super) fn validate(candidates: &[Weighted], anisotropic: bool) -> Result<()> {
    if candidates.is_empty() {
        return Err(invalid(ONE_OF, "no candidates".into()));
    }
    for c in candidates {
        let name = c.transform.name();
        if !(c.weight.is_finite() && c.weight > 0.0) {
            return Err(invalid(
                ONE_OF,
                format!("weight {} of {name} must be > 0", c.weight),
            ));
        }
        if !matches!(c.transform.role(), Role::Sample(_)) {
            return Err(invalid(ONE_OF, format!("{name} cannot be a candidate")));
        }
        super::validate_transform(&c.transform, anisotropic)?;
    }
    Ok(())
}

/// Draws a candidate with probability proportional to its weight.
///
/// # Errors
/// No candidates or no positive total weight: a `one_of` built in code that `load`'s
/// checks never saw (the draw would have no range).
pub(super) fn pick<'a>(candidates: &'a [Weighted], rng: &mut AugmentRng) -> Result<&'a Transform> {
    let total: f32 = candidates.iter().map(|t| t.weight).sum();
    let Some(last) = candidates
        .last()
        .filter(|_| total.is_finite() && total > 0.0)
    else {
        return Err(invalid(
            ONE_OF,
            format!("no candidates with a positive weight (total {total})"),
        ));
    };
    let mut r = rng.random_range(0.0..total);
    let mut pick = &last.transform;
    for t in candidates {
        if r < t.weight {
            pick = &t.transform;
            break;
        }
        r -= t.weight;
    }
    Ok(pick)
}
