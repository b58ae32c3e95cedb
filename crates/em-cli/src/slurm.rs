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

use anyhow::{bail, Context};
use em_core::{ChunkedVolume, EdgeStorage};
use em_decode::{block_count, label_block, stitch_blocks, BlockRecord, CcOptions, DecodeOptions};
use em_io::{Format, VolumePath, ZarrOptions, ZarrWriter};
use em_slurm::{JobConfig, Manifest, ManifestEntry, RenderOptions, SweepConfig};
use serde::{Deserialize, Serialize};
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
            let entry = submit_job(&j, job, dir, &[], BTreeMap::new(), *dry_run)?;
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
                let entry = submit_job(&p.job, sweep, dir, &[], p.values, *dry_run)?;
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
    options: &[String],
    parameters: BTreeMap<String, String>,
    dry_run: bool,
) -> anyhow::Result<ManifestEntry> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = absolute(dir.join(format!("{}.sbatch", job.name)))?;
    // Scripts in the submit directory are this command's own, rewritten at each submit;
    // the job config is not.
    guard::outputs(&[&script], &[source], true)?;
    let text = job.render(&render_options(source, Some(script.clone()))?)?;
    em_io::write_atomic(&script, text.as_bytes())
        .with_context(|| format!("writing {}", script.display()))?;
    let job_id = if dry_run {
        String::new()
    } else {
        em_slurm::submit(&script, options)?
    };
    let entry = ManifestEntry {
        name: job.name.clone(),
        job_id,
        script,
        parameters,
    };
    if !dry_run {
        let path = dir.join("manifest.json");
        let mut manifest = Manifest::load(&path)?;
        manifest.jobs.push(entry.clone());
        manifest.save(&path)?;
    }
    Ok(entry)
}

fn status(what: &[String], as_json: bool) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    let mut names = BTreeMap::new();
    for w in what {
        if w.ends_with(".json") || Path::new(w).is_file() {
            let m = Manifest::load(Path::new(w))?;
            if m.jobs.is_empty() {
                bail!("{w} lists no jobs (or does not exist)");
            }
            for e in m.jobs {
                names.insert(e.job_id.clone(), e.name);
                ids.push(e.job_id);
            }
        } else if w
            .split('_')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        {
            ids.push(w.clone());
        } else {
            bail!("{w:?} is neither a manifest file nor a job id");
        }
    }
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

/// What the tasks and the final job of a distributed decode share (`plan.json`).
#[derive(Serialize, Deserialize, Debug)]
struct DecodePlan {
    affinities: PathBuf,
    out: PathBuf,
    /// The block-local labels (uint32, one chunk per block).
    local: PathBuf,
    /// One record file per finished block.
    records: PathBuf,
    block: [u64; 3],
    blocks: u64,
    tasks: u64,
    threshold: f32,
    storage: EdgeStorage,
    channels: Vec<usize>,
    min_size: u64,
    scale: [usize; 3],
    label_u64: bool,
    retries: u32,
    task_script: PathBuf,
    stitch_script: PathBuf,
    /// The prediction stage, when affinities are predicted first.
    #[serde(default)]
    predict: Option<PredictPlan>,
}

/// Block-by-block prediction before the decode.
#[derive(Serialize, Deserialize, Debug)]
struct PredictPlan {
    /// The training run (config.toml, model.safetensors).
    run: PathBuf,
    image: PathBuf,
    /// Context read around each block.
    context: [u64; 3],
    /// Blocks in raster order (the prediction grid).
    blocks: u64,
    /// One marker file per predicted block.
    markers: PathBuf,
    script: PathBuf,
    /// `--device` of the prediction tasks.
    #[serde(default = "auto_device")]
    device: String,
}

fn auto_device() -> String {
    "auto".into()
}

impl PredictPlan {
    fn marker(&self, i: u64) -> PathBuf {
        self.markers.join(format!("block-{i:08}.done"))
    }

    fn missing(&self) -> Vec<u64> {
        (0..self.blocks)
            .filter(|&i| !self.marker(i).is_file())
            .collect()
    }
}

impl DecodePlan {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the decode plan {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a decode plan", path.display()))
    }

    fn params(&self) -> DecodeOptions {
        DecodeOptions {
            cc: CcOptions {
                threshold: self.threshold,
                channels: self.channels.clone(),
                offsets: None,
                storage: self.storage,
                threads: Some(1),
            },
            min_size: self.min_size,
            scale: self.scale,
            ..DecodeOptions::default()
        }
    }

    fn record(&self, p: u64) -> PathBuf {
        self.records.join(format!("block-{p:08}.rec"))
    }

    /// The blocks of task `t`: an even share, contiguous.
    fn blocks_of(&self, t: u64) -> std::ops::Range<u64> {
        let share = |t: u64| t * self.blocks / self.tasks;
        share(t)..share(t + 1)
    }

    fn missing(&self) -> Vec<u64> {
        (0..self.blocks)
            .filter(|&p| !self.record(p).is_file())
            .collect()
    }

    /// The tasks whose share of `blocks` (sorted) holds one of `missing`.
    fn tasks_with(&self, blocks: u64, missing: &[u64]) -> Vec<u64> {
        (0..self.tasks)
            .filter(|&t| {
                let share = |t: u64| t * blocks / self.tasks;
                (share(t)..share(t + 1)).any(|p| missing.binary_search(&p).is_ok())
            })
            .collect()
    }
}

fn list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Opens the image and the model of `--run`, creates the affinity array the prediction
/// tasks fill (one chunk per block) and returns it with the prediction plan.
fn prepare_prediction(
    a: &DecodeJobArgs,
    run: &Path,
    image: &Path,
    dir: &Path,
    base_name: &str,
) -> anyhow::Result<(Box<dyn em_core::ChunkedVolume>, PredictPlan)> {
    let target = VolumePath::parse(&a.affinities)?;
    if target.format != Format::Zarr {
        bail!(
            "{}: predicted affinities are written as zarr (DIR.zarr or DIR.zarr/array), which \
             many tasks can write at once",
            a.affinities.display()
        );
    }
    let cfg = em_train::TrainConfig::load(&run.join("config.toml").display().to_string(), &[])
        .with_context(|| format!("{} is not a training run", run.display()))?;
    // The weights must load into the config's model: fail here, not in every task.
    crate::infer::load_model::<em_models::Cpu>(
        &cfg,
        &run.join("model.safetensors"),
        &Default::default(),
    )?;
    let (in_ch, k) = cfg.model.channels();
    let img = em_io::open(image)?;
    let ish = img.shape().to_vec();
    let dims: Vec<u64> = match (ish.len(), in_ch) {
        (3, 1) => ish.clone(),
        (4, c) if ish[0] as usize == c => ish[1..].to_vec(),
        _ => bail!(
            "{}: shape {ish:?}; the model takes {in_ch} channel(s), (Z, Y, X) or (C, Z, Y, X)",
            image.display()
        ),
    };
    let window = cfg.inference_config().window;
    let context = a.context.unwrap_or([0, 1, 2].map(|i| window[i] as u64 / 2));
    let grid = em_core::BlockGrid::new(&dims, &a.block, &context)?;
    let mut shape = vec![k as u64];
    shape.extend(&dims);
    let mut chunk = vec![k as u64];
    chunk.extend(a.block.iter().zip(&dims).map(|(&b, &n)| b.min(n)));
    let aff = ZarrWriter::create(
        &target,
        &shape,
        em_core::DType::F32,
        &ZarrOptions {
            chunk_shape: Some(chunk),
            ..ZarrOptions::default()
        },
    )?
    .commit()?;
    let plan = PredictPlan {
        run: absolute(run.to_path_buf())?,
        image: absolute(image.to_path_buf())?,
        context,
        blocks: grid.num_blocks(),
        markers: dir.join("predicted"),
        script: dir.join(format!("{base_name}-predict.sbatch")),
        device: a.device.to_string(),
    };
    std::fs::create_dir_all(&plan.markers)
        .with_context(|| format!("creating {}", plan.markers.display()))?;
    for stale in std::fs::read_dir(&plan.markers)? {
        std::fs::remove_file(stale?.path())?;
    }
    Ok((Box::new(aff), plan))
}

/// The work directory must be new, empty, or the work directory of an earlier distributed
/// decode (it holds plan.json): its block records and markers are cleared, so it may hold
/// nothing of the user's.
fn check_work_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() || dir.join("plan.json").is_file() {
        return Ok(());
    }
    anyhow::ensure!(
        dir.is_dir(),
        "--dir {} is a file; give a work directory",
        dir.display()
    );
    let visible: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    anyhow::ensure!(
        visible.is_empty(),
        "--dir {} holds files that are not a distributed decode's ({}); give a new or empty \
         work directory (nothing is deleted)",
        dir.display(),
        visible[..visible.len().min(5)].join(", ")
    );
    Ok(())
}

/// Bytes one task holds: a block of affinities with its halo and its labels, twice over.
fn block_memory(a: &DecodeJobArgs, channels: u64) -> Option<u64> {
    let scale = a.labels.scale.unwrap_or([1, 1, 1]).map(|f| f as u64);
    let per_voxel = channels.checked_mul(4)?.checked_add(16)?;
    let block = guard::bytes_of(&a.block, per_voxel)?;
    let labels = guard::bytes_of(&a.block, 8)?.checked_mul(scale.iter().product())?;
    block.checked_add(labels)?.checked_mul(2)
}

fn decode(a: &DecodeJobArgs) -> anyhow::Result<()> {
    let out = VolumePath::parse(&a.out)?;
    if out.format != Format::Zarr {
        bail!(
            "{}: distributed decoding writes zarr (DIR.zarr or DIR.zarr/array), which many \
             tasks can write at once",
            a.out.display()
        );
    }
    if a.tasks == 0 {
        bail!("--tasks 0; at least 1");
    }
    // Before anything is written: the outputs may not touch the inputs, the work directory
    // is ours, a block fits in a task's memory.
    let (run_config, run_weights) = match &a.run {
        Some(r) => (
            Some(r.join("config.toml")),
            Some(r.join("model.safetensors")),
        ),
        None => (None, None),
    };
    let mut inputs: Vec<&Path> = Vec::new();
    let mut outputs: Vec<&Path> = vec![&a.out];
    match &a.image {
        Some(image) => {
            inputs.push(image);
            inputs.extend(run_config.as_deref());
            inputs.extend(run_weights.as_deref());
            outputs.push(&a.affinities);
        }
        None => inputs.push(&a.affinities),
    }
    guard::outputs(&outputs, &inputs, a.overwrite)?;
    let work: Vec<&Path> = vec![&a.dir];
    let mut touched = inputs.clone();
    touched.extend(&outputs);
    guard::disjoint(&work, &touched)
        .context("--dir: the work directory holds block records that are rewritten")?;
    check_work_dir(&a.dir)?;
    // Predicted affinities do not exist yet: count the most channels a model predicts.
    let channels = match &a.image {
        None => guard::peek(&a.affinities)?
            .and_then(|(shape, _)| shape.first().copied())
            .unwrap_or(3),
        Some(_) => 6,
    };
    guard::memory(
        &format!("a block of {:?} voxels", a.block),
        block_memory(a, channels),
        "use a smaller --block",
    )?;
    let dir = absolute(a.dir.clone())?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut base = match &a.job {
        Some(p) => load_job(p, &a.set)?,
        None => JobConfig::from_toml("name = \"decode\"\ncommand = [\"em\"]", Path::new("-"))?
            .with_overrides(&a.set)?,
    };
    base.resubmit = None;
    base.slurm.array = None;
    base.slurm.dependency.clear();
    let (aff, predict) = match (&a.run, &a.image) {
        (Some(run), Some(image)) => {
            let (aff, p) = prepare_prediction(a, run, image, &dir, &base.name)?;
            (aff, Some(p))
        }
        _ => (em_io::open(&a.affinities)?, None),
    };
    let blocks = block_count(aff.as_ref(), a.block)?;
    let tasks = a.tasks.min(blocks);
    let scale = a.labels.scale.unwrap_or([1, 1, 1]);
    let dims = &aff.shape()[1..];
    let out_shape: Vec<u64> = dims.iter().zip(scale).map(|(&n, f)| n * f as u64).collect();
    let plan = DecodePlan {
        affinities: absolute(a.affinities.clone())?,
        out: absolute(a.out.clone())?,
        local: dir.join("local.zarr"),
        records: dir.join("blocks"),
        block: a.block,
        blocks,
        tasks,
        threshold: a.labels.threshold,
        storage: a.labels.storage,
        channels: a.labels.channels.clone(),
        min_size: a.labels.min_size,
        scale,
        label_u64: a.labels.label_type == LabelType::U64,
        retries: a.retries,
        task_script: dir.join(format!("{}-blocks.sbatch", base.name)),
        stitch_script: dir.join(format!("{}-stitch.sbatch", base.name)),
        predict,
    };
    // The working array of block-local labels, one chunk per block.
    let chunk: Vec<u64> = (0..3).map(|i| a.block[i] * scale[i] as u64).collect();
    let local = ZarrWriter::create(
        &VolumePath::parse(&plan.local)?,
        &out_shape,
        em_core::DType::U32,
        &ZarrOptions {
            chunk_shape: Some(chunk),
            ..ZarrOptions::default()
        },
    )?
    .commit()?;
    std::fs::create_dir_all(&plan.records)
        .with_context(|| format!("creating {}", plan.records.display()))?;
    for stale in std::fs::read_dir(&plan.records)? {
        std::fs::remove_file(stale?.path())?;
    }
    // Parameters Slurm would only reject minutes later fail here: block 0 is labelled now
    // (on the still empty affinities when they are predicted first; its record is then
    // dropped).
    let record = label_block(aff.as_ref(), &local, &plan.params(), a.block, 0)
        .with_context(|| format!("labelling the first block of {}", a.affinities.display()))?;
    if plan.predict.is_none() {
        em_io::write_atomic(&plan.record(0), &record.to_bytes())?;
    }
    let plan_path = dir.join("plan.json");
    em_io::write_atomic(&plan_path, serde_json::to_string_pretty(&plan)?.as_bytes())?;

    let plan_arg = plan_path.display().to_string();
    let array_job = |suffix: &str, command: &str, n: u64| {
        let mut job = base.clone();
        job.name = format!("{}-{suffix}", base.name);
        job.command = vec![
            "em".into(),
            "slurm".into(),
            command.into(),
            plan_arg.clone(),
            "--task".into(),
            "{task}".into(),
        ];
        job.slurm.array = Some(match a.max_running {
            Some(m) => format!("0-{}%{m}", n - 1),
            None => format!("0-{}", n - 1),
        });
        job.slurm.output = Some(dir.join("%x-%A_%a.out").display().to_string());
        job
    };
    let task_job = array_job("blocks", "decode-task", tasks);
    let mut stitch_job = base.clone();
    stitch_job.name = format!("{}-stitch", base.name);
    stitch_job.command = vec![
        "em".into(),
        "slurm".into(),
        "decode-stitch".into(),
        plan_arg.clone(),
    ];
    stitch_job.slurm.output = Some(dir.join("%x-%j.out").display().to_string());
    let mut scripts = vec![
        (task_job, plan.task_script.clone()),
        (stitch_job, plan.stitch_script.clone()),
    ];
    if let Some(p) = &plan.predict {
        scripts.push((
            array_job("predict", "predict-task", tasks),
            p.script.clone(),
        ));
    }
    for (job, path) in &scripts {
        let text = job.render(&render_options(&plan_path, Some(path.clone()))?)?;
        em_io::write_atomic(path, text.as_bytes())?;
    }
    if a.dry_run {
        println!(
            "{}",
            json!({"plan": plan_path, "blocks": blocks, "tasks": tasks,
                   "task_script": plan.task_script, "stitch_script": plan.stitch_script,
                   "predict_script": plan.predict.as_ref().map(|p| &p.script)})
        );
        return Ok(());
    }
    let mut entries = Vec::new();
    let mut after = Vec::new();
    if let Some(p) = &plan.predict {
        let id = em_slurm::submit(&p.script, &[])?;
        after.push(format!("--dependency=afterany:{id}"));
        entries.push((scripts[2].0.name.clone(), id, p.script.clone()));
    }
    let tasks_id = em_slurm::submit(&plan.task_script, &after)?;
    let stitch_id = em_slurm::submit(
        &plan.stitch_script,
        &[format!("--dependency=afterany:{tasks_id}")],
    )?;
    entries.push((
        scripts[0].0.name.clone(),
        tasks_id.clone(),
        plan.task_script.clone(),
    ));
    entries.push((
        scripts[1].0.name.clone(),
        stitch_id.clone(),
        plan.stitch_script.clone(),
    ));
    let manifest = Manifest {
        jobs: entries
            .into_iter()
            .map(|(name, job_id, script)| ManifestEntry {
                name,
                job_id,
                script,
                parameters: BTreeMap::new(),
            })
            .collect(),
    };
    manifest.save(&dir.join("manifest.json"))?;
    println!(
        "{}",
        json!({"plan": plan_path, "blocks": blocks, "tasks": tasks,
               "predict_job": manifest.jobs.first().filter(|_| plan.predict.is_some()).map(|e| &e.job_id),
               "tasks_job": tasks_id, "stitch_job": stitch_id,
               "manifest": dir.join("manifest.json")})
    );
    Ok(())
}

/// Predicts the blocks of task `task` (raster order of the prediction grid) and writes
/// their cores into the affinity array; a marker file per block records it as done.
fn predict_task(plan_path: &Path, task: u64) -> anyhow::Result<()> {
    let plan = DecodePlan::load(plan_path)?;
    let Some(pp) = &plan.predict else {
        bail!("{} has no prediction stage", plan_path.display());
    };
    if task >= plan.tasks {
        bail!("task {task}; the plan has tasks 0..{}", plan.tasks);
    }
    let cfg = em_train::TrainConfig::load(&pp.run.join("config.toml").display().to_string(), &[])?;
    let choice: em_train::DeviceChoice = pp.device.parse()?;
    let (device, why) = em_train::resolve_device(choice, &em_autoconf::probe())?;
    eprintln!("device: {why}");
    let blocks = Blocks {
        plan: &plan,
        pp,
        cfg: &cfg,
        task,
    };
    let (done, skipped) = em_train::on_device(device, blocks)??;
    println!(
        "{}",
        json!({"task": task, "predicted": done, "already_done": skipped})
    );
    Ok(())
}

/// One prediction task's blocks.
struct Blocks<'a> {
    plan: &'a DecodePlan,
    pp: &'a PredictPlan,
    cfg: &'a em_train::TrainConfig,
    task: u64,
}

impl em_train::OnDevice for Blocks<'_> {
    type Output = anyhow::Result<(u64, u64)>;

    /// Predicts the task's blocks on `device`: `(predicted, already done)`.
    fn run<B: em_models::ConvBackend>(self, device: &B::Device) -> Self::Output {
        let Blocks {
            plan,
            pp,
            cfg,
            task,
        } = self;
        let model = crate::infer::load_model::<B>(cfg, &pp.run.join("model.safetensors"), device)?;
        let settings = cfg.inference_config();
        let mut predictor = em_models::model_predictor(&model, device);
        let image = em_io::open(&pp.image)?;
        let aff = em_io::open(&plan.affinities)?;
        let k = aff.shape()[0];
        let grid = em_core::BlockGrid::new(&aff.shape()[1..], &plan.block, &pp.context)?;
        let share = |t: u64| t * pp.blocks / plan.tasks;
        let (mut done, mut skipped) = (0, 0);
        for (i, b) in grid.iter().enumerate() {
            let i = i as u64;
            if !(share(task)..share(task + 1)).contains(&i) {
                continue;
            }
            if pp.marker(i).is_file() {
                skipped += 1;
                continue;
            }
            let region = match image.shape().len() {
                4 => b.with_halo.with_leading_axis(0, image.shape()[0]),
                _ => b.with_halo.clone(),
            };
            let input = em_core::InMemoryVolume::new(image.read_roi(&region)?, "block");
            let mut shape = vec![k as usize];
            shape.extend(b.with_halo.shape_usize());
            let out = em_core::InMemoryVolume::new(
                em_core::AnyArray::from(ndarray::ArrayD::<f32>::zeros(shape)),
                "prediction",
            );
            em_models::sliding_window(
                &input,
                &out,
                &settings,
                &mut predictor,
                &em_core::NoProgress,
            )
            .with_context(|| format!("predicting block {i} ({})", b.core))?;
            let values = out.read_roi(&b.core_in_halo().with_leading_axis(0, k))?;
            aff.write_roi(&b.core.with_leading_axis(0, k), &values)?;
            em_io::write_atomic(&pp.marker(i), b"")?;
            done += 1;
        }
        Ok((done, skipped))
    }
}

fn decode_task(plan_path: &Path, task: u64) -> anyhow::Result<()> {
    let plan = DecodePlan::load(plan_path)?;
    if task >= plan.tasks {
        bail!("task {task}; the plan has tasks 0..{}", plan.tasks);
    }
    if let Some(pp) = &plan.predict {
        let missing = pp.missing();
        if !missing.is_empty() {
            bail!(
                "{} of {} blocks are not predicted yet (their prediction task failed or did \
                 not run); the final job submits them again",
                missing.len(),
                pp.blocks
            );
        }
    }
    let aff = em_io::open(&plan.affinities)?;
    let local = em_io::open(&plan.local)?;
    let params = plan.params();
    let (mut done, mut skipped) = (0, 0);
    for p in plan.blocks_of(task) {
        let path = plan.record(p);
        if path.is_file() {
            skipped += 1;
            continue;
        }
        let r = label_block(aff.as_ref(), local.as_ref(), &params, plan.block, p)
            .with_context(|| format!("labelling block {p}"))?;
        em_io::write_atomic(&path, &r.to_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        done += 1;
    }
    println!(
        "{}",
        json!({"task": task, "labelled": done, "already_done": skipped})
    );
    Ok(())
}

fn decode_stitch(plan_path: &Path, no_resubmit: bool) -> anyhow::Result<()> {
    let plan = DecodePlan::load(plan_path)?;
    let missing = plan.missing();
    let unpredicted = plan
        .predict
        .as_ref()
        .map(PredictPlan::missing)
        .unwrap_or_default();
    if !missing.is_empty() || !unpredicted.is_empty() {
        let attempt: u32 = std::env::var("EM_ATTEMPT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let tasks = plan.tasks_with(plan.blocks, &missing);
        let predict_tasks = match &plan.predict {
            Some(pp) => plan.tasks_with(pp.blocks, &unpredicted),
            None => Vec::new(),
        };
        if no_resubmit || attempt >= plan.retries {
            let predicted = if unpredicted.is_empty() {
                String::new()
            } else {
                format!(
                    "{} blocks are not predicted (prediction tasks {}); ",
                    unpredicted.len(),
                    list(&predict_tasks)
                )
            };
            bail!(
                "{predicted}{} of {} blocks are not labelled (tasks {}) after {attempt} \
                 retries; see the task logs in {}, then rerun those tasks or `em slurm \
                 decode-stitch`",
                missing.len(),
                plan.blocks,
                list(&tasks),
                plan.records.parent().unwrap_or(Path::new(".")).display()
            );
        }
        let mut after = Vec::new();
        let mut predict_job = None;
        if let (Some(pp), false) = (&plan.predict, predict_tasks.is_empty()) {
            let id = em_slurm::submit(&pp.script, &[format!("--array={}", list(&predict_tasks))])?;
            after.push(format!("--dependency=afterany:{id}"));
            predict_job = Some(id);
        }
        let mut options = vec![format!("--array={}", list(&tasks))];
        options.extend(after);
        let again = em_slurm::submit(&plan.task_script, &options)?;
        let next = em_slurm::submit(
            &plan.stitch_script,
            &[
                format!("--dependency=afterany:{again}"),
                format!("--export=ALL,EM_ATTEMPT={}", attempt + 1),
            ],
        )?;
        println!(
            "{}",
            json!({"missing_blocks": missing.len(), "unpredicted_blocks": unpredicted.len(),
                   "resubmitted_tasks": tasks, "resubmitted_predictions": predict_tasks,
                   "predict_job": predict_job, "tasks_job": again, "stitch_job": next,
                   "attempt": attempt + 1})
        );
        return Ok(());
    }
    let aff = em_io::open(&plan.affinities)?;
    let local = em_io::open(&plan.local)?;
    let out_path = VolumePath::parse(&plan.out)?;
    let dtype = if plan.label_u64 {
        em_core::DType::U64
    } else {
        em_core::DType::U32
    };
    let writer = ZarrWriter::create(
        &out_path,
        local.shape(),
        dtype,
        &ZarrOptions {
            chunk_shape: Some(local.chunk_shape().to_vec()),
            ..ZarrOptions::default()
        },
    )?;
    let bar = Bar::new();
    let mut params = plan.params();
    params.cc.threads = None;
    let summary = stitch_blocks(
        aff.as_ref(),
        local.as_ref(),
        writer.volume(),
        &params,
        plan.block,
        &mut |p| {
            let path = plan.record(p);
            let bytes =
                std::fs::read(&path).map_err(|e| em_decode::DecodeError::InvalidParameter {
                    name: "block record",
                    reason: format!("{}: {e}", path.display()),
                })?;
            BlockRecord::from_bytes(&bytes)
        },
        &bar,
    )?;
    writer.commit()?;
    println!(
        "{}",
        json!({"out": plan.out, "components": summary.components, "removed": summary.removed,
               "voxels": summary.voxels, "labelled_voxels": summary.labelled_voxels,
               "blocks": summary.blocks})
    );
    Ok(())
}
