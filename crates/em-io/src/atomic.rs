//! Atomic file and directory writes: data goes to a hidden staging path beside the target
//! and is moved into place only once complete, so an interrupted or failed write never
//! leaves something that looks like a finished volume.
//!
//! Staging names carry the host and process id of their writer
//! (`.NAME.partial-HOST-PID-N`, and `.NAME.old-HOST-PID-N` for a replaced directory being
//! moved aside), so that a later write on the same host can tell the leftovers of a killed
//! process from the work of a live one, remove them, and put back a directory whose
//! replacement was interrupted.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::{IoError, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

const PARTIAL: &str = ".partial-";
const OLD: &str = ".old-";

/// This host's name, made safe for a file name (it tells hosts apart on a shared file
/// system, where another host's process ids mean nothing here).
fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let raw = fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| fs::read_to_string("/etc/hostname"))
            .unwrap_or_default();
        let clean: String = raw
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if clean.is_empty() {
            "host".into()
        } else {
            clean
        }
    })
}

fn sibling(target: &Path, marker: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "volume".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(
        ".{name}{marker}{}-{}-{n}",
        host(),
        std::process::id()
    ))
}

/// A staging path beside `target`: same directory (so the rename cannot cross file
/// systems), hidden, unique per process and call.
pub(crate) fn staging_path(target: &Path) -> PathBuf {
    sibling(target, PARTIAL)
}

/// A leftover of [`staging_path`] or of a replaced directory moved aside.
#[derive(Debug, PartialEq, Eq)]
struct Leftover {
    /// The name of the target it was for.
    target: String,
    /// A replaced target moved aside (`true`) or a staged new one.
    aside: bool,
    host: String,
    pid: u32,
}

fn parse_leftover(name: &OsStr) -> Option<Leftover> {
    let name = name.to_str()?.strip_prefix('.')?;
    let (rest, _n) = name.rsplit_once('-')?;
    let (rest, pid) = rest.rsplit_once('-')?;
    let pid: u32 = pid.parse().ok()?;
    for (marker, aside) in [(PARTIAL, false), (OLD, true)] {
        if let Some(at) = rest.rfind(marker) {
            let host = &rest[at + marker.len()..];
            if !host.is_empty() && !host.contains('-') {
                return Some(Leftover {
                    target: rest[..at].to_string(),
                    aside,
                    host: host.to_string(),
                    pid,
                });
            }
        }
    }
    None
}

/// Whether process `pid` of this host is still running.
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn remove_any(p: &Path) {
    if p.is_dir() {
        let _ = fs::remove_dir_all(p);
    } else {
        let _ = fs::remove_file(p);
    }
}

/// Cleans up after writers on this host that were killed in `dir`: their staged outputs
/// are removed, and a directory they had moved aside to replace it is put back if its
/// replacement never arrived (else removed). Leftovers of live processes and of other
/// hosts are left alone. Best effort: a failure here never fails a write.
pub(crate) fn tidy(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(l) = parse_leftover(&name) else {
            continue;
        };
        if l.host != host() || alive(l.pid) {
            continue;
        }
        let path = entry.path();
        let target = dir.join(&l.target);
        if l.aside && fs::symlink_metadata(&target).is_err() {
            let _ = fs::rename(&path, &target);
        } else {
            remove_any(&path);
        }
    }
}

/// [`tidy`], once per directory and process: writers call it before every staged write,
/// and a directory of many small files (block records, checkpoints) must not be listed for
/// each of them.
pub(crate) fn tidy_once(dir: &Path) {
    static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if !done.iter().any(|d| d == dir) {
        done.push(dir.to_path_buf());
        drop(done);
        tidy(dir);
    }
}

/// Puts back `target` if a killed writer had moved it aside and never put its replacement
/// in place (only possible where the file system cannot exchange two directories).
pub(crate) fn recover(target: &Path) {
    if fs::symlink_metadata(target).is_err() {
        if let Some(parent) = target.parent() {
            tidy(parent);
        }
    }
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
        if let Some(parent) = target.parent() {
            tidy_once(parent);
        }
        let staging = staging_path(target);
        let file = File::create(&staging).map_err(IoError::io(target))?;
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
            .map_err(|e| IoError::io(&self.target)(e.into_error()))?;
        file.sync_all().map_err(IoError::io(&self.target))?;
        drop(file);
        fs::rename(&self.staging, &self.target).map_err(IoError::io(&self.target))
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

/// Swaps two paths in one step (Linux `renameat2(RENAME_EXCHANGE)`): there is no instant at
/// which either name is missing. `Err(Unsupported)` where the system or file system lacks it.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both strings are valid NUL-terminated paths that outlive the call; the
    // syscall only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            e.to_string(),
        )),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no atomic exchange",
    ))
}

/// A directory built under a staging name beside its target and moved onto it by
/// [`StagedDir::commit`] (replacing an existing one in a single step where the file system
/// allows); removed if dropped uncommitted. Leftovers of killed writers are cleaned up by the
/// next writer in the same directory.
pub struct StagedDir(AtomicDir);

impl StagedDir {
    /// Creates the staging directory for `target`.
    ///
    /// # Errors
    /// I/O errors naming `target`.
    pub fn create(target: &Path) -> Result<Self> {
        AtomicDir::create(target).map(Self)
    }

    /// Where to build the directory.
    pub fn path(&self) -> &Path {
        self.0.staging()
    }

    /// Moves the finished directory onto its target.
    ///
    /// # Errors
    /// I/O errors of the rename.
    pub fn commit(self) -> Result<()> {
        self.0.commit()
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
        if let Some(parent) = target.parent() {
            tidy_once(parent);
        }
        let staging = staging_path(target);
        fs::create_dir_all(&staging).map_err(IoError::io(target))?;
        Ok(Self {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    pub(crate) fn staging(&self) -> &Path {
        &self.staging
    }

    /// Moves the staged directory onto the target, replacing an existing one. The two are
    /// exchanged in one step where the file system allows it, so the target always names a
    /// complete directory, old or new. Elsewhere the old one is first renamed aside; a kill
    /// between the two renames leaves it aside, and the next write or open in that
    /// directory puts it back.
    pub(crate) fn commit(mut self) -> Result<()> {
        if fs::symlink_metadata(&self.target).is_err() {
            fs::rename(&self.staging, &self.target).map_err(IoError::io(&self.target))?;
            self.committed = true;
            return Ok(());
        }
        match exchange(&self.staging, &self.target) {
            Ok(()) => {
                self.committed = true;
                // The staging name now holds the old directory.
                let _ = fs::remove_dir_all(&self.staging);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(e) => return Err(IoError::io(&self.target)(e)),
        }
        self.commit_by_rename()
    }

    /// Old target aside, staged one in, old one removed: for file systems without an
    /// atomic exchange.
    fn commit_by_rename(mut self) -> Result<()> {
        let aside = sibling(&self.target, OLD);
        fs::rename(&self.target, &aside).map_err(IoError::io(&self.target))?;
        if let Err(e) = fs::rename(&self.staging, &self.target) {
            let _ = fs::rename(&aside, &self.target);
            return Err(IoError::io(&self.target)(e));
        }
        self.committed = true;
        let _ = fs::remove_dir_all(aside);
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
    file.writer().write_all(bytes).map_err(IoError::io(path))?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid that no process has: above the kernel's maximum.
    const DEAD: u32 = 4_194_305;

    fn leftover(dir: &Path, target: &str, marker: &str, pid: u32) -> PathBuf {
        dir.join(format!(".{target}{marker}{}-{pid}-0", host()))
    }

    #[test]
    fn staging_names_parse_back() {
        let p = staging_path(Path::new("/x/seg-v2.zarr"));
        let l = parse_leftover(p.file_name().unwrap()).unwrap();
        assert_eq!(l.target, "seg-v2.zarr");
        assert!(!l.aside);
        assert_eq!(l.pid, std::process::id());
        assert_eq!(l.host, host());
        assert_eq!(parse_leftover(OsStr::new(".zattrs")), None);
        assert_eq!(parse_leftover(OsStr::new("seg")), None);
    }

    #[test]
    fn both_commits_replace_a_directory_and_leave_nothing_beside_it() {
        for exchange in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("a");
            fs::create_dir(&target).unwrap();
            fs::write(target.join("old"), b"1").unwrap();
            let staged = AtomicDir::create(&target).unwrap();
            fs::write(staged.staging().join("new"), b"2").unwrap();
            if exchange {
                staged.commit().unwrap();
            } else {
                staged.commit_by_rename().unwrap();
            }
            assert!(target.join("new").is_file() && !target.join("old").exists());
            let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
            assert_eq!(left.len(), 1, "only the target remains");
        }
    }

    #[test]
    fn a_target_left_aside_by_a_killed_writer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("seg");
        // What a kill between the fallback's two renames leaves: the old array aside, the
        // new one still staged, the target missing.
        let aside = leftover(dir.path(), "seg", OLD, DEAD);
        fs::create_dir(&aside).unwrap();
        fs::write(aside.join("zarr.json"), b"{}").unwrap();
        let staged = leftover(dir.path(), "seg", PARTIAL, DEAD);
        fs::create_dir(&staged).unwrap();
        recover(&target);
        assert!(target.join("zarr.json").is_file(), "the old array is back");
        assert!(!aside.exists() && !staged.exists(), "leftovers removed");
    }

    #[test]
    fn tidy_spares_live_writers_and_existing_targets() {
        let dir = tempfile::tempdir().unwrap();
        let live = leftover(dir.path(), "a", PARTIAL, std::process::id());
        fs::create_dir(&live).unwrap();
        let dead_file = leftover(dir.path(), "b.npy", PARTIAL, DEAD);
        fs::write(&dead_file, b"partial").unwrap();
        // An aside whose target exists again is stale: removed, the target untouched.
        fs::create_dir(dir.path().join("c")).unwrap();
        let aside = leftover(dir.path(), "c", OLD, DEAD);
        fs::create_dir(&aside).unwrap();
        let other_host = dir.path().join(format!(".d{PARTIAL}otherhost-{DEAD}-0"));
        fs::create_dir(&other_host).unwrap();
        tidy(dir.path());
        assert!(live.exists());
        assert!(!dead_file.exists());
        assert!(!aside.exists() && dir.path().join("c").is_dir());
        assert!(other_host.exists(), "another host's writer may be alive");
    }
}
