//! Skeletons (ground-truth neurite graphs) read from the skeleton JSON of ARCHITECTURE.md or
//! SWC files, and the prediction ids at their nodes.

use std::collections::HashMap;
use std::path::Path;

use em_core::{ChunkedVolume, Label, Roi, VoxelSize};
use ndarray::ArrayView3;
use serde::Deserialize;

use crate::{MetricsError, Result};

/// One skeleton node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Node {
    /// Node id, unique over all skeletons.
    pub id: u64,
    /// The skeleton (ground-truth neurite) it belongs to.
    pub skeleton: u64,
    /// Voxel index `(z, y, x)` in the prediction volume (rounded to the nearest voxel).
    pub position: [f64; 3],
    /// Physical position `(z, y, x)` in nm, for edge lengths.
    pub position_nm: [f64; 3],
}

/// Skeleton graphs: nodes and undirected edges between nodes of the same skeleton.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Skeletons {
    /// All nodes.
    pub nodes: Vec<Node>,
    /// Edges as indices into `nodes`.
    pub edges: Vec<(usize, usize)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonNode {
    id: u64,
    skeleton: u64,
    position: [f64; 3],
    #[serde(default)]
    position_nm: Option<[f64; 3]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSkeletons {
    nodes: Vec<JsonNode>,
    edges: Vec<[u64; 2]>,
}

impl Skeletons {
    /// Builds skeletons from nodes and edges given by node id; checks the graph.
    ///
    /// # Errors
    /// [`MetricsError::BadSkeleton`] for duplicate node ids, edges to missing nodes, edges
    /// between skeletons, self-loops or non-finite positions (each named).
    pub fn new(nodes: Vec<Node>, edges: &[[u64; 2]], source_name: &str) -> Result<Self> {
        let bad = |reason: String| MetricsError::BadSkeleton {
            source_name: source_name.to_string(),
            reason,
        };
        let mut index: HashMap<u64, usize> = HashMap::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            if index.insert(n.id, i).is_some() {
                return Err(bad(format!("node id {} appears twice", n.id)));
            }
            if !n
                .position
                .iter()
                .chain(&n.position_nm)
                .all(|v| v.is_finite())
            {
                return Err(bad(format!(
                    "node {} has a non-finite position {:?} / {:?} nm",
                    n.id, n.position, n.position_nm
                )));
            }
        }
        let mut out = Vec::with_capacity(edges.len());
        // An undirected graph: a repeated edge, either way round, counts once.
        let mut seen: HashMap<(usize, usize), ()> = HashMap::with_capacity(edges.len());
        for &[a, b] in edges {
            let (Some(&i), Some(&j)) = (index.get(&a), index.get(&b)) else {
                let missing = if index.contains_key(&a) { b } else { a };
                return Err(bad(format!(
                    "edge [{a}, {b}] names node {missing}, which does not exist"
                )));
            };
            if i == j {
                return Err(bad(format!("edge [{a}, {b}] links a node to itself")));
            }
            if nodes[i].skeleton != nodes[j].skeleton {
                return Err(bad(format!(
                    "edge [{a}, {b}] joins skeletons {} and {}",
                    nodes[i].skeleton, nodes[j].skeleton
                )));
            }
            if seen.insert((i.min(j), i.max(j)), ()).is_none() {
                out.push((i, j));
            }
        }
        Ok(Self { nodes, edges: out })
    }

    /// Parses the skeleton JSON of ARCHITECTURE.md; `position_nm` defaults to `position`
    /// times `voxel_size`.
    ///
    /// # Errors
    /// [`MetricsError::BadSkeleton`] for malformed JSON or graphs.
    pub fn from_json(text: &str, voxel_size: VoxelSize, source_name: &str) -> Result<Self> {
        let parsed: JsonSkeletons = serde_json::from_str(text).map_err(|e| MetricsError::BadSkeleton {
            source_name: source_name.to_string(),
            reason: format!("not skeleton JSON ({e}); expected {{\"nodes\": [{{\"id\", \"skeleton\", \"position\": [z, y, x]}}], \"edges\": [[a, b]]}}"),
        })?;
        let vs = voxel_size.zyx();
        let nodes = parsed
            .nodes
            .into_iter()
            .map(|n| Node {
                id: n.id,
                skeleton: n.skeleton,
                position: n.position,
                position_nm: n.position_nm.unwrap_or([
                    n.position[0] * vs[0],
                    n.position[1] * vs[1],
                    n.position[2] * vs[2],
                ]),
            })
            .collect();
        Self::new(nodes, &parsed.edges, source_name)
    }

    /// Parses one SWC file as skeleton `skeleton`: lines `id type x y z radius parent`,
    /// coordinates in nm (x, y, z), voxel position = nm / `voxel_size`. Node ids are offset
    /// by `id_offset` so that several files do not collide.
    ///
    /// # Errors
    /// [`MetricsError::BadSkeleton`] naming the line of a malformed entry.
    pub fn from_swc(
        text: &str,
        skeleton: u64,
        id_offset: u64,
        voxel_size: VoxelSize,
        source_name: &str,
    ) -> Result<Self> {
        let (nodes, edges) = parse_swc(text, skeleton, id_offset, voxel_size, source_name)?;
        Self::new(nodes, &edges, source_name)
    }

    /// Reads a skeleton JSON file, one SWC file (skeleton id 1) or a directory of SWC files
    /// (one skeleton each, ids 1, 2, … in file-name order).
    ///
    /// # Errors
    /// I/O errors and [`MetricsError::BadSkeleton`].
    pub fn read(path: impl AsRef<Path>, voxel_size: VoxelSize) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io = |source| MetricsError::Io {
            path: name.clone(),
            source,
        };
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("swc")))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(MetricsError::BadSkeleton {
                    source_name: name,
                    reason: "directory holds no .swc file".into(),
                });
            }
            let (mut nodes, mut edges) = (Vec::new(), Vec::new());
            for (k, file) in files.iter().enumerate() {
                let text = std::fs::read_to_string(file).map_err(|source| MetricsError::Io {
                    path: file.display().to_string(),
                    source,
                })?;
                // Node ids of file k are k·2^32 + SWC id: unique across files.
                let (n, e) = parse_swc(
                    &text,
                    k as u64 + 1,
                    (k as u64) << 32,
                    voxel_size,
                    &file.display().to_string(),
                )?;
                nodes.extend(n);
                edges.extend(e);
            }
            return Self::new(nodes, &edges, &name);
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("swc"))
        {
            Self::from_swc(&text, 1, 0, voxel_size, &name)
        } else {
            Self::from_json(&text, voxel_size, &name)
        }
    }

    /// Number of distinct skeletons.
    pub fn num_skeletons(&self) -> usize {
        let mut ids: Vec<u64> = self.nodes.iter().map(|n| n.skeleton).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// The voxel of each node, or the error naming the nodes outside `shape`.
    fn voxels(&self, shape: &[u64]) -> Result<Vec<[u64; 3]>> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut outside: Vec<&Node> = Vec::new();
        for n in &self.nodes {
            let v = n.position.map(|c| c.round());
            if v.iter().zip(shape).all(|(&c, &s)| c >= 0.0 && c < s as f64) && shape.len() == 3 {
                out.push(v.map(|c| c as u64));
            } else {
                outside.push(n);
                out.push([0; 3]);
            }
        }
        match outside.first() {
            None => Ok(out),
            Some(first) => Err(MetricsError::NodesOutside {
                count: outside.len(),
                shape: shape.to_vec(),
                first_node: first.id,
                first_position: first.position,
            }),
        }
    }

    /// The prediction id at every node.
    ///
    /// # Errors
    /// [`MetricsError::NodesOutside`] naming nodes outside the volume.
    pub fn lookup<L: Label>(&self, pred: ArrayView3<'_, L>) -> Result<Vec<u64>> {
        let shape: Vec<u64> = pred.shape().iter().map(|&n| n as u64).collect();
        let voxels = self.voxels(&shape)?;
        Ok(voxels
            .iter()
            .map(|v| pred[[v[0] as usize, v[1] as usize, v[2] as usize]].to_u64())
            .collect())
    }

    /// The prediction id at every node of a chunked volume, reading only the chunks that
    /// hold nodes.
    ///
    /// # Errors
    /// [`MetricsError::NodesOutside`], storage errors, non-integer volumes.
    pub fn lookup_volume(&self, pred: &dyn ChunkedVolume) -> Result<Vec<u64>> {
        let voxels = self.voxels(pred.shape())?;
        let chunk: Vec<u64> = pred.chunk_shape().iter().map(|&c| c.max(1)).collect();
        let mut by_chunk: HashMap<[u64; 3], Vec<usize>> = HashMap::new();
        for (i, v) in voxels.iter().enumerate() {
            by_chunk
                .entry([v[0] / chunk[0], v[1] / chunk[1], v[2] / chunk[2]])
                .or_default()
                .push(i);
        }
        let mut ids = vec![0u64; voxels.len()];
        let mut keys: Vec<_> = by_chunk.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            let start: Vec<u64> = (0..3).map(|a| key[a] * chunk[a]).collect();
            let end: Vec<u64> = (0..3)
                .map(|a| (start[a] + chunk[a]).min(pred.shape()[a]))
                .collect();
            let roi = Roi::from_ranges(&[start[0]..end[0], start[1]..end[1], start[2]..end[2]]);
            let block = em_core::to_labels::<u64>(&pred.read_roi(&roi)?)?;
            for &i in &by_chunk[&key] {
                let v = voxels[i];
                let at = [
                    (v[0] - start[0]) as usize,
                    (v[1] - start[1]) as usize,
                    (v[2] - start[2]) as usize,
                ];
                ids[i] = block[&at[..]];
            }
        }
        Ok(ids)
    }
}

type SwcGraph = (Vec<Node>, Vec<[u64; 2]>);

fn parse_swc(
    text: &str,
    skeleton: u64,
    id_offset: u64,
    voxel_size: VoxelSize,
    source_name: &str,
) -> Result<SwcGraph> {
    let (mut nodes, mut edges) = (Vec::new(), Vec::new());
    let vs = voxel_size.zyx();
    for (line_no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| MetricsError::BadSkeleton {
            source_name: source_name.to_string(),
            reason: format!(
                "line {}: {what}: {line:?} (SWC: id type x y z radius parent)",
                line_no + 1
            ),
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 7 {
            return Err(bad("fewer than 7 fields"));
        }
        let id: u64 = f[0].parse().map_err(|_| bad("id is not a whole number"))?;
        let coords: Vec<f64> = f[2..5]
            .iter()
            .map(|s| s.parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("coordinate is not a number"))?;
        let parent: i64 = f[6]
            .parse()
            .map_err(|_| bad("parent is not a whole number"))?;
        let nm = [coords[2], coords[1], coords[0]];
        nodes.push(Node {
            id: id + id_offset,
            skeleton,
            position: [nm[0] / vs[0], nm[1] / vs[1], nm[2] / vs[2]],
            position_nm: nm,
        });
        if parent >= 0 {
            edges.push([parent as u64 + id_offset, id + id_offset]);
        }
    }
    Ok((nodes, edges))
}
