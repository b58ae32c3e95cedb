//! Decoding a volume too large for one machine on a Slurm cluster: [`prepare_decode`]
//! writes the plan, the working arrays and three scripts (the block tasks, an optional
//! prediction stage before them, and the final stitch); [`submit_decode`] submits them with
//! dependencies; each array task runs [`decode_task`], the final job [`decode_stitch`],
//! which resubmits the tasks of missing blocks a few times before it gives up.
//!
//! Every step is a library call: a test (or a cluster without Slurm) runs the tasks and the
//! stitch one after another in-process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use em_core::{BlockGrid, ChunkedVolume, DType, Progress};
use em_decode::waterz::WaterzSummary;
use em_decode::{block_count, DecodeOptions, DecodeSummary, DistributedPlan, WaterzPlan};
use em_io::{Existing, Format, VolumePath, ZarrOptions, ZarrWriter};
use serde::{Deserialize, Serialize};

use crate::{JobConfig, Manifest, ManifestEntry, RenderOptions, Result, SlurmError};

/// What `em slurm decode` asks for.
#[derive(Clone, Debug)]
pub struct DecodeJobOptions {
    /// The affinities `(C, Z, Y, X)`; with a prediction stage, where the predicted ones are
    /// written (zarr).
    pub affinities: PathBuf,
    /// The segmentation (zarr, which many tasks can write at once).
    pub out: PathBuf,
    /// The work directory: plan, scripts, block records, logs.
    pub dir: PathBuf,
    /// Block shape on the affinity grid (also the output's chunk shape, times the scale).
    pub block: [u64; 3],
    /// Array tasks; each labels a contiguous run of blocks.
    pub tasks: u64,
    /// The decode's parameters.
    pub decode: DecodeOptions,
    /// Agglomerate with waterz instead (`out` then holds `{threshold}` when there are
    /// several thresholds).
    pub waterz: Option<WaterzPlan>,
    /// Write uint64 labels (else uint32).
    pub label_u64: bool,
    /// The job whose `[slurm]` resources the tasks and the final job use; its name
    /// prefixes theirs.
    pub job: JobConfig,
    /// Array tasks running at once at most (`--array=…%N`).
    pub max_running: Option<u64>,
    /// How often the final job resubmits tasks whose blocks are missing.
    pub retries: u32,
    /// Replace an existing output array (and predicted affinities).
    pub overwrite: bool,
    /// The program that commands starting with `em` run (default: `em` on PATH).
    pub em: Option<PathBuf>,
}

/// A prediction stage before the decode, as the caller that can load the model prepares
/// it: the model and image are checked, the affinities' shape known.
#[derive(Clone, Debug)]
pub struct PredictionInput {
    /// The training run (config.toml, model.safetensors).
    pub run: PathBuf,
    /// The image.
    pub image: PathBuf,
    /// Every file the prediction reads (the image, the run's config and weights).
    pub inputs: Vec<PathBuf>,
    /// Channels the model predicts.
    pub channels: u64,
    /// The image's `(Z, Y, X)`.
    pub dims: [u64; 3],
    /// Context read around each block.
    pub context: [u64; 3],
    /// The prediction tasks' device (`auto`, `cpu`, `cuda[:N]`, `wgpu`).
    pub device: String,
}

/// Block-by-block prediction before the decode (part of the plan).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictStage {
    /// The training run (config.toml, model.safetensors).
    pub run: PathBuf,
    /// The image.
    pub image: PathBuf,
    /// Context read around each block.
    pub context: [u64; 3],
    /// Blocks in raster order (the prediction grid).
    pub blocks: u64,
    /// One marker file per predicted block.
    pub markers: PathBuf,
    /// The prediction tasks' script.
    pub script: PathBuf,
    /// The prediction tasks' device.
    #[serde(default = "auto_device")]
    pub device: String,
}

fn auto_device() -> String {
    "auto".into()
}

impl PredictStage {
    /// The marker file of predicted block `i`.
    pub fn marker(&self, i: u64) -> PathBuf {
        self.markers.join(format!("block-{i:08}.done"))
    }

    /// The blocks not predicted yet, ascending.
    pub fn missing(&self) -> Vec<u64> {
        (0..self.blocks)
            .filter(|&i| !self.marker(i).is_file())
            .collect()
    }
}

/// What the tasks and the final job of a distributed decode share (`plan.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeJobPlan {
    /// The decode: volumes, blocks, tasks, records.
    pub decode: DistributedPlan,
    /// How often the final job resubmits tasks whose blocks are missing.
    pub retries: u32,
    /// The block tasks' script.
    pub task_script: PathBuf,
    /// The final job's script.
    pub stitch_script: PathBuf,
    /// The prediction stage, when affinities are predicted first.
    #[serde(default)]
    pub predict: Option<PredictStage>,
}

impl DecodeJobPlan {
    /// Reads `plan.json`.
    ///
    /// # Errors
    /// [`SlurmError::Io`] or [`SlurmError::Parse`] naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(SlurmError::io(path))?;
        serde_json::from_str(&text).map_err(|e| SlurmError::Parse {
            path: path.to_path_buf(),
            reason: format!("not a decode plan: {e}"),
        })
    }

    /// The work directory (where the records and logs are).
    pub fn work_dir(&self) -> &Path {
        self.decode.records.parent().unwrap_or(Path::new("."))
    }
}

/// What [`prepare_decode`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct PreparedDecode {
    /// `plan.json`.
    pub plan: PathBuf,
    /// Blocks of the decode.
    pub blocks: u64,
    /// Array tasks (at most one per block).
    pub tasks: u64,
    /// The block tasks' script.
    pub task_script: PathBuf,
    /// The final job's script.
    pub stitch_script: PathBuf,
    /// The prediction tasks' script, with a prediction stage.
    pub predict_script: Option<PathBuf>,
}

/// Checks everything Slurm would only reject minutes later, then writes the plan, the
/// working arrays and the scripts into the work directory. Nothing is submitted.
///
/// Before anything is written: outputs may not touch the inputs, the work directory is
/// new, empty or an earlier distributed decode's, and a block fits in a task's memory.
/// Block 0 is labelled here, so bad parameters fail now.
///
/// # Errors
/// Outputs that are not zarr or overlap the inputs, a foreign work directory, a block too
/// large for memory, bad decode parameters, I/O errors.
pub fn prepare_decode(
    opts: &DecodeJobOptions,
    predict: Option<&PredictionInput>,
) -> Result<PreparedDecode> {
    check_request(opts, predict)?;
    let dir = absolute(&opts.dir)?;
    std::fs::create_dir_all(&dir).map_err(SlurmError::io(&dir))?;
    let mut base = opts.job.clone();
    base.resubmit = None;
    base.slurm.array = None;
    base.slurm.dependency.clear();
    let (aff, stage) = match predict {
        Some(p) => {
            let (aff, stage) = prepare_prediction(opts, p, &dir, &base.name)?;
            (aff, Some(stage))
        }
        None => (em_io::open(&opts.affinities)?, None),
    };
    let blocks = block_count(aff.as_ref(), opts.block)?;
    let tasks = opts.tasks.min(blocks).max(1);
    let plan = DecodeJobPlan {
        decode: DistributedPlan {
            affinities: absolute(&opts.affinities)?,
            out: absolute(&opts.out)?,
            local: dir.join("local.zarr"),
            records: dir.join("blocks"),
            block: opts.block,
            blocks,
            tasks,
            options: opts.decode.clone(),
            label_u64: opts.label_u64,
            waterz: opts
                .waterz
                .clone()
                .map(|mut w| {
                    w.fragments = w.fragments.as_deref().map(absolute).transpose()?;
                    w.merge_history = w.merge_history.as_deref().map(absolute).transpose()?;
                    w.region_graph = w.region_graph.as_deref().map(absolute).transpose()?;
                    Ok::<_, SlurmError>(w)
                })
                .transpose()?,
        },
        retries: opts.retries,
        task_script: dir.join(format!("{}-blocks.sbatch", base.name)),
        stitch_script: dir.join(format!("{}-stitch.sbatch", base.name)),
        predict: stage,
    };
    let local = create_local(&plan.decode, &aff.shape()[1..])?;
    clear_dir(&plan.decode.records)?;
    // Parameters Slurm would only reject minutes later fail here: block 0 is labelled now
    // (on the still empty affinities when they are predicted first; its record is then
    // dropped).
    plan.decode
        .run_block(aff.as_ref(), &local, 0)
        .map_err(|e| {
            SlurmError::invalid(
                "decode",
                format!(
                    "labelling the first block of {}: {e}",
                    opts.affinities.display()
                ),
            )
        })?;
    if plan.predict.is_some() {
        let record = plan.decode.record_path(0);
        std::fs::remove_file(&record).map_err(SlurmError::io(&record))?;
    }
    let plan_path = dir.join("plan.json");
    let text = serde_json::to_string_pretty(&plan)
        .map_err(|e| SlurmError::invalid("decode plan", e.to_string()))?;
    em_io::write_atomic(&plan_path, text.as_bytes())?;
    write_scripts(opts, &plan, &plan_path, &base)?;
    Ok(PreparedDecode {
        plan: plan_path,
        blocks,
        tasks,
        task_script: plan.task_script.clone(),
        stitch_script: plan.stitch_script.clone(),
        predict_script: plan.predict.as_ref().map(|p| p.script.clone()),
    })
}

/// The checks before anything is written.
fn check_request(opts: &DecodeJobOptions, predict: Option<&PredictionInput>) -> Result<()> {
    let outs = outputs_of(opts)?;
    for out in &outs {
        if VolumePath::parse(out)?.format != Format::Zarr {
            return Err(SlurmError::invalid(
                "output",
                format!(
                    "{}: distributed decoding writes zarr (DIR.zarr or DIR.zarr/array), which \
                     many tasks can write at once",
                    out.display()
                ),
            ));
        }
    }
    if opts.tasks == 0 {
        return Err(SlurmError::invalid("tasks", "0; at least 1"));
    }
    let mut inputs: Vec<&Path> = Vec::new();
    let mut outputs: Vec<&Path> = outs.iter().map(PathBuf::as_path).collect();
    if let Some(w) = &opts.waterz {
        inputs.extend(w.fragments.as_deref());
        outputs.extend(w.merge_history.as_deref());
        outputs.extend(w.region_graph.as_deref());
    }
    match predict {
        Some(p) => {
            inputs.extend(p.inputs.iter().map(PathBuf::as_path));
            outputs.push(&opts.affinities);
        }
        None => inputs.push(&opts.affinities),
    }
    em_io::check_outputs(&outputs, &inputs, Existing::from_overwrite(opts.overwrite))?;
    let mut touched = inputs.clone();
    touched.extend(&outputs);
    em_io::check_disjoint(&[&opts.dir], &touched).map_err(|e| {
        SlurmError::invalid(
            "work directory",
            format!("it holds block records that are rewritten: {e}"),
        )
    })?;
    check_work_dir(&opts.dir)?;
    // Predicted affinities do not exist yet: their channels are known.
    let channels = match predict {
        None => em_io::peek(&opts.affinities)?
            .and_then(|(shape, _)| shape.first().copied())
            .unwrap_or(3),
        Some(p) => p.channels,
    };
    em_autoconf::ensure_memory(
        &format!("a block of {:?} voxels", opts.block),
        block_memory(opts, channels),
        "use a smaller --block",
    )?;
    Ok(())
}

/// The segmentations a decode writes: one, or one per waterz threshold.
fn outputs_of(opts: &DecodeJobOptions) -> Result<Vec<PathBuf>> {
    let Some(w) = &opts.waterz else {
        return Ok(vec![opts.out.clone()]);
    };
    Ok(em_decode::threshold_outputs(
        &opts.out,
        &w.options.thresholds,
    )?)
}

/// The work directory must be new, empty, or the work directory of an earlier distributed
/// decode (it holds plan.json): its block records and markers are cleared, so it may hold
/// nothing of the user's.
fn check_work_dir(dir: &Path) -> Result<()> {
    if !dir.exists() || dir.join("plan.json").is_file() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(SlurmError::invalid(
            "work directory",
            format!("{} is a file; give a work directory", dir.display()),
        ));
    }
    let visible: Vec<String> = std::fs::read_dir(dir)
        .map_err(SlurmError::io(dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    if visible.is_empty() {
        return Ok(());
    }
    Err(SlurmError::invalid(
        "work directory",
        format!(
            "{} holds files that are not a distributed decode's ({}); give a new or empty \
             work directory (nothing is deleted)",
            dir.display(),
            visible[..visible.len().min(5)].join(", ")
        ),
    ))
}

/// Bytes one task holds: a block of affinities with its halo and its labels, twice over.
fn block_memory(opts: &DecodeJobOptions, channels: u64) -> Option<u64> {
    let bytes_of = |each: u64| em_autoconf::bytes_of(&opts.block, each);
    let per_voxel = channels.checked_mul(4)?.checked_add(16)?;
    let scale: u64 = opts.decode.scale.iter().map(|&f| f as u64).product();
    let labels = bytes_of(8)?.checked_mul(scale)?;
    bytes_of(per_voxel)?.checked_add(labels)?.checked_mul(2)
}

/// Creates the affinity array the prediction tasks fill (one chunk per block) and returns
/// it with the prediction stage; clears markers of an earlier run.
fn prepare_prediction(
    opts: &DecodeJobOptions,
    p: &PredictionInput,
    dir: &Path,
    base_name: &str,
) -> Result<(Box<dyn ChunkedVolume>, PredictStage)> {
    let target = VolumePath::parse(&opts.affinities)?;
    if target.format != Format::Zarr {
        return Err(SlurmError::invalid(
            "affinities",
            format!(
                "{}: predicted affinities are written as zarr (DIR.zarr or DIR.zarr/array), \
                 which many tasks can write at once",
                opts.affinities.display()
            ),
        ));
    }
    let grid = BlockGrid::new(&p.dims, &opts.block, &p.context)?;
    let mut shape = vec![p.channels];
    shape.extend(p.dims);
    let mut chunk = vec![p.channels];
    chunk.extend(opts.block.iter().zip(&p.dims).map(|(&b, &n)| b.min(n)));
    let aff = ZarrWriter::create(&target, &shape, DType::F32, &chunked(chunk))?.commit()?;
    let stage = PredictStage {
        run: absolute(&p.run)?,
        image: absolute(&p.image)?,
        context: p.context,
        blocks: grid.num_blocks(),
        markers: dir.join("predicted"),
        script: dir.join(format!("{base_name}-predict.sbatch")),
        device: p.device.clone(),
    };
    clear_dir(&stage.markers)?;
    Ok((Box::new(aff), stage))
}

fn chunked(chunk: Vec<u64>) -> ZarrOptions {
    ZarrOptions {
        chunk_shape: Some(chunk),
        ..ZarrOptions::default()
    }
}

/// The working array of block-local labels, one chunk per block.
fn create_local(plan: &DistributedPlan, dims: &[u64]) -> Result<em_io::ZarrVolume> {
    let scale = plan.options.scale;
    let shape: Vec<u64> = (0..3).map(|i| dims[i] * scale[i] as u64).collect();
    let chunk: Vec<u64> = (0..3).map(|i| plan.block[i] * scale[i] as u64).collect();
    Ok(ZarrWriter::create(
        &VolumePath::parse(&plan.local)?,
        &shape,
        DType::U32,
        &chunked(chunk),
    )?
    .commit()?)
}

/// Creates `dir` and removes what an earlier run left in it (records or markers).
fn clear_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(SlurmError::io(dir))?;
    for stale in std::fs::read_dir(dir).map_err(SlurmError::io(dir))? {
        let path = stale.map_err(SlurmError::io(dir))?.path();
        std::fs::remove_file(&path).map_err(SlurmError::io(&path))?;
    }
    Ok(())
}

/// Renders the array jobs (blocks, prediction) and the final job into their scripts.
fn write_scripts(
    opts: &DecodeJobOptions,
    plan: &DecodeJobPlan,
    plan_path: &Path,
    base: &JobConfig,
) -> Result<()> {
    let dir = plan_path.parent().unwrap_or(Path::new("."));
    let plan_arg = plan_path.display().to_string();
    let command = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let array_job = |suffix: &str, sub: &str| {
        let mut job = base.clone();
        job.name = format!("{}-{suffix}", base.name);
        job.command = command(&["em", "slurm", sub, &plan_arg, "--task", "{task}"]);
        let last = plan.decode.tasks - 1;
        job.slurm.array = Some(match opts.max_running {
            Some(m) => format!("0-{last}%{m}"),
            None => format!("0-{last}"),
        });
        job.slurm.output = Some(dir.join("%x-%A_%a.out").display().to_string());
        job
    };
    let mut stitch_job = base.clone();
    stitch_job.name = format!("{}-stitch", base.name);
    stitch_job.command = command(&["em", "slurm", "decode-stitch", &plan_arg]);
    stitch_job.slurm.output = Some(dir.join("%x-%j.out").display().to_string());
    let mut scripts = vec![
        (array_job("blocks", "decode-task"), &plan.task_script),
        (stitch_job, &plan.stitch_script),
    ];
    if let Some(p) = &plan.predict {
        scripts.push((array_job("predict", "predict-task"), &p.script));
    }
    for (job, path) in scripts {
        let text = job.render(&RenderOptions {
            em: opts.em.clone(),
            script_path: Some(path.clone()),
            source: Some(plan_path.to_path_buf()),
        })?;
        em_io::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}

/// What [`submit_decode`] submitted.
#[derive(Clone, Debug, Serialize)]
pub struct SubmittedDecode {
    /// The prediction array job, with a prediction stage.
    pub predict_job: Option<String>,
    /// The block array job.
    pub tasks_job: String,
    /// The final job.
    pub stitch_job: String,
    /// `manifest.json` listing the three.
    pub manifest: PathBuf,
}

/// Submits a prepared decode: the prediction tasks (if any), the block tasks after them,
/// the final job after those; writes `manifest.json` into the work directory.
///
/// # Errors
/// An unreadable plan; `sbatch` missing or refusing.
pub fn submit_decode(plan_path: &Path) -> Result<SubmittedDecode> {
    let plan = DecodeJobPlan::load(plan_path)?;
    let name = |script: &Path| {
        script
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let entry = |script: &Path, job_id: &str| ManifestEntry {
        name: name(script),
        job_id: job_id.to_string(),
        script: script.to_path_buf(),
        parameters: BTreeMap::new(),
    };
    let mut jobs = Vec::new();
    let mut after = Vec::new();
    let mut predict_job = None;
    if let Some(p) = &plan.predict {
        let id = crate::submit(&p.script, &[])?;
        after.push(format!("--dependency=afterany:{id}"));
        jobs.push(entry(&p.script, &id));
        predict_job = Some(id);
    }
    let tasks_job = crate::submit(&plan.task_script, &after)?;
    let stitch_job = crate::submit(
        &plan.stitch_script,
        &[format!("--dependency=afterany:{tasks_job}")],
    )?;
    jobs.push(entry(&plan.task_script, &tasks_job));
    jobs.push(entry(&plan.stitch_script, &stitch_job));
    let manifest = plan_path.with_file_name("manifest.json");
    Manifest { jobs }.save(&manifest)?;
    Ok(SubmittedDecode {
        predict_job,
        tasks_job,
        stitch_job,
        manifest,
    })
}

/// One block task: labels the blocks of `task` that have no record yet.
///
/// # Errors
/// A task outside the plan; blocks not predicted yet (their prediction task failed or
/// did not run); labelling and storage errors.
pub fn decode_task(plan_path: &Path, task: u64) -> Result<em_decode::TaskReport> {
    let plan = DecodeJobPlan::load(plan_path)?;
    plan.decode.check_task(task)?;
    if let Some(pp) = &plan.predict {
        let missing = pp.missing();
        if !missing.is_empty() {
            return Err(SlurmError::invalid(
                "affinities",
                format!(
                    "{} of {} blocks are not predicted yet (their prediction task failed or \
                     did not run); the final job submits them again",
                    missing.len(),
                    pp.blocks
                ),
            ));
        }
    }
    let aff = em_io::open(&plan.decode.affinities)?;
    let local = em_io::open(&plan.decode.local)?;
    Ok(plan.decode.run_task(aff.as_ref(), local.as_ref(), task)?)
}

/// What the final job did.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum StitchOutcome {
    /// Every block was there: waterz's segmentations are written.
    FinishedWaterz {
        /// One segmentation per threshold.
        outputs: Vec<PathBuf>,
        /// What the agglomeration did.
        summary: WaterzSummary,
    },
    /// Every block was there: the segmentation is written.
    Finished {
        /// The segmentation.
        out: PathBuf,
        /// What the decode produced.
        #[serde(flatten)]
        summary: DecodeSummary,
    },
    /// Blocks were missing: their tasks and another final job were submitted.
    Resubmitted {
        /// Blocks without a record.
        missing_blocks: usize,
        /// Blocks not predicted.
        unpredicted_blocks: usize,
        /// Block tasks submitted again.
        resubmitted_tasks: Vec<u64>,
        /// Prediction tasks submitted again.
        resubmitted_predictions: Vec<u64>,
        /// Their prediction job.
        predict_job: Option<String>,
        /// Their block job.
        tasks_job: String,
        /// The next final job.
        stitch_job: String,
        /// Which retry this is.
        attempt: u32,
    },
}

/// The final job: when every block has its record, joins them and writes the
/// segmentation; otherwise submits the tasks of the missing blocks (and of unpredicted
/// ones) with another final job after them, up to the plan's retries (`attempt` counts
/// them; Slurm passes it on in `EM_ATTEMPT`).
///
/// # Errors
/// Blocks missing after the last retry, or with `no_resubmit` (naming the tasks and the
/// logs); submission, stitching and storage errors.
pub fn decode_stitch(
    plan_path: &Path,
    no_resubmit: bool,
    attempt: u32,
    progress: &dyn Progress,
) -> Result<StitchOutcome> {
    let plan = DecodeJobPlan::load(plan_path)?;
    let missing = plan.decode.missing();
    let unpredicted = plan
        .predict
        .as_ref()
        .map(PredictStage::missing)
        .unwrap_or_default();
    if !missing.is_empty() || !unpredicted.is_empty() {
        return resubmit(&plan, &missing, &unpredicted, no_resubmit, attempt);
    }
    let d = &plan.decode;
    if d.waterz.is_some() {
        return stitch_waterz(d, progress);
    }
    let aff = em_io::open(&d.affinities)?;
    let local = em_io::open(&d.local)?;
    let dtype = if d.label_u64 { DType::U64 } else { DType::U32 };
    let writer = ZarrWriter::create(
        &VolumePath::parse(&d.out)?,
        local.shape(),
        dtype,
        &chunked(local.chunk_shape().to_vec()),
    )?;
    let mut stitching = d.clone();
    stitching.options.cc.threads = None;
    let summary = stitching.stitch(aff.as_ref(), local.as_ref(), writer.volume(), progress)?;
    writer.commit()?;
    Ok(StitchOutcome::Finished {
        out: d.out.clone(),
        summary,
    })
}

/// The waterz stitch: one agglomeration, one zarr per threshold, the JSON side outputs.
fn stitch_waterz(d: &DistributedPlan, progress: &dyn Progress) -> Result<StitchOutcome> {
    let w = d.waterz.as_ref().expect("a waterz plan");
    let local = em_io::open(&d.local)?;
    let mut outputs = em_decode::WaterzOutputs::default();
    let mut stitching = d.clone();
    if let Some(sw) = &mut stitching.waterz {
        sw.options.threads = None;
        sw.options.region_graph = sw.region_graph.is_some();
    }
    let (shape, chunk) = (local.shape(), local.chunk_shape());
    let summary = stitching.stitch_waterz(local.as_ref(), progress, |t| {
        outputs.add_blockwise(&t, &d.out, shape, chunk, d.label_u64)
    })?;
    outputs.write_json(w.merge_history.as_deref(), w.region_graph.as_deref())?;
    let outputs = outputs.written;
    Ok(StitchOutcome::FinishedWaterz { outputs, summary })
}

fn list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Submits the tasks of missing blocks again, or fails when the retries are spent.
fn resubmit(
    plan: &DecodeJobPlan,
    missing: &[u64],
    unpredicted: &[u64],
    no_resubmit: bool,
    attempt: u32,
) -> Result<StitchOutcome> {
    let tasks = plan.decode.tasks_with(missing);
    let predict_tasks = match &plan.predict {
        Some(pp) => em_decode::tasks_with(pp.blocks, plan.decode.tasks, unpredicted),
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
        return Err(SlurmError::invalid(
            "decode",
            format!(
                "{predicted}{} of {} blocks are not labelled (tasks {}) after {attempt} \
                 retries; see the task logs in {}, then rerun those tasks or `em slurm \
                 decode-stitch`",
                missing.len(),
                plan.decode.blocks,
                list(&tasks),
                plan.work_dir().display()
            ),
        ));
    }
    let mut after = Vec::new();
    let mut predict_job = None;
    if let (Some(pp), false) = (&plan.predict, predict_tasks.is_empty()) {
        let id = crate::submit(&pp.script, &[format!("--array={}", list(&predict_tasks))])?;
        after.push(format!("--dependency=afterany:{id}"));
        predict_job = Some(id);
    }
    let mut options = vec![format!("--array={}", list(&tasks))];
    options.extend(after);
    let tasks_job = crate::submit(&plan.task_script, &options)?;
    let stitch_job = crate::submit(
        &plan.stitch_script,
        &[
            format!("--dependency=afterany:{tasks_job}"),
            format!("--export=ALL,EM_ATTEMPT={}", attempt + 1),
        ],
    )?;
    Ok(StitchOutcome::Resubmitted {
        missing_blocks: missing.len(),
        unpredicted_blocks: unpredicted.len(),
        resubmitted_tasks: tasks,
        resubmitted_predictions: predict_tasks,
        predict_job,
        tasks_job,
        stitch_job,
        attempt: attempt + 1,
    })
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(SlurmError::io(p))
}
