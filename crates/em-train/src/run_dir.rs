//! A training run's directory: it belongs to one run (a second start needs resuming or
//! overwriting), one process at a time works in it (a lock that the system releases when the
//! process ends, however it ends), and it remembers the command that started the run, so
//! that resuming trains the same configuration to the same step.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// What a start does with a directory that already holds a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run: the directory must be new or empty.
    New,
    /// Continue the run in the directory (its overrides are kept).
    Resume,
    /// Start again: the run's own files (checkpoints, logs, weights) are deleted first;
    /// anything else in the directory makes it refuse.
    Overwrite,
}

/// The command that started a run (`run.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The config as given: a path or a preset name.
    pub config: String,
    /// The `KEY=VALUE` overrides, in order.
    pub overrides: Vec<String>,
}

/// Files and directories a run writes: what [`Start::Overwrite`] deletes, and all that may
/// be in a run directory.
pub const RUN_FILES: &[&str] = &[
    "config.toml",
    "run.json",
    "metrics.jsonl",
    "metrics.csv",
    "validation.csv",
    "loss.png",
    "validation.png",
    "model.safetensors",
    "checkpoints",
];

const LOCK: &str = ".lock";

/// An open run directory, locked for this process while the value lives.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    record: RunRecord,
    _lock: File,
}

/// Takes the directory's lock without waiting, or says who holds it.
fn lock(path: &Path) -> Result<File> {
    let lock_path = path.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| TrainError::Run(format!("{}: {e}", lock_path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(TrainError::Run(format!(
                "{} is in use by another `em train` ({}); wait for it to finish or choose \
                 another --out",
                path.display(),
                match holder.trim() {
                    "" => "process unknown".to_string(),
                    h => h.to_string(),
                }
            )));
        }
    }
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "pid {} on {}", std::process::id(), host.trim());
    let _ = file.flush();
    Ok(file)
}

/// The step of the newest checkpoint, for messages.
fn newest_step(path: &Path) -> Option<String> {
    let dir = path.join("checkpoints");
    let newest = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("step-")?
                .parse::<u64>()
                .ok()
        })
        .max()?;
    Some(format!("its newest checkpoint is at step {newest}"))
}

impl RunDir {
    /// Opens (creating it if needed) the run directory `path` for a run of `config` with
    /// `overrides`, as `start` says, and locks it.
    ///
    /// # Errors
    /// [`TrainError::Run`] when another process holds the directory, when it holds a run
    /// and `start` is [`Start::New`], when it holds files that are not a run's, or for I/O
    /// errors.
    pub fn open(path: &Path, start: Start, config: &str, overrides: &[String]) -> Result<Self> {
        let io = |e: std::io::Error| TrainError::Run(format!("{}: {e}", path.display()));
        if path.exists() && !path.is_dir() {
            return Err(TrainError::Run(format!(
                "{} is a file, not a run directory; choose another --out",
                path.display()
            )));
        }
        fs::create_dir_all(path)
            .map_err(|e| TrainError::Run(format!("creating {}: {e}", path.display())))?;
        let lock = lock(path)?;
        let mut ours = Vec::new();
        let mut foreign = Vec::new();
        for entry in fs::read_dir(path).map_err(io)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // the lock and staged files of our own writes
            }
            if RUN_FILES.contains(&name.as_str()) {
                ours.push(name);
            } else {
                foreign.push(name);
            }
        }
        foreign.sort();
        if !foreign.is_empty() && (start != Start::Resume || ours.is_empty()) {
            return Err(TrainError::Run(format!(
                "{} holds files that are not a training run's ({}{}); choose a new or empty \
                 --out (nothing is deleted)",
                path.display(),
                foreign[..foreign.len().min(5)].join(", "),
                if foreign.len() > 5 { ", …" } else { "" }
            )));
        }
        // A start that failed before its first step leaves only config.toml and run.json:
        // nothing worth keeping, so a new start may replace them.
        let trained = ours.iter().any(|n| {
            matches!(n.as_str(), "checkpoints" | "model.safetensors")
                || (n == "metrics.jsonl" && fs::metadata(path.join(n)).is_ok_and(|m| m.len() > 0))
        });
        let record_path = path.join("run.json");
        let record = match start {
            Start::New if trained => {
                return Err(TrainError::Run(format!(
                    "{} already holds a training run{}; continue it with --resume, or start \
                     again with --overwrite (which deletes its checkpoints, logs and weights)",
                    path.display(),
                    newest_step(path).map_or(String::new(), |s| format!(" ({s})"))
                )));
            }
            Start::Resume => RunRecord {
                config: config.to_string(),
                overrides: Self::overrides_for(path, start, overrides)?,
            },
            Start::New | Start::Overwrite => {
                for name in &ours {
                    let p = path.join(name);
                    if p.is_dir() {
                        fs::remove_dir_all(&p).map_err(io)?;
                    } else {
                        fs::remove_file(&p).map_err(io)?;
                    }
                }
                RunRecord {
                    config: config.to_string(),
                    overrides: overrides.to_vec(),
                }
            }
        };
        if start != Start::Resume || !record_path.exists() {
            let text = serde_json::to_string_pretty(&record)
                .map_err(|e| TrainError::Run(e.to_string()))?;
            em_io::write_atomic(&record_path, text.as_bytes())
                .map_err(|e| TrainError::Run(e.to_string()))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            record,
            _lock: lock,
        })
    }

    /// The record of the run in `path`, if it has one (read without locking).
    ///
    /// # Errors
    /// [`TrainError::Run`] for an unreadable record.
    pub fn stored(path: &Path) -> Result<Option<RunRecord>> {
        let record_path = path.join("run.json");
        match fs::read_to_string(&record_path) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| TrainError::Run(format!("{}: {e}", record_path.display()))),
            Err(_) => Ok(None),
        }
    }

    /// The overrides a start of the run in `path` trains with: for [`Start::Resume`] those
    /// it was started with, then `given` (which win where they differ); otherwise `given`.
    ///
    /// # Errors
    /// [`TrainError::Run`] for an unreadable record.
    pub fn overrides_for(path: &Path, start: Start, given: &[String]) -> Result<Vec<String>> {
        let mut all = match (start, Self::stored(path)?) {
            (Start::Resume, Some(record)) => record.overrides,
            _ => Vec::new(),
        };
        all.extend(given.iter().cloned());
        Ok(all)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The overrides this run trains with: those it was started with, then any given on
    /// resuming.
    pub fn overrides(&self) -> &[String] {
        &self.record.overrides
    }

    /// The command that continues this run where it stopped (`em train CONFIG --out DIR
    /// --resume --set …`), shell-quoted.
    pub fn resume_command(&self) -> String {
        let mut parts = vec![
            "em".to_string(),
            "train".into(),
            em_slurm::shell_quote(&self.record.config),
            "--out".into(),
            em_slurm::shell_quote(&self.path.display().to_string()),
            "--resume".into(),
        ];
        for o in &self.record.overrides {
            parts.push("--set".into());
            parts.push(em_slurm::shell_quote(o));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(dir: &Path, how: Start, overrides: &[&str]) -> Result<RunDir> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        RunDir::open(dir, how, "lucchi_cpu", &o)
    }

    #[test]
    fn a_run_directory_belongs_to_one_run() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let run = start(&out, Start::New, &["steps=10"]).unwrap();
        fs::write(out.join("metrics.jsonl"), "{}\n").unwrap();
        drop(run);
        let e = start(&out, Start::New, &[]).unwrap_err().to_string();
        assert!(e.contains("--resume") && e.contains("--overwrite"), "{e}");
        // Resuming keeps the first start's overrides, then adds new ones.
        let run = start(&out, Start::Resume, &["steps=20"]).unwrap();
        assert_eq!(run.overrides(), ["steps=10", "steps=20"]);
        assert!(run
            .resume_command()
            .ends_with("--resume --set steps=10 --set steps=20"));
        drop(run);
        // Overwriting deletes the run's files only.
        let run = start(&out, Start::Overwrite, &[]).unwrap();
        assert!(!out.join("metrics.jsonl").exists());
        assert_eq!(run.overrides(), [] as [String; 0]);
    }

    #[test]
    fn a_start_that_never_trained_may_be_started_again() {
        let tmp = tempfile::tempdir().unwrap();
        drop(start(tmp.path(), Start::New, &["steps=0"]).unwrap());
        fs::write(tmp.path().join("config.toml"), "steps = 0").unwrap();
        let run = start(tmp.path(), Start::New, &["steps=5"]).unwrap();
        assert_eq!(run.overrides(), ["steps=5"]);
        assert_eq!(
            RunDir::stored(tmp.path()).unwrap().unwrap().overrides,
            ["steps=5"]
        );
    }

    #[test]
    fn a_second_process_is_refused_while_the_first_holds_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let first = start(tmp.path(), Start::New, &[]).unwrap();
        // flock locks belong to open files: a second open in this process conflicts too.
        let e = start(tmp.path(), Start::Resume, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("in use by another"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        start(tmp.path(), Start::Resume, &[]).unwrap();
    }

    #[test]
    fn foreign_files_are_never_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("thesis.tex"), "x").unwrap();
        for how in [Start::New, Start::Overwrite] {
            let e = start(tmp.path(), how, &[]).unwrap_err().to_string();
            assert!(e.contains("thesis.tex"), "{e}");
        }
        assert!(tmp.path().join("thesis.tex").exists());
    }

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(
            em_slurm::shell_quote("optimizer.lr=2e-3"),
            "optimizer.lr=2e-3"
        );
        assert_eq!(
            em_slurm::shell_quote("name=it's here"),
            r"'name=it'\''s here'"
        );
    }
}
