//! `em decode`: affinities → segmentation by connected components (in memory).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use em_core::{AnyArray, EdgeStorage};
use em_decode::{affinity_cc_any, remove_small_objects, CcParams, SmallObjectMode};
use serde::Serialize;

use crate::unbuilt::NotBuilt;

/// Arguments of `em decode`.
#[derive(clap::Args, Debug)]
pub(crate) struct DecodeArgs {
    /// Affinities `(C, Z, Y, X)`: float32, float16 or uint8 (scaled by 1/255).
    #[arg(long)]
    affinities: PathBuf,
    /// Output segmentation (uint32 labels; .npy, .tif, DIR.zarr[/array], FILE.h5/dataset).
    #[arg(long)]
    out: PathBuf,
    /// Edges with affinity strictly above this connect.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Which voxel holds an edge's value: source (BANIS) or destination (PyTC "deepem").
    #[arg(long, default_value = "source")]
    storage: EdgeStorage,
    /// Channels to use (BANIS offsets: 0,1,2 short range; 3,4,5 at distance 10).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    channels: Vec<usize>,
    /// Remove objects with fewer voxels than this (0: keep all).
    #[arg(long, default_value_t = 0)]
    min_size: u64,
    /// Where small objects go: background or background_2d (per z-section).
    #[arg(long, default_value = "background")]
    small_mode: SmallObjectMode,
    /// Decode block by block (out of core); not built yet.
    #[arg(long, value_delimiter = ',')]
    block: Option<Vec<u64>>,
    /// Worker threads (default: all cores); the output is the same for any number.
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// The `--json` summary (stable key names).
#[derive(Serialize)]
struct Summary {
    out: String,
    components: u64,
    voxels: u64,
    labelled_voxels: u64,
    seconds: f64,
    threshold: f32,
}

pub(crate) fn run(args: &DecodeArgs) -> anyhow::Result<()> {
    if args.block.is_some() {
        return Err(NotBuilt::new("decode --block", 3).into());
    }
    let start = Instant::now();
    let aff = em_io::read(&args.affinities)?;
    let params = CcParams {
        threshold: args.threshold,
        channels: args.channels.clone(),
        offsets: None,
        storage: args.storage,
        threads: args.threads,
    };
    let mut seg = affinity_cc_any::<u32>(&aff, &params)
        .with_context(|| format!("decoding {}", args.affinities.display()))?;
    drop(aff);
    let components = if args.min_size > 0 {
        remove_small_objects(seg.view_mut(), args.min_size, args.small_mode)?
    } else {
        u64::from(seg.iter().copied().max().unwrap_or(0))
    };
    let labelled = seg.iter().filter(|&&v| v != 0).count() as u64;
    let voxels = seg.len() as u64;
    em_io::write(&args.out, &AnyArray::from(seg.into_dyn()))?;
    let summary = Summary {
        out: args.out.display().to_string(),
        components,
        voxels,
        labelled_voxels: labelled,
        seconds: start.elapsed().as_secs_f64(),
        threshold: args.threshold,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} components, {} of {} voxels labelled, {:.2} s → {}",
            summary.components,
            summary.labelled_voxels,
            summary.voxels,
            summary.seconds,
            summary.out
        );
    }
    Ok(())
}
