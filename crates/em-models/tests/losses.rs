//! Losses on values with closed forms, masks, automatic pos_weight, deep supervision and
//! their gradients.

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use em_models::{bce_with_logits, downsample, soft_dice, Cpu, LossConfig, PosWeight};

type B = Cpu;

fn t(v: Vec<f32>, shape: [usize; 5]) -> Tensor<B, 5> {
    Tensor::from_data(TensorData::new(v, shape.to_vec()), &Default::default())
}

fn scalar(x: Tensor<B, 1>) -> f32 {
    x.into_data().to_vec::<f32>().unwrap()[0]
}

#[test]
fn bce_closed_forms_masks_and_pos_weight() {
    let ln2 = std::f32::consts::LN_2;
    let zeros = t(vec![0.0; 4], [1, 1, 1, 2, 2]);
    let target = t(vec![1.0, 0.0, 1.0, 0.0], [1, 1, 1, 2, 2]);
    // σ(0) = ½ everywhere: ln 2 per voxel.
    let l = scalar(
        bce_with_logits(zeros.clone(), target.clone(), None, PosWeight::Fixed(1.0)).unwrap(),
    );
    assert!((l - ln2).abs() < 1e-6, "{l}");
    // pos_weight 3: positives count 3×: (3 + 1 + 3 + 1)/4 · ln 2.
    let l = scalar(
        bce_with_logits(zeros.clone(), target.clone(), None, PosWeight::Fixed(3.0)).unwrap(),
    );
    assert!((l - 2.0 * ln2).abs() < 1e-6, "{l}");
    // Large logits stay finite: x = 50 with y = 0 costs 50.
    let big = t(vec![50.0, -50.0, 50.0, -50.0], [1, 1, 1, 2, 2]);
    let l = scalar(
        bce_with_logits(
            big,
            t(vec![0.0, 1.0, 1.0, 0.0], [1, 1, 1, 2, 2]),
            None,
            PosWeight::Fixed(1.0),
        )
        .unwrap(),
    );
    assert!((l - 25.0).abs() < 1e-4, "{l}");
    // Mask: only the masked-in voxels count.
    let logits = t(vec![2.0, -1.0, 0.0, 0.0], [1, 1, 1, 2, 2]);
    let mask = t(vec![1.0, 1.0, 0.0, 0.0], [1, 1, 1, 2, 2]);
    let l =
        scalar(bce_with_logits(logits, target.clone(), Some(mask), PosWeight::Fixed(1.0)).unwrap());
    // y = 1, x = 2: log(1 + e^−2); y = 0, x = −1: log(1 + e^−1).
    let want = ((1.0 + (-2f32).exp()).ln() + (1.0 + (-1f32).exp()).ln()) / 2.0;
    assert!((l - want).abs() < 1e-6, "{l} vs {want}");
    // Auto pos_weight: 1 positive, 3 negatives → 3.
    let one_pos = t(vec![1.0, 0.0, 0.0, 0.0], [1, 1, 1, 2, 2]);
    let l = scalar(bce_with_logits(zeros, one_pos, None, PosWeight::Auto).unwrap());
    assert!((l - (3.0 + 3.0) / 4.0 * ln2).abs() < 1e-6, "{l}");
}

#[test]
fn dice_and_combined_loss() {
    // Perfect confident prediction → Dice loss ≈ 0; σ(0) on a half-positive target → 1 − 2·1/(2 + 2) = 0.5.
    let target = t(vec![1.0, 0.0, 1.0, 0.0], [1, 1, 1, 2, 2]);
    let sure = t(vec![30.0, -30.0, 30.0, -30.0], [1, 1, 1, 2, 2]);
    assert!(scalar(soft_dice(sure, target.clone(), None, 1e-5).unwrap()) < 1e-5);
    let half = t(vec![0.0; 4], [1, 1, 1, 2, 2]);
    let d = scalar(soft_dice(half.clone(), target.clone(), None, 0.0).unwrap());
    assert!((d - 0.5).abs() < 1e-6, "{d}");
    let cfg = LossConfig {
        bce: 0.5,
        dice: 2.0,
        ..LossConfig::default()
    };
    let l = scalar(cfg.loss(half, target, None).unwrap());
    assert!(
        (l - (0.5 * std::f32::consts::LN_2 + 2.0 * 0.5)).abs() < 1e-4,
        "{l}"
    );
}

#[test]
fn downsampling_and_deep_supervision() {
    let x = t((0..64).map(|v| v as f32).collect(), [1, 1, 4, 4, 4]);
    let avg: Vec<f32> = downsample(x.clone(), 2, true)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    // First 2×2×2 block: voxels 0,1,4,5,16,17,20,21 → mean 10.5.
    assert!((avg[0] - 10.5).abs() < 1e-6);
    let near: Vec<f32> = downsample(x.clone(), 2, false)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(near, vec![0.0, 2.0, 8.0, 10.0, 32.0, 34.0, 40.0, 42.0]);
    assert!(downsample(t(vec![0.0; 27], [1, 1, 3, 3, 3]), 2, true).is_err());
    // Deep supervision with zero logits: every scale costs ln 2 (BCE) + Dice; weights sum to 1.
    let target = t((0..64).map(|v| (v % 2) as f32).collect(), [1, 1, 4, 4, 4]);
    let outs = vec![
        t(vec![0.0; 64], [1, 1, 4, 4, 4]),
        t(vec![0.0; 8], [1, 1, 2, 2, 2]),
    ];
    let cfg = LossConfig {
        dice: 0.0,
        ..LossConfig::default()
    };
    let l = scalar(
        cfg.deep_supervision(&outs, target.clone(), None, None, true)
            .unwrap(),
    );
    assert!((l - std::f32::consts::LN_2).abs() < 1e-5, "{l}");
    let wrong = vec![
        t(vec![0.0; 64], [1, 1, 4, 4, 4]),
        t(vec![0.0; 64], [1, 1, 4, 4, 4]),
    ];
    let e = cfg
        .deep_supervision(&wrong, target, None, None, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1/2"), "{e}");
}

#[test]
fn gradients_flow() {
    type A = Autodiff<Cpu>;
    let device = Default::default();
    let logits = Tensor::<A, 5>::from_data(
        TensorData::new(vec![0.5f32, -1.0, 2.0, 0.0], vec![1, 1, 1, 2, 2]),
        &device,
    )
    .require_grad();
    let target = Tensor::<A, 5>::from_data(
        TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], vec![1, 1, 1, 2, 2]),
        &device,
    );
    let loss = bce_with_logits(logits.clone(), target, None, PosWeight::Fixed(1.0)).unwrap();
    let grads = loss.backward();
    let g: Vec<f32> = logits.grad(&grads).unwrap().into_data().to_vec().unwrap();
    // d/dx mean BCE = (σ(x) − y) / n.
    let s = |x: f32| 1.0 / (1.0 + (-x).exp());
    let want = [
        (s(0.5) - 1.0) / 4.0,
        s(-1.0) / 4.0,
        s(2.0) / 4.0,
        (s(0.0) - 1.0) / 4.0,
    ];
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}
