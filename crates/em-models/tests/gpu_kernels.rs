//! The GPU kernels (CubeCL, here on wgpu: Mesa's software Vulkan driver where there is no
//! GPU) against the CPU kernels: every operation of the `ConvBackend` extension and its
//! gradients, in f32 and f16, on odd shapes; then a small MedNeXt's forward pass and
//! gradients against the CPU backend's.
//!
//! Run with `cargo test -p em-models --features wgpu --test gpu_kernels`.

use burn::backend::Autodiff;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use em_models::{ConvBackend, Cpu, MedNeXtConfig, MedNeXtSize, Wgpu};

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One input: dims and values (rounded to f16 where the GPU side runs in f16, so both
/// sides see the same numbers).
#[derive(Clone)]
struct Input {
    dims: Vec<usize>,
    data: Vec<f32>,
}

impl Input {
    fn new(dims: &[usize], seed: u64, half: bool) -> Self {
        let mut data = values(dims.iter().product(), seed);
        if half {
            data = data
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect();
        }
        Self {
            dims: dims.to_vec(),
            data,
        }
    }

    fn on<B: Backend>(&self, dtype: DType, device: &B::Device) -> FloatTensor<B> {
        let len = self.data.len();
        let t = Tensor::<B, 1>::from_data(TensorData::new(self.data.clone(), [len]), device)
            .cast(dtype);
        match self.dims[..] {
            [_] => t.into_primitive().tensor(),
            [a, b, c, d, e] => t.reshape([a, b, c, d, e]).into_primitive().tensor(),
            _ => unreachable!("inputs are rank 1 or 5"),
        }
    }
}

/// Any rank-1 or rank-5 float tensor's values as f32.
fn read_any<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    let rank = burn::tensor::TensorMetadata::shape(&t).num_dims();
    let flat: Tensor<B, 1> = match rank {
        1 => Tensor::from_primitive(TensorPrimitive::Float(t)),
        5 => Tensor::<B, 5>::from_primitive(TensorPrimitive::Float(t)).flatten(0, 4),
        _ => unreachable!("outputs are rank 1 or 5"),
    };
    flat.cast(DType::F32)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap()
}

/// `got` equals `want` within `tol` relative to want's largest magnitude.
fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        got.iter().all(|v| v.is_finite()) && worst <= tol * scale,
        "{what}: worst difference {worst} against scale {scale} (tolerance {tol})"
    );
}

type Op<B> = fn(&[FloatTensor<B>]) -> Vec<FloatTensor<B>>;

/// Runs `gpu` on wgpu (in `dtype`) and `cpu` on Flex (f32) on the same inputs; compares
/// every output.
fn check(what: &str, inputs: &[Input], dtype: DType, gpu: Op<Wgpu>, cpu: Op<Cpu>) {
    let tol = if dtype == DType::F32 { 1e-4 } else { 2e-2 };
    let wdev = Default::default();
    let cdev = Default::default();
    let w: Vec<_> = inputs.iter().map(|i| i.on::<Wgpu>(dtype, &wdev)).collect();
    let c: Vec<_> = inputs
        .iter()
        .map(|i| i.on::<Cpu>(DType::F32, &cdev))
        .collect();
    let got = gpu(&w);
    let want = cpu(&c);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.into_iter().zip(want).enumerate() {
        let dt = g.dtype;
        assert_eq!(dt, dtype, "{what} output {i} keeps the input dtype");
        close(
            &read_any::<Wgpu>(g),
            &read_any::<Cpu>(w),
            tol,
            &format!("{what} ({dtype:?}) output {i}"),
        );
    }
}

macro_rules! op {
    ($b:ty, |$t:ident| $body:expr) => {{
        fn f(ts: &[FloatTensor<$b>]) -> Vec<FloatTensor<$b>> {
            let $t: Vec<FloatTensor<$b>> = ts.to_vec();
            $body
        }
        f as Op<$b>
    }};
}

macro_rules! both {
    ($what:expr, $inputs:expr, |$t:ident| $body:expr) => {
        for dtype in [DType::F32, DType::F16] {
            let half = dtype == DType::F16;
            let inputs: Vec<Input> = $inputs(half);
            check(
                $what,
                &inputs,
                dtype,
                op!(Wgpu, |$t| {
                    type B = Wgpu;
                    $body
                }),
                op!(Cpu, |$t| {
                    type B = Cpu;
                    $body
                }),
            );
        }
    };
}

fn tuple3<T>(t: (T, T, T)) -> Vec<T> {
    vec![t.0, t.1, t.2]
}

#[test]
fn depthwise_convolution_and_gradients() {
    for (dims, k) in [
        ([1, 3, 9, 10, 11], 3),
        ([2, 2, 8, 7, 9], 5),
        ([1, 2, 16, 16, 17], 3),
    ] {
        let c = dims[1];
        let mk = move |half: bool| {
            vec![
                Input::new(&dims, 1, half),
                Input::new(&[c, 1, k, k, k], 2, half),
                Input::new(&[c], 3, half),
                Input::new(&dims, 4, half),
            ]
        };
        both!(&format!("depthwise k{k} {dims:?}"), mk, |t| {
            vec![B::depthwise_conv3d(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
            )]
        });
        both!(&format!("depthwise k{k} {dims:?} backward"), mk, |t| {
            tuple3(B::depthwise_conv3d_backward(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
                t[3].clone(),
            ))
        });
    }
}

#[test]
fn strided_down_and_up_convolutions_and_gradients() {
    for (fine, k) in [([1usize, 3, 9, 8, 11], 3), ([2, 2, 7, 10, 9], 5)] {
        let c = fine[1];
        let coarse = [
            fine[0],
            c,
            fine[2].div_ceil(2),
            fine[3].div_ceil(2),
            fine[4].div_ceil(2),
        ];
        let down = move |half: bool| {
            vec![
                Input::new(&fine, 5, half),
                Input::new(&[c, 1, k, k, k], 6, half),
                Input::new(&[c], 7, half),
                Input::new(&coarse, 8, half),
            ]
        };
        both!(&format!("down k{k} {fine:?}"), down, |t| {
            vec![B::down_depthwise_conv3d(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
            )]
        });
        both!(&format!("down k{k} {fine:?} backward"), down, |t| {
            tuple3(B::down_depthwise_conv3d_backward(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
                t[3].clone(),
            ))
        });
        let up_fine = [
            coarse[0],
            c,
            2 * coarse[2] - 1,
            2 * coarse[3] - 1,
            2 * coarse[4] - 1,
        ];
        let up = move |half: bool| {
            vec![
                Input::new(&coarse, 9, half),
                Input::new(&[c, 1, k, k, k], 10, half),
                Input::new(&[c], 11, half),
                Input::new(&up_fine, 12, half),
            ]
        };
        both!(&format!("up k{k} {coarse:?}"), up, |t| {
            vec![B::up_depthwise_conv3d(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
            )]
        });
        both!(&format!("up k{k} {coarse:?} backward"), up, |t| {
            tuple3(B::up_depthwise_conv3d_backward(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
                t[3].clone(),
            ))
        });
    }
}

#[test]
fn stride_two_residual_convolutions_and_gradients() {
    for (n, ci, co, fine) in [
        (1usize, 3usize, 5usize, [9usize, 8, 11]),
        (2, 4, 2, [6, 7, 5]),
    ] {
        let x = [n, ci, fine[0], fine[1], fine[2]];
        let coarse = fine.map(|f| f.div_ceil(2));
        let down = move |half: bool| {
            vec![
                Input::new(&x, 30, half),
                Input::new(&[co, ci, 1, 1, 1], 31, half),
                Input::new(&[co], 32, half),
                Input::new(&[n, co, coarse[0], coarse[1], coarse[2]], 33, half),
            ]
        };
        both!(&format!("down residual {x:?}→{co}"), down, |t| {
            vec![B::down_pointwise_conv3d(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
            )]
        });
        both!(&format!("down residual {x:?}→{co} backward"), down, |t| {
            tuple3(B::down_pointwise_conv3d_backward(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
                t[3].clone(),
            ))
        });
        let xc = [n, ci, coarse[0], coarse[1], coarse[2]];
        let up_fine = [
            n,
            co,
            2 * coarse[0] - 1,
            2 * coarse[1] - 1,
            2 * coarse[2] - 1,
        ];
        let up = move |half: bool| {
            vec![
                Input::new(&xc, 34, half),
                Input::new(&[ci, co, 1, 1, 1], 35, half),
                Input::new(&[co], 36, half),
                Input::new(&up_fine, 37, half),
            ]
        };
        both!(&format!("up residual {xc:?}→{co}"), up, |t| {
            vec![B::up_pointwise_conv3d(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
            )]
        });
        both!(&format!("up residual {xc:?}→{co} backward"), up, |t| {
            tuple3(B::up_pointwise_conv3d_backward(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
                t[3].clone(),
            ))
        });
    }
}

#[test]
fn pointwise_convolution_gelu_and_gradients() {
    for (n, ci, co, spatial) in [(2, 5, 7, [6, 7, 9]), (1, 4, 3, [16, 16, 20])] {
        let x = [n, ci, spatial[0], spatial[1], spatial[2]];
        let y = [n, co, spatial[0], spatial[1], spatial[2]];
        let mk = move |half: bool| {
            vec![
                Input::new(&x, 13, half),
                Input::new(&[co, ci, 1, 1, 1], 14, half),
                Input::new(&[co], 15, half),
                Input::new(&y, 16, half),
            ]
        };
        both!(&format!("pointwise {x:?}→{co}"), mk, |t| {
            vec![B::pointwise_conv3d(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
            )]
        });
        both!(&format!("pointwise + GELU {x:?}→{co}"), mk, |t| {
            let (pre, out) =
                B::pointwise_conv3d_gelu_parts(t[0].clone(), t[1].clone(), t[2].clone());
            vec![pre, out]
        });
        both!(&format!("pointwise {x:?}→{co} backward"), mk, |t| {
            tuple3(B::pointwise_conv3d_backward(
                t[0].clone(),
                t[1].clone(),
                t[2].clone(),
                t[3].clone(),
            ))
        });
        // GELU's gradient at pre-activations spread over [-4, 4].
        let g = move |half: bool| {
            let mut pre = Input::new(&y, 17, half);
            pre.data.iter_mut().for_each(|v| *v *= 4.0);
            vec![pre, Input::new(&y, 18, half)]
        };
        both!(&format!("GELU gradient {y:?}"), g, |t| {
            vec![B::gelu_grad(t[0].clone(), t[1].clone())]
        });
    }
}

#[test]
fn group_norm_and_gradients() {
    for (dims, groups) in [
        ([2, 4, 9, 8, 10], 4),
        ([1, 6, 7, 5, 3], 2),
        ([1, 2, 16, 16, 18], 1),
    ] {
        let c = dims[1];
        // The last input only carries the group count (its length) into the operation.
        let mk = move |half: bool| {
            let mut x = Input::new(&dims, 19, half);
            // An offset: the statistics must not lose precision to a large mean.
            x.data.iter_mut().for_each(|v| *v = *v * 3.0 + 2.0);
            vec![
                x,
                Input::new(&[c], 20, half),
                Input::new(&[c], 21, half),
                Input::new(&dims, 22, half),
                Input::new(&[groups], 23, half),
            ]
        };
        both!(&format!("group norm {dims:?} groups {groups}"), mk, |t| {
            let groups = burn::tensor::TensorMetadata::shape(&t[4])[0];
            vec![
                B::fast_group_norm(t[0].clone(), t[1].clone(), t[2].clone(), groups, 1e-5)
                    .expect("a fused group norm"),
            ]
        });
        both!(
            &format!("group norm {dims:?} groups {groups} backward"),
            mk,
            |t| {
                let groups = burn::tensor::TensorMetadata::shape(&t[4])[0];
                tuple3(
                    B::fast_group_norm_backward(
                        t[0].clone(),
                        t[1].clone(),
                        t[3].clone(),
                        groups,
                        1e-5,
                    )
                    .expect("a fused group norm backward"),
                )
            }
        );
    }
}

/// Every float parameter's gradient, flattened, in visiting order.
struct GradCollector<'a, B: burn::tensor::backend::AutodiffBackend> {
    grads: &'a B::Gradients,
    out: Vec<Vec<f32>>,
}

impl<B: burn::tensor::backend::AutodiffBackend> burn::module::ModuleVisitor<B>
    for GradCollector<'_, B>
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let g = param
            .val()
            .grad(self.grads)
            .expect("every parameter has a gradient");
        let n = g.shape().num_elements();
        self.out.push(
            g.reshape([n])
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap(),
        );
    }
}

/// Outputs (main and deep supervision), the input gradient and every parameter gradient
/// of `Σ outputs · fixed weights` on backend `B` for the weights in `weights`.
fn mednext_run<B: burn::tensor::backend::AutodiffBackend + ConvBackend>(
    config: &MedNeXtConfig,
    weights: &std::path::Path,
    x: &Input,
) -> (Vec<Vec<f32>>, Vec<f32>, Vec<Vec<f32>>) {
    let device = Default::default();
    let mut model = config.init::<B>(&device).unwrap();
    em_models::load_mednext(&mut model, weights, true).unwrap();
    let input =
        Tensor::<B, 5>::from_primitive(TensorPrimitive::Float(x.on::<B>(DType::F32, &device)))
            .require_grad();
    let outs = model.forward_all(input.clone()).unwrap();
    let mut loss = Tensor::<B, 1>::zeros([1], &device);
    let mut values_out = Vec::new();
    for (i, o) in outs.into_iter().enumerate() {
        let dims = o.dims();
        let w = Input::new(&dims, 100 + i as u64, false);
        let w =
            Tensor::<B, 5>::from_primitive(TensorPrimitive::Float(w.on::<B>(DType::F32, &device)));
        values_out.push(o.clone().into_data().convert::<f32>().to_vec().unwrap());
        loss = loss + (o * w).sum();
    }
    let grads = loss.backward();
    let dx = input
        .grad(&grads)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap();
    let mut collector = GradCollector::<B> {
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut collector);
    (values_out, dx, collector.out)
}

#[test]
fn small_mednext_forward_and_backward_match_the_cpu() {
    let mut config = MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 2).with_deep_supervision(true);
    config.width = 4;
    config.blocks = [1; 9];
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("tiny.safetensors");
    let cpu = em_models::ModelConfig::MednextCustom(config.clone())
        .build_seeded::<Cpu>(&Default::default(), 7)
        .unwrap();
    em_models::save_weights(&cpu, &weights).unwrap();
    let x = Input::new(&[1, 1, 16, 16, 16], 99, false);
    let (out_g, dx_g, grads_g) = mednext_run::<Autodiff<Wgpu>>(&config, &weights, &x);
    let (out_c, dx_c, grads_c) = mednext_run::<Autodiff<Cpu>>(&config, &weights, &x);
    assert_eq!(
        out_g.len(),
        5,
        "main output and four deep-supervision heads"
    );
    for (i, (g, c)) in out_g.iter().zip(&out_c).enumerate() {
        close(g, c, 1e-4, &format!("output {i}"));
    }
    close(&dx_g, &dx_c, 1e-4, "input gradient");
    assert_eq!(grads_g.len(), grads_c.len());
    // The biases of the convolutions before a GroupNorm with one channel per group have
    // no gradient in exact arithmetic (the norm removes any per-channel shift): there both
    // sides hold rounding noise, which must stay negligible against the largest gradient.
    let magnitude = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let largest = grads_c.iter().map(|g| magnitude(g)).fold(0f32, f32::max);
    assert!(
        largest > 1.0,
        "the gradients are not trivially small: {largest}"
    );
    let mut compared = 0;
    for (i, (g, c)) in grads_g.iter().zip(&grads_c).enumerate() {
        if magnitude(c) < 1e-4 * largest {
            assert!(
                magnitude(g) < 1e-5 * largest && magnitude(c) < 1e-5 * largest,
                "parameter gradient {i} vanishes on one side only"
            );
        } else {
            close(g, c, 1e-4, &format!("parameter gradient {i}"));
            compared += 1;
        }
    }
    assert!(
        compared >= 60,
        "only {compared} parameter gradients compared"
    );
    // The fixture is not trivially zero.
    assert!(dx_c.iter().any(|v| v.abs() > 0.0));
}
