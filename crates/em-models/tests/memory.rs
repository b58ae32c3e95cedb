//! The training-memory estimate against the measured peak heap of real training steps
//! (forward, backward, AdamW; two steps so that the optimizer moments are alive). Its own
//! test binary: the counting allocator sees every allocation of the process.

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use em_core::PeakAlloc;
use em_models::{CpuTrain, MedNeXt, MedNeXtConfig, MedNeXtSize};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc::new();

fn measured_peak(config: &MedNeXtConfig, side: usize, batch: usize) -> (usize, usize) {
    let device = Default::default();
    let base = HEAP.live();
    HEAP.reset_peak();
    let mut model = config.init::<CpuTrain>(&device).unwrap();
    let params = model.num_params();
    let mut optim = AdamWConfig::new().init::<CpuTrain, MedNeXt<CpuTrain>>();
    let n = batch * config.in_channels * side * side * side;
    let x = Tensor::<CpuTrain, 5>::from_data(
        TensorData::new(
            (0..n).map(|i| (i as f32 * 0.01).sin()).collect::<Vec<_>>(),
            [batch, config.in_channels, side, side, side],
        ),
        &device,
    );
    for _ in 0..2 {
        let loss = model.forward(x.clone()).unwrap().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    (HEAP.peak() - base, params)
}

#[test]
fn estimate_is_within_a_quarter_of_measured_steps() {
    let small = MedNeXtConfig {
        width: 8,
        ratios: [2; 9],
        blocks: [1; 9],
        ..MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 3)
    };
    let wide = MedNeXtConfig {
        width: 8,
        kernel_size: 5,
        ratios: [4, 3, 2, 2, 2, 2, 2, 3, 4],
        blocks: [2; 9],
        deep_supervision: true,
        ..small.clone()
    };
    for (config, side, batch) in [(&small, 32, 1), (&small, 32, 2), (&wide, 32, 1)] {
        let (measured, params) = measured_peak(config, side, batch);
        let est = config.training_memory([side; 3], batch, 4, params);
        let ratio = est.total_bytes as f64 / measured as f64;
        assert!(
            (0.75..=1.25).contains(&ratio),
            "{config:?} {side}³×{batch}: estimate {} vs measured {measured} bytes ({ratio:.2})",
            est.total_bytes
        );
        // Memory grows with the batch: activations, not parameters, dominate at 32³.
        assert!(est.total_bytes > 2 * est.parameter_bytes);
    }
}
