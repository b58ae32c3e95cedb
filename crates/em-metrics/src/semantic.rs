//! Semantic (per-class) overlap scores and instance matching.

use serde::Serialize;

use crate::contingency::{Contingency, IdMap};

/// Overlap of one class between ground truth and prediction.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ClassScores {
    /// The class id (for binary masks: 1 = foreground, every non-zero value).
    pub class: u64,
    /// Intersection over union (Jaccard), `tp / (tp + fp + fn)`; 1 when the class is absent
    /// from both.
    pub iou: f64,
    /// Dice, `2tp / (2tp + fp + fn)`; 1 when absent from both.
    pub dice: f64,
    /// `tp / (tp + fp)`; 1 without predicted voxels.
    pub precision: f64,
    /// `tp / (tp + fn)`; 1 without ground-truth voxels.
    pub recall: f64,
    /// Voxels of the class in both.
    pub tp: u64,
    /// Voxels predicted as the class but not in the ground truth.
    pub fp: u64,
    /// Ground-truth voxels of the class missed by the prediction.
    pub fn_: u64,
}

impl ClassScores {
    /// The scores of `class` from its true-positive, false-positive and false-negative
    /// voxel counts.
    pub fn from_counts(class: u64, tp: u64, fp: u64, fn_: u64) -> Self {
        let r = |num: u64, den: u64| {
            if den == 0 {
                1.0
            } else {
                num as f64 / den as f64
            }
        };
        Self {
            class,
            iou: r(tp, tp + fp + fn_),
            dice: r(2 * tp, 2 * tp + fp + fn_),
            precision: r(tp, tp + fp),
            recall: r(tp, tp + fn_),
            tp,
            fp,
            fn_,
        }
    }
}

/// Foreground (non-zero) against background: the binary-mask scores.
pub fn binary_scores(table: &Contingency) -> ClassScores {
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (&(g, p), &n) in &table.pairs {
        match (g != 0, p != 0) {
            (true, true) => tp += n,
            (false, true) => fp += n,
            (true, false) => fn_ += n,
            (false, false) => {}
        }
    }
    ClassScores::from_counts(1, tp, fp, fn_)
}

/// Scores of every class id present in either volume except 0 (multi-class masks: class ids
/// are the values), in ascending class order.
pub fn class_scores(table: &Contingency) -> Vec<ClassScores> {
    let (a, b) = table.marginals();
    let mut classes: Vec<u64> = a
        .keys()
        .chain(b.keys())
        .copied()
        .filter(|&c| c != 0)
        .collect();
    classes.sort_unstable();
    classes.dedup();
    classes
        .into_iter()
        .map(|c| {
            let tp = table.pairs.get(&(c, c)).copied().unwrap_or(0);
            let in_gt = a.get(&c).copied().unwrap_or(0);
            let in_pred = b.get(&c).copied().unwrap_or(0);
            ClassScores::from_counts(c, tp, in_pred - tp, in_gt - tp)
        })
        .collect()
}

/// Instances matched one-to-one at an IoU threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceMatching {
    /// The IoU a pair needs (strictly more).
    pub threshold: f64,
    /// Matched (gt id, pred id, IoU), by decreasing IoU.
    pub matches: Vec<(u64, u64, f64)>,
    /// Ground-truth instances (non-zero ids).
    pub gt_instances: u64,
    /// Predicted instances (non-zero ids).
    pub pred_instances: u64,
    /// Matches / predicted instances (1 without predictions).
    pub precision: f64,
    /// Matches / ground-truth instances (1 without ground truth).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Mean IoU of the matched pairs (0 without matches).
    pub mean_matched_iou: f64,
}

/// Matches ground-truth and predicted instances (non-zero ids) whose IoU exceeds
/// `threshold`, greedily by decreasing IoU (ties: smaller gt id, then smaller pred id), each
/// instance at most once. At thresholds ≥ 0.5 every such pair is unique and greedy
/// matching is the optimal one.
pub fn match_instances(table: &Contingency, threshold: f64) -> InstanceMatching {
    let (a, b) = table.marginals();
    let count = |m: &IdMap<u64, u64>| m.keys().filter(|&&k| k != 0).count() as u64;
    let mut candidates: Vec<(u64, u64, f64)> = table
        .pairs
        .iter()
        .filter(|(&(g, p), _)| g != 0 && p != 0)
        .map(|(&(g, p), &n)| {
            let union = a[&g] + b[&p] - n;
            (g, p, n as f64 / union as f64)
        })
        .filter(|&(_, _, iou)| iou > threshold)
        .collect();
    candidates.sort_unstable_by(|x, y| y.2.total_cmp(&x.2).then(x.0.cmp(&y.0)).then(x.1.cmp(&y.1)));
    let mut used_g: IdMap<u64, ()> = IdMap::default();
    let mut used_p: IdMap<u64, ()> = IdMap::default();
    let mut matches = Vec::new();
    for (g, p, iou) in candidates {
        if used_g.contains_key(&g) || used_p.contains_key(&p) {
            continue;
        }
        used_g.insert(g, ());
        used_p.insert(p, ());
        matches.push((g, p, iou));
    }
    let (ng, np, m) = (count(&a), count(&b), matches.len() as u64);
    let r = |num: u64, den: u64| {
        if den == 0 {
            1.0
        } else {
            num as f64 / den as f64
        }
    };
    let (precision, recall) = (r(m, np), r(m, ng));
    InstanceMatching {
        threshold,
        gt_instances: ng,
        pred_instances: np,
        precision,
        recall,
        f1: if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        },
        mean_matched_iou: if matches.is_empty() {
            0.0
        } else {
            matches.iter().map(|x| x.2).sum::<f64>() / matches.len() as f64
        },
        matches,
    }
}
