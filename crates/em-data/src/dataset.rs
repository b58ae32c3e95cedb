//! Datasets of training samples: random patches (with context) read lazily from chunked
//! volumes, validation grids, and weighted mixtures of datasets.

use std::sync::Arc;

use em_augment::{AugmentRng, Sample};
use em_core::{ChunkedVolume, Roi};
use ndarray::{s, Array3, Array4, Axis, Ix3, Ix4};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, DataError, Result};

/// A source of training samples.
pub trait Dataset: Send + Sync {
    /// Samples per epoch (random-crop datasets: a nominal count).
    fn len(&self) -> usize;
    /// Whether the dataset has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `index`, drawing any randomness from `rng`.
    ///
    /// # Errors
    /// Storage errors, and crops that never pass the dataset's thresholds.
    fn sample(&self, index: usize, rng: &mut AugmentRng) -> Result<Sample>;
    /// A name for messages.
    fn name(&self) -> &str;
}

/// How patches are cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchConfig {
    /// Patch side `(z, y, x)` handed to the model.
    pub patch: [usize; 3],
    /// Extra voxels read on each side (augmentation and long-range affinities need them);
    /// cropped away after targets are computed.
    #[serde(default)]
    pub context: [usize; 3],
    /// How far a crop may reach outside the volume per side (image 0, loss masked there).
    #[serde(default)]
    pub padding: [usize; 3],
    /// Reject crops whose patch has a smaller labelled fraction.
    #[serde(default)]
    pub min_foreground: f32,
    /// Reject crops whose patch has a smaller known-and-inside fraction (BANIS: 0.1).
    #[serde(default)]
    pub min_valid: f32,
    /// Crops tried before giving up.
    #[serde(default = "fifty")]
    pub tries: usize,
    /// Nominal samples per epoch.
    #[serde(default = "thousand")]
    pub epoch_len: usize,
}

fn fifty() -> usize {
    50
}
fn thousand() -> usize {
    1000
}

impl PatchConfig {
    /// Settings for `patch` with no context, padding or rejection.
    pub fn new(patch: [usize; 3]) -> Self {
        Self {
            patch,
            context: [0; 3],
            padding: [0; 3],
            min_foreground: 0.0,
            min_valid: 0.0,
            tries: fifty(),
            epoch_len: thousand(),
        }
    }

    /// The region read per sample: patch plus context on both sides.
    pub fn read_shape(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.patch[a] + 2 * self.context[a])
    }
}

/// Random patches of an image volume `(Z, Y, X)` or `(C, Z, Y, X)` with an optional label
/// volume (integers; −1 = unknown) and an optional mask volume (0 = ignore), read lazily.
pub struct PatchDataset {
    name: String,
    image: Arc<dyn ChunkedVolume>,
    labels: Option<Arc<dyn ChunkedVolume>>,
    mask: Option<Arc<dyn ChunkedVolume>>,
    settings: PatchConfig,
    shape: [usize; 3],
    channels: usize,
}

impl PatchDataset {
    /// Checks shapes and settings.
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] naming the mismatch: label or mask shape ≠ image shape, a
    /// volume smaller than the patch, a zero patch side or tries.
    pub fn new(
        name: impl Into<String>,
        image: Arc<dyn ChunkedVolume>,
        labels: Option<Arc<dyn ChunkedVolume>>,
        mask: Option<Arc<dyn ChunkedVolume>>,
        settings: PatchConfig,
    ) -> Result<Self> {
        let name = name.into();
        let ish: Vec<usize> = image.shape().iter().map(|&v| v as usize).collect();
        let (channels, shape) = match ish.as_slice() {
            &[z, y, x] => (1, [z, y, x]),
            &[c, z, y, x] => (c, [z, y, x]),
            other => {
                return Err(invalid(
                    &name,
                    format!(
                        "image {} has shape {other:?}; give (Z, Y, X) or (C, Z, Y, X)",
                        image.describe()
                    ),
                ))
            }
        };
        for (what, v) in [("labels", &labels), ("mask", &mask)] {
            if let Some(v) = v {
                let s: Vec<usize> = v.shape().iter().map(|&d| d as usize).collect();
                if s != shape {
                    return Err(invalid(
                        &name,
                        format!(
                            "{what} {} has shape {s:?}, the image's spatial shape is {shape:?}",
                            v.describe()
                        ),
                    ));
                }
            }
        }
        if settings.patch.contains(&0) || settings.tries == 0 {
            return Err(invalid(
                &name,
                format!(
                    "patch {:?} (sides ≥ 1) and tries {} (≥ 1)",
                    settings.patch, settings.tries
                ),
            ));
        }
        for a in 0..3 {
            if shape[a] + 2 * settings.padding[a] < settings.patch[a] {
                return Err(invalid(
                    &name,
                    format!(
                        "the volume {shape:?} is smaller than the patch {:?} (padding {:?})",
                        settings.patch, settings.padding
                    ),
                ));
            }
        }
        for (what, v) in [
            ("min_foreground", settings.min_foreground),
            ("min_valid", settings.min_valid),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(&name, format!("{what} {v} is outside [0, 1]")));
            }
        }
        Ok(Self {
            name,
            image,
            labels,
            mask,
            settings,
            shape,
            channels,
        })
    }

    /// Spatial shape of the volume.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// The settings.
    pub fn settings(&self) -> &PatchConfig {
        &self.settings
    }

    /// The sample whose patch starts at `start` (may be negative or reach past the end
    /// within the padding): image, labels and `valid` (0 outside the volume, on unknown
    /// labels and where the mask is 0), with context on every side.
    ///
    /// # Errors
    /// Storage errors.
    pub fn crop(&self, start: [i64; 3]) -> Result<Sample> {
        let read = self.settings.read_shape();
        let lo: [i64; 3] = [0, 1, 2].map(|a| start[a] - self.settings.context[a] as i64);
        // The part of the request inside the volume, and where it lands in the output.
        let mut inside = [(0u64, 0u64); 3];
        let mut at = [0usize; 3];
        for a in 0..3 {
            let a0 = lo[a].max(0);
            let a1 = (lo[a] + read[a] as i64).min(self.shape[a] as i64).max(a0);
            inside[a] = (a0 as u64, (a1 - a0) as u64);
            at[a] = (a0 - lo[a]) as usize;
        }
        let n = inside.map(|(_, len)| len as usize);
        let region = s![
            at[0]..at[0] + n[0],
            at[1]..at[1] + n[1],
            at[2]..at[2] + n[2]
        ];
        let mut image = Array4::<f32>::zeros((self.channels, read[0], read[1], read[2]));
        let mut valid = Array3::<u8>::zeros((read[0], read[1], read[2]));
        let mut labels = Array3::<u32>::zeros((read[0], read[1], read[2]));
        if n.iter().all(|&v| v > 0) {
            let spatial = Roi::new(
                inside.map(|(s, _)| s).to_vec(),
                inside.map(|(_, l)| l).to_vec(),
            )?;
            let img_roi = if self.image.ndim() == 4 {
                let mut st = vec![0u64];
                st.extend(spatial.start());
                let mut sh = vec![self.channels as u64];
                sh.extend(spatial.shape());
                Roi::new(st, sh)?
            } else {
                spatial.clone()
            };
            let raw = self.image.read_roi(&img_roi)?;
            let f = raw.to_intensity_f32();
            let f: Array4<f32> = if self.image.ndim() == 4 {
                f.into_dimensionality::<Ix4>()
                    .map_err(|e| invalid(&self.name, e.to_string()))?
            } else {
                f.into_dimensionality::<Ix3>()
                    .map_err(|e| invalid(&self.name, e.to_string()))?
                    .insert_axis(Axis(0))
            };
            image
                .slice_mut(s![
                    ..,
                    at[0]..at[0] + n[0],
                    at[1]..at[1] + n[1],
                    at[2]..at[2] + n[2]
                ])
                .assign(&f);
            let mut v = valid.slice_mut(region);
            v.fill(1);
            if let Some(l) = &self.labels {
                let (lab, known) = em_core::to_labels_and_mask::<u32>(&l.read_roi(&spatial)?)?;
                let lab = lab
                    .into_dimensionality::<Ix3>()
                    .map_err(|e| invalid(&self.name, e.to_string()))?;
                labels.slice_mut(region).assign(&lab);
                v.zip_mut_with(
                    &known
                        .into_dimensionality::<Ix3>()
                        .map_err(|e| invalid(&self.name, e.to_string()))?,
                    |o, &k| *o &= u8::from(k),
                );
            }
            if let Some(m) = &self.mask {
                let mk = m.read_roi(&spatial)?.to_f32();
                v.zip_mut_with(
                    &mk.into_dimensionality::<Ix3>()
                        .map_err(|e| invalid(&self.name, e.to_string()))?,
                    |o, &k| *o &= u8::from(k != 0.0),
                );
            }
        }
        let mut sample = Sample::new(image);
        if self.labels.is_some() {
            sample = sample.with_label(labels);
        }
        sample.valid = Some(valid);
        Ok(sample)
    }

    /// Fractions of the central patch that are labelled and valid.
    fn fractions(&self, s: &Sample) -> (f32, f32) {
        let c = self.settings.context;
        let p = self.settings.patch;
        let win = s![c[0]..c[0] + p[0], c[1]..c[1] + p[1], c[2]..c[2] + p[2]];
        let n = (p[0] * p[1] * p[2]) as f32;
        let fg = s.labels.first().map_or(1.0, |l| {
            l.slice(win).iter().filter(|&&v| v != 0).count() as f32 / n
        });
        let valid = s.valid.as_ref().map_or(1.0, |v| {
            v.slice(win).iter().filter(|&&v| v != 0).count() as f32 / n
        });
        (fg, valid)
    }
}

impl Dataset for PatchDataset {
    fn len(&self) -> usize {
        self.settings.epoch_len
    }

    fn sample(&self, _index: usize, rng: &mut AugmentRng) -> Result<Sample> {
        let st = &self.settings;
        for _ in 0..st.tries {
            let start: [i64; 3] = [0, 1, 2].map(|a| {
                let lo = -(st.padding[a] as i64);
                let hi = self.shape[a] as i64 + st.padding[a] as i64 - st.patch[a] as i64;
                rng.random_range(lo..=hi.max(lo))
            });
            let s = self.crop(start)?;
            let (fg, valid) = self.fractions(&s);
            if fg >= st.min_foreground
                && valid >= st.min_valid
                && (st.min_valid == 0.0 || valid > 0.0)
            {
                return Ok(s);
            }
        }
        Err(DataError::Rejected {
            name: self.name.clone(),
            tries: st.tries,
            needed: format!(
                "labelled fraction ≥ {} and valid fraction ≥ {}",
                st.min_foreground, st.min_valid
            ),
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Patch starts covering a volume of `shape` with `patch`-sized windows overlapping by
/// `overlap` voxels, the last one flush with the end (validation and inference grids).
pub fn grid_starts(shape: [usize; 3], patch: [usize; 3], overlap: [usize; 3]) -> Vec<[i64; 3]> {
    let axis = |n: usize, p: usize, o: usize| -> Vec<i64> {
        if n <= p {
            return vec![0];
        }
        let step = p.saturating_sub(o).max(1);
        let mut v: Vec<i64> = (0..)
            .map(|i| (i * step) as i64)
            .take_while(|&s| s as usize + p < n)
            .collect();
        v.push((n - p) as i64);
        v
    };
    let (z, y, x) = (
        axis(shape[0], patch[0], overlap[0]),
        axis(shape[1], patch[1], overlap[1]),
        axis(shape[2], patch[2], overlap[2]),
    );
    let mut out = Vec::with_capacity(z.len() * y.len() * x.len());
    for &a in &z {
        for &b in &y {
            for &c in &x {
                out.push([a, b, c]);
            }
        }
    }
    out
}

/// A fixed grid of patches (validation): sample `i` is grid position `i`, no randomness.
pub struct GridDataset {
    inner: PatchDataset,
    starts: Vec<[i64; 3]>,
}

impl GridDataset {
    /// Every grid position of `inner`'s volume with `overlap`.
    pub fn new(inner: PatchDataset, overlap: [usize; 3]) -> Self {
        let starts = grid_starts(inner.shape(), inner.settings().patch, overlap);
        Self { inner, starts }
    }

    /// The patch starts, in sample order.
    pub fn starts(&self) -> &[[i64; 3]] {
        &self.starts
    }
}

impl Dataset for GridDataset {
    fn len(&self) -> usize {
        self.starts.len()
    }

    fn sample(&self, index: usize, _rng: &mut AugmentRng) -> Result<Sample> {
        let start = self.starts.get(index).ok_or_else(|| {
            invalid(
                self.inner.name(),
                format!("grid sample {index} of {}", self.starts.len()),
            )
        })?;
        self.inner.crop(*start)
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

/// How a mixture picks its source dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixMode {
    /// At random with the given weights (PyTC's `WeightedConcatDataset`).
    #[default]
    Weighted,
    /// Deterministic, stratified interleaving in proportion to the weights: any run of
    /// consecutive samples holds each source close to its share.
    RoundRobin,
    /// At random in proportion to the datasets' lengths (weights ignored).
    SizeProportional,
}

/// How long a mixture's epoch is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthPolicy {
    /// The smallest source's length (PyTC's default).
    #[default]
    Min,
    /// All sources' lengths together.
    Sum,
    /// A fixed count.
    Fixed(usize),
}

/// A mixture of datasets, e.g. synthetic and real data at 30/70.
pub struct WeightedConcatDataset {
    name: String,
    sources: Vec<Arc<dyn Dataset>>,
    /// Normalised weights (sum 1).
    weights: Vec<f64>,
    mode: MixMode,
    len: usize,
}

impl WeightedConcatDataset {
    /// Mixes `sources` with `weights` (positive; normalised to sum 1).
    ///
    /// # Errors
    /// No sources, a weight count that differs from the source count, a weight that is
    /// not a positive finite number, an empty source, or a zero fixed length.
    pub fn new(
        sources: Vec<Arc<dyn Dataset>>,
        weights: &[f64],
        mode: MixMode,
        length: LengthPolicy,
    ) -> Result<Self> {
        let what = "weighted concat dataset";
        if sources.is_empty() {
            return Err(invalid(what, "no datasets to mix"));
        }
        let weights: Vec<f64> = match mode {
            MixMode::SizeProportional => sources.iter().map(|d| d.len() as f64).collect(),
            _ => {
                if weights.len() != sources.len() {
                    return Err(invalid(
                        what,
                        format!("{} weights for {} datasets", weights.len(), sources.len()),
                    ));
                }
                weights.to_vec()
            }
        };
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w > 0.0))
        {
            return Err(invalid(
                what,
                format!(
                    "weight {w} of dataset {} ({}) must be a positive number",
                    i,
                    sources[i].name()
                ),
            ));
        }
        if let Some(d) = sources.iter().find(|d| d.is_empty()) {
            return Err(invalid(what, format!("dataset {} is empty", d.name())));
        }
        let total: f64 = weights.iter().sum();
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let len = match length {
            LengthPolicy::Min => sources.iter().map(|d| d.len()).min().unwrap_or(0),
            LengthPolicy::Sum => sources.iter().map(|d| d.len()).sum(),
            LengthPolicy::Fixed(0) => return Err(invalid(what, "fixed length 0")),
            LengthPolicy::Fixed(n) => n,
        };
        let name = format!(
            "mix({})",
            sources
                .iter()
                .map(|d| d.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Self {
            name,
            sources,
            weights,
            mode,
            len,
        })
    }

    /// The normalised weights.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The source whose cumulative-weight interval holds `u` ∈ [0, 1).
    fn source_at(&self, u: f64) -> usize {
        let mut acc = 0.0;
        for (i, w) in self.weights.iter().enumerate() {
            acc += w;
            if u < acc {
                return i;
            }
        }
        self.weights.len() - 1
    }

    /// Which source (and which of its samples) sample `index` comes from.
    pub fn pick(&self, index: usize, rng: &mut AugmentRng) -> (usize, usize) {
        let source = match self.mode {
            MixMode::Weighted | MixMode::SizeProportional => self.source_at(rng.random()),
            MixMode::RoundRobin => {
                // A golden-ratio low-discrepancy sequence through the cumulative weights:
                // deterministic, and every run of n samples holds each source's share to
                // within O(log n) samples.
                let u = (index as f64 * 0.618_033_988_749_894_9).fract();
                self.source_at(u)
            }
        };
        let inner = rng.random_range(0..self.sources[source].len());
        (source, inner)
    }
}

impl Dataset for WeightedConcatDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn sample(&self, index: usize, rng: &mut AugmentRng) -> Result<Sample> {
        let (source, inner) = self.pick(index, rng);
        self.sources[source].sample(inner, rng)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
