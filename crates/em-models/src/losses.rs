//! Training losses: BCE with logits (masks, `pos_weight`), soft Dice, their weighted sum and a
//! deep-supervision wrapper. All take logits `(N, C, Z, Y, X)` and targets in [0, 1] of the
//! same shape; masks (1 = counts) are optional.

use burn::tensor::backend::Backend;
use burn::tensor::{activation, Tensor};
use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// The weight of positive voxels in BCE.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosWeight {
    /// One value for every channel (1: plain BCE).
    Fixed(f32),
    /// Per channel `min(negatives / positives, 10)` of the (masked) target.
    Auto,
}

fn check<B: Backend>(
    logits: &Tensor<B, 5>,
    target: &Tensor<B, 5>,
    mask: Option<&Tensor<B, 5>>,
) -> Result<()> {
    let (a, b) = (logits.dims(), target.dims());
    if a != b || mask.is_some_and(|m| m.dims() != a) {
        return Err(ModelError::BadInput {
            expected: format!("target and mask of the logits' shape {a:?}"),
            found: mask.map_or(b.to_vec(), |m| m.dims().to_vec()),
        });
    }
    Ok(())
}

/// Per-channel sums over batch and space, as `(1, C, 1, 1, 1)`.
fn channel_sum<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 5> {
    x.sum_dim(0).sum_dim(2).sum_dim(3).sum_dim(4)
}

/// Binary cross-entropy with logits, mean over the mask (PyTorch's numerically stable
/// form), with a positive-class weight.
///
/// # Errors
/// [`ModelError::BadInput`] for shape mismatches.
pub fn bce_with_logits<B: Backend>(
    logits: Tensor<B, 5>,
    target: Tensor<B, 5>,
    mask: Option<Tensor<B, 5>>,
    pos_weight: PosWeight,
) -> Result<Tensor<B, 1>> {
    check(&logits, &target, mask.as_ref())?;
    let mask = mask.unwrap_or_else(|| target.ones_like());
    let c = logits.dims()[1];
    let pw: Tensor<B, 5> = match pos_weight {
        PosWeight::Fixed(w) => Tensor::full([1, c, 1, 1, 1], w, &logits.device()),
        PosWeight::Auto => {
            let pos = channel_sum(target.clone() * mask.clone()).detach();
            let all = channel_sum(mask.clone()).detach();
            ((all - pos.clone()) / pos.clamp_min(1e-6)).clamp_max(10.0)
        }
    };
    // loss = −(w·y·log σ(x) + (1 − y)·log σ(−x)); burn's log-sigmoid is stable for large |x|
    // and differentiable at 0 (a max/abs form would give a one-sided gradient there).
    let log_p = activation::log_sigmoid(logits.clone());
    let log_q = activation::log_sigmoid(logits.neg());
    let loss = (pw * target.clone() * log_p + (target.neg() + 1.0) * log_q).neg();
    let denom = mask.clone().sum().clamp_min(1.0);
    Ok((loss * mask).sum() / denom)
}

/// Soft Dice loss on sigmoid probabilities, `1 − (2Σpy + s)/(Σp + Σy + s)` per channel over
/// batch and space within the mask, averaged over channels.
///
/// # Errors
/// [`ModelError::BadInput`] for shape mismatches.
pub fn soft_dice<B: Backend>(
    logits: Tensor<B, 5>,
    target: Tensor<B, 5>,
    mask: Option<Tensor<B, 5>>,
    smooth: f32,
) -> Result<Tensor<B, 1>> {
    check(&logits, &target, mask.as_ref())?;
    let p = activation::sigmoid(logits);
    let (p, y) = match mask {
        Some(m) => (p * m.clone(), target * m),
        None => (p, target),
    };
    let inter = channel_sum(p.clone() * y.clone());
    let denom = channel_sum(p) + channel_sum(y);
    let dice = (inter * 2.0 + smooth) / (denom + smooth);
    Ok((dice.neg() + 1.0).mean().reshape([1]))
}

/// A weighted sum of BCE and Dice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Weight of BCE (0 to leave it out).
    pub bce: f32,
    /// Weight of soft Dice.
    pub dice: f32,
    /// BCE positive weight.
    pub pos_weight: PosWeight,
    /// Dice smoothing.
    pub smooth: f32,
    /// Logits are clamped to ±this before the loss (PyTC: 20).
    pub clamp: f32,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            bce: 1.0,
            dice: 1.0,
            pos_weight: PosWeight::Fixed(1.0),
            smooth: 1e-5,
            clamp: 20.0,
        }
    }
}

impl LossConfig {
    /// The loss of one output.
    ///
    /// # Errors
    /// [`ModelError::BadInput`] for shape mismatches.
    pub fn loss<B: Backend>(
        &self,
        logits: Tensor<B, 5>,
        target: Tensor<B, 5>,
        mask: Option<Tensor<B, 5>>,
    ) -> Result<Tensor<B, 1>> {
        let logits = logits.clamp(-self.clamp, self.clamp);
        let mut total = Tensor::zeros([1], &logits.device());
        if self.bce != 0.0 {
            total = total
                + bce_with_logits(
                    logits.clone(),
                    target.clone(),
                    mask.clone(),
                    self.pos_weight,
                )? * self.bce;
        }
        if self.dice != 0.0 {
            total = total + soft_dice(logits, target, mask, self.smooth)? * self.dice;
        }
        Ok(total)
    }

    /// Deep supervision: the weighted sum of the losses of `outputs` (full resolution first,
    /// then 1/2, 1/4, …), each against the target and mask downsampled to its size
    /// (`average` for soft targets and masks, else nearest). `weights` default to nnU-Net's
    /// 1/2^i, normalised.
    ///
    /// # Errors
    /// [`ModelError::BadInput`] when an output's size is not the target's divided by 2^i.
    pub fn deep_supervision<B: Backend>(
        &self,
        outputs: &[Tensor<B, 5>],
        target: Tensor<B, 5>,
        mask: Option<Tensor<B, 5>>,
        weights: Option<&[f32]>,
        average: bool,
    ) -> Result<Tensor<B, 1>> {
        let default: Vec<f32> = {
            let raw: Vec<f32> = (0..outputs.len()).map(|i| 0.5f32.powi(i as i32)).collect();
            let s: f32 = raw.iter().sum();
            raw.iter().map(|w| w / s).collect()
        };
        let weights = weights.unwrap_or(&default);
        let mut total = Tensor::zeros([1], &target.device());
        for (i, (out, &w)) in outputs.iter().zip(weights).enumerate() {
            let f = 1usize << i;
            let t = downsample(target.clone(), f, average)?;
            let m = mask.clone().map(|m| downsample(m, f, true)).transpose()?;
            if t.dims() != out.dims() {
                return Err(ModelError::BadInput {
                    expected: format!(
                        "deep-supervision output {i} at 1/{f} of the target {:?}",
                        target.dims()
                    ),
                    found: out.dims().to_vec(),
                });
            }
            total = total + self.loss(out.clone(), t, m)? * w;
        }
        Ok(total)
    }
}

/// Downsamples `(N, C, Z, Y, X)` by `f` per spatial axis: block average, or the first voxel
/// of each block (nearest).
///
/// # Errors
/// [`ModelError::BadInput`] when a side is not a multiple of `f`.
pub fn downsample<B: Backend>(x: Tensor<B, 5>, f: usize, average: bool) -> Result<Tensor<B, 5>> {
    if f == 1 {
        return Ok(x);
    }
    let [n, c, z, y, w] = x.dims();
    if z % f != 0 || y % f != 0 || w % f != 0 {
        return Err(ModelError::BadInput {
            expected: format!("sides divisible by {f}"),
            found: vec![n, c, z, y, w],
        });
    }
    let blocks: Tensor<B, 8> = x.reshape([n, c, z / f, f, y / f, f, w / f, f]);
    let picked = if average {
        blocks.mean_dim(3).mean_dim(5).mean_dim(7)
    } else {
        blocks.narrow(3, 0, 1).narrow(5, 0, 1).narrow(7, 0, 1)
    };
    Ok(picked.reshape([n, c, z / f, y / f, w / f]))
}
