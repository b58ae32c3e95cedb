//! One `match` over element types for every backend.

/// Runs code once per element type: a `match` with one arm for each type of a named set,
/// plus the caller's arms for the types outside it.
///
/// ```text
/// dispatch_dtype!(SET, dtype, T => body, PAT => expr, ...)
/// dispatch_dtype!(SET, array, AnyArray(a) => body, PAT => expr, ...)
/// ```
///
/// The first form matches a [`em_core::DType`] and runs `body` with the type alias `T` naming
/// the Rust element type; the second matches an [`em_core::AnyArray`] (or a reference to
/// one) and runs `body` with `a` bound to the array inside. The caller's `PAT => expr` arms
/// come after the generated ones; a match on an `AnyArray` needs a last catch-all arm (the
/// enum is non-exhaustive).
///
/// `SET` is one of
/// - `all`: every [`em_core::DType`];
/// - `no_f16`: all but `float16` (libhdf5, TIFF and `ndarray-npy` have no half precision);
/// - `no_bool`: all but `bool` (not plain old data);
/// - `precomputed`: the types neuroglancer's precomputed format holds (u8, i8, u16, i16,
///   u32, i32, u64, f32).
macro_rules! dispatch_dtype {
    (all, $($rest:tt)*) => {
        $crate::dispatch::dispatch_dtype!(@types [
            Bool bool, U8 u8, U16 u16, U32 u32, U64 u64, I8 i8, I16 i16, I32 i32, I64 i64,
            F16 em_core::f16, F32 f32, F64 f64
        ] $($rest)*)
    };
    (no_f16, $($rest:tt)*) => {
        $crate::dispatch::dispatch_dtype!(@types [
            Bool bool, U8 u8, U16 u16, U32 u32, U64 u64, I8 i8, I16 i16, I32 i32, I64 i64,
            F32 f32, F64 f64
        ] $($rest)*)
    };
    (no_bool, $($rest:tt)*) => {
        $crate::dispatch::dispatch_dtype!(@types [
            U8 u8, U16 u16, U32 u32, U64 u64, I8 i8, I16 i16, I32 i32, I64 i64,
            F16 em_core::f16, F32 f32, F64 f64
        ] $($rest)*)
    };
    (precomputed, $($rest:tt)*) => {
        $crate::dispatch::dispatch_dtype!(@types [
            U8 u8, I8 i8, U16 u16, I16 i16, U32 u32, I32 i32, U64 u64, F32 f32
        ] $($rest)*)
    };
    (@types [$($v:ident $t:ty),*] $x:expr, AnyArray($a:ident) => $body:expr
        $(, $pat:pat => $other:expr)* $(,)?) => {
        match $x {
            $(em_core::AnyArray::$v($a) => $body,)*
            $($pat => $other,)*
        }
    };
    (@types [$($v:ident $t:ty),*] $x:expr, $T:ident => $body:expr
        $(, $pat:pat => $other:expr)* $(,)?) => {
        match $x {
            $(em_core::DType::$v => {
                type $T = $t;
                $body
            })*
            $($pat => $other,)*
        }
    };
}

pub(crate) use dispatch_dtype;
