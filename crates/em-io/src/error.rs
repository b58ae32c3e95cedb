use std::path::{Path, PathBuf};

/// Result alias of em-io.
pub type Result<T, E = IoError> = std::result::Result<T, E>;

/// A failure to read or write a volume; every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The operating system refused (missing file, permissions, disk full …).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file exists but its content is not valid for its format.
    #[error("{}: not a valid {format} file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// `npy`, `TIFF`, `zarr`, `HDF5`.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The format cannot store (or we cannot read) this element type.
    #[error("{}: {format} {direction} of {dtype} data is not supported (supported: {supported})", path.display())]
    UnsupportedDType {
        /// The file.
        path: PathBuf,
        /// The format.
        format: &'static str,
        /// `reading` or `writing`.
        direction: &'static str,
        /// The element type, as the file or caller names it.
        dtype: String,
        /// What the format supports.
        supported: &'static str,
    },
    /// The path's extension names no format we know.
    #[error("{}: unknown volume format; use .npy, .tif/.tiff, DIR.zarr[/array], FILE.h5[/dataset] (also .hdf5, .hdf) or DIR.precomputed[/scale]", path.display())]
    UnknownFormat {
        /// The path as given.
        path: PathBuf,
    },
    /// A `.zarr/key` or `.h5/key` path whose key holds `.` or `..`.
    #[error("{}: the array key may not contain `.` or `..` components", path.display())]
    BadKey {
        /// The path as given.
        path: PathBuf,
    },
    /// The container exists but holds no array or dataset under the requested key.
    #[error("{}: {what} {key:?} not found{}", path.display(), list_available(available))]
    KeyNotFound {
        /// The container (`.zarr` directory or `.h5` file).
        path: PathBuf,
        /// `array` or `dataset`.
        what: &'static str,
        /// The key asked for.
        key: String,
        /// Keys that do exist, to help the user.
        available: Vec<String>,
    },
    /// The request does not fit the volume (region, shape or dtype).
    #[error("{}: {source}", path.display())]
    Volume {
        /// The file.
        path: PathBuf,
        /// The problem, from em-core.
        source: em_core::CoreError,
    },
    /// An output would be, contain or lie inside an input of the same command (or another
    /// of its outputs).
    #[error("{}: the output {relation} {role} {}; choose another output path (nothing was written)", output.display(), other.display())]
    OutputOverlaps {
        /// The output as given.
        output: PathBuf,
        /// `is`, `contains` or `lies inside`.
        relation: &'static str,
        /// `the input` or `another output`.
        role: &'static str,
        /// The input or output it overlaps, as given.
        other: PathBuf,
    },
    /// The output exists and replacing it was not asked for.
    #[error("{}: {what} exists there; replacing it needs --overwrite (nothing was written)", path.display())]
    OutputExists {
        /// The output as given.
        path: PathBuf,
        /// `a file`, `a zarr array`, `an HDF5 dataset`.
        what: &'static str,
    },
    /// Writing the output would replace or reshape something that is not an array, whatever
    /// the overwrite setting: a group, a foreign directory, an array it would sit inside.
    #[error("{}: {reason} (nothing was written)", path.display())]
    OutputRefused {
        /// The output as given.
        path: PathBuf,
        /// What is there and why it stays.
        reason: String,
    },
    /// HDF5 support was not compiled in.
    #[error("{}: HDF5 support is not built in; rebuild with `--features hdf5` (needs libhdf5-dev)", path.display())]
    Hdf5Disabled {
        /// The file.
        path: PathBuf,
    },
}

fn list_available(keys: &[String]) -> String {
    if keys.is_empty() {
        String::new()
    } else {
        format!("; available: {}", keys.join(", "))
    }
}

impl IoError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
        move |source| IoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn unsupported(
        path: &Path,
        format: &'static str,
        direction: &'static str,
        dtype: impl Into<String>,
        supported: &'static str,
    ) -> IoError {
        IoError::UnsupportedDType {
            path: path.to_path_buf(),
            format,
            direction,
            dtype: dtype.into(),
            supported,
        }
    }

    pub(crate) fn corrupt(path: &Path, format: &'static str, reason: impl Into<String>) -> IoError {
        IoError::Corrupt {
            path: path.to_path_buf(),
            format,
            reason: reason.into(),
        }
    }

    /// Wraps an em-core error for `path`, unwrapping one that already came from em-io so
    /// that the path is not named twice.
    pub(crate) fn volume(path: &Path) -> impl FnOnce(em_core::CoreError) -> IoError + '_ {
        move |source| match source {
            em_core::CoreError::Storage(inner) => match inner.downcast::<IoError>() {
                Ok(own) => *own,
                Err(other) => IoError::Volume {
                    path: path.to_path_buf(),
                    source: em_core::CoreError::Storage(other),
                },
            },
            // The path is named here; the volume's own description would say it twice.
            em_core::CoreError::InVolume { source, .. } => IoError::Volume {
                path: path.to_path_buf(),
                source: *source,
            },
            source => IoError::Volume {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

impl From<IoError> for em_core::CoreError {
    fn from(e: IoError) -> Self {
        match e {
            IoError::Volume { path, source } => em_core::CoreError::InVolume {
                volume: path.display().to_string(),
                source: Box::new(source),
            },
            other => em_core::CoreError::Storage(Box::new(other)),
        }
    }
}
