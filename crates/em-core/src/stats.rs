//! Summary statistics of a volume computed chunk by chunk, in bounded memory.

use std::collections::HashSet;

use serde::Serialize;

use crate::{AnyArray, ChunkedVolume, ChunkedVolumeExt, Element, Progress, Result};

/// What `em info` reports about a volume's values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VolumeStats {
    /// Smallest value (NaN ignored); `None` for an empty or all-NaN volume.
    pub min: Option<f64>,
    /// Largest value (NaN ignored).
    pub max: Option<f64>,
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
        progress.start("scanning volume", volume.roi().num_elements());
        for block in grid.iter() {
            acc.add(&volume.read_roi(&block.core)?);
            progress.advance(block.core.num_elements());
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

#[derive(Default)]
struct Accumulator {
    min: Option<f64>,
    max: Option<f64>,
    zeros: u64,
    nans: u64,
    labels: HashSet<u64>,
}

impl Accumulator {
    fn add(&mut self, data: &AnyArray) {
        // Integers reinterpreted as u64 keep distinct values distinct, all a count needs.
        macro_rules! ints {
            ($a:expr) => {
                self.scan($a, |v| Some(v as u64))
            };
        }
        match data {
            AnyArray::Bool(a) => self.scan(a, |_| None),
            AnyArray::U8(a) => ints!(a),
            AnyArray::U16(a) => ints!(a),
            AnyArray::U32(a) => ints!(a),
            AnyArray::U64(a) => ints!(a),
            AnyArray::I8(a) => ints!(a),
            AnyArray::I16(a) => ints!(a),
            AnyArray::I32(a) => ints!(a),
            AnyArray::I64(a) => ints!(a),
            AnyArray::F16(a) => self.scan(a, |_| None),
            AnyArray::F32(a) => self.scan(a, |_| None),
            AnyArray::F64(a) => self.scan(a, |_| None),
        }
    }

    /// One pass: range, zeros, NaNs and (for labels) distinct ids. Label volumes are runs of
    /// equal ids along x, so only a change of value touches the set.
    fn scan<T: Element>(&mut self, a: &ndarray::ArrayD<T>, label: impl Fn(T) -> Option<u64>) {
        let zero = T::default();
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut last = zero;
        for &v in a.iter() {
            let f = v.to_f64();
            if f.is_nan() {
                self.nans += 1;
                continue;
            }
            lo = lo.min(f);
            hi = hi.max(f);
            if v == zero {
                self.zeros += 1;
            } else if v != last {
                if let Some(id) = label(v) {
                    self.labels.insert(id);
                }
                last = v;
            }
        }
        if lo <= hi {
            self.min = Some(self.min.map_or(lo, |m| m.min(lo)));
            self.max = Some(self.max.map_or(hi, |m| m.max(hi)));
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
        assert_eq!((s.min, s.max), (Some(0.0), Some(4.0)));
        assert_eq!(s.zero_count, 16);
    }

    #[test]
    fn bool_and_signed_volumes() {
        let b = ArrayD::from_shape_vec(vec![4], vec![true, false, false, true]).unwrap();
        let s = VolumeStats::compute(&InMemoryVolume::new(b.into(), "b"), &NoProgress).unwrap();
        assert_eq!(
            (s.min, s.max, s.zero_count, s.label_count),
            (Some(0.0), Some(1.0), 2, None)
        );
        let i = ArrayD::from_shape_vec(vec![5], vec![-1i64, -1, 0, 7, -1]).unwrap();
        let s = VolumeStats::compute(&InMemoryVolume::new(i.into(), "i"), &NoProgress).unwrap();
        assert_eq!(
            (s.min, s.max, s.label_count),
            (Some(-1.0), Some(7.0), Some(2))
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
            proptest::prop_assert_eq!(s.max, values.iter().max().map(|&m| f64::from(m)));
        }
    }

    #[test]
    fn floats_have_no_label_count() {
        let a = ArrayD::from_shape_vec(vec![3], vec![0.5f32, f32::NAN, 0.0]).unwrap();
        let s = VolumeStats::compute(&InMemoryVolume::new(a.into(), "f"), &NoProgress).unwrap();
        assert_eq!(s.label_count, None);
        assert_eq!((s.nan_count, s.zero_count), (1, 1));
    }
}
