//! Summary statistics of a volume computed chunk by chunk, in bounded memory.

use std::collections::HashSet;

use serde::Serialize;

use crate::{AnyArray, ChunkedVolume, ChunkedVolumeExt, DType, Progress, Result};

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
        let count_labels = volume.dtype().is_integer();
        let mut labels = HashSet::new();
        let mut stats = VolumeStats {
            min: None,
            max: None,
            label_count: None,
            zero_count: 0,
            nan_count: 0,
        };
        progress.start("scanning volume", volume.roi().num_elements());
        for block in grid.iter() {
            let data = volume.read_roi(&block.core)?;
            if let Some((lo, hi)) = data.min_max() {
                stats.min = Some(stats.min.map_or(lo, |m| m.min(lo)));
                stats.max = Some(stats.max.map_or(hi, |m| m.max(hi)));
            }
            let f = data.zero_nan_counts();
            stats.zero_count += f.0;
            stats.nan_count += f.1;
            if count_labels {
                collect_labels(&data, &mut labels);
            }
            progress.advance(block.core.num_elements());
        }
        progress.finish();
        if count_labels {
            stats.label_count = Some(labels.len() as u64);
        }
        Ok(stats)
    }
}

fn collect_labels(data: &AnyArray, labels: &mut HashSet<u64>) {
    // i64 reinterpreted as u64 keeps distinct values distinct, which is all a count needs.
    macro_rules! collect {
        ($a:expr) => {
            for &v in $a.iter() {
                if v != 0 {
                    labels.insert(v as u64);
                }
            }
        };
    }
    match data {
        AnyArray::U8(a) => collect!(a),
        AnyArray::U16(a) => collect!(a),
        AnyArray::U32(a) => collect!(a),
        AnyArray::U64(a) => collect!(a),
        AnyArray::I8(a) => collect!(a),
        AnyArray::I16(a) => collect!(a),
        AnyArray::I32(a) => collect!(a),
        AnyArray::I64(a) => collect!(a),
        _ => {}
    }
}

impl AnyArray {
    /// Counts zeros and NaNs in one pass.
    fn zero_nan_counts(&self) -> (u64, u64) {
        if self.dtype() == DType::Bool {
            let a = self.view_typed::<bool>().ok();
            return (a.map_or(0, |a| a.iter().filter(|v| !**v).count() as u64), 0);
        }
        let mut zeros = 0;
        let mut nans = 0;
        for v in self.to_f32().iter() {
            if *v == 0.0 {
                zeros += 1;
            } else if v.is_nan() {
                nans += 1;
            }
        }
        (zeros, nans)
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
    fn floats_have_no_label_count() {
        let a = ArrayD::from_shape_vec(vec![3], vec![0.5f32, f32::NAN, 0.0]).unwrap();
        let s = VolumeStats::compute(&InMemoryVolume::new(a.into(), "f"), &NoProgress).unwrap();
        assert_eq!(s.label_count, None);
        assert_eq!((s.nan_count, s.zero_count), (1, 1));
    }
}
