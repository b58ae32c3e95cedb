/// Result alias of em-decode.
pub type Result<T, E = DecodeError> = std::result::Result<T, E>;

/// Why a decoding request was refused; every variant says which value is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The affinity array is not `(C, Z, Y, X)`.
    #[error("affinities must have 4 axes (C, Z, Y, X), got shape {0:?}")]
    NotFourDimensional(Vec<usize>),
    /// A selected channel does not exist.
    #[error("channel {channel} selected but the affinities have {available} channels")]
    NoSuchChannel {
        /// The channel asked for.
        channel: usize,
        /// How many there are.
        available: usize,
    },
    /// The number of offsets differs from the number of selected channels.
    #[error("{offsets} offsets given for {channels} selected channels; give one (dz, dy, dx) per channel")]
    OffsetCountMismatch {
        /// Offsets given.
        offsets: usize,
        /// Channels selected.
        channels: usize,
    },
    /// No channel selected.
    #[error("no channel selected; select at least one (default 0,1,2)")]
    NoChannels,
    /// The volume has more voxels than the label type can index.
    #[error("{voxels} voxels do not fit {label_type} labels; decode to u64 labels")]
    TooManyVoxels {
        /// Voxels in the volume.
        voxels: usize,
        /// The label type asked for.
        label_type: &'static str,
    },
    /// More components than the label type can number.
    #[error("more components than {label_type} labels can number; decode to u64 labels")]
    TooManyComponents {
        /// The label type asked for.
        label_type: &'static str,
    },
    /// Reading or writing a volume failed.
    #[error(transparent)]
    Volume(#[from] em_core::CoreError),
    /// A file of a distributed decode (plan, block record) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A volume file could not be read, written or placed (feature `files`).
    #[cfg(feature = "files")]
    #[error(transparent)]
    File(#[from] em_io::IoError),
    /// The decode does not fit in memory (feature `files`).
    #[cfg(feature = "files")]
    #[error(transparent)]
    Memory(#[from] em_autoconf::MemoryError),
    /// A parameter is out of range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Why, and what is allowed.
        reason: String,
    },
}
