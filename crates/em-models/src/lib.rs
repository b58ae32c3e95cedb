//! Not yet built: this crate will hold medNeXt (S/B/M/L) and a baseline U-Net on burn, losses, sliding-window inference and PyTorch weight import.
//!
//! It is a placeholder so that the workspace layout matches ARCHITECTURE.md; see the
//! project issues for the plan.
