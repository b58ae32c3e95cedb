//! Not yet built: this crate will hold affinity connected components with BANIS semantics, small-object removal and blockwise out-of-core decoding.
//!
//! It is a placeholder so that the workspace layout matches ARCHITECTURE.md; see the
//! project issues for the plan.
