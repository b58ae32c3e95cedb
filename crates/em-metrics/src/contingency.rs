//! The contingency table of two label volumes: voxel counts per (ground truth, prediction)
//! pair, in one pass that every voxel metric shares.
//!
//! Method: voxels are scanned in raster order and runs of one (gt, pred) pair are counted
//! before touching the hash table (label volumes are mostly long runs), in parallel chunks
//! merged at the end. Memory is one entry per distinct pair, whatever the id range.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use em_core::Label;
use ndarray::ArrayView3;

use crate::{MetricsError, Result};

/// A fast hasher for integer keys (multiply-rotate, as rustc's FxHash).
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` keyed by ids, with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Voxel counts per (ground truth id, prediction id) pair, including id 0 on both sides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Contingency {
    /// Count of each pair that occurs.
    pub pairs: IdMap<(u64, u64), u64>,
    /// Total voxels counted (unknown ones excluded).
    pub voxels: u64,
    /// Ground-truth voxels marked unknown (−1) and left out of the table, so that no metric
    /// counts them, as background or otherwise.
    pub unknown: u64,
}

impl Contingency {
    /// Counts the pairs of two volumes of the same shape.
    ///
    /// # Errors
    /// [`MetricsError::ShapeMismatch`].
    pub fn new<G: Label, P: Label>(gt: ArrayView3<'_, G>, pred: ArrayView3<'_, P>) -> Result<Self> {
        if gt.shape() != pred.shape() {
            return Err(MetricsError::ShapeMismatch {
                gt: gt.shape().to_vec(),
                pred: pred.shape().to_vec(),
            });
        }
        let (g, p) = (gt.as_standard_layout(), pred.as_standard_layout());
        let (g, p) = (g.as_slice().unwrap_or(&[]), p.as_slice().unwrap_or(&[]));
        Ok(Self::from_slices(g, p))
    }

    /// Counts the pairs of two equally long slices (raster order).
    pub fn from_slices<G: Label, P: Label>(gt: &[G], pred: &[P]) -> Self {
        use rayon::prelude::*;
        let n = gt.len().min(pred.len());
        let chunk = (n / (4 * rayon::current_num_threads().max(1))).max(1 << 16);
        let parts: Vec<IdMap<(u64, u64), u64>> = gt[..n]
            .par_chunks(chunk)
            .zip(pred[..n].par_chunks(chunk))
            .map(|(g, p)| count_runs(g, p))
            .collect();
        let mut pairs = IdMap::default();
        for part in parts {
            if pairs.is_empty() {
                pairs = part;
                continue;
            }
            for (k, v) in part {
                *pairs.entry(k).or_insert(0) += v;
            }
        }
        Self {
            pairs,
            voxels: n as u64,
            unknown: 0,
        }
    }

    /// Counts the pairs of two chunked volumes block by block (blocks of the ground truth's
    /// chunks), so neither volume is ever in memory whole. Ground-truth voxels of −1 (PyTC's
    /// and BANIS's "unknown") are left out and counted in [`Contingency::unknown`].
    ///
    /// # Errors
    /// Shape mismatch, non-integer volumes, storage errors.
    pub fn from_volumes(
        gt: &dyn em_core::ChunkedVolume,
        pred: &dyn em_core::ChunkedVolume,
        progress: &dyn em_core::Progress,
    ) -> Result<Self> {
        use em_core::ChunkedVolumeExt;
        if gt.shape() != pred.shape() || gt.ndim() != 3 {
            return Err(MetricsError::ShapeMismatch {
                gt: gt.shape().iter().map(|&n| n as usize).collect(),
                pred: pred.shape().iter().map(|&n| n as usize).collect(),
            });
        }
        let grid = gt.chunk_grid(&[0, 0, 0])?;
        progress.start("counting label pairs", grid.num_blocks());
        let mut total = Self::default();
        for block in grid.iter() {
            let (g, known) = em_core::to_labels_and_mask::<u64>(&gt.read_roi(&block.core)?)?;
            let p = em_core::to_labels::<u64>(&pred.read_roi(&block.core)?)?;
            let (g, p) = (g.as_standard_layout(), p.as_standard_layout());
            if known.iter().all(|&k| k) {
                total.merge(&Self::from_slices(
                    g.as_slice().unwrap_or(&[]),
                    p.as_slice().unwrap_or(&[]),
                ));
            } else {
                let (gk, pk): (Vec<u64>, Vec<u64>) = g
                    .iter()
                    .zip(p.iter())
                    .zip(known.iter())
                    .filter(|(_, &k)| k)
                    .map(|((&g, &p), _)| (g, p))
                    .unzip();
                total.merge(&Self::from_slices(&gk, &pk));
                total.unknown += (g.len() - gk.len()) as u64;
            }
            progress.advance(1);
        }
        progress.finish();
        Ok(total)
    }

    /// Adds another table (e.g. of another block of the same volumes).
    pub fn merge(&mut self, other: &Contingency) {
        for (&k, &v) in &other.pairs {
            *self.pairs.entry(k).or_insert(0) += v;
        }
        self.voxels += other.voxels;
        self.unknown += other.unknown;
    }

    /// Voxels per ground-truth id and per prediction id (each over all voxels).
    pub fn marginals(&self) -> (IdMap<u64, u64>, IdMap<u64, u64>) {
        let mut a: IdMap<u64, u64> = IdMap::default();
        let mut b: IdMap<u64, u64> = IdMap::default();
        for (&(g, p), &n) in &self.pairs {
            *a.entry(g).or_insert(0) += n;
            *b.entry(p).or_insert(0) += n;
        }
        (a, b)
    }
}

fn count_runs<G: Label, P: Label>(gt: &[G], pred: &[P]) -> IdMap<(u64, u64), u64> {
    const LANES: usize = 16;
    let mut map: IdMap<(u64, u64), u64> = IdMap::default();
    let (Some(&g0), Some(&p0)) = (gt.first(), pred.first()) else {
        return map;
    };
    let (mut g, mut p, mut run) = (g0, p0, 0u64);
    let n = gt.len().min(pred.len());
    let mut i = 0;
    while i < n {
        // Whole blocks that continue the current run are checked without branches, so
        // the long runs of label volumes go at memory speed.
        if i + LANES <= n {
            let same = gt[i..i + LANES]
                .iter()
                .zip(&pred[i..i + LANES])
                .fold(true, |acc, (&a, &b)| acc & (a == g) & (b == p));
            if same {
                run += LANES as u64;
                i += LANES;
                continue;
            }
        }
        let end = (i + LANES).min(n);
        for (&gi, &pi) in gt[i..end].iter().zip(&pred[i..end]) {
            if gi == g && pi == p {
                run += 1;
            } else {
                if run > 0 {
                    *map.entry((g.to_u64(), p.to_u64())).or_insert(0) += run;
                }
                (g, p, run) = (gi, pi, 1);
            }
        }
        i = end;
    }
    if run > 0 {
        *map.entry((g.to_u64(), p.to_u64())).or_insert(0) += run;
    }
    map
}
