//! Errors of pipelines and presets.

/// Why a pipeline could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    /// A preset or pipeline setting is out of range or inconsistent.
    #[error("augmentation `{name}`: {reason}")]
    InvalidParameter {
        /// The transform whose setting it is.
        name: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The TOML could not be parsed (unknown keys and transform names are listed).
    #[error("augmentation preset {source_name}: {message}")]
    Parse {
        /// Preset name or file path.
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// No preset of that name and no such file.
    #[error("unknown augmentation preset {name:?}: neither a file nor one of {known}")]
    UnknownPreset {
        /// What was asked for.
        name: String,
        /// The built-in presets.
        known: String,
    },
    /// The sample does not fit the pipeline (shapes, missing labels).
    #[error("sample: {0}")]
    BadSample(String),
}

/// Result with [`AugmentError`].
pub type Result<T> = std::result::Result<T, AugmentError>;
