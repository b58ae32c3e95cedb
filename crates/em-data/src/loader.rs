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
        let (_, z, y, x) = s.image.dim();
        let k = self.channels();
        let mut t = Array4::zeros((k, z, y, x));
        let mut m = Array4::zeros((k, z, y, x));
        self.compute_into(s, [0; 3], t.view_mut(), m.view_mut())?;
        Ok((t, m))
    }

    /// Targets and mask of the window starting at `lo` (the outputs' spatial shape),
    /// written into `target` and `mask` `(K, z, y, x)`: computed on the whole sample (so
    /// long-range affinities at the window's edge see the context), stored for the window.
    ///
    /// # Errors
    /// A sample without labels.
    pub fn compute_into(
        &self,
        s: &Sample,
        lo: [usize; 3],
        mut target: ndarray::ArrayViewMut4<'_, f32>,
        mut mask: ndarray::ArrayViewMut4<'_, f32>,
    ) -> Result<()> {
        let labels = s
            .labels
            .first()
            .ok_or_else(|| invalid("targets", "the sample has no label volume"))?;
        let (_, wz, wy, wx) = target.dim();
        let win = s![lo[0]..lo[0] + wz, lo[1]..lo[1] + wy, lo[2]..lo[2] + wx];
        let valid = s.valid.as_ref().map(|v| v.mapv(|b| b != 0));
        let plain_mask = |mask: &mut ndarray::ArrayViewMut4<'_, f32>| match &valid {
            Some(v) => {
                let v = v.slice(win);
                for mut ch in mask.outer_iter_mut() {
                    ch.zip_mut_with(&v, |o, &b| *o = f32::from(u8::from(b)));
                }
            }
            None => mask.fill(1.0),
        };
        match self {
            Self::Affinities { offsets, storage } => {
                let pieces = targets::relabel_connected(labels.view());
                targets::affinities_into(
                    pieces.view(),
                    valid.as_ref().map(|v| v.view()),
                    offsets,
                    *storage,
                    lo,
                    target,
                    mask,
                );
            }
            Self::Foreground => {
                target
                    .index_axis_mut(Axis(0), 0)
                    .zip_mut_with(&labels.slice(win), |o, &l| *o = f32::from(u8::from(l != 0)));
                plain_mask(&mut mask);
            }
            Self::Boundary { planar } => {
                let b = targets::boundaries(labels.view(), *planar);
                target
                    .index_axis_mut(Axis(0), 0)
                    .zip_mut_with(&b.slice(win), |o, &v| *o = f32::from(v));
                plain_mask(&mut mask);
            }
            Self::SignedDistance { voxel_size } => {
                let d = targets::signed_distance(labels.view(), *voxel_size);
                target.index_axis_mut(Axis(0), 0).assign(&d.slice(win));
                plain_mask(&mut mask);
            }
        }
        Ok(())
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
pub struct LoaderOptions {
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
    cfg: &LoaderOptions,
    epoch: u64,
    b: usize,
) -> Result<Batch> {
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
    let (ch, z, y, x) = batch[0].image.dim();
    if z < 2 * c[0] || y < 2 * c[1] || x < 2 * c[2] {
        return Err(invalid(
            "loader",
            format!(
                "sample {:?} is smaller than twice the context {c:?}",
                [z, y, x]
            ),
        ));
    }
    let (pz, py, px) = (z - 2 * c[0], y - 2 * c[1], x - 2 * c[2]);
    let k = cfg.targets.channels();
    let n = batch.len();
    let mut image = Array5::<f32>::zeros((n, ch, pz, py, px));
    let mut target = Array5::<f32>::zeros((n, k, pz, py, px));
    let mut mask = Array5::<f32>::zeros((n, k, pz, py, px));
    for (i, smp) in batch.iter().enumerate() {
        if smp.image.dim() != (ch, z, y, x) {
            return Err(invalid(
                "loader",
                format!(
                    "samples of different shapes in one batch: {:?} and {:?}",
                    smp.image.dim(),
                    (ch, z, y, x)
                ),
            ));
        }
        image.index_axis_mut(Axis(0), i).assign(&smp.image.slice(s![
            ..,
            c[0]..z - c[0],
            c[1]..y - c[1],
            c[2]..x - c[2]
        ]));
        cfg.targets.compute_into(
            smp,
            c,
            target.index_axis_mut(Axis(0), i),
            mask.index_axis_mut(Axis(0), i),
        )?;
    }
    Ok(Batch {
        index: b,
        image,
        target,
        mask,
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
    inline: Option<(Arc<dyn Dataset>, LoaderOptions, u64)>,
}

impl Loader {
    /// Starts the workers for `epoch`.
    ///
    /// # Errors
    /// A zero batch size or a zero prefetch with workers.
    pub fn new(dataset: Arc<dyn Dataset>, cfg: LoaderOptions, epoch: u64) -> Result<Self> {
        Self::starting_at(dataset, cfg, epoch, 0)
    }

    /// Starts the workers for `epoch` at batch `first`: the batches are those an epoch
    /// started at 0 would give from `first` on (resuming a run mid-epoch).
    ///
    /// # Errors
    /// As [`Loader::new`].
    pub fn starting_at(
        dataset: Arc<dyn Dataset>,
        cfg: LoaderOptions,
        epoch: u64,
        first: usize,
    ) -> Result<Self> {
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
                next: first,
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
                        for b in (first + w..total).step_by(cfg.workers) {
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
            next: first,
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
