//! The kernels against burn's own ops, through the model's entry points:
//! outputs, every gradient and BatchNorm's running statistics.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::optim::GradientsParams;
use std::cell::Cell;

use burn::tensor::{Tensor, TensorData};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{conv2d, with_burn_ops};
use crate::model::norm::batch_norm;
use crate::model::{Arch, BarlowTwins, Norm, Precision, ResNetConfig};
use crate::train::barlow_twins_gradients_with;

type AB = Autodiff<Flex>;

thread_local! {
    static DRAWS: Cell<u64> = const { Cell::new(0) };
}

/// Values in [-1.7, 1.7) (unit variance) from a stream of the test's own
/// thread: every tensor a test draws differs, and every run of the test
/// draws the same ones.
fn random<const D: usize>(shape: [usize; D]) -> Tensor<AB, D> {
    let draw = DRAWS.with(|d| d.replace(d.get() + 1));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(draw);
    let n = shape.iter().product::<usize>();
    let values: Vec<f32> = (0..n)
        .map(|_| ((rng.next_u32() >> 8) as f32 / (1 << 24) as f32 - 0.5) * 2.0 * 1.732)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn data<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().to_vec().expect("f32 values")
}

/// Whether `got` is `want` within `rel` of `want`'s largest magnitude,
/// value by value.
fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    assert!(!want.is_empty(), "{what}: nothing compared");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{what}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}

/// Forward and both gradients of the kernel's convolution and burn's on
/// the same inputs, through a random linear function of the output.
fn check_conv(x: [usize; 4], w: [usize; 4], stride: [usize; 2], padding: [usize; 4]) {
    let (x, w) = (random(x), random(w));
    let run = |burn: bool| {
        let (x, w) = (
            x.clone().detach().require_grad(),
            w.clone().detach().require_grad(),
        );
        let f = || conv2d(x.clone(), w.clone(), stride, padding);
        let y = if burn { with_burn_ops(f) } else { f() };
        let r = random(y.dims());
        (y, r, x, w)
    };
    let (y, r, x1, w1) = run(false);
    let grads = (y.clone() * r.clone()).sum().backward();
    let (gx, gw) = (x1.grad(&grads).map(data), w1.grad(&grads).map(data));
    let (y_ref, _, x2, w2) = run(true);
    let grads = with_burn_ops(|| (y_ref.clone() * r).sum().backward());
    let (gx_ref, gw_ref) = (x2.grad(&grads).map(data), w2.grad(&grads).map(data));
    let what = format!(
        "x {:?} w {:?} stride {stride:?} padding {padding:?}",
        x.dims(),
        w.dims()
    );
    assert_eq!(y.dims(), y_ref.dims(), "{what}");
    assert_close(
        &format!("{what} y"),
        &data(y.inner()),
        &data(y_ref.inner()),
        1e-4,
    );
    let (Some(gx), Some(gx_ref), Some(gw), Some(gw_ref)) = (gx, gx_ref, gw, gw_ref) else {
        panic!("{what}: a gradient is missing");
    };
    assert_close(&format!("{what} dx"), &gx, &gx_ref, 1e-4);
    assert_close(&format!("{what} dw"), &gw, &gw_ref, 1e-4);
}

#[test]
fn convolution_and_its_gradients_equal_burns() {
    // Strides 1 and 2; kernels 1, 3 and 7; padding 0 to 3, symmetric and
    // not; odd sizes, batch 1, channel counts off the SIMD width.
    check_conv([2, 3, 9, 9], [5, 3, 1, 1], [1, 1], [0, 0, 0, 0]);
    check_conv([3, 17, 8, 8], [33, 17, 1, 1], [2, 2], [0, 0, 0, 0]);
    check_conv([1, 5, 11, 7], [6, 5, 3, 3], [1, 1], [1, 1, 1, 1]);
    check_conv([2, 7, 13, 13], [9, 7, 3, 3], [2, 2], [1, 1, 1, 1]);
    check_conv([2, 3, 23, 19], [8, 3, 7, 7], [2, 2], [3, 3, 3, 3]);
    check_conv([1, 4, 10, 9], [3, 4, 3, 3], [2, 1], [0, 2, 3, 1]);
    check_conv([2, 6, 5, 5], [4, 6, 3, 3], [1, 2], [2, 0, 0, 2]);
}

#[test]
fn a_chunked_batch_gives_the_gradients_of_one_chunk() {
    // 64 images of 64 x 64 through a 3x3 convolution of 64 channels make
    // an im2col matrix larger than one scratch chunk.
    check_conv([64, 64, 64, 64], [8, 64, 3, 3], [1, 1], [1, 1, 1, 1]);
}

#[test]
fn the_inference_convolution_equals_burns() {
    let x = random([2, 5, 12, 10]).inner();
    let w = random([7, 5, 3, 3]).inner();
    let got = conv2d(x.clone(), w.clone(), [2, 2], [1, 1, 1, 1]);
    let want = with_burn_ops(|| conv2d(x, w, [2, 2], [1, 1, 1, 1]));
    assert_close("inference y", &data(got), &data(want), 1e-4);
}

fn bn_pair(channels: usize) -> (BatchNorm<AB>, BatchNorm<AB>) {
    let d = Default::default();
    let make = || {
        let mut bn = BatchNormConfig::new(channels).init::<AB>(&d);
        bn.gamma = bn.gamma.map(|_| random([channels]).require_grad());
        bn.beta = bn.beta.map(|_| random([channels]).require_grad());
        bn
    };
    let a = make();
    // The same parameters, running statistics of its own (a clone would
    // share them).
    let b = BatchNormConfig::new(channels)
        .init::<AB>(&d)
        .load_record(a.clone().into_record());
    (a, b)
}

fn check_batch_norm<const D: usize>(shape: [usize; D]) {
    let (ours, theirs) = bn_pair(shape[1]);
    let x = random(shape).mul_scalar(3.0).add_scalar(1.5);
    let r = random(shape);
    let run = |bn: &BatchNorm<AB>, burn: bool| {
        let x = x.clone().detach().require_grad();
        let f = || {
            // Two steps: the running statistics move twice.
            let _ = batch_norm(bn, x.clone(), Norm::Local);
            let y = batch_norm(bn, x.clone(), Norm::Local);
            let grads = (y.clone() * r.clone()).sum().backward();
            (y, grads)
        };
        let (y, grads) = if burn { with_burn_ops(f) } else { f() };
        let g = |t: &Tensor<AB, 1>| t.grad(&grads).map(data).unwrap_or_default();
        (
            data(y.inner()),
            x.grad(&grads).map(data).unwrap_or_default(),
            g(&bn.gamma.val()),
            g(&bn.beta.val()),
            data(bn.running_mean.value().inner()),
            data(bn.running_var.value().inner()),
        )
    };
    let got = run(&ours, false);
    let want = run(&theirs, true);
    let what = format!("{shape:?}");
    assert_close(&format!("{what} y"), &got.0, &want.0, 1e-4);
    assert_close(&format!("{what} dx"), &got.1, &want.1, 1e-4);
    assert_close(&format!("{what} dgamma"), &got.2, &want.2, 1e-4);
    assert_close(&format!("{what} dbeta"), &got.3, &want.3, 1e-4);
    assert_close(&format!("{what} running mean"), &got.4, &want.4, 1e-5);
    assert_close(&format!("{what} running var"), &got.5, &want.5, 1e-5);
}

#[test]
fn batch_norm_and_its_gradients_and_running_statistics_equal_burns() {
    check_batch_norm([4, 5, 7, 9]);
    check_batch_norm([1, 3, 6, 6]);
    check_batch_norm([16, 19, 1, 1]);
    check_batch_norm([9, 33]);
    check_batch_norm([3, 8, 17]);
}

/// Every trainable parameter's gradient, in the module's order.
struct Gradients<'a>(&'a GradientsParams, Vec<Vec<f32>>);

impl ModuleVisitor<AB> for Gradients<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(g) = self.0.get::<Flex, D>(param.id) {
            self.1.push(data(g));
        }
    }
}

/// The loss and every parameter gradient of one Barlow Twins step, with
/// the kernels and with burn's ops, on the same model and views.
fn check_step(model: &BarlowTwins<AB>, y1: Tensor<AB, 4>, y2: Tensor<AB, 4>) {
    let run = || {
        let (grads, loss) = barlow_twins_gradients_with(
            model,
            y1.clone(),
            y2.clone(),
            0.0051,
            Norm::Local,
            Precision::F32,
        );
        let mut v = Gradients(&grads, Vec::new());
        model.visit(&mut v);
        (loss.into_scalar(), v.1)
    };
    let (loss, grads) = run();
    let (loss_ref, grads_ref) = with_burn_ops(run);
    assert!(
        (loss - loss_ref).abs() <= 1e-4 * loss_ref.abs(),
        "loss {loss} vs {loss_ref}"
    );
    assert_eq!(grads.len(), grads_ref.len(), "parameters with a gradient");
    assert!(grads.len() > 10, "{} gradients", grads.len());
    for (i, (g, r)) in grads.iter().zip(&grads_ref).enumerate() {
        assert_close(&format!("parameter {i}"), g, r, 1e-4);
    }
}

#[test]
fn a_training_step_with_the_kernels_equals_one_with_burns_ops() {
    let (model, y1, y2) = crate::model::tests::small_net_and_views(11);
    check_step(&model, y1, y2);
}

#[test]
fn a_narrow_resnet50_step_with_the_kernels_equals_one_with_burns_ops() {
    let cfg = ResNetConfig {
        arch: Arch::Resnet50,
        width: 4,
        small_stem: false,
    };
    let model = BarlowTwins::<AB>::seeded(&cfg, &[64, 64], 7, &Default::default());
    let (y1, y2) = (random([4, 3, 64, 64]), random([4, 3, 64, 64]));
    check_step(&model, y1, y2);
}

/// BatchNorm composed from the three passes (as the peers' SyncBatchNorm
/// composes them, here with no peers in between): output and gradients
/// of `x`, γ and β.
fn composed(
    x: Tensor<AB, 4>,
    gamma: Tensor<AB, 1>,
    beta: Tensor<AB, 1>,
    r: Tensor<AB, 4>,
) -> [Vec<f32>; 4] {
    let [n, _, h, w] = x.dims();
    let count = (n * h * w) as f64;
    let mean = super::channel_sums(x.clone()) / count;
    let var = super::squared_deviation_sums(x.clone(), mean.clone()) / count;
    let y = super::normalize(x.clone(), [mean, var, gamma.clone(), beta.clone()], 1e-5);
    let grads = (y.clone() * r).sum().backward();
    let g = |t: &Tensor<AB, 1>| t.grad(&grads).map(data).unwrap_or_default();
    [
        data(y.inner()),
        x.grad(&grads).map(data).unwrap_or_default(),
        g(&gamma),
        g(&beta),
    ]
}

#[test]
fn the_batch_norm_passes_composed_equal_burns() {
    // Three values per channel at least: with two, BatchNorm's output is
    // ±γ + β whatever x, and x's gradient is rounding noise.
    for shape in [[4, 5, 7, 9], [3, 16, 1, 1], [1, 3, 5, 5]] {
        let x = random(shape).mul_scalar(2.0).add_scalar(-0.5);
        let (gamma, beta, r) = (random([shape[1]]), random([shape[1]]), random(shape));
        let run = || {
            composed(
                x.clone().detach().require_grad(),
                gamma.clone().detach().require_grad(),
                beta.clone().detach().require_grad(),
                r.clone(),
            )
        };
        let got = run();
        let want = with_burn_ops(run);
        for (name, (g, w)) in ["y", "dx", "dgamma", "dbeta"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert_close(&format!("{shape:?} {name}"), g, w, 1e-4);
        }
    }
}
