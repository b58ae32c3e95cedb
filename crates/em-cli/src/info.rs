//! `em info VOLUME`: what a volume is and what it holds.

use anyhow::Context;
use em_core::VolumeStats;
use em_io::VolumePath;
use serde::Serialize;

use crate::progress::Bar;
use crate::VolumeArg;

/// Arguments of `em info`.
#[derive(clap::Args, Debug)]
pub(crate) struct InfoArgs {
    /// The volume: .npy, .tif/.tiff, DIR.zarr[/array] or FILE.h5/dataset.
    volume: VolumeArg,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// The report, also the `--json` schema (stable key names).
#[derive(Serialize)]
struct Info {
    path: String,
    format: em_io::Format,
    description: String,
    shape: Vec<u64>,
    dtype: em_core::DType,
    chunks: Vec<u64>,
    bytes: u64,
    min: Option<em_core::Scalar>,
    max: Option<em_core::Scalar>,
    label_count: Option<u64>,
    zero_count: u64,
    nan_count: u64,
}

pub(crate) fn run(args: &InfoArgs) -> anyhow::Result<()> {
    let vp = VolumePath::parse(&args.volume)?;
    let volume = em_io::open(&args.volume)?;
    let stats = VolumeStats::compute(volume.as_ref(), &Bar::new())
        .with_context(|| format!("scanning {}", args.volume.display()))?;
    let info = Info {
        path: args.volume.display().to_string(),
        format: vp.format,
        description: volume.describe(),
        shape: volume.shape().to_vec(),
        dtype: volume.dtype(),
        chunks: volume.chunk_shape().to_vec(),
        bytes: volume
            .roi()
            .num_elements()
            .saturating_mul(volume.dtype().size_bytes() as u64),
        min: stats.min,
        max: stats.max,
        label_count: stats.label_count,
        zero_count: stats.zero_count,
        nan_count: stats.nan_count,
    };
    if args.json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        print!("{}", human(&info));
    }
    Ok(())
}

fn axes(n: usize) -> &'static str {
    match n {
        2 => " (Y, X)",
        3 => " (Z, Y, X)",
        4 => " (C, Z, Y, X)",
        5 => " (N, C, Z, Y, X)",
        _ => "",
    }
}

fn times(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(" × ")
}

fn human(i: &Info) -> String {
    let mut s = String::new();
    s += &format!("path:    {}\n", i.path);
    s += &format!("format:  {}\n", i.description);
    s += &format!("shape:   {}{}\n", times(&i.shape), axes(i.shape.len()));
    s += &format!("dtype:   {}\n", i.dtype);
    s += &format!("chunks:  {}\n", times(&i.chunks));
    s += &format!(
        "size:    {} uncompressed\n",
        em_autoconf::human_bytes(i.bytes)
    );
    match (i.min, i.max) {
        (Some(lo), Some(hi)) => s += &format!("values:  {lo} … {hi}\n"),
        _ => s += "values:  (none)\n",
    }
    if let Some(n) = i.label_count {
        s += &format!(
            "labels:  {n} distinct non-zero ids, {} background voxels\n",
            i.zero_count
        );
    }
    if i.nan_count > 0 {
        s += &format!("NaN:     {} voxels\n", i.nan_count);
    }
    s
}
