//! The whole decoding step in memory: affinity components, small-object removal, resizing.

use em_core::Label;
use ndarray::{Array3, ArrayView3, ArrayView4};
use serde::{Deserialize, Serialize};

use crate::cc::{affinity_cc, count_non_finite, Affinity, CcOptions};
use crate::small::{remove_small_objects, SmallObjectMode};
use crate::DecodeSummary;
use crate::{DecodeError, Result};

/// Everything `em decode` does after reading the affinities. Serialisable, so that plans
/// of distributed decodes carry it; missing keys take their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeOptions {
    /// Connected-component parameters.
    pub cc: CcOptions,
    /// Objects with fewer voxels than this are removed (0 or 1: keep all).
    pub min_size: u64,
    /// What happens to removed objects.
    pub small_mode: SmallObjectMode,
    /// Integer nearest-neighbour upscaling of the output per axis (z, y, x); `[1, 1, 1]`
    /// keeps the affinity grid.
    pub scale: [usize; 3],
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            cc: CcOptions::default(),
            min_size: 0,
            small_mode: SmallObjectMode::Background,
            scale: [1, 1, 1],
        }
    }
}

impl DecodeOptions {
    pub(crate) fn check_scale(&self) -> Result<()> {
        if self.scale.contains(&0) {
            return Err(DecodeError::InvalidParameter {
                name: "scale",
                reason: format!("{:?}; every factor must be ≥ 1", self.scale),
            });
        }
        Ok(())
    }
}

/// Labels affinities, removes small objects and upscales, all in memory. Labels are
/// `1..=K` in raster order of first appearance (after removal); returns them with the same
/// summary as [`crate::decode_blockwise`]: components kept (K) and removed, voxels,
/// labelled voxels, non-finite affinities (NaN or ±inf: such edges are off).
///
/// # Errors
/// As [`affinity_cc`], plus a zero scale factor or an output too large to allocate.
pub fn decode<A: Affinity, L: Label>(
    aff: ArrayView4<'_, A>,
    params: &DecodeOptions,
) -> Result<(Array3<L>, DecodeSummary)> {
    params.check_scale()?;
    let mut seg = affinity_cc::<A, L>(aff, &params.cc)?;
    // Components are numbered 1..=K: one pass gives K and the labelled voxels.
    let count = |seg: &Array3<L>| {
        seg.iter().fold((0u64, 0u64), |(k, n), v| {
            (k.max(v.to_u64()), n + u64::from(*v != L::BACKGROUND))
        })
    };
    let (found, mut labelled) = count(&seg);
    let k = if params.min_size > 1 {
        let k = remove_small_objects(seg.view_mut(), params.min_size, params.small_mode)?;
        labelled = count(&seg).1;
        k
    } else {
        found
    };
    let non_finite = params
        .cc
        .channels
        .iter()
        .map(|&c| count_non_finite(aff.index_axis(ndarray::Axis(0), c)))
        .sum();
    let summary = DecodeSummary {
        components: k,
        removed: found - k,
        voxels: seg.len() as u64,
        labelled_voxels: labelled,
        blocks: 1,
        non_finite,
    };
    let seg = if params.scale == [1, 1, 1] {
        seg
    } else {
        upscale(seg.view(), params.scale)?
    };
    Ok((seg, summary))
}

/// Nearest-neighbour upscaling by integer factors per axis: each voxel becomes a
/// `fz × fy × fx` box.
///
/// # Errors
/// [`DecodeError::InvalidParameter`] for a zero factor or an output whose size overflows.
pub fn upscale<T: Copy + Default>(
    labels: ArrayView3<'_, T>,
    [fz, fy, fx]: [usize; 3],
) -> Result<Array3<T>> {
    if fz == 0 || fy == 0 || fx == 0 {
        return Err(DecodeError::InvalidParameter {
            name: "scale",
            reason: format!("{:?}; every factor must be ≥ 1", [fz, fy, fx]),
        });
    }
    let (z, y, x) = labels.dim();
    let dims = [z.checked_mul(fz), y.checked_mul(fy), x.checked_mul(fx)];
    let [Some(oz), Some(oy), Some(ox)] = dims else {
        return Err(DecodeError::InvalidParameter {
            name: "scale",
            reason: format!("{:?} times {:?} overflows", (z, y, x), [fz, fy, fx]),
        });
    };
    if oz.checked_mul(oy).and_then(|p| p.checked_mul(ox)).is_none() {
        return Err(DecodeError::InvalidParameter {
            name: "scale",
            reason: format!("{:?} times {:?} overflows", (z, y, x), [fz, fy, fx]),
        });
    }
    let mut out = Array3::<T>::default((oz, oy, ox));
    let mut row = vec![T::default(); ox];
    for iz in 0..z {
        for iy in 0..y {
            for (ix, &v) in labels.slice(ndarray::s![iz, iy, ..]).iter().enumerate() {
                row[ix * fx..(ix + 1) * fx].fill(v);
            }
            for dz in 0..fz {
                for dy in 0..fy {
                    let mut dst = out.slice_mut(ndarray::s![iz * fz + dz, iy * fy + dy, ..]);
                    for (d, &s) in dst.iter_mut().zip(&row) {
                        *d = s;
                    }
                }
            }
        }
    }
    Ok(out)
}
