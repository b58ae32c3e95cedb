//! Precomputed skeleton sources: an `info` file and one binary file per skeleton id, which
//! neuroglancer shows as a skeleton layer.

use std::path::Path;

use serde_json::json;

use crate::atomic::AtomicDir;
use crate::{IoError, Result};

const SKELETON_FORMAT: &str = "precomputed skeleton";

/// One skeleton: vertices in nm and edges between them.
#[derive(Clone, Debug, PartialEq)]
pub struct Skeleton {
    /// The segment id; the file name.
    pub id: u64,
    /// Vertex positions (x, y, z) in nm.
    pub vertices_nm: Vec<[f32; 3]>,
    /// Pairs of vertex indices.
    pub edges: Vec<[u32; 2]>,
}

/// Whether `dir` is a skeleton source (its `info` says so) or holds nothing visible.
fn replaceable(dir: &Path) -> bool {
    let is_source = std::fs::read_to_string(dir.join("info"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["@type"] == "neuroglancer_skeletons");
    is_source
        || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .all(|e| e.file_name().to_string_lossy().starts_with('.'))
        })
}

/// The binary form: u32 vertex count, u32 edge count, f32 positions (x, y, z per
/// vertex), u32 edge pairs, all little-endian.
fn encode(s: &Skeleton) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 12 * s.vertices_nm.len() + 8 * s.edges.len());
    out.extend_from_slice(&(s.vertices_nm.len() as u32).to_le_bytes());
    out.extend_from_slice(&(s.edges.len() as u32).to_le_bytes());
    for v in &s.vertices_nm {
        for c in v {
            out.extend_from_slice(&c.to_le_bytes());
        }
    }
    for e in &s.edges {
        for i in e {
            out.extend_from_slice(&i.to_le_bytes());
        }
    }
    out
}

/// Writes `skeletons` as a precomputed skeleton source in `dir`: `info` (identity
/// transform, no vertex attributes) and one file per id. Atomic: the directory is built
/// under a staging name and moved into place whole, replacing an earlier skeleton source
/// (never another directory).
///
/// # Errors
/// [`IoError::Volume`] for a repeated id, an edge to a vertex that does not exist, a
/// non-finite position or more than 2^32 − 1 vertices or edges;
/// [`IoError::OutputRefused`] where `dir` is a file or a non-empty directory that is not a
/// skeleton source; I/O errors.
pub fn write_skeletons(dir: &Path, skeletons: &[Skeleton]) -> Result<()> {
    let invalid = |reason: String| IoError::Volume {
        path: dir.to_path_buf(),
        source: em_core::CoreError::InvalidParameter {
            name: "skeletons",
            reason,
        },
    };
    let mut ids = std::collections::HashSet::new();
    for s in skeletons {
        if !ids.insert(s.id) {
            return Err(invalid(format!("id {} appears twice", s.id)));
        }
        let n = s.vertices_nm.len();
        if u32::try_from(n).is_err() || u32::try_from(s.edges.len()).is_err() {
            return Err(invalid(format!(
                "skeleton {} has too many vertices or edges",
                s.id
            )));
        }
        if let Some(e) = s.edges.iter().find(|e| e.iter().any(|&i| i as usize >= n)) {
            return Err(invalid(format!(
                "skeleton {}: edge {e:?} names a vertex beyond its {n}",
                s.id
            )));
        }
        if s.vertices_nm.iter().flatten().any(|c| !c.is_finite()) {
            return Err(invalid(format!(
                "skeleton {} has a non-finite vertex",
                s.id
            )));
        }
    }
    if dir.is_file() || (dir.is_dir() && !replaceable(dir)) {
        return Err(IoError::OutputRefused {
            path: dir.to_path_buf(),
            reason: "is not a precomputed skeleton directory; writing there would replace it"
                .into(),
        });
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(IoError::io(parent))?;
    }
    let staged = AtomicDir::create(dir)?;
    let info = json!({
        "@type": "neuroglancer_skeletons",
        "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
        "vertex_attributes": [],
    });
    let file = staged.staging().join("info");
    std::fs::write(&file, serde_json::to_vec_pretty(&info).unwrap_or_default())
        .map_err(IoError::io(&dir.join("info")))?;
    for s in skeletons {
        let file = staged.staging().join(s.id.to_string());
        std::fs::write(&file, encode(s)).map_err(IoError::io(&dir.join(s.id.to_string())))?;
    }
    staged.commit()
}

/// Decodes the skeleton file of segment `id` (the file's name); vertex attributes after
/// the edges, if any, are ignored.
///
/// # Errors
/// [`IoError::Corrupt`] for data shorter than its counts say or an edge to a missing
/// vertex.
pub fn read_skeleton(id: u64, bytes: &[u8]) -> Result<Skeleton> {
    let name = id.to_string();
    let bad = |reason: String| IoError::corrupt(Path::new(&name), SKELETON_FORMAT, reason);
    let word = |at: usize| -> Option<[u8; 4]> { bytes.get(at..at + 4)?.try_into().ok() };
    let (Some(nv), Some(ne)) = (word(0), word(4)) else {
        return Err(bad(format!("{} bytes; the header takes 8", bytes.len())));
    };
    let (nv, ne) = (
        u32::from_le_bytes(nv) as usize,
        u32::from_le_bytes(ne) as usize,
    );
    let need = 8 + 12 * nv + 8 * ne;
    if bytes.len() < need {
        return Err(bad(format!(
            "{} bytes for {nv} vertices and {ne} edges, which take {need}",
            bytes.len()
        )));
    }
    let le = |at: usize| word(at).unwrap_or_default();
    let vertices_nm = (0..nv)
        .map(|v| std::array::from_fn(|c| f32::from_le_bytes(le(8 + 12 * v + 4 * c))))
        .collect();
    let base = 8 + 12 * nv;
    let edges: Vec<[u32; 2]> = (0..ne)
        .map(|e| std::array::from_fn(|k| u32::from_le_bytes(le(base + 8 * e + 4 * k))))
        .collect();
    if let Some(e) = edges.iter().find(|e| e.iter().any(|&i| i as usize >= nv)) {
        return Err(bad(format!("edge {e:?} names a vertex beyond its {nv}")));
    }
    Ok(Skeleton {
        id,
        vertices_nm,
        edges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeletons_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("skel");
        let s = Skeleton {
            id: 7,
            vertices_nm: vec![[0.0, 1.0, 2.0], [4.0, 5.5, 6.0], [1.0, 1.0, 1.0]],
            edges: vec![[0, 1], [1, 2]],
        };
        write_skeletons(&out, std::slice::from_ref(&s)).unwrap();
        let bytes = std::fs::read(out.join("7")).unwrap();
        assert_eq!(bytes.len(), 8 + 36 + 16);
        assert_eq!(read_skeleton(7, &bytes).unwrap(), s);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("info")).unwrap()).unwrap();
        assert_eq!(info["@type"], "neuroglancer_skeletons");
        // Replacing a skeleton source is fine; a foreign directory is not.
        write_skeletons(&out, &[]).unwrap();
        assert!(!out.join("7").exists());
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert!(write_skeletons(dir.path(), &[]).is_err());
        let bad = Skeleton {
            edges: vec![[0, 3]],
            ..s.clone()
        };
        assert!(write_skeletons(&out, &[bad]).is_err());
        assert!(write_skeletons(&out, &[s.clone(), s]).is_err());
        assert!(read_skeleton(1, &bytes[..20]).is_err());
        assert!(read_skeleton(1, &[1, 2]).is_err());
    }
}
