//! Skeletons (our JSON or SWC files) as a neuroglancer precomputed skeleton source in a
//! temporary directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use em_core::VoxelSize;
use em_metrics::Skeletons;

use em_io::precomputed;

/// Skeletons grouped by id with vertices in nm `(x, y, z)`. A node's `position_nm` is the
/// centre of its voxel while neuroglancer puts a voxel's index at its corner, so vertices
/// move by half a voxel to sit in the middle of the voxels they were traced in. Skeleton 0
/// (unlabelled nodes) is left out: neuroglancer treats id 0 as background.
pub(crate) fn to_precomputed(
    skeletons: &Skeletons,
    voxel_size: [f64; 3],
) -> Vec<precomputed::Skeleton> {
    let half = voxel_size.map(|v| v / 2.0);
    let mut by_id: BTreeMap<u64, precomputed::Skeleton> = BTreeMap::new();
    let mut local = vec![0u32; skeletons.nodes.len()];
    for (i, node) in skeletons.nodes.iter().enumerate() {
        if node.skeleton == 0 {
            continue;
        }
        let s = by_id
            .entry(node.skeleton)
            .or_insert_with(|| precomputed::Skeleton {
                id: node.skeleton,
                vertices_nm: Vec::new(),
                edges: Vec::new(),
            });
        local[i] = s.vertices_nm.len() as u32;
        let [z, y, x] = node.position_nm;
        s.vertices_nm.push([
            (x + half[2]) as f32,
            (y + half[1]) as f32,
            (z + half[0]) as f32,
        ]);
    }
    for &(a, b) in &skeletons.edges {
        let id = skeletons.nodes[a].skeleton;
        if let Some(s) = by_id.get_mut(&id) {
            s.edges.push([local[a], local[b]]);
        }
    }
    by_id.into_values().collect()
}

/// A precomputed skeleton source written at start-up.
pub(crate) struct SkeletonDir {
    /// Removed with the source when dropped.
    _temp: tempfile::TempDir,
    /// The source directory (inside the temporary one).
    pub(crate) path: PathBuf,
    /// The skeleton ids written.
    pub(crate) ids: Vec<u64>,
}

/// Reads `path` (skeleton JSON or SWC) and writes it as a precomputed skeleton source in a
/// new temporary directory.
///
/// # Errors
/// Unreadable or malformed skeletons, write errors.
pub(crate) fn write_source(path: &Path, voxel_size: [f64; 3]) -> Result<SkeletonDir> {
    let vs = VoxelSize::new(voxel_size)?;
    let skeletons = Skeletons::read(path, vs)
        .with_context(|| format!("reading skeletons {}", path.display()))?;
    let converted = to_precomputed(&skeletons, voxel_size);
    if skeletons.nodes.iter().any(|n| n.skeleton == 0) {
        eprintln!("note: skeleton 0 (unlabelled nodes) is not drawn");
    }
    let temp = tempfile::Builder::new()
        .prefix("em-view-skeletons-")
        .tempdir()
        .context("creating a temporary directory for the skeletons")?;
    let dir = temp.path().join("skeletons");
    precomputed::write_skeletons(&dir, &converted)
        .with_context(|| format!("writing skeletons to {}", dir.display()))?;
    Ok(SkeletonDir {
        _temp: temp,
        path: dir,
        ids: converted.iter().map(|s| s.id).collect(),
    })
}
