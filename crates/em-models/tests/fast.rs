//! The CPU backend's fused kernels against burn's generic operations they replace: values
//! and gradients of the depthwise and pointwise convolutions (the latter also with GELU)
//! and of GroupNorm, on a
//! contiguous and on a transposed (strided) input.

use burn::backend::Autodiff;
use burn::module::Param;
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig3d};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Distribution, Tensor, TensorPrimitive};
use em_models::{ConvBackend, Cpu};

type B = Autodiff<Cpu>;

fn close(a: Tensor<B, 5>, b: Tensor<B, 5>, what: &str) {
    let (a, b): (Vec<f32>, Vec<f32>) = (
        a.into_data().to_vec().unwrap(),
        b.into_data().to_vec().unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * scale, "{what}[{i}]: {x} vs {y}");
    }
}

fn close_any<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>, what: &str) {
    let (a, b): (Vec<f32>, Vec<f32>) = (
        a.into_data().to_vec().unwrap(),
        b.into_data().to_vec().unwrap(),
    );
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * scale, "{what}[{i}]: {x} vs {y}");
    }
}

fn prim(t: Tensor<B, 5>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn wrap(p: FloatTensor<B>) -> Tensor<B, 5> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// An input `(2, c, 5, 6, 7)`, once contiguous and once the transpose of a contiguous
/// `(2, c, 5, 7, 6)` (a strided view the kernels must copy first).
fn inputs(c: usize) -> [Tensor<B, 5>; 2] {
    let d = Default::default();
    let a = Tensor::<B, 5>::random([2, c, 5, 6, 7], Distribution::Normal(0.3, 1.0), &d);
    let b =
        Tensor::<B, 5>::random([2, c, 5, 7, 6], Distribution::Normal(0.3, 1.0), &d).swap_dims(3, 4);
    [a, b]
}

/// A convolution applied by some path.
type ConvFn = dyn Fn(Tensor<B, 5>, &Conv3d<B>) -> Tensor<B, 5>;

type Grads = (Tensor<B, 5>, Tensor<Cpu, 5>, Tensor<Cpu, 5>, Tensor<Cpu, 1>);

/// Output, and the gradients of Σ y·g for input, weight and bias. Each call builds its own
/// graph: burn consumes a graph when it runs backward.
fn conv_run(x: &Tensor<B, 5>, conv: &Conv3d<B>, g: &Tensor<B, 5>, f: &ConvFn) -> Grads {
    let x = x.clone().detach().require_grad();
    let y = f(x.clone(), conv);
    let grads = (y.clone() * g.clone()).sum().backward();
    let b = conv.bias.as_ref().unwrap();
    (
        y,
        x.grad(&grads).unwrap(),
        conv.weight.grad(&grads).unwrap(),
        b.grad(&grads).unwrap(),
    )
}

fn check_conv(conv: &Conv3d<B>, fast: fn(Tensor<B, 5>, &Conv3d<B>) -> Tensor<B, 5>, what: &str) {
    check_against(conv, &|x, c| c.forward(x), &fast, what);
}

/// `fast` against the `reference` path: output and the three gradients.
fn check_against(conv: &Conv3d<B>, reference: &ConvFn, fast: &ConvFn, what: &str) {
    for x in inputs(conv.weight.dims()[1] * conv.groups) {
        let out = conv.forward(x.clone()).dims();
        let g = Tensor::<B, 5>::random(out, Distribution::Default, &x.device());
        let (yr, dxr, dwr, dbr) = conv_run(&x, conv, &g, reference);
        let (yf, dxf, dwf, dbf) = conv_run(&x, conv, &g, fast);
        close(yf, yr, what);
        close_any(dxf, dxr, &format!("{what} dx"));
        close_any(dwf, dwr, &format!("{what} dw"));
        close_any(dbf, dbr, &format!("{what} db"));
    }
}

#[test]
fn depthwise_and_pointwise_convolutions_match_burns() {
    let d = Default::default();
    for k in [3, 5] {
        let conv = Conv3dConfig::new([4, 4], [k; 3])
            .with_groups(4)
            .with_padding(PaddingConfig3d::Explicit(k / 2, k / 2, k / 2))
            .init::<B>(&d);
        check_conv(
            &conv,
            |x, c| {
                wrap(B::depthwise_conv3d(
                    prim(x),
                    prim(c.weight.val()),
                    c.bias.as_ref().unwrap().val().into_primitive().tensor(),
                ))
            },
            &format!("depthwise k{k}"),
        );
    }
    let conv = Conv3dConfig::new([3, 5], [1, 1, 1]).init::<B>(&d);
    check_conv(
        &conv,
        |x, c| {
            wrap(B::pointwise_conv3d(
                prim(x),
                prim(c.weight.val()),
                c.bias.as_ref().unwrap().val().into_primitive().tensor(),
            ))
        },
        "pointwise",
    );
    check_against(
        &conv,
        &|x, c| burn::tensor::activation::gelu(c.forward(x)),
        &|x, c| {
            wrap(B::pointwise_conv3d_gelu(
                prim(x),
                prim(c.weight.val()),
                c.bias.as_ref().unwrap().val().into_primitive().tensor(),
            ))
        },
        "pointwise + GELU",
    );
}

#[test]
fn strided_depthwise_convolutions_match_burns() {
    let d = Default::default();
    for k in [3, 5] {
        let conv = Conv3dConfig::new([4, 4], [k; 3])
            .with_groups(4)
            .with_stride([2; 3])
            .with_padding(PaddingConfig3d::Explicit(k / 2, k / 2, k / 2))
            .init::<B>(&d);
        check_conv(
            &conv,
            |x, c| {
                wrap(B::down_depthwise_conv3d(
                    prim(x),
                    prim(c.weight.val()),
                    c.bias.as_ref().unwrap().val().into_primitive().tensor(),
                ))
            },
            &format!("stride-2 depthwise k{k}"),
        );

        // The up blocks' transposed convolution: burn's module against the fused op.
        let up = ConvTranspose3dConfig::new([4, 4], [k; 3])
            .with_stride([2; 3])
            .with_padding([k / 2; 3])
            .with_groups(4)
            .init::<B>(&d);
        let bias = up.bias.as_ref().unwrap();
        for x in inputs(4) {
            let g = Tensor::<B, 5>::random(up.forward(x.clone()).dims(), Distribution::Default, &d);
            let run = |fast: bool| {
                let x = x.clone().detach().require_grad();
                let y = if fast {
                    wrap(B::up_depthwise_conv3d(
                        prim(x.clone()),
                        prim(up.weight.val()),
                        bias.val().into_primitive().tensor(),
                    ))
                } else {
                    up.forward(x.clone())
                };
                let grads = (y.clone() * g.clone()).sum().backward();
                (
                    y,
                    x.grad(&grads).unwrap(),
                    up.weight.grad(&grads).unwrap(),
                    bias.grad(&grads).unwrap(),
                )
            };
            let ((yf, dxf, dwf, dbf), (yr, dxr, dwr, dbr)) = (run(true), run(false));
            let what = format!("transposed depthwise k{k}");
            close(yf, yr, &what);
            close_any(dxf, dxr, &format!("{what} dx"));
            close_any(dwf, dwr, &format!("{what} dw"));
            close_any(dbf, dbr, &format!("{what} db"));
        }
    }
}

#[test]
fn fused_group_norm_matches_burns() {
    let d = Default::default();
    for groups in [4, 2, 1] {
        let mut norm: GroupNorm<B> = GroupNormConfig::new(groups, 4).init(&d);
        // Non-trivial affine parameters.
        norm.gamma = Some(Param::from_tensor(Tensor::random(
            [4],
            Distribution::Normal(1.0, 0.5),
            &d,
        )));
        norm.beta = Some(Param::from_tensor(Tensor::random(
            [4],
            Distribution::Normal(0.0, 0.5),
            &d,
        )));
        for x in inputs(4) {
            let out = norm.forward(x.clone()).dims();
            let g = Tensor::<B, 5>::random(out, Distribution::Default, &d);
            let run = |fused: bool| {
                let x = x.clone().detach().require_grad();
                let (gamma, beta) = (norm.gamma.as_ref().unwrap(), norm.beta.as_ref().unwrap());
                let y = if fused {
                    wrap(
                        B::fast_group_norm(
                            prim(x.clone()),
                            gamma.val().into_primitive().tensor(),
                            beta.val().into_primitive().tensor(),
                            groups,
                            norm.epsilon,
                        )
                        .expect("the CPU backend has the fused kernel"),
                    )
                } else {
                    norm.forward(x.clone())
                };
                let grads = (y.clone() * g.clone()).sum().backward();
                (
                    y,
                    x.grad(&grads).unwrap(),
                    gamma.grad(&grads).unwrap(),
                    beta.grad(&grads).unwrap(),
                )
            };
            let (yr, dxr, dgr, dbr) = run(false);
            let (yf, dxf, dgf, dbf) = run(true);
            close(yf, yr, "group norm");
            close_any(dxf, dxr, "group norm dx");
            close_any(dgf, dgr, "dgamma");
            close_any(dbf, dbr, "dbeta");
        }
    }
}
