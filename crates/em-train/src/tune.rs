//! Choosing the decoding threshold of an affinity prediction: each threshold is decoded
//! and scored against skeletons (NERL, as BANIS picks its threshold) or ground-truth labels
//! (VOI, adapted Rand), as `em tune` does.

use std::path::PathBuf;

use em_core::{AnyArray, Progress, VoxelSize};
use em_decode::{affinity_cc_any, CcOptions};
use em_metrics::{erl, Contingency, ErlReport, Skeletons, VoxelMetrics};

use crate::{Result, TrainError};

/// The most thresholds one tuning decodes (each is a whole decode of the volume).
pub const MAX_THRESHOLDS: usize = 1000;

/// The merge thresholds of the adapted NERLs reported per threshold.
pub const TUNE_MERGE_THRESHOLDS: [Option<u64>; 4] = [Some(5), Some(20), Some(100), None];

/// BANIS's threshold list: sigmoid(0.2k), k = −1..11.
pub fn default_thresholds() -> Vec<f32> {
    (-1..=11)
        .map(|k| 1.0 / (1.0 + (-0.2 * k as f64).exp()))
        .map(|t| t as f32)
        .collect()
}

/// What to tune.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// Affinities `(C, Z, Y, X)`.
    pub affinities: PathBuf,
    /// Skeletons to score by NERL (JSON, .swc or a directory of .swc).
    pub skeletons: Option<PathBuf>,
    /// Ground-truth labels to score by VOI and adapted Rand.
    pub gt: Option<PathBuf>,
    /// The thresholds, 1 to [`MAX_THRESHOLDS`] finite values.
    pub thresholds: Vec<f32>,
    /// Channels, storage and threads of the decode (its threshold is replaced).
    pub cc: CcOptions,
    /// Voxel size for skeleton lengths.
    pub voxel_size: VoxelSize,
}

/// One threshold's decode and scores.
#[derive(Clone, Debug)]
pub struct TuneRow {
    /// The threshold.
    pub threshold: f32,
    /// Components of the decode.
    pub components: u64,
    /// Scores against the skeletons.
    pub erl: Option<ErlReport>,
    /// Scores against the ground truth.
    pub voxel: Option<VoxelMetrics>,
}

/// Every threshold's scores and the best.
#[derive(Clone, Debug)]
pub struct TuneReport {
    /// One row per threshold, in the order given.
    pub rows: Vec<TuneRow>,
    /// The best row: the highest NERL with skeletons, else the lowest VOI.
    pub best: usize,
    /// `"nerl"` or `"voi"`.
    pub criterion: &'static str,
}

impl TuneReport {
    /// The best row.
    pub fn best_row(&self) -> Option<&TuneRow> {
        self.rows.get(self.best)
    }
}

fn invalid(name: &str, reason: String) -> TrainError {
    TrainError::InvalidParameter {
        name: name.into(),
        reason,
    }
}

/// Decodes the affinities at every threshold and scores each decode.
///
/// # Errors
/// Neither skeletons nor ground truth, bad thresholds, affinities or labels that cannot be
/// read or decoded, skeletons that do not fit the volume.
pub fn tune_thresholds(opts: &TuneOptions, progress: &dyn Progress) -> Result<TuneReport> {
    if opts.skeletons.is_none() && opts.gt.is_none() {
        return Err(invalid(
            "tune",
            "give skeletons (NERL) and/or ground truth (VOI) to score the thresholds".into(),
        ));
    }
    if opts.thresholds.is_empty()
        || opts.thresholds.len() > MAX_THRESHOLDS
        || !opts.thresholds.iter().all(|t| t.is_finite())
    {
        return Err(invalid(
            "thresholds",
            format!("give 1 to {MAX_THRESHOLDS} finite thresholds"),
        ));
    }
    let aff: AnyArray = em_io::read(&opts.affinities)?;
    let skeletons = match &opts.skeletons {
        Some(p) => Some(Skeletons::read(p, opts.voxel_size)?),
        None => None,
    };
    let gt = match &opts.gt {
        Some(p) => {
            let labels = em_core::to_labels_and_mask::<u64>(&em_io::read(p)?)?.0;
            let dims = labels.shape().to_vec();
            Some(
                labels
                    .into_dimensionality::<ndarray::Ix3>()
                    .map_err(|_| invalid("ground truth", format!("shape {dims:?}; must be 3-D")))?,
            )
        }
        None => None,
    };
    progress.start("decoding thresholds", opts.thresholds.len() as u64);
    let mut rows = Vec::with_capacity(opts.thresholds.len());
    for &threshold in &opts.thresholds {
        let cc = CcOptions {
            threshold,
            ..opts.cc.clone()
        };
        let seg = affinity_cc_any::<u64>(&aff, &cc).map_err(|e| {
            invalid(
                "affinities",
                format!("decoding {} at {threshold}: {e}", opts.affinities.display()),
            )
        })?;
        let erl = match &skeletons {
            Some(s) => Some(erl(s, &s.lookup(seg.view())?, &TUNE_MERGE_THRESHOLDS)?),
            None => None,
        };
        let voxel = match &gt {
            Some(g) => Some(VoxelMetrics::from_contingency(&Contingency::new(
                g.view(),
                seg.view(),
            )?)?),
            None => None,
        };
        rows.push(TuneRow {
            threshold,
            components: seg.iter().copied().max().unwrap_or(0),
            erl,
            voxel,
        });
        progress.advance(1);
    }
    progress.finish();
    let criterion = if skeletons.is_some() { "nerl" } else { "voi" };
    let score = |r: &TuneRow| match (&r.erl, &r.voxel) {
        (Some(e), _) if skeletons.is_some() => e.nerl,
        (_, Some(v)) if skeletons.is_none() => -v.voi,
        _ => f64::NEG_INFINITY,
    };
    let best = (0..rows.len())
        .max_by(|&a, &b| score(&rows[a]).total_cmp(&score(&rows[b])))
        .unwrap_or(0);
    Ok(TuneReport {
        rows,
        best,
        criterion,
    })
}
