//! Instances from foreground, contour and distance predictions, decoded as PyTorch
//! Connectomics (PyTC) decodes them: seeds are the connected components of a strictly
//! thresholded map, seeds below `min_seed_size` voxels are dropped, a seeded watershed
//! floods the negated surface map within the foreground, and instances below
//! `min_instance_size` voxels are removed.
//!
//! * [`contour_instances`] without a distance map mirrors PyTC's
//!   `decode_binary_contour_watershed`: seeds `fg > seed_threshold && contour <
//!   seed_contour_threshold`, foreground `fg > foreground_threshold && contour <
//!   foreground_contour_threshold` (PyTC has no contour test there: the default 1.1
//!   passes every contour value), flooding `-fg`.
//! * With a distance map it mirrors `decode_binary_contour_distance_watershed`: both masks
//!   also need `distance > seed_distance_threshold` / `> foreground_distance_threshold`,
//!   and the flood runs on `-distance`.
//! * [`distance_instances`] decodes one map: seeds `map > seed_threshold`, foreground
//!   `map > foreground_threshold`, flooding `-map`. On a signed distance map this is the
//!   distance part of `decode_binary_contour_distance_watershed`; on a foreground
//!   probability map with thresholds 0.98 / 0.85 it is `decode_binary_watershed`.
//!
//! Conventions:
//! * Probabilities are floats in `[0, 1]`; the signed distance is in `[-1, 1]` (PyTC's tanh
//!   output). PyTC's uint8 predictions `v` map to `v / 255` (and a uint8 distance to
//!   `v / 255 * 2 - 1`). PyTC's float path (`prediction_scale=1`) compares `v > t` in
//!   float32, as done here. Its uint8 path of `decode_binary_watershed` and
//!   `decode_binary_contour_cc` compares `v > int(255 t)`: pass `⌊255 t⌋ / 255` to get it.
//! * Comparisons are strict (`>` for foreground and distance, `<` for contour). A NaN fails
//!   every comparison, so a voxel with a NaN in any input is neither seed nor foreground
//!   (background in the output), as in numpy; in the unmasked flood it is reached last.
//!   Values outside the ranges above are accepted and compared as they are.
//! * Seeds are connected with 26-connectivity by default (`cc3d.connected_components`'
//!   and `skimage.measure.label`'s default); the flood uses 6-connectivity (the
//!   libraries' default). Small seeds: fewer than `min_seed_size` voxels (skimage's
//!   `remove_small_objects`). Small instances: [`crate::remove_small_objects`] with
//!   PyTC's `remove_small_instances` modes; `min_instance_size` 0 is PyTC's mode `"none"`.
//! * Output labels are `1..=K` in raster (C) order of first appearance. PyTC keeps the seed
//!   ids (with gaps); the partition is the same.
//! * [`Flood`] picks the watershed: `Unmasked` (default) is mahotas' without mask, masked
//!   afterwards, as current PyTC runs it; `Masked` is scikit-image's with the mask (PyTC 1.0
//!   and PyTC's docstrings), about four times faster. Ties (plateaus) are broken as each
//!   library breaks them.
//!
//! The decode is sequential and deterministic (no thread pool is used).

mod label;
mod watershed;

use em_core::Label;
use ndarray::{Array3, ArrayView3, ArrayView4, Axis};

pub use watershed::Flood;

use crate::{remove_small_objects, DecodeError, Result, SmallObjectMode};

/// Options of [`distance_instances`]; defaults are those of the distance channel of PyTC's
/// `decode_binary_contour_distance_watershed`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistanceOptions {
    /// Seeds are the components of `map > seed_threshold` (default 0.5), in `[-1, 1]`.
    pub seed_threshold: f32,
    /// The foreground is `map > foreground_threshold` (default 0.0), in `[-1, 1]`, at most
    /// `seed_threshold`.
    pub foreground_threshold: f32,
    /// Seeds with fewer voxels are dropped (default 32).
    pub min_seed_size: u64,
    /// Instances with fewer voxels are removed (default 128; 0 keeps all).
    pub min_instance_size: u64,
    /// What happens to small instances (default background).
    pub small_object_mode: SmallObjectMode,
    /// Connectivity of the seeds: 6, 18 or 26 (default 26, as PyTC's `cc3d` call).
    pub connectivity: u8,
    /// Unmasked (mahotas, as current PyTC; default) or masked (scikit-image) flood.
    pub flood: Flood,
}

impl Default for DistanceOptions {
    fn default() -> Self {
        Self {
            seed_threshold: 0.5,
            foreground_threshold: 0.0,
            min_seed_size: 32,
            min_instance_size: 128,
            small_object_mode: SmallObjectMode::Background,
            connectivity: 26,
            flood: Flood::Unmasked,
        }
    }
}

/// Options of [`contour_instances`]; defaults are PyTC's
/// (`decode_binary_contour_watershed` and `decode_binary_contour_distance_watershed` agree).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContourOptions {
    /// Seeds need `foreground > seed_threshold` (default 0.9), in `[0, 1]`.
    pub seed_threshold: f32,
    /// The foreground is `foreground > foreground_threshold` (default 0.85), in `[0, 1]`,
    /// at most `seed_threshold`.
    pub foreground_threshold: f32,
    /// Seeds need `contour < seed_contour_threshold` (default 0.8), in `[0, 1]`.
    pub seed_contour_threshold: f32,
    /// The foreground needs `contour < foreground_contour_threshold` (default 1.1: no
    /// test), at least `seed_contour_threshold`; values above 1 switch the test off.
    pub foreground_contour_threshold: f32,
    /// With a distance map, seeds need `distance > seed_distance_threshold` (default 0.5),
    /// in `[-1, 1]`.
    pub seed_distance_threshold: f32,
    /// With a distance map, the foreground needs `distance > foreground_distance_threshold`
    /// (default 0.0, PyTC's function default; its config default is −0.5), in `[-1, 1]`, at
    /// most `seed_distance_threshold`.
    pub foreground_distance_threshold: f32,
    /// Seeds with fewer voxels are dropped (default 32).
    pub min_seed_size: u64,
    /// Instances with fewer voxels are removed (default 128; 0 keeps all).
    pub min_instance_size: u64,
    /// What happens to small instances (default background).
    pub small_object_mode: SmallObjectMode,
    /// Connectivity of the seeds: 6, 18 or 26 (default 26, as PyTC's `cc3d` call).
    pub connectivity: u8,
    /// Unmasked (mahotas, as current PyTC; default) or masked (scikit-image) flood.
    pub flood: Flood,
}

impl Default for ContourOptions {
    fn default() -> Self {
        Self {
            seed_threshold: 0.9,
            foreground_threshold: 0.85,
            seed_contour_threshold: 0.8,
            foreground_contour_threshold: 1.1,
            seed_distance_threshold: 0.5,
            foreground_distance_threshold: 0.0,
            min_seed_size: 32,
            min_instance_size: 128,
            small_object_mode: SmallObjectMode::Background,
            connectivity: 26,
            flood: Flood::Unmasked,
        }
    }
}

/// What a decode found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct InstanceSummary {
    /// Instances in the output (labels `1..=instances`).
    pub instances: u64,
    /// Regions removed (or merged away) as smaller than `min_instance_size`.
    pub removed: u64,
    /// Seeds kept after dropping those below `min_seed_size`.
    pub seeds: u64,
}

fn check_range(name: &'static str, value: f32, lo: f32, hi: f32) -> Result<()> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(DecodeError::InvalidParameter {
            name,
            reason: format!("{value} is outside [{lo}, {hi}]"),
        })
    }
}

fn check_order(name: &'static str, seed: f32, foreground: f32, seed_above: bool) -> Result<()> {
    let ok = if seed_above {
        seed >= foreground
    } else {
        seed <= foreground
    };
    if ok {
        Ok(())
    } else {
        let rel = if seed_above { "below" } else { "above" };
        Err(DecodeError::InvalidParameter {
            name,
            reason: format!(
                "seed threshold {seed} is {rel} the foreground threshold {foreground}: \
                 seeds must lie inside the foreground"
            ),
        })
    }
}

fn check_connectivity(c: u8) -> Result<()> {
    if matches!(c, 6 | 18 | 26) {
        Ok(())
    } else {
        Err(DecodeError::InvalidParameter {
            name: "connectivity",
            reason: format!("{c}; allowed: 6, 18, 26"),
        })
    }
}

fn check_shape(name: &'static str, got: &[usize], want: &[usize]) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(DecodeError::InvalidParameter {
            name,
            reason: format!("shape {got:?} differs from the foreground's {want:?}"),
        })
    }
}

impl DistanceOptions {
    /// Checks ranges and order of the thresholds and the connectivity.
    ///
    /// # Errors
    /// `InvalidParameter` naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        check_range("seed_threshold", self.seed_threshold, -1.0, 1.0)?;
        check_range("foreground_threshold", self.foreground_threshold, -1.0, 1.0)?;
        check_order(
            "seed_threshold",
            self.seed_threshold,
            self.foreground_threshold,
            true,
        )?;
        check_connectivity(self.connectivity)
    }
}

impl ContourOptions {
    /// Checks ranges and order of the thresholds and the connectivity.
    ///
    /// # Errors
    /// `InvalidParameter` naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        check_range("seed_threshold", self.seed_threshold, 0.0, 1.0)?;
        check_range("foreground_threshold", self.foreground_threshold, 0.0, 1.0)?;
        check_order(
            "seed_threshold",
            self.seed_threshold,
            self.foreground_threshold,
            true,
        )?;
        check_range(
            "seed_contour_threshold",
            self.seed_contour_threshold,
            0.0,
            1.0,
        )?;
        check_range(
            "foreground_contour_threshold",
            self.foreground_contour_threshold,
            0.0,
            f32::MAX,
        )?;
        check_order(
            "seed_contour_threshold",
            self.seed_contour_threshold,
            self.foreground_contour_threshold,
            false,
        )?;
        check_range(
            "seed_distance_threshold",
            self.seed_distance_threshold,
            -1.0,
            1.0,
        )?;
        check_range(
            "foreground_distance_threshold",
            self.foreground_distance_threshold,
            -1.0,
            1.0,
        )?;
        check_order(
            "seed_distance_threshold",
            self.seed_distance_threshold,
            self.foreground_distance_threshold,
            true,
        )?;
        check_connectivity(self.connectivity)
    }
}

/// Shared tail: seeds → small seeds dropped → flood → small instances removed.
struct Tail {
    min_seed_size: u64,
    min_instance_size: u64,
    mode: SmallObjectMode,
    connectivity: u8,
    flood: Flood,
}

fn dims3(shape: &[usize]) -> [usize; 3] {
    [shape[0], shape[1], shape[2]]
}

fn finish<L: Label>(
    dims: [usize; 3],
    seed_mask: &[bool],
    foreground: &[bool],
    surface: ArrayView3<'_, f32>,
    tail: &Tail,
) -> Result<(Array3<L>, InstanceSummary)> {
    let n = seed_mask.len();
    let mut labels = vec![L::BACKGROUND; n];
    let count = label::components(seed_mask, dims, tail.connectivity, &mut labels)?;
    // skimage's remove_small_objects: ids with fewer than min_seed_size voxels go.
    let mut size = vec![0u64; count as usize + 1];
    for &l in &labels {
        size[l.to_usize()] += 1;
    }
    let seeds = size
        .iter()
        .skip(1)
        .filter(|&&s| s >= tail.min_seed_size)
        .count() as u64;
    if seeds < count {
        for l in labels.iter_mut() {
            if size[l.to_usize()] < tail.min_seed_size {
                *l = L::BACKGROUND;
            }
        }
    }
    // Lowest cost first: the negated surface; NaN last.
    let cost: Vec<f32> = surface
        .iter()
        .map(|&v| if v.is_nan() { f32::INFINITY } else { -v })
        .collect();
    watershed::flood(&cost, &mut labels, foreground, dims, tail.flood);
    let mut present = vec![false; count as usize + 1];
    for &l in &labels {
        present[l.to_usize()] = true;
    }
    let regions = present.iter().skip(1).filter(|&&p| p).count() as u64;
    let mut out =
        Array3::from_shape_vec(dims, labels).map_err(|e| DecodeError::InvalidParameter {
            name: "shape",
            reason: e.to_string(),
        })?;
    let instances = remove_small_objects(out.view_mut(), tail.min_instance_size, tail.mode)?;
    Ok((
        out,
        InstanceSummary {
            instances,
            removed: regions.saturating_sub(instances),
            seeds,
        },
    ))
}

/// Instances from one map (a signed distance, or a foreground probability), flooded from
/// the components of `map > seed_threshold` over `-map` within `map > foreground_threshold`.
///
/// # Errors
/// `InvalidParameter` for bad options; `TooManyComponents` when the seeds do not fit `L`.
pub fn distance_instances<L: Label>(
    distance: ArrayView3<'_, f32>,
    options: &DistanceOptions,
) -> Result<(Array3<L>, InstanceSummary)> {
    options.validate()?;
    let dims = dims3(distance.shape());
    let (ts, tf) = (options.seed_threshold, options.foreground_threshold);
    let seed: Vec<bool> = distance.iter().map(|&v| v > ts).collect();
    let fg: Vec<bool> = distance.iter().map(|&v| v > tf).collect();
    let tail = Tail {
        min_seed_size: options.min_seed_size,
        min_instance_size: options.min_instance_size,
        mode: options.small_object_mode,
        connectivity: options.connectivity,
        flood: options.flood,
    };
    finish(dims, &seed, &fg, distance, &tail)
}

/// Instances from foreground and contour probabilities, optionally with a signed distance
/// map (PyTC's `decode_binary_contour_watershed` / `decode_binary_contour_distance_watershed`).
///
/// # Errors
/// `InvalidParameter` for bad options or maps whose shapes differ from `foreground`'s;
/// `TooManyComponents` when the seeds do not fit `L`.
pub fn contour_instances<L: Label>(
    foreground: ArrayView3<'_, f32>,
    contour: ArrayView3<'_, f32>,
    distance: Option<ArrayView3<'_, f32>>,
    options: &ContourOptions,
) -> Result<(Array3<L>, InstanceSummary)> {
    options.validate()?;
    check_shape("contour", contour.shape(), foreground.shape())?;
    if let Some(d) = &distance {
        check_shape("distance", d.shape(), foreground.shape())?;
    }
    let dims = dims3(foreground.shape());
    let o = options;
    let mut seed: Vec<bool> = foreground
        .iter()
        .zip(contour.iter())
        .map(|(&f, &c)| f > o.seed_threshold && c < o.seed_contour_threshold)
        .collect();
    let mut fg: Vec<bool> = foreground
        .iter()
        .zip(contour.iter())
        .map(|(&f, &c)| f > o.foreground_threshold && c < o.foreground_contour_threshold)
        .collect();
    if let Some(d) = &distance {
        for ((s, m), &v) in seed.iter_mut().zip(fg.iter_mut()).zip(d.iter()) {
            *s &= v > o.seed_distance_threshold;
            *m &= v > o.foreground_distance_threshold;
        }
    }
    let tail = Tail {
        min_seed_size: o.min_seed_size,
        min_instance_size: o.min_instance_size,
        mode: o.small_object_mode,
        connectivity: o.connectivity,
        flood: o.flood,
    };
    finish(dims, &seed, &fg, distance.unwrap_or(foreground), &tail)
}

/// [`contour_instances`] on PyTC's stacked prediction `(C, Z, Y, X)`: channel 0 the
/// foreground, 1 the contour, 2 (if present) the signed distance.
///
/// # Errors
/// `InvalidParameter` unless there are 2 or 3 channels; otherwise as [`contour_instances`].
pub fn instances_from_channels<L: Label>(
    channels: ArrayView4<'_, f32>,
    options: &ContourOptions,
) -> Result<(Array3<L>, InstanceSummary)> {
    let c = channels.len_of(Axis(0));
    if !(2..=3).contains(&c) {
        return Err(DecodeError::InvalidParameter {
            name: "channels",
            reason: format!("{c} channels; give 2 (foreground, contour) or 3 (+ distance)"),
        });
    }
    let distance = (c == 3).then(|| channels.index_axis(Axis(0), 2));
    contour_instances(
        channels.index_axis(Axis(0), 0),
        channels.index_axis(Axis(0), 1),
        distance,
        options,
    )
}
