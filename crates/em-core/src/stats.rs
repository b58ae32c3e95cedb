//! Summary statistics of a volume computed chunk by chunk, in bounded memory.

use std::collections::HashSet;

use serde::Serialize;

use crate::{AnyArray, ChunkedVolume, ChunkedVolumeExt, Element, Progress, Result, Roi};

/// One value of a volume, exact whatever its type: a 64-bit label id stays that id (an
/// `f64` would round ids above 2^53).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    /// An integer (or bool as 0/1).
    Int(i128),
    /// A floating-point value.
    Float(f64),
}

impl Scalar {
    /// The value as `f64` (rounded for integers beyond 2^53).
    pub fn to_f64(self) -> f64 {
        match self {
            Scalar::Int(v) => v as f64,
            Scalar::Float(v) => v,
        }
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Float(v) => write!(f, "{v}"),
        }
    }
}

/// What `em info` reports about a volume's values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VolumeStats {
    /// Smallest value (NaN ignored); `None` for an empty or all-NaN volume.
    pub min: Option<Scalar>,
    /// Largest value (NaN ignored).
    pub max: Option<Scalar>,
    /// Number of distinct non-zero values, for integer volumes (labels).
    pub label_count: Option<u64>,
    /// Number of voxels equal to 0 (background for labels).
    pub zero_count: u64,
    /// Number of NaN voxels (floating-point volumes).
    pub nan_count: u64,
}

impl VolumeStats {
    /// Reads the volume one storage chunk at a time (never whole) and summarises it.
    ///
    /// # Errors
    /// Any read error of the volume.
    pub fn compute(volume: &dyn ChunkedVolume, progress: &dyn Progress) -> Result<Self> {
        let grid = volume.chunk_grid(&vec![0; volume.ndim()])?;
        let mut acc = Accumulator::default();
        let total = volume.roi().num_elements();
        progress.start("scanning volume", total);
        match volume.stored_chunks() {
            // Only what is stored is read; the rest is the fill value, counted once. A volume
            // whose metadata claims a huge shape is then as quick to scan as its files.
            Some(stored) if (stored.len() as u64) < grid.num_blocks() => {
                let chunk = volume.chunk_shape();
                let mut seen = std::collections::BTreeSet::new();
                let mut covered = 0u64;
                for index in stored {
                    let Some(block) = grid.block(&index) else {
                        continue;
                    };
                    if !seen.insert(index) {
                        continue;
                    }
                    acc.add(&volume.read_roi(&block.core)?);
                    covered += block.core.num_elements();
                    progress.advance(block.core.num_elements());
                }
                let missing = total.saturating_sub(covered);
                // One voxel of a chunk that is not stored gives the fill value.
                if let Some(block) = grid
                    .iter()
                    .take(seen.len() + 1)
                    .find(|b| !seen.contains(&chunk_index(b.core.start(), chunk)))
                {
                    let one = Roi::new(block.core.start().to_vec(), vec![1; volume.ndim()])?;
                    acc.add_repeated(&volume.read_roi(&one)?, missing);
                }
                progress.advance(missing);
            }
            _ => {
                for block in grid.iter() {
                    acc.add(&volume.read_roi(&block.core)?);
                    progress.advance(block.core.num_elements());
                }
            }
        }
        progress.finish();
        Ok(VolumeStats {
            min: acc.min,
            max: acc.max,
            label_count: volume
                .dtype()
                .is_integer()
                .then_some(acc.labels.len() as u64),
            zero_count: acc.zeros,
            nan_count: acc.nans,
        })
    }
}

fn chunk_index(start: &[u64], chunk: &[u64]) -> Vec<u64> {
    start
        .iter()
        .zip(chunk)
        .map(|(s, c)| s / c.max(&1))
        .collect()
}

#[derive(Default)]
struct Accumulator {
    min: Option<Scalar>,
    max: Option<Scalar>,
    zeros: u64,
    nans: u64,
    labels: HashSet<u64>,
}

impl Accumulator {
    /// Adds `count` voxels equal to the one value of `one`.
    fn add_repeated(&mut self, one: &AnyArray, count: u64) {
        if count == 0 {
            return;
        }
        let (zeros, nans) = (self.zeros, self.nans);
        self.add(one);
        // `add` counted the value once; it stands for `count` voxels.
        self.zeros = zeros + (self.zeros - zeros) * count;
        self.nans = nans + (self.nans - nans) * count;
    }

    fn add(&mut self, data: &AnyArray) {
        // Integers reinterpreted as u64 keep distinct values distinct, all a count needs.
        macro_rules! ints {
            ($a:expr) => {
                self.scan($a, |v| Some(v as u64), |v| Scalar::Int(i128::from(v)))
            };
        }
        let float = |v: f64| Scalar::Float(v);
        match data {
            AnyArray::Bool(a) => self.scan(a, |_| None, |v| Scalar::Int(i128::from(v))),
            AnyArray::U8(a) => ints!(a),
            AnyArray::U16(a) => ints!(a),
            AnyArray::U32(a) => ints!(a),
            AnyArray::U64(a) => ints!(a),
            AnyArray::I8(a) => ints!(a),
            AnyArray::I16(a) => ints!(a),
            AnyArray::I32(a) => ints!(a),
            AnyArray::I64(a) => ints!(a),
            AnyArray::F16(a) => self.scan(a, |_| None, |v| float(v.to_f64())),
            AnyArray::F32(a) => self.scan(a, |_| None, |v| float(v.to_f64())),
            AnyArray::F64(a) => self.scan(a, |_| None, float),
        }
    }

    /// One pass: range, zeros, NaNs and (for labels) distinct ids. Label volumes are runs of
    /// equal ids along x, so only a change of value touches the set. The range is kept in
    /// the element type and converted once, exactly (`scalar`).
    fn scan<T: Element>(
        &mut self,
        a: &ndarray::ArrayD<T>,
        label: impl Fn(T) -> Option<u64>,
        scalar: impl Fn(T) -> Scalar,
    ) {
        let zero = T::default();
        let mut range: Option<(T, T)> = None;
        let mut last = zero;
        for &v in a.iter() {
            // NaN is the one value not equal to itself.
            #[allow(clippy::eq_op)]
            if v != v {
                self.nans += 1;
                continue;
            }
            range = Some(match range {
                Some((lo, hi)) => (if v < lo { v } else { lo }, if v > hi { v } else { hi }),
                None => (v, v),
            });
            if v == zero {
                self.zeros += 1;
            } else if v != last {
                if let Some(id) = label(v) {
                    self.labels.insert(id);
                }
                last = v;
            }
        }
        if let Some((lo, hi)) = range {
            let (lo, hi) = (scalar(lo), scalar(hi));
            self.min = Some(self.min.filter(|&m| m <= lo).unwrap_or(lo));
            self.max = Some(self.max.filter(|&m| m >= hi).unwrap_or(hi));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InMemoryVolume, NoProgress};
    use ndarray::ArrayD;

    #[test]
    fn counts_labels_across_chunks() {
        let a = ArrayD::from_shape_fn(vec![4, 4, 4], |ix| ((ix[0] * 4 + ix[1]) % 5) as u32);
        let v = InMemoryVolume::new(a.into(), "t")
            .with_chunk_shape(&[3, 3, 3])
            .unwrap();
        let s = VolumeStats::compute(&v, &NoProgress).unwrap();
        assert_eq!(s.label_count, Some(4));
        assert_eq!((s.min, s.max), (Some(Scalar::Int(0)), Some(Scalar::Int(4))));
        assert_eq!(s.zero_count, 16);
    }

    #[test]
    fn bool_and_signed_volumes() {
        let b = ArrayD::from_shape_vec(vec![4], vec![true, false, false, true]).unwrap();
        let s = VolumeStats::compute(&InMemoryVolume::new(b.into(), "b"), &NoProgress).unwrap();
        assert_eq!(
            (s.min, s.max, s.zero_count, s.label_count),
            (Some(Scalar::Int(0)), Some(Scalar::Int(1)), 2, None)
        );
        let i = ArrayD::from_shape_vec(vec![5], vec![-1i64, -1, 0, 7, -1]).unwrap();
        let s = VolumeStats::compute(&InMemoryVolume::new(i.into(), "i"), &NoProgress).unwrap();
        assert_eq!(
            (s.min, s.max, s.label_count),
            (Some(Scalar::Int(-1)), Some(Scalar::Int(7)), Some(2))
        );
    }

    proptest::proptest! {
        #[test]
        fn label_count_matches_a_naive_count(
            values in proptest::collection::vec(0u32..6, 60),
            chunk in proptest::array::uniform3(1u64..5),
        ) {
            let a = ArrayD::from_shape_vec(vec![3, 4, 5], values.clone()).unwrap();
            let v = InMemoryVolume::new(a.into(), "p").with_chunk_shape(&chunk).unwrap();
            let s = VolumeStats::compute(&v, &NoProgress).unwrap();
            let distinct: HashSet<u32> = values.iter().copied().filter(|&x| x != 0).collect();
            proptest::prop_assert_eq!(s.label_count, Some(distinct.len() as u64));
            proptest::prop_assert_eq!(s.zero_count, values.iter().filter(|&&x| x == 0).count() as u64);
            proptest::prop_assert_eq!(s.max, values.iter().max().map(|&m| Scalar::Int(m.into())));
        }
    }

    #[test]
    fn u64_ids_keep_every_digit() {
        let a = ArrayD::from_shape_vec(vec![2], vec![(1u64 << 53) + 1, u64::MAX]).unwrap();
        let s = VolumeStats::compute(&InMemoryVolume::new(a.into(), "u"), &NoProgress).unwrap();
        assert_eq!(s.min, Some(Scalar::Int((1 << 53) + 1)));
        assert_eq!(s.max, Some(Scalar::Int(u64::MAX.into())));
        assert_eq!(
            serde_json::to_string(&s.max).unwrap(),
            "18446744073709551615"
        );
    }

    #[test]
    fn floats_have_no_label_count() {
        let a = ArrayD::from_shape_vec(vec![3], vec![0.5f32, f32::NAN, 0.0]).unwrap();
        let s = VolumeStats::compute(&InMemoryVolume::new(a.into(), "f"), &NoProgress).unwrap();
        assert_eq!(s.label_count, None);
        assert_eq!((s.nan_count, s.zero_count), (1, 1));
    }
}
