//! Measures the peak heap of MedNeXt training steps (forward, backward, AdamW step; two steps)
//! on the CPU backend and prints it beside `MedNeXtConfig::training_memory`'s estimate.
//!
//! ```text
//! cargo run --release --example mednext_memory            # the table in docs/models.md
//! cargo run --release --example mednext_memory -- quick   # small configurations only
//! ```
//! One JSON line per configuration, then a Markdown table.

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use em_connectomics::core::PeakAlloc;
use em_connectomics::models::{CpuTrain, CpuTrainCheckpointed, MedNeXtConfig, MedNeXtSize};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc::new();

/// Peak heap bytes above the starting point over two training steps.
fn step<B: burn::tensor::backend::AutodiffBackend + em_connectomics::models::ConvBackend>(
    config: &MedNeXtConfig,
    side: usize,
    batch: usize,
) -> Result<(usize, usize), Box<dyn std::error::Error>> {
    let device = Default::default();
    let base = HEAP.live();
    HEAP.reset_peak();
    let model = config.init::<B>(&device)?;
    let params = model.num_params();
    let mut optim = AdamWConfig::new().init::<B, em_connectomics::models::MedNeXt<B>>();
    let n = batch * config.in_channels * side * side * side;
    let x = Tensor::<B, 5>::from_data(
        TensorData::new(
            (0..n).map(|i| (i as f32 * 0.001).sin()).collect::<Vec<_>>(),
            [batch, config.in_channels, side, side, side],
        ),
        &device,
    );
    // Two steps: from the second on, AdamW's moments are alive during the backward pass.
    let mut model = model;
    for _ in 0..2 {
        let loss = model.forward(x.clone())?.mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    let peak = HEAP.peak() - base;
    drop(model.valid());
    Ok((peak, params))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.first().map(String::as_str) == Some("quick");
    let small = |width: usize, r: usize| MedNeXtConfig {
        width,
        ratios: [r; 9],
        blocks: [1; 9],
        ..MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 3)
    };
    let mut cases: Vec<(String, MedNeXtConfig, usize, usize)> = vec![
        ("custom w8 r2 b1".into(), small(8, 2), 32, 1),
        ("custom w8 r2 b1".into(), small(8, 2), 64, 1),
        ("custom w16 r4 b1".into(), small(16, 4), 48, 2),
        (
            "custom w8 r2 b1 k5 DS".into(),
            MedNeXtConfig {
                kernel_size: 5,
                deep_supervision: true,
                ..small(8, 2)
            },
            48,
            1,
        ),
    ];
    if let [w, r, b, side, batch] = args.as_slice() {
        // One custom configuration: `W R BLOCKS SIDE BATCH`.
        let config = MedNeXtConfig {
            blocks: [b.parse()?; 9],
            ..small(w.parse()?, r.parse()?)
        };
        cases = vec![(
            format!("custom w{w} r{r} b{b}"),
            config,
            side.parse()?,
            batch.parse()?,
        )];
    } else if !quick {
        let s = MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 3);
        cases.push(("S k3".into(), s.clone(), 32, 1));
        cases.push(("S k3".into(), s.clone(), 48, 1));
        cases.push(("S k3".into(), s.clone(), 32, 2));
        cases.push((
            "B k3".into(),
            MedNeXtConfig::size(MedNeXtSize::B, 3, 1, 3),
            32,
            1,
        ));
        cases.push(("S k3 GRN".into(), MedNeXtConfig { grn: true, ..s }, 32, 1));
    }
    let mut rows = Vec::new();
    for (name, config, side, batch) in &cases {
        let (measured, params) = step::<CpuTrain>(config, *side, *batch)?;
        let (checkpointed, _) = step::<CpuTrainCheckpointed>(config, *side, *batch)?;
        let est = config.training_memory([*side; 3], *batch, 4, params);
        let ratio = est.total_bytes as f64 / measured as f64;
        println!(
            "{{\"config\": \"{name}\", \"side\": {side}, \"batch\": {batch}, \"parameters\": {params}, \"measured_bytes\": {measured}, \"checkpointed_bytes\": {checkpointed}, \"estimate_bytes\": {}, \"estimate_over_measured\": {ratio:.3}}}",
            est.total_bytes
        );
        rows.push(format!(
            "| {name} | {side}³ × {batch} | {:.0} | {:.0} | {:.0} | {ratio:.2} |",
            measured as f64 / 1048576.0,
            checkpointed as f64 / 1048576.0,
            est.total_bytes as f64 / 1048576.0
        ));
    }
    println!("\n| model | patch × batch | measured MiB | checkpointed MiB | estimate MiB | estimate / measured |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
