//! Talking to Slurm: sbatch, squeue, scontrol and scancel, with errors that say what went
//! wrong; and the manifest of submitted jobs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::{Result, SlurmError};

/// Runs a Slurm command and returns its stdout.
fn run(program: &str, args: &[String]) -> Result<String> {
    let line = std::iter::once(program.to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SlurmError::Missing {
                command: program.to_string(),
            }
        } else {
            SlurmError::Refused {
                command: line.clone(),
                status: "not started".into(),
                stderr: e.to_string(),
            }
        }
    })?;
    if !out.status.success() {
        return Err(SlurmError::Refused {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits `script` with `sbatch --parsable` and extra options (e.g.
/// `--dependency=afterok:12`, `--array=3,7`); returns the job id.
///
/// # Errors
/// [`SlurmError::Missing`] without sbatch, [`SlurmError::Refused`] with sbatch's message.
pub fn submit(script: &Path, options: &[String]) -> Result<String> {
    let mut args = vec!["--parsable".to_string()];
    args.extend(options.iter().cloned());
    args.push(script.display().to_string());
    let out = run("sbatch", &args)?;
    // `--parsable` prints "id" or "id;cluster".
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(SlurmError::Unexpected {
            command: format!("sbatch {}", args.join(" ")),
            output: out,
            expected: "a job id",
        });
    }
    Ok(id)
}

/// Cancels jobs (or array tasks such as `12_3`).
///
/// # Errors
/// As [`submit`].
pub fn cancel(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    run("scancel", ids).map(|_| ())
}

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Job id as asked (array tasks as `ID_TASK`).
    pub id: String,
    /// Slurm's state (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, …), or
    /// UNKNOWN once Slurm has forgotten a finished job and keeps no accounting.
    pub state: String,
    /// `exit:signal` for finished jobs, when known.
    pub exit_code: Option<String>,
    /// Why a pending job waits, or the node a running one runs on.
    pub reason: Option<String>,
}

impl JobStatus {
    /// Whether the job (or task) is done, whatever the outcome.
    pub fn finished(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "REQUEUED"
                | "RESIZING"
                | "SUSPENDED"
                | "STOPPED"
                | "SIGNALING"
                | "STAGE_OUT"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESV_DEL_HOLD"
        )
    }
}

/// The status of each job (or array task id `ID_TASK`; a plain array id stands for all its
/// tasks): from `squeue` while queued or running, else from `scontrol` (recently finished)
/// or `sacct` (where accounting is kept).
///
/// # Errors
/// [`SlurmError::Missing`] without squeue.
pub fn status(ids: &[String]) -> Result<Vec<JobStatus>> {
    let mut out = Vec::new();
    for id in ids {
        let q = run(
            "squeue",
            &[
                "-h".into(),
                "-r".into(),
                "-j".into(),
                id.clone(),
                "-o".into(),
                "%i|%T|%R".into(),
            ],
        );
        let queued: Vec<JobStatus> = match q {
            Ok(text) => text
                .lines()
                .filter_map(|l| {
                    let mut f = l.split('|');
                    Some(JobStatus {
                        id: f.next()?.trim().to_string(),
                        state: f.next()?.trim().to_string(),
                        exit_code: None,
                        reason: f.next().map(|r| r.trim().to_string()),
                    })
                })
                .collect(),
            Err(SlurmError::Missing { command }) => return Err(SlurmError::Missing { command }),
            // squeue refuses ids it no longer knows ("Invalid job id specified").
            Err(_) => Vec::new(),
        };
        if !queued.is_empty() {
            out.extend(queued);
            continue;
        }
        out.extend(finished_status(id));
    }
    Ok(out)
}

/// `scontrol show job -o` (one line per job or task), else `sacct`, else UNKNOWN.
fn finished_status(id: &str) -> Vec<JobStatus> {
    if let Ok(text) = run(
        "scontrol",
        &["show".into(), "job".into(), "-o".into(), id.to_string()],
    ) {
        let found: Vec<JobStatus> = text
            .lines()
            .filter_map(|line| {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(name).map(str::to_string))
                };
                let job = field("JobId=")?;
                let task = field("ArrayTaskId=");
                let array = field("ArrayJobId=");
                let shown = match (array, task) {
                    (Some(a), Some(t)) => format!("{a}_{t}"),
                    _ => job,
                };
                Some(JobStatus {
                    id: shown,
                    state: field("JobState=")?,
                    exit_code: field("ExitCode="),
                    reason: field("Reason=").filter(|r| r != "None"),
                })
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    if let Ok(text) = run(
        "sacct",
        &[
            "-n".into(),
            "-P".into(),
            "-X".into(),
            "-j".into(),
            id.to_string(),
            "-o".into(),
            "JobID,State,ExitCode".into(),
        ],
    ) {
        let found: Vec<JobStatus> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split('|');
                Some(JobStatus {
                    id: f.next()?.to_string(),
                    // "CANCELLED by 0" → CANCELLED.
                    state: f.next()?.split_whitespace().next()?.to_string(),
                    exit_code: f.next().map(str::to_string),
                    reason: None,
                })
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    vec![JobStatus {
        id: id.to_string(),
        state: "UNKNOWN".into(),
        exit_code: None,
        reason: Some("no longer known to Slurm (finished; no accounting kept)".into()),
    }]
}

/// One submitted job in a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Job name.
    pub name: String,
    /// Slurm job id.
    pub job_id: String,
    /// The script submitted.
    pub script: PathBuf,
    /// The swept values of this job (empty for a single job).
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, String>,
}

/// The jobs a `submit` or `sweep` submitted (`manifest.json` next to the scripts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The jobs, in submission order.
    pub jobs: Vec<ManifestEntry>,
}

impl Manifest {
    /// Reads a manifest; a missing file is an empty manifest.
    ///
    /// # Errors
    /// Unreadable or malformed files.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| SlurmError::Parse {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(SlurmError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// Writes the manifest atomically (a temporary file renamed into place).
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        write_atomic(path, text.as_bytes())
    }
}

/// Writes `bytes` to `path` whole or not at all (em-io's atomic write).
///
/// # Errors
/// I/O errors, naming the file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(SlurmError::io(d))?;
    }
    Ok(em_io::write_atomic(path, bytes)?)
}

/// Where and how [`submit_to_dir`] submits a job.
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions {
    /// The job config's file (named in the script, and never overwritten).
    pub source: PathBuf,
    /// The directory of the scripts and `manifest.json`.
    pub dir: PathBuf,
    /// Extra `sbatch` options.
    pub sbatch: Vec<String>,
    /// The swept values of this job (empty for a single job).
    pub parameters: std::collections::BTreeMap<String, String>,
    /// Write the script, submit nothing, record nothing.
    pub dry_run: bool,
    /// The program that commands starting with `em` run (default: `em` on PATH).
    pub em: Option<PathBuf>,
}

/// Writes `DIR/NAME.sbatch`, submits it (unless a dry run) and adds it to
/// `DIR/manifest.json`.
///
/// # Errors
/// A script path that is the job config itself, I/O errors, `sbatch` missing or refusing.
pub fn submit_to_dir(job: &crate::JobConfig, opts: &SubmitOptions) -> Result<ManifestEntry> {
    let dir = &opts.dir;
    std::fs::create_dir_all(dir).map_err(SlurmError::io(dir))?;
    let script = std::path::absolute(dir.join(format!("{}.sbatch", job.name)))
        .map_err(SlurmError::io(dir))?;
    // Scripts in the submit directory are this command's own, rewritten at each submit;
    // the job config is not.
    em_io::check_outputs(
        &[&script],
        &[&opts.source],
        em_io::Existing::from_overwrite(true),
    )?;
    let text = job.render(&crate::RenderOptions {
        em: opts.em.clone(),
        script_path: Some(script.clone()),
        source: Some(opts.source.clone()),
    })?;
    write_atomic(&script, text.as_bytes())?;
    let job_id = if opts.dry_run {
        String::new()
    } else {
        submit(&script, &opts.sbatch)?
    };
    let entry = ManifestEntry {
        name: job.name.clone(),
        job_id,
        script,
        parameters: opts.parameters.clone(),
    };
    if !opts.dry_run {
        let path = dir.join("manifest.json");
        let mut manifest = Manifest::load(&path)?;
        manifest.jobs.push(entry.clone());
        manifest.save(&path)?;
    }
    Ok(entry)
}

/// The job ids that `what` names — manifest files (their jobs) or job ids (`12`, `12_3`)
/// — with the job names the manifests give, by id.
///
/// # Errors
/// An empty or missing manifest, a word that is neither a manifest nor a job id.
pub fn job_ids(
    what: &[String],
) -> Result<(Vec<String>, std::collections::BTreeMap<String, String>)> {
    let mut ids = Vec::new();
    let mut names = std::collections::BTreeMap::new();
    for w in what {
        if w.ends_with(".json") || Path::new(w).is_file() {
            let m = Manifest::load(Path::new(w))?;
            if m.jobs.is_empty() {
                return Err(SlurmError::invalid(
                    "manifest",
                    format!("{w} lists no jobs (or does not exist)"),
                ));
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
            return Err(SlurmError::invalid(
                "job",
                format!("{w:?} is neither a manifest file nor a job id"),
            ));
        }
    }
    Ok((ids, names))
}
