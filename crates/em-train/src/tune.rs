//! Choosing the decoding threshold of an affinity prediction: each threshold is decoded
//! and scored against skeletons (NERL, as BANIS picks its threshold) or ground-truth labels
//! (VOI, adapted Rand), as `em tune` does. The decoder is connected components (a threshold
//! each), waterz (all thresholds in one agglomeration) or the mutex watershed (each value a
//! bias added to the attractive affinities).

use std::path::PathBuf;

use em_core::{AnyArray, Progress, VoxelSize};
use em_decode::waterz::{agglomerate_any, WaterzOptions};
use em_decode::{affinity_cc_any, mutex_watershed, CcOptions, MwsOptions};
use em_metrics::{erl, Contingency, ErlReport, Skeletons, VoxelMetrics};
use ndarray::{Array3, Ix4};

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
    /// The decoder (its threshold, thresholds or bias are replaced by each value).
    pub method: TuneMethod,
    /// Voxel size for skeleton lengths.
    pub voxel_size: VoxelSize,
}

/// The decoder whose parameter is tuned.
#[derive(Clone, Debug)]
pub enum TuneMethod {
    /// Connected components: each value is the threshold.
    Cc(CcOptions),
    /// waterz: each value is a merge threshold (one agglomeration for all).
    Waterz(WaterzOptions),
    /// Mutex watershed: each value is a bias added to the attractive affinities (higher
    /// merges more).
    Mws(MwsOptions),
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

/// Affinities as f32 `(C, Z, Y, X)` (u8 meaning `v / 255`).
fn aff_f32(aff: &AnyArray) -> std::result::Result<ndarray::Array4<f32>, em_decode::DecodeError> {
    let a = match aff {
        AnyArray::U8(a) => a.mapv(|v| f32::from(v) / 255.0),
        other => other.to_f32(),
    };
    let dims = a.shape().to_vec();
    a.into_dimensionality::<Ix4>()
        .map_err(|_| em_decode::DecodeError::NotFourDimensional(dims))
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
    let mut score = |threshold: f32, seg: Array3<u64>| -> Result<()> {
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
        let mut ids: Vec<u64> = seg.iter().copied().filter(|&v| v != 0).collect();
        ids.sort_unstable();
        ids.dedup();
        rows.push(TuneRow {
            threshold,
            components: ids.len() as u64,
            erl,
            voxel,
        });
        progress.advance(1);
        Ok(())
    };
    let failed = |threshold: f32, e: em_decode::DecodeError| {
        invalid(
            "affinities",
            format!("decoding {} at {threshold}: {e}", opts.affinities.display()),
        )
    };
    match &opts.method {
        TuneMethod::Cc(cc) => {
            for &threshold in &opts.thresholds {
                let cc = CcOptions {
                    threshold,
                    ..cc.clone()
                };
                let seg = affinity_cc_any::<u64>(&aff, &cc).map_err(|e| failed(threshold, e))?;
                score(threshold, seg)?;
            }
        }
        TuneMethod::Waterz(w) => {
            let options = WaterzOptions {
                thresholds: opts.thresholds.clone(),
                ..w.clone()
            };
            let mut segs = Vec::new();
            agglomerate_any::<u64>(&aff, None, &options, |r| {
                segs.push((r.threshold, r.segmentation));
                Ok(())
            })
            .map_err(|e| failed(opts.thresholds[0], e))?;
            // Rows in the order given (waterz merges in ascending order).
            for &threshold in &opts.thresholds {
                let (_, seg) = segs
                    .iter()
                    .find(|(t, _)| *t == threshold)
                    .expect("every threshold has its result");
                score(threshold, seg.clone())?;
            }
        }
        TuneMethod::Mws(m) => {
            let base = aff_f32(&aff).map_err(|e| failed(opts.thresholds[0], e))?;
            for &bias in &opts.thresholds {
                let mut biased = base.clone();
                for c in 0..m.attractive.min(biased.shape()[0]) {
                    biased
                        .index_axis_mut(ndarray::Axis(0), c)
                        .mapv_inplace(|v| v + bias);
                }
                let (seg, _) = mutex_watershed::<f32, u64>(biased.view(), m, None)
                    .map_err(|e| failed(bias, e))?;
                score(bias, seg)?;
            }
        }
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
