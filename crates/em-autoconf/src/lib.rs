//! Not yet built: this crate will hold hardware probe, training memory model and automatic run plans.
//!
//! It is a placeholder so that the workspace layout matches ARCHITECTURE.md; see the
//! project issues for the plan.
