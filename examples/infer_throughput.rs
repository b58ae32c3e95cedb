//! Sliding-window inference throughput of MedNeXt on the CPU, for `tools/bench-inference`
//! (which runs MONAI's `sliding_window_inference` on the same weights and volume).
//!
//! ```text
//! cargo run --release --example infer_throughput -- WEIGHTS.safetensors [Z Y X = 128 256 256] [WINDOW=64] [OVERLAP=0.25]
//! ```
//! Input `(1, Z, Y, X)` with value `sin(0.001·i)` at linear index `i`; windows of side
//! `WINDOW`, one at a time, Gaussian blending (σ = side/8, as MONAI's "gaussian"), raw logits.
//! One untimed window first (MONAI's side warms up the same way). Prints one JSON line:
//! `seconds`, `voxels_per_s`, `peak_rss_bytes`, `output_mean`.

use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use em_connectomics::core::{AnyArray, ChunkedVolumeExt, InMemoryVolume, NoProgress};
use em_connectomics::models::{
    config_from_checkpoint, load_mednext, model_predictor, sliding_window, Blend, Cpu, Model,
    OutputActivation, SlidingWindowConfig,
};
use ndarray::{Array4, Array5};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    em_connectomics::core::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: infer_throughput WEIGHTS [Z Y X] [WINDOW] [OVERLAP]";
    let weights = std::path::PathBuf::from(args.get(1).ok_or(usage)?);
    let num = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let dims = [num(2, 128)?, num(3, 256)?, num(4, 256)?];
    let window = num(5, 64)?;
    let overlap: f32 = args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(0.25);

    let config = config_from_checkpoint(&weights)?;
    let device = Default::default();
    let mut mednext = config.init::<Cpu>(&device)?;
    load_mednext(&mut mednext, &weights, false)?;
    let k = config.out_channels;
    let model = Model::MedNeXt(mednext);

    let n: usize = dims.iter().product();
    let input = Array4::from_shape_vec(
        (1, dims[0], dims[1], dims[2]),
        (0..n).map(|i| (i as f32 * 0.001).sin()).collect(),
    )?;
    let input = InMemoryVolume::new(AnyArray::from(input.into_dyn()), "input");
    let output = InMemoryVolume::new(
        AnyArray::from(Array4::<f32>::zeros((k, dims[0], dims[1], dims[2])).into_dyn()),
        "prediction",
    );
    let mut settings = SlidingWindowConfig::new([window; 3]);
    settings.overlap = [overlap; 3];
    settings.blend = Blend::Gaussian;
    settings.activation = OutputActivation::None;

    // Warm-up: one window through the model.
    let w = Tensor::<Cpu, 5>::from_data(
        TensorData::new(
            vec![0.5f32; window.pow(3)],
            vec![1, 1, window, window, window],
        ),
        &device,
    );
    drop(model.forward(w)?);

    let mut predict = model_predictor(&model, &device);
    let t = Instant::now();
    sliding_window(&input, &output, &settings, &mut predict, &NoProgress)?;
    let seconds = t.elapsed().as_secs_f64();
    let out: Array5<f32> = output
        .read_all()?
        .into_typed::<f32>()?
        .into_shape_with_order((1, k, dims[0], dims[1], dims[2]))?;
    let mean = out.iter().map(|&v| f64::from(v)).sum::<f64>() / out.len() as f64;
    println!(
        "{{\"seconds\": {seconds}, \"voxels_per_s\": {}, \"peak_rss_bytes\": {}, \"output_mean\": {mean}}}",
        n as f64 / seconds,
        em_connectomics::core::peak_rss_bytes().unwrap_or(0)
    );
    Ok(())
}
