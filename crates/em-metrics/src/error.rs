/// Result alias of em-metrics.
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;

/// Why a metric could not be computed; every variant names the offending input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Ground truth and prediction differ in shape.
    #[error("ground truth has shape {gt:?} but the prediction has shape {pred:?}")]
    ShapeMismatch {
        /// Ground-truth shape.
        gt: Vec<usize>,
        /// Prediction shape.
        pred: Vec<usize>,
    },
    /// No labelled ground-truth voxel: the metrics are undefined.
    #[error("the ground truth has no labelled (non-zero) voxel; VOI and Rand are undefined")]
    EmptyGroundTruth,
    /// A skeleton file or graph is malformed.
    #[error("skeletons {source_name}: {reason}")]
    BadSkeleton {
        /// The file or input.
        source_name: String,
        /// What is wrong, naming the node or edge.
        reason: String,
    },
    /// Skeleton nodes lie outside the prediction volume.
    #[error("{count} skeleton node(s) outside the prediction volume of shape {shape:?}, e.g. node {first_node} at {first_position:?}")]
    NodesOutside {
        /// How many nodes.
        count: usize,
        /// The volume shape.
        shape: Vec<u64>,
        /// One of them.
        first_node: u64,
        /// Its voxel position.
        first_position: [f64; 3],
    },
    /// A parameter is out of range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Why, and what is allowed.
        reason: String,
    },
    /// Reading a volume or file failed.
    #[error(transparent)]
    Volume(#[from] em_core::CoreError),
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}
