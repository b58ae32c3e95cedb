//! Validation: predict a whole held-out volume by sliding window and score it — IoU/Dice
//! for one-channel targets, decoded segmentations' VOI and adapted Rand for affinities.

use std::collections::BTreeMap;

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};
use serde::Serialize;

use em_core::{AffinityOffsets, AnyArray, EdgeStorage, NoProgress, Progress, VoxelSize};
use em_data::{synth, Opener, PatchConfig, PatchDataset, SourceConfig, SynthKind, TargetSpec};
use em_metrics::{ClassScores, Contingency, ErlReport, Skeletons, VoxelMetrics};
use em_models::{model_predictor, sliding_window, ConvBackend, Model, SlidingWindowConfig};

use crate::{Result, TrainConfig, TrainError};

/// One validation's scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationLog {
    /// The step after which it ran.
    pub step: usize,
    /// Named scores: `iou`, `dice` (one-channel targets) or `voi`, `voi_split`,
    /// `voi_merge`, `arand`, `threshold` and, with skeletons, `erl` and `nerl`
    /// (affinities, at the threshold with the best NERL, else the best VOI).
    pub metrics: BTreeMap<String, f64>,
    /// Seconds it took.
    pub seconds: f64,
}

impl ValidationLog {
    /// The score where higher is better: IoU, NERL, or −VOI for affinities without
    /// skeletons.
    pub fn score(&self) -> f64 {
        self.metrics
            .get("iou")
            .or_else(|| self.metrics.get("nerl"))
            .copied()
            .or_else(|| self.metrics.get("voi").map(|v| -v))
            .unwrap_or(f64::NEG_INFINITY)
    }
}

/// A held-out volume, its targets and how to score predictions of it.
pub struct Validator {
    image: Array4<f32>,
    target: Array4<f32>,
    mask: Array4<f32>,
    labels: Array3<u32>,
    targets: TargetSpec,
    window: SlidingWindowConfig,
    threshold: f32,
    thresholds: Vec<f32>,
    skeletons: Option<Skeletons>,
}

/// Skeletons of a label volume: one node per cell and section at the cell's centroid,
/// joined through z (what synthetic neurons provide in place of traced skeletons).
///
/// # Errors
/// [`em_metrics::MetricsError`] for an invalid voxel size.
pub fn section_skeletons(labels: &Array3<u32>, voxel_size: [f64; 3]) -> Result<Skeletons> {
    let (nodes, edges) = synth::section_skeletons(labels);
    let vs =
        VoxelSize::new(voxel_size).map_err(|e| TrainError::invalid("voxel_size", e.to_string()))?;
    let vs = vs.zyx();
    let nodes = nodes
        .iter()
        .enumerate()
        .map(|(i, &(skeleton, p))| {
            let p = p.map(f64::from);
            em_metrics::Node {
                id: i as u64,
                skeleton: u64::from(skeleton),
                position: p,
                position_nm: [p[0] * vs[0], p[1] * vs[1], p[2] * vs[2]],
            }
        })
        .collect();
    let edges: Vec<[u64; 2]> = edges.iter().map(|e| e.map(|i| i as u64)).collect();
    Ok(Skeletons::new(nodes, &edges, "section skeletons")?)
}

/// A whole labelled volume with its targets.
#[derive(Clone, Debug)]
pub struct LabelledVolume {
    /// Image `(C, Z, Y, X)` in [0, 1].
    pub image: Array4<f32>,
    /// Labels (unknown and masked voxels 0).
    pub labels: Array3<u32>,
    /// Targets `(K, Z, Y, X)`.
    pub target: Array4<f32>,
    /// Where the targets count `(K, Z, Y, X)`.
    pub mask: Array4<f32>,
}

/// Reads a whole source as one sample and computes its targets.
///
/// # Errors
/// Missing files, a source without labels.
pub fn load_volume(
    source: &SourceConfig,
    targets: &TargetSpec,
    opener: Opener<'_>,
) -> Result<LabelledVolume> {
    let v = source.open(opener)?;
    let name = "validation";
    if v.labels.is_none() {
        return Err(TrainError::invalid(
            format!("{name}.source"),
            "no labels to score against",
        ));
    }
    let shape: Vec<usize> = v.image.shape().iter().map(|&d| d as usize).collect();
    let spatial = [
        shape[shape.len() - 3],
        shape[shape.len() - 2],
        shape[shape.len() - 1],
    ];
    let ds = PatchDataset::new(name, v.image, v.labels, v.mask, PatchConfig::new(spatial))?;
    let mut sample = ds.crop([0, 0, 0])?;
    let (target, mask) = targets.compute(&sample)?;
    let mut labels = sample.labels.swap_remove(0);
    if let Some(valid) = &sample.valid {
        labels.zip_mut_with(valid, |l, &v| {
            if v == 0 {
                *l = 0;
            }
        });
    }
    Ok(LabelledVolume {
        image: sample.image,
        labels,
        target,
        mask,
    })
}

impl Validator {
    /// Loads the validation volume of a config (`None` without `[validation]`) and computes
    /// its targets.
    ///
    /// # Errors
    /// Missing files, a source without labels.
    pub fn new(train: &TrainConfig, opener: Opener<'_>) -> Result<Option<Self>> {
        let Some(cfg) = &train.validation else {
            return Ok(None);
        };
        let targets = &train.targets;
        let LabelledVolume {
            image,
            labels,
            target,
            mask,
        } = load_volume(&cfg.source, targets, opener)?;
        // The inference settings (blending, activation) without test-time augmentation,
        // whose cost would multiply every validation.
        let mut window = train.inference_config();
        window.window = cfg.window.unwrap_or(window.window);
        window.overlap = cfg.overlap;
        window.flip_tta = false;
        window.rot90_tta = false;
        let skeletons = match (&cfg.skeletons, &cfg.source, targets) {
            (_, _, t) if !matches!(t, TargetSpec::Affinities { .. }) => None,
            (Some(path), _, _) => {
                let vs = VoxelSize::new(cfg.voxel_size)
                    .map_err(|e| TrainError::invalid("validation.voxel_size", e.to_string()))?;
                Some(Skeletons::read(path, vs)?)
            }
            (
                None,
                SourceConfig::Synthetic {
                    synth: SynthKind::Neurons,
                    ..
                },
                _,
            ) => Some(section_skeletons(&labels, cfg.voxel_size)?),
            _ => None,
        };
        Ok(Some(Self {
            skeletons,
            image,
            target,
            mask,
            labels,
            targets: targets.clone(),
            window,
            threshold: cfg.threshold,
            thresholds: cfg.thresholds.clone(),
        }))
    }

    /// The validation image `(C, Z, Y, X)`.
    pub fn image(&self) -> &Array4<f32> {
        &self.image
    }

    /// The ground-truth labels (0 where unknown).
    pub fn labels(&self) -> &Array3<u32> {
        &self.labels
    }

    /// Predicts the volume and scores it.
    ///
    /// # Errors
    /// Model failures; scoring failures (no labelled voxel).
    pub fn run<B: ConvBackend>(
        &self,
        model: &Model<B>,
        device: &B::Device,
        step: usize,
    ) -> Result<(ValidationLog, Array4<f32>)> {
        let t0 = std::time::Instant::now();
        let k = self.targets.channels();
        let pred = predict(model, &self.image, k, &self.window, device, &NoProgress)?;
        let mut metrics = BTreeMap::new();
        match &self.targets {
            TargetSpec::Affinities { offsets, storage } => {
                let scores = score_affinities(
                    pred.view(),
                    self.labels.view(),
                    offsets,
                    *storage,
                    &self.thresholds,
                    self.skeletons.as_ref(),
                )?;
                let best = scores
                    .iter()
                    .max_by(|a, b| a.rank().total_cmp(&b.rank()))
                    .ok_or_else(|| {
                        TrainError::invalid("validation.thresholds", "no affinity threshold")
                    })?;
                // Through text so that 0.9f32 is reported as 0.9, not 0.8999999761581421.
                let t: f64 = best.threshold.to_string().parse().unwrap_or(f64::NAN);
                metrics.insert("threshold".into(), t);
                metrics.insert("voi".into(), best.voxel.voi);
                metrics.insert("voi_split".into(), best.voxel.voi_split);
                metrics.insert("voi_merge".into(), best.voxel.voi_merge);
                metrics.insert("arand".into(), best.voxel.arand);
                if let Some(e) = &best.erl {
                    metrics.insert("erl".into(), e.erl);
                    metrics.insert("nerl".into(), e.nerl);
                }
            }
            _ => {
                let s = score_semantic(
                    pred.index_axis(Axis(0), 0),
                    self.target.index_axis(Axis(0), 0),
                    self.mask.index_axis(Axis(0), 0),
                    self.threshold,
                );
                metrics.insert("iou".into(), s.iou);
                metrics.insert("dice".into(), s.dice);
            }
        }
        let log = ValidationLog {
            step,
            metrics,
            seconds: t0.elapsed().as_secs_f64(),
        };
        Ok((log, pred))
    }
}

/// Sliding-window probabilities `(K, Z, Y, X)` of a whole in-memory image `(C, Z, Y, X)`
/// from a model with `k` output channels.
///
/// # Errors
/// Model failures and bad window settings.
pub fn predict<B: ConvBackend>(
    model: &Model<B>,
    image: &Array4<f32>,
    k: usize,
    window: &SlidingWindowConfig,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Array4<f32>> {
    let (_, z, y, x) = image.dim();
    let input = em_core::InMemoryVolume::new(AnyArray::from(image.clone().into_dyn()), "image");
    let output = em_core::InMemoryVolume::new(
        AnyArray::from(Array4::<f32>::zeros((k, z, y, x)).into_dyn()),
        "prediction",
    );
    let mut predictor = model_predictor(model, device);
    sliding_window(&input, &output, window, &mut predictor, progress)?;
    let unreadable = |e: String| TrainError::invalid("prediction", format!("reading it back: {e}"));
    let out = em_core::ChunkedVolumeExt::read_all(&output)
        .map_err(|e| unreadable(e.to_string()))?
        .into_typed::<f32>()
        .map_err(|e| unreadable(e.to_string()))?;
    out.into_dimensionality()
        .map_err(|e| TrainError::invalid("prediction", format!("shape: {e}")))
}

/// IoU/Dice of `pred > threshold` against `target > 0.5` where `mask` is non-zero.
pub fn score_semantic(
    pred: ArrayView3<'_, f32>,
    target: ArrayView3<'_, f32>,
    mask: ArrayView3<'_, f32>,
    threshold: f32,
) -> ClassScores {
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    ndarray::Zip::from(pred)
        .and(target)
        .and(mask)
        .for_each(|&p, &t, &m| {
            if m > 0.0 {
                match (p > threshold, t > 0.5) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    (false, false) => {}
                }
            }
        });
    ClassScores::from_counts(1, tp, fp, fn_)
}

/// The scores of one decode threshold.
#[derive(Clone, Debug)]
pub struct AffinityScores {
    /// The threshold.
    pub threshold: f32,
    /// VOI and Rand against the labels.
    pub voxel: VoxelMetrics,
    /// ERL/NERL against the skeletons, when given.
    pub erl: Option<ErlReport>,
}

impl AffinityScores {
    /// Higher is better: NERL when there are skeletons, else −VOI.
    pub fn rank(&self) -> f64 {
        self.erl.as_ref().map_or(-self.voxel.voi, |e| e.nerl)
    }
}

/// Decodes affinities (their short-range channels) at each threshold and scores the
/// segmentation against `labels` (0 = unlabelled, left out) and, when given, skeletons.
///
/// # Errors
/// Affinities without the three short-range offsets; ground truth with no labelled voxel;
/// skeleton nodes outside the volume.
pub fn score_affinities(
    pred: ArrayView4<'_, f32>,
    labels: ArrayView3<'_, u32>,
    offsets: &AffinityOffsets,
    storage: EdgeStorage,
    thresholds: &[f32],
    skeletons: Option<&Skeletons>,
) -> Result<Vec<AffinityScores>> {
    thresholds
        .iter()
        .map(|&t| {
            let seg = decode(pred, offsets, storage, t)?;
            let voxel = VoxelMetrics::from_contingency(&Contingency::new(labels, seg.view())?)?;
            let erl = skeletons
                .map(|s| -> Result<ErlReport> {
                    let ids = s.lookup(seg.view())?;
                    Ok(em_metrics::erl(s, &ids, &[])?)
                })
                .transpose()?;
            Ok(AffinityScores {
                threshold: t,
                voxel,
                erl,
            })
        })
        .collect()
}

/// Connected components of the unit-offset affinity channels above `threshold`.
///
/// # Errors
/// Affinities without the three unit offsets.
pub fn decode(
    pred: ArrayView4<'_, f32>,
    offsets: &AffinityOffsets,
    storage: EdgeStorage,
    threshold: f32,
) -> Result<Array3<u32>> {
    let short: Vec<usize> = offsets
        .as_slice()
        .iter()
        .enumerate()
        .filter(|(_, o)| o.0.iter().map(|v| v.abs()).sum::<i64>() == 1)
        .map(|(i, _)| i)
        .collect();
    if short.len() != 3 {
        return Err(TrainError::invalid(
            "affinity offsets",
            format!("decoding needs the three unit offsets among them, found channels {short:?}"),
        ));
    }
    let params = em_decode::CcOptions {
        threshold,
        channels: short.clone(),
        offsets: Some(short.iter().map(|&i| offsets.as_slice()[i]).collect()),
        storage,
        threads: None,
    };
    Ok(em_decode::affinity_cc::<f32, u32>(pred, &params)?)
}
