use crate::DType;

/// Result alias used throughout em-core and by every [`crate::ChunkedVolume`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in em-core, and the error that storage backends report
/// through [`crate::ChunkedVolume`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// Two things that must have the same number of axes do not.
    #[error("{what} has {got} axes, expected {expected}")]
    DimensionMismatch {
        /// What was checked, e.g. `"region"`.
        what: String,
        /// The number of axes expected.
        expected: usize,
        /// The number of axes found.
        got: usize,
    },
    /// Two shapes that must agree do not.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// What was checked, e.g. `"data written to [0..4, 0..4]"`.
        what: String,
        /// The shape expected.
        expected: Vec<u64>,
        /// The shape found.
        got: Vec<u64>,
    },
    /// A region reaches outside the volume it addresses.
    #[error("region {roi} lies outside the volume of shape {shape:?}")]
    OutOfBounds {
        /// The region, formatted as `[z0..z1, y0..y1, x0..x1]`.
        roi: String,
        /// The volume shape.
        shape: Vec<u64>,
    },
    /// Data of one element type was given where another was required.
    #[error("expected {expected} data, found {found}")]
    DTypeMismatch {
        /// The element type required.
        expected: DType,
        /// The element type found.
        found: DType,
    },
    /// A parameter has a value outside its allowed range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Why the value is not allowed, and what is.
        reason: String,
    },
    /// A value cannot be represented by the label type in use.
    #[error("value {value} cannot be a {label_type} label (labels are non-negative integers up to {max})")]
    LabelOutOfRange {
        /// The offending value, as found in the data.
        value: String,
        /// The label type, `u32` or `u64`.
        label_type: &'static str,
        /// The largest label the type holds.
        max: u64,
    },
    /// A request did not fit a volume; names the volume (e.g. its file) and the problem.
    #[error("{volume}: {source}")]
    InVolume {
        /// The volume, as [`crate::ChunkedVolume::describe`] gives it.
        volume: String,
        /// What was wrong with the request.
        source: Box<CoreError>,
    },
    /// A configuration name is neither a preset nor a file.
    #[error("unknown {kind} preset {name:?}: neither a file nor one of {known}")]
    UnknownPreset {
        /// What the presets configure.
        kind: &'static str,
        /// The name given.
        name: String,
        /// The presets, comma-separated.
        known: String,
    },
    /// A configuration's text could not be read, parsed or overridden.
    #[error("{origin}: {reason}")]
    Config {
        /// The preset, file or override.
        origin: String,
        /// What is wrong (the parser's message names the key and the line).
        reason: String,
    },
    /// A storage backend (file format reader/writer) failed; the message names the file.
    #[error(transparent)]
    Storage(Box<dyn std::error::Error + Send + Sync + 'static>),
}
