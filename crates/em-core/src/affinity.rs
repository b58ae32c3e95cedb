//! Affinity offsets and how an affinity value is stored relative to its edge.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{CoreError, Result};

/// A voxel offset `(dz, dy, dx)`: channel `c` of an affinity map belongs to offset `c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "[i64; 3]", into = "[i64; 3]")]
pub struct Offset(pub [i64; 3]);

impl From<[i64; 3]> for Offset {
    fn from(v: [i64; 3]) -> Self {
        Self(v)
    }
}

impl From<Offset> for [i64; 3] {
    fn from(o: Offset) -> Self {
        o.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {}, {})", self.0[0], self.0[1], self.0[2])
    }
}

/// Which voxel of an edge holds its affinity value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeStorage {
    /// BANIS: `aff[c, v]` is the edge between `v` and `v + o_c`.
    #[default]
    Source,
    /// PyTC "deepem": `aff[c, v]` is the edge between `v` and `v − o_c`.
    Destination,
}

impl EdgeStorage {
    /// The other end of the edge stored at `voxel` for `offset`, or `None` when it lies
    /// outside a volume of `shape` (such an edge does not exist).
    #[inline]
    pub fn partner(
        self,
        voxel: [usize; 3],
        offset: Offset,
        shape: [usize; 3],
    ) -> Option<[usize; 3]> {
        let sign = match self {
            EdgeStorage::Source => 1,
            EdgeStorage::Destination => -1,
        };
        let mut out = [0usize; 3];
        for axis in 0..3 {
            let p = voxel[axis] as i64 + sign * offset.0[axis];
            if p < 0 || p >= shape[axis] as i64 {
                return None;
            }
            out[axis] = p as usize;
        }
        Some(out)
    }
}

impl std::str::FromStr for EdgeStorage {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "source" | "banis" => Ok(Self::Source),
            "destination" | "deepem" => Ok(Self::Destination),
            _ => Err(CoreError::InvalidParameter {
                name: "edge storage",
                reason: format!("{s:?}; allowed: source (banis), destination (deepem)"),
            }),
        }
    }
}

/// The ordered list of offsets of an affinity map's channels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Offset>", into = "Vec<Offset>")]
pub struct AffinityOffsets(Vec<Offset>);

impl AffinityOffsets {
    /// Offsets for channels in order; none may be `(0, 0, 0)` and there must be at least one.
    ///
    /// # Errors
    /// [`CoreError::InvalidParameter`] for an empty list or a zero offset.
    pub fn new(offsets: Vec<Offset>) -> Result<Self> {
        if offsets.is_empty() {
            return Err(CoreError::InvalidParameter {
                name: "affinity offsets",
                reason: "the list is empty; give at least one (dz, dy, dx)".into(),
            });
        }
        if let Some(c) = offsets.iter().position(|o| o.0 == [0, 0, 0]) {
            return Err(CoreError::InvalidParameter {
                name: "affinity offsets",
                reason: format!("channel {c} has offset (0, 0, 0), which links a voxel to itself"),
            });
        }
        Ok(Self(offsets))
    }

    /// BANIS's six channels: offsets 1 and 10 along z, y, x.
    pub fn banis() -> Self {
        Self(
            [
                [1, 0, 0],
                [0, 1, 0],
                [0, 0, 1],
                [10, 0, 0],
                [0, 10, 0],
                [0, 0, 10],
            ]
            .map(Offset)
            .to_vec(),
        )
    }

    /// The three nearest-neighbour channels `(1,0,0), (0,1,0), (0,0,1)`.
    pub fn short_range() -> Self {
        Self([[1, 0, 0], [0, 1, 0], [0, 0, 1]].map(Offset).to_vec())
    }

    /// The offsets in channel order.
    pub fn as_slice(&self) -> &[Offset] {
        &self.0
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list holds at least one offset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The largest absolute offset along each axis: the halo a blockwise algorithm needs.
    pub fn reach(&self) -> [u64; 3] {
        let mut r = [0u64; 3];
        for o in &self.0 {
            for (axis, v) in o.0.iter().enumerate() {
                r[axis] = r[axis].max(v.unsigned_abs());
            }
        }
        r
    }
}

impl Default for AffinityOffsets {
    fn default() -> Self {
        Self::banis()
    }
}

impl TryFrom<Vec<Offset>> for AffinityOffsets {
    type Error = CoreError;
    fn try_from(v: Vec<Offset>) -> Result<Self> {
        Self::new(v)
    }
}

impl From<AffinityOffsets> for Vec<Offset> {
    fn from(o: AffinityOffsets) -> Self {
        o.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partner_depends_on_storage() {
        let o = Offset([0, 0, 1]);
        let shape = [2, 2, 2];
        assert_eq!(
            EdgeStorage::Source.partner([0, 0, 0], o, shape),
            Some([0, 0, 1])
        );
        assert_eq!(EdgeStorage::Source.partner([0, 0, 1], o, shape), None);
        assert_eq!(
            EdgeStorage::Destination.partner([0, 0, 1], o, shape),
            Some([0, 0, 0])
        );
        assert_eq!(EdgeStorage::Destination.partner([0, 0, 0], o, shape), None);
    }

    #[test]
    fn offsets_validate_and_parse() {
        assert_eq!(AffinityOffsets::banis().reach(), [10, 10, 10]);
        assert_eq!(AffinityOffsets::short_range().len(), 3);
        assert!(AffinityOffsets::new(vec![]).is_err());
        assert!(AffinityOffsets::new(vec![Offset([0, 0, 0])]).is_err());
        let parsed: AffinityOffsets = serde_json::from_str("[[1,0,0],[0,-3,0]]").unwrap();
        assert_eq!(parsed.reach(), [1, 3, 0]);
        assert!(serde_json::from_str::<AffinityOffsets>("[[0,0,0]]").is_err());
        assert_eq!(
            "deepem".parse::<EdgeStorage>().unwrap(),
            EdgeStorage::Destination
        );
        assert!("sideways"
            .parse::<EdgeStorage>()
            .unwrap_err()
            .to_string()
            .contains("allowed"));
    }
}
