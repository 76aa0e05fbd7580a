//! barlow's own CPU kernels for the two layers that take most of a
//! training step: the convolution ([`conv`]) and training-mode BatchNorm
//! ([`batch_norm`]).
//!
//! burn's CPU backend, Flex, runs a 2-D convolution as a 3-D one through
//! layout copies, computes its gradients through burn's generic defaults
//! (a transposed convolution and one small product per input channel),
//! and builds BatchNorm from strided reductions; together they made a
//! step about ten times slower than PyTorch's on the same cores. The
//! kernels here compute the same functions as im2col + `gemm` and as
//! passes over contiguous rows, split over Flex's rayon pool.
//!
//! [`conv2d`] and the three BatchNorm passes ([`channel_sums`],
//! [`squared_deviation_sums`], [`normalize`], strung together by
//! [`crate::model::norm`]) are the model's entry points. On Flex and
//! `Autodiff<Flex>` (the trainer's CPU backend, see [`crate::backend`])
//! they run these kernels, registering their own backward steps under
//! autodiff; on every other backend, and for inputs the kernels do not
//! cover (other dtypes than f32), they call burn's own ops, so the GPU
//! backends compute exactly as before.

pub mod batch_norm;
pub mod conv;
mod flex;

use std::any::{Any, TypeId};

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

use batch_norm::NormShape;

/// The trainer's CPU backend, for which the kernels register gradients.
type Cpu = Autodiff<Flex>;

thread_local! {
    static BURN_OPS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the entry points calling burn's own ops on
/// every backend, on this thread: the reference the kernels are tested
/// and measured against.
pub fn with_burn_ops<R>(f: impl FnOnce() -> R) -> R {
    let before = BURN_OPS.with(|b| b.replace(true));
    let out = f();
    BURN_OPS.with(|b| b.set(before));
    out
}

fn burn_ops() -> bool {
    BURN_OPS.with(std::cell::Cell::get)
}

/// `x` convolved with `weight` (`[C_out, C_in, kh, kw]`, no bias, groups
/// and dilation 1), with `stride` and `padding` (top, left, bottom,
/// right).
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    stride: [usize; 2],
    padding: [usize; 4],
) -> Tensor<B, 4> {
    let f32s = x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    let shape = flex::conv_shape(&x.dims(), &weight.dims(), stride, padding).filter(|_| f32s);
    let Some(s) = shape.filter(|_| !burn_ops()) else {
        return burn_conv2d(x, weight, stride, padding);
    };
    let (x, weight) = match same_type::<_, (Tensor<Cpu, 4>, Tensor<Cpu, 4>)>((x, weight)) {
        Ok((x, w)) => {
            let y = flex::conv_autodiff::<NoCheckpointing>(&s, autodiff(x), autodiff(w));
            return into_backend(float::<Cpu, 4>(y));
        }
        Err(pair) => pair,
    };
    match same_type::<_, (Tensor<Flex, 4>, Tensor<Flex, 4>)>((x, weight)) {
        Ok((x, w)) => {
            let y = flex::conv_forward(&s, &plain(x), &plain(w));
            into_backend(float::<Flex, 4>(y))
        }
        Err((x, w)) => burn_conv2d(x, w, stride, padding),
    }
}

fn burn_conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    stride: [usize; 2],
    [top, left, bottom, right]: [usize; 4],
) -> Tensor<B, 4> {
    let options = PaddedConvOptions::asymmetric(stride, [top, left], [bottom, right], [1, 1], 1);
    burn::tensor::module::conv2d(x, weight, None, options)
}

/// Whether the kernels compute on backend `B` (on this thread): the
/// trainer's CPU backend, unless [`with_burn_ops`] switched them off.
pub fn active<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Cpu>() && !burn_ops()
}

/// Per channel (dim 1) of `x` (`[N, C, ...]`), the sum of its values
/// (`[C]`), differentiable: the first statistic of a BatchNorm whose sums
/// run over data-parallel peers.
pub fn channel_sums<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    let (dims, f32s) = (x.dims(), x.dtype() == DType::F32);
    let x = match on_cpu::<_, Tensor<Cpu, D>>(x, &dims, f32s) {
        Ok((s, x)) => {
            let sums = flex::sums_autodiff::<NoCheckpointing>(&s, autodiff(x));
            return into_backend(float::<Cpu, 1>(sums));
        }
        Err(x) => x,
    };
    let dims = x.dims();
    let m = dims[0] * dims[2..].iter().product::<usize>();
    x.swap_dims(0, 1)
        .reshape([dims[1], m])
        .sum_dim(1)
        .reshape([dims[1]])
}

/// Per channel of `x`, `Σ (x − mean)²` (`mean` and the result `[C]`),
/// differentiable in both: the second statistic.
pub fn squared_deviation_sums<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    mean: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let (dims, f32s) = (x.dims(), all_f32(&[x.dtype(), mean.dtype()]));
    let (x, mean) = match on_cpu::<_, (Tensor<Cpu, D>, Tensor<Cpu, 1>)>((x, mean), &dims, f32s) {
        Ok((s, (x, mean))) => {
            let sums = flex::squared_deviations_autodiff::<NoCheckpointing>(
                &s,
                autodiff(x),
                autodiff(mean),
            );
            return into_backend(float::<Cpu, 1>(sums));
        }
        Err(pair) => pair,
    };
    let shape = channel_shape::<D>(mean.dims()[0]);
    channel_sums((x - mean.reshape(shape)).square())
}

/// `(x − mean) · γ/√(var + ε) + β`, each of the four `[C]` broadcast over
/// `x`'s channels, differentiable in all five: a BatchNorm's last pass.
pub fn normalize<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    [mean, var, gamma, beta]: [Tensor<B, 1>; 4],
    eps: f64,
) -> Tensor<B, D> {
    let dims = x.dims();
    let f32s = all_f32(&[
        x.dtype(),
        mean.dtype(),
        var.dtype(),
        gamma.dtype(),
        beta.dtype(),
    ]);
    let inputs = (x, [mean, var, gamma, beta]);
    let (x, [mean, var, gamma, beta]) =
        match on_cpu::<_, (Tensor<Cpu, D>, [Tensor<Cpu, 1>; 4])>(inputs, &dims, f32s) {
            Ok((s, (x, stats))) => {
                let [m, v, g, b] = stats.map(autodiff);
                let y =
                    flex::normalize_autodiff::<NoCheckpointing>(&s, [autodiff(x), m, v, g, b], eps);
                return into_backend(float::<Cpu, D>(y));
            }
            Err(inputs) => inputs,
        };
    let shape = channel_shape::<D>(mean.dims()[0]);
    let std = var.reshape(shape).add_scalar(eps).sqrt();
    (x - mean.reshape(shape)) / std * gamma.reshape(shape) + beta.reshape(shape)
}

/// `[1, C, 1, ...]`: a per-channel `[C]` broadcast over `[N, C, ...]`.
fn channel_shape<const D: usize>(channels: usize) -> [usize; D] {
    let mut shape = [1; D];
    shape[1] = channels;
    shape
}

/// `inputs` as `Autodiff<Flex>` tensors (`T`), with the BatchNorm layout
/// of `dims` (their first tensor's), when that is their backend, the
/// kernels are on and every float is f32 (`f32s`); else `inputs` back.
fn on_cpu<A: 'static, T: 'static>(
    inputs: A,
    dims: &[usize],
    f32s: bool,
) -> Result<(NormShape, T), A> {
    match flex::norm_shape(dims) {
        Some(s) if f32s && !burn_ops() => same_type::<A, T>(inputs).map(|t| (s, t)),
        _ => Err(inputs),
    }
}

fn all_f32(dtypes: &[DType]) -> bool {
    dtypes.iter().all(|&d| d == DType::F32)
}

/// `a` as a `T` when `A` is `T`, else `a` back.
fn same_type<A: 'static, T: 'static>(a: A) -> Result<T, A> {
    let mut slot = Some(a);
    if let Some(t) = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
    {
        return Ok(t);
    }
    match slot {
        Some(a) => Err(a),
        None => unreachable!("a value is taken only by a successful downcast"),
    }
}

/// A value of a type the caller has just matched, given back as the
/// caller's type.
fn into_backend<A: 'static, T: 'static>(a: A) -> T {
    match same_type::<A, T>(a) {
        Ok(t) => t,
        Err(_) => unreachable!("called only after the opposite downcast succeeded"),
    }
}

fn autodiff<const D: usize>(t: Tensor<Cpu, D>) -> FloatTensor<Cpu> {
    t.into_primitive().tensor()
}

fn plain<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    t.into_primitive().tensor()
}

fn float<B: Backend, const D: usize>(p: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

#[cfg(test)]
mod tests;
