//! `em`: the command-line front end of em-connectomics. It parses arguments, calls one
//! library function per subcommand and reports; the work lives in the library crates.

mod augment;
mod convert;
mod data;
mod decode;
mod evaluate;
mod guard;
mod infer;
mod info;
mod model;
mod ome;
mod plan;
mod progress;
mod pyramid;
mod slurm;
mod train;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Segment electron-microscopy volumes of brain tissue.
///
/// Volumes are given as .npy, .tif/.tiff, DIR.zarr[/array], FILE.h5/dataset or DIR.precomputed.
#[derive(Parser, Debug)]
#[command(name = "em", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Format, shape, dtype, chunks, value range and label count of a volume.
    Info(info::InfoArgs),
    /// Predictions → segmentation: connected components (BANIS), waterz, mutex watershed,
    /// distance or contour instances.
    Decode(Box<decode::DecodeArgs>),
    /// VOI, adapted Rand, IoU/Dice and instance matching against ground-truth labels.
    Evaluate(evaluate::EvaluateArgs),
    /// ERL/NERL (and merge-tolerant NERL) of a segmentation against skeletons.
    EvaluateSkeletons(evaluate::SkeletonArgs),
    /// Decode at several thresholds and report NERL/VOI of each and the best.
    Tune(evaluate::TuneArgs),
    /// Apply an augmentation preset and write PNG montages of what each transform does.
    Augment(augment::AugmentArgs),
    /// Model summary, weight import and single forward passes.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Train a model from a TOML config or preset: validation, checkpoints, --resume.
    Train(train::TrainArgs),
    /// Sliding-window prediction of a volume with a trained model, then optional decode.
    Infer(infer::InferArgs),
    /// Hardware this process may use, and the plan for a config's "auto" values.
    Plan(plan::PlanArgs),
    /// Synthetic data sets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Slurm: render, submit and sweep jobs, follow them, decode block by block as arrays.
    #[command(subcommand)]
    Slurm(slurm::SlurmCommand),
    /// An OME-Zarr multiscale pyramid of a volume: images averaged, labels by mode.
    Pyramid(pyramid::Args),
    /// Any volume format we read to any we write, neuroglancer precomputed included.
    Convert(convert::Args),
    /// Serve volumes to neuroglancer on 127.0.0.1 and print the viewer's URL.
    View(view::Args),
}

fn main() -> ExitCode {
    em_core::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Decode(args) => decode::run(&args),
        Command::Evaluate(args) => evaluate::evaluate(&args),
        Command::EvaluateSkeletons(args) => evaluate::evaluate_skeletons(&args),
        Command::Tune(args) => evaluate::tune(&args),
        Command::Augment(args) => augment::run(&args),
        Command::Model(cmd) => model::run(&cmd),
        Command::Train(args) => train::run(&args),
        Command::Infer(args) => infer::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Data(cmd) => data::run(&cmd),
        Command::Slurm(cmd) => slurm::run(&cmd),
        Command::Pyramid(args) => pyramid::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::View(args) => view::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, joined by `: `. The library errors already spell out their
/// source in their own message, so a cause whose text the message holds is not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Parses `--voxel-size z,y,x` (nm, each positive), the same way for every command.
pub(crate) fn voxel_size_arg(s: &str) -> Result<em_core::VoxelSize, String> {
    let sides: Vec<f64> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .map_err(|_| format!("{p:?} in {s:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    let &[z, y, x] = sides.as_slice() else {
        return Err(format!("{s:?}: give three sizes z,y,x in nm, e.g. 40,4,4"));
    };
    em_core::VoxelSize::new([z, y, x]).map_err(|e| e.to_string())
}

/// The one warning every command gives when it records 1,1,1 nm for lack of a voxel size.
pub(crate) fn warn_no_voxel_size(volume: &std::path::Path) {
    eprintln!(
        "warning: no voxel size in {}; using 1,1,1 nm (set --voxel-size)",
        volume.display()
    );
}

/// A volume path argument as given on the command line.
pub(crate) type VolumeArg = PathBuf;

#[cfg(test)]
mod tests {
    #[test]
    fn voxel_sizes_parse_and_bad_ones_say_why() {
        let v = super::voxel_size_arg("40, 4,4.5").unwrap();
        assert_eq!(v.zyx(), [40.0, 4.0, 4.5]);
        assert!(super::voxel_size_arg("40,4")
            .unwrap_err()
            .contains("three sizes"));
        assert!(super::voxel_size_arg("40,0,4")
            .unwrap_err()
            .contains("positive"));
        assert!(super::voxel_size_arg("40,x,4")
            .unwrap_err()
            .contains("not a number"));
        assert!(super::voxel_size_arg("40,NaN,4")
            .unwrap_err()
            .contains("positive"));
    }
}
