//! `em slurm`: render, submit and sweep Slurm jobs, follow them, and decode affinity
//! volumes block by block as array jobs.
//!
//! Distributed decoding (`em slurm decode`) writes a plan to a work directory, labels one
//! block at submit time (so bad parameters fail at once), then submits an array job whose
//! tasks label the remaining blocks (`decode-task`; a block's record file is its done
//! marker, so reruns skip finished blocks) and a final job (`decode-stitch`) that runs
//! after every task has ended, whatever their outcome: it resubmits the tasks whose blocks
//! are missing (up to `--retries` times), and otherwise joins the records and writes the
//! labels of `em decode` — staged, so the output appears whole or not at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use em_decode::SmallObjectMode;
use em_slurm::{
    DecodeJobOptions, JobConfig, ManifestEntry, RenderOptions, SubmitOptions, SweepConfig,
};
use serde_json::json;

use crate::decode::{triple, LabelOptions, LabelType};
use crate::guard;
use crate::progress::Bar;

/// `em slurm` subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum SlurmCommand {
    /// Print (or write) the sbatch script of a job config.
    Render {
        /// The job config (TOML: name, command, [slurm], [resubmit]).
        job: PathBuf,
        /// Override a job value: --set slurm.time="02:00:00" (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Write the script here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing script (never the job config).
        #[arg(long)]
        overwrite: bool,
    },
    /// Render a job into DIR/NAME.sbatch, submit it and record it in DIR/manifest.json.
    Submit {
        /// The job config.
        job: PathBuf,
        /// Override a job value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Where the script and manifest go.
        #[arg(long, default_value = "slurm")]
        dir: PathBuf,
        /// Write the script, submit nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Submit one job per combination of a sweep file's values (DIR/manifest.json lists them).
    Sweep {
        /// The sweep config (job = "job.toml", mode, [parameters]).
        sweep: PathBuf,
        /// Where the scripts and manifest go.
        #[arg(long, default_value = "slurm")]
        dir: PathBuf,
        /// Write the scripts and list the jobs, submit nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The state of jobs: a manifest.json, or job ids.
    Status {
        /// A manifest (from submit, sweep or decode) or job ids.
        #[arg(required = true)]
        what: Vec<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Decode affinities block by block as a Slurm array job, then stitch in a final job.
    Decode(Box<DecodeJobArgs>),
    /// Predict the blocks of one task of a distributed decode (run by the array job).
    PredictTask {
        /// The plan written by `em slurm decode`.
        plan: PathBuf,
        /// The task index (the array task id).
        #[arg(long)]
        task: u64,
    },
    /// Label the blocks of one task of a distributed decode (run by the array job).
    DecodeTask {
        /// The plan written by `em slurm decode`.
        plan: PathBuf,
        /// The task index (the array task id).
        #[arg(long)]
        task: u64,
    },
    /// Stitch a distributed decode (run by its final job): resubmit missing tasks, or write
    /// the labels.
    DecodeStitch {
        /// The plan written by `em slurm decode`.
        plan: PathBuf,
        /// Fail on missing blocks instead of resubmitting their tasks.
        #[arg(long)]
        no_resubmit: bool,
    },
}

/// Methods of `em slurm decode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SlurmMethod {
    /// Connected components of affinities above --threshold.
    Cc,
    /// waterz below each of --thresholds.
    Waterz,
}

/// Arguments of `em slurm decode`.
#[derive(clap::Args, Debug)]
pub(crate) struct DecodeJobArgs {
    /// Affinities `(C, Z, Y, X)` (zarr for large volumes; every task reads its blocks).
    /// With `--run`, where the predicted affinities are written (DIR.zarr[/array]).
    #[arg(long)]
    affinities: PathBuf,
    /// Predict the affinities first, block by block, with this training run's model
    /// (RUN/config.toml and RUN/model.safetensors), from `--image`.
    #[arg(long, requires = "image")]
    run: Option<PathBuf>,
    /// The image to predict from: (Z, Y, X) or (C, Z, Y, X).
    #[arg(long, requires = "run")]
    image: Option<PathBuf>,
    /// Context read around each block for prediction, z,y,x (default: half the inference
    /// window), so that window borders stay outside the block.
    #[arg(long, value_parser = triple::<u64>)]
    context: Option<[u64; 3]>,
    /// Output segmentation: DIR.zarr[/array].
    #[arg(long)]
    out: PathBuf,
    /// Block shape z,y,x (also the output's chunk shape).
    #[arg(long, value_parser = triple::<u64>)]
    block: [u64; 3],
    /// Array tasks; each labels a contiguous run of blocks.
    #[arg(long, default_value_t = 4)]
    tasks: u64,
    #[command(flatten)]
    labels: LabelOptions,
    /// How to decode: cc (connected components) or waterz (block-wise fragments, one
    /// agglomeration in the final job). The mutex watershed and the instance decoders run
    /// in memory: use `em decode`.
    #[arg(long, value_enum, default_value = "cc")]
    method: SlurmMethod,
    #[command(flatten)]
    waterz: crate::decode::WaterzArgs,
    /// Work directory: plan, scripts, block records, logs.
    #[arg(long, default_value = "slurm/decode")]
    dir: PathBuf,
    /// A job config whose [slurm] resources (partition, time, cpus, memory, …) the tasks
    /// and the final job use; its name prefixes theirs.
    #[arg(long)]
    job: Option<PathBuf>,
    /// Override a value of that job (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Array tasks running at once at most (`--array=…%N`).
    #[arg(long)]
    max_running: Option<u64>,
    /// How often the final job resubmits tasks whose blocks are missing.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Write the plan and scripts, submit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace an existing output array (and, with --run, predicted affinities).
    #[arg(long)]
    overwrite: bool,
    /// Where the prediction tasks run (checked on the compute node): auto, cpu, cuda,
    /// cuda:N or wgpu. Ask the job for a GPU (`gpus = 1` in its [slurm] table) with cuda.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: em_train::DeviceChoice,
}

pub(crate) fn run(cmd: &SlurmCommand) -> anyhow::Result<()> {
    match cmd {
        SlurmCommand::Render {
            job,
            set,
            out,
            overwrite,
        } => {
            if let Some(path) = out {
                guard::outputs(&[path], &[job], *overwrite)?;
            }
            let j = load_job(job, set)?;
            let script = j.render(&render_options(job, out.clone())?)?;
            match out {
                Some(path) => {
                    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(d)
                            .with_context(|| format!("creating {}", d.display()))?;
                    }
                    em_io::write_atomic(path, script.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{script}"),
            }
            Ok(())
        }
        SlurmCommand::Submit {
            job,
            set,
            dir,
            dry_run,
        } => {
            let j = load_job(job, set)?;
            let entry = submit_job(&j, job, dir, BTreeMap::new(), *dry_run)?;
            println!("{}", serde_json::to_string(&entry)?);
            Ok(())
        }
        SlurmCommand::Sweep {
            sweep,
            dir,
            dry_run,
        } => {
            let (config, base) = SweepConfig::load(sweep)?;
            let points = config.expand(&base)?;
            eprintln!("{} jobs in the sweep", points.len());
            for p in points {
                let entry = submit_job(&p.job, sweep, dir, p.values, *dry_run)?;
                println!("{}", serde_json::to_string(&entry)?);
            }
            Ok(())
        }
        SlurmCommand::Status { what, json } => status(what, *json),
        SlurmCommand::Decode(args) => decode(args),
        SlurmCommand::PredictTask { plan, task } => predict_task(plan, *task),
        SlurmCommand::DecodeTask { plan, task } => decode_task(plan, *task),
        SlurmCommand::DecodeStitch { plan, no_resubmit } => decode_stitch(plan, *no_resubmit),
    }
}

fn load_job(path: &Path, set: &[String]) -> anyhow::Result<JobConfig> {
    Ok(JobConfig::load(path)?.with_overrides(set)?)
}

/// `em` in commands becomes this very program, so jobs run the build that submitted them.
fn render_options(source: &Path, script: Option<PathBuf>) -> anyhow::Result<RenderOptions> {
    Ok(RenderOptions {
        em: std::env::current_exe().ok(),
        script_path: script.map(absolute).transpose()?,
        source: Some(source.to_path_buf()),
    })
}

fn absolute(p: PathBuf) -> anyhow::Result<PathBuf> {
    std::path::absolute(&p).with_context(|| format!("resolving {}", p.display()))
}

/// Writes DIR/NAME.sbatch, submits it (unless a dry run) and adds it to DIR/manifest.json.
fn submit_job(
    job: &JobConfig,
    source: &Path,
    dir: &Path,
    parameters: BTreeMap<String, String>,
    dry_run: bool,
) -> anyhow::Result<ManifestEntry> {
    Ok(em_slurm::submit_to_dir(
        job,
        &SubmitOptions {
            source: source.to_path_buf(),
            dir: dir.to_path_buf(),
            sbatch: Vec::new(),
            parameters,
            dry_run,
            em: std::env::current_exe().ok(),
        },
    )?)
}

fn status(what: &[String], as_json: bool) -> anyhow::Result<()> {
    let (ids, names) = em_slurm::job_ids(what)?;
    let states = em_slurm::status(&ids)?;
    for s in &states {
        let base = s.id.split('_').next().unwrap_or(&s.id);
        let name = names.get(base).cloned().unwrap_or_default();
        if as_json {
            println!(
                "{}",
                json!({"id": s.id, "name": name, "state": s.state,
                       "exit_code": s.exit_code, "reason": s.reason})
            );
        } else {
            println!(
                "{:<14} {:<12} {:<28} {}",
                s.id,
                s.state,
                name,
                s.reason
                    .clone()
                    .or_else(|| s.exit_code.clone().map(|e| format!("exit {e}")))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `em slurm decode`: checks, writes the plan and scripts, submits (unless `--dry-run`).
fn decode(a: &DecodeJobArgs) -> anyhow::Result<()> {
    let job = match &a.job {
        Some(p) => load_job(p, &a.set)?,
        None => JobConfig::from_toml("name = \"decode\"\ncommand = [\"em\"]", Path::new("-"))?
            .with_overrides(&a.set)?,
    };
    let opts = DecodeJobOptions {
        affinities: a.affinities.clone(),
        out: a.out.clone(),
        dir: a.dir.clone(),
        block: a.block,
        tasks: a.tasks,
        decode: a.labels.params(SmallObjectMode::Background, Some(1)),
        waterz: match a.method {
            SlurmMethod::Cc => None,
            SlurmMethod::Waterz => Some(a.waterz.plan(a.labels.threshold, a.labels.storage)?),
        },
        label_u64: a.labels.label_type == LabelType::U64,
        job,
        max_running: a.max_running,
        retries: a.retries,
        overwrite: a.overwrite,
        em: std::env::current_exe().ok(),
    };
    let predict = match (&a.run, &a.image) {
        (Some(run), Some(image)) => Some(em_train::PredictOptions {
            run: run.clone(),
            image: image.clone(),
            context: a.context,
            device: a.device,
        }),
        _ => None,
    };
    let prepared = em_train::prepare_distributed_decode(&opts, predict.as_ref())?;
    if a.dry_run {
        println!("{}", serde_json::to_string(&prepared)?);
        return Ok(());
    }
    let submitted = em_slurm::submit_decode(&prepared.plan)?;
    println!(
        "{}",
        json!({"plan": prepared.plan, "blocks": prepared.blocks, "tasks": prepared.tasks,
               "predict_job": submitted.predict_job, "tasks_job": submitted.tasks_job,
               "stitch_job": submitted.stitch_job, "manifest": submitted.manifest})
    );
    Ok(())
}

/// `em slurm predict-task`: one prediction task of a distributed decode.
fn predict_task(plan: &Path, task: u64) -> anyhow::Result<()> {
    let (report, device) = em_train::predict_task(plan, task)?;
    eprintln!("device: {device}");
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `em slurm decode-task`: one block task of a distributed decode.
fn decode_task(plan: &Path, task: u64) -> anyhow::Result<()> {
    let r = em_slurm::decode_task(plan, task)?;
    println!(
        "{}",
        json!({"task": r.task, "labelled": r.done, "already_done": r.already_done})
    );
    Ok(())
}

/// `em slurm decode-stitch`: the final job of a distributed decode.
fn decode_stitch(plan: &Path, no_resubmit: bool) -> anyhow::Result<()> {
    let attempt: u32 = std::env::var("EM_ATTEMPT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let outcome = em_slurm::decode_stitch(plan, no_resubmit, attempt, &Bar::new())?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}
