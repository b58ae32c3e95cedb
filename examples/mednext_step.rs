//! Times MedNeXt forward, forward+backward and one AdamW step, for `tools/bench-models`
//! (which runs PyTorch + MONAI on the same weights and input).
//!
//! ```text
//! cargo run --release --example mednext_step -- WEIGHTS.safetensors [SIDE=64] [REPEATS=3] [flex|ndarray|cuda|wgpu] [BATCH=1] [f32|bf16|f16]
//! cargo run --release --example mednext_step --features ndarray -- W 64 1 ndarray
//! cargo run --release --example mednext_step --features cuda -- W 128 3 cuda 2
//! ```
//! The configuration is read off the weights. Input `(BATCH, C, SIDE, SIDE, SIDE)` with value
//! `sin(0.001·i)` at linear index `i`. Loss = mean of the output; the AdamW step (lr 1e-3,
//! weight decay 1e-2, as `torch.optim.AdamW`'s defaults) includes zeroing nothing, since burn's
//! gradients are fresh per backward pass. Prints one JSON line: best `forward_s`,
//! `forward_backward_s`, `adamw_step_s`, `peak_rss_bytes`, `output_mean`, after one untimed
//! pass of each. On the GPU each timing ends with a device sync. With `bf16` or `f16` (GPU
//! backends) the input is cast to that type and the weights where they are used, as mixed
//! precision training does, and the output back to float32 for the loss.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use em_connectomics::models::{
    config_from_checkpoint, load_mednext, ConvBackend, Cpu, MedNeXt, MedNeXtConfig,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    em_connectomics::core::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let weights = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: mednext_step WEIGHTS [SIDE] [REPEATS] [BACKEND] [BATCH]")?,
    );
    let side: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let repeats: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let backend = args.get(4).map_or("flex", String::as_str);
    let batch: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let dtype = match args.get(6).map_or("f32", String::as_str) {
        "f32" => burn::tensor::DType::F32,
        "bf16" => burn::tensor::DType::BF16,
        "f16" => burn::tensor::DType::F16,
        other => return Err(format!("precision {other:?}: f32, bf16 or f16").into()),
    };
    let config = config_from_checkpoint(&weights)?;
    let bench = Bench {
        input: (0..batch * config.in_channels * side * side * side)
            .map(|i| (i as f32 * 0.001).sin())
            .collect(),
        shape: vec![batch, config.in_channels, side, side, side],
        config,
        weights,
        repeats,
        dtype,
    };
    let t = match backend {
        "flex" => bench.run::<Cpu>(&Default::default())?,
        #[cfg(feature = "ndarray")]
        "ndarray" => bench.run::<burn::backend::NdArray>(&Default::default())?,
        #[cfg(feature = "cuda")]
        "cuda" => bench.run::<em_connectomics::models::Cuda>(&Default::default())?,
        #[cfg(feature = "wgpu")]
        "wgpu" => bench.run::<em_connectomics::models::Wgpu>(&Default::default())?,
        other => {
            return Err(format!(
                "backend {other:?}: flex (or ndarray / cuda / wgpu with that cargo feature)"
            )
            .into())
        }
    };
    println!(
        "{{\"backend\": \"{backend}\", \"batch\": {batch}, \"side\": {side}, \"forward_s\": {}, \"forward_backward_s\": {}, \"adamw_step_s\": {}, \"peak_rss_bytes\": {}, \"output_mean\": {}}}",
        t.forward_s,
        t.forward_backward_s,
        t.adamw_step_s,
        em_connectomics::core::peak_rss_bytes().unwrap_or(0),
        t.output_mean
    );
    Ok(())
}

struct Bench {
    config: MedNeXtConfig,
    weights: std::path::PathBuf,
    input: Vec<f32>,
    shape: Vec<usize>,
    repeats: usize,
    dtype: burn::tensor::DType,
}

/// Best seconds of each measurement.
struct Timings {
    forward_s: f64,
    forward_backward_s: f64,
    adamw_step_s: f64,
    output_mean: f64,
}

impl Bench {
    fn tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 5> {
        let t = Tensor::from_data(
            TensorData::new(self.input.clone(), self.shape.clone()),
            device,
        );
        if self.dtype == burn::tensor::DType::F32 {
            t
        } else {
            t.cast(self.dtype)
        }
    }

    fn model<B: ConvBackend>(&self, device: &B::Device) -> Res<MedNeXt<B>> {
        let mut model = self.config.init::<B>(device)?;
        load_mednext(&mut model, &self.weights, false)?;
        Ok(model)
    }

    /// Best of `repeats` after one untimed call (the PyTorch side warms up the same way).
    /// Each call's time goes to stderr as it ends: on a GPU the first one includes compiling
    /// the kernels, which can take minutes.
    fn best(&self, what: &str, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
        let t = Instant::now();
        f()?;
        eprintln!("{what}: warm-up {:.3} s", t.elapsed().as_secs_f64());
        let mut best = f64::INFINITY;
        for _ in 0..self.repeats {
            let t = Instant::now();
            f()?;
            let s = t.elapsed().as_secs_f64();
            eprintln!("{what}: {s:.3} s");
            best = best.min(s);
        }
        Ok(best)
    }

    fn run<B: ConvBackend>(&self, device: &B::Device) -> Res<Timings> {
        let sync = || B::sync(device).map_err(|e| format!("device sync: {e:?}"));
        let model = self.model::<B>(device)?;
        let mut output_mean = 0.0;
        let forward_s = self.best("forward", || {
            let m: f32 = model
                .forward(self.tensor(device))?
                .cast(burn::tensor::DType::F32)
                .mean()
                .into_scalar()
                .elem();
            output_mean = f64::from(m);
            Ok(())
        })?;
        drop(model);

        let model = self.model::<Autodiff<B>>(device)?;
        let forward_backward_s = self.best("forward+backward", || {
            let x = self.tensor::<Autodiff<B>>(device).require_grad();
            drop(
                model
                    .forward(x)?
                    .cast(burn::tensor::DType::F32)
                    .mean()
                    .backward(),
            );
            sync()?;
            Ok(())
        })?;

        let mut model = Some(model);
        let mut optim = AdamWConfig::new()
            .with_weight_decay(1e-2)
            .init::<Autodiff<B>, MedNeXt<Autodiff<B>>>();
        let adamw_step_s = self.best("AdamW step", || {
            let m = model.take().ok_or("model lost")?;
            let grads = m
                .forward(self.tensor(device))?
                .cast(burn::tensor::DType::F32)
                .mean()
                .backward();
            let grads = GradientsParams::from_grads(grads, &m);
            let m = optim.step(1e-3, m, grads);
            sync()?;
            model = Some(m);
            Ok(())
        })?;
        // Keeps the trained weights alive until here, as a training loop would.
        drop(model.map(|m| m.valid()));
        Ok(Timings {
            forward_s,
            forward_backward_s,
            adamw_step_s,
            output_mean,
        })
    }
}
