//! The reduction of one pyramid level into the next: each output voxel from the window of
//! `factor` input voxels it covers (fewer at the far edges, where the input ends).

use em_core::{f16, AnyArray, Element};
use ndarray::{ArrayD, IxDyn};

use crate::dispatch::dispatch_dtype;

/// How a window of voxels becomes one voxel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reduce {
    /// The mean, computed in `f64` and converted back to the element type.
    Mean,
    /// The most frequent value; among equally frequent ones, the smallest.
    Mode,
}

/// An element type a window mean can be converted back to.
pub(crate) trait Sample: Element {
    /// The element nearest to a mean of elements.
    fn from_mean(mean: f64) -> Self;
}

impl Sample for bool {
    fn from_mean(mean: f64) -> Self {
        mean >= 0.5
    }
}

macro_rules! integer_samples {
    ($($t:ty),*) => {$(
        impl Sample for $t {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            fn from_mean(mean: f64) -> Self {
                // Half away from zero; `as` saturates at the type's range.
                mean.round() as $t
            }
        }
    )*};
}
integer_samples!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Sample for f16 {
    fn from_mean(mean: f64) -> Self {
        f16::from_f64(mean)
    }
}

impl Sample for f32 {
    #[allow(clippy::cast_possible_truncation)]
    fn from_mean(mean: f64) -> Self {
        mean as f32
    }
}

impl Sample for f64 {
    fn from_mean(mean: f64) -> Self {
        mean
    }
}

fn mean<T: Sample>(window: &[T]) -> T {
    let sum: f64 = window.iter().map(|v| v.to_f64()).sum();
    T::from_mean(sum / window.len() as f64)
}

fn mode<T: Sample>(window: &[T]) -> T {
    let mut best = window[0];
    let mut best_count = 0;
    for (i, &v) in window.iter().enumerate() {
        if window[..i].contains(&v) {
            continue;
        }
        let count = window[i..].iter().filter(|&&u| u == v).count();
        if count > best_count || (count == best_count && v < best) {
            best = v;
            best_count = count;
        }
    }
    best
}

/// Reduces C-order `data` of shape `[c, z, y, x]` by `factor` (z, y, x) along the last three
/// axes. `None` when `data` does not hold `shape`'s number of elements or a factor is 0.
pub(crate) fn downsample<T: Sample>(
    data: &[T],
    shape: [usize; 4],
    factor: [usize; 3],
    reduce: Reduce,
) -> Option<(Vec<T>, [usize; 4])> {
    let [c, z, y, x] = shape;
    let [fz, fy, fx] = factor;
    if data.len() != c * z * y * x || factor.contains(&0) {
        return None;
    }
    let out = [c, z.div_ceil(fz), y.div_ceil(fy), x.div_ceil(fx)];
    let mut values = Vec::with_capacity(out.iter().product());
    let mut window = Vec::with_capacity(fz * fy * fx);
    for ci in 0..c {
        for oz in 0..out[1] {
            let zs = oz * fz..(oz * fz + fz).min(z);
            for oy in 0..out[2] {
                let ys = oy * fy..(oy * fy + fy).min(y);
                for ox in 0..out[3] {
                    let (x0, x1) = (ox * fx, (ox * fx + fx).min(x));
                    window.clear();
                    for iz in zs.clone() {
                        for iy in ys.clone() {
                            let row = ((ci * z + iz) * y + iy) * x;
                            window.extend_from_slice(&data[row + x0..row + x1]);
                        }
                    }
                    values.push(match reduce {
                        Reduce::Mean => mean(&window),
                        Reduce::Mode => mode(&window),
                    });
                }
            }
        }
    }
    Some((values, out))
}

/// [`downsample`] of a block `(Z, Y, X)` or `(C, Z, Y, X)` of any element type.
pub(crate) fn downsample_any(
    block: &AnyArray,
    factor: [usize; 3],
    reduce: Reduce,
) -> Option<AnyArray> {
    let shape = block.shape().to_vec();
    let shape4 = match shape.as_slice() {
        [z, y, x] => [1, *z, *y, *x],
        [c, z, y, x] => [*c, *z, *y, *x],
        _ => return None,
    };
    dispatch_dtype!(all, block,
        AnyArray(a) => {
            let a = a.as_standard_layout();
            let (values, out) = downsample(a.as_slice()?, shape4, factor, reduce)?;
            let dims: Vec<usize> = if shape.len() == 3 { out[1..].to_vec() } else { out.to_vec() };
            ArrayD::from_shape_vec(IxDyn(&dims), values).ok().map(AnyArray::from)
        },
        _ => None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_rounds_half_away_from_zero_and_edges_use_what_is_there() {
        // 1 × 1 × 3: windows [1, 2] and [4].
        let (v, s) = downsample(&[1u8, 2, 4], [1, 1, 1, 3], [1, 1, 2], Reduce::Mean).unwrap();
        assert_eq!((v, s), (vec![2, 4], [1, 1, 1, 2]));
        let (v, _) = downsample(&[-1i16, -2], [1, 1, 1, 2], [1, 1, 2], Reduce::Mean).unwrap();
        assert_eq!(v, vec![-2]);
        let (v, _) = downsample(&[0.25f32, 0.5], [1, 1, 1, 2], [1, 1, 2], Reduce::Mean).unwrap();
        assert_eq!(v, vec![0.375]);
    }

    #[test]
    fn mode_prefers_the_most_frequent_then_the_smallest() {
        assert_eq!(mode(&[5u32, 3, 5, 3, 7, 7, 9, 1]), 3);
        assert_eq!(mode(&[5u32, 3, 5, 9]), 5);
        assert_eq!(mode(&[-1i64, 2]), -1);
        assert_eq!(mode(&[u64::MAX, u64::MAX - 1]), u64::MAX - 1);
        assert!(downsample(&[1u8; 3], [1, 1, 2, 2], [1, 2, 2], Reduce::Mode).is_none());
    }
}
