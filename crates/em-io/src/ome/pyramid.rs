//! Multiscale pyramids written as OME-Zarr image groups, block by block.

use std::fs;
use std::path::{Path, PathBuf};

use em_core::{BlockGrid, ChunkedVolume, CoreError, DType, Progress, Roi, VoxelSize};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use super::downsample::{downsample_any, Reduce};
use super::metadata::{
    dataset_paths, merge_array_attrs, multiscale_voxel_size, ome_attrs, ome_fields, read_node,
    write_group, Attrs, NodeKind,
};
use crate::format::{Format, VolumePath};
use crate::safety::Existing;
use crate::zarr::{create_groups_above, list_arrays, node_type, node_type_version};
use crate::{IoError, Result, StagedDir, ZarrOptions, ZarrVersion, ZarrVolume, ZarrWriter};

/// The most levels a pyramid may have: 2^31 is far beyond any volume's side.
pub const MAX_LEVELS: usize = 32;

/// Levels are added (when [`PyramidOptions::levels`] is `None`) until the largest spatial
/// side of the last one is at most this many voxels.
pub const SMALLEST_SIDE: u64 = 64;

/// Default chunk side of the level arrays (spatial axes; a channel axis is kept whole).
const CHUNK_SIDE: u64 = 64;

/// How the voxels of one level are reduced into the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PyramidKind {
    /// [`PyramidKind::Labels`] for `u32`, `u64`, `i32`, `i64` and `bool` (segmentations,
    /// masks); [`PyramidKind::Image`] for `u8`, `u16`, `i8`, `i16` and floats (EM images,
    /// predictions).
    #[default]
    Auto,
    /// The mean of each window, computed in `f64` and converted back: integers rounded
    /// half away from zero (and saturated at the type's range), floats cast, `bool` true
    /// from a mean of 0.5. NaN in a float window makes the mean NaN.
    Image,
    /// The most frequent value of each window; among equally frequent values the smallest
    /// (so the background 0 wins ties against objects, and lower ids against higher).
    Labels,
}

impl PyramidKind {
    /// The kind [`PyramidKind::Auto`] stands for with `dtype` (others stay as they are).
    pub fn resolve(self, dtype: DType) -> PyramidKind {
        match self {
            PyramidKind::Auto => match dtype {
                DType::U32 | DType::U64 | DType::I32 | DType::I64 | DType::Bool => {
                    PyramidKind::Labels
                }
                _ => PyramidKind::Image,
            },
            other => other,
        }
    }
}

/// Where the voxel size of a pyramid came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VoxelSizeSource {
    /// [`PyramidOptions::voxel_size`].
    Given,
    /// The input's metadata ([`crate::voxel_size`]).
    Metadata,
    /// The image a label pyramid under `IMAGE/labels/NAME` belongs to.
    Image,
    /// None was found: 1 nm per side. Callers should warn.
    Default,
}

/// Options of [`build_pyramid`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PyramidOptions {
    /// Number of levels, level 0 (the full-resolution copy) included: 1 to [`MAX_LEVELS`].
    /// `None`: levels until the largest spatial side is at most [`SMALLEST_SIDE`] voxels.
    pub levels: Option<usize>,
    /// The voxel size (z, y, x) of the source in nm. `None`: found in the metadata where the
    /// caller knows the source's path ([`write_pyramid`], [`make_ome_in_place`]), else 1 nm.
    pub voxel_size: Option<[f64; 3]>,
    /// Image (window mean) or labels (window mode).
    pub kind: PyramidKind,
    /// Layout of the level arrays. `chunk_shape`: three spatial sides (a channel axis kept
    /// whole) or one per axis, clipped to each level's shape; default 64 per spatial side.
    /// `version`: zarr v3 with OME-NGFF 0.5, or v2 with OME-NGFF 0.4; `None` follows an
    /// existing container and is v3 otherwise.
    pub zarr: ZarrOptions,
    /// Worker threads; `None`: rayon's global pool.
    pub threads: Option<usize>,
}

/// One level of a written pyramid.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PyramidLevel {
    /// The array's path inside the group (`"0"`, `"1"`, …).
    pub path: String,
    /// Its shape (a channel axis first, unchanged from level 0).
    pub shape: Vec<u64>,
    /// Its downsampling factor (z, y, x) relative to level 0.
    pub factor: [u64; 3],
    /// Its voxel size (z, y, x) in nm: level 0's × `factor` (its `scale` transformation).
    pub voxel_size: [f64; 3],
    /// Where its first voxel's centre lies in nm: level 0's voxel size × (factor − 1) / 2
    /// (its `translation` transformation).
    pub translation: [f64; 3],
}

/// What [`build_pyramid`] wrote (also `em pyramid --json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PyramidSummary {
    /// The group, as given.
    pub path: PathBuf,
    /// Element type of every level.
    pub dtype: DType,
    /// How levels were reduced ([`PyramidKind::Auto`] resolved).
    pub kind: PyramidKind,
    /// zarr format version, 2 or 3.
    pub zarr_version: u8,
    /// OME-NGFF version of the metadata, `"0.4"` or `"0.5"`.
    pub ome_version: &'static str,
    /// Voxel size (z, y, x) of level 0 in nm.
    pub voxel_size: [f64; 3],
    /// Where `voxel_size` came from.
    pub voxel_size_source: VoxelSizeSource,
    /// The levels, finest first.
    pub levels: Vec<PyramidLevel>,
    /// For a label image written as `IMAGE/labels/NAME`: the image group whose `labels`
    /// list now names it.
    pub label_of: Option<PathBuf>,
}

/// The plan of one level.
#[derive(Clone, Debug)]
struct Level {
    shape: Vec<u64>,
    /// Factor (z, y, x) from the previous level (1s for level 0).
    step: [u64; 3],
    /// Factor (z, y, x) from level 0.
    factor: [u64; 3],
}

/// The next level's factor at voxel size `v` (z, y, x): in-plane 2×2 while the z side is at
/// least twice the larger in-plane side (serial-section data, which then approaches
/// isotropy without passing it), 2×2×2 otherwise.
fn step_for(v: [f64; 3]) -> [u64; 3] {
    if v[0] >= 2.0 * v[1].max(v[2]) {
        [1, 2, 2]
    } else {
        [2, 2, 2]
    }
}

fn plan_levels(shape: &[u64], voxel: [f64; 3], levels: Option<usize>) -> Vec<Level> {
    let n = shape.len();
    let mut out = vec![Level {
        shape: shape.to_vec(),
        step: [1; 3],
        factor: [1; 3],
    }];
    loop {
        let last = &out[out.len() - 1];
        let done = match levels {
            Some(l) => out.len() >= l,
            None => {
                last.shape[n - 3..].iter().max().copied().unwrap_or(0) <= SMALLEST_SIDE
                    || out.len() >= MAX_LEVELS
            }
        };
        if done {
            return out;
        }
        let v = [0, 1, 2].map(|i| voxel[i] * last.factor[i] as f64);
        let step = step_for(v);
        let mut next = last.shape.clone();
        for i in 0..3 {
            next[n - 3 + i] = next[n - 3 + i].div_ceil(step[i]);
        }
        let factor = [0, 1, 2].map(|i| last.factor[i] * step[i]);
        out.push(Level {
            shape: next,
            step,
            factor,
        });
    }
}

fn invalid(path: &Path, name: &'static str, reason: String) -> IoError {
    IoError::Volume {
        path: path.to_path_buf(),
        source: CoreError::InvalidParameter { name, reason },
    }
}

/// What a pyramid written at a path would replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    New,
    Array,
    Pyramid,
}

/// Whether `dir` is a pyramid group that holds nothing but the levels its multiscales
/// list, which a new pyramid may replace without losing anything else.
fn is_plain_pyramid(dir: &Path) -> bool {
    let Ok(Some(node)) = read_node(dir) else {
        return false;
    };
    if node.kind != NodeKind::Group {
        return false;
    }
    let Some(paths) = dataset_paths(&node) else {
        return false;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().all(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.starts_with('.') || name == "zarr.json" || paths.contains(&name)
    })
}

/// Checks a pyramid's target: never inside an array, never over a file, a foreign
/// directory or a group other than a plain pyramid.
fn pyramid_target(vp: &VolumePath) -> Result<Target> {
    let display = vp.display();
    let refused = |reason: String| IoError::OutputRefused {
        path: display.clone(),
        reason,
    };
    if vp.format != Format::Zarr {
        return Err(refused(
            "an OME-Zarr pyramid is a zarr group; name DIR.zarr or DIR.zarr/NAME".into(),
        ));
    }
    let dir = crate::safety::zarr_dir_outside_arrays(vp).map_err(|array| {
        refused(format!(
            "lies inside the zarr array {}; write the pyramid beside it instead",
            array.display()
        ))
    })?;
    if dir.is_file() {
        return Err(refused("is a file, not a zarr group".into()));
    }
    if !dir.is_dir() {
        return Ok(Target::New);
    }
    match node_type(&dir) {
        Some("array") => Ok(Target::Array),
        Some(_) if is_plain_pyramid(&dir) => Ok(Target::Pyramid),
        Some(_) => {
            let arrays = list_arrays(&dir);
            let held = if arrays.is_empty() {
                String::new()
            } else {
                format!(" holding {}", arrays.join(", "))
            };
            Err(refused(format!(
                "is a zarr group{held} that is not a pyramid of its own; writing there would \
                 replace the whole group: name a new group inside it, e.g. {}",
                display.join("NAME").display()
            )))
        }
        None => {
            if !crate::safety::has_visible_entries(&dir) {
                Ok(Target::New)
            } else {
                Err(refused(
                    "is a directory that is not zarr; writing there would replace everything \
                     in it"
                        .into(),
                ))
            }
        }
    }
}

/// Checks, before any work, where a pyramid goes: as [`crate::check_outputs`] (never over,
/// inside or around an input; an existing output replaced only with [`Existing::Replace`]),
/// except that an existing pyramid group holding only its own levels counts as a
/// replaceable output rather than a group that is never replaced.
///
/// # Errors
/// [`IoError::OutputOverlaps`], [`IoError::OutputExists`], [`IoError::OutputRefused`].
pub fn check_pyramid_output(out: &Path, inputs: &[&Path], existing: Existing) -> Result<()> {
    crate::check_disjoint(&[out], inputs)?;
    let vp = VolumePath::parse(out)?;
    let what = match pyramid_target(&vp)? {
        Target::New => return Ok(()),
        Target::Array => "a zarr array",
        Target::Pyramid => "an OME-Zarr pyramid",
    };
    if existing == Existing::Replace {
        Ok(())
    } else {
        Err(IoError::OutputExists {
            path: out.to_path_buf(),
            what,
        })
    }
}

/// A label pyramid written as `IMAGE/labels/NAME` beside an OME image group.
struct LabelsOf {
    image: PathBuf,
    labels: PathBuf,
    name: String,
    version: ZarrVersion,
    voxel_size: Option<[f64; 3]>,
}

fn labels_of(vp: &VolumePath) -> Result<Option<LabelsOf>> {
    let parts: Vec<&str> = vp
        .key
        .iter()
        .flat_map(|k| k.split('/'))
        .filter(|p| !p.is_empty())
        .collect();
    let n = parts.len();
    if n < 2 || parts[n - 2] != "labels" {
        return Ok(None);
    }
    let image = parts[..n - 2]
        .iter()
        .fold(vp.container.clone(), |d, p| d.join(p));
    let Some(node) = read_node(&image)? else {
        return Ok(None);
    };
    if node.kind != NodeKind::Group || dataset_paths(&node).is_none() {
        return Ok(None);
    }
    Ok(Some(LabelsOf {
        labels: image.join("labels"),
        voxel_size: multiscale_voxel_size(&node, None)?,
        version: node.version,
        image,
        name: parts[n - 1].to_string(),
    }))
}

/// Makes `dir` a zarr group unless it already is one.
/// Adds `name` to the `labels` list of the labels group at `dir`.
fn register_label(dir: &Path, version: ZarrVersion, name: &str) -> Result<()> {
    let node = read_node(dir)?;
    let mut attrs = node.map(|n| n.attrs).unwrap_or_default();
    let mut fields = ome_fields(&attrs).clone();
    let mut list: Vec<Value> = fields
        .get("labels")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !list.iter().any(|v| v.as_str() == Some(name)) {
        list.push(json!(name));
    }
    fields.insert("labels".into(), Value::Array(list));
    fields.remove("version");
    // Other attributes of the group stay as they were.
    attrs.remove("ome");
    attrs.extend(ome_attrs(version, fields));
    write_group(dir, version, &attrs)
}

/// The chunk shape of a level of `shape`, from the option (three spatial sides or one per
/// axis) clipped to the shape.
fn level_chunks(option: Option<&[u64]>, shape: &[u64]) -> Vec<u64> {
    let n = shape.len();
    (0..n)
        .map(|i| {
            let want = match option {
                Some(c) if c.len() == n => c[i],
                Some(c) if i + 3 >= n => c[i + 3 - n],
                // A channel axis stays whole.
                Some(_) => shape[i],
                None if i + 3 >= n => CHUNK_SIDE,
                None => shape[i],
            };
            want.min(shape[i]).max(1)
        })
        .collect()
}

/// Validates what a pyramid needs of its source and options; the error names `display`.
fn validate(
    display: &Path,
    shape: &[u64],
    options: &PyramidOptions,
    voxel: [f64; 3],
) -> Result<()> {
    if !(3..=4).contains(&shape.len()) {
        return Err(invalid(
            display,
            "volume",
            format!(
                "the source has shape {shape:?} ({} axes); a pyramid needs (Z, Y, X) or \
                 (C, Z, Y, X)",
                shape.len()
            ),
        ));
    }
    if shape.contains(&0) {
        return Err(invalid(
            display,
            "volume",
            format!("the source of shape {shape:?} is empty"),
        ));
    }
    if let Some(l) = options.levels {
        if !(1..=MAX_LEVELS).contains(&l) {
            return Err(invalid(
                display,
                "levels",
                format!("{l}; allowed 1..={MAX_LEVELS} (level 0 is the full resolution)"),
            ));
        }
    }
    VoxelSize::new(voxel).map_err(|source| IoError::Volume {
        path: display.to_path_buf(),
        source,
    })?;
    if let Some(c) = &options.zarr.chunk_shape {
        if !(c.len() == 3 || c.len() == shape.len()) || c.contains(&0) {
            return Err(invalid(
                display,
                "chunk shape",
                format!(
                    "{c:?}; give three positive spatial sides (z, y, x) or one per axis of \
                     {shape:?}"
                ),
            ));
        }
    }
    if options.threads == Some(0) {
        return Err(invalid(display, "threads", "0; at least 1".into()));
    }
    Ok(())
}

/// Runs `f` on a pool of `threads` workers, or on the current pool.
fn in_pool<R: Send>(
    threads: Option<usize>,
    display: &Path,
    f: impl FnOnce() -> R + Send,
) -> Result<R> {
    match threads {
        None => Ok(f()),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| invalid(display, "threads", format!("{n}: {e}")))?;
            Ok(pool.install(f))
        }
    }
}

/// Builds an OME-Zarr multiscale pyramid of `source` as the zarr group `out`
/// (`DIR.zarr` or `DIR.zarr/NAME`): arrays `0` (a copy of the source), `1`, … and their
/// OME-NGFF multiscales metadata (0.5 on zarr v3, 0.4 on zarr v2).
///
/// Each level is computed from the one before by [`PyramidKind`]'s reduction over windows
/// of 2×2 in-plane while the z side of the voxels is at least twice the larger in-plane
/// side, of 2×2×2 otherwise; a channel axis `(C, Z, Y, X)` is never reduced. Odd sides
/// round up, and edge windows use only the voxels present. The level metadata carries each
/// level's `scale` (voxel size × factor) and a `translation` of level 0's voxel size ×
/// (factor − 1) / 2, which puts a coarse voxel's centre at the centre of the fine voxels it
/// covers, as ome-zarr-py writes; level arrays also get `dimension_names` (v3) or
/// `_ARRAY_DIMENSIONS` (v2) and neuroglancer's `dimension_units`. A labels pyramid of an
/// integer type gets `image-label` metadata; written as `IMAGE/labels/NAME` beside an OME
/// image group, it is also added to the `labels` list of `IMAGE/labels` (and takes the
/// image's voxel size when none is given).
///
/// Out of core and in parallel: each level is written one output chunk at a time from the
/// matching region of the level before, with at most twice as many blocks in flight as
/// worker threads. Memory is therefore about 2 × threads × 9 × chunk voxels × element size
/// (a 64³ chunk of `u64` with its 128³ input window: 18 MiB per block), whatever the
/// volume's size.
///
/// Atomic: the group is built under a staging name and moved into place whole when done,
/// replacing an existing array or pyramid there; on failure nothing is left. `out` may name
/// the source's own array (see [`make_ome_in_place`]): the source is read in full before the
/// group replaces it. A group that is not a plain pyramid, a foreign directory or a path
/// inside an array is refused. Callers check their outputs first with
/// [`check_pyramid_output`].
///
/// # Errors
/// [`IoError::Volume`] with an invalid-parameter error for a source that is not 3-D or 4-D
/// or is empty, `levels` outside 1..=[`MAX_LEVELS`], a voxel size that is not positive and
/// finite, a bad chunk shape or compression level, or a label image under `labels/` that
/// is not integer; [`IoError::OutputRefused`]; the source's read errors; I/O errors.
pub fn build_pyramid(
    source: &dyn ChunkedVolume,
    out: &VolumePath,
    options: &PyramidOptions,
    progress: &dyn Progress,
) -> Result<PyramidSummary> {
    let voxel = options.voxel_size.map(|v| (v, VoxelSizeSource::Given));
    build(source, out, options, voxel, progress)
}

fn build(
    source: &dyn ChunkedVolume,
    out: &VolumePath,
    options: &PyramidOptions,
    voxel: Option<([f64; 3], VoxelSizeSource)>,
    progress: &dyn Progress,
) -> Result<PyramidSummary> {
    let display = out.display();
    let shape = source.shape().to_vec();
    let dtype = source.dtype();
    let explicit = voxel.map_or([1.0; 3], |(v, _)| v);
    validate(&display, &shape, options, explicit)?;
    pyramid_target(out)?;
    let labels_of = labels_of(out)?;
    let kind = options.kind.resolve(dtype);
    if let Some(l) = &labels_of {
        if kind != PyramidKind::Labels || !dtype.is_integer() {
            return Err(invalid(
                &display,
                "label image",
                format!(
                    "a label image under {} must be an integer volume reduced as labels; \
                     this one is {dtype} reduced as {kind:?}",
                    l.labels.display()
                ),
            ));
        }
        if options.zarr.version.is_some_and(|v| v != l.version) {
            return Err(invalid(
                &display,
                "zarr version",
                format!(
                    "the image {} is zarr {}; its labels must be too",
                    l.image.display(),
                    version_number(l.version)
                ),
            ));
        }
    }
    let (voxel, voxel_source) = match (voxel, labels_of.as_ref().and_then(|l| l.voxel_size)) {
        (Some(v), _) => v,
        (None, Some(v)) => (v, VoxelSizeSource::Image),
        (None, None) => ([1.0; 3], VoxelSizeSource::Default),
    };
    let version = options
        .zarr
        .version
        .or(labels_of.as_ref().map(|l| l.version))
        .or_else(|| node_type_version(&out.container))
        .unwrap_or(ZarrVersion::V3);
    let levels = plan_levels(&shape, voxel, options.levels);
    let n = shape.len();
    let chunks: Vec<Vec<u64>> = levels
        .iter()
        .map(|l| level_chunks(options.zarr.chunk_shape.as_deref(), &l.shape))
        .collect();

    // The pyramid itself is staged.
    let group_dir = create_groups_above(out, version)?;
    let staged = StagedDir::create(&group_dir)?;
    write_group(staged.path(), version, &Attrs::new())?;

    let total: u64 = levels
        .iter()
        .zip(&chunks)
        .map(|(l, c)| {
            l.shape
                .iter()
                .zip(c)
                .map(|(s, c)| s.div_ceil(*c))
                .product::<u64>()
        })
        .sum();
    progress.start("pyramid", total);
    let reduce = match kind {
        PyramidKind::Labels => Reduce::Mode,
        _ => Reduce::Mean,
    };
    let source_name = PathBuf::from(source.describe());
    in_pool(options.threads, &display, || -> Result<()> {
        let workers = rayon::current_num_threads().max(1);
        let mut previous: Option<ZarrVolume> = None;
        for (k, level) in levels.iter().enumerate() {
            let zarr = ZarrOptions {
                chunk_shape: Some(chunks[k].clone()),
                compression: options.zarr.compression,
                version: Some(version),
            };
            let vp = VolumePath {
                format: Format::Zarr,
                container: staged.path().to_path_buf(),
                key: Some(k.to_string()),
            };
            let writer = ZarrWriter::create(&vp, &level.shape, dtype, &zarr)?;
            let grid = BlockGrid::new(&level.shape, &chunks[k], &vec![0; n]).map_err(|source| {
                IoError::Volume {
                    path: display.clone(),
                    source,
                }
            })?;
            let blocks: Vec<Roi> = grid.iter().map(|b| b.core).collect();
            let step = level.step.map(|s| s as usize);
            let fill = |roi: &Roi| -> Result<()> {
                let data = match &previous {
                    None => source
                        .read_roi(roi)
                        .map_err(IoError::volume(&source_name))?,
                    Some(prev) => {
                        let window = input_roi(roi, level.step, prev.shape());
                        let block = prev.read_roi(&window).map_err(IoError::volume(&display))?;
                        downsample_any(&block, step, reduce).ok_or_else(|| {
                            invalid(&display, "block", format!("cannot reduce {window}"))
                        })?
                    }
                };
                writer
                    .volume()
                    .write_roi(roi, &data)
                    .map_err(IoError::volume(&display))?;
                progress.advance(1);
                Ok(())
            };
            // Batches bound the blocks in memory: a worker waiting inside zarrs' own
            // parallel decoding may otherwise start further blocks.
            for batch in blocks.chunks(2 * workers) {
                batch.par_iter().try_for_each(fill)?;
            }
            drop(previous.take());
            let volume = writer.commit()?;
            merge_array_attrs(
                &staged.path().join(k.to_string()),
                version,
                &level_attrs(n, version, voxel, level.factor),
            )?;
            previous = Some(volume);
        }
        Ok(())
    })??;

    let summary_levels: Vec<PyramidLevel> = levels
        .iter()
        .enumerate()
        .map(|(k, l)| PyramidLevel {
            path: k.to_string(),
            shape: l.shape.clone(),
            factor: l.factor,
            voxel_size: [0, 1, 2].map(|i| voxel[i] * l.factor[i] as f64),
            translation: [0, 1, 2].map(|i| voxel[i] * (l.factor[i] as f64 - 1.0) / 2.0),
        })
        .collect();
    let name = group_dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut fields = Attrs::new();
    fields.insert(
        "multiscales".into(),
        json!([multiscale(&name, n, kind, &summary_levels)]),
    );
    if kind == PyramidKind::Labels && dtype.is_integer() {
        let mut label = Attrs::new();
        if labels_of.is_some() {
            label.insert("source".into(), json!({"image": "../../"}));
        }
        fields.insert("image-label".into(), Value::Object(label));
    }
    write_group(staged.path(), version, &ome_attrs(version, fields))?;
    staged.commit()?;
    progress.finish();
    // Listed only once it exists: a failure in between leaves an unlisted label image,
    // never a listed one that is missing.
    if let Some(l) = &labels_of {
        register_label(&l.labels, version, &l.name)?;
    }
    Ok(PyramidSummary {
        path: display,
        dtype,
        kind,
        zarr_version: version_number(version),
        ome_version: match version {
            ZarrVersion::V2 => "0.4",
            ZarrVersion::V3 => "0.5",
        },
        voxel_size: voxel,
        voxel_size_source: voxel_source,
        levels: summary_levels,
        label_of: labels_of.map(|l| l.image),
    })
}

fn version_number(v: ZarrVersion) -> u8 {
    match v {
        ZarrVersion::V2 => 2,
        ZarrVersion::V3 => 3,
    }
}

/// The region of the previous level that output block `roi` is reduced from.
fn input_roi(roi: &Roi, step: [u64; 3], prev_shape: &[u64]) -> Roi {
    let n = roi.ndim();
    let ranges: Vec<_> = roi
        .ranges()
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            if i + 3 < n {
                r
            } else {
                let f = step[i + 3 - n];
                r.start * f..(r.end * f).min(prev_shape[i])
            }
        })
        .collect();
    Roi::from_ranges(&ranges)
}

fn axis_names(n: usize) -> Vec<&'static str> {
    if n == 4 {
        vec!["c", "z", "y", "x"]
    } else {
        vec!["z", "y", "x"]
    }
}

/// The attributes of a level array: axis names for readers of zarr v2 (xarray's
/// convention, which neuroglancer follows) and neuroglancer's `dimension_units`, so that a
/// level opened on its own still shows nanometres.
fn level_attrs(n: usize, version: ZarrVersion, voxel: [f64; 3], factor: [u64; 3]) -> Attrs {
    let mut units: Vec<Value> = (0..3)
        .map(|i| json!(format!("{} nm", voxel[i] * factor[i] as f64)))
        .collect();
    if n == 4 {
        units.insert(0, Value::Null);
    }
    let mut attrs = Attrs::new();
    attrs.insert("dimension_units".into(), Value::Array(units));
    if version == ZarrVersion::V2 {
        attrs.insert("_ARRAY_DIMENSIONS".into(), json!(axis_names(n)));
    }
    attrs
}

fn multiscale(name: &str, n: usize, kind: PyramidKind, levels: &[PyramidLevel]) -> Value {
    let mut axes: Vec<Value> = ["z", "y", "x"]
        .iter()
        .map(|a| json!({"name": a, "type": "space", "unit": "nanometer"}))
        .collect();
    if n == 4 {
        axes.insert(0, json!({"name": "c", "type": "channel"}));
    }
    let lead: Vec<f64> = if n == 4 { vec![1.0] } else { vec![] };
    let zero: Vec<f64> = if n == 4 { vec![0.0] } else { vec![] };
    let datasets: Vec<Value> = levels
        .iter()
        .map(|l| {
            let scale: Vec<f64> = lead.iter().chain(&l.voxel_size).copied().collect();
            let translation: Vec<f64> = zero.iter().chain(&l.translation).copied().collect();
            json!({
                "path": l.path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": translation},
                ],
            })
        })
        .collect();
    let (method, description) = match kind {
        PyramidKind::Labels => (
            "mode",
            "most frequent value of each 2x2 (in-plane) or 2x2x2 window, ties to the smaller",
        ),
        _ => (
            "mean",
            "mean of each 2x2 (in-plane) or 2x2x2 window, integers rounded half away from zero",
        ),
    };
    json!({
        "name": name,
        "axes": axes,
        "datasets": datasets,
        "type": method,
        "metadata": {
            "description": description,
            "method": "em_io::ome::build_pyramid",
            "version": env!("CARGO_PKG_VERSION"),
        },
    })
}

/// Opens `input` (any format [`crate::open`] reads) and builds its pyramid at `out` with
/// [`build_pyramid`]; without [`PyramidOptions::voxel_size`] the voxel size comes from the
/// input's metadata ([`crate::voxel_size`]) where it has one.
///
/// # Errors
/// As [`crate::open`], [`crate::voxel_size`] and [`build_pyramid`].
pub fn write_pyramid(
    input: &Path,
    out: &Path,
    options: &PyramidOptions,
    progress: &dyn Progress,
) -> Result<PyramidSummary> {
    let out = VolumePath::parse(out)?;
    let source = crate::open(input)?;
    let voxel = match options.voxel_size {
        Some(v) => Some((v, VoxelSizeSource::Given)),
        None => super::voxel_size(input)?.map(|v| (v, VoxelSizeSource::Metadata)),
    };
    build(source.as_ref(), &out, options, voxel, progress)
}

/// Turns the zarr array at `path` into an OME-Zarr pyramid group at the same path, level 0
/// holding its data: for commands that write their usual output and then, asked for
/// OME-Zarr, make it a pyramid. The voxel size is [`PyramidOptions::voxel_size`], else the
/// array's metadata (funlib's `resolution`), else 1 nm; the zarr version is the option's,
/// else the array's. Atomic as [`build_pyramid`]: on failure the array stays as it was.
///
/// # Errors
/// [`IoError::OutputRefused`] when `path` is not a zarr path; as [`ZarrVolume::open`]
/// and [`build_pyramid`].
pub fn make_ome_in_place(
    path: &Path,
    options: &PyramidOptions,
    progress: &dyn Progress,
) -> Result<PyramidSummary> {
    let vp = VolumePath::parse(path)?;
    if vp.format != Format::Zarr {
        return Err(IoError::OutputRefused {
            path: path.to_path_buf(),
            reason: format!(
                "is a {} file; only a zarr array can become an OME-Zarr pyramid in place",
                vp.format.name()
            ),
        });
    }
    let source = ZarrVolume::open(&vp)?;
    let voxel = match options.voxel_size {
        Some(v) => Some((v, VoxelSizeSource::Given)),
        None => super::voxel_size(path)?.map(|v| (v, VoxelSizeSource::Metadata)),
    };
    let mut options = options.clone();
    if options.zarr.version.is_none() {
        options.zarr.version = Some(match source.zarr_version() {
            2 => ZarrVersion::V2,
            _ => ZarrVersion::V3,
        });
    }
    build(&source, &vp, &options, voxel, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anisotropic_volumes_halve_in_plane_until_nearly_isotropic() {
        let levels = plan_levels(&[17, 50, 61], [40.0, 4.0, 4.0], Some(5));
        let steps: Vec<[u64; 3]> = levels.iter().map(|l| l.step).collect();
        assert_eq!(
            steps,
            [[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2], [2, 2, 2]]
        );
        assert_eq!(levels[4].shape, [9, 4, 4]);
        assert_eq!(levels[4].factor, [2, 16, 16]);
        // Default: until the largest side is at most 64.
        let levels = plan_levels(&[3, 40, 130, 129], [8.0, 8.0, 8.0], None);
        let shapes: Vec<&[u64]> = levels.iter().map(|l| l.shape.as_slice()).collect();
        assert_eq!(
            shapes,
            [&[3, 40, 130, 129][..], &[3, 20, 65, 65], &[3, 10, 33, 33]]
        );
        assert_eq!(plan_levels(&[5, 64, 64], [1.0; 3], None).len(), 1);
    }

    #[test]
    fn chunk_options_cover_spatial_axes_and_clip() {
        assert_eq!(level_chunks(None, &[3, 100, 20, 70]), [3, 64, 20, 64]);
        assert_eq!(
            level_chunks(Some(&[8, 8, 8]), &[3, 100, 20, 4]),
            [3, 8, 8, 4]
        );
        assert_eq!(
            level_chunks(Some(&[1, 8, 8, 8]), &[3, 100, 20, 4]),
            [1, 8, 8, 4]
        );
    }

    #[test]
    fn input_regions_follow_the_step_and_clip() {
        let roi = Roi::new([0, 2, 4, 6], [3, 2, 2, 2]).unwrap();
        let r = input_roi(&roi, [1, 2, 2], &[3, 4, 9, 13]);
        assert_eq!(r.ranges(), vec![0..3, 2..4, 8..9, 12..13]);
    }
}
