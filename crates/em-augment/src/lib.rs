//! Not yet built: this crate will hold eM-specific augmentations (misalignment, missing sections, blur, elastic, …), pipelines and TOML presets.
//!
//! It is a placeholder so that the workspace layout matches ARCHITECTURE.md; see the
//! project issues for the plan.
