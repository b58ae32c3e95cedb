use std::path::PathBuf;

/// Result alias of em-slurm.
pub type Result<T, E = SlurmError> = std::result::Result<T, E>;

/// Why a job could not be rendered, submitted or queried; each variant names the value,
/// file or command at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlurmError {
    /// A job or sweep config value is out of range or malformed.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The config key.
        name: String,
        /// Why, and what is allowed.
        reason: String,
    },
    /// A config file could not be parsed.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A Slurm command is not installed here.
    #[error("`{command}` was not found on PATH: run this on a Slurm login node (or install slurm-client)")]
    Missing {
        /// The command (sbatch, squeue, scontrol, scancel).
        command: String,
    },
    /// A Slurm command ran and refused.
    #[error("`{command}` failed ({status}): {stderr}")]
    Refused {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A Slurm command printed something this crate cannot read.
    #[error("`{command}` printed {output:?}, not {expected}")]
    Unexpected {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A volume of a distributed decode could not be read, written or placed.
    #[error(transparent)]
    Volume(#[from] em_io::IoError),
    /// A block grid or shape does not fit.
    #[error(transparent)]
    Core(#[from] em_core::CoreError),
    /// Decoding a block, or stitching them, failed.
    #[error(transparent)]
    Decode(#[from] em_decode::DecodeError),
    /// A block does not fit in a task's memory.
    #[error(transparent)]
    Memory(#[from] em_autoconf::MemoryError),
}

impl SlurmError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidParameter {
            name: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
