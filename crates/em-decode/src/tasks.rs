//! The plan of a decode split across processes: which blocks each task labels, where the
//! finished blocks' records go, and the tasks themselves. Any scheduler (Slurm array jobs,
//! a shell loop, one machine after another) runs [`DistributedPlan::run_task`] for every
//! task and [`DistributedPlan::stitch`] once at the end; a task that ran before skips the
//! blocks whose records exist, so failed tasks can simply run again.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use em_core::{ChunkedVolume, Progress};
use serde::{Deserialize, Serialize};

use crate::distributed::{label_block, stitch_blocks, BlockJob};
use crate::waterz::{BlockwiseThreshold, WaterzBlock, WaterzOptions, WaterzSummary};
use crate::{BlockRecord, DecodeError, DecodeOptions, DecodeSummary, Result};

/// What the tasks and the final stitch of a distributed decode share; saved as JSON next to
/// the records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedPlan {
    /// The affinities, `(C, Z, Y, X)`.
    pub affinities: PathBuf,
    /// The final labels.
    pub out: PathBuf,
    /// The block-local labels (uint32, one chunk per block).
    pub local: PathBuf,
    /// The directory of block records, one file per finished block.
    pub records: PathBuf,
    /// The block shape on the affinity grid.
    pub block: [u64; 3],
    /// Blocks in processing order: positions `0..blocks`.
    pub blocks: u64,
    /// Tasks that share the blocks; each takes a contiguous, even share.
    pub tasks: u64,
    /// The decode's parameters (each task labels on one thread).
    pub options: DecodeOptions,
    /// The final labels are uint64 (else uint32).
    pub label_u64: bool,
    /// Agglomerate with waterz instead of connected components (`out` then holds
    /// `{threshold}` when there are several thresholds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waterz: Option<WaterzPlan>,
}

/// The waterz part of a distributed decode.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaterzPlan {
    /// The agglomeration's options.
    pub options: WaterzOptions,
    /// Voxels of context around each block for its watershed.
    pub halo: u64,
    /// Fragments to start from instead of the watershed.
    pub fragments: Option<PathBuf>,
    /// Where the final job writes each threshold's merges (JSON).
    pub merge_history: Option<PathBuf>,
    /// Where the final job writes the region graph after each threshold (JSON).
    pub region_graph: Option<PathBuf>,
}

/// What one task did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskReport {
    /// The task.
    pub task: u64,
    /// Blocks it labelled now.
    pub done: u64,
    /// Blocks an earlier run of it had finished.
    pub already_done: u64,
}

/// The even, contiguous share of `items` that task `task` of `tasks` takes.
pub fn task_share(items: u64, tasks: u64, task: u64) -> Range<u64> {
    let at = |t: u64| {
        if tasks == 0 {
            0
        } else {
            (u128::from(t) * u128::from(items) / u128::from(tasks)) as u64
        }
    };
    at(task)..at(task + 1)
}

/// The tasks (of `tasks` sharing `items`) whose share holds one of `missing` (sorted).
pub fn tasks_with(items: u64, tasks: u64, missing: &[u64]) -> Vec<u64> {
    (0..tasks)
        .filter(|&t| task_share(items, tasks, t).any(|p| missing.binary_search(&p).is_ok()))
        .collect()
}

impl DistributedPlan {
    /// Reads a plan saved with [`DistributedPlan::to_json`] (or embedded in a larger JSON
    /// document: see [`serde_json::from_value`]).
    ///
    /// # Errors
    /// [`DecodeError::Io`] or [`DecodeError::InvalidParameter`] naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        serde_json::from_str(&text).map_err(|e| DecodeError::InvalidParameter {
            name: "decode plan",
            reason: format!("{} is not a decode plan: {e}", path.display()),
        })
    }

    /// The plan as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The record file of block `p`.
    pub fn record_path(&self, p: u64) -> PathBuf {
        self.records.join(format!("block-{p:08}.rec"))
    }

    /// The blocks of task `task`.
    pub fn blocks_of(&self, task: u64) -> Range<u64> {
        task_share(self.blocks, self.tasks, task)
    }

    /// The blocks without a record yet, ascending.
    pub fn missing(&self) -> Vec<u64> {
        (0..self.blocks)
            .filter(|&p| !self.record_path(p).is_file())
            .collect()
    }

    /// The tasks whose share holds one of `missing` (sorted).
    pub fn tasks_with(&self, missing: &[u64]) -> Vec<u64> {
        tasks_with(self.blocks, self.tasks, missing)
    }

    /// Checks that `task` is one of the plan's.
    ///
    /// # Errors
    /// [`DecodeError::InvalidParameter`] naming the range.
    pub fn check_task(&self, task: u64) -> Result<()> {
        if task < self.tasks {
            Ok(())
        } else {
            Err(DecodeError::InvalidParameter {
                name: "task",
                reason: format!("{task}; the plan has tasks 0..{}", self.tasks),
            })
        }
    }

    /// The options each task labels with: one thread, as many tasks run side by side.
    pub fn task_options(&self) -> DecodeOptions {
        let mut options = self.options.clone();
        options.cc.threads = Some(1);
        options
    }

    /// Saves a block's record where [`DistributedPlan::stitch`] finds it: whole or not at
    /// all, as tasks may be killed at any moment.
    ///
    /// # Errors
    /// [`DecodeError::Io`] naming the file.
    pub fn save_record(&self, record: &BlockRecord) -> Result<()> {
        write_whole(&self.record_path(record.position()), &record.to_bytes())
    }

    /// Labels block `p` (connected components or waterz, as planned): its local labels go
    /// into `local`, its record into the record directory.
    ///
    /// # Errors
    /// The errors of [`label_block`] or of the waterz block task; I/O errors.
    pub fn run_block(
        &self,
        affinities: &dyn ChunkedVolume,
        local: &dyn ChunkedVolume,
        p: u64,
    ) -> Result<()> {
        let Some(w) = &self.waterz else {
            let options = self.task_options();
            let job = BlockJob {
                affinities,
                local,
                options: &options,
                block_shape: self.block,
            };
            return self.save_record(&label_block(&job, p)?);
        };
        let fragments = w.fragments.as_deref().map(em_io_open).transpose()?;
        let mut options = w.options.clone();
        options.threads = Some(1);
        let record = crate::waterz::run_block(
            affinities,
            fragments.as_deref(),
            local,
            &options,
            self.block,
            w.halo,
            p,
        )?;
        write_whole(&self.record_path(p), &record.to_bytes())
    }

    /// Labels the blocks of task `task` that have no record yet, writing their local labels
    /// into `local` and their records into the plan's record directory.
    ///
    /// # Errors
    /// A task outside the plan; the errors of [`label_block`] (named with the block); I/O
    /// errors of the records.
    pub fn run_task(
        &self,
        affinities: &dyn ChunkedVolume,
        local: &dyn ChunkedVolume,
        task: u64,
    ) -> Result<TaskReport> {
        self.check_task(task)?;
        let mut report = TaskReport {
            task,
            ..TaskReport::default()
        };
        for p in self.blocks_of(task) {
            if self.record_path(p).is_file() {
                report.already_done += 1;
                continue;
            }
            self.run_block(affinities, local, p)
                .map_err(|e| DecodeError::InvalidParameter {
                    name: "block",
                    reason: format!("labelling block {p}: {e}"),
                })?;
            report.done += 1;
        }
        Ok(report)
    }

    /// Reads block `p`'s record.
    ///
    /// # Errors
    /// [`DecodeError::Io`] naming the file; a corrupt record.
    pub fn read_record(&self, p: u64) -> Result<BlockRecord> {
        let path = self.record_path(p);
        BlockRecord::from_bytes(&std::fs::read(&path).map_err(io_error(&path))?)
    }

    /// Joins every block's record and writes the final labels into `out` (the output's
    /// shape, uint32 or uint64): the labels of [`crate::decode`] voxel for voxel. Relabels
    /// with the threads of the plan's options (`None`: all cores).
    ///
    /// # Errors
    /// A missing or corrupt record; the errors of [`stitch_blocks`].
    pub fn stitch(
        &self,
        affinities: &dyn ChunkedVolume,
        local: &dyn ChunkedVolume,
        out: &dyn ChunkedVolume,
        progress: &dyn Progress,
    ) -> Result<DecodeSummary> {
        let job = BlockJob {
            affinities,
            local,
            options: &self.options,
            block_shape: self.block,
        };
        stitch_blocks(&job, out, &mut |p| self.read_record(p), progress)
    }
}

impl DistributedPlan {
    /// The waterz stitch: joins every block's record, agglomerates once and hands each
    /// threshold to `each` (which writes it, e.g. with [`BlockwiseThreshold::write`]).
    ///
    /// # Errors
    /// A plan without waterz; a missing or corrupt record; the agglomeration's errors.
    pub fn stitch_waterz(
        &self,
        local: &dyn ChunkedVolume,
        progress: &dyn Progress,
        each: impl FnMut(BlockwiseThreshold<'_>) -> Result<()> + Send,
    ) -> Result<WaterzSummary> {
        let w = self
            .waterz
            .as_ref()
            .ok_or_else(|| DecodeError::InvalidParameter {
                name: "decode plan",
                reason: "this plan decodes by connected components, not waterz".into(),
            })?;
        let mut records = Vec::with_capacity(self.blocks as usize);
        for p in 0..self.blocks {
            let path = self.record_path(p);
            let bytes = std::fs::read(&path).map_err(io_error(&path))?;
            records.push(WaterzBlock::from_bytes(&bytes).map_err(|e| {
                DecodeError::InvalidParameter {
                    name: "block record",
                    reason: format!("{}: {e}", path.display()),
                }
            })?);
        }
        crate::waterz::stitch_records(local, records, &w.options, self.block, progress, each)
    }
}

#[cfg(feature = "files")]
fn em_io_open(path: &Path) -> Result<Box<dyn ChunkedVolume>> {
    Ok(em_io::open(path)?)
}

#[cfg(not(feature = "files"))]
fn em_io_open(path: &Path) -> Result<Box<dyn ChunkedVolume>> {
    Err(DecodeError::InvalidParameter {
        name: "fragments",
        reason: format!(
            "{}: reading given fragments in a distributed decode needs em-decode's `files` \
             feature",
            path.display()
        ),
    })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DecodeError + '_ {
    move |source| DecodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file under a temporary name in its directory, then renames it into place.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io_error(path)(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once_in_order() {
        for items in 0..40 {
            for tasks in 1..12 {
                let all: Vec<u64> = (0..tasks)
                    .flat_map(|t| task_share(items, tasks, t))
                    .collect();
                assert_eq!(all, (0..items).collect::<Vec<_>>());
            }
        }
        assert_eq!(tasks_with(10, 3, &[0, 9]), vec![0, 2]);
        assert!(tasks_with(10, 3, &[]).is_empty());
    }
}
