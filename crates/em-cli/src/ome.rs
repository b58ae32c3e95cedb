//! `--ome` of the commands that write zarr (`em decode`, `em infer`, `em data synth`): the
//! command writes its usual arrays, then each becomes an OME-Zarr pyramid at the same path.

use std::path::{Path, PathBuf};

use em_io::ome::{make_ome_in_place, PyramidKind, PyramidOptions, PyramidSummary, VoxelSizeSource};
use em_io::Format;

use crate::progress::Bar;

/// The flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct OmeArgs {
    /// Write zarr outputs as OME-Zarr multiscale pyramids (OME-NGFF 0.5 on zarr v3, 0.4 on
    /// v2): arrays 0 (full resolution), 1, … in a group at the output path, images averaged,
    /// labels by mode. Open them in neuroglancer, napari or `em view`.
    #[arg(long)]
    pub(crate) ome: bool,
    /// Voxel size z,y,x in nm recorded with --ome (default: the input's metadata, else 1,1,1
    /// with a warning).
    #[arg(long, value_parser = crate::voxel_size_arg, value_name = "Z,Y,X", requires = "ome")]
    pub(crate) voxel_size: Option<em_core::VoxelSize>,
}

impl OmeArgs {
    /// Refuses, before any work, outputs that cannot become pyramids.
    pub(crate) fn check(&self, outputs: &[&Path]) -> anyhow::Result<()> {
        if !self.ome {
            return Ok(());
        }
        for out in outputs {
            let vp = em_io::VolumePath::parse(out)?;
            anyhow::ensure!(
                vp.format == Format::Zarr,
                "--ome writes OME-Zarr: {} is a {} path; give DIR.zarr[/name]",
                out.display(),
                vp.format.name()
            );
        }
        Ok(())
    }

    /// The pyramid options of these flags.
    pub(crate) fn options(&self, kind: PyramidKind) -> PyramidOptions {
        PyramidOptions {
            voxel_size: self.voxel_size.map(|v| v.zyx()),
            kind,
            ..Default::default()
        }
    }

    /// Turns each written zarr array into a pyramid in place. The voxel size is the flag's,
    /// else `input`'s metadata (the arrays were computed from it, voxel for voxel), else
    /// 1 nm with a warning.
    pub(crate) fn apply(
        &self,
        outputs: &[PathBuf],
        input: Option<&Path>,
        kind: PyramidKind,
    ) -> anyhow::Result<Vec<PyramidSummary>> {
        if !self.ome {
            return Ok(vec![]);
        }
        let mut options = self.options(kind);
        if options.voxel_size.is_none() {
            if let Some(input) = input {
                options.voxel_size = em_io::voxel_size(input).unwrap_or(None);
            }
        }
        let bar = Bar::new();
        let mut summaries = vec![];
        for out in outputs {
            let summary = make_ome_in_place(out, &options, &bar)?;
            if summary.voxel_size_source == VoxelSizeSource::Default {
                crate::warn_no_voxel_size(input.unwrap_or(out));
            }
            summaries.push(summary);
        }
        bar.0.finish_and_clear();
        Ok(summaries)
    }
}
