//! Prediction block by block: each block of a [`BlockGrid`] is predicted with its context
//! (the halo) and only its core is written, so that blocks predicted by different processes
//! fill one output whose values do not depend on which process did which block.

use em_core::{AnyArray, Block, ChunkedVolume, InMemoryVolume, NoProgress};
use ndarray::{Array5, ArrayD};

use crate::{sliding_window, ModelError, Result, SlidingWindowConfig};

/// Predicts one block: reads `block.with_halo` from `image` (`(Z, Y, X)` or
/// `(C, Z, Y, X)`), runs the sliding window over it and writes the block's core into `out`
/// (`(K, Z, Y, X)`, float32, K the model's output channels).
///
/// # Errors
/// Shapes that do not fit, the errors of [`sliding_window`] and of the volumes' storage.
pub fn predict_block(
    image: &dyn ChunkedVolume,
    out: &dyn ChunkedVolume,
    block: &Block,
    config: &SlidingWindowConfig,
    predict: &mut dyn FnMut(Array5<f32>) -> Result<Array5<f32>>,
) -> Result<()> {
    let k = out.shape().first().copied().ok_or(ModelError::BadInput {
        found: Vec::new(),
        expected: "an output of shape (K, Z, Y, X)".into(),
    })?;
    let region = match image.shape().len() {
        4 => block.with_halo.with_leading_axis(0, image.shape()[0]),
        _ => block.with_halo.clone(),
    };
    let input = InMemoryVolume::new(image.read_roi(&region)?, "block");
    let mut shape = vec![k as usize];
    shape.extend(block.with_halo.shape_usize());
    let scratch = InMemoryVolume::new(AnyArray::from(ArrayD::<f32>::zeros(shape)), "prediction");
    sliding_window(&input, &scratch, config, predict, &NoProgress)?;
    let values = scratch.read_roi(&block.core_in_halo().with_leading_axis(0, k))?;
    out.write_roi(&block.core.with_leading_axis(0, k), &values)?;
    Ok(())
}
