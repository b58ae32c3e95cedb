//! Autodiff: one graph node per operation whose backward asks the inner backend.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::{ConvBackend, ConvGrads};

#[derive(Debug)]
struct DepthwiseBackward;

#[derive(Debug)]
struct PointwiseBackward;

#[derive(Debug)]
struct DownBackward;

#[derive(Debug)]
struct PointwiseGeluBackward;

#[derive(Debug)]
struct DownPointwiseBackward;

#[derive(Debug)]
struct UpPointwiseBackward;

impl<B: ConvBackend> Backward<B, 3> for DownPointwiseBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::down_pointwise_conv3d_backward);
    }
}

impl<B: ConvBackend> Backward<B, 3> for UpPointwiseBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::up_pointwise_conv3d_backward);
    }
}

impl<B: ConvBackend> Backward<B, 3> for PointwiseGeluBackward {
    /// `x`, `w`, `b` and the pre-activation.
    type State = (NodeId, NodeId, NodeId, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (xs, ws, bs, pre) = ops.state;
        let dpre = B::gelu_grad(pre, grads.consume::<B>(&ops.node));
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(xs);
        let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(ws);
        let b = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(bs);
        let (dx, dw, db) = B::pointwise_conv3d_backward(x, w, b, dpre);
        for (node, g) in ops.parents.into_iter().zip([dx, dw, db]) {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct UpBackward;

type State = (NodeId, NodeId, NodeId);

/// A backend's gradient function `(x, w, b, dy) → (dx, dw, db)`.
type ConvBackwardFn<B> =
    fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) -> ConvGrads<B>;

fn backward_with<B: Backend>(
    ops: Ops<State, 3>,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
    f: ConvBackwardFn<B>,
) {
    let [node_x, node_w, node_b] = ops.parents;
    let dy = grads.consume::<B>(&ops.node);
    let (xs, ws, bs) = ops.state;
    let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(xs);
    let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(ws);
    let b = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(bs);
    let (dx, dw, db) = f(x, w, b, dy);
    if let Some(node) = node_x {
        grads.register::<B>(node.id, dx);
    }
    if let Some(node) = node_w {
        grads.register::<B>(node.id, dw);
    }
    if let Some(node) = node_b {
        grads.register::<B>(node.id, db);
    }
}

impl<B: ConvBackend> Backward<B, 3> for DepthwiseBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::depthwise_conv3d_backward);
    }
}

impl<B: ConvBackend> Backward<B, 3> for PointwiseBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::pointwise_conv3d_backward);
    }
}

impl<B: ConvBackend> Backward<B, 3> for DownBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::down_depthwise_conv3d_backward);
    }
}

impl<B: ConvBackend> Backward<B, 3> for UpBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B>(ops, grads, checkpointer, B::up_depthwise_conv3d_backward);
    }
}

#[derive(Debug)]
struct GroupNormBackward;

impl<B: ConvBackend> Backward<B, 3> for GroupNormBackward {
    type State = (NodeId, NodeId, usize, f64);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_g, node_b] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (xs, gs, groups, eps) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(xs);
        let gamma = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(gs);
        // The forward pass only built this node where the backend had the fused kernel,
        // for the same dtypes and shapes.
        let (dx, dg, db) = B::fast_group_norm_backward(x, gamma, dy, groups, eps)
            .expect("the fused group norm's backward exists where its forward did");
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_g {
            grads.register::<B>(node.id, dg);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, db);
        }
    }
}

impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    const GPU: bool = B::GPU;

    fn fast_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
    ) -> Option<FloatTensor<Self>> {
        let out = B::fast_group_norm(
            x.primitive.clone(),
            gamma.primitive.clone(),
            beta.primitive.clone(),
            groups,
            eps,
        )?;
        Some(
            match GroupNormBackward
                .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&gamma), groups, eps);
                    prep.finish(state, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(out),
            },
        )
    }

    fn depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(DepthwiseBackward, x, w, b, B::depthwise_conv3d)
    }

    fn pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(PointwiseBackward, x, w, b, B::pointwise_conv3d)
    }

    fn pointwise_conv3d_gelu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match PointwiseGeluBackward
            .prepare::<C>([x.node.clone(), w.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (xs, ws, bs) = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&w),
                    prep.checkpoint(&b),
                );
                let (pre, out) =
                    B::pointwise_conv3d_gelu_parts(x.primitive, w.primitive, b.primitive);
                prep.finish((xs, ws, bs, pre), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::pointwise_conv3d_gelu(
                x.primitive,
                w.primitive,
                b.primitive,
            )),
        }
    }

    fn down_pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(DownPointwiseBackward, x, w, b, B::down_pointwise_conv3d)
    }

    fn up_pointwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(UpPointwiseBackward, x, w, b, B::up_pointwise_conv3d)
    }

    fn down_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(DownBackward, x, w, b, B::down_depthwise_conv3d)
    }

    fn up_depthwise_conv3d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv_node::<B, C, _>(UpBackward, x, w, b, B::up_depthwise_conv3d)
    }
}

/// One autodiff node for a convolution `forward(x, w, b)` whose backward is `op`.
fn conv_node<B, C, O>(
    op: O,
    x: FloatTensor<Autodiff<B, C>>,
    w: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: ConvBackend,
    C: CheckpointStrategy,
    O: Backward<B, 3, State = State>,
{
    match op
        .prepare::<C>([x.node.clone(), w.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (
                prep.checkpoint(&x),
                prep.checkpoint(&w),
                prep.checkpoint(&b),
            );
            prep.finish(state, forward(x.primitive, w.primitive, b.primitive))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive, w.primitive, b.primitive)),
    }
}
