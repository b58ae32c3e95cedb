//! `em decode --method waterz`: one segmentation per threshold, the merge history and the
//! region graph as JSON, in memory or block by block.

use std::path::{Path, PathBuf};

use em_autoconf::bytes_of;
use em_core::{AnyArray, ChunkedVolume, DType, InMemoryVolume, Label, Progress};
use em_io::{Existing, Format, VolumePath, ZarrOptions, ZarrWriter};
use ndarray::{Array3, Ix3};
use serde::Serialize;

use super::{FileDecodeOptions, FileDecodeReport, MethodSummary, WaterzFiles};
use crate::waterz::{
    agglomerate_any, agglomerate_blockwise, threshold_output, BlockwiseThreshold, Merge,
    ScoredEdge, ThresholdResult, WaterzSummary,
};
use crate::{DecodeError, Result};

/// The segmentation paths of `thresholds` (sorted, repeats once): `{threshold}` in `out`
/// replaced by each; several thresholds need it.
///
/// # Errors
/// Several thresholds and no `{threshold}` in `out`.
pub fn threshold_outputs(out: &Path, thresholds: &[f32]) -> Result<Vec<PathBuf>> {
    let mut thresholds = thresholds.to_vec();
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    let template = out.to_string_lossy();
    if thresholds.len() > 1 && !template.contains("{threshold}") {
        return Err(DecodeError::InvalidParameter {
            name: "out",
            reason: format!(
                "{} thresholds but one output path {template:?}; put {{threshold}} in it, e.g. \
                 seg_{{threshold}}.zarr",
                thresholds.len()
            ),
        });
    }
    Ok(thresholds
        .iter()
        .map(|&t| threshold_output(out, t))
        .collect())
}

#[derive(Serialize)]
struct HistoryEntry<'a> {
    threshold: f32,
    merges: &'a [Merge],
}

#[derive(Serialize)]
struct GraphEntry<'a> {
    threshold: f32,
    edges: &'a [ScoredEdge],
}

/// What a waterz run writes, threshold by threshold: one segmentation each (a repeated
/// threshold once), then the merge history and region graph as JSON.
#[derive(Debug, Default)]
pub struct WaterzOutputs {
    history: Vec<(f32, Vec<Merge>)>,
    graphs: Vec<(f32, Vec<ScoredEdge>)>,
    /// The segmentations written so far.
    pub written: Vec<PathBuf>,
}

impl WaterzOutputs {
    /// Keeps a threshold's merges (and region graph) for [`WaterzOutputs::write_json`].
    pub fn add(&mut self, threshold: f32, merges: Vec<Merge>, graph: Option<Vec<ScoredEdge>>) {
        self.history.push((threshold, merges));
        if let Some(g) = graph {
            self.graphs.push((threshold, g));
        }
    }

    /// Writes a blockwise threshold's segmentation to `out` with `{threshold}` replaced
    /// (zarr chunk by chunk with `chunk`; other formats assembled in memory), and keeps its
    /// merges.
    ///
    /// # Errors
    /// Storage errors; ids that do not fit the label type.
    pub fn add_blockwise(
        &mut self,
        t: &BlockwiseThreshold<'_>,
        out: &Path,
        shape: &[u64],
        chunk: &[u64],
        label_u64: bool,
    ) -> Result<()> {
        let path = threshold_output(out, t.threshold);
        if !self.written.contains(&path) {
            let write = |v: &dyn ChunkedVolume| {
                if label_u64 {
                    t.write::<u64>(v)
                } else {
                    t.write::<u32>(v)
                }
            };
            let target = VolumePath::parse(&path)?;
            if target.format == Format::Zarr {
                let dtype = if label_u64 { DType::U64 } else { DType::U32 };
                let zopts = ZarrOptions {
                    chunk_shape: Some(chunk.to_vec()),
                    ..ZarrOptions::default()
                };
                let writer = ZarrWriter::create(&target, shape, dtype, &zopts)?;
                write(writer.volume())?;
                writer.commit()?;
            } else {
                let dims: Vec<usize> = shape.iter().map(|&n| n as usize).collect();
                let zeros = if label_u64 {
                    AnyArray::from(ndarray::ArrayD::<u64>::zeros(dims))
                } else {
                    AnyArray::from(ndarray::ArrayD::<u32>::zeros(dims))
                };
                let volume = InMemoryVolume::new(zeros, path.display().to_string());
                write(&volume)?;
                em_io::write(&path, &volume.into_inner())?;
            }
            self.written.push(path);
        }
        self.add(t.threshold, t.merges.clone(), t.region_graph.clone());
        Ok(())
    }

    /// Writes the merge history (`[{"threshold", "merges": [{"a","b","c","score"}]}]`) and
    /// the region graphs (`[{"threshold", "edges": [{"u","v","score"}]}]`) where asked,
    /// each whole or not at all.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn write_json(
        &self,
        merge_history: Option<&Path>,
        region_graph: Option<&Path>,
    ) -> Result<()> {
        if let Some(path) = merge_history {
            let entries: Vec<HistoryEntry<'_>> = self
                .history
                .iter()
                .map(|(t, m)| HistoryEntry {
                    threshold: *t,
                    merges: m,
                })
                .collect();
            write_json(path, &entries)?;
        }
        if let Some(path) = region_graph {
            let entries: Vec<GraphEntry<'_>> = self
                .graphs
                .iter()
                .map(|(t, e)| GraphEntry {
                    threshold: *t,
                    edges: e,
                })
                .collect();
            write_json(path, &entries)?;
        }
        Ok(())
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| DecodeError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    em_io::write_atomic(path, &bytes)?;
    Ok(())
}

/// Runs waterz from files to files.
pub(crate) fn decode(
    opts: &FileDecodeOptions,
    w: &WaterzFiles,
    progress: &dyn Progress,
) -> Result<FileDecodeReport> {
    let mut options = w.options.clone();
    options.region_graph = w.region_graph.is_some();
    let outs = threshold_outputs(&opts.out, &w.options.thresholds)?;
    let mut all: Vec<&Path> = outs.iter().map(PathBuf::as_path).collect();
    all.extend(w.merge_history.iter().map(PathBuf::as_path));
    all.extend(w.region_graph.iter().map(PathBuf::as_path));
    let mut inputs: Vec<&Path> = vec![&opts.affinities];
    inputs.extend(w.fragments.iter().map(PathBuf::as_path));
    em_io::check_outputs(&all, &inputs, Existing::from_overwrite(opts.overwrite))?;
    crate::check_threads(options.threads)?;
    if let Some((shape, dtype)) = em_io::peek(&opts.affinities)? {
        em_autoconf::ensure_memory(
            &format!("agglomerating {}", opts.affinities.display()),
            memory_needed(opts, &shape, dtype.size_bytes() as u64),
            "decode block by block with --block (zarr in and out stays out of core)",
        )?;
    }
    let wz = WaterzFiles {
        options,
        ..w.clone()
    };
    let (mode, summary, written) = match opts.block {
        None if opts.label_u64 => in_memory::<u64>(opts, &wz, progress)?,
        None => in_memory::<u32>(opts, &wz, progress)?,
        Some(block) => blockwise(opts, &wz, block, progress)?,
    };
    Ok(FileDecodeReport {
        mode,
        summary: MethodSummary::Waterz(summary),
        outputs: written,
    })
}

/// In memory: the affinities (3 channels as f32), fragments, one output and the graph.
fn memory_needed(opts: &FileDecodeOptions, shape: &[u64], elem: u64) -> Option<u64> {
    let &[c, z, y, x] = shape else {
        return Some(0);
    };
    let label = if opts.label_u64 { 8 } else { 4 };
    match opts.block {
        // Input as read, a 3-channel f32 copy, fragments, labels, and the graph (≈ 8 B per
        // voxel for noisy predictions, much less for clean ones).
        None => {
            bytes_of(&[c, z, y, x], elem)?.checked_add(bytes_of(&[z, y, x], 12 + 4 + label + 8)?)
        }
        // Fragments and faces of the whole volume, blocks in flight.
        Some(b) => bytes_of(&[z, y, x], 4 + 8)?.checked_add(
            bytes_of(&b, 3 * 4 * 4 + 8)?.checked_mul(rayon::current_num_threads() as u64)?,
        ),
    }
}

fn read_fragments(path: &Path) -> Result<Array3<u64>> {
    let any = em_io::read(path)?;
    let dims = any.shape().to_vec();
    em_core::to_labels::<u64>(&any)?
        .into_dimensionality::<Ix3>()
        .map_err(|_| DecodeError::InvalidParameter {
            name: "fragments",
            reason: format!("{}: shape {dims:?}; must be (Z, Y, X)", path.display()),
        })
}

type Done = (&'static str, WaterzSummary, Vec<PathBuf>);

fn in_memory<L: Label>(
    opts: &FileDecodeOptions,
    w: &WaterzFiles,
    progress: &dyn Progress,
) -> Result<Done> {
    let thresholds = w.options.thresholds.len() as u64;
    progress.start("waterz: reading, merging, writing", 2 + thresholds);
    let aff = em_io::read(&opts.affinities)?;
    let fragments = w.fragments.as_deref().map(read_fragments).transpose()?;
    progress.advance(2);
    let mut collected = WaterzOutputs::default();
    let summary = agglomerate_any::<L>(
        &aff,
        fragments.as_ref().map(|f| f.view()),
        &w.options,
        |r: ThresholdResult<L>| {
            let path = threshold_output(&opts.out, r.threshold);
            if !collected.written.contains(&path) {
                em_io::write(&path, &L::into_any(r.segmentation.into_dyn()))?;
                collected.written.push(path);
            }
            collected.add(r.threshold, r.merges, r.region_graph);
            progress.advance(1);
            Ok(())
        },
    )?;
    progress.finish();
    collected.write_json(w.merge_history.as_deref(), w.region_graph.as_deref())?;
    Ok(("memory", summary, collected.written))
}

fn blockwise(
    opts: &FileDecodeOptions,
    w: &WaterzFiles,
    block: [u64; 3],
    progress: &dyn Progress,
) -> Result<Done> {
    let aff = em_io::open(&opts.affinities)?;
    let fragments = w.fragments.as_deref().map(em_io::open).transpose()?;
    let shape: Vec<u64> = aff.shape()[1.min(aff.shape().len())..].to_vec();
    // One output chunk per block, so that parallel block writes never share a chunk.
    let chunk: Vec<u64> = block
        .iter()
        .zip(&shape)
        .map(|(&b, &n)| b.min(n.max(1)))
        .collect();
    let mut collected = WaterzOutputs::default();
    let summary = agglomerate_blockwise(
        aff.as_ref(),
        fragments.as_deref(),
        &w.options,
        block,
        w.halo,
        progress,
        |t| collected.add_blockwise(&t, &opts.out, &shape, &chunk, opts.label_u64),
    )?;
    collected.write_json(w.merge_history.as_deref(), w.region_graph.as_deref())?;
    Ok(("blockwise", summary, collected.written))
}
