//! What every command checks before it starts work: where its outputs go (em-io's rule:
//! never over an input, never over a group, existing outputs only with `--overwrite`), how
//! much memory it will need, and how many threads it may start.

use std::path::Path;

use em_io::Existing;

/// Refuses outputs that would overwrite, contain or sit inside an input (or each other),
/// replace a group or a foreign directory, or replace an existing output without
/// `--overwrite`.
pub(crate) fn outputs(outputs: &[&Path], inputs: &[&Path], overwrite: bool) -> anyhow::Result<()> {
    em_io::check_outputs(outputs, inputs, Existing::from_overwrite(overwrite))?;
    Ok(())
}

/// Refuses work whose memory estimate (`None`: beyond any machine) exceeds what this
/// process may use.
pub(crate) fn memory(what: &str, bytes: Option<u64>, hint: &str) -> anyhow::Result<()> {
    em_autoconf::ensure_memory(what, bytes, hint)?;
    Ok(())
}

/// Refuses a thread count of 0 or one far beyond the machine.
pub(crate) fn threads(threads: Option<usize>) -> anyhow::Result<()> {
    em_decode::check_threads(threads).map_err(|e| anyhow::anyhow!("--threads: {e}"))
}

/// Shape and element size of a volume from its header or metadata alone (`None` for
/// TIFF, whose pages must be decoded to know).
pub(crate) fn peek(path: &Path) -> anyhow::Result<Option<(Vec<u64>, u64)>> {
    Ok(em_io::peek(path)?.map(|(shape, dtype)| (shape, dtype.size_bytes() as u64)))
}
