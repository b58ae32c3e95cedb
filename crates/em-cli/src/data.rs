//! `em data synth`: writes a built-in synthetic EM volume (image, labels, and for neurons
//! skeletons) in the BANIS/NISB zarr layout.

use std::path::PathBuf;

use anyhow::Context;
use em_core::AnyArray;
use em_io::ome::PyramidKind;
use serde_json::json;

use crate::guard;

/// `em data …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum DataCommand {
    /// Write a synthetic volume: DIR.zarr/img (uint8), DIR.zarr/seg (uint32), and for
    /// neurons DIR.zarr/skeletons.json.
    Synth(SynthArgs),
}

/// What to synthesise.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Mitochondria among neuropil and vesicles, binary labels.
    Mito,
    /// Densely packed neuron-like cells with membranes, instance labels and skeletons.
    Neurons,
}

/// Arguments of `em data synth`.
#[derive(clap::Args, Debug)]
pub(crate) struct SynthArgs {
    /// mito or neurons.
    #[arg(long)]
    kind: Kind,
    /// Shape z,y,x.
    #[arg(long, value_delimiter = ',', default_value = "64,256,256")]
    shape: Vec<usize>,
    /// Output zarr directory (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --ome, img and seg are OME-Zarr pyramids (DIR.zarr/img/0, …/1, …); synthetic
    /// data has no physical voxel size, so 1,1,1 nm is recorded unless --voxel-size says
    /// otherwise.
    #[command(flatten)]
    ome: crate::ome::OmeArgs,
}

pub(crate) fn run(cmd: &DataCommand) -> anyhow::Result<()> {
    let DataCommand::Synth(a) = cmd;
    let &[z, y, x] = a.shape.as_slice() else {
        anyhow::bail!("--shape takes z,y,x, got {:?}", a.shape);
    };
    anyhow::ensure!(
        z > 0 && y > 0 && x > 0,
        "--shape {:?} has a zero side",
        a.shape
    );
    // The generators hold a few float and label volumes at once: about 32 bytes a voxel.
    let shape = [z, y, x].map(|n| n as u64);
    guard::memory(
        &format!("a synthetic volume of {z} × {y} × {x} voxels"),
        em_autoconf::bytes_of(&shape, 32),
        "choose a smaller --shape",
    )?;
    anyhow::ensure!(
        !a.out.exists(),
        "{} exists; choose a new path (nothing is overwritten)",
        a.out.display()
    );
    a.ome.check(&[&a.out])?;
    let v = match a.kind {
        Kind::Mito => em_data::synth::mitochondria([z, y, x], a.seed, &Default::default()),
        Kind::Neurons => em_data::synth::neurons([z, y, x], a.seed, &Default::default()),
    };
    // Built beside the target and renamed at the end, so a failure leaves no partial zarr.
    let name = a
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    anyhow::ensure!(
        name.ends_with(".zarr"),
        "--out must be a DIR.zarr path, got {}",
        a.out.display()
    );
    let staged = em_io::StagedDir::create(&a.out)?;
    let staging = staged.path().to_path_buf();
    let result = (|| -> anyhow::Result<()> {
        let img = v.image.mapv(|p| (p * 255.0).round() as u8);
        // The staging directory's name does not end in .zarr: name the arrays directly.
        let array = |key: &str| em_io::VolumePath {
            format: em_io::Format::Zarr,
            container: staging.clone(),
            key: Some(key.into()),
        };
        let options = em_io::ZarrOptions::default();
        em_io::write_zarr(&array("img"), &AnyArray::from(img.into_dyn()), &options)?;
        em_io::write_zarr(
            &array("seg"),
            &AnyArray::from(v.labels.clone().into_dyn()),
            &options,
        )?;
        if a.ome.ome {
            let bar = crate::progress::Bar::new();
            for (key, kind) in [("img", PyramidKind::Image), ("seg", PyramidKind::Labels)] {
                let level0 = em_io::ZarrVolume::open(&array(key))?;
                let options = a.ome.options(kind);
                em_io::ome::build_pyramid(&level0, &array(key), &options, &bar)?;
            }
            bar.0.finish_and_clear();
        }
        if a.kind == Kind::Neurons {
            let (nodes, edges) = em_data::synth::section_skeletons(&v.labels);
            let nodes: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(i, (s, p))| json!({"id": i, "skeleton": s, "position": p}))
                .collect();
            let doc = json!({"nodes": nodes, "edges": edges});
            std::fs::write(staging.join("skeletons.json"), doc.to_string())
                .context("writing skeletons.json")?;
        }
        Ok(())
    })();
    result?;
    anyhow::ensure!(
        !a.out.exists(),
        "{} appeared while the volume was made; nothing is overwritten",
        a.out.display()
    );
    staged
        .commit()
        .with_context(|| format!("moving into {}", a.out.display()))?;
    let labelled = v.labels.iter().filter(|&&l| l != 0).count();
    let mut report = json!({"out": a.out.display().to_string(), "kind": format!("{:?}", a.kind).to_lowercase(),
               "shape": [z, y, x], "labels": v.labels.iter().copied().max().unwrap_or(0),
               "labelled_fraction": labelled as f64 / (z * y * x) as f64});
    if a.kind == Kind::Mito {
        // What a tuned intensity threshold reaches: the bar a trained model must clear.
        let (iou, t) = em_data::synth::threshold_baseline_iou(&v.image, &v.labels);
        report["threshold_baseline"] = json!({"iou": iou, "threshold": t});
    }
    println!("{report}");
    Ok(())
}
