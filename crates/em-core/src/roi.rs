//! Axis-aligned regions of interest in voxel coordinates.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{CoreError, Result};

/// An axis-aligned box of voxels: `start` (inclusive) and `shape`, one entry per axis.
///
/// The one region type used by every crate: reads and writes of a
/// [`crate::ChunkedVolume`], blocks of a [`crate::BlockGrid`], crops of a dataset.
/// Coordinates are non-negative voxel indices in the axis order of the volume.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Roi {
    start: Vec<u64>,
    shape: Vec<u64>,
}

impl Roi {
    /// A region from its start corner and shape.
    ///
    /// # Errors
    /// [`CoreError::DimensionMismatch`] if the two lengths differ, and
    /// [`CoreError::InvalidParameter`] if `start + shape` overflows `u64`.
    pub fn new(start: impl Into<Vec<u64>>, shape: impl Into<Vec<u64>>) -> Result<Self> {
        let (start, shape) = (start.into(), shape.into());
        if start.len() != shape.len() {
            return Err(CoreError::DimensionMismatch {
                what: "region shape".into(),
                expected: start.len(),
                got: shape.len(),
            });
        }
        if start
            .iter()
            .zip(&shape)
            .any(|(s, n)| s.checked_add(*n).is_none())
        {
            return Err(CoreError::InvalidParameter {
                name: "region",
                reason: format!("start {start:?} + shape {shape:?} overflows"),
            });
        }
        Ok(Self { start, shape })
    }

    /// The region `[0, shape)`: a whole volume.
    pub fn from_shape(shape: impl Into<Vec<u64>>) -> Self {
        let shape = shape.into();
        Self {
            start: vec![0; shape.len()],
            shape,
        }
    }

    /// A region from one half-open range per axis; an inverted range is empty.
    pub fn from_ranges(ranges: &[Range<u64>]) -> Self {
        Self {
            start: ranges.iter().map(|r| r.start).collect(),
            shape: ranges
                .iter()
                .map(|r| r.end.saturating_sub(r.start))
                .collect(),
        }
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The first voxel (inclusive corner).
    pub fn start(&self) -> &[u64] {
        &self.start
    }

    /// Extent along each axis.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Extent along each axis as `usize`, for indexing in-memory arrays.
    pub fn shape_usize(&self) -> Vec<usize> {
        self.shape.iter().map(|&n| n as usize).collect()
    }

    /// One past the last voxel along each axis (exclusive corner).
    pub fn end(&self) -> Vec<u64> {
        self.start
            .iter()
            .zip(&self.shape)
            .map(|(s, n)| s + n)
            .collect()
    }

    /// The half-open range covered along each axis.
    pub fn ranges(&self) -> Vec<Range<u64>> {
        self.start
            .iter()
            .zip(&self.shape)
            .map(|(&s, &n)| s..s + n)
            .collect()
    }

    /// Number of voxels (saturating at `u64::MAX`).
    pub fn num_elements(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |acc, &n| acc.saturating_mul(n))
    }

    /// True if the region holds no voxel.
    pub fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    /// True if `point` (one index per axis) lies inside.
    pub fn contains_point(&self, point: &[u64]) -> bool {
        point.len() == self.ndim() && point.iter().zip(self.ranges()).all(|(p, r)| r.contains(p))
    }

    /// True if `other` lies entirely inside `self` (an empty `other` of the same
    /// dimensionality is contained when its start is within bounds).
    pub fn contains(&self, other: &Roi) -> bool {
        other.ndim() == self.ndim()
            && other
                .start
                .iter()
                .zip(other.end())
                .zip(self.start.iter().zip(self.end()))
                .all(|((os, oe), (s, e))| *os >= *s && oe <= e)
    }

    /// The overlap of two regions, or `None` when they do not overlap (or differ in
    /// dimensionality).
    pub fn intersect(&self, other: &Roi) -> Option<Roi> {
        if other.ndim() != self.ndim() {
            return None;
        }
        let mut start = Vec::with_capacity(self.ndim());
        let mut shape = Vec::with_capacity(self.ndim());
        for (a, b) in self.ranges().into_iter().zip(other.ranges()) {
            let lo = a.start.max(b.start);
            let hi = a.end.min(b.end);
            if hi <= lo {
                return None;
            }
            start.push(lo);
            shape.push(hi - lo);
        }
        Some(Roi { start, shape })
    }

    /// The region grown by `amount` voxels on both sides of each axis; the start stops at 0.
    /// Intersect with the volume's region to clip the far side.
    ///
    /// # Errors
    /// [`CoreError::DimensionMismatch`] if `amount` has another length.
    pub fn grow(&self, amount: &[u64]) -> Result<Roi> {
        self.check_ndim("growth amount", amount.len())?;
        let start: Vec<u64> = self
            .start
            .iter()
            .zip(amount)
            .map(|(s, a)| s.saturating_sub(*a))
            .collect();
        let shape = self
            .end()
            .iter()
            .zip(amount)
            .zip(&start)
            .map(|((e, a), s)| e.saturating_add(*a) - s)
            .collect();
        Ok(Roi { start, shape })
    }

    /// This region in the coordinates of `outer` (whose start becomes the origin).
    ///
    /// # Errors
    /// [`CoreError::OutOfBounds`] if `self` is not inside `outer`.
    pub fn relative_to(&self, outer: &Roi) -> Result<Roi> {
        if !outer.contains(self) {
            return Err(CoreError::OutOfBounds {
                roi: self.to_string(),
                shape: outer.shape.clone(),
            });
        }
        Ok(Roi {
            start: self
                .start
                .iter()
                .zip(&outer.start)
                .map(|(a, b)| a - b)
                .collect(),
            shape: self.shape.clone(),
        })
    }

    /// The same region with one more axis in front, e.g. a channel range before `(Z, Y, X)`.
    pub fn with_leading_axis(&self, start: u64, len: u64) -> Roi {
        let mut s = vec![start];
        s.extend_from_slice(&self.start);
        let mut n = vec![len];
        n.extend_from_slice(&self.shape);
        Roi { start: s, shape: n }
    }

    /// The same region without its first axis (e.g. spatial part of a `(C, Z, Y, X)` region).
    pub fn without_leading_axis(&self) -> Roi {
        Roi {
            start: self.start.iter().skip(1).copied().collect(),
            shape: self.shape.iter().skip(1).copied().collect(),
        }
    }

    /// Checks that this region lies inside a volume of shape `shape`.
    ///
    /// # Errors
    /// [`CoreError::DimensionMismatch`] or [`CoreError::OutOfBounds`].
    pub fn check_within(&self, shape: &[u64]) -> Result<()> {
        self.check_ndim("region", shape.len())?;
        if !Roi::from_shape(shape.to_vec()).contains(self) {
            return Err(CoreError::OutOfBounds {
                roi: self.to_string(),
                shape: shape.to_vec(),
            });
        }
        Ok(())
    }

    fn check_ndim(&self, what: &str, got: usize) -> Result<()> {
        if got != self.ndim() {
            return Err(CoreError::DimensionMismatch {
                what: what.into(),
                expected: self.ndim(),
                got,
            });
        }
        Ok(())
    }

    /// Slices an in-memory array (whose origin is voxel 0) to this region.
    ///
    /// # Errors
    /// [`CoreError::DimensionMismatch`] or [`CoreError::OutOfBounds`] if the region does not fit.
    pub fn slice<'a, T>(
        &self,
        array: &'a ndarray::ArrayD<T>,
    ) -> Result<ndarray::ArrayViewD<'a, T>> {
        let shape: Vec<u64> = array.shape().iter().map(|&n| n as u64).collect();
        self.check_within(&shape)?;
        let ranges = self.ranges();
        Ok(array.slice_each_axis(|ax| {
            let r = &ranges[ax.axis.index()];
            ndarray::Slice::from(r.start as usize..r.end as usize)
        }))
    }

    /// Mutable variant of [`Roi::slice`].
    ///
    /// # Errors
    /// [`CoreError::DimensionMismatch`] or [`CoreError::OutOfBounds`] if the region does not fit.
    pub fn slice_mut<'a, T>(
        &self,
        array: &'a mut ndarray::ArrayD<T>,
    ) -> Result<ndarray::ArrayViewMutD<'a, T>> {
        let shape: Vec<u64> = array.shape().iter().map(|&n| n as u64).collect();
        self.check_within(&shape)?;
        let ranges = self.ranges();
        Ok(array.slice_each_axis_mut(|ax| {
            let r = &ranges[ax.axis.index()];
            ndarray::Slice::from(r.start as usize..r.end as usize)
        }))
    }
}

impl fmt::Display for Roi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, r) in self.ranges().iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}..{}", r.start, r.end)?;
        }
        write!(f, "]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn intersection_and_display() {
        let a = Roi::new([0, 0, 0], [10, 10, 10]).unwrap();
        let b = Roi::new([5, 8, 9], [10, 10, 10]).unwrap();
        let c = a.intersect(&b).unwrap();
        assert_eq!(c, Roi::new([5, 8, 9], [5, 2, 1]).unwrap());
        assert_eq!(c.to_string(), "[5..10, 8..10, 9..10]");
        assert!(a
            .intersect(&Roi::new([10, 0, 0], [1, 1, 1]).unwrap())
            .is_none());
        assert!(a.intersect(&Roi::from_shape([1, 1])).is_none());
    }

    #[test]
    fn grow_clips_at_zero_and_relative_to() {
        let a = Roi::new([2, 0, 5], [4, 4, 4]).unwrap();
        let g = a.grow(&[3, 1, 1]).unwrap();
        assert_eq!(g, Roi::new([0, 0, 4], [9, 5, 6]).unwrap());
        assert_eq!(a.relative_to(&g).unwrap().start(), &[2, 0, 1]);
        assert!(g.relative_to(&a).is_err());
        assert!(a.grow(&[1]).is_err());
    }

    #[test]
    fn bad_regions_are_errors() {
        assert!(Roi::new([0, 0], [1]).is_err());
        assert!(Roi::new([u64::MAX], [2]).is_err());
        let r = Roi::new([0, 0, 0], [4, 4, 5]).unwrap();
        let err = r.check_within(&[4, 4, 4]).unwrap_err().to_string();
        assert!(err.contains("[0..4, 0..4, 0..5]"), "{err}");
    }

    #[test]
    fn slicing_an_array() {
        let a = ndarray::ArrayD::from_shape_fn(vec![3, 4], |ix| ix[0] * 10 + ix[1]);
        let v = Roi::new([1, 2], [2, 2]).unwrap().slice(&a).unwrap();
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), vec![12, 13, 22, 23]);
        assert!(Roi::new([2, 2], [2, 2]).unwrap().slice(&a).is_err());
    }

    fn roi3() -> impl Strategy<Value = Roi> {
        (
            prop::array::uniform3(0u64..20),
            prop::array::uniform3(0u64..20),
        )
            .prop_map(|(s, n)| Roi::new(s, n).unwrap())
    }

    proptest! {
        #[test]
        fn intersection_is_contained_in_both(a in roi3(), b in roi3()) {
            match a.intersect(&b) {
                Some(c) => {
                    prop_assert!(a.contains(&c) && b.contains(&c));
                    prop_assert!(!c.is_empty());
                    prop_assert_eq!(b.intersect(&a), Some(c));
                }
                None => {
                    // No voxel of a lies in b.
                    let any = a.ranges().iter().zip(b.ranges()).all(|(x, y)| {
                        x.start.max(y.start) < x.end.min(y.end)
                    });
                    prop_assert!(!any);
                }
            }
        }
    }
}
