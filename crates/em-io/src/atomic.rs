//! Atomic file and directory writes: data goes to a hidden staging path beside the target
//! and is renamed into place only once complete, so an interrupted or failed write never
//! leaves something that looks like a finished volume.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A staging path beside `target`: same directory (so the rename cannot cross file
/// systems), hidden, unique per process and call.
pub(crate) fn staging_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "volume".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.partial-{}-{n}", std::process::id()))
}

/// A file written under a staging name and renamed onto its target by [`AtomicFile::commit`];
/// dropped uncommitted, the staging file is removed.
pub(crate) struct AtomicFile {
    target: PathBuf,
    staging: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub(crate) fn create(target: &Path) -> Result<Self> {
        let staging = staging_path(target);
        let file = File::create(&staging).map_err(Error::io(target))?;
        Ok(Self {
            target: target.to_path_buf(),
            staging,
            writer: Some(BufWriter::new(file)),
        })
    }

    pub(crate) fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer
            .as_mut()
            .expect("writer is present until commit")
    }

    pub(crate) fn path(&self) -> &Path {
        &self.target
    }

    /// Flushes, syncs and renames onto the target.
    pub(crate) fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("commit runs once");
        let file = writer
            .into_inner()
            .map_err(|e| Error::io(&self.target)(e.into_error()))?;
        file.sync_all().map_err(Error::io(&self.target))?;
        drop(file);
        fs::rename(&self.staging, &self.target).map_err(Error::io(&self.target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.writer = None;
            let _ = fs::remove_file(&self.staging);
        }
    }
}

/// A directory built under a staging name and swapped onto its target on commit; removed
/// if dropped uncommitted.
pub(crate) struct AtomicDir {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl AtomicDir {
    pub(crate) fn create(target: &Path) -> Result<Self> {
        let staging = staging_path(target);
        fs::create_dir_all(&staging).map_err(Error::io(target))?;
        Ok(Self {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    pub(crate) fn staging(&self) -> &Path {
        &self.staging
    }

    /// Moves the staged directory onto the target, replacing an existing one. The old one is
    /// first renamed aside, so a reader sees either the old or the new complete volume (or,
    /// for an instant, none), never a mixture.
    pub(crate) fn commit(mut self) -> Result<()> {
        let aside = if self.target.exists() {
            let aside = staging_path(&self.target);
            fs::rename(&self.target, &aside).map_err(Error::io(&self.target))?;
            Some(aside)
        } else {
            None
        };
        fs::rename(&self.staging, &self.target).map_err(Error::io(&self.target))?;
        self.committed = true;
        if let Some(aside) = aside {
            let _ = fs::remove_dir_all(aside);
        }
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Writes `bytes` to `path` atomically: the file appears complete or not at all.
///
/// # Errors
/// I/O errors naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.writer().write_all(bytes).map_err(Error::io(path))?;
    file.commit()
}
