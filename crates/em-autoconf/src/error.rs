//! Errors of planning.

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum AutoconfError {
    /// The request itself is inconsistent.
    #[error("invalid plan request: {name} {reason}")]
    InvalidParameter {
        /// The value.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A value the user asked for cannot be had here (a GPU, a precision).
    #[error("{0}")]
    Unavailable(String),
    /// Not even the smallest step fits in memory.
    #[error("the training step does not fit: {0}")]
    DoesNotFit(String),
}

/// Result of this crate.
pub type Result<T, E = AutoconfError> = std::result::Result<T, E>;
