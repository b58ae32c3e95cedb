//! `em decode`: affinities → segmentation by connected components, in memory or block by
//! block (out of core).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use em_core::EdgeStorage;
use em_decode::{decode_files, CcOptions, DecodeOptions, FileDecodeOptions, SmallObjectMode};
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

pub(crate) fn run(args: &DecodeArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let opts = FileDecodeOptions {
        affinities: args.affinities.clone(),
        out: args.out.clone(),
        decode: args.labels.params(args.small_mode, args.threads),
        block: args.block,
        label_u64: args.labels.label_type == LabelType::U64,
        overwrite: args.overwrite,
    };
    guard::threads(args.threads)?;
    let report = decode_files(&opts, &Bar::new())
        .with_context(|| format!("decoding {}", args.affinities.display()))?;
    let s = report.summary;
    let summary = Summary {
        out: args.out.display().to_string(),
        mode: report.mode,
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
