//! Slurm for em-connectomics: sbatch scripts from typed job configs, training chains that
//! checkpoint and resubmit themselves near the time limit, sweeps, submission and status,
//! and distributed decoding as array jobs ([`prepare_decode`], [`decode_task`],
//! [`decode_stitch`]).
//!
//! ```
//! use em_slurm::{JobConfig, RenderOptions};
//!
//! let job = JobConfig::from_toml(
//!     r#"
//!     name = "lucchi"
//!     command = ["em", "train", "lucchi", "--out", "runs/{name}"]
//!     [slurm]
//!     time = "04:00:00"
//!     cpus = 8
//!     gpus = 1
//!     [resubmit]
//!     signal_seconds = 300
//!     "#,
//!     "job.toml".as_ref(),
//! )?;
//! let script = job.render(&RenderOptions::default())?;
//! assert!(script.contains("#SBATCH --gres=gpu:1"));
//! assert!(script.contains("#SBATCH --signal=B:USR1@300"));
//! // The next link of the chain runs after this job ends, and resumes.
//! assert!(script.contains("--dependency=afterany:\"$SLURM_JOB_ID\""));
//! assert!(script.contains("cmd+=(--resume)"));
//! # Ok::<(), em_slurm::SlurmError>(())
//! ```
//!
//! [`submit()`], [`status()`] and [`cancel()`] call `sbatch`, `squeue`/`scontrol`/`sacct` and
//! `scancel`; without them they fail with [`SlurmError::Missing`].

mod decode;
mod error;
mod job;
mod submit;
mod sweep;

pub use decode::{
    decode_stitch, decode_task, prepare_decode, submit_decode, DecodeJobOptions, DecodeJobPlan,
    PredictStage, PredictionInput, PreparedDecode, StitchOutcome, SubmittedDecode,
};
pub use error::{Result, SlurmError};
pub use job::{quote as shell_quote, JobConfig, RenderOptions, Resubmit, SlurmConfig};
pub use submit::{
    cancel, job_ids, status, submit, submit_to_dir, JobStatus, Manifest, ManifestEntry,
    SubmitOptions,
};
pub use sweep::{SweepConfig, SweepMode, SweepPoint};
