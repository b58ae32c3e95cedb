//! `mixup`: a batch-level step, run by [`crate::Pipeline::apply_batch`] after every sample
//! has been through the per-sample steps.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::transforms::{check_range, uniform, HasRole, Role};
use crate::{rng_from_seed, AugmentError, Result, Sample};

/// Batch-level: the image becomes `α·image + (1 − α)·other` with another sample of the
/// batch (labels unchanged). Applied by [`crate::Pipeline::apply_batch`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mixup {
    /// α range.
    pub alpha: [f32; 2],
}

impl HasRole for Mixup {
    fn role(&self) -> Role<'_> {
        Role::Batch(self)
    }
}

impl Mixup {
    /// The `type` name.
    pub(crate) const NAME: &'static str = "mixup";

    /// Checks α.
    pub(super) fn validate(&self) -> Result<()> {
        check_range(Self::NAME, "alpha", self.alpha, 0.0, 1.0)
    }
}

/// Runs the batch's mixup `steps` (probability and settings, in pipeline order) on `batch`,
/// recording what fired in `ran`. Each sample is blended with another as it was before this
/// step, so the order of the batch does not matter.
pub(super) fn blend(
    batch: &mut [Sample],
    steps: &[(f32, &Mixup)],
    seed: u64,
    ran: &mut [Vec<&'static str>],
) -> Result<()> {
    if steps.is_empty() || batch.len() < 2 {
        return Ok(());
    }
    if batch.iter().any(|s| s.image.dim() != batch[0].image.dim()) {
        return Err(AugmentError::BadSample(
            "mixup needs images of one shape across the batch".into(),
        ));
    }
    // A stream of its own, so that mixup does not shift the per-sample draws.
    let mut rng = rng_from_seed(seed.wrapping_add(0x006d_6978_7570));
    for &(p, mixup) in steps {
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
            let a = uniform(&mut rng, mixup.alpha);
            s.image
                .zip_mut_with(&originals[j], |x, &y| *x = a * *x + (1.0 - a) * y);
            ran[i].push(Mixup::NAME);
        }
    }
    Ok(())
}
