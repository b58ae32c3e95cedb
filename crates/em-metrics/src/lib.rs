//! Not yet built: this crate will hold segmentation metrics: VOI, adapted Rand, IoU/Dice, instance matching and skeleton ERL/NERL.
//!
//! It is a placeholder so that the workspace layout matches ARCHITECTURE.md; see the
//! project issues for the plan.
