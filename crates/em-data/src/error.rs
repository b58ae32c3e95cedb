//! Errors of datasets and loaders.

/// Why data could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading a volume failed, or a region did not fit it.
    #[error(transparent)]
    Volume(#[from] em_core::CoreError),
    /// The augmentation pipeline refused the sample.
    #[error(transparent)]
    Augment(#[from] em_augment::AugmentError),
    /// A dataset or loader setting, or the volumes given, do not make sense.
    #[error("{name}: {reason}")]
    InvalidParameter {
        /// The dataset or setting.
        name: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// No random crop passed the foreground/mask thresholds.
    #[error("dataset {name}: no patch among {tries} random crops had {needed}; lower the threshold or check the labels")]
    Rejected {
        /// The dataset.
        name: String,
        /// Crops tried.
        tries: usize,
        /// The threshold that failed.
        needed: String,
    },
    /// A loader worker panicked; the message is the panic's.
    #[error("loader worker {worker} panicked on batch {batch}: {message}")]
    WorkerPanic {
        /// Worker index.
        worker: usize,
        /// Batch index.
        batch: usize,
        /// The panic payload, if it was a string.
        message: String,
    },
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> DataError {
    DataError::InvalidParameter {
        name: what.into(),
        reason: reason.into(),
    }
}
