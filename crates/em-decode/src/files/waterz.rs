//! `em decode --method waterz`: one segmentation per threshold, the merge history and the
//! region graph as JSON, in memory or block by block.

use std::path::{Path, PathBuf};

use em_autoconf::bytes_of;
use em_core::{AnyArray, DType, InMemoryVolume, Label, Progress};
use em_io::{Existing, Format, VolumePath, ZarrOptions, ZarrWriter};
use ndarray::{Array3, Ix3};
use serde::Serialize;

use super::{FileDecodeOptions, FileDecodeReport, MethodSummary, WaterzFiles};
use crate::waterz::{
    agglomerate_any, agglomerate_blockwise, threshold_output, Merge, ScoredEdge, ThresholdResult,
    WaterzSummary,
};
use crate::{DecodeError, Result};

/// Every output path, checked: several thresholds need `{threshold}` in the path.
fn outputs(opts: &FileDecodeOptions, w: &WaterzFiles) -> Result<Vec<PathBuf>> {
    let mut thresholds = w.options.thresholds.clone();
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    let template = opts.out.to_string_lossy();
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
        .map(|&t| threshold_output(&opts.out, t))
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

/// What the JSON side outputs collect across thresholds.
#[derive(Default)]
struct Collected {
    history: Vec<(f32, Vec<Merge>)>,
    graphs: Vec<(f32, Vec<ScoredEdge>)>,
    written: Vec<PathBuf>,
}

impl Collected {
    fn add(&mut self, threshold: f32, merges: Vec<Merge>, graph: Option<Vec<ScoredEdge>>) {
        self.history.push((threshold, merges));
        if let Some(g) = graph {
            self.graphs.push((threshold, g));
        }
    }

    fn write_json(&self, w: &WaterzFiles) -> Result<()> {
        if let Some(path) = &w.merge_history {
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
        if let Some(path) = &w.region_graph {
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
    let outs = outputs(opts, w)?;
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
    let mut collected = Collected::default();
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
    collected.write_json(w)?;
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
    let dtype = if opts.label_u64 {
        DType::U64
    } else {
        DType::U32
    };
    let mut collected = Collected::default();
    let summary = agglomerate_blockwise(
        aff.as_ref(),
        fragments.as_deref(),
        &w.options,
        block,
        w.halo,
        progress,
        |t| {
            let path = threshold_output(&opts.out, t.threshold);
            if !collected.written.contains(&path) {
                let target = VolumePath::parse(&path)?;
                if target.format == Format::Zarr {
                    let chunk: Vec<u64> = block
                        .iter()
                        .zip(&shape)
                        .map(|(&b, &n)| b.min(n.max(1)))
                        .collect();
                    let zopts = ZarrOptions {
                        chunk_shape: Some(chunk),
                        ..ZarrOptions::default()
                    };
                    let writer = ZarrWriter::create(&target, &shape, dtype, &zopts)?;
                    write_labels(&t, writer.volume(), opts.label_u64)?;
                    writer.commit()?;
                } else {
                    let dims: Vec<usize> = shape.iter().map(|&n| n as usize).collect();
                    let zeros = if opts.label_u64 {
                        AnyArray::from(ndarray::ArrayD::<u64>::zeros(dims))
                    } else {
                        AnyArray::from(ndarray::ArrayD::<u32>::zeros(dims))
                    };
                    let out = InMemoryVolume::new(zeros, path.display().to_string());
                    write_labels(&t, &out, opts.label_u64)?;
                    em_io::write(&path, &out.into_inner())?;
                }
                collected.written.push(path);
            }
            collected.add(t.threshold, t.merges.clone(), t.region_graph.clone());
            Ok(())
        },
    )?;
    collected.write_json(w)?;
    Ok(("blockwise", summary, collected.written))
}

fn write_labels(
    t: &crate::waterz::BlockwiseThreshold<'_>,
    out: &dyn em_core::ChunkedVolume,
    u64_labels: bool,
) -> Result<()> {
    if u64_labels {
        t.write::<u64>(out)
    } else {
        t.write::<u32>(out)
    }
}
