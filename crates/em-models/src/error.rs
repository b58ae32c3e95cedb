/// Result alias of em-models.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Why a model could not be built, loaded or run; each variant names the expected and found
/// values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// An input tensor has the wrong shape.
    #[error("input of shape {found:?}: {expected}")]
    BadInput {
        /// What the model needs.
        expected: String,
        /// The shape given.
        found: Vec<usize>,
    },
    /// A configuration value is out of range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The setting.
        name: &'static str,
        /// Why, and what is allowed.
        reason: String,
    },
    /// A checkpoint does not fit the model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What did not fit (missing, unused or mis-shaped tensors).
        reason: String,
    },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A volume could not be read or written (the message names it).
    #[error(transparent)]
    Volume(#[from] em_core::CoreError),
}
