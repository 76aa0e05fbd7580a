//! The kernels as operations of burn's CPU backend, Flex, and of its
//! autodiff wrapper: each op computes its output with the kernel and, when
//! a parent is tracked, registers a backward step that computes the
//! parents' gradients with the kernel's backward.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorData};
use burn_flex::{Flex, FlexTensor};

use super::batch_norm::{self, Moments, NormShape};
use super::conv::{self, ConvShape};

/// A float tensor of `Autodiff<Flex>`: the Flex tensor and its graph node.
type Tracked<C> = FloatTensor<Autodiff<Flex, C>>;

/// `t` as a contiguous f32 tensor whose storage is exactly its values.
fn contiguous(t: &FlexTensor) -> FlexTensor {
    debug_assert_eq!(t.dtype(), DType::F32);
    t.to_contiguous()
}

fn values(t: &FlexTensor) -> &[f32] {
    t.storage::<f32>()
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, Shape::from(shape)))
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().to_vec()
}

/// `output` as the result of `op` on `parents`, with `state` kept for
/// the backward step when a parent is tracked.
fn record<O, C, const N: usize>(
    op: O,
    parents: [&Tracked<C>; N],
    state: O::State,
    output: FlexTensor,
) -> Tracked<C>
where
    O: Backward<Flex, N>,
    C: CheckpointStrategy,
{
    let nodes = parents.map(|t| t.node.clone());
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// The convolution's shape, from an input `[N, C, H, W]`, a weight
/// `[Co, C, kh, kw]`, strides and padding (top, left, bottom, right).
pub fn conv_shape(
    x: &[usize],
    w: &[usize],
    stride: [usize; 2],
    padding: [usize; 4],
) -> Option<ConvShape> {
    let (&[batch, in_ch, in_h, in_w], &[out_ch, w_in, kh, kw]) = (x, w) else {
        return None;
    };
    let s = ConvShape {
        batch,
        in_ch,
        out_ch,
        in_h,
        in_w,
        kernel: [kh, kw],
        stride,
        padding,
    };
    (w_in == in_ch && s.is_valid()).then_some(s)
}

/// The forward convolution on Flex tensors (`s` from [`conv_shape`]).
pub fn conv_forward(s: &ConvShape, x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let (x, w) = (contiguous(x), contiguous(w));
    let mut y = vec![0.0; s.output_len()];
    conv::forward(s, values(&x), values(&w), &mut y);
    tensor(y, vec![s.batch, s.out_ch, s.out_h(), s.out_w()])
}

#[derive(Debug)]
struct ConvBackward;

#[derive(Debug, Clone)]
struct ConvState {
    shape: ConvShape,
    x: FlexTensor,
    w: FlexTensor,
}

impl Backward<Flex, 2> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let ConvState { shape: s, x, w } = ops.state;
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let [x_node, w_node] = ops.parents;
        let mut dx = x_node.as_ref().map(|_| vec![0.0; s.input_len()]);
        let mut dw = w_node.as_ref().map(|_| vec![0.0; s.weight_len()]);
        conv::backward(
            &s,
            values(&x),
            values(&w),
            values(&dy),
            dx.as_deref_mut(),
            dw.as_deref_mut(),
        );
        if let (Some(node), Some(dx)) = (x_node, dx) {
            grads.register::<Flex>(node.id, tensor(dx, dims(&x)));
        }
        if let (Some(node), Some(dw)) = (w_node, dw) {
            grads.register::<Flex>(node.id, tensor(dw, dims(&w)));
        }
    }
}

/// The convolution on `Autodiff<Flex>`.
pub fn conv_autodiff<C: CheckpointStrategy>(
    s: &ConvShape,
    x: Tracked<C>,
    w: Tracked<C>,
) -> Tracked<C> {
    let (xp, wp) = (contiguous(&x.primitive), contiguous(&w.primitive));
    let y = conv_forward(s, &xp, &wp);
    record::<_, C, _>(
        ConvBackward,
        [&x, &w],
        ConvState {
            shape: *s,
            x: xp,
            w: wp,
        },
        y,
    )
}

/// The BatchNorm input's layout: `[N, C, ...]`.
pub fn norm_shape(dims: &[usize]) -> Option<NormShape> {
    match dims {
        [batch, channels, rest @ ..] => Some(NormShape {
            batch: *batch,
            channels: *channels,
            spatial: rest.iter().product(),
        }),
        _ => None,
    }
}

/// What a BatchNorm pass's backward step keeps of its forward pass.
#[derive(Debug, Clone)]
struct NormState {
    shape: NormShape,
    x: FlexTensor,
    gamma: FlexTensor,
    moments: Moments,
    eps: f64,
}

/// A `[C]` tensor from f64 sums.
fn channel_tensor(v: &[f64]) -> FlexTensor {
    tensor(v.iter().map(|&v| v as f32).collect(), vec![v.len()])
}

#[derive(Debug)]
struct SumsBackward;

#[derive(Debug, Clone)]
struct SumsState {
    shape: NormShape,
    x: FlexTensor,
    /// For the squared deviations: the mean they are taken from.
    mean: Option<FlexTensor>,
}

/// The backward step of [`sums_autodiff`] (parents: x) and of
/// [`squared_deviations_autodiff`] (parents: x, mean).
fn sums_backward<const N: usize>(ops: Ops<SumsState, N>, grads: &mut Gradients) {
    let SumsState { shape: s, x, mean } = ops.state;
    let g = contiguous(&grads.consume::<Flex>(&ops.node));
    let mut parents = ops.parents.into_iter();
    let (x_node, mean_node) = (parents.next().flatten(), parents.next().flatten());
    let mut dx = x_node.as_ref().map(|_| vec![0.0; s.len()]);
    let dmean = batch_norm::sums_backward(
        &s,
        values(&x),
        values(&g),
        mean.as_ref().map(values),
        dx.as_deref_mut(),
    );
    if let (Some(node), Some(dx)) = (x_node, dx) {
        grads.register::<Flex>(node.id, tensor(dx, dims(&x)));
    }
    if let (Some(node), Some(dmean)) = (mean_node, dmean) {
        grads.register::<Flex>(node.id, tensor(dmean, vec![s.channels]));
    }
}

impl Backward<Flex, 1> for SumsBackward {
    type State = SumsState;

    fn backward(self, ops: Ops<SumsState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        sums_backward(ops, grads);
    }
}

#[derive(Debug)]
struct SquaredDeviationsBackward;

impl Backward<Flex, 2> for SquaredDeviationsBackward {
    type State = SumsState;

    fn backward(self, ops: Ops<SumsState, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        sums_backward(ops, grads);
    }
}

/// Per channel `Σ x` on `Autodiff<Flex>` (`[C]`).
pub fn sums_autodiff<C: CheckpointStrategy>(s: &NormShape, x: Tracked<C>) -> Tracked<C> {
    let xp = contiguous(&x.primitive);
    let out = channel_tensor(&batch_norm::sums(s, values(&xp)));
    record::<_, C, _>(
        SumsBackward,
        [&x],
        SumsState {
            shape: *s,
            x: xp,
            mean: None,
        },
        out,
    )
}

/// Per channel `Σ (x − mean)²` on `Autodiff<Flex>` (`[C]`).
pub fn squared_deviations_autodiff<C: CheckpointStrategy>(
    s: &NormShape,
    x: Tracked<C>,
    mean: Tracked<C>,
) -> Tracked<C> {
    let (xp, mp) = (contiguous(&x.primitive), contiguous(&mean.primitive));
    let out = channel_tensor(&batch_norm::squared_deviation_sums(
        s,
        values(&xp),
        values(&mp),
    ));
    record::<_, C, _>(
        SquaredDeviationsBackward,
        [&x, &mean],
        SumsState {
            shape: *s,
            x: xp,
            mean: Some(mp),
        },
        out,
    )
}

#[derive(Debug)]
struct NormalizeBackward;

impl Backward<Flex, 5> for NormalizeBackward {
    type State = NormState;

    fn backward(self, ops: Ops<NormState, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let NormState {
            shape: s,
            x,
            gamma,
            moments,
            eps,
        } = ops.state;
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let [x_node, mean_node, var_node, gamma_node, beta_node] = ops.parents;
        let mut dx = x_node.as_ref().map(|_| vec![0.0; s.len()]);
        let g = batch_norm::normalize_backward(
            &s,
            values(&x),
            values(&dy),
            &moments,
            values(&gamma),
            eps,
            dx.as_deref_mut(),
        );
        if let (Some(node), Some(dx)) = (x_node, dx) {
            grads.register::<Flex>(node.id, tensor(dx, dims(&x)));
        }
        for (node, v) in [
            (mean_node, g.mean),
            (var_node, g.var),
            (gamma_node, g.gamma),
            (beta_node, g.beta),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, tensor(v, vec![s.channels]));
            }
        }
    }
}

/// `(x − mean) · γ/√(var + ε) + β` on `Autodiff<Flex>`, differentiable in
/// all five.
pub fn normalize_autodiff<C: CheckpointStrategy>(
    s: &NormShape,
    [x, mean, var, gamma, beta]: [Tracked<C>; 5],
    eps: f64,
) -> Tracked<C> {
    let xp = contiguous(&x.primitive);
    let moments = Moments {
        mean: values(&contiguous(&mean.primitive)).to_vec(),
        var: values(&contiguous(&var.primitive)).to_vec(),
    };
    let (gp, bp) = (contiguous(&gamma.primitive), contiguous(&beta.primitive));
    let mut y = vec![0.0; s.len()];
    batch_norm::normalize(
        s,
        values(&xp),
        &moments,
        values(&gp),
        values(&bp),
        eps,
        &mut y,
    );
    let y = tensor(y, dims(&xp));
    record::<_, C, _>(
        NormalizeBackward,
        [&x, &mean, &var, &gamma, &beta],
        NormState {
            shape: *s,
            x: xp,
            gamma: gp,
            moments,
            eps,
        },
        y,
    )
}
