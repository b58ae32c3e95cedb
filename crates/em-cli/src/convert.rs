//! `em convert IN OUT`: any volume format we read to any we write. Chunked inputs (zarr,
//! HDF5, precomputed) go to zarr or precomputed outputs block by block, so memory stays
//! bounded; npy and TIFF are whole-array formats and are converted in memory.

use std::path::PathBuf;

use anyhow::Context;
use em_core::{BlockGrid, ChunkedVolume, Progress};
use em_io::precomputed::{copy_to_precomputed, PrecomputedEncoding, PrecomputedOptions, Sharding};
use em_io::{Format, VolumePath, ZarrOptions, ZarrWriter};
use serde::Serialize;

use crate::decode::triple;
use crate::guard;
use crate::progress::Bar;

/// Chunk encodings of precomputed output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EncodingArg {
    /// Little-endian values, any element type.
    Raw,
    /// neuroglancer's compressed_segmentation (uint32/uint64 labels; often 10–100× smaller).
    #[value(name = "compressed_segmentation")]
    CompressedSegmentation,
}

/// Arguments of `em convert`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The volume `(Z, Y, X)` or `(C, Z, Y, X)`: .npy, .tif/.tiff, DIR.zarr[/array],
    /// FILE.h5/dataset or DIR.precomputed[/SCALE] (default: its first scale). Or
    /// skeletons — our skeleton JSON (positions in voxels: give --voxel-size), an SWC file
    /// or a directory of them — written as a precomputed skeleton source.
    input: PathBuf,
    /// Where to write it: .npy, .tif/.tiff, DIR.zarr[/array], FILE.h5/dataset or
    /// DIR.precomputed (a new neuroglancer precomputed volume of one scale).
    output: PathBuf,
    /// Chunk encoding of precomputed output.
    #[arg(long, value_enum, default_value = "raw")]
    encoding: EncodingArg,
    /// Chunk shape z,y,x of zarr or precomputed output (default 64,64,64, clipped to the
    /// volume).
    #[arg(long, value_parser = triple::<u64>)]
    chunks: Option<[u64; 3]>,
    /// Precomputed output in `.shard` files (neuroglancer_uint64_sharded_v1): few files
    /// instead of one per chunk.
    #[arg(long)]
    sharded: bool,
    /// gzip-compress precomputed chunks (sharded: inside the shards; unsharded: NAME.gz
    /// files, which need a server that sends them with Content-Encoding: gzip).
    #[arg(long)]
    gzip: bool,
    /// Voxel size z,y,x in nm recorded in precomputed output (default: the input's
    /// metadata, else 1,1,1).
    #[arg(long, value_parser = crate::voxel_size_arg)]
    voxel_size: Option<em_core::VoxelSize>,
    /// Replace an existing output (never an input, a group or a foreign directory).
    #[arg(long)]
    overwrite: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// The report, also the `--json` schema.
#[derive(Serialize)]
struct Summary {
    input: String,
    output: String,
    format: Format,
    shape: Vec<u64>,
    dtype: em_core::DType,
    /// Chunk shape of chunked outputs.
    chunks: Option<Vec<u64>>,
    /// Precomputed output only.
    encoding: Option<&'static str>,
    sharded: Option<bool>,
    voxel_size: Option<[f64; 3]>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if is_skeletons(&args.input) {
        return convert_skeletons(args);
    }
    let input = VolumePath::parse(&args.input)?;
    let output = VolumePath::parse(&args.output)?;
    check_flags(args, output.format)?;
    guard::outputs(&[&args.output], &[&args.input], args.overwrite)?;
    let in_memory = |f: Format| matches!(f, Format::Npy | Format::Tiff);
    let streams =
        !in_memory(input.format) && matches!(output.format, Format::Zarr | Format::Precomputed);
    if !streams {
        if let Some((shape, elem)) = guard::peek(&args.input)? {
            guard::memory(
                &format!("converting {} in memory", args.input.display()),
                em_autoconf::bytes_of(&shape, elem),
                "write zarr or precomputed output, which are written block by block from a chunked input",
            )?;
        }
    }
    let source =
        em_io::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let bar = Bar::new();
    let mut summary = Summary {
        input: args.input.display().to_string(),
        output: args.output.display().to_string(),
        format: output.format,
        shape: source.shape().to_vec(),
        dtype: source.dtype(),
        chunks: None,
        encoding: None,
        sharded: None,
        voxel_size: None,
    };
    match output.format {
        Format::Precomputed => {
            let voxel = resolve_voxel_size(args)?;
            let options = PrecomputedOptions {
                encoding: match args.encoding {
                    EncodingArg::Raw => PrecomputedEncoding::Raw,
                    EncodingArg::CompressedSegmentation => {
                        PrecomputedEncoding::CompressedSegmentation
                    }
                },
                chunk_shape: args.chunks,
                gzip: args.gzip,
                sharding: if args.sharded {
                    Sharding::Auto
                } else {
                    Sharding::Off
                },
                voxel_size: voxel,
                ..Default::default()
            };
            let written = copy_to_precomputed(source.as_ref(), &args.output, &options, &bar)?;
            summary.chunks = Some(written.chunk_shape().to_vec());
            summary.encoding = Some(match args.encoding {
                EncodingArg::Raw => "raw",
                EncodingArg::CompressedSegmentation => "compressed_segmentation",
            });
            summary.sharded = Some(args.sharded);
            summary.voxel_size = Some(written.resolution_nm());
        }
        Format::Zarr => {
            summary.chunks = Some(copy_to_zarr(source.as_ref(), &output, args.chunks, &bar)?);
        }
        _ => {
            let data = source
                .read_roi(&source.roi())
                .with_context(|| format!("reading {}", args.input.display()))?;
            em_io::write(&args.output, &data)?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", human(&summary));
    }
    Ok(())
}

/// Refuses flags the output format would silently ignore.
fn check_flags(args: &Args, out: Format) -> anyhow::Result<()> {
    if out != Format::Precomputed {
        let given = [
            (args.encoding != EncodingArg::Raw, "--encoding"),
            (args.sharded, "--sharded"),
            (args.gzip, "--gzip"),
            (args.voxel_size.is_some(), "--voxel-size"),
        ];
        if let Some((_, flag)) = given.iter().find(|g| g.0) {
            anyhow::bail!(
                "{flag} applies to precomputed output (DIR.precomputed) only; nothing was written"
            );
        }
    }
    if args.chunks.is_some() && !matches!(out, Format::Zarr | Format::Precomputed) {
        anyhow::bail!("--chunks applies to zarr or precomputed output only; nothing was written");
    }
    Ok(())
}

/// Skeleton JSON, an SWC file or a directory of them (not a volume).
fn is_skeletons(path: &std::path::Path) -> bool {
    let ext = |p: &std::path::Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
    };
    match ext(path).as_deref() {
        Some("json" | "swc") => true,
        _ => {
            VolumePath::parse(path).is_err()
                && path.is_dir()
                && std::fs::read_dir(path).is_ok_and(|entries| {
                    entries
                        .flatten()
                        .any(|e| ext(&e.path()).as_deref() == Some("swc"))
                })
        }
    }
}

/// Skeleton JSON/SWC → a precomputed skeleton source (`OUT.precomputed`), which
/// neuroglancer shows as a skeleton layer.
fn convert_skeletons(args: &Args) -> anyhow::Result<()> {
    let output = VolumePath::parse(&args.output)?;
    anyhow::ensure!(
        output.format == Format::Precomputed && output.key.is_none(),
        "skeletons convert to a precomputed skeleton source: give OUT.precomputed, not {}",
        args.output.display()
    );
    let volume_flags = [
        (args.encoding != EncodingArg::Raw, "--encoding"),
        (args.sharded, "--sharded"),
        (args.gzip, "--gzip"),
        (args.chunks.is_some(), "--chunks"),
    ];
    if let Some((_, flag)) = volume_flags.iter().find(|g| g.0) {
        anyhow::bail!("{flag} applies to volumes, not skeletons; nothing was written");
    }
    em_io::check_disjoint(&[&args.output], &[&args.input])?;
    anyhow::ensure!(
        args.overwrite || !args.output.exists(),
        "{} exists; --overwrite replaces an earlier skeleton source (nothing was written)",
        args.output.display()
    );
    let voxel = resolve_voxel_size(args)?;
    let skeletons = em_metrics::Skeletons::read(&args.input, em_core::VoxelSize::new(voxel)?)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let converted = crate::view::skeletons::to_precomputed(&skeletons, voxel);
    em_io::precomputed::write_skeletons(&args.output, &converted)?;
    let vertices: usize = converted.iter().map(|s| s.vertices_nm.len()).sum();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"input": args.input, "output": args.output,
                "skeletons": converted.len(), "vertices": vertices, "voxel_size": voxel})
        );
    } else {
        println!(
            "{} skeletons ({vertices} vertices) → {}",
            converted.len(),
            args.output.display()
        );
    }
    Ok(())
}

/// --voxel-size, else the input's metadata (OME-Zarr, funlib, a precomputed scale's
/// resolution); else 1,1,1 with a warning.
fn resolve_voxel_size(args: &Args) -> anyhow::Result<[f64; 3]> {
    if let Some(v) = args.voxel_size {
        return Ok(v.zyx());
    }
    Ok(em_io::voxel_size(&args.input)?.unwrap_or_else(|| {
        crate::warn_no_voxel_size(&args.input);
        [1.0, 1.0, 1.0]
    }))
}

/// Data a streaming copy holds at once: blocks of whole chunks up to this many bytes.
const COPY_BLOCK_BYTES: u64 = 64 << 20;

/// Copies `src` into a new zarr array block by block ([`em_core::chunk_aligned_block`] of
/// [`COPY_BLOCK_BYTES`]); returns the chunk shape.
fn copy_to_zarr(
    src: &dyn ChunkedVolume,
    out: &VolumePath,
    chunks: Option<[u64; 3]>,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<u64>> {
    let shape = src.shape().to_vec();
    let n = shape.len();
    anyhow::ensure!(
        n >= 3 || chunks.is_none(),
        "--chunks needs a volume of 3 or more axes; {} has shape {shape:?}",
        src.describe()
    );
    // Without --chunks, the zarr writer's default layout.
    let options = ZarrOptions {
        chunk_shape: chunks.map(|c| {
            shape[..n - 3]
                .iter()
                .copied()
                .chain(
                    c.iter()
                        .zip(&shape[n - 3..])
                        .map(|(&c, &s)| c.min(s.max(1))),
                )
                .collect()
        }),
        ..Default::default()
    };
    let writer = ZarrWriter::create(out, &shape, src.dtype(), &options)?;
    let chunk_shape = writer.volume().chunk_shape().to_vec();
    let display = out.display();
    let blocks = BlockGrid::new(
        &shape,
        &em_core::chunk_aligned_block(
            &shape,
            &chunk_shape,
            src.dtype().size_bytes() as u64,
            COPY_BLOCK_BYTES,
        ),
        &vec![0; n],
    )?;
    progress.start("writing zarr", src.roi().num_elements());
    for block in blocks.iter() {
        let data = src
            .read_roi(&block.core)
            .with_context(|| format!("reading {}", src.describe()))?;
        writer
            .volume()
            .write_roi(&block.core, &data)
            .with_context(|| format!("writing {}", display.display()))?;
        progress.advance(block.core.num_elements());
    }
    writer.commit()?;
    progress.finish();
    Ok(chunk_shape)
}

fn human(s: &Summary) -> String {
    let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" × ");
    let mut out = format!(
        "{} → {} ({}): {} {}",
        s.input,
        s.output,
        s.format.name(),
        join(&s.shape),
        s.dtype
    );
    if let Some(c) = &s.chunks {
        out.push_str(&format!(", chunks {}", join(c)));
    }
    if let Some(e) = s.encoding {
        out.push_str(&format!(", {e}"));
    }
    if s.sharded == Some(true) {
        out.push_str(", sharded");
    }
    if let Some(v) = s.voxel_size {
        out.push_str(&format!(", voxel {} × {} × {} nm", v[0], v[1], v[2]));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_text_names_the_layout() {
        let s = Summary {
            input: "a.npy".into(),
            output: "b.precomputed".into(),
            format: Format::Precomputed,
            shape: vec![2, 3, 4],
            dtype: em_core::DType::U32,
            chunks: Some(vec![2, 3, 4]),
            encoding: Some("compressed_segmentation"),
            sharded: Some(true),
            voxel_size: Some([40.0, 4.0, 4.0]),
        };
        assert_eq!(
            human(&s),
            "a.npy → b.precomputed (precomputed): 2 × 3 × 4 uint32, chunks 2 × 3 × 4, \
             compressed_segmentation, sharded, voxel 40 × 4 × 4 nm\n"
        );
    }
}
