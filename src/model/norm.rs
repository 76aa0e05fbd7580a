//! Where a training-mode BatchNorm takes its statistics: from this
//! device's batch ([`Norm::Local`], the single-device path) or from the
//! global batch of all data-parallel peers ([`Norm::Global`],
//! SyncBatchNorm). Both run the same passes ([`super::kernels`]), the
//! peers' sums between them for the global batch, so that one device and
//! several round alike; on a GPU backend the local one is burn's own
//! BatchNorm.

use burn::nn::BatchNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

use super::kernels;
use super::precision::{cast, to_f32};
use crate::peers::{Reducer, reduce};

/// The statistics every training-mode BatchNorm of a forward pass uses.
pub enum Norm<'a, B: Backend> {
    /// This batch's.
    Local,
    /// The global batch's: sums over the peers through `reducer`; `batch`
    /// is the global batch size (the sum of the peers' slices).
    Global {
        reducer: &'a dyn Reducer<B>,
        batch: usize,
    },
}

impl<B: Backend> Clone for Norm<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Norm<'_, B> {}

/// Per-channel mean and biased variance of `x` (`[N, C, ...]`, channels on
/// dim 1) over the global batch, each `[C]`, and the number of values per
/// channel. Two passes (mean, then squared deviations), as burn's
/// BatchNorm computes them.
pub fn global_moments<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    reducer: &dyn Reducer<B>,
    batch: usize,
) -> (Tensor<B, 1>, Tensor<B, 1>, usize) {
    moments(x, Some(reducer), batch)
}

/// [`global_moments`], over this device's batch (`batch`, its size) when
/// there is no `reducer`.
fn moments<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    reducer: Option<&dyn Reducer<B>>,
    batch: usize,
) -> (Tensor<B, 1>, Tensor<B, 1>, usize) {
    let sum = |t: Tensor<B, 1>| match reducer {
        Some(r) => reduce(r, t),
        None => t,
    };
    let count = batch * x.dims()[2..].iter().product::<usize>();
    let mean = sum(kernels::channel_sums(x.clone())) / count as f64;
    let var = sum(kernels::squared_deviation_sums(x, mean.clone())) / count as f64;
    (mean, var, count)
}

/// `bn` applied to `x` with the statistics `norm` names, computed in f32
/// and returned in `x`'s dtype (under mixed precision, bf16 in and out,
/// statistics and normalisation in f32). Outside training (no autodiff)
/// it is `bn.forward`. With [`Norm::Local`] it normalises with the batch's
/// mean and biased variance and updates the running statistics as burn's
/// BatchNorm does (with the biased variance); with [`Norm::Global`], with
/// the global batch's, updating them as PyTorch's SyncBatchNorm does (with
/// the unbiased global variance).
pub fn batch_norm<B: Backend, const D: usize>(
    bn: &BatchNorm<B>,
    x: Tensor<B, D>,
    norm: Norm<'_, B>,
) -> Tensor<B, D> {
    let dtype = FloatDType::from(x.dtype());
    cast(batch_norm_f32(bn, to_f32(x), norm), dtype)
}

/// [`batch_norm`] of an f32 `x`.
fn batch_norm_f32<B: Backend, const D: usize>(
    bn: &BatchNorm<B>,
    x: Tensor<B, D>,
    norm: Norm<'_, B>,
) -> Tensor<B, D> {
    if !B::ad_enabled(&x.device()) {
        return bn.forward(x);
    }
    // burn's BatchNorm updates its running variance with the biased batch
    // variance, PyTorch's SyncBatchNorm with the unbiased one.
    let (reducer, batch, unbiased_running_var) = match norm {
        Norm::Global { reducer, batch } => (Some(reducer), batch, true),
        Norm::Local if kernels::active::<B>() => (None, x.dims()[0], false),
        Norm::Local => return bn.forward(x),
    };
    let device = x.device();
    let (mean, var, count) = moments(x.clone(), reducer, batch);
    let var_factor = if unbiased_running_var {
        count as f64 / (count.max(2) - 1) as f64
    } else {
        1.0
    };
    let m = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    bn.running_mean
        .update((running_mean * (1.0 - m) + mean.clone().detach() * m).detach());
    bn.running_var
        .update((running_var * (1.0 - m) + var.clone().detach() * (m * var_factor)).detach());

    let stats = [mean, var, bn.gamma.val(), bn.beta.val()];
    kernels::normalize(x, stats, bn.epsilon)
}
