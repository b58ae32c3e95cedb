//! Element types and arrays whose element type is known only at run time.

use std::fmt;

use half::f16;
use ndarray::{ArrayD, ArrayViewD};
use serde::{Deserialize, Serialize};

use crate::{CoreError, Result};

/// The element type of a volume on disk or in memory.
///
/// Serialised by its numpy name (`"uint8"`, `"float32"`); parsing also accepts `"u8"`, `"f32"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum DType {
    /// `bool` (masks).
    Bool,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32` (default labels).
    U32,
    /// `u64`.
    U64,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// IEEE half precision.
    F16,
    /// `f32` (images, affinities).
    F32,
    /// `f64`.
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// True for integer types (signed or not), false for `bool` and floats.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DType::U8
                | DType::U16
                | DType::U32
                | DType::U64
                | DType::I8
                | DType::I16
                | DType::I32
                | DType::I64
        )
    }

    /// True for floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::F32 | DType::F64)
    }

    /// The numpy name (`uint8`, `float32`, …).
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    /// Every type, for listing the allowed values in errors.
    pub const ALL: [DType; 12] = [
        DType::Bool,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::F32,
        DType::F64,
    ];
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.to_ascii_lowercase();
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s || format!("{d:?}").to_ascii_lowercase() == s)
            .ok_or_else(|| CoreError::InvalidParameter {
                name: "dtype",
                reason: format!("{s:?}; allowed: {}", DType::ALL.map(DType::name).join(", ")),
            })
    }
}

impl From<DType> for &'static str {
    fn from(d: DType) -> Self {
        d.name()
    }
}

impl TryFrom<String> for DType {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// A Rust element type that can live in an [`AnyArray`].
pub trait Element: Copy + Default + PartialOrd + Send + Sync + fmt::Debug + 'static {
    /// The run-time tag of this type.
    const DTYPE: DType;
    /// Wraps a typed array.
    fn into_any(array: ArrayD<Self>) -> AnyArray;
    /// Unwraps an array of this type, or gives it back unchanged.
    fn from_any(array: AnyArray) -> std::result::Result<ArrayD<Self>, AnyArray>;
    /// Borrows an array of this type.
    fn view_any(array: &AnyArray) -> Option<ArrayViewD<'_, Self>>;
    /// The value as `f64` (exact for all but 64-bit integers above 2^53).
    fn to_f64(self) -> f64;
}

macro_rules! any_array {
    ($($variant:ident($t:ty)),* $(,)?) => {
        /// An n-dimensional array whose element type is known at run time: what readers
        /// return before the caller asks for a concrete type.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub enum AnyArray {
            $(
                #[doc = concat!("`", stringify!($t), "` elements.")]
                $variant(ArrayD<$t>),
            )*
        }

        impl AnyArray {
            /// The element type.
            pub fn dtype(&self) -> DType {
                match self { $(AnyArray::$variant(_) => DType::$variant,)* }
            }

            /// The shape.
            pub fn shape(&self) -> &[usize] {
                match self { $(AnyArray::$variant(a) => a.shape(),)* }
            }

            /// A zero-filled array of the given type and shape.
            pub fn zeros(dtype: DType, shape: &[usize]) -> Self {
                match dtype { $(DType::$variant => AnyArray::$variant(ArrayD::default(shape.to_vec())),)* }
            }

            /// Converts every element to `f32` (images, affinities); integers above 2^24
            /// lose precision.
            pub fn to_f32(&self) -> ArrayD<f32> {
                match self { $(AnyArray::$variant(a) => a.mapv(|v| v.to_f64() as f32),)* }
            }

            /// Image intensities as `f32`: uint8 scaled to [0, 1] (EM images are 8-bit),
            /// everything else converted as is (float data is taken as already normalised).
            pub fn to_intensity_f32(&self) -> ArrayD<f32> {
                match self {
                    AnyArray::U8(a) => a.mapv(|v| f32::from(v) / 255.0),
                    other => other.to_f32(),
                }
            }

            /// Smallest and largest value, ignoring NaN; `None` when empty or all NaN.
            pub fn min_max(&self) -> Option<(f64, f64)> {
                match self {
                    $(AnyArray::$variant(a) => a.iter().fold(None, |acc, v| {
                        let v = v.to_f64();
                        if v.is_nan() { return acc; }
                        Some(match acc { None => (v, v), Some((lo, hi)) => (f64::min(lo, v), f64::max(hi, v)) })
                    }),)*
                }
            }

            /// The same data in C (row-major) order.
            pub fn into_standard_layout(self) -> Self {
                match self { $(AnyArray::$variant(a) => AnyArray::$variant(if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() }),)* }
            }

            /// Copies the elements of `roi` (which must fit this array) into a new array.
            ///
            /// # Errors
            /// [`CoreError::DimensionMismatch`] or [`CoreError::OutOfBounds`].
            pub fn crop(&self, roi: &crate::Roi) -> Result<Self> {
                match self { $(AnyArray::$variant(a) => Ok(AnyArray::$variant(roi.slice(a)?.to_owned())),)* }
            }

            /// Writes `data` (same type) into `roi` of this array.
            ///
            /// # Errors
            /// [`CoreError::DTypeMismatch`], [`CoreError::ShapeMismatch`], or a region error.
            pub fn assign(&mut self, roi: &crate::Roi, data: &AnyArray) -> Result<()> {
                let found = data.dtype();
                let expected = self.dtype();
                let got: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
                if got != roi.shape() {
                    return Err(CoreError::ShapeMismatch { what: format!("data written to {roi}"), expected: roi.shape().to_vec(), got });
                }
                match (self, data) {
                    $((AnyArray::$variant(dst), AnyArray::$variant(src)) => {
                        roi.slice_mut(dst)?.assign(src);
                        Ok(())
                    })*
                    _ => Err(CoreError::DTypeMismatch { expected, found }),
                }
            }
        }

        $(
            impl Element for $t {
                const DTYPE: DType = DType::$variant;
                fn into_any(array: ArrayD<Self>) -> AnyArray { AnyArray::$variant(array) }
                fn from_any(array: AnyArray) -> std::result::Result<ArrayD<Self>, AnyArray> {
                    match array { AnyArray::$variant(a) => Ok(a), other => Err(other) }
                }
                fn view_any(array: &AnyArray) -> Option<ArrayViewD<'_, Self>> {
                    match array { AnyArray::$variant(a) => Some(a.view()), _ => None }
                }
                #[allow(clippy::cast_lossless, clippy::unnecessary_cast)]
                fn to_f64(self) -> f64 { any_array!(@f64 $variant self) }
            }

            impl From<ArrayD<$t>> for AnyArray {
                fn from(a: ArrayD<$t>) -> Self { AnyArray::$variant(a) }
            }
        )*
    };
    (@f64 Bool $v:ident) => { if $v { 1.0 } else { 0.0 } };
    (@f64 F16 $v:ident) => { $v.to_f64() };
    (@f64 $other:ident $v:ident) => { $v as f64 };
}

any_array!(
    Bool(bool),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    F16(f16),
    F32(f32),
    F64(f64),
);

impl AnyArray {
    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// True when the array holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The array as type `T`, without conversion.
    ///
    /// # Errors
    /// [`CoreError::DTypeMismatch`] when the array holds another type.
    pub fn into_typed<T: Element>(self) -> Result<ArrayD<T>> {
        let found = self.dtype();
        T::from_any(self).map_err(|_| CoreError::DTypeMismatch {
            expected: T::DTYPE,
            found,
        })
    }

    /// A view of the array as type `T`, without conversion.
    ///
    /// # Errors
    /// [`CoreError::DTypeMismatch`] when the array holds another type.
    pub fn view_typed<T: Element>(&self) -> Result<ArrayViewD<'_, T>> {
        T::view_any(self).ok_or(CoreError::DTypeMismatch {
            expected: T::DTYPE,
            found: self.dtype(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_access_checks_the_dtype() {
        let a: AnyArray = ArrayD::<u16>::from_elem(vec![2, 3], 7).into();
        assert_eq!(a.dtype(), DType::U16);
        assert_eq!(a.min_max(), Some((7.0, 7.0)));
        assert!(a.view_typed::<u16>().is_ok());
        let err = a.clone().into_typed::<f32>().unwrap_err().to_string();
        assert_eq!(err, "expected float32 data, found uint16");
        assert_eq!(a.to_f32()[[1, 2]], 7.0);
    }

    #[test]
    fn min_max_skips_nan_and_handles_empty() {
        let a: AnyArray = ArrayD::from_shape_vec(vec![3], vec![f32::NAN, -1.0, 2.5])
            .unwrap()
            .into();
        assert_eq!(a.min_max(), Some((-1.0, 2.5)));
        assert_eq!(AnyArray::zeros(DType::U8, &[0, 4]).min_max(), None);
    }

    #[test]
    fn crop_and_assign() {
        let mut a = AnyArray::zeros(DType::U32, &[4, 4]);
        let roi = crate::Roi::new([1, 1], [2, 2]).unwrap();
        let patch: AnyArray = ArrayD::<u32>::from_elem(vec![2, 2], 9).into();
        a.assign(&roi, &patch).unwrap();
        assert_eq!(a.crop(&roi).unwrap(), patch);
        let wrong: AnyArray = ArrayD::<u8>::from_elem(vec![2, 2], 9).into();
        assert!(matches!(
            a.assign(&roi, &wrong),
            Err(CoreError::DTypeMismatch { .. })
        ));
        let wrong_shape: AnyArray = ArrayD::<u32>::from_elem(vec![3, 2], 9).into();
        assert!(matches!(
            a.assign(&roi, &wrong_shape),
            Err(CoreError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn dtype_names_parse() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.name()));
            assert_eq!(serde_json::from_str::<DType>(&json).unwrap(), d);
        }
        assert_eq!("f32".parse::<DType>().unwrap(), DType::F32);
        assert!("complex64"
            .parse::<DType>()
            .unwrap_err()
            .to_string()
            .contains("uint8"));
    }
}
