//! Variation of information and Rand scores between a ground truth and a prediction, with
//! funlib.evaluate's conventions: voxels where the ground truth is 0 are ignored, the
//! prediction's 0 is an ordinary segment, logarithms are base 2.

use serde::Serialize;

use crate::contingency::{Contingency, IdMap};
use crate::{MetricsError, Result};

/// VOI and Rand scores (funlib.evaluate's `rand_voi`), plus scikit-image's variant of the
/// adapted Rand error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct VoxelMetrics {
    /// H(prediction | ground truth): how much the prediction splits ground-truth objects.
    pub voi_split: f64,
    /// H(ground truth | prediction): how much it merges them.
    pub voi_merge: f64,
    /// `voi_split + voi_merge`.
    pub voi: f64,
    /// `voi_split` / H(ground truth, prediction) (funlib's `nvi_split`).
    pub nvi_split: f64,
    /// `voi_merge` / H(ground truth, prediction).
    pub nvi_merge: f64,
    /// Normalised information distance, 1 − I / max(H(gt), H(pred)).
    pub nid: f64,
    /// Σn²ᵢⱼ / Σaᵢ² (a: ground-truth sizes): 1 when nothing is split.
    pub rand_split: f64,
    /// Σn²ᵢⱼ / Σbⱼ² (b: prediction sizes within labelled ground truth): 1 when nothing is merged.
    pub rand_merge: f64,
    /// Adapted Rand error, 1 − 2Σn²ᵢⱼ / (Σaᵢ² + Σbⱼ²) (funlib).
    pub arand: f64,
    /// scikit-image's `adapted_rand_error`, which leaves out the pairs of a voxel with itself.
    pub arand_skimage: f64,
    /// scikit-image's `precision` of that error, (Σn² − n) / (Σa² − n).
    pub arand_skimage_precision: f64,
    /// scikit-image's `recall`, (Σn² − n) / (Σb² − n).
    pub arand_skimage_recall: f64,
    /// Labelled ground-truth voxels (the `n` of all sums).
    pub voxels: u64,
}

impl VoxelMetrics {
    /// The metrics of a contingency table.
    ///
    /// # Errors
    /// [`MetricsError::EmptyGroundTruth`] when no ground-truth voxel is labelled.
    pub fn from_contingency(table: &Contingency) -> Result<Self> {
        let mut a: IdMap<u64, u64> = IdMap::default();
        let mut b: IdMap<u64, u64> = IdMap::default();
        let (mut n, mut sum_n2, mut sum_nlogn) = (0u64, 0u128, 0f64);
        for (&(g, p), &c) in &table.pairs {
            if g == 0 {
                continue;
            }
            n += c;
            sum_n2 += u128::from(c) * u128::from(c);
            sum_nlogn += xlog2x(c);
            *a.entry(g).or_insert(0) += c;
            *b.entry(p).or_insert(0) += c;
        }
        if n == 0 {
            return Err(MetricsError::EmptyGroundTruth);
        }
        let sum_sq = |m: &IdMap<u64, u64>| {
            m.values()
                .map(|&c| u128::from(c) * u128::from(c))
                .sum::<u128>()
        };
        let sum_xlogx = |m: &IdMap<u64, u64>| m.values().map(|&c| xlog2x(c)).sum::<f64>();
        let (sum_a2, sum_b2) = (sum_sq(&a), sum_sq(&b));
        let nf = n as f64;
        let log_n = nf.log2();
        // H(X) = log n − (1/n) Σ c log c, exact up to rounding of the sums.
        let h_joint = log_n - sum_nlogn / nf;
        let h_gt = log_n - sum_xlogx(&a) / nf;
        let h_pred = log_n - sum_xlogx(&b) / nf;
        let voi_split = (h_joint - h_gt).max(0.0);
        let voi_merge = (h_joint - h_pred).max(0.0);
        let mutual = h_gt + h_pred - h_joint;
        let ratio = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
        let (n2, a2, b2) = (sum_n2 as f64, sum_a2 as f64, sum_b2 as f64);
        let precision = ratio(n2 - nf, a2 - nf);
        let recall = ratio(n2 - nf, b2 - nf);
        Ok(Self {
            voi_split,
            voi_merge,
            voi: voi_split + voi_merge,
            nvi_split: ratio(voi_split, h_joint),
            nvi_merge: ratio(voi_merge, h_joint),
            // Both partitions trivial (one segment each): identical, distance 0.
            nid: if h_gt.max(h_pred) > 0.0 {
                1.0 - mutual / h_gt.max(h_pred)
            } else {
                0.0
            },
            rand_split: n2 / a2,
            rand_merge: n2 / b2,
            arand: 1.0 - 2.0 * n2 / (a2 + b2),
            arand_skimage: if precision + recall > 0.0 {
                1.0 - 2.0 * precision * recall / (precision + recall)
            } else {
                1.0
            },
            arand_skimage_precision: precision,
            arand_skimage_recall: recall,
            voxels: n,
        })
    }
}

fn xlog2x(c: u64) -> f64 {
    if c <= 1 {
        0.0
    } else {
        let c = c as f64;
        c * c.log2()
    }
}
