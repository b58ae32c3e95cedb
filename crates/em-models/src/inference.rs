//! Sliding-window inference over a volume: windows of the training patch size on a grid
//! with overlap (the last window snapped to the volume's far edge), blended with a weight
//! map, optionally averaged over the 8 flips (un-flipping direction-dependent affinity
//! channels), and written out slab by slab so that the float output never has to fit in
//! memory when the input is chunked.

use em_core::{AnyArray, ChunkedVolume, DType, Progress, Roi};
use ndarray::{s, Array3, Array4, Array5, ArrayD, Axis};
use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// How the windows' predictions are weighted where they overlap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blend {
    /// Every voxel of a window counts the same.
    Constant,
    /// A Gaussian centred on the window, σ = side / 8, floored at 1e-3 (MONAI's
    /// "gaussian" with `sigma_scale = 0.125`).
    #[default]
    Gaussian,
    /// A smooth bump `exp(1 − 1/(1 − t²))` per axis, t ∈ (−1, 1) across the window.
    Bump,
    /// Chessboard distance to the window face, 1 at the face (BANIS).
    DistanceToFace,
}

/// What is applied to the network's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputActivation {
    /// Raw logits.
    None,
    /// `sigmoid(x)`.
    #[default]
    Sigmoid,
    /// BANIS's `sigmoid(0.2·x)`.
    BanisSigmoid,
}

/// Sliding-window settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlidingWindowConfig {
    /// Window side per axis (use the training patch: GroupNorm statistics depend on it).
    pub window: [usize; 3],
    /// Fraction of the window that neighbouring windows share, per axis (0 ≤ f < 1).
    #[serde(default = "default_overlap")]
    pub overlap: [f32; 3],
    /// Blend weights.
    #[serde(default)]
    pub blend: Blend,
    /// Output activation (applied before blending).
    #[serde(default)]
    pub activation: OutputActivation,
    /// Average over the 8 flips of the window.
    #[serde(default)]
    pub flip_tta: bool,
    /// Also average over the y↔x transpose (with the flips: all 16 in-plane rotations and
    /// reflections × z flips). Needs a window with equal y and x sides, and for offset
    /// channels, the transposed offset of every channel among the channels.
    #[serde(default)]
    pub rot90_tta: bool,
    /// Offset `(dz, dy, dx)` of each output channel whose meaning changes under flips
    /// (affinities, `Source` storage: channel c at v is the edge v — v + o); `None` for
    /// channels such as masks that flip plainly.
    #[serde(default)]
    pub offsets: Option<Vec<[i64; 3]>>,
    /// Windows (test-time-augmentation variants included) per forward pass: on a GPU a
    /// batch keeps the device busy; the result is the same for every batch size.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

/// Half of each window is shared with its neighbour.
fn default_overlap() -> [f32; 3] {
    [0.5; 3]
}

/// One window per forward pass.
fn default_batch() -> usize {
    1
}

impl SlidingWindowConfig {
    /// Settings with `window`, half overlap, Gaussian blending, sigmoid, no TTA.
    pub fn new(window: [usize; 3]) -> Self {
        Self {
            window,
            overlap: default_overlap(),
            blend: Blend::default(),
            activation: OutputActivation::default(),
            flip_tta: false,
            rot90_tta: false,
            offsets: None,
            batch: default_batch(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(ModelError::InvalidParameter {
                name: "sliding window",
                reason: "batch must be at least 1".into(),
            });
        }
        if self.window.contains(&0) || self.overlap.iter().any(|o| !(0.0..1.0).contains(o)) {
            return Err(ModelError::InvalidParameter {
                name: "sliding window",
                reason: format!(
                    "window {:?} (sides ≥ 1) and overlap {:?} (each in [0, 1))",
                    self.window, self.overlap
                ),
            });
        }
        if self.rot90_tta {
            if self.window[1] != self.window[2] {
                return Err(ModelError::InvalidParameter {
                    name: "rot90_tta",
                    reason: format!("needs equal y and x window sides, got {:?}", self.window),
                });
            }
            self.transposed_channels(usize::MAX)?;
        }
        Ok(())
    }

    /// For each output channel, the channel that holds its meaning after a y↔x transpose
    /// (itself without offsets). `k` is the channel count when known.
    fn transposed_channels(&self, k: usize) -> Result<Vec<usize>> {
        let Some(offsets) = &self.offsets else {
            return Ok((0..if k == usize::MAX { 0 } else { k }).collect());
        };
        offsets
            .iter()
            .map(|&[z, y, x]| {
                offsets.iter().position(|&o| o == [z, x, y]).ok_or_else(|| {
                    ModelError::InvalidParameter {
                        name: "rot90_tta",
                        reason: format!(
                            "offset {:?} has no transposed partner {:?} among {offsets:?}",
                            [z, y, x],
                            [z, x, y]
                        ),
                    }
                })
            })
            .collect()
    }

    /// Window start positions along one axis of length `n`: a regular grid, the last window
    /// snapped to the end (one window at 0 when the axis is shorter than the window).
    pub fn starts(n: usize, window: usize, overlap: f32) -> Vec<usize> {
        if n <= window {
            return vec![0];
        }
        let step = ((window as f32 * (1.0 - overlap)).round() as usize).max(1);
        let mut v: Vec<usize> = (0..)
            .map(|i| i * step)
            .take_while(|&s| s + window < n)
            .collect();
        v.push(n - window);
        v
    }

    /// The blend weight map of one window.
    pub fn weights(&self) -> Array3<f32> {
        let [wz, wy, wx] = self.window;
        let axis = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let t = (2.0 * i as f32 + 1.0) / n as f32 - 1.0; // in (−1, 1)
                    match self.blend {
                        Blend::Constant | Blend::DistanceToFace => 1.0,
                        Blend::Gaussian => {
                            let sigma = n as f32 / 8.0;
                            let d = i as f32 - (n as f32 - 1.0) / 2.0;
                            (-(d * d) / (2.0 * sigma * sigma)).exp()
                        }
                        Blend::Bump => (1.0 - 1.0 / (1.0 - t * t).max(1e-6)).exp(),
                    }
                })
                .collect()
        };
        let (az, ay, ax) = (axis(wz), axis(wy), axis(wx));
        Array3::from_shape_fn((wz, wy, wx), |(z, y, x)| {
            let w = match self.blend {
                Blend::DistanceToFace => {
                    let d = |i: usize, n: usize| (i + 1).min(n - i) as f32;
                    d(z, wz).min(d(y, wy)).min(d(x, wx))
                }
                _ => az[z] * ay[y] * ax[x],
            };
            // Never exactly 0, so that every voxel is covered by some weight. The Gaussian
            // has MONAI's floor of 1e-3: over half of a window's voxels sit on it, so it
            // decides how much the windows' borders count where they overlap.
            w.max(if self.blend == Blend::Gaussian {
                1e-3
            } else {
                1e-6
            })
        })
    }
}

/// Runs `predict` (a batch `(1, C, wz, wy, wx)` → `(1, K, wz, wy, wx)`) over `input`
/// `(C, Z, Y, X)` or `(Z, Y, X)` (float32, or uint8 scaled to [0, 1]) and writes the
/// blended result to `output` `(K, Z, Y, X)` float32. Windows are processed in z order
/// and finished slabs are written as soon as no later window touches them.
///
/// # Errors
/// Bad settings or shapes, storage errors, and whatever `predict` returns.
pub fn sliding_window(
    input: &dyn ChunkedVolume,
    output: &dyn ChunkedVolume,
    settings: &SlidingWindowConfig,
    predict: &mut dyn FnMut(Array5<f32>) -> Result<Array5<f32>>,
    progress: &dyn Progress,
) -> Result<()> {
    settings.validate()?;
    let volume = Volume::check(input, output, settings)?;
    let (dims, win) = (volume.dims, settings.window);
    // Windows larger than the volume are cropped to it (the model still sees `win`, padded).
    let starts: Vec<Vec<usize>> = (0..3)
        .map(|a| SlidingWindowConfig::starts(dims[a], win[a], settings.overlap[a]))
        .collect();
    let weights = settings.weights();
    // Windows per forward pass: each brings its test-time-augmentation variants.
    let variants = if settings.rot90_tta { 2 } else { 1 } * if settings.flip_tta { 8 } else { 1 };
    let per_call = (settings.batch / variants).max(1);
    let total = (starts[0].len() * starts[1].len() * starts[2].len()) as u64;
    progress.start("sliding window", total);
    let mut blend = Blender::new(volume.k, dims[1], dims[2]);
    for (zi, &z0) in starts[0].iter().enumerate() {
        let z1 = (z0 + win[0]).min(dims[0]);
        blend.cover(z1);
        // Windows wait here until a forward pass's worth (`settings.batch` variants) is
        // collected; at most that many are held at once.
        let mut row: Vec<Window> = Vec::new();
        let last = (starts[1].len(), starts[2].len());
        for (yi, &y0) in starts[1].iter().enumerate() {
            for (xi, &x0) in starts[2].iter().enumerate() {
                row.push(volume.read_window(input, win, [z0, y0, x0])?);
                if row.len() < per_call && (yi + 1, xi + 1) != last {
                    continue;
                }
                let (places, windows): (Vec<_>, Vec<_>) = std::mem::take(&mut row)
                    .into_iter()
                    .map(|w| ((w.start, w.extent), w.data))
                    .unzip();
                let preds = predict_windows(windows, settings, volume.k, predict)?;
                for ((start, extent), pred) in places.into_iter().zip(preds) {
                    blend.add(start, extent, &pred, &weights);
                    progress.advance(1);
                }
            }
        }
        // Planes before the next window's start are final.
        let done_until = starts[0].get(zi + 1).copied().unwrap_or(dims[0]);
        blend.write_until(done_until, output)?;
    }
    progress.finish();
    Ok(())
}

/// The shapes [`sliding_window`] works with, checked.
struct Volume {
    /// The input is `(Z, Y, X)`, without a channel axis.
    planar: bool,
    /// Input channels.
    c: usize,
    /// Output channels.
    k: usize,
    /// `(Z, Y, X)`.
    dims: [usize; 3],
}

/// One window read from the input, padded to the window size.
struct Window {
    /// Its start `(z, y, x)` in the volume.
    start: [usize; 3],
    /// The part inside the volume, per axis.
    extent: [usize; 3],
    /// `(1, C, wz, wy, wx)`, zero beyond `extent`.
    data: Array5<f32>,
}

impl Volume {
    /// Checks the input and output shapes and the offsets against each other.
    fn check(
        input: &dyn ChunkedVolume,
        output: &dyn ChunkedVolume,
        settings: &SlidingWindowConfig,
    ) -> Result<Self> {
        let (ish, osh) = (input.shape().to_vec(), output.shape().to_vec());
        let planar = ish.len() == 3;
        if !(planar || ish.len() == 4)
            || osh.len() != 4
            || ish[ish.len() - 3..] != osh[1..]
            || output.dtype() != DType::F32
        {
            return Err(ModelError::BadInput {
                expected: format!(
                    "input (Z, Y, X) or (C, Z, Y, X) and a float32 output (K, Z, Y, X) of the same Z, Y, X; output is {} {:?}",
                    output.dtype(),
                    osh
                ),
                found: ish.iter().map(|&v| v as usize).collect(),
            });
        }
        let n = ish.len();
        let (c, k) = (if planar { 1 } else { ish[0] as usize }, osh[0] as usize);
        let dims = [
            ish[n - 3] as usize,
            ish[n - 2] as usize,
            ish[n - 1] as usize,
        ];
        if let Some(o) = &settings.offsets {
            if o.len() != k {
                return Err(ModelError::InvalidParameter {
                    name: "offsets",
                    reason: format!("{} offsets for {k} output channels", o.len()),
                });
            }
        }
        Ok(Self { planar, c, k, dims })
    }

    /// Reads the window of side `win` at `start`, cropped to the volume and zero-padded.
    fn read_window(
        &self,
        input: &dyn ChunkedVolume,
        win: [usize; 3],
        start: [usize; 3],
    ) -> Result<Window> {
        let [z0, y0, x0] = start;
        let c = self.c;
        let extent = [0, 1, 2].map(|a| (start[a] + win[a]).min(self.dims[a]) - start[a]);
        let (mut offset, mut shape) = (
            vec![0, z0 as u64, y0 as u64, x0 as u64],
            vec![
                c as u64,
                extent[0] as u64,
                extent[1] as u64,
                extent[2] as u64,
            ],
        );
        if self.planar {
            // A single-channel (Z, Y, X) input has no channel axis to read.
            offset.remove(0);
            shape.remove(0);
        }
        let roi = Roi::new(offset, shape)?;
        let patch = to_f32(input.read_roi(&roi)?)?;
        let [ez, ey, ex] = extent;
        let mut data = Array5::<f32>::zeros((1, c, win[0], win[1], win[2]));
        data.slice_mut(s![0, .., ..ez, ..ey, ..ex]).assign(
            &patch
                .into_shape_with_order((c, ez, ey, ex))
                .map_err(|_| ModelError::BadInput {
                    expected: "a window read of the requested shape".into(),
                    found: extent.to_vec(),
                })?,
        );
        Ok(Window {
            start,
            extent,
            data,
        })
    }
}

/// The weighted sums of the predictions and of the weights over the z-planes not yet
/// written, `[lo, lo + planes)`.
struct Blender {
    lo: usize,
    acc: Array4<f32>,
    wsum: Array3<f32>,
}

impl Blender {
    fn new(k: usize, ny: usize, nx: usize) -> Self {
        Self {
            lo: 0,
            acc: Array4::zeros((k, 0, ny, nx)),
            wsum: Array3::zeros((0, ny, nx)),
        }
    }

    /// Grows the accumulators to cover the planes up to `z1`.
    fn cover(&mut self, z1: usize) {
        let (k, planes, ny, nx) = self.acc.dim();
        let hi = self.lo + planes;
        if z1 > hi {
            let extra = z1 - hi;
            let mut a2 = Array4::<f32>::zeros((k, planes + extra, ny, nx));
            a2.slice_mut(s![.., ..planes, .., ..]).assign(&self.acc);
            self.acc = a2;
            let mut w2 = Array3::<f32>::zeros((self.wsum.len_of(Axis(0)) + extra, ny, nx));
            w2.slice_mut(s![..self.wsum.len_of(Axis(0)), .., ..])
                .assign(&self.wsum);
            self.wsum = w2;
        }
    }

    /// Adds a window's prediction `(K, wz, wy, wx)`, weighted, at `start` (its part within
    /// `extent`).
    fn add(
        &mut self,
        start: [usize; 3],
        extent: [usize; 3],
        pred: &Array4<f32>,
        weights: &Array3<f32>,
    ) {
        let ([z0, y0, x0], lo) = (start, self.lo);
        let z1 = z0 + extent[0];
        let wz = weights.slice(s![..extent[0], ..extent[1], ..extent[2]]);
        for ch in 0..self.acc.len_of(Axis(0)) {
            let mut dst = self.acc.slice_mut(s![
                ch,
                z0 - lo..z1 - lo,
                y0..y0 + extent[1],
                x0..x0 + extent[2]
            ]);
            let src = pred.slice(s![ch, ..extent[0], ..extent[1], ..extent[2]]);
            ndarray::Zip::from(&mut dst)
                .and(&src)
                .and(&wz)
                .for_each(|d, &p, &w| *d += p * w);
        }
        let mut dw =
            self.wsum
                .slice_mut(s![z0 - lo..z1 - lo, y0..y0 + extent[1], x0..x0 + extent[2]]);
        dw += &wz;
    }

    /// Normalises and writes the planes before `done_until` (which no later window touches)
    /// and drops them.
    fn write_until(&mut self, done_until: usize, output: &dyn ChunkedVolume) -> Result<()> {
        if done_until <= self.lo {
            return Ok(());
        }
        let (k, _, ny, nx) = self.acc.dim();
        let n = done_until - self.lo;
        let mut out = self.acc.slice(s![.., ..n, .., ..]).to_owned();
        let w = self.wsum.slice(s![..n, .., ..]);
        for mut plane in out.outer_iter_mut() {
            ndarray::Zip::from(&mut plane)
                .and(&w)
                .for_each(|v, &w| *v /= w.max(1e-12));
        }
        let roi = Roi::new(
            vec![0, self.lo as u64, 0, 0],
            vec![k as u64, n as u64, ny as u64, nx as u64],
        )?;
        output.write_roi(&roi, &AnyArray::from(out.into_dyn()))?;
        self.acc = self.acc.slice(s![.., n.., .., ..]).to_owned();
        self.wsum = self.wsum.slice(s![n.., .., ..]).to_owned();
        self.lo = done_until;
        Ok(())
    }
}

fn to_f32(a: AnyArray) -> Result<ArrayD<f32>> {
    match a {
        AnyArray::F32(a) => Ok(a),
        a @ AnyArray::U8(_) => Ok(a.to_intensity_f32()),
        other => Err(ModelError::BadInput {
            expected: format!("float32 or uint8 input, not {}", other.dtype()),
            found: other.shape().to_vec(),
        }),
    }
}

/// Windows `(1, C, w, w, w)` through the model (each with its flips and turns if asked),
/// activation applied, `(K, w, w, w)` each. Every window's variants run
/// `settings.batch` at a time, stacked on the batch axis.
fn predict_windows(
    windows: Vec<Array5<f32>>,
    settings: &SlidingWindowConfig,
    k: usize,
    predict: &mut dyn FnMut(Array5<f32>) -> Result<Array5<f32>>,
) -> Result<Vec<Array4<f32>>> {
    let act = |x: f32| match settings.activation {
        OutputActivation::None => x,
        OutputActivation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        OutputActivation::BanisSigmoid => 1.0 / (1.0 + (-0.2 * x).exp()),
    };
    let transposes: &[bool] = if settings.rot90_tta {
        &[false, true]
    } else {
        &[false]
    };
    let flip_sets = if settings.flip_tta { 8u8 } else { 1 };
    let partner = if settings.rot90_tta {
        settings.transposed_channels(k)?
    } else {
        Vec::new()
    };
    // Every (window, transpose, flipped axes) to run, in order.
    let mut variants: Vec<(usize, bool, Vec<usize>)> = Vec::new();
    for i in 0..windows.len() {
        for &transpose in transposes {
            for flips in 0..flip_sets {
                let axes: Vec<usize> = (0..3).filter(|a| flips & (1 << a) != 0).collect();
                variants.push((i, transpose, axes));
            }
        }
    }
    let mut sums: Vec<Option<(Array4<f32>, Array4<f32>)>> = vec![None; windows.len()];
    for group in variants.chunks(settings.batch.max(1)) {
        let inputs: Vec<Array5<f32>> = group
            .iter()
            .map(|(i, transpose, axes)| {
                let mut w = windows[*i].clone();
                if *transpose {
                    w.swap_axes(3, 4);
                }
                for &a in axes {
                    w.invert_axis(Axis(2 + a));
                }
                w.as_standard_layout().into_owned()
            })
            .collect();
        let views: Vec<_> = inputs.iter().map(|w| w.view()).collect();
        let stacked = ndarray::concatenate(Axis(0), &views).map_err(|_| ModelError::BadInput {
            expected: "windows of one shape".into(),
            found: inputs[0].shape().to_vec(),
        })?;
        let out = predict(stacked)?;
        if out.dim().0 != group.len() || out.dim().1 != k {
            return Err(ModelError::BadInput {
                expected: format!("model output ({}, {k}, …)", group.len()),
                found: out.shape().to_vec(),
            });
        }
        for ((i, transpose, axes), p) in group.iter().zip(out.outer_iter()) {
            let mut p = p.mapv(act);
            if !settings.flip_tta && !settings.rot90_tta {
                sums[*i] = Some((p, Array4::ones((1, 1, 1, 1))));
                continue;
            }
            for &a in axes {
                p.invert_axis(Axis(1 + a));
            }
            let (mut s, mut c) = unflip_offsets(&p, axes, settings.offsets.as_deref());
            let (sum, count) = sums[*i].get_or_insert_with(|| {
                let d = p.dim();
                (Array4::zeros(d), Array4::zeros(d))
            });
            if *transpose {
                // In the transposed frame channel ch predicted the edge with y and x swapped,
                // i.e. channel partner[ch] of the original frame.
                s.swap_axes(2, 3);
                c.swap_axes(2, 3);
                for ch in 0..k {
                    let to = partner.get(ch).copied().unwrap_or(ch);
                    sum.index_axis_mut(Axis(0), to)
                        .zip_mut_with(&s.index_axis(Axis(0), ch), |a, b| *a += b);
                    count
                        .index_axis_mut(Axis(0), to)
                        .zip_mut_with(&c.index_axis(Axis(0), ch), |a, b| *a += b);
                }
            } else {
                *sum += &s;
                *count += &c;
            }
        }
    }
    sums.into_iter()
        .map(|s| {
            let (sum, count) = s.expect("every window ran at least its plain variant");
            // Without augmentation the sum is the prediction; with it, the unflipped pass
            // always counts, so every count is ≥ 1.
            Ok(if settings.flip_tta || settings.rot90_tta {
                sum / count
            } else {
                sum
            })
        })
        .collect()
}

/// A flipped prediction moved back to the unflipped frame: a flipped affinity predicts the
/// edge v — v − o at v, so it moves back to v − o. Returns values and a 0/1 coverage map
/// (edges shifted out of the window are not predicted by this pass).
fn unflip_offsets(
    p: &Array4<f32>,
    axes: &[usize],
    offsets: Option<&[[i64; 3]]>,
) -> (Array4<f32>, Array4<f32>) {
    let mut out = Array4::<f32>::zeros(p.dim());
    let mut cnt = Array4::<f32>::zeros(p.dim());
    for ch in 0..p.dim().0 {
        let mut shift = [0i64; 3];
        if let Some(o) = offsets {
            for &a in axes {
                shift[a] = o[ch][a];
            }
        }
        let src = p.index_axis(Axis(0), ch);
        let d = src.dim();
        let mut dst = out.index_axis_mut(Axis(0), ch);
        let mut c = cnt.index_axis_mut(Axis(0), ch);
        for ((z, y, x), v) in dst.indexed_iter_mut() {
            let (sz, sy, sx) = (
                z as i64 + shift[0],
                y as i64 + shift[1],
                x as i64 + shift[2],
            );
            if sz >= 0
                && sy >= 0
                && sx >= 0
                && (sz as usize) < d.0
                && (sy as usize) < d.1
                && (sx as usize) < d.2
            {
                *v = src[[sz as usize, sy as usize, sx as usize]];
                c[[z, y, x]] = 1.0;
            }
        }
    }
    (out, cnt)
}

/// A predictor for [`sliding_window`] from a MedNeXt: each window goes through
/// [`crate::MedNeXt::forward`] on `device` (eval mode: no deep-supervision heads).
pub fn mednext_predictor<'a, B: crate::ConvBackend>(
    model: &'a crate::MedNeXt<B>,
    device: &'a B::Device,
) -> impl FnMut(Array5<f32>) -> Result<Array5<f32>> + 'a {
    tensor_predictor(move |x| model.forward(x), device)
}

/// A predictor for [`sliding_window`] from any registered [`crate::Model`].
pub fn model_predictor<'a, B: crate::ConvBackend>(
    model: &'a crate::Model<B>,
    device: &'a B::Device,
) -> impl FnMut(Array5<f32>) -> Result<Array5<f32>> + 'a {
    tensor_predictor(move |x| model.forward(x), device)
}

fn tensor_predictor<'a, B: burn::tensor::backend::Backend>(
    forward: impl Fn(burn::tensor::Tensor<B, 5>) -> Result<burn::tensor::Tensor<B, 5>> + 'a,
    device: &'a B::Device,
) -> impl FnMut(Array5<f32>) -> Result<Array5<f32>> + 'a {
    move |window: Array5<f32>| {
        let shape = window.shape().to_vec();
        // Logical order: a flipped window's raw buffer is in the unflipped order.
        let data =
            burn::tensor::TensorData::new(window.iter().copied().collect::<Vec<f32>>(), shape);
        let y = forward(burn::tensor::Tensor::<B, 5>::from_data(data, device))?;
        let dims = y.dims();
        let values: Vec<f32> =
            y.into_data()
                .convert::<f32>()
                .to_vec()
                .map_err(|e| ModelError::BadInput {
                    expected: format!("float output ({e:?})"),
                    found: dims.to_vec(),
                })?;
        Array5::from_shape_vec((dims[0], dims[1], dims[2], dims[3], dims[4]), values).map_err(
            |_| ModelError::BadInput {
                expected: "a model output of its stated shape".into(),
                found: dims.to_vec(),
            },
        )
    }
}
