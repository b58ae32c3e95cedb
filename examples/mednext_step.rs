//! Times MedNeXt forward and forward+backward on the CPU backend, for `tools/bench-models`
//! (which runs PyTorch + MONAI on the same weights and input).
//!
//! ```text
//! cargo run --release --example mednext_step -- WEIGHTS.safetensors [SIDE=64] [REPEATS=3]
//! ```
//! The configuration is read off the weights. Input `(1, C, SIDE, SIDE, SIDE)` with value
//! `sin(0.001·i)` at linear index `i`. Prints one JSON line: best `forward_s`,
//! `forward_backward_s` (loss = mean of the output), `peak_rss_bytes`, `output_mean`, after one
//! untimed forward pass.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use em_connectomics::models::{config_from_checkpoint, load_mednext, Cpu};

fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let weights = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: mednext_step WEIGHTS [SIDE] [REPEATS]")?,
    );
    let side: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let repeats: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let config = config_from_checkpoint(&weights)?;
    let device = Default::default();
    let n = config.in_channels * side * side * side;
    let input: Vec<f32> = (0..n).map(|i| (i as f32 * 0.001).sin()).collect();
    let shape = vec![1, config.in_channels, side, side, side];

    let mut model = config.init::<Cpu>(&device)?;
    load_mednext(&mut model, &weights, false)?;
    let mut forward_s = f64::INFINITY;
    let mut mean = 0f64;
    // One untimed pass first, as the PyTorch side warms up.
    let warm = Tensor::<Cpu, 5>::from_data(TensorData::new(input.clone(), shape.clone()), &device);
    let _: f32 = model.forward(warm)?.mean().into_scalar();
    for _ in 0..repeats {
        let x = Tensor::<Cpu, 5>::from_data(TensorData::new(input.clone(), shape.clone()), &device);
        let t = Instant::now();
        let y = model.forward(x)?;
        let m: f32 = y.mean().into_scalar();
        forward_s = forward_s.min(t.elapsed().as_secs_f64());
        mean = f64::from(m);
    }
    drop(model);

    let mut model = config.init::<Autodiff<Cpu>>(&device)?;
    load_mednext(&mut model, &weights, false)?;
    let mut fb_s = f64::INFINITY;
    for _ in 0..repeats {
        let x = Tensor::<Autodiff<Cpu>, 5>::from_data(
            TensorData::new(input.clone(), shape.clone()),
            &device,
        )
        .require_grad();
        let t = Instant::now();
        let loss = model.forward(x)?.mean();
        let grads = loss.backward();
        drop(grads);
        fb_s = fb_s.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"forward_s\": {forward_s}, \"forward_backward_s\": {fb_s}, \"peak_rss_bytes\": {}, \"output_mean\": {mean}}}",
        peak_rss()
    );
    Ok(())
}
