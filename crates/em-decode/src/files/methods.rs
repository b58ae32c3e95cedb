//! The decoding methods of [`decode_files`](super::decode_files) and the ones that run in
//! memory only (mutex watershed).

use std::path::PathBuf;

use em_core::{AnyArray, Label, Progress};
use em_io::Existing;
use ndarray::{Array3, Ix3, Ix4};

use super::{
    read_decode_write, with_affinities, FileDecodeOptions, FileDecodeReport, MethodSummary,
};
use crate::waterz::WaterzOptions;
use crate::{
    distance_instances, instances_from_channels, mutex_watershed, ContourOptions, DecodeError,
    DecodeOptions, DistanceOptions, InstanceSummary, MwsOptions, MwsSummary, Result,
};

/// How `em decode` turns predictions into a segmentation.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// Connected components of thresholded affinities (BANIS).
    Cc(DecodeOptions),
    /// waterz's watershed and agglomeration.
    Waterz(WaterzFiles),
    /// The mutex watershed (in memory).
    Mws(MwsFiles),
    /// Instances from one signed-distance (or foreground) map, `(Z, Y, X)` or
    /// `(1, Z, Y, X)` (in memory).
    Distance(DistanceOptions),
    /// Instances from foreground, contour (and distance) channels, `(2 or 3, Z, Y, X)`
    /// (in memory).
    Contour(ContourOptions),
}

/// waterz from files.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WaterzFiles {
    /// The agglomeration's options.
    pub options: WaterzOptions,
    /// Fragments to start from instead of the watershed (`(Z, Y, X)` integer labels).
    pub fragments: Option<PathBuf>,
    /// Write the merges of each threshold here (JSON).
    pub merge_history: Option<PathBuf>,
    /// Write the region graph after each threshold here (JSON).
    pub region_graph: Option<PathBuf>,
    /// Block by block: voxels of context around each block for its watershed.
    pub halo: u64,
}

/// The mutex watershed from files.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MwsFiles {
    /// The mutex watershed's options.
    pub options: MwsOptions,
    /// Voxels to segment (non-zero), `(Z, Y, X)`; the rest is 0.
    pub mask: Option<PathBuf>,
}

/// Methods that need the whole volume in memory.
pub(crate) fn decode(
    opts: &FileDecodeOptions,
    method: &Method,
    progress: &dyn Progress,
) -> Result<FileDecodeReport> {
    if opts.block.is_some() {
        return Err(DecodeError::InvalidParameter {
            name: "block",
            reason: "the mutex watershed and the instance decoders run in memory; leave out \
                     --block"
                .into(),
        });
    }
    let m = match method {
        Method::Mws(m) => m,
        Method::Distance(_) | Method::Contour(_) => return instances(opts, method, progress),
        Method::Cc(_) | Method::Waterz(_) => {
            unreachable!("connected components and waterz have their own paths")
        }
    };
    crate::check_threads(m.options.threads)?;
    preflight(
        opts,
        m.mask.as_deref(),
        "mutex watershed",
        "crop the volume, or decode with --method waterz --block",
        // The input, and per voxel its label, its cluster and about two edges per channel.
        |shape, elem| {
            let voxels = shape.get(1..)?;
            em_autoconf::bytes_of(shape, elem + 16)?.checked_add(em_autoconf::bytes_of(voxels, 24)?)
        },
    )?;
    let summary = read_decode_write(opts, "mutex watershed", progress, |aff| {
        let mask = m.mask.as_deref().map(read_mask).transpose()?;
        if opts.label_u64 {
            mws_any::<u64>(aff, &m.options, mask.as_ref())
        } else {
            mws_any::<u32>(aff, &m.options, mask.as_ref())
        }
    })?;
    Ok(FileDecodeReport {
        mode: "memory",
        summary: MethodSummary::Mws(summary),
        outputs: vec![opts.out.clone()],
    })
}

fn read_mask(path: &std::path::Path) -> Result<Array3<bool>> {
    let any = em_io::read(path)?;
    let dims = any.shape().to_vec();
    em_core::to_labels::<u64>(&any)?
        .mapv(|v| v != 0)
        .into_dimensionality::<Ix3>()
        .map_err(|_| DecodeError::InvalidParameter {
            name: "mask",
            reason: format!("{}: shape {dims:?}; must be (Z, Y, X)", path.display()),
        })
}

fn mws_any<L: Label>(
    aff: &AnyArray,
    options: &MwsOptions,
    mask: Option<&Array3<bool>>,
) -> Result<(AnyArray, MwsSummary)> {
    let mask = mask.map(|m| m.view());
    let (seg, summary) = with_affinities!(aff, a => mutex_watershed::<_, L>(a, options, mask)?);
    Ok((L::into_any(seg.into_dyn()), summary))
}

/// Before any work: the output may be written (never over an input), and the decode fits
/// in memory (`need` from the input's shape and bytes per value).
fn preflight(
    opts: &FileDecodeOptions,
    other_input: Option<&std::path::Path>,
    what: &str,
    hint: &str,
    need: impl FnOnce(&[u64], u64) -> Option<u64>,
) -> Result<()> {
    let mut inputs = vec![opts.affinities.as_path()];
    inputs.extend(other_input);
    em_io::check_outputs(
        &[&opts.out],
        &inputs,
        Existing::from_overwrite(opts.overwrite),
    )?;
    if let Some((shape, dtype)) = em_io::peek(&opts.affinities)? {
        em_autoconf::ensure_memory(
            &format!("{what} of {}", opts.affinities.display()),
            need(&shape, dtype.size_bytes() as u64),
            hint,
        )?;
    }
    Ok(())
}

/// Distance or contour instances from a prediction file.
fn instances(
    opts: &FileDecodeOptions,
    method: &Method,
    progress: &dyn Progress,
) -> Result<FileDecodeReport> {
    preflight(
        opts,
        None,
        "instances",
        "crop the volume",
        // The input, an f32 copy, two masks, the flood's labels and queue.
        |shape, elem| {
            em_autoconf::bytes_of(shape, elem + 4)?
                .checked_add(em_autoconf::bytes_of(&shape[shape.len().min(1)..], 32)?)
        },
    )?;
    let summary = read_decode_write(opts, "instances", progress, |any| {
        if opts.label_u64 {
            instances_any::<u64>(any, method)
        } else {
            instances_any::<u32>(any, method)
        }
    })?;
    Ok(FileDecodeReport {
        mode: "memory",
        summary: MethodSummary::Instances(summary),
        outputs: vec![opts.out.clone()],
    })
}

/// Predictions as f32: uint8 `v` means `v / 255` (a distance channel `v / 255 · 2 − 1`,
/// PyTC's scaling of its tanh output).
fn predictions_f32(
    any: &AnyArray,
    distance_channel: Option<usize>,
) -> Result<ndarray::ArrayD<f32>> {
    Ok(match any {
        AnyArray::F32(a) => a.clone(),
        AnyArray::F16(a) => a.mapv(em_core::f16::to_f32),
        AnyArray::U8(a) => {
            let mut f = a.mapv(|v| f32::from(v) / 255.0);
            if let Some(c) = distance_channel {
                if f.ndim() == 4 {
                    f.index_axis_mut(ndarray::Axis(0), c)
                        .mapv_inplace(|v| v * 2.0 - 1.0);
                } else {
                    f.mapv_inplace(|v| v * 2.0 - 1.0);
                }
            }
            f
        }
        other => {
            return Err(DecodeError::InvalidParameter {
                name: "predictions",
                reason: format!(
                    "{} of shape {:?}; expected float32, float16 or uint8",
                    other.dtype(),
                    other.shape()
                ),
            })
        }
    })
}

fn instances_any<L: Label>(any: &AnyArray, method: &Method) -> Result<(AnyArray, InstanceSummary)> {
    let shape = any.shape().to_vec();
    let (seg, summary) = match method {
        Method::Distance(o) => {
            let p = predictions_f32(any, Some(0))?;
            let p = match shape.as_slice() {
                [_, _, _] => p,
                [1, _, _, _] => p.index_axis_move(ndarray::Axis(0), 0),
                _ => {
                    return Err(DecodeError::InvalidParameter {
                        name: "predictions",
                        reason: format!(
                            "shape {shape:?}; the distance method reads one map (Z, Y, X) or \
                             (1, Z, Y, X)"
                        ),
                    })
                }
            };
            let p = p.into_dimensionality::<Ix3>().expect("3 axes");
            distance_instances::<L>(p.view(), o)?
        }
        Method::Contour(o) => {
            let channels = shape.first().copied().unwrap_or(0);
            let p = predictions_f32(any, (channels == 3).then_some(2))?;
            let p = p
                .into_dimensionality::<Ix4>()
                .map_err(|_| DecodeError::NotFourDimensional(shape.clone()))?;
            instances_from_channels::<L>(p.view(), o)?
        }
        _ => unreachable!("instance methods only"),
    };
    Ok((L::into_any(seg.into_dyn()), summary))
}
