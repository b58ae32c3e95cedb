//! Not yet built: this crate will hold slurm batch-script rendering, sweeps, auto-resubmit and array jobs for blockwise work.
//!
//! It is a placeholder so that the workspace layout matches ARCHITECTURE.md; see the
//! project issues for the plan.
