//! Label (segment id) element types.

use std::fmt;
use std::hash::Hash;

use crate::{AnyArray, CoreError, Element, Result};

/// A segment id type: `u32` (default) or `u64`. 0 is background.
pub trait Label: Element + Eq + Ord + Hash + fmt::Display + bytemuck::Zeroable {
    /// The background label, 0.
    const BACKGROUND: Self;
    /// The largest label.
    const MAX: Self;
    /// The type's name, `u32` or `u64`.
    const NAME: &'static str;

    /// The label for `value`, or `None` if it does not fit.
    fn from_u64(value: u64) -> Option<Self>;
    /// The label as `u64` (lossless).
    fn to_u64(self) -> u64;
    /// The label as an index (lossless on 64-bit targets).
    fn to_usize(self) -> usize {
        self.to_u64() as usize
    }
}

impl Label for u32 {
    const BACKGROUND: Self = 0;
    const MAX: Self = u32::MAX;
    const NAME: &'static str = "u32";
    fn from_u64(value: u64) -> Option<Self> {
        u32::try_from(value).ok()
    }
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
}

impl Label for u64 {
    const BACKGROUND: Self = 0;
    const MAX: Self = u64::MAX;
    const NAME: &'static str = "u64";
    fn from_u64(value: u64) -> Option<Self> {
        Some(value)
    }
    fn to_u64(self) -> u64 {
        self
    }
}

/// The label for a value `v` read from data (`as_u64`: `v` as a non-negative integer, if it
/// is one), or the error that names `v`.
fn label_of<T: fmt::Display, L: Label>(v: T, as_u64: Option<u64>) -> Result<L> {
    as_u64
        .and_then(L::from_u64)
        .ok_or_else(|| CoreError::LabelOutOfRange {
            value: v.to_string(),
            label_type: L::NAME,
            max: L::MAX.to_u64(),
        })
}

/// Converts a label volume of any integer type to labels of type `L`.
///
/// Negative values (PyTC/BANIS "unknown" = −1) and values above `L::MAX` are errors: turn
/// unknown regions into an explicit mask before converting.
///
/// # Errors
/// [`CoreError::LabelOutOfRange`] naming the first bad value; [`CoreError::InvalidParameter`] for
/// float or bool data.
pub fn to_labels<L: Label>(array: &AnyArray) -> Result<ndarray::ArrayD<L>> {
    fn conv<T: Copy + fmt::Display, L: Label>(
        a: &ndarray::ArrayD<T>,
        f: impl Fn(T) -> Option<u64>,
    ) -> Result<ndarray::ArrayD<L>> {
        let mut out = ndarray::ArrayD::<L>::default(a.shape());
        for (o, &v) in out.iter_mut().zip(a.iter()) {
            *o = label_of(v, f(v))?;
        }
        Ok(out)
    }
    match array {
        AnyArray::U8(a) => conv(a, |v| Some(u64::from(v))),
        AnyArray::U16(a) => conv(a, |v| Some(u64::from(v))),
        AnyArray::U32(a) => conv(a, |v| Some(u64::from(v))),
        AnyArray::U64(a) => conv(a, Some),
        AnyArray::I8(a) => conv(a, |v| u64::try_from(v).ok()),
        AnyArray::I16(a) => conv(a, |v| u64::try_from(v).ok()),
        AnyArray::I32(a) => conv(a, |v| u64::try_from(v).ok()),
        AnyArray::I64(a) => conv(a, |v| u64::try_from(v).ok()),
        other => Err(CoreError::InvalidParameter {
            name: "label volume",
            reason: format!(
                "{} data cannot hold labels; labels are integers",
                other.dtype()
            ),
        }),
    }
}

/// Converts a label volume that marks unknown voxels with −1 (the PyTC/BANIS convention) into
/// labels (unknown → 0) and an explicit mask (`false` where unknown). Volumes without −1 get
/// an all-`true` mask.
///
/// # Errors
/// As [`to_labels`] for values other than −1 that do not fit `L`.
pub fn to_labels_and_mask<L: Label>(
    array: &AnyArray,
) -> Result<(ndarray::ArrayD<L>, ndarray::ArrayD<bool>)> {
    fn split<T: Copy + PartialEq + fmt::Display, L: Label>(
        a: &ndarray::ArrayD<T>,
        unknown: T,
        to_u64: impl Fn(T) -> Option<u64>,
    ) -> Result<(ndarray::ArrayD<L>, ndarray::ArrayD<bool>)> {
        let mask = a.mapv(|v| v != unknown);
        let mut labels = ndarray::ArrayD::<L>::default(a.shape());
        for ((o, &v), &known) in labels.iter_mut().zip(a.iter()).zip(mask.iter()) {
            if known {
                *o = label_of(v, to_u64(v))?;
            }
        }
        Ok((labels, mask))
    }
    match array {
        AnyArray::I8(a) => split(a, -1, |v| u64::try_from(v).ok()),
        AnyArray::I16(a) => split(a, -1, |v| u64::try_from(v).ok()),
        AnyArray::I32(a) => split(a, -1, |v| u64::try_from(v).ok()),
        AnyArray::I64(a) => split(a, -1, |v| u64::try_from(v).ok()),
        other => {
            let labels = to_labels(other)?;
            let mask = ndarray::ArrayD::from_elem(labels.shape(), true);
            Ok((labels, mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    #[test]
    fn converts_and_rejects() {
        let a: AnyArray = ArrayD::from_shape_vec(vec![3], vec![0i32, 5, 70000])
            .unwrap()
            .into();
        let l: ArrayD<u32> = to_labels(&a).unwrap();
        assert_eq!(l.as_slice().unwrap(), &[0, 5, 70000]);
        let neg: AnyArray = ArrayD::from_shape_vec(vec![2], vec![1i16, -1])
            .unwrap()
            .into();
        let err = to_labels::<u64>(&neg).unwrap_err().to_string();
        assert!(err.contains("-1"), "{err}");
        let big: AnyArray = ArrayD::from_elem(vec![1], u64::MAX).into();
        assert!(to_labels::<u32>(&big).is_err());
        assert_eq!(to_labels::<u64>(&big).unwrap()[[0]], u64::MAX);
        let f: AnyArray = ArrayD::from_elem(vec![1], 1.0f32).into();
        assert!(to_labels::<u32>(&f).is_err());
    }

    #[test]
    fn minus_one_becomes_a_mask() {
        let a: AnyArray = ArrayD::from_shape_vec(vec![4], vec![3i64, -1, 0, 7])
            .unwrap()
            .into();
        let (l, m) = to_labels_and_mask::<u32>(&a).unwrap();
        assert_eq!(l.as_slice().unwrap(), &[3, 0, 0, 7]);
        assert_eq!(m.as_slice().unwrap(), &[true, false, true, true]);
        let other: AnyArray = ArrayD::from_shape_vec(vec![2], vec![1i32, -2])
            .unwrap()
            .into();
        assert!(to_labels_and_mask::<u32>(&other)
            .unwrap_err()
            .to_string()
            .contains("-2"));
        let unsigned: AnyArray = ArrayD::from_elem(vec![2], 5u16).into();
        let (_, m) = to_labels_and_mask::<u64>(&unsigned).unwrap();
        assert!(m.iter().all(|&k| k));
    }
}
