//! `em decode`: affinities → segmentation by connected components, in memory or block by
//! block (out of core).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use em_core::{AnyArray, ChunkedVolumeExt, DType, EdgeStorage, InMemoryVolume, Progress};
use em_decode::{
    decode_blockwise, decode_with_summary, CcOptions, DecodeOptions, DecodeSummary, SmallObjectMode,
};
use em_io::{Format, VolumePath, ZarrOptions, ZarrWriter};
use ndarray::{ArrayView4, Ix4};
use serde::Serialize;

use crate::guard;
use crate::progress::Bar;

/// Arguments of `em decode`.
#[derive(clap::Args, Debug)]
pub(crate) struct DecodeArgs {
    /// Affinities `(C, Z, Y, X)`: float32, float16 or uint8 (scaled by 1/255).
    #[arg(long)]
    affinities: PathBuf,
    /// Output segmentation (.npy, .tif, DIR.zarr[/array], FILE.h5/dataset).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    pub(crate) labels: LabelOptions,
    /// Where small objects go: background, background_2d (per z-section), neighbor (merged
    /// into the most frequent label around them) or neighbor_2d.
    #[arg(long, default_value = "background")]
    small_mode: SmallObjectMode,
    /// Decode block by block with blocks of z,y,x voxels: memory stays at a few blocks per
    /// thread, whatever the volume size (out of core with zarr input and output).
    #[arg(long, value_parser = triple::<u64>)]
    block: Option<[u64; 3]>,
    /// Worker threads (default: all cores); the output is the same for any number.
    #[arg(long)]
    threads: Option<usize>,
    /// Replace an existing output array or file (never an input, a group or a directory).
    #[arg(long)]
    overwrite: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

impl DecodeArgs {
    /// The decode `em infer --decode` runs on the affinities it wrote.
    pub(crate) fn after_inference(
        affinities: PathBuf,
        out: PathBuf,
        threshold: f32,
        storage: EdgeStorage,
        min_size: u64,
        overwrite: bool,
    ) -> Self {
        Self {
            affinities,
            out,
            labels: LabelOptions {
                threshold,
                storage,
                channels: vec![0, 1, 2],
                min_size,
                scale: None,
                label_type: LabelType::U32,
            },
            small_mode: SmallObjectMode::Background,
            block: None,
            threads: None,
            overwrite,
            json: true,
        }
    }
}

/// What both `em decode` and `em slurm decode` ask of the labelling.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LabelOptions {
    /// Edges with affinity strictly above this connect (NaN and ±inf values never do; they
    /// are counted and reported).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) threshold: f32,
    /// Which voxel holds an edge's value: source (BANIS) or destination (PyTC "deepem").
    #[arg(long, default_value = "source")]
    pub(crate) storage: EdgeStorage,
    /// Channels to use (BANIS offsets: 0,1,2 short range; 3,4,5 at distance 10).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub(crate) channels: Vec<usize>,
    /// Remove objects with fewer voxels than this (0: keep all).
    #[arg(long, default_value_t = 0)]
    pub(crate) min_size: u64,
    /// Upscale the output by integer factors z,y,x (nearest), e.g. 1,2,2.
    #[arg(long, value_parser = triple::<usize>)]
    pub(crate) scale: Option<[usize; 3]>,
    /// Label type of the output: u32 or u64.
    #[arg(long, default_value = "u32")]
    pub(crate) label_type: LabelType,
}

impl LabelOptions {
    /// The decode parameters (connected components on `threads`, `small_mode` removal).
    pub(crate) fn params(
        &self,
        small_mode: SmallObjectMode,
        threads: Option<usize>,
    ) -> DecodeOptions {
        DecodeOptions {
            cc: CcOptions {
                threshold: self.threshold,
                channels: self.channels.clone(),
                offsets: None,
                storage: self.storage,
                threads,
            },
            min_size: self.min_size,
            small_mode,
            scale: self.scale.unwrap_or([1, 1, 1]),
        }
    }
}

/// Output label type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LabelType {
    U32,
    U64,
}

/// The `--json` summary (stable key names).
#[derive(Serialize)]
struct Summary {
    out: String,
    mode: &'static str,
    components: u64,
    removed: u64,
    voxels: u64,
    labelled_voxels: u64,
    non_finite_affinities: u64,
    blocks: u64,
    seconds: f64,
    threshold: f32,
    peak_rss_bytes: Option<u64>,
}

/// Bytes a decode of `shape` (`(C, Z, Y, X)`, `elem` bytes per value) will hold at once:
/// the affinities and labels in memory, or a few blocks per thread out of core.
fn memory_needed(args: &DecodeArgs, shape: &[u64], elem: u64) -> Option<u64> {
    let &[c, z, y, x] = shape else {
        return Some(0); // the decode itself names the wrong shape
    };
    let label = match args.labels.label_type {
        LabelType::U32 => 4,
        LabelType::U64 => 8,
    };
    let [fz, fy, fx] = args.labels.scale.unwrap_or([1, 1, 1]).map(|f| f as u64);
    let labels = guard::bytes_of(&[z, y, x], label)?;
    let scaled = guard::bytes_of(&[z, y, x, fz, fy, fx], label)?;
    let input = guard::bytes_of(&[c, z, y, x], elem)?;
    let on_disk = |p: &std::path::Path| {
        VolumePath::parse(p).is_ok_and(|v| matches!(v.format, Format::Zarr | Format::Hdf5))
    };
    match args.block {
        None => {
            let upscaled = if [fz, fy, fx] == [1, 1, 1] { 0 } else { scaled };
            input.checked_add(labels)?.checked_add(upscaled)
        }
        Some(b) => {
            let threads = args.threads.unwrap_or_else(rayon_threads) as u64;
            // Each block in flight: its affinities (with a halo) and its labels, twice over.
            let block = guard::bytes_of(&b, 2 * (c * elem + label + 8))?.checked_mul(threads)?;
            let whole_in = if on_disk(&args.affinities) { 0 } else { input };
            let whole_out = if on_disk(&args.out) {
                0
            } else {
                scaled.checked_mul(2)?
            };
            block.checked_add(whole_in)?.checked_add(whole_out)
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Everything that can be refused before reading a value: threads, where the output goes,
/// the memory the decode will need.
fn preflight(args: &DecodeArgs) -> anyhow::Result<()> {
    guard::threads(args.threads)?;
    guard::outputs(&[&args.out], &[&args.affinities], args.overwrite)?;
    if let Some((shape, elem)) = guard::peek(&args.affinities)? {
        let hint = if args.block.is_none() {
            "decode block by block with --block (zarr in and out stays out of core)"
        } else {
            "use smaller --block, fewer --threads, or zarr input and output"
        };
        guard::memory(
            &format!("decoding {}", args.affinities.display()),
            memory_needed(args, &shape, elem),
            hint,
        )?;
    }
    Ok(())
}

pub(crate) fn run(args: &DecodeArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    preflight(args)?;
    let params = args.labels.params(args.small_mode, args.threads);
    let bar = Bar::new();
    let result = match args.block {
        None => in_memory(args, &params, &bar),
        Some(block) => blockwise(args, &params, block, &bar),
    };
    let (mode, s) = result.with_context(|| format!("decoding {}", args.affinities.display()))?;
    let summary = Summary {
        out: args.out.display().to_string(),
        mode,
        components: s.components,
        removed: s.removed,
        voxels: s.voxels,
        labelled_voxels: s.labelled_voxels,
        non_finite_affinities: s.non_finite,
        blocks: s.blocks,
        seconds: start.elapsed().as_secs_f64(),
        threshold: args.labels.threshold,
        peak_rss_bytes: em_core::peak_rss_bytes(),
    };
    if s.non_finite > 0 {
        eprintln!(
            "warning: {} affinity values are NaN or infinite; their edges count as off (not \
             connected)",
            s.non_finite
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} components ({} removed), {} of {} voxels labelled, {:.2} s → {}",
            summary.components,
            summary.removed,
            summary.labelled_voxels,
            summary.voxels,
            summary.seconds,
            summary.out
        );
    }
    Ok(())
}

/// Reads everything, decodes, writes.
fn in_memory(
    args: &DecodeArgs,
    params: &DecodeOptions,
    bar: &Bar,
) -> anyhow::Result<(&'static str, DecodeSummary)> {
    bar.start("reading affinities", 3);
    let aff = em_io::read(&args.affinities)?;
    bar.advance(1);
    bar.0.set_message("decoding");
    let (data, summary) = match args.labels.label_type {
        LabelType::U32 => decode_any::<u32>(&aff, params)?,
        LabelType::U64 => decode_any::<u64>(&aff, params)?,
    };
    drop(aff);
    bar.advance(1);
    bar.0.set_message("writing");
    em_io::write(&args.out, &data)?;
    bar.advance(1);
    bar.finish();
    Ok(("memory", summary))
}

fn decode_any<L: em_core::Label>(
    aff: &AnyArray,
    params: &DecodeOptions,
) -> anyhow::Result<(AnyArray, DecodeSummary)> {
    fn four<A: Clone>(a: &ndarray::ArrayD<A>) -> anyhow::Result<ArrayView4<'_, A>> {
        a.view().into_dimensionality::<Ix4>().map_err(|_| {
            anyhow::anyhow!(
                "affinities must have 4 axes (C, Z, Y, X), got shape {:?}",
                a.shape()
            )
        })
    }
    let (seg, summary) = match aff {
        AnyArray::F32(a) => decode_with_summary::<f32, L>(four(a)?, params)?,
        AnyArray::F16(a) => decode_with_summary::<em_core::f16, L>(four(a)?, params)?,
        AnyArray::U8(a) => decode_with_summary::<u8, L>(four(a)?, params)?,
        other => anyhow::bail!(
            "affinities are {} of shape {:?}; expected float32, float16 or uint8 (C, Z, Y, X)",
            other.dtype(),
            other.shape()
        ),
    };
    Ok((L::into_any(seg.into_dyn()), summary))
}

/// Streams blocks from the input to the output: zarr outputs are written chunk by chunk,
/// other formats are assembled in memory and written at the end.
fn blockwise(
    args: &DecodeArgs,
    params: &DecodeOptions,
    block: [u64; 3],
    bar: &Bar,
) -> anyhow::Result<(&'static str, DecodeSummary)> {
    let aff = em_io::open(&args.affinities)?;
    let shape = aff.shape().to_vec();
    anyhow::ensure!(
        shape.len() == 4,
        "{} has shape {:?}; affinities are (C, Z, Y, X)",
        aff.describe(),
        shape
    );
    let out_shape: Vec<u64> = shape[1..]
        .iter()
        .zip(params.scale)
        .map(|(&n, f)| n * f as u64)
        .collect();
    let dtype = match args.labels.label_type {
        LabelType::U32 => DType::U32,
        LabelType::U64 => DType::U64,
    };
    let target = VolumePath::parse(&args.out)?;
    if target.format == Format::Zarr {
        // One output chunk per block, so that parallel block writes never share a chunk.
        let chunk: Vec<u64> = block
            .iter()
            .zip(params.scale)
            .zip(&out_shape)
            .map(|((&b, f), &n)| (b * f as u64).min(n.max(1)))
            .collect();
        let options = ZarrOptions {
            chunk_shape: Some(chunk),
            ..ZarrOptions::default()
        };
        let writer = ZarrWriter::create(&target, &out_shape, dtype, &options)?;
        let summary = decode_blockwise(aff.as_ref(), writer.volume(), params, block, bar)?;
        writer.commit()?;
        Ok(("blockwise", summary))
    } else {
        let shape_usize: Vec<usize> = out_shape.iter().map(|&n| n as usize).collect();
        let zeros = match dtype {
            DType::U64 => AnyArray::from(ndarray::ArrayD::<u64>::zeros(shape_usize)),
            _ => AnyArray::from(ndarray::ArrayD::<u32>::zeros(shape_usize)),
        };
        let out = InMemoryVolume::new(zeros, args.out.display().to_string());
        let summary = decode_blockwise(aff.as_ref(), &out, params, block, bar)?;
        em_io::write(&args.out, &out.read_all()?)?;
        Ok(("blockwise", summary))
    }
}

/// Parses `z,y,x` (three positive integers).
pub(crate) fn triple<T: std::str::FromStr + Default + Copy + PartialEq>(
    s: &str,
) -> Result<[T; 3], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [z, y, x] = parts.as_slice() else {
        return Err(format!("{s:?}: give three values z,y,x, e.g. 64,256,256"));
    };
    let mut out = [T::default(); 3];
    for (o, p) in out.iter_mut().zip([z, y, x]) {
        *o = p
            .parse()
            .map_err(|_| format!("{p:?} in {s:?} is not a whole number"))?;
        if *o == T::default() {
            return Err(format!("{s:?}: every value must be at least 1"));
        }
    }
    Ok(out)
}
