//! Where training data comes from, as configuration: volumes on disk, the Lucchi/Lucchi++
//! and NISB/BANIS layouts, or built-in synthetic volumes — mixed with weights.
//!
//! ```toml
//! [data]
//! mix = "weighted"
//! length = "min"
//! patch = { patch = [32, 96, 96], context = [2, 8, 8] }
//!
//! [[data.sources]]
//! weight = 0.3
//! source = { kind = "synthetic", synth = "mito", shape = [64, 256, 256], seed = 1 }
//!
//! [[data.sources]]
//! weight = 0.7
//! source = { kind = "lucchi", dir = "data/lucchi", split = "train" }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use em_core::{AnyArray, ChunkedVolume, DType, InMemoryVolume, Roi};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
use crate::synth;
use crate::{Dataset, LengthPolicy, MixMode, PatchConfig, PatchDataset, WeightedConcatDataset};

/// Opens a volume path (any em-io format); the caller supplies the opener so that this
/// crate needs no I/O backends (em-io's `open` fits).
pub type Opener<'a> = &'a dyn Fn(&Path) -> std::result::Result<Box<dyn ChunkedVolume>, String>;

/// A train or test split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// `training*` files.
    #[default]
    Train,
    /// `testing*` files.
    Test,
}

/// Which synthetic volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthKind {
    /// Mitochondria (binary labels).
    Mito,
    /// Dense neuron-like cells (instance labels).
    Neurons,
}

/// One source of volumes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Any volumes em-io reads (`.npy`, TIFF, `DIR.zarr/array`, `FILE.h5/dataset`).
    Volumes {
        /// Image `(Z, Y, X)` or `(C, Z, Y, X)`.
        image: PathBuf,
        /// Labels (integers; −1 = unknown).
        #[serde(default)]
        labels: Option<PathBuf>,
        /// Mask (0 = ignore).
        #[serde(default)]
        mask: Option<PathBuf>,
    },
    /// Lucchi / Lucchi++ mitochondria: `training.tif` + `training_groundtruth.tif` (EPFL
    /// multi-page TIFFs) or the same stems as `.h5` with dataset `main` (PyTC's layout);
    /// labels 0/255 become 0/1.
    Lucchi {
        /// The directory holding the files.
        dir: PathBuf,
        /// Which split.
        #[serde(default)]
        split: Split,
    },
    /// NISB / BANIS: `DIR.zarr/img` and `DIR.zarr/seg`.
    Nisb {
        /// The zarr directory.
        path: PathBuf,
    },
    /// A built-in synthetic volume (no download).
    Synthetic {
        /// mito or neurons.
        synth: SynthKind,
        /// Shape `(z, y, x)`.
        shape: [usize; 3],
        /// Seed.
        #[serde(default)]
        seed: u64,
    },
}

/// A source with its weight in the mixture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedSource {
    /// Relative weight (positive).
    #[serde(default = "one")]
    pub weight: f64,
    /// A name for logs (defaults to the source's kind).
    #[serde(default)]
    pub name: Option<String>,
    /// The source.
    pub source: SourceConfig,
}

fn one() -> f64 {
    1.0
}

/// The `[data]` table of a training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The sources.
    pub sources: Vec<WeightedSource>,
    /// How sources are picked.
    #[serde(default)]
    pub mix: MixMode,
    /// Epoch length policy.
    #[serde(default)]
    pub length: LengthPolicy,
    /// Patch cutting.
    pub patch: PatchConfig,
}

/// The image, label and mask volumes of a source.
pub struct SourceVolumes {
    /// Image.
    pub image: Arc<dyn ChunkedVolume>,
    /// Labels.
    pub labels: Option<Arc<dyn ChunkedVolume>>,
    /// Mask.
    pub mask: Option<Arc<dyn ChunkedVolume>>,
}

impl SourceConfig {
    /// Opens (or, for synthetic sources, generates) the volumes.
    ///
    /// # Errors
    /// Missing files (the paths tried are named) and unreadable volumes.
    pub fn open(&self, opener: Opener<'_>) -> Result<SourceVolumes> {
        let open = |p: &Path| -> Result<Arc<dyn ChunkedVolume>> {
            opener(p)
                .map(Arc::from)
                .map_err(|e| invalid(p.display().to_string(), e))
        };
        Ok(match self {
            Self::Volumes {
                image,
                labels,
                mask,
            } => SourceVolumes {
                image: open(image)?,
                labels: labels.as_deref().map(open).transpose()?,
                mask: mask.as_deref().map(open).transpose()?,
            },
            Self::Lucchi { dir, split } => {
                let stem = match split {
                    Split::Train => "training",
                    Split::Test => "testing",
                };
                let find = |name: &str| -> Result<PathBuf> {
                    let candidates = [
                        dir.join(format!("{name}.tif")),
                        dir.join(format!("{name}.tiff")),
                        dir.join(format!("{name}.h5/main")),
                    ];
                    candidates
                        .iter()
                        .find(|c| {
                            let file = if c.extension().is_none() {
                                c.parent().unwrap_or(c)
                            } else {
                                c.as_path()
                            };
                            file.is_file()
                        })
                        .cloned()
                        .ok_or_else(|| {
                            invalid(
                                format!("Lucchi {}", dir.display()),
                                format!(
                                    "none of {} exists",
                                    candidates
                                        .iter()
                                        .map(|c| c.display().to_string())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })
                };
                SourceVolumes {
                    image: open(&find(stem)?)?,
                    labels: Some(Arc::new(Binarized(open(&find(&format!(
                        "{stem}_groundtruth"
                    ))?)?))),
                    mask: None,
                }
            }
            Self::Nisb { path } => SourceVolumes {
                image: open(&path.join("img"))?,
                labels: Some(open(&path.join("seg"))?),
                mask: None,
            },
            Self::Synthetic {
                synth: kind,
                shape,
                seed,
            } => {
                let v = match kind {
                    SynthKind::Mito => synth::mitochondria(*shape, *seed, &Default::default()),
                    SynthKind::Neurons => synth::neurons(*shape, *seed, &Default::default()),
                };
                SourceVolumes {
                    image: Arc::new(InMemoryVolume::new(
                        AnyArray::from(v.image.into_dyn()),
                        "synthetic image",
                    )),
                    labels: Some(Arc::new(InMemoryVolume::new(
                        AnyArray::from(v.labels.into_dyn()),
                        "synthetic labels",
                    ))),
                    mask: None,
                }
            }
        })
    }

    fn kind_name(&self) -> String {
        match self {
            Self::Volumes { image, .. } => image.display().to_string(),
            Self::Lucchi { split, .. } => format!("lucchi-{split:?}").to_lowercase(),
            Self::Nisb { path } => path.display().to_string(),
            Self::Synthetic { synth, .. } => format!("synthetic-{synth:?}").to_lowercase(),
        }
    }
}

impl DataConfig {
    /// Checks what can be checked without opening a source: there is one, and every weight
    /// is a positive number (also for a single source, which is never mixed: a weight of
    /// −1 or NaN there is a mistake all the same).
    ///
    /// # Errors
    /// The first bad value, named.
    pub fn validate(&self) -> Result<()> {
        if self.sources.is_empty() {
            return Err(invalid(
                "data",
                "no sources; add at least one [[data.sources]]",
            ));
        }
        if let Some((i, s)) = self
            .sources
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.weight.is_finite() && s.weight > 0.0))
        {
            return Err(invalid(
                "data",
                format!(
                    "data.sources[{i}].weight {} must be a positive number (a source with weight \
                     ≤ 0 or NaN is never drawn, or breaks the mixture)",
                    s.weight
                ),
            ));
        }
        Ok(())
    }

    /// The training dataset: one patch dataset per source, mixed by weight.
    ///
    /// # Errors
    /// Sources that cannot be opened, shape mismatches, bad weights.
    pub fn build(&self, opener: Opener<'_>) -> Result<Arc<dyn Dataset>> {
        self.validate()?;
        let mut sets: Vec<Arc<dyn Dataset>> = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            let v = s.source.open(opener)?;
            let name = s.name.clone().unwrap_or_else(|| s.source.kind_name());
            sets.push(Arc::new(PatchDataset::new(
                name,
                v.image,
                v.labels,
                v.mask,
                self.patch.clone(),
            )?));
        }
        if sets.len() == 1 {
            return Ok(sets.pop().expect("one source"));
        }
        let weights: Vec<f64> = self.sources.iter().map(|s| s.weight).collect();
        Ok(Arc::new(WeightedConcatDataset::new(
            sets,
            &weights,
            self.mix,
            self.length,
        )?))
    }
}

/// Labels stored as 0/255 (or any non-zero) read as 0/1 `u8`.
struct Binarized(Arc<dyn ChunkedVolume>);

impl ChunkedVolume for Binarized {
    fn shape(&self) -> &[u64] {
        self.0.shape()
    }
    fn chunk_shape(&self) -> &[u64] {
        self.0.chunk_shape()
    }
    fn dtype(&self) -> DType {
        DType::U8
    }
    fn describe(&self) -> String {
        format!("{} (binarised)", self.0.describe())
    }
    fn read_roi(&self, roi: &Roi) -> em_core::Result<AnyArray> {
        let a = self.0.read_roi(roi)?.to_f32();
        Ok(AnyArray::from(a.mapv(|v| u8::from(v != 0.0))))
    }
    fn write_roi(&self, _roi: &Roi, _data: &AnyArray) -> em_core::Result<()> {
        Err(em_core::CoreError::InvalidParameter {
            name: "binarised labels",
            reason: "read-only view".into(),
        })
    }
}
