//! Not yet built: this crate will hold the trainer: typed TOML config, training loop, checkpoints, validation, logs and plots.
//!
//! It is a placeholder so that the workspace layout matches ARCHITECTURE.md; see the
//! project issues for the plan.
