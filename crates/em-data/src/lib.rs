//! Not yet built: this crate will hold training targets (affinities, masks, boundaries, SDT), patch datasets, `WeightedConcatDataset` and loaders.
//!
//! It is a placeholder so that the workspace layout matches ARCHITECTURE.md; see the
//! project issues for the plan.
