//! Training-step memory of a MedNeXt, counted from what the autodiff graph keeps alive.
//!
//! Every operation of the forward pass stores the tensors its backward pass needs (a
//! convolution its input, GELU its input, GroupNorm its input — on the CPU backend's fused
//! kernel; burn's generic GroupNorm, used on other backends, keeps its centred input and
//! normalised output instead, see [`MedNeXtConfig::generic_norm_extra_floats_per_voxel`]).
//! Summing those per block and per
//! level gives the activation floats per input voxel; the backward pass then needs, at its
//! worst point, the gradients of the widest layer on top. [`MemoryEstimate`] adds parameters,
//! their gradients and AdamW's two moments. `examples/mednext_memory.rs` measures real steps
//! against it (table in `docs/models.md`).

use serde::Serialize;

use crate::MedNeXtConfig;

/// Bytes a training step needs, split by what holds them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// Trainable parameters.
    pub parameters: usize,
    /// Weights, gradients and AdamW's two moments (4 floats per parameter).
    pub parameter_bytes: u64,
    /// Activations kept for the backward pass, per input voxel per batch item.
    pub activation_bytes_per_voxel: f64,
    /// Transient gradients at the backward pass's widest point, per input voxel per item.
    pub backward_bytes_per_voxel: f64,
    /// Input voxels per patch.
    pub patch_voxels: u64,
    /// Batch size.
    pub batch: usize,
    /// Bytes of one element (4 for float32).
    pub element_bytes: usize,
    /// Peak estimate: parameters + batch × voxels × (activations + backward).
    pub total_bytes: u64,
}

impl MedNeXtConfig {
    /// Trainable parameters, counted from the configuration without building the model (so
    /// that an absurd width, kernel or channel count is refused before it is allocated);
    /// `None` when the count overflows.
    pub fn parameter_count(&self) -> Option<u64> {
        let as64 = |v: usize| u64::try_from(v).ok();
        let (w, k, inp, out) = (
            as64(self.width)?,
            as64(self.kernel_size)?,
            as64(self.in_channels)?,
            as64(self.out_channels)?,
        );
        let k3 = k.checked_pow(3)?;
        let ch = |l: u32| w.checked_mul(1u64.checked_shl(l)?);
        // Norm, expansion, projection and (optionally) GRN of a block from c_in to c_out.
        let tail = |c_in: u64, c_out: u64, r: u64| -> Option<u64> {
            let rc = r.checked_mul(c_in)?;
            let grn = if self.grn { 2 * rc } else { 0 };
            (2 * c_in)
                .checked_add(c_in.checked_mul(rc)?.checked_add(rc)?)?
                .checked_add(rc.checked_mul(c_out)?.checked_add(c_out)?)?
                .checked_add(grn)
        };
        let depthwise = |c: u64| c.checked_mul(k3)?.checked_add(c);
        let block = |c: u64, r: u64| depthwise(c)?.checked_add(tail(c, c, r)?);
        let mut total = inp.checked_mul(w)?.checked_add(w)?; // stem
        let head = |c: u64| c.checked_mul(out)?.checked_add(out);
        total = total.checked_add(head(w)?)?;
        for l in 0..5u32 {
            let c = ch(l)?;
            let enc = block(c, as64(self.ratios[l as usize])?)?;
            total = total.checked_add(enc.checked_mul(as64(self.blocks[l as usize])?)?)?;
        }
        for l in 0..4u32 {
            let (c, c2) = (ch(l)?, ch(l + 1)?);
            let down_ratio = match self.variant {
                crate::Variant::Original => self.ratios[l as usize + 1],
                crate::Variant::Monai => self.ratios[l as usize],
            };
            let res = c.checked_mul(c2)?.checked_add(c2)?;
            let down = depthwise(c)?
                .checked_add(tail(c, c2, as64(down_ratio)?)?)?
                .checked_add(res)?;
            let r = as64(self.ratios[8 - l as usize])?;
            let up = depthwise(c2)?
                .checked_add(tail(c2, c, r)?)?
                .checked_add(c2.checked_mul(c)?.checked_add(c)?)?;
            let dec = block(c, r)?.checked_mul(as64(self.blocks[8 - l as usize])?)?;
            total = total.checked_add(down)?.checked_add(up)?.checked_add(dec)?;
            if self.deep_supervision {
                total = total.checked_add(head(c2)?)?;
            }
        }
        Some(total)
    }

    /// Bytes of a forward pass without gradients on `voxels` input voxels (all batch items
    /// together): the float32 weights and, at the widest layer, its input and output at
    /// once; `None` when the figure overflows.
    pub fn inference_memory(&self, voxels: u64) -> Option<u64> {
        let params = self.parameter_count()?;
        let (_, widest) = self.activation_floats_per_voxel();
        let bytes = 4.0 * (params as f64 + 2.0 * widest * voxels as f64);
        (bytes < u64::MAX as f64).then_some(bytes as u64)
    }

    /// Floats the autodiff graph keeps per input voxel (one batch item), summed over the
    /// network, and the transient floats of the widest backward step.
    pub fn activation_floats_per_voxel(&self) -> (f64, f64) {
        let w = self.width as f64;
        let c = |l: usize| w * f64::from(1u32 << l);
        let f = |l: usize| 0.125f64.powi(l as i32);
        // The shared tail after the depthwise conv, on `ch` channels with ratio `r`: the fused
        // GroupNorm keeps its input, the expansion its input, GELU its input, the projection
        // GELU's output (GRN keeps its input and the scaled copy too).
        let tail = |ch: f64, r: usize| {
            let r = r as f64;
            let grn = if self.grn { 2.0 * r * ch } else { 0.0 };
            2.0 * ch + 2.0 * r * ch + grn
        };
        let mut saved = self.in_channels as f64; // the stem's input
                                                 // The backward pass frees each node's saved tensors as it goes; on top of them it holds
                                                 // the gradients of the widest expansion (input and output of a GELU) at one time.
        let mut widest = 0f64;
        let mut expansion = |ch: f64, r: usize, l: usize| {
            widest = f64::max(widest, 2.0 * r as f64 * ch * f(l));
        };
        for l in 0..5 {
            // Encoder stages 0–3 and the bottleneck (stage 4).
            saved += self.blocks[l] as f64 * (c(l) + tail(c(l), self.ratios[l])) * f(l);
            expansion(c(l), self.ratios[l], l);
        }
        for l in 0..4 {
            // Down block l → l + 1: its input (also the skip) at level l, the rest at l + 1.
            let r = match self.variant {
                crate::Variant::Original => self.ratios[l + 1],
                crate::Variant::Monai => self.ratios[l],
            };
            saved += c(l) * f(l) + tail(c(l), r) * f(l + 1);
            expansion(c(l), r, l + 1);
            // Decoder stage l (index 8 − l) and its up block from l + 1, whose transposed
            // depthwise conv already runs at level l's resolution with level l + 1's channels.
            let r = self.ratios[8 - l];
            saved += self.blocks[8 - l] as f64 * (c(l) + tail(c(l), r)) * f(l);
            saved += c(l + 1) * f(l + 1) + tail(c(l + 1), r) * f(l);
            expansion(c(l + 1), r, l);
        }
        saved += w; // the output head's input
        if self.deep_supervision {
            // The heads read tensors the up blocks keep anyway; their outputs are new.
            saved += (1..5).map(|l| self.out_channels as f64 * f(l)).sum::<f64>();
        }
        saved += self.out_channels as f64; // the output itself, alive until the loss is reduced
        (saved, widest)
    }

    /// Floats per input voxel that burn's generic GroupNorm (backends without the fused
    /// kernel, e.g. CUDA) keeps on top of [`MedNeXtConfig::activation_floats_per_voxel`]: one
    /// more tensor per block (centred and normalised input instead of the input).
    pub fn generic_norm_extra_floats_per_voxel(&self) -> f64 {
        let w = self.width as f64;
        let c = |l: usize| w * f64::from(1u32 << l);
        let f = |l: usize| 0.125f64.powi(l as i32);
        let mut extra = 0.0;
        for l in 0..5 {
            extra += self.blocks[l] as f64 * c(l) * f(l);
        }
        for l in 0..4 {
            extra += c(l) * f(l + 1) + self.blocks[8 - l] as f64 * c(l) * f(l) + c(l + 1) * f(l);
        }
        extra
    }

    /// Training-step memory for `batch` patches of `patch` voxels with `element_bytes`-byte
    /// activations (4 for float32, 2 for half precision) and float32 parameters.
    pub fn training_memory(
        &self,
        patch: [usize; 3],
        batch: usize,
        element_bytes: usize,
        parameters: usize,
    ) -> MemoryEstimate {
        let (saved, widest) = self.activation_floats_per_voxel();
        let eb = element_bytes as f64;
        let patch_voxels = patch.iter().map(|&s| s as u64).product::<u64>();
        let parameter_bytes = 16 * parameters as u64;
        let per_voxel = (saved + widest) * eb;
        let total = parameter_bytes as f64 + per_voxel * (batch as u64 * patch_voxels) as f64;
        MemoryEstimate {
            parameters,
            parameter_bytes,
            activation_bytes_per_voxel: saved * eb,
            backward_bytes_per_voxel: widest * eb,
            patch_voxels,
            batch,
            element_bytes,
            total_bytes: total.ceil() as u64,
        }
    }
}
