//! Times MedNeXt forward and forward+backward on the CPU backend, for `tools/bench-models`
//! (which runs PyTorch + MONAI on the same weights and input).
//!
//! ```text
//! cargo run --release --example mednext_step -- WEIGHTS.safetensors [SIDE=64] [REPEATS=3] [flex|ndarray]
//! cargo run --release --example mednext_step --features ndarray -- W 64 1 ndarray
//! ```
//! The configuration is read off the weights. Input `(1, C, SIDE, SIDE, SIDE)` with value
//! `sin(0.001·i)` at linear index `i`. Prints one JSON line: best `forward_s`,
//! `forward_backward_s` (loss = mean of the output), `peak_rss_bytes`, `output_mean`, after one
//! untimed forward pass.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use em_connectomics::models::{config_from_checkpoint, load_mednext, Cpu, MedNeXtConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let weights = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: mednext_step WEIGHTS [SIDE] [REPEATS]")?,
    );
    let side: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let repeats: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let backend = args.get(4).map_or("flex", String::as_str);
    let config = config_from_checkpoint(&weights)?;
    let n = config.in_channels * side * side * side;
    let input: Vec<f32> = (0..n).map(|i| (i as f32 * 0.001).sin()).collect();
    let shape = vec![1, config.in_channels, side, side, side];
    let (forward_s, fb_s, mean) = match backend {
        "flex" => time::<Cpu>(&config, &weights, &input, &shape, repeats)?,
        #[cfg(feature = "ndarray")]
        "ndarray" => time::<burn::backend::NdArray>(&config, &weights, &input, &shape, repeats)?,
        other => {
            return Err(
                format!("backend {other:?}: flex (or ndarray with --features ndarray)").into(),
            )
        }
    };
    println!(
        "{{\"backend\": \"{backend}\", \"forward_s\": {forward_s}, \"forward_backward_s\": {fb_s}, \"peak_rss_bytes\": {}, \"output_mean\": {mean}}}",
        em_connectomics::core::peak_rss_bytes().unwrap_or(0)
    );
    Ok(())
}

/// Best forward and forward+backward seconds over `repeats`, and the output mean.
fn time<B: em_connectomics::models::ConvBackend>(
    config: &MedNeXtConfig,
    weights: &std::path::Path,
    input: &[f32],
    shape: &[usize],
    repeats: usize,
) -> Result<(f64, f64, f64), Box<dyn std::error::Error>> {
    let device = Default::default();
    let mut model = config.init::<B>(&device)?;
    load_mednext(&mut model, weights, false)?;
    let mut forward_s = f64::INFINITY;
    let mut mean = 0f64;
    let tensor = |d: &B::Device| {
        Tensor::<B, 5>::from_data(TensorData::new(input.to_vec(), shape.to_vec()), d)
    };
    // One untimed pass first, as the PyTorch side warms up.
    let _: f32 = model.forward(tensor(&device))?.mean().into_scalar().elem();
    for _ in 0..repeats {
        let x = tensor(&device);
        let t = Instant::now();
        let m: f32 = model.forward(x)?.mean().into_scalar().elem();
        forward_s = forward_s.min(t.elapsed().as_secs_f64());
        mean = f64::from(m);
    }
    drop(model);

    let mut model = config.init::<Autodiff<B>>(&device)?;
    load_mednext(&mut model, weights, false)?;
    let mut fb_s = f64::INFINITY;
    for _ in 0..repeats {
        let x = Tensor::<Autodiff<B>, 5>::from_data(
            TensorData::new(input.to_vec(), shape.to_vec()),
            &device,
        )
        .require_grad();
        let t = Instant::now();
        let grads = model.forward(x)?.mean().backward();
        drop(grads);
        fb_s = fb_s.min(t.elapsed().as_secs_f64());
    }
    Ok((forward_s, fb_s, mean))
}
