//! Progress reporting for long work, filled in by the CLI (e.g. with `indicatif`).

/// Receives progress of long-running library work. Libraries never print; the `em` CLI
/// implements this with a progress bar, tests and pipelines use [`NoProgress`].
pub trait Progress: Send + Sync {
    /// Work of `total` units (voxels, blocks, steps) named `what` begins.
    fn start(&self, what: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The work is finished.
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _what: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
}
