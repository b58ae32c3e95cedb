//! Where a command may write. One rule for every writer: an output never equals, contains
//! or sits inside an input of the same command, nor another of its outputs (compared after
//! resolving symlinks, `..` and hard links); it never replaces a zarr group, an HDF5 group
//! or a directory that is not an array, never turns an array into a group by writing below
//! it, and replaces an existing array, dataset or file only with [`Existing::Replace`].
//!
//! ```
//! use em_io::{check_outputs, Existing};
//!
//! let dir = tempfile::tempdir()?;
//! let aff = dir.path().join("aff.npy");
//! std::fs::write(&aff, b"")?;
//! // The output may not be the input, under any spelling.
//! let same = dir.path().join("sub/../aff.npy");
//! assert!(check_outputs(&[&same], &[&aff], Existing::Replace).is_err());
//! // A new path is fine; an existing file needs `Existing::Replace`.
//! assert!(check_outputs(&[&dir.path().join("seg.npy")], &[&aff], Existing::Refuse).is_ok());
//! assert!(check_outputs(&[&aff], &[], Existing::Refuse).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::format::{Format, VolumePath};
use crate::zarr::{list_arrays, node_type};
use crate::{IoError, Result};

/// What a command may do with an output that already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Existing {
    /// Refuse: nothing the user had is replaced (the default).
    #[default]
    Refuse,
    /// Replace an existing array, dataset or file (the CLI's `--overwrite`). Groups,
    /// directories that are not arrays and the inputs themselves are still refused.
    Replace,
}

impl Existing {
    /// [`Existing::Replace`] when `overwrite` is set.
    pub fn from_overwrite(overwrite: bool) -> Self {
        if overwrite {
            Existing::Replace
        } else {
            Existing::Refuse
        }
    }
}

/// A place on disk, resolved so that two spellings of one place compare equal.
#[derive(Clone, Debug)]
struct Location {
    given: PathBuf,
    /// The volume path when `given` names one; otherwise a whole file (script, config,
    /// weights).
    volume: Option<VolumePath>,
    /// Absolute, symlinks and `..` resolved; for zarr the array's directory, for HDF5 the
    /// file.
    path: PathBuf,
    /// For HDF5, the dataset's path inside the file, by component.
    inner: Vec<String>,
    /// Device and inode of an existing path, which tells hard links apart.
    id: Option<(u64, u64)>,
}

#[cfg(unix)]
fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_p: &Path) -> Option<(u64, u64)> {
    None
}

/// `p` made absolute with every existing symlink resolved and `.`/`..` applied, also
/// below the part that exists yet.
pub fn resolve_path(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if fs::symlink_metadata(&out).is_ok() {
                    if let Ok(real) = fs::canonicalize(&out) {
                        out = real;
                    }
                }
            }
        }
    }
    out
}

impl Location {
    fn of(given: &Path) -> Self {
        let volume = VolumePath::parse(given).ok();
        let (path, inner) = match &volume {
            Some(vp) if vp.format == Format::Zarr => (resolve_path(&vp.display()), Vec::new()),
            // A precomputed directory is one volume whatever scale its key names.
            Some(vp) if vp.format == Format::Precomputed => {
                (resolve_path(&vp.container), Vec::new())
            }
            Some(vp) if vp.format == Format::Hdf5 => (
                resolve_path(&vp.container),
                vp.key
                    .iter()
                    .flat_map(|k| k.split('/'))
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            _ => (resolve_path(given), Vec::new()),
        };
        Self {
            given: given.to_path_buf(),
            volume,
            id: file_id(&path),
            path,
            inner,
        }
    }

    /// How `self` lies relative to `other`: the same place, containing it, or inside it.
    fn relation(&self, other: &Location) -> Option<&'static str> {
        let same_file = self.path == other.path || (self.id.is_some() && self.id == other.id);
        if same_file {
            let (a, b) = (&self.inner, &other.inner);
            return if a == b {
                Some("is")
            } else if b.starts_with(a) {
                Some("contains")
            } else if a.starts_with(b) {
                Some("lies inside")
            } else {
                None
            };
        }
        if other.path.starts_with(&self.path) {
            Some("contains")
        } else if self.path.starts_with(&other.path) {
            Some("lies inside")
        } else {
            None
        }
    }

    /// Refuses what writing here would destroy or reshape: always a group or a foreign
    /// directory, an array below an array; with [`Existing::Refuse`] also an existing
    /// array, dataset or file.
    fn check_target(&self, existing: Existing) -> Result<()> {
        let refuse = |reason: String| {
            Err(IoError::OutputRefused {
                path: self.given.clone(),
                reason,
            })
        };
        let exists = |what: &'static str| {
            if existing == Existing::Replace {
                Ok(())
            } else {
                Err(IoError::OutputExists {
                    path: self.given.clone(),
                    what,
                })
            }
        };
        match &self.volume {
            Some(vp) if vp.format == Format::Zarr => match zarr_target(vp)? {
                ZarrTarget::New => Ok(()),
                ZarrTarget::Array => exists("a zarr array"),
            },
            Some(vp) if vp.format == Format::Precomputed => {
                if precomputed_target(vp)? {
                    exists("a precomputed volume")
                } else {
                    Ok(())
                }
            }
            Some(vp) if vp.format == Format::Hdf5 => {
                if hdf5_target(vp)? {
                    exists("an HDF5 dataset")
                } else {
                    Ok(())
                }
            }
            _ => match fs::metadata(&self.path) {
                Ok(m) if m.is_dir() => refuse("is a directory, not a file".into()),
                Ok(_) => exists("a file"),
                Err(_) => Ok(()),
            },
        }
    }
}

/// What a zarr write at `container/key` would replace.
pub(crate) enum ZarrTarget {
    /// Nothing (or an empty directory).
    New,
    /// An existing array.
    Array,
}

/// The directory a zarr path names, or `Err` with the existing array its key would go
/// below: every level above the target must be a group or nothing.
pub(crate) fn zarr_dir_outside_arrays(vp: &VolumePath) -> std::result::Result<PathBuf, PathBuf> {
    let mut dir = vp.container.clone();
    for part in vp
        .key
        .iter()
        .flat_map(|k| k.split('/'))
        .filter(|p| !p.is_empty())
    {
        if node_type(&dir) == Some("array") {
            return Err(dir);
        }
        dir.push(part);
    }
    Ok(dir)
}

/// Checks a zarr write target: never a group, a non-empty directory that is not an array,
/// or a path below an existing array (which would turn the array into a group).
pub(crate) fn zarr_target(vp: &VolumePath) -> Result<ZarrTarget> {
    let display = vp.display();
    let refused = |reason: String| IoError::OutputRefused {
        path: display.clone(),
        reason,
    };
    let dir = zarr_dir_outside_arrays(vp).map_err(|array| {
        refused(format!(
            "lies inside the zarr array {}; an array holds no other arrays, so write beside \
             it instead",
            array.display()
        ))
    })?;
    if dir.is_file() {
        return Err(refused("is a file, not a zarr array".into()));
    }
    if !dir.is_dir() {
        return Ok(ZarrTarget::New);
    }
    match node_type(&dir) {
        Some("array") => Ok(ZarrTarget::Array),
        Some(_) => {
            let arrays = list_arrays(&dir);
            let held = if arrays.is_empty() {
                String::new()
            } else {
                format!(" holding {}", arrays.join(", "))
            };
            Err(refused(format!(
                "is a zarr group{held}; writing there would replace the whole group: name a \
                 new array inside it, e.g. {}",
                display.join("NAME").display()
            )))
        }
        None => {
            if !crate::safety::has_visible_entries(&dir) {
                Ok(ZarrTarget::New)
            } else {
                Err(refused(
                    "is a directory that is not a zarr array; writing there would replace \
                     everything in it"
                        .into(),
                ))
            }
        }
    }
}

/// Whether `dir` holds anything but hidden entries (staging leftovers, `.DS_Store`): an
/// empty directory may become an output, a used one is never replaced.
pub(crate) fn has_visible_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
    })
}

/// Whether a precomputed write at `vp` replaces an existing precomputed volume (the whole
/// directory, whichever scale the key names); a file or a directory that is not a
/// precomputed volume (and not empty) is refused.
pub(crate) fn precomputed_target(vp: &VolumePath) -> Result<bool> {
    let dir = &vp.container;
    let refused = |reason: &str| IoError::OutputRefused {
        path: vp.display(),
        reason: reason.into(),
    };
    if dir.is_file() {
        return Err(refused("is a file, not a precomputed directory"));
    }
    if !dir.is_dir() {
        return Ok(false);
    }
    if crate::precomputed::read_info(dir).is_ok() {
        return Ok(true);
    }
    if !has_visible_entries(dir) {
        Ok(false)
    } else {
        Err(refused(
            "is a directory that is not a precomputed volume; writing there would replace \
             everything in it",
        ))
    }
}

/// Whether an HDF5 write at `file/key` replaces an existing dataset; a group there (or a
/// dataset above it) is refused.
#[cfg(feature = "hdf5")]
fn hdf5_target(vp: &VolumePath) -> Result<bool> {
    match &vp.key {
        Some(k) if vp.container.is_file() => crate::hdf5::dataset_target(&vp.container, k),
        _ => Ok(false),
    }
}

#[cfg(not(feature = "hdf5"))]
fn hdf5_target(_vp: &VolumePath) -> Result<bool> {
    // Without HDF5 support the write itself fails with a clear error.
    Ok(false)
}

/// Checks, before any work, that writing `outputs` keeps every input and every other
/// output intact and replaces nothing it may not (see [`Existing`]).
///
/// # Errors
/// [`IoError::OutputOverlaps`] when an output is, contains or lies inside an input or
/// another output; [`IoError::OutputExists`] for an existing array, dataset or file without
/// [`Existing::Replace`]; [`IoError::OutputRefused`] for a group, a foreign directory or a
/// path below an array.
pub fn check_outputs(outputs: &[&Path], inputs: &[&Path], existing: Existing) -> Result<()> {
    check_disjoint(outputs, inputs)?;
    for out in outputs {
        Location::of(out).check_target(existing)?;
    }
    Ok(())
}

/// The overlap half of [`check_outputs`], for outputs that are directories a command owns
/// (a work or run directory): none may be, contain or lie inside an input or another output.
///
/// # Errors
/// [`IoError::OutputOverlaps`].
pub fn check_disjoint(outputs: &[&Path], inputs: &[&Path]) -> Result<()> {
    let ins: Vec<Location> = inputs.iter().map(|p| Location::of(p)).collect();
    let outs: Vec<Location> = outputs.iter().map(|p| Location::of(p)).collect();
    for (i, out) in outs.iter().enumerate() {
        for (role, others) in [("the input", &ins[..]), ("another output", &outs[..i])] {
            if let Some((relation, other)) =
                others.iter().find_map(|o| out.relation(o).map(|r| (r, o)))
            {
                return Err(IoError::OutputOverlaps {
                    output: out.given.clone(),
                    relation,
                    role,
                    other: other.given.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use em_core::AnyArray;
    use ndarray::ArrayD;

    fn small() -> AnyArray {
        AnyArray::from(ArrayD::<u8>::zeros(vec![2, 2, 2]))
    }

    #[test]
    fn every_spelling_of_an_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::write(d.join("a.npy"), &small()).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.join("a.npy"), d.join("link.npy")).unwrap();
            std::fs::hard_link(d.join("a.npy"), d.join("hard.npy")).unwrap();
        }
        let input = d.join("a.npy");
        let mut spellings = vec![d.join("a.npy"), d.join("sub/../a.npy"), d.join("./a.npy")];
        if cfg!(unix) {
            spellings.push(d.join("link.npy"));
            spellings.push(d.join("hard.npy"));
        }
        for out in spellings {
            let e = check_outputs(&[&out], &[&input], Existing::Replace).unwrap_err();
            assert!(
                matches!(e, IoError::OutputOverlaps { relation: "is", .. }),
                "{out:?}: {e}"
            );
        }
    }

    #[test]
    fn zarr_outputs_may_not_contain_or_sit_inside_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("d.zarr");
        crate::write(g.join("aff"), &small()).unwrap();
        let aff = g.join("aff");
        for (out, relation) in [(g.clone(), "contains"), (aff.join("v2"), "lies inside")] {
            let e = check_outputs(&[&out], &[&aff], Existing::Replace).unwrap_err();
            assert!(
                matches!(e, IoError::OutputOverlaps { relation: r, .. } if r == relation),
                "{out:?}: {e}"
            );
        }
        // A sibling array is fine.
        check_outputs(&[&g.join("seg")], &[&aff], Existing::Refuse).unwrap();
    }

    #[test]
    fn groups_and_foreign_directories_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("d.zarr");
        crate::write(g.join("img"), &small()).unwrap();
        let e = check_outputs(&[&g], &[], Existing::Replace).unwrap_err();
        assert!(e.to_string().contains("is a zarr group holding img"), "{e}");
        let e = check_outputs(&[&g.join("img/x")], &[], Existing::Replace).unwrap_err();
        assert!(e.to_string().contains("lies inside the zarr array"), "{e}");
        let plain = dir.path().join("notes.zarr");
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("thesis.tex"), b"x").unwrap();
        let e = check_outputs(&[&plain], &[], Existing::Replace).unwrap_err();
        assert!(e.to_string().contains("not a zarr array"), "{e}");
        // An existing array needs Replace.
        let e = check_outputs(&[&g.join("img")], &[], Existing::Refuse).unwrap_err();
        assert!(matches!(e, IoError::OutputExists { .. }), "{e}");
        check_outputs(&[&g.join("img")], &[], Existing::Replace).unwrap();
    }

    #[cfg(feature = "hdf5")]
    #[test]
    fn hdf5_groups_are_never_replaced_and_datasets_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.h5");
        crate::write(f.join("volumes/raw"), &small()).unwrap();
        crate::write(f.join("volumes/labels"), &small()).unwrap();
        for target in [f.join("volumes"), f.join("volumes/raw/x")] {
            let e = check_outputs(&[&target], &[], Existing::Replace).unwrap_err();
            assert!(matches!(e, IoError::OutputRefused { .. }), "{e}");
            // The library writer refuses the group in the same words.
            assert!(crate::write(&target, &small()).is_err());
        }
        let e = check_outputs(&[&f.join("volumes/raw")], &[], Existing::Refuse).unwrap_err();
        assert!(matches!(e, IoError::OutputExists { .. }), "{e}");
        check_outputs(&[&f.join("volumes/raw")], &[], Existing::Replace).unwrap();
        // Another dataset of the file an input is read from is fine.
        check_outputs(
            &[&f.join("seg")],
            &[&f.join("volumes/raw")],
            Existing::Refuse,
        )
        .unwrap();
        let e = check_outputs(
            &[&f.join("volumes")],
            &[&f.join("volumes/raw")],
            Existing::Replace,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                IoError::OutputOverlaps {
                    relation: "contains",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(crate::read(f.join("volumes/labels")).unwrap(), small());
    }

    #[test]
    fn precomputed_outputs_replace_only_precomputed_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("v.precomputed");
        crate::write(&v, &small()).unwrap();
        let e = check_outputs(&[&v], &[], Existing::Refuse).unwrap_err();
        assert!(e.to_string().contains("a precomputed volume exists"), "{e}");
        check_outputs(&[&v.join("1_1_1")], &[], Existing::Replace).unwrap();
        // Reading one scale and writing the volume (or another scale) is the same place.
        let e =
            check_outputs(&[&v.join("s1")], &[&v.join("1_1_1")], Existing::Replace).unwrap_err();
        assert!(
            matches!(e, IoError::OutputOverlaps { relation: "is", .. }),
            "{e}"
        );
        let other = dir.path().join("notes.precomputed");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("thesis.tex"), b"x").unwrap();
        let e = check_outputs(&[&other], &[], Existing::Replace).unwrap_err();
        assert!(e.to_string().contains("not a precomputed volume"), "{e}");
        assert!(crate::write(&other, &small()).is_err());
        assert!(other.join("thesis.tex").is_file());
    }

    #[test]
    fn two_outputs_may_not_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.npy");
        let e = check_outputs(&[&p, &p], &[], Existing::Refuse).unwrap_err();
        assert!(
            matches!(
                e,
                IoError::OutputOverlaps {
                    role: "another output",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn resolve_applies_dots_below_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let real = resolve_path(dir.path());
        assert_eq!(
            resolve_path(&dir.path().join("missing/../x.npy")),
            real.join("x.npy")
        );
        assert_eq!(resolve_path(&dir.path().join("a/./b")), real.join("a/b"));
    }
}
