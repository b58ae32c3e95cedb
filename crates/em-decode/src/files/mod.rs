//! Decoding files to files (feature `files`): what `em decode` runs. Reads the predictions
//! from any format em-io reads, checks before any work that the outputs may be written and
//! that the decode fits in memory, decodes in memory or block by block by the chosen
//! method, and writes every output whole or not at all.

mod methods;
mod waterz;

pub use methods::{Method, MwsFiles, WaterzFiles};
pub use waterz::{threshold_outputs, WaterzOutputs};

use std::path::{Path, PathBuf};

use em_autoconf::bytes_of;
use em_core::{AnyArray, ChunkedVolumeExt, DType, InMemoryVolume, Label, Progress};
use em_io::{Existing, Format, VolumePath, ZarrOptions, ZarrWriter};
use ndarray::{ArrayView4, Ix4};

use crate::{decode, decode_blockwise, DecodeError, DecodeOptions, DecodeSummary, Result};

/// A decode from an affinity file to a label file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileDecodeOptions {
    /// Affinities `(C, Z, Y, X)`: float32, float16 or uint8 (scaled by 1/255).
    pub affinities: PathBuf,
    /// The segmentation (.npy, .tif, DIR.zarr[/array], FILE.h5/dataset); with several
    /// waterz thresholds, `{threshold}` in the path is replaced by each one.
    pub out: PathBuf,
    /// The method and its parameters.
    pub method: Method,
    /// Decode block by block with blocks of this shape (out of core with zarr in and out);
    /// `None` decodes in memory.
    pub block: Option<[u64; 3]>,
    /// Write uint64 labels (else uint32).
    pub label_u64: bool,
    /// Replace an existing output array or file (never an input, a group or a directory).
    pub overwrite: bool,
}

/// What [`decode_files`] did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FileDecodeReport {
    /// `memory` or `blockwise`.
    pub mode: &'static str,
    /// The method's summary.
    pub summary: MethodSummary,
    /// The segmentations written (one per waterz threshold, else one).
    pub outputs: Vec<PathBuf>,
}

/// The summary of whichever method ran.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum MethodSummary {
    /// Connected components.
    Cc(DecodeSummary),
    /// waterz.
    Waterz(crate::waterz::WaterzSummary),
    /// Mutex watershed.
    Mws(crate::MwsSummary),
    /// Distance or contour instances.
    Instances(crate::InstanceSummary),
}

/// Decodes `opts.affinities` into `opts.out`.
///
/// # Errors
/// An output that would replace an input or an existing array without `overwrite`; a
/// decode that needs more memory than is available (with the estimate); bad parameters,
/// shapes or types; storage errors.
pub fn decode_files(opts: &FileDecodeOptions, progress: &dyn Progress) -> Result<FileDecodeReport> {
    let decode = match &opts.method {
        Method::Cc(decode) => decode,
        Method::Waterz(w) => return waterz::decode(opts, w, progress),
        other => return methods::decode(opts, other, progress),
    };
    preflight(opts, decode)?;
    let (mode, summary) = match opts.block {
        None => in_memory(opts, decode, progress)?,
        Some(block) => blockwise(opts, decode, block, progress)?,
    };
    Ok(FileDecodeReport {
        mode,
        summary: MethodSummary::Cc(summary),
        outputs: vec![opts.out.clone()],
    })
}

/// Everything that can be refused before reading a value: threads, where the output goes,
/// the memory the decode will need.
fn preflight(opts: &FileDecodeOptions, decode: &DecodeOptions) -> Result<()> {
    crate::check_threads(decode.cc.threads)?;
    em_io::check_outputs(
        &[&opts.out],
        &[&opts.affinities],
        Existing::from_overwrite(opts.overwrite),
    )?;
    if let Some((shape, dtype)) = em_io::peek(&opts.affinities)? {
        let hint = if opts.block.is_none() {
            "decode block by block with --block (zarr in and out stays out of core)"
        } else {
            "use smaller --block, fewer --threads, or zarr input and output"
        };
        em_autoconf::ensure_memory(
            &format!("decoding {}", opts.affinities.display()),
            memory_needed(opts, decode, &shape, dtype.size_bytes() as u64),
            hint,
        )?;
    }
    Ok(())
}

fn on_disk(p: &Path) -> bool {
    VolumePath::parse(p).is_ok_and(|v| matches!(v.format, Format::Zarr | Format::Hdf5))
}

/// Bytes a decode of `shape` (`(C, Z, Y, X)`, `elem` bytes per value) will hold at once:
/// the affinities and labels in memory, or a few blocks per thread out of core.
fn memory_needed(
    opts: &FileDecodeOptions,
    decode: &DecodeOptions,
    shape: &[u64],
    elem: u64,
) -> Option<u64> {
    let &[c, z, y, x] = shape else {
        return Some(0); // the decode itself names the wrong shape
    };
    let label = if opts.label_u64 { 8 } else { 4 };
    let [fz, fy, fx] = decode.scale.map(|f| f as u64);
    let labels = bytes_of(&[z, y, x], label)?;
    let scaled = bytes_of(&[z, y, x, fz, fy, fx], label)?;
    let input = bytes_of(&[c, z, y, x], elem)?;
    match opts.block {
        None => {
            let upscaled = if [fz, fy, fx] == [1, 1, 1] { 0 } else { scaled };
            input.checked_add(labels)?.checked_add(upscaled)
        }
        Some(b) => {
            let threads = decode
                .cc
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
                as u64;
            // Each block in flight: its affinities (with a halo) and its labels, twice over.
            let block = bytes_of(&b, 2 * (c * elem + label + 8))?.checked_mul(threads)?;
            let whole_in = if on_disk(&opts.affinities) { 0 } else { input };
            let whole_out = if on_disk(&opts.out) {
                0
            } else {
                scaled.checked_mul(2)?
            };
            block.checked_add(whole_in)?.checked_add(whole_out)
        }
    }
}

/// The in-memory path of every method: reads the input whole, decodes it with `decode`,
/// writes the labels (whole or not at all).
pub(crate) fn read_decode_write<S>(
    opts: &FileDecodeOptions,
    what: &str,
    progress: &dyn Progress,
    decode: impl FnOnce(&AnyArray) -> Result<(AnyArray, S)>,
) -> Result<S> {
    progress.start(&format!("{what}: reading, decoding, writing"), 3);
    let input = em_io::read(&opts.affinities)?;
    progress.advance(1);
    let (labels, summary) = decode(&input)?;
    drop(input);
    progress.advance(1);
    em_io::write(&opts.out, &labels)?;
    progress.advance(1);
    progress.finish();
    Ok(summary)
}

/// `a` as `(C, Z, Y, X)`.
pub(crate) fn four<A>(a: &ndarray::ArrayD<A>) -> Result<ArrayView4<'_, A>> {
    a.view()
        .into_dimensionality::<Ix4>()
        .map_err(|_| DecodeError::NotFourDimensional(a.shape().to_vec()))
}

/// The refusal of affinities of another element type.
pub(crate) fn unsupported_affinities(other: &AnyArray) -> DecodeError {
    DecodeError::InvalidParameter {
        name: "affinities",
        reason: format!(
            "{} of shape {:?}; expected float32, float16 or uint8 (C, Z, Y, X)",
            other.dtype(),
            other.shape()
        ),
    }
}

/// Evaluates `$body` with `$a` the `(C, Z, Y, X)` view of float32, float16 or uint8
/// affinities (each decoder is generic over the element type).
macro_rules! with_affinities {
    ($aff:expr, $a:ident => $body:expr) => {
        match $aff {
            AnyArray::F32(x) => {
                let $a = $crate::files::four(x)?;
                $body
            }
            AnyArray::F16(x) => {
                let $a = $crate::files::four(x)?;
                $body
            }
            AnyArray::U8(x) => {
                let $a = $crate::files::four(x)?;
                $body
            }
            other => return Err($crate::files::unsupported_affinities(other)),
        }
    };
}
pub(crate) use with_affinities;

/// Reads everything, decodes, writes.
fn in_memory(
    opts: &FileDecodeOptions,
    decode: &DecodeOptions,
    progress: &dyn Progress,
) -> Result<(&'static str, DecodeSummary)> {
    let summary = read_decode_write(opts, "connected components", progress, |aff| {
        if opts.label_u64 {
            decode_any::<u64>(aff, decode)
        } else {
            decode_any::<u32>(aff, decode)
        }
    })?;
    Ok(("memory", summary))
}

fn decode_any<L: Label>(
    aff: &AnyArray,
    options: &DecodeOptions,
) -> Result<(AnyArray, DecodeSummary)> {
    let (seg, summary) = with_affinities!(aff, a => decode::<_, L>(a, options)?);
    Ok((L::into_any(seg.into_dyn()), summary))
}

/// Streams blocks from the input to the output: zarr outputs are written chunk by chunk,
/// other formats are assembled in memory and written at the end.
fn blockwise(
    opts: &FileDecodeOptions,
    decode: &DecodeOptions,
    block: [u64; 3],
    progress: &dyn Progress,
) -> Result<(&'static str, DecodeSummary)> {
    let aff = em_io::open(&opts.affinities)?;
    let shape = aff.shape().to_vec();
    if shape.len() != 4 {
        return Err(DecodeError::NotFourDimensional(
            shape.iter().map(|&n| n as usize).collect(),
        ));
    }
    let scale = decode.scale;
    let out_shape: Vec<u64> = shape[1..]
        .iter()
        .zip(scale)
        .map(|(&n, f)| n * f as u64)
        .collect();
    let dtype = if opts.label_u64 {
        DType::U64
    } else {
        DType::U32
    };
    let target = VolumePath::parse(&opts.out)?;
    let summary = if target.format == Format::Zarr {
        // One output chunk per block, so that parallel block writes never share a chunk.
        let chunk: Vec<u64> = block
            .iter()
            .zip(scale)
            .zip(&out_shape)
            .map(|((&b, f), &n)| (b * f as u64).min(n.max(1)))
            .collect();
        let options = ZarrOptions {
            chunk_shape: Some(chunk),
            ..ZarrOptions::default()
        };
        let writer = ZarrWriter::create(&target, &out_shape, dtype, &options)?;
        let summary = decode_blockwise(aff.as_ref(), writer.volume(), decode, block, progress)?;
        writer.commit()?;
        summary
    } else {
        let shape_usize: Vec<usize> = out_shape.iter().map(|&n| n as usize).collect();
        let zeros = match dtype {
            DType::U64 => AnyArray::from(ndarray::ArrayD::<u64>::zeros(shape_usize)),
            _ => AnyArray::from(ndarray::ArrayD::<u32>::zeros(shape_usize)),
        };
        let out = InMemoryVolume::new(zeros, opts.out.display().to_string());
        let summary = decode_blockwise(aff.as_ref(), &out, decode, block, progress)?;
        em_io::write(&opts.out, &out.read_all()?)?;
        summary
    };
    Ok(("blockwise", summary))
}
