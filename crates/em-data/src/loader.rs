//! A multi-worker prefetching loader: worker threads draw samples, augment them, compute
//! targets, crop the context away and stack batches into a bounded queue; batches come out
//! in order and are the same for any number of workers (each batch's generator is seeded
//! from the loader seed, the epoch and the batch index).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use em_augment::{rng_from_seed, Pipeline, Sample};
use em_core::{AffinityOffsets, EdgeStorage};
use ndarray::{s, Array4, Array5, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, DataError, Result};
use crate::targets;
use crate::Dataset;

/// What the model is trained to predict from the labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// Affinities for `offsets` (BANIS's six by default) in `storage`, after splitting
    /// labels into 6-connected pieces within the crop.
    Affinities {
        /// Offsets, one channel each.
        #[serde(default = "AffinityOffsets::banis")]
        offsets: AffinityOffsets,
        /// Which voxel stores an edge.
        #[serde(default)]
        storage: EdgeStorage,
    },
    /// One channel: labelled (1) or background (0), e.g. mitochondria.
    Foreground,
    /// One channel: instance boundaries.
    Boundary {
        /// Only in-plane neighbours count.
        #[serde(default)]
        planar: bool,
    },
    /// One channel: `tanh(d/8)` signed distance.
    SignedDistance {
        /// Voxel size `(z, y, x)`.
        #[serde(default = "unit")]
        voxel_size: [f32; 3],
    },
}

fn unit() -> [f32; 3] {
    [1.0; 3]
}

impl TargetSpec {
    /// Output channels.
    pub fn channels(&self) -> usize {
        match self {
            Self::Affinities { offsets, .. } => offsets.len(),
            _ => 1,
        }
    }

    /// Targets and loss mask `(K, Z, Y, X)` for a sample (its first label volume; `valid`
    /// masks unknown and padded voxels).
    ///
    /// # Errors
    /// A sample without labels.
    pub fn compute(&self, s: &Sample) -> Result<(Array4<f32>, Array4<f32>)> {
        let labels = s
            .labels
            .first()
            .ok_or_else(|| invalid("targets", "the sample has no label volume"))?;
        let valid = s.valid.as_ref().map(|v| v.mapv(|b| b != 0));
        let plain_mask = |k: usize| -> Array4<f32> {
            let (z, y, x) = labels.dim();
            let m = valid.as_ref().map_or_else(
                || ndarray::Array3::ones((z, y, x)),
                |v| v.mapv(|b| f32::from(u8::from(b))),
            );
            m.insert_axis(Axis(0))
                .broadcast((k, z, y, x))
                .expect("same shape")
                .to_owned()
        };
        Ok(match self {
            Self::Affinities { offsets, storage } => {
                let pieces = targets::relabel_connected(labels.view());
                let (aff, mask) = targets::affinities(
                    pieces.view(),
                    valid.as_ref().map(|v| v.view()),
                    offsets,
                    *storage,
                );
                (aff, mask.mapv(f32::from))
            }
            Self::Foreground => (
                targets::foreground(labels.view()).insert_axis(Axis(0)),
                plain_mask(1),
            ),
            Self::Boundary { planar } => (
                targets::boundaries(labels.view(), *planar)
                    .mapv(f32::from)
                    .insert_axis(Axis(0)),
                plain_mask(1),
            ),
            Self::SignedDistance { voxel_size } => (
                targets::signed_distance(labels.view(), *voxel_size).insert_axis(Axis(0)),
                plain_mask(1),
            ),
        })
    }
}

/// A batch: images `(N, C, Z, Y, X)`, targets and loss masks `(N, K, Z, Y, X)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Batch index within the epoch.
    pub index: usize,
    /// Images.
    pub image: Array5<f32>,
    /// Targets.
    pub target: Array5<f32>,
    /// Loss masks (1 = counts).
    pub mask: Array5<f32>,
}

/// Loader settings.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Worker threads (0 = build batches on the caller's thread, lazily).
    pub workers: usize,
    /// Finished batches waiting in the queue at most.
    pub prefetch: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Augmentation applied to each sample (with context) before targets.
    pub augment: Option<Arc<Pipeline>>,
    /// Targets to compute.
    pub targets: TargetSpec,
    /// Context voxels per side to crop away after targets.
    pub context: [usize; 3],
    /// Batches per epoch (`None`: dataset length / batch size).
    pub batches: Option<usize>,
}

/// Builds batch `b` of `epoch`: fully determined by the seed, epoch and batch index.
pub fn make_batch(
    dataset: &dyn Dataset,
    cfg: &LoaderConfig,
    epoch: u64,
    b: usize,
) -> Result<Batch> {
    let mut images = Vec::with_capacity(cfg.batch_size);
    let mut tgts = Vec::with_capacity(cfg.batch_size);
    let mut masks = Vec::with_capacity(cfg.batch_size);
    let base = cfg.seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (b as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut rng = rng_from_seed(base);
    let mut batch: Vec<Sample> = Vec::with_capacity(cfg.batch_size);
    for i in 0..cfg.batch_size {
        batch.push(dataset.sample(b * cfg.batch_size + i, &mut rng)?);
    }
    if let Some(p) = &cfg.augment {
        p.apply_batch(&mut batch, base.wrapping_add(1))?;
    }
    let c = cfg.context;
    for smp in &batch {
        let (t, m) = cfg.targets.compute(smp)?;
        let (_, z, y, x) = smp.image.dim();
        if z < 2 * c[0] || y < 2 * c[1] || x < 2 * c[2] {
            return Err(invalid(
                "loader",
                format!(
                    "sample {:?} is smaller than twice the context {c:?}",
                    [z, y, x]
                ),
            ));
        }
        let win = s![.., c[0]..z - c[0], c[1]..y - c[1], c[2]..x - c[2]];
        images.push(smp.image.slice(win).to_owned());
        tgts.push(t.slice(win).to_owned());
        masks.push(m.slice(win).to_owned());
    }
    let stack = |v: Vec<Array4<f32>>| -> Result<Array5<f32>> {
        let views: Vec<_> = v.iter().map(|a| a.view()).collect();
        ndarray::stack(Axis(0), &views).map_err(|e| {
            invalid(
                "loader",
                format!("samples of different shapes in one batch: {e}"),
            )
        })
    };
    Ok(Batch {
        index: b,
        image: stack(images)?,
        target: stack(tgts)?,
        mask: stack(masks)?,
    })
}

/// An epoch of batches, built ahead by worker threads. Dropping it stops the workers.
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, Result<Batch>>,
    next: usize,
    total: usize,
    failed: bool,
    // For workers = 0.
    inline: Option<(Arc<dyn Dataset>, LoaderConfig, u64)>,
}

impl Loader {
    /// Starts the workers for `epoch`.
    ///
    /// # Errors
    /// A zero batch size or a zero prefetch with workers.
    pub fn new(dataset: Arc<dyn Dataset>, cfg: LoaderConfig, epoch: u64) -> Result<Self> {
        if cfg.batch_size == 0 || (cfg.workers > 0 && cfg.prefetch == 0) {
            return Err(invalid(
                "loader",
                format!(
                    "batch size {} and prefetch {} must be ≥ 1",
                    cfg.batch_size, cfg.prefetch
                ),
            ));
        }
        let total = cfg.batches.unwrap_or(dataset.len() / cfg.batch_size);
        let stop = Arc::new(AtomicBool::new(false));
        if cfg.workers == 0 {
            return Ok(Self {
                rx: None,
                stop,
                handles: Vec::new(),
                pending: BTreeMap::new(),
                next: 0,
                total,
                failed: false,
                inline: Some((dataset, cfg, epoch)),
            });
        }
        let (tx, rx) = sync_channel(cfg.prefetch);
        let cfg = Arc::new(cfg);
        let handles = (0..cfg.workers)
            .map(|w| {
                let (tx, stop, ds, cfg) = (tx.clone(), stop.clone(), dataset.clone(), cfg.clone());
                std::thread::Builder::new()
                    .name(format!("em-loader-{w}"))
                    .spawn(move || {
                        for b in (w..total).step_by(cfg.workers) {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let out =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    make_batch(ds.as_ref(), &cfg, epoch, b)
                                }))
                                .unwrap_or_else(|p| {
                                    let message = p
                                        .downcast_ref::<&str>()
                                        .map(|s| s.to_string())
                                        .or_else(|| p.downcast_ref::<String>().cloned())
                                        .unwrap_or_else(|| "non-string panic".into());
                                    Err(DataError::WorkerPanic {
                                        worker: w,
                                        batch: b,
                                        message,
                                    })
                                });
                            let failed = out.is_err();
                            if tx.send(out).is_err() || failed {
                                break;
                            }
                        }
                    })
                    .expect("spawning a loader thread")
            })
            .collect();
        Ok(Self {
            rx: Some(rx),
            stop,
            handles,
            pending: BTreeMap::new(),
            next: 0,
            total,
            failed: false,
            inline: None,
        })
    }

    /// Batches in this epoch.
    pub fn batches(&self) -> usize {
        self.total
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.total || self.failed {
            return None;
        }
        if let Some((ds, cfg, epoch)) = &self.inline {
            let out = make_batch(ds.as_ref(), cfg, *epoch, self.next);
            self.next += 1;
            self.failed = out.is_err();
            return Some(out);
        }
        loop {
            if let Some(out) = self.pending.remove(&self.next) {
                self.next += 1;
                self.failed = out.is_err();
                return Some(out);
            }
            match self.rx.as_ref()?.recv() {
                Ok(Ok(b)) => {
                    self.pending.insert(b.index, Ok(b));
                }
                // An error ends the epoch at once, whichever batch it belongs to.
                Ok(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                Err(_) => {
                    self.failed = true;
                    return Some(Err(invalid(
                        "loader",
                        "the workers stopped before the epoch was complete",
                    )));
                }
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks workers waiting on a full queue.
        self.rx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
