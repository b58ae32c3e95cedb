//! Which format a path names, and the container/key split of `dir.zarr/array` and
//! `file.h5/dataset` paths.

use std::path::{Path, PathBuf};

use crate::{IoError, Result};

/// A volume file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// numpy `.npy`.
    Npy,
    /// Multi-page TIFF (`.tif`, `.tiff`).
    Tiff,
    /// A zarr v2 or v3 array (`.zarr` directory).
    Zarr,
    /// An HDF5 dataset (`.h5`, `.hdf5`, `.hdf`).
    Hdf5,
    /// A neuroglancer precomputed volume (`.precomputed` directory); the key, if any, names
    /// a scale.
    Precomputed,
}

impl Format {
    fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "npy" => Some(Format::Npy),
            "tif" | "tiff" => Some(Format::Tiff),
            "zarr" => Some(Format::Zarr),
            "h5" | "hdf5" | "hdf" => Some(Format::Hdf5),
            "precomputed" => Some(Format::Precomputed),
            _ => None,
        }
    }

    /// The format's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Npy => "npy",
            Format::Tiff => "TIFF",
            Format::Zarr => "zarr",
            Format::Hdf5 => "HDF5",
            Format::Precomputed => "precomputed",
        }
    }
}

/// A volume path split into its format, container file/directory and inner key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumePath {
    /// The format.
    pub format: Format,
    /// The file (`.npy`, `.tif`, `.h5`) or directory (`.zarr`, `.precomputed`).
    pub container: PathBuf,
    /// The array/dataset inside the container (`raw`, `volumes/labels`), or the scale of a
    /// precomputed volume (`8_8_40`), if any.
    pub key: Option<String>,
}

impl VolumePath {
    /// Splits `path` at its first component whose extension names a format; what follows is
    /// the key inside the container (only zarr, HDF5 and precomputed have keys).
    ///
    /// # Errors
    /// [`IoError::UnknownFormat`] when no component names a format, or an npy/TIFF path goes on
    /// past the file.
    pub fn parse(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut container = PathBuf::new();
        let mut components = path.components();
        for component in components.by_ref() {
            container.push(component);
            let ext = Path::new(component.as_os_str()).extension();
            if let Some(format) = ext
                .and_then(|e| e.to_str())
                .and_then(Format::from_extension)
            {
                let rest: Vec<String> = components
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .filter(|c| !c.is_empty())
                    .collect();
                let key = (!rest.is_empty()).then(|| rest.join("/"));
                if key.is_some() && matches!(format, Format::Npy | Format::Tiff) {
                    return Err(IoError::UnknownFormat { path: path.into() });
                }
                // A key that climbs out of its container would read or write elsewhere.
                if rest.iter().any(|c| c == ".." || c == ".") {
                    return Err(IoError::BadKey { path: path.into() });
                }
                return Ok(Self {
                    format,
                    container,
                    key,
                });
            }
        }
        Err(IoError::UnknownFormat { path: path.into() })
    }

    /// The path as the user would write it.
    pub fn display(&self) -> PathBuf {
        match &self.key {
            Some(k) => self.container.join(k),
            None => self.container.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_containers_and_keys() {
        let p = VolumePath::parse("data/sample.zarr/volumes/raw").unwrap();
        assert_eq!(p.format, Format::Zarr);
        assert_eq!(p.container, PathBuf::from("data/sample.zarr"));
        assert_eq!(p.key.as_deref(), Some("volumes/raw"));
        let p = VolumePath::parse("/tmp/x.H5/main").unwrap();
        assert_eq!((p.format, p.key.as_deref()), (Format::Hdf5, Some("main")));
        let p = VolumePath::parse("stack.tif").unwrap();
        assert_eq!((p.format, p.key), (Format::Tiff, None));
        assert!(VolumePath::parse("stack.tif/page").is_err());
        assert!(VolumePath::parse("notes.txt").is_err());
        assert_eq!(VolumePath::parse("a.zarr/").unwrap().key, None);
        assert!(VolumePath::parse("a.zarr/seg/../img").is_err());
        assert!(VolumePath::parse("../a.zarr/seg").is_ok());
        let p = VolumePath::parse("em/seg.precomputed/8_8_40").unwrap();
        assert_eq!(p.format, Format::Precomputed);
        assert_eq!(p.container, PathBuf::from("em/seg.precomputed"));
        assert_eq!(p.key.as_deref(), Some("8_8_40"));
        assert_eq!(VolumePath::parse("seg.precomputed").unwrap().key, None);
    }
}
