//! `em pyramid`.

/// Arguments of `em pyramid`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("em pyramid is not built yet")
}
