//! Neuroglancer precomputed volumes and skeletons.
