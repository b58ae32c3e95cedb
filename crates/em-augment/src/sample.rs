//! A training sample: an image and the volumes that must move with it.

use ndarray::{Array3, Array4, ArrayView3};

use crate::{AugmentError, Result};

/// An image `(C, Z, Y, X)` with label and mask volumes `(Z, Y, X)` of the same spatial shape.
/// Geometric transforms move all of them (linear interpolation for the image, nearest for
/// labels and masks); intensity and defect transforms change the image only, and mark the
/// voxels they destroy in `valid` when the transform is asked to.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Image channels, float32 (EM intensities in [0, 1] by convention).
    pub image: Array4<f32>,
    /// Label volumes (instance or semantic ids).
    pub labels: Vec<Array3<u32>>,
    /// Mask volumes (0 = off).
    pub masks: Vec<Array3<u8>>,
    /// Where the loss counts (0 = ignore); created by the first transform that masks a
    /// defect, `None` while every voxel is valid.
    pub valid: Option<Array3<u8>>,
}

impl Sample {
    /// An image-only sample.
    pub fn new(image: Array4<f32>) -> Self {
        Self {
            image,
            labels: Vec::new(),
            masks: Vec::new(),
            valid: None,
        }
    }

    /// With a label volume.
    pub fn with_label(mut self, label: Array3<u32>) -> Self {
        self.labels.push(label);
        self
    }

    /// With a mask volume.
    pub fn with_mask(mut self, mask: Array3<u8>) -> Self {
        self.masks.push(mask);
        self
    }

    /// Spatial shape `(Z, Y, X)`.
    pub fn shape(&self) -> [usize; 3] {
        let d = self.image.dim();
        [d.1, d.2, d.3]
    }

    /// Checks that every volume has the image's spatial shape.
    ///
    /// # Errors
    /// [`AugmentError::BadSample`] naming the first volume that differs.
    pub fn check(&self) -> Result<()> {
        let s = self.shape();
        if self.image.dim().0 == 0 || s.contains(&0) {
            return Err(AugmentError::BadSample(format!(
                "empty image {:?}",
                self.image.shape()
            )));
        }
        let bad = |what: &str, i: usize, got: &[usize]| {
            AugmentError::BadSample(format!(
                "{what} {i} has shape {got:?}, the image's spatial shape is {s:?}"
            ))
        };
        for (i, l) in self.labels.iter().enumerate() {
            if l.shape() != s {
                return Err(bad("label", i, l.shape()));
            }
        }
        for (i, m) in self.masks.iter().enumerate() {
            if m.shape() != s {
                return Err(bad("mask", i, m.shape()));
            }
        }
        if let Some(v) = &self.valid {
            if v.shape() != s {
                return Err(bad("valid mask", 0, v.shape()));
            }
        }
        Ok(())
    }

    /// Puts every volume in standard (C-order, contiguous) layout, which the transforms'
    /// inner loops read directly.
    pub(crate) fn standardize(&mut self) {
        fn fix<A: Clone, D: ndarray::Dimension>(a: &mut ndarray::Array<A, D>) {
            if !a.is_standard_layout() {
                *a = a.as_standard_layout().into_owned();
            }
        }
        fix(&mut self.image);
        self.labels.iter_mut().for_each(fix);
        self.masks.iter_mut().for_each(fix);
        if let Some(v) = &mut self.valid {
            fix(v);
        }
    }

    /// The valid mask, created (all 1) on first use.
    pub(crate) fn valid_mut(&mut self) -> &mut Array3<u8> {
        let s = self.shape();
        self.valid
            .get_or_insert_with(|| Array3::from_elem((s[0], s[1], s[2]), 1))
    }

    /// Applies `f` to every spatial volume: each image channel (as f32, `linear = true`),
    /// then labels, masks and the valid mask (nearest).
    pub(crate) fn map_volumes(
        &mut self,
        mut f32_op: impl FnMut(ArrayView3<'_, f32>) -> Array3<f32>,
        mut u32_op: impl FnMut(ArrayView3<'_, u32>) -> Array3<u32>,
        mut u8_op: impl FnMut(ArrayView3<'_, u8>) -> Array3<u8>,
    ) {
        use crate::pool::give_array;
        let mut channels: Vec<Array3<f32>> = self.image.outer_iter().map(&mut f32_op).collect();
        let s = channels[0].dim();
        let image = if channels.len() == 1 {
            channels
                .pop()
                .expect("one channel")
                .insert_axis(ndarray::Axis(0))
        } else {
            let n = channels.len();
            let mut data = crate::pool::take(n * s.0 * s.1 * s.2);
            for c in channels {
                data.extend_from_slice(c.as_slice().expect("fresh arrays are standard"));
                give_array(c);
            }
            Array4::from_shape_vec((n, s.0, s.1, s.2), data).expect("one element per voxel")
        };
        give_array(std::mem::replace(&mut self.image, image));
        for l in &mut self.labels {
            let new = u32_op(l.view());
            give_array(std::mem::replace(l, new));
        }
        for m in &mut self.masks {
            let new = u8_op(m.view());
            give_array(std::mem::replace(m, new));
        }
        if let Some(v) = &mut self.valid {
            let new = u8_op(v.view());
            give_array(std::mem::replace(v, new));
        }
    }
}
