//! `em pyramid`: an OME-Zarr multiscale pyramid of a volume.

use std::path::PathBuf;

use em_io::ome::{
    check_pyramid_output, write_pyramid, PyramidKind, PyramidOptions, PyramidSummary,
    VoxelSizeSource,
};
use em_io::{Existing, ZarrOptions, ZarrVersion};

use crate::decode::triple;
use crate::progress::Bar;

/// Arguments of `em pyramid`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The volume `(Z, Y, X)` or `(C, Z, Y, X)`: .npy, .tif/.tiff, DIR.zarr[/array] or
    /// FILE.h5/dataset.
    input: PathBuf,
    /// The pyramid, a zarr group: OUT.zarr or OUT.zarr/NAME (IMAGE.zarr/labels/NAME adds a
    /// label image to the OME-Zarr image IMAGE.zarr).
    output: PathBuf,
    /// Number of levels, the full resolution included (default: until the largest side is
    /// at most 64 voxels).
    #[arg(long)]
    levels: Option<usize>,
    /// Voxel size z,y,x in nm (default: the input's metadata, else 1,1,1). Levels halve y and
    /// x while z is at least twice their size, then all three.
    #[arg(long, value_parser = crate::voxel_size_arg)]
    voxel_size: Option<em_core::VoxelSize>,
    /// Reduce as labels (most frequent value, ties to the smaller id), whatever the type.
    #[arg(long, conflicts_with = "image")]
    labels: bool,
    /// Reduce as an image (mean), whatever the type. Default: labels for u32, u64, i32, i64
    /// and bool, image otherwise.
    #[arg(long)]
    image: bool,
    /// zarr format: 3 (OME-NGFF 0.5) or 2 (OME-NGFF 0.4); default: that of an existing
    /// container, else 3.
    #[arg(long, value_parser = zarr_version)]
    zarr_version: Option<ZarrVersion>,
    /// Chunk shape z,y,x of every level (default 64,64,64, clipped to the level).
    #[arg(long, value_parser = triple::<u64>)]
    chunks: Option<[u64; 3]>,
    /// Worker threads (default: all cores); memory grows with them, not with the volume.
    #[arg(long)]
    threads: Option<usize>,
    /// Replace an existing output array or pyramid (never an input or another group).
    #[arg(long)]
    overwrite: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

fn zarr_version(s: &str) -> Result<ZarrVersion, String> {
    match s {
        "2" => Ok(ZarrVersion::V2),
        "3" => Ok(ZarrVersion::V3),
        other => Err(format!("{other:?}: 2 or 3")),
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    crate::guard::threads(args.threads)?;
    check_pyramid_output(
        &args.output,
        &[&args.input],
        Existing::from_overwrite(args.overwrite),
    )?;
    let options = PyramidOptions {
        levels: args.levels,
        voxel_size: args.voxel_size.map(|v| v.zyx()),
        kind: if args.labels {
            PyramidKind::Labels
        } else if args.image {
            PyramidKind::Image
        } else {
            PyramidKind::Auto
        },
        zarr: ZarrOptions {
            chunk_shape: args.chunks.map(|c| c.to_vec()),
            version: args.zarr_version,
            ..Default::default()
        },
        threads: args.threads,
    };
    let summary = write_pyramid(&args.input, &args.output, &options, &Bar::new())?;
    if summary.voxel_size_source == VoxelSizeSource::Default {
        crate::warn_no_voxel_size(&args.input);
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", human(&summary));
    }
    Ok(())
}

fn human(s: &PyramidSummary) -> String {
    let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" × ");
    let nm = |v: &[f64; 3]| format!("{} × {} × {} nm", v[0], v[1], v[2]);
    let mut out = format!(
        "{}: zarr v{} OME-NGFF {} {} pyramid of {}, {} levels\n",
        s.path.display(),
        s.zarr_version,
        s.ome_version,
        match s.kind {
            PyramidKind::Labels => "labels",
            _ => "image",
        },
        s.dtype,
        s.levels.len()
    );
    for l in &s.levels {
        out.push_str(&format!(
            "  {}: {}  voxel {}\n",
            l.path,
            join(&l.shape),
            nm(&l.voxel_size)
        ));
    }
    if let Some(image) = &s.label_of {
        out.push_str(&format!("listed in {}/labels\n", image.display()));
    }
    out
}
