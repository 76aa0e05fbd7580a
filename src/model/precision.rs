//! Mixed precision with PyTorch autocast's policy for this network
//! (convolutions and matmuls in bf16, BatchNorm computed in f32), and the
//! Barlow Twins loss in f32. The weights stay f32: they are the master copy
//! LARS updates, with f32 momentum.
//!
//! - a convolution or a linear layer casts its input and its weight to the
//!   compute dtype ([`Precision::compute`]) and returns its output in that
//!   dtype; its backward runs in that dtype too, and the weight's gradient
//!   is cast back to f32 (the cast is differentiable);
//! - every BatchNorm computes its batch statistics, running statistics and
//!   normalisation in f32 and returns its input's dtype
//!   ([`super::norm::batch_norm`]), as cuDNN's does under autocast, so the
//!   activations between layers (ReLU, residual sums, pooling) stay in the
//!   compute dtype, half the memory traffic of f32;
//! - the loss casts the projector's output to f32, so the standardisation,
//!   the cross-correlation matrix and the loss are f32.
//!
//! bf16 has f32's exponent range, so gradients neither overflow nor
//! underflow where f32's would not, and no loss scaling is needed. f16 is
//! not offered: it would need dynamic loss scaling.

use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The dtype the convolutions and matmuls of training compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in f32 (on CUDA, f32 convolutions may run as TF32).
    #[default]
    F32,
    /// Convolutions and matmuls in bf16, the rest in f32 (mixed precision).
    Bf16,
}

impl crate::Choice for Precision {
    const NAMES: &'static [(Self, &'static str)] =
        &[(Precision::F32, "f32"), (Precision::Bf16, "bf16")];
}

impl Precision {
    /// The dtype of convolutions and matmuls.
    pub fn compute(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// The same as a tensor dtype.
    pub fn dtype(self) -> DType {
        self.compute().into()
    }
}

/// `x` cast to `dtype`, untouched (and no graph node added) when it is
/// already of that dtype.
pub fn cast<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if x.dtype() == DType::from(dtype) {
        x
    } else {
        x.cast(dtype)
    }
}

/// `x` in f32.
pub fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    cast(x, FloatDType::F32)
}

/// `conv` applied to `x` in the compute dtype of `precision`; the output
/// is in that dtype. In f32 on the CPU it runs barlow's own kernels
/// ([`super::kernels`]); elsewhere burn's convolution.
pub fn conv<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>, precision: Precision) -> Tensor<B, 4> {
    // barlow's convolutions are all built with explicit padding, no bias,
    // groups and dilation 1 (`resnet::conv`); any other takes burn's
    // module in f32.
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        debug_assert!(
            false,
            "a convolution without explicit padding escapes the funnel"
        );
        return conv.forward(x);
    };
    if conv.bias.is_some() || conv.groups != 1 || conv.dilation != [1, 1] {
        debug_assert!(
            false,
            "a convolution with a bias, groups or dilation escapes the funnel"
        );
        return conv.forward(x);
    }
    let dt = precision.compute();
    super::kernels::conv2d(
        cast(x, dt),
        cast(conv.weight.val(), dt),
        conv.stride,
        [top, left, bottom, right],
    )
}

/// `linear` applied to `x` in the compute dtype of `precision`; the output
/// is in that dtype. In f32 it is `linear.forward(x)`.
pub fn linear<B: Backend>(
    linear: &Linear<B>,
    x: Tensor<B, 2>,
    precision: Precision,
) -> Tensor<B, 2> {
    let dt = precision.compute();
    if dt == FloatDType::F32 {
        return linear.forward(x);
    }
    burn::tensor::module::linear(
        cast(x, dt),
        cast(linear.weight.val(), dt),
        linear.bias.as_ref().map(|b| cast(b.val(), dt)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::small_net_and_views;
    use crate::model::{BarlowTwins, Norm};
    use crate::train::{TrainConfig, barlow_twins_gradients_with};
    use burn::backend::{Autodiff, Flex};
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::backend::AutodiffBackend;

    type AB = Autodiff<Flex>;

    /// The trainable parameters' dtypes and values (as f32), and their
    /// gradients' dtypes.
    #[derive(Default)]
    struct Trainable<'a> {
        grads: Option<&'a GradientsParams>,
        dtypes: Vec<DType>,
        values: Vec<Vec<f32>>,
    }

    impl<B: AutodiffBackend> ModuleVisitor<B> for Trainable<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            if !t.is_require_grad() {
                return;
            }
            let (dtype, data) = match self.grads {
                Some(g) => match g.get::<B::InnerBackend, D>(param.id) {
                    Some(g) => (g.dtype(), g.into_data()),
                    None => return,
                },
                None => (t.dtype(), t.into_data()),
            };
            self.dtypes.push(dtype);
            self.values.push(data.convert::<f32>().to_vec().unwrap());
        }
    }

    fn trainable<'a>(model: &BarlowTwins<AB>, grads: Option<&'a GradientsParams>) -> Trainable<'a> {
        let mut t = Trainable {
            grads,
            ..Trainable::default()
        };
        model.visit(&mut t);
        t
    }

    /// One LARS step at the reference's weight rate (0.2) and settings:
    /// the model after it, its loss and its gradients.
    fn step(precision: Precision) -> (BarlowTwins<AB>, f32, Trainable<'static>) {
        let cfg = TrainConfig::default();
        let (model, y1, y2) = small_net_and_views(5);
        let (grads, loss) =
            barlow_twins_gradients_with(&model, y1, y2, cfg.lambda, Norm::Local, precision);
        assert_eq!(loss.dtype(), DType::F32, "the loss is f32");
        let g = trainable(&model, Some(&grads));
        let g = Trainable {
            grads: None,
            dtypes: g.dtypes,
            values: g.values,
        };
        let mut optim = cfg.optimizer::<AB>();
        let model = optim.step(cfg.lr_weights, model, grads);
        (model, loss.into_scalar(), g)
    }

    #[test]
    fn bf16_runs_the_layers_in_bf16_and_batch_norm_and_the_loss_in_f32() {
        let (m, y, _) = small_net_and_views(5);
        let h = m
            .backbone
            .forward_with(y.clone(), Norm::Local, Precision::Bf16);
        assert_eq!(
            h.dtype(),
            DType::BF16,
            "activations between layers are bf16"
        );
        // The BatchNorms' statistics are f32: the running mean the forward
        // pass updated, and the normalisation of a bf16 input is the f32
        // one, rounded once at the end.
        let running = m.backbone.bn1.running_mean.value();
        assert_eq!(running.dtype(), DType::F32);
        let stem = conv(&m.backbone.conv1, y, Precision::Bf16);
        assert_eq!(stem.dtype(), DType::BF16);
        // Training mode (autodiff): batch statistics.
        let bn = burn::nn::BatchNormConfig::new(8).init::<AB>(&Default::default());
        let x = stem;
        let got = crate::model::norm::batch_norm(&bn, x.clone(), Norm::Local);
        let want = cast(bn.forward(to_f32(x)), FloatDType::BF16);
        assert_eq!(got.dtype(), DType::BF16);
        assert_eq!(
            got.into_data().convert::<f32>().to_vec::<f32>().unwrap(),
            want.into_data().convert::<f32>().to_vec::<f32>().unwrap()
        );
        let z = m.projector.forward_with(h, Norm::Local, Precision::Bf16);
        assert_eq!(
            z.dtype(),
            DType::BF16,
            "the projector's last matmul is bf16"
        );
        let c = crate::loss::barlow_twins_loss(z.clone(), z, 0.0051);
        assert_eq!(c.dtype(), DType::F32, "the loss casts to f32");
    }

    #[test]
    fn a_bf16_step_keeps_f32_weights_and_moves_every_weight_an_f32_step_moves() {
        let before = trainable(&small_net_and_views(5).0, None).values;
        let (f32_model, f32_loss, f32_grads) = step(Precision::F32);
        let (bf16_model, bf16_loss, bf16_grads) = step(Precision::Bf16);
        // The gradients reach the master weights as f32 in both modes, and
        // the weights LARS wrote are f32.
        let dtypes = f32_grads.dtypes.iter().chain(&bf16_grads.dtypes);
        assert!(dtypes.into_iter().all(|&d| d == DType::F32));
        assert_eq!(bf16_grads.values.len(), before.len());
        let after_f32 = trainable(&f32_model, None).values;
        let after_bf16 = trainable(&bf16_model, None);
        assert!(after_bf16.dtypes.iter().all(|&d| d == DType::F32));
        // bf16 changed the arithmetic (the loss is not bit-equal) but not
        // the result beyond bf16's precision.
        assert_ne!(f32_loss, bf16_loss);
        assert!(
            (f32_loss - bf16_loss).abs() <= 0.02 * f32_loss.abs(),
            "{f32_loss} vs {bf16_loss}"
        );
        let (mut moved_f32, mut moved_both, mut lost_in_bf16_weights) = (0, 0, 0);
        let (mut dot, mut nf, mut nb) = (0.0, 0.0, 0.0);
        let tensors = before.iter().zip(&after_f32).zip(&after_bf16.values);
        for ((w0, wf), wb) in tensors {
            for ((&w0, &wf), &wb) in w0.iter().zip(wf).zip(wb) {
                if wf != w0 {
                    moved_f32 += 1;
                    moved_both += usize::from(wb != w0);
                    if burn::tensor::bf16::from_f32(wf) == burn::tensor::bf16::from_f32(w0) {
                        lost_in_bf16_weights += 1;
                    }
                }
                let (df, db) = (f64::from(wf - w0), f64::from(wb - w0));
                dot += df * db;
                nf += df * df;
                nb += db * db;
            }
        }
        // Where the f32 step moves a weight, so does the bf16 step, but
        // for a handful whose bf16 gradient is far smaller than their
        // tensor's (the update then rounds away in the f32 weight, as it
        // would in an f32 step), and the steps point the same way.
        assert!(
            moved_both * 1000 >= moved_f32 * 999,
            "{moved_both} of {moved_f32}"
        );
        let cosine = dot / (nf.sqrt() * nb.sqrt());
        eprintln!(
            "moved by the f32 step: {moved_f32}, also by the bf16 step: {moved_both}; \
             cosine {cosine:.3}; lost if kept in bf16: {lost_in_bf16_weights}; \
             loss {f32_loss} (f32), {bf16_loss} (bf16)"
        );
        assert!(cosine > 0.85, "cosine of the two updates {cosine}");
        // The control: weights kept in bf16 would have lost most of the
        // step (a LARS step is far below bf16's resolution).
        assert!(moved_f32 > 1000, "{moved_f32}");
        assert!(
            lost_in_bf16_weights * 2 > moved_f32,
            "{lost_in_bf16_weights} of {moved_f32} moves lost in bf16 weights"
        );
    }
}
