//! HDF5 datasets (`file.h5/dataset`) through the system libhdf5 (feature `hdf5`).
//!
//! PyTC and CREMI keep volumes in HDF5. Datasets are read by region (hyperslab); new
//! datasets are written into a copy of the file that then replaces it, so a failed write
//! never leaves a half-written file behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use em_core::{check_read, check_write, AnyArray, ChunkedVolume, DType, Roi};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Dataset, Hyperslab, Selection, SliceOrIndex};
use ndarray::IxDyn;

use crate::atomic::staging_path;
use crate::dispatch::dispatch_dtype;
use crate::format::VolumePath;
use crate::{IoError, Result};

const FORMAT: &str = "HDF5";

/// An HDF5 dataset opened for region reads (and writes, when opened read-write).
pub struct Hdf5Volume {
    // libhdf5 is thread-safe only behind its global lock; hdf5-metno takes it, the mutex
    // keeps our read-modify sequences whole.
    dataset: Mutex<Dataset>,
    display: PathBuf,
    shape: Vec<u64>,
    chunk_shape: Vec<u64>,
    dtype: DType,
    writable: bool,
}

fn descriptor_dtype(path: &Path, d: &TypeDescriptor) -> Result<DType> {
    Ok(match d {
        TypeDescriptor::Boolean => DType::Bool,
        TypeDescriptor::Unsigned(IntSize::U1) => DType::U8,
        TypeDescriptor::Unsigned(IntSize::U2) => DType::U16,
        TypeDescriptor::Unsigned(IntSize::U4) => DType::U32,
        TypeDescriptor::Unsigned(IntSize::U8) => DType::U64,
        TypeDescriptor::Integer(IntSize::U1) => DType::I8,
        TypeDescriptor::Integer(IntSize::U2) => DType::I16,
        TypeDescriptor::Integer(IntSize::U4) => DType::I32,
        TypeDescriptor::Integer(IntSize::U8) => DType::I64,
        TypeDescriptor::Float(FloatSize::U4) => DType::F32,
        TypeDescriptor::Float(FloatSize::U8) => DType::F64,
        // h5py stores numpy bools as an int8 enum {FALSE, TRUE}.
        TypeDescriptor::Enum(e) if e.members.len() == 2 && e.size == IntSize::U1 => DType::Bool,
        other => {
            return Err(IoError::unsupported(
                path,
                FORMAT,
                "reading",
                other.to_string(),
                "bool, (u)int8/16/32/64, float32/64",
            ))
        }
    })
}

fn h5err<'a>(path: &'a Path, what: &str) -> impl FnOnce(hdf5::Error) -> IoError + 'a {
    let what = what.to_string();
    move |e| IoError::corrupt(path, FORMAT, format!("{what}: {e}"))
}

/// Dataset names in an HDF5 file (recursively), for "not found" messages.
fn list_datasets(file: &hdf5::Group, prefix: &str, depth: usize, out: &mut Vec<String>) {
    let Ok(names) = file.member_names() else {
        return;
    };
    for name in names {
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if file.dataset(&name).is_ok() {
            out.push(full);
        } else if depth > 0 {
            if let Ok(g) = file.group(&name) {
                list_datasets(&g, &full, depth - 1, out);
            }
        }
    }
}

fn open_dataset(path: &VolumePath, file: &hdf5::File) -> Result<Dataset> {
    let available = || {
        let mut out = Vec::new();
        list_datasets(file, "", 3, &mut out);
        out
    };
    let Some(key) = path.key.as_deref() else {
        return Err(IoError::KeyNotFound {
            path: path.container.clone(),
            what: "dataset",
            key: "(none given; write FILE.h5/DATASET)".into(),
            available: available(),
        });
    };
    file.dataset(key).map_err(|_| IoError::KeyNotFound {
        path: path.container.clone(),
        what: "dataset",
        key: key.into(),
        available: available(),
    })
}

impl Hdf5Volume {
    /// Opens `file.h5/dataset` read-only.
    ///
    /// # Errors
    /// [`IoError::Io`] for a missing file, [`IoError::Corrupt`] for a file libhdf5 cannot read,
    /// [`IoError::KeyNotFound`] listing the datasets that exist.
    pub fn open(path: &VolumePath) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// Opens `file.h5/dataset` for reading and region writes.
    ///
    /// # Errors
    /// As [`Hdf5Volume::open`].
    pub fn open_rw(path: &VolumePath) -> Result<Self> {
        Self::open_with(path, true)
    }

    fn open_with(path: &VolumePath, writable: bool) -> Result<Self> {
        let display = path.display();
        fs::metadata(&path.container).map_err(IoError::io(&path.container))?;
        let file = if writable {
            hdf5::File::open_rw(&path.container)
        } else {
            hdf5::File::open(&path.container)
        }
        .map_err(h5err(&path.container, "cannot open"))?;
        let dataset = open_dataset(path, &file)?;
        let descriptor = dataset
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(h5err(&display, "cannot read the element type"))?;
        let dtype = descriptor_dtype(&display, &descriptor)?;
        let shape: Vec<u64> = dataset.shape().iter().map(|&n| n as u64).collect();
        let chunk_shape = dataset
            .chunk()
            .map(|c| c.iter().map(|&n| n as u64).collect())
            .unwrap_or_else(|| shape.clone());
        Ok(Self {
            dataset: Mutex::new(dataset),
            display,
            shape,
            chunk_shape,
            dtype,
            writable,
        })
    }

    fn selection(roi: &Roi) -> Selection {
        let slices: Vec<SliceOrIndex> = roi
            .ranges()
            .into_iter()
            .map(|r| SliceOrIndex::from(r.start as usize..r.end as usize))
            .collect();
        Selection::from(Hyperslab::from(slices))
    }
}

impl ChunkedVolume for Hdf5Volume {
    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn chunk_shape(&self) -> &[u64] {
        &self.chunk_shape
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn describe(&self) -> String {
        format!("HDF5 dataset {}", self.display.display())
    }

    fn read_roi(&self, roi: &Roi) -> em_core::Result<AnyArray> {
        check_read(self, roi)?;
        if roi.is_empty() {
            return Ok(AnyArray::zeros(self.dtype, &roi.shape_usize()));
        }
        let ds = self.dataset.lock().unwrap_or_else(|p| p.into_inner());
        let sel = Self::selection(roi);
        let bad = |e: hdf5::Error| -> em_core::CoreError {
            IoError::corrupt(&self.display, FORMAT, format!("reading {roi}: {e}")).into()
        };
        Ok(dispatch_dtype!(no_f16, self.dtype,
            T => AnyArray::from(ds.read_slice::<T, _, IxDyn>(sel).map_err(bad)?),
            DType::F16 => {
                return Err(IoError::unsupported(
                    &self.display,
                    FORMAT,
                    "reading",
                    "float16",
                    "bool, (u)int8/16/32/64, float32/64",
                )
                .into())
            }
        ))
    }

    fn write_roi(&self, roi: &Roi, data: &AnyArray) -> em_core::Result<()> {
        check_write(self, roi, data)?;
        if !self.writable {
            return Err(IoError::corrupt(
                &self.display,
                FORMAT,
                "opened read-only; use Hdf5Volume::open_rw",
            )
            .into());
        }
        if roi.is_empty() {
            return Ok(());
        }
        let ds = self.dataset.lock().unwrap_or_else(|p| p.into_inner());
        let bad = |e: hdf5::Error| -> em_core::CoreError {
            IoError::corrupt(&self.display, FORMAT, format!("writing {roi}: {e}")).into()
        };
        let sel = Self::selection(roi);
        dispatch_dtype!(no_f16, data,
            AnyArray(a) => ds.write_slice(&a.as_standard_layout(), sel).map_err(bad),
            other => Err(em_core::CoreError::DTypeMismatch {
                expected: self.dtype,
                found: other.dtype(),
            }),
        )
    }
}

/// Whether writing dataset `key` of the existing file `file` replaces a dataset (`true`) or
/// adds one (`false`). A group at `key`, or a dataset at a level above it, is refused: the
/// write would delete the group's datasets or fail half-way.
pub(crate) fn dataset_target(file: &Path, key: &str) -> Result<bool> {
    let f = hdf5::File::open(file).map_err(h5err(file, "cannot open"))?;
    let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
    let display = file.join(key);
    let refused = |reason: String| IoError::OutputRefused {
        path: display.clone(),
        reason,
    };
    for i in 1..=parts.len() {
        let sub = parts[..i].join("/");
        if !f.link_exists(&sub) {
            return Ok(false);
        }
        let is_dataset = f.dataset(&sub).is_ok();
        if i < parts.len() && is_dataset {
            return Err(refused(format!(
                "lies inside the HDF5 dataset {sub}; write beside it instead"
            )));
        }
        if i == parts.len() {
            if is_dataset {
                return Ok(true);
            }
            let mut held = Vec::new();
            if let Ok(g) = f.group(&sub) {
                list_datasets(&g, "", 3, &mut held);
            }
            return Err(refused(format!(
                "is an HDF5 group{}; writing there would delete everything in it: name a new \
                 dataset inside it, e.g. {}",
                if held.is_empty() {
                    String::new()
                } else {
                    format!(" holding {}", held.join(", "))
                },
                display.join("NAME").display()
            )));
        }
    }
    Ok(false)
}

/// Writes `array` as dataset `path.key` (chunked, gzip level 4 like h5py's default filter),
/// replacing a dataset of that name; other datasets in an existing file are kept. The file is
/// rewritten as a copy and renamed into place.
///
/// # Errors
/// [`IoError::KeyNotFound`] if no dataset name is given, I/O and HDF5 errors.
pub fn write_hdf5(path: &VolumePath, array: &AnyArray) -> Result<()> {
    let display = path.display();
    let Some(key) = path.key.as_deref() else {
        return Err(IoError::KeyNotFound {
            path: path.container.clone(),
            what: "dataset",
            key: "(none given; write FILE.h5/DATASET)".into(),
            available: vec![],
        });
    };
    if path.container.is_file() {
        dataset_target(&path.container, key)?;
    }
    if let Some(parent) = path.container.parent() {
        crate::atomic::tidy_once(parent);
    }
    let staging = staging_path(&path.container);
    let result = (|| {
        let file = if path.container.exists() {
            fs::copy(&path.container, &staging).map_err(IoError::io(&path.container))?;
            hdf5::File::open_rw(&staging)
        } else {
            hdf5::File::create(&staging)
        }
        .map_err(h5err(&path.container, "cannot open for writing"))?;
        if file.link_exists(key) {
            file.unlink(key)
                .map_err(h5err(&display, "cannot replace the dataset"))?;
        }
        // Intermediate groups of a nested key.
        let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
        let mut group: hdf5::Group = (*file).clone();
        for part in &parts[..parts.len().saturating_sub(1)] {
            group = match group.group(part) {
                Ok(g) => g,
                Err(_) => group
                    .create_group(part)
                    .map_err(h5err(&display, "cannot create group"))?,
            };
        }
        let name = parts.last().copied().unwrap_or(key);
        let chunk: Vec<usize> = array
            .shape()
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                if i + 3 >= array.ndim() {
                    n.clamp(1, 64)
                } else {
                    n.max(1)
                }
            })
            .collect();
        let bad = h5err(&display, "cannot write the dataset");
        dispatch_dtype!(no_f16, array,
            AnyArray(a) => {
                let a = a.as_standard_layout();
                let builder = group.new_dataset_builder().with_data(&a);
                let builder = if a.is_empty() {
                    builder
                } else {
                    builder.chunk(chunk).deflate(4)
                };
                builder.create(name).map(|_| ())
            },
            other => {
                return Err(IoError::unsupported(
                    &display,
                    FORMAT,
                    "writing",
                    other.dtype().to_string(),
                    "bool, (u)int8/16/32/64, float32/64",
                ))
            }
        )
        .map_err(bad)?;
        file.flush().map_err(h5err(&display, "cannot flush"))?;
        drop(file);
        fs::rename(&staging, &path.container).map_err(IoError::io(&path.container))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&staging);
    }
    result
}

/// Reads a whole dataset.
///
/// # Errors
/// As [`Hdf5Volume::open`] and [`ChunkedVolume::read_roi`].
pub fn read_hdf5(path: &VolumePath) -> Result<AnyArray> {
    let v = Hdf5Volume::open(path)?;
    v.read_roi(&v.roi())
        .map_err(IoError::volume(&path.display()))
}
