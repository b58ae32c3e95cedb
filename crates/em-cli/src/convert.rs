//! `em convert`.

/// Arguments of `em convert`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("em convert is not built yet")
}
