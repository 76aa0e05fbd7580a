//! Checks that a device backend (CUDA, Vulkan) computes what the CPU
//! backend (Flex) computes, on the demo's network. `tests/device.rs` runs
//! them on the device a build has (the software Vulkan device in CI);
//! `barlow gpu-check` runs them on a user's GPU.
//!
//! Each check returns what it measured; its `problems` compares that with
//! the tolerances below and names every failure. The tolerances are for
//! f32 with different kernels and summation orders (the device's reductions
//! and convolutions are not Flex's), over the three steps of
//! [`trace_steps`].

use std::path::Path;
use std::sync::Arc;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::backend::Cpu;
use crate::data::shard::Dataset;
use crate::model::{BarlowTwins, Norm, Precision, normalise_u8, upload_u8};
use crate::prep::datasets::sample::{SampleError, SampleOptions, make_sample};
use crate::prep::shardify::{Input, Layout, Options, ShardifyError, shardify};
use crate::progress::Silent;
use crate::train::{self, CheckpointState, LossRead, RunOptions, TrainConfig, TrainError};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Sample(#[from] SampleError),
    #[error(transparent)]
    Shardify(#[from] ShardifyError),
    #[error(transparent)]
    Shard(#[from] crate::data::shard::ShardError),
    #[error(
        "the feed-path check needs more than {steps} batches of 16 in one epoch; the dataset has {records} records"
    )]
    TooFewRecords { steps: u64, records: u64 },
}

/// Largest relative difference of a step's loss.
pub const LOSS_REL: f64 = 1e-4;
/// Largest relative difference of a parameter's gradient norm, relative to
/// the step's largest gradient norm (a near-zero gradient is compared in
/// absolute terms).
pub const GRAD_NORM_REL: f64 = 1e-3;
/// Largest difference of a weight after the steps, relative to the largest
/// magnitude in its tensor.
pub const WEIGHT_REL: f64 = 1e-4;
/// Largest relative difference of a step's loss under bf16 mixed precision
/// (both backends round the inputs of every convolution and matmul to
/// bf16, about 3 significant digits, and accumulate in f32 in their own
/// orders).
pub const BF16_LOSS_REL: f64 = 2e-2;
/// Largest difference of an eval-mode feature after a checkpoint moves
/// between backends, relative to the largest feature magnitude.
pub const FEATURE_REL: f64 = 1e-4;

/// The network and optimiser every check uses: the demo's, at batch 16.
pub fn network() -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        ..TrainConfig::demo(1, 1)
    }
}

/// Two batches of views (u8 NCHW) drawn from `seed`: noise, which exercises
/// every pixel value.
fn views(cfg: &TrainConfig, seed: u64) -> ([Vec<u8>; 2], [usize; 4]) {
    let s = cfg.image_size as usize;
    let shape = [cfg.batch_size, 3, s, s];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut draw = || {
        let mut v = vec![0u8; shape.iter().product()];
        rng.fill_bytes(&mut v);
        v
    };
    ([draw(), draw()], shape)
}

/// What [`trace_steps`] saw on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct StepTrace {
    /// Each step's loss.
    pub losses: Vec<f32>,
    /// Each step's gradient norm of every parameter, in the module's order.
    pub grad_norms: Vec<Vec<f64>>,
    /// Every parameter's values after the steps, in the module's order.
    #[serde(skip)]
    pub weights: Vec<Vec<f32>>,
    /// Every parameter was f32 after the steps.
    pub weights_f32: bool,
}

/// `steps` training steps of [`network`] from its seeded weights, each on
/// its own batch of noise views, with the reference's LARS at its base
/// rates (`lr_weights` 0.2, no schedule: large steps, which make
/// differences between backends show), convolutions and matmuls in
/// `precision`.
pub fn trace_steps<B: AutodiffBackend>(
    device: &B::Device,
    steps: usize,
    precision: Precision,
) -> StepTrace {
    let cfg = network();
    let mut model = BarlowTwins::<B>::seeded(&cfg.backbone(), &cfg.projector, cfg.seed, device);
    let mut optim = cfg.optimizer::<B>();
    let mut trace = StepTrace {
        losses: Vec::new(),
        grad_norms: Vec::new(),
        weights: Vec::new(),
        weights_f32: false,
    };
    for step in 0..steps {
        let ([a, b], shape) = views(&cfg, step as u64);
        let y1 = normalise_u8::<B>(&a, shape, device);
        let y2 = normalise_u8::<B>(&b, shape, device);
        // The trainer's step, split to see the gradients before LARS.
        let (grads, loss) =
            train::barlow_twins_gradients_with(&model, y1, y2, cfg.lambda, Norm::Local, precision);
        trace.losses.push(host(loss)[0]);
        let mut norms = GradNorms {
            grads: &grads,
            norms: Vec::new(),
        };
        model.visit(&mut norms);
        trace.grad_norms.push(norms.norms);
        model = optim.step(cfg.lr_weights, model, grads);
    }
    let mut weights = Weights(Vec::new(), true);
    model.visit(&mut weights);
    trace.weights = weights.0;
    trace.weights_f32 = weights.1;
    trace
}

/// A tensor's values on the host as f32.
fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().iter::<f32>().collect()
}

struct GradNorms<'a> {
    grads: &'a GradientsParams,
    norms: Vec<f64>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorms<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let g = self.grads.get::<B::InnerBackend, D>(param.id);
        let sq: f64 = g.map_or(0.0, |g| host(g).iter().map(|&v| (v as f64).powi(2)).sum());
        self.norms.push(sq.sqrt());
    }
}

/// Every parameter's values, and whether all were f32.
struct Weights(Vec<Vec<f32>>, bool);

impl<B: Backend> ModuleVisitor<B> for Weights {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.1 &= param.val().dtype() == DType::F32;
        self.0.push(host(param.val()));
    }
}

/// How far a device's [`StepTrace`] is from Flex's.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub cpu_losses: Vec<f32>,
    pub device_losses: Vec<f32>,
    /// Largest relative loss difference over the steps.
    pub loss_rel: f64,
    /// Largest gradient-norm difference, relative to its step's largest
    /// norm.
    pub grad_norm_rel: f64,
    /// Largest weight difference after the steps, relative to the largest
    /// magnitude of its tensor.
    pub weight_rel: f64,
}

/// The largest of `values` (0 for none); NaN if any is NaN.
fn worst(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().fold(0.0, |m: f64, x| {
        if m.is_nan() || x.is_nan() {
            f64::NAN
        } else {
            m.max(x)
        }
    })
}

/// `max |a - b| / max |a|` over two equally long slices (infinite if their
/// lengths differ, NaN if a value is).
fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let scale = worst(a.iter().map(|v| v.abs() as f64));
    let diff = worst(a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64));
    diff / scale.max(f64::MIN_POSITIVE)
}

impl Agreement {
    pub fn new(cpu: &StepTrace, device: &StepTrace) -> Agreement {
        let loss_rel = worst(
            cpu.losses
                .iter()
                .zip(&device.losses)
                .map(|(&a, &b)| max_rel_diff(&[a], &[b])),
        );
        let grad_norm_rel = worst(cpu.grad_norms.iter().zip(&device.grad_norms).flat_map(
            |(a, b)| {
                let scale = worst(a.iter().copied()).max(f64::MIN_POSITIVE);
                a.iter().zip(b).map(move |(&x, &y)| (x - y).abs() / scale)
            },
        ));
        let weight_rel = worst(
            cpu.weights
                .iter()
                .zip(&device.weights)
                .map(|(a, b)| max_rel_diff(a, b)),
        );
        let mismatch = cpu.losses.len() != device.losses.len()
            || cpu
                .grad_norms
                .iter()
                .map(Vec::len)
                .ne(device.grad_norms.iter().map(Vec::len))
            || cpu
                .weights
                .iter()
                .map(Vec::len)
                .ne(device.weights.iter().map(Vec::len));
        // A NaN anywhere, or traces of different shapes, fails every bound.
        let poison = |x: f64| {
            if mismatch || x.is_nan() {
                f64::INFINITY
            } else {
                x
            }
        };
        Agreement {
            cpu_losses: cpu.losses.clone(),
            device_losses: device.losses.clone(),
            loss_rel: poison(loss_rel),
            grad_norm_rel: poison(grad_norm_rel),
            weight_rel: poison(weight_rel),
        }
    }

    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (what, got, bound) in [
            ("loss", self.loss_rel, LOSS_REL),
            ("gradient norm", self.grad_norm_rel, GRAD_NORM_REL),
            ("weight", self.weight_rel, WEIGHT_REL),
        ] {
            // NaN fails too.
            if got.is_nan() || got > bound {
                p.push(format!(
                    "{what} differs from the CPU's by {got:.2e} (relative), above {bound:.0e}"
                ));
            }
        }
        p
    }
}

/// [`trace_steps`] in f32 on Flex and on `device`, compared.
pub fn agreement<B: AutodiffBackend>(device: &B::Device, steps: usize) -> Agreement {
    let cpu = trace_steps::<Cpu>(&Default::default(), steps, Precision::F32);
    let dev = trace_steps::<B>(device, steps, Precision::F32);
    Agreement::new(&cpu, &dev)
}

/// bf16 mixed precision on a device against the CPU's (Flex computes bf16
/// convolutions and matmuls through f32, rounding their inputs and outputs
/// to bf16).
#[derive(Debug, Clone, Serialize)]
pub struct MixedPrecision {
    /// Whether the device has bf16; the steps run only where it does.
    pub bf16: bool,
    pub cpu_losses: Vec<f32>,
    pub device_losses: Vec<f32>,
    /// Largest relative difference of a step's loss.
    pub loss_rel: f64,
    /// The device's weights were all f32 after the steps (master weights).
    pub weights_f32: bool,
}

impl MixedPrecision {
    pub fn new(cpu: &StepTrace, device: &StepTrace) -> MixedPrecision {
        let agreement = Agreement::new(cpu, device);
        MixedPrecision {
            bf16: true,
            cpu_losses: agreement.cpu_losses,
            device_losses: agreement.device_losses,
            loss_rel: agreement.loss_rel,
            weights_f32: cpu.weights_f32 && device.weights_f32,
        }
    }

    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.bf16 {
            return p;
        }
        if self.loss_rel.is_nan() || self.loss_rel > BF16_LOSS_REL {
            p.push(format!(
                "bf16 loss differs from the CPU's by {:.2e} (relative), above {BF16_LOSS_REL:.0e}",
                self.loss_rel
            ));
        }
        if !self.weights_f32 {
            p.push("a weight is not f32 after bf16 steps".into());
        }
        p
    }
}

/// [`trace_steps`] in bf16 on Flex and on `device`, compared, where the
/// device has bf16 (lavapipe has not).
pub fn mixed_precision<B: AutodiffBackend>(device: &B::Device, steps: usize) -> MixedPrecision {
    if !B::supports_dtype(device, DType::BF16) {
        return MixedPrecision {
            bf16: false,
            cpu_losses: Vec::new(),
            device_losses: Vec::new(),
            loss_rel: 0.0,
            weights_f32: true,
        };
    }
    let cpu = trace_steps::<Cpu>(&Default::default(), steps, Precision::Bf16);
    let dev = trace_steps::<B>(device, steps, Precision::Bf16);
    MixedPrecision::new(&cpu, &dev)
}

/// The feed's first stage on a device: the bytes that arrive, and the
/// normalised values, against the CPU loader's.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    pub values: usize,
    /// The tensor on the device holds u8.
    pub dtype_u8: bool,
    /// Bytes read back from the device that differ from those sent.
    pub bytes_differing: usize,
    /// Normalised values whose bits differ from the CPU loader's f32 output.
    pub normalised_differing: usize,
}

impl Upload {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.dtype_u8 {
            p.push("the pixels did not reach the device as u8".into());
        }
        if self.bytes_differing > 0 {
            p.push(format!(
                "{} of {} bytes came back changed from the device",
                self.bytes_differing, self.values
            ));
        }
        if self.normalised_differing > 0 {
            p.push(format!(
                "{} of {} normalised values differ from the CPU loader's",
                self.normalised_differing, self.values
            ));
        }
        p
    }
}

/// Uploads every byte value in every channel through [`upload_u8`] and
/// [`normalise_u8`] and compares the results with what was sent and with
/// the CPU loader's f32 output, bit for bit.
pub fn upload<B: Backend>(device: &B::Device) -> Upload {
    // 2 images x 3 channels x 16 x 16: each channel sees all 256 values.
    let shape = [2, 3, 16, 16];
    let pixels: Vec<u8> = (0..shape.iter().product::<usize>())
        .map(|i| (i * 97 % 256) as u8)
        .collect();
    let x = upload_u8::<B>(&pixels, shape, device);
    let dtype_u8 = x.dtype() == DType::U8;
    let back: Vec<u8> = x.into_data().convert::<u8>().iter::<u8>().collect();
    let got = host(normalise_u8::<B>(&pixels, shape, device));
    let plane = 16 * 16;
    let mut want = vec![0f32; pixels.len()];
    for (src, dst) in pixels.chunks(3 * plane).zip(want.chunks_mut(3 * plane)) {
        let planes: Vec<f32> = src.iter().map(|&v| v as f32).collect();
        crate::data::augment::output::write_f32(&planes, dst);
    }
    Upload {
        values: pixels.len(),
        dtype_u8,
        bytes_differing: count_differing(&pixels, &back),
        normalised_differing: got.len().abs_diff(want.len())
            + got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count(),
    }
}

fn count_differing(a: &[u8], b: &[u8]) -> usize {
    a.len().abs_diff(b.len()) + a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// A checkpoint moved between Flex and the device: the largest difference
/// of the eval-mode features of the same images, relative to their largest
/// magnitude, each way.
#[derive(Debug, Clone, Serialize)]
pub struct CrossLoad {
    pub cpu_to_device: f64,
    pub device_to_cpu: f64,
}

impl CrossLoad {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (what, got) in [
            (
                "saved on the CPU and loaded on the device",
                self.cpu_to_device,
            ),
            (
                "saved on the device and loaded on the CPU",
                self.device_to_cpu,
            ),
        ] {
            if got.is_nan() || got > FEATURE_REL {
                p.push(format!(
                    "a checkpoint {what} gives features {got:.2e} (relative) away, above {FEATURE_REL:.0e}"
                ));
            }
        }
        p
    }
}

/// Trains [`network`] one step on one backend, saves a checkpoint under
/// `dir`, loads it on the other, and compares the backbones' eval-mode
/// features of a batch (running BatchNorm statistics included); both ways.
pub fn checkpoint_cross_load<B: AutodiffBackend>(
    dir: &Path,
    device: &B::Device,
) -> Result<CrossLoad, TrainError> {
    let cpu_device = Default::default();
    Ok(CrossLoad {
        cpu_to_device: cross_load::<Cpu, B>(&dir.join("from-cpu"), &cpu_device, device)?,
        device_to_cpu: cross_load::<B, Cpu>(&dir.join("from-device"), device, &cpu_device)?,
    })
}

fn cross_load<S: AutodiffBackend, L: AutodiffBackend>(
    dir: &Path,
    save_on: &S::Device,
    load_on: &L::Device,
) -> Result<f64, TrainError> {
    let cfg = network();
    let mut model = BarlowTwins::<S>::seeded(&cfg.backbone(), &cfg.projector, cfg.seed, save_on);
    let mut optim = cfg.optimizer::<S>();
    let ([a, b], shape) = views(&cfg, 7);
    let y1 = normalise_u8::<S>(&a, shape, save_on);
    let y2 = normalise_u8::<S>(&b, shape, save_on);
    (model, _) = train::barlow_twins_step(model, &mut optim, y1, y2, cfg.lambda, cfg.lr_weights);
    let state = CheckpointState {
        step: 1,
        position: Default::default(),
        config: cfg.clone(),
    };
    let saved = train::checkpoint::save(dir, &state, &model, &optim)?;
    let fresh = BarlowTwins::<L>::new(&cfg.backbone(), &cfg.projector, load_on);
    let loaded = train::checkpoint::load_model(&saved, fresh, load_on)?;
    let ([x, _], shape) = views(&cfg, 8);
    let want = host(
        model
            .valid()
            .backbone
            .forward(normalise_u8(&x, shape, save_on)),
    );
    let got = host(
        loaded
            .valid()
            .backbone
            .forward(normalise_u8(&x, shape, load_on)),
    );
    Ok(max_rel_diff(&want, &got))
}

/// When a short run fetched its losses from the device.
#[derive(Debug, Clone, Serialize)]
pub struct FeedPath {
    pub steps: u64,
    pub log_every: u64,
    /// The fetches the run made.
    pub reads: Vec<LossRead>,
    /// The fetches it should make: one at each log point (step 0, every
    /// `log_every` steps, the last step), each after the next batch's
    /// upload (none follows the last step).
    pub expected: Vec<LossRead>,
}

impl FeedPath {
    pub fn problems(&self) -> Vec<String> {
        if self.reads == self.expected {
            return Vec::new();
        }
        let show = |r: &[LossRead]| {
            r.iter()
                .map(|r| format!("step {} after {} uploads", r.step, r.batches_uploaded))
                .collect::<Vec<_>>()
                .join(", ")
        };
        vec![format!(
            "losses were read from the device at [{}], expected [{}]",
            show(&self.reads),
            show(&self.expected)
        )]
    }
}

/// Trains [`network`] for `steps` steps on `dataset` (which must hold more
/// than `steps` batches of 16, so that no epoch ends and only log points
/// read), logging every `log_every` steps, with its run folder in `out`.
/// The reads are those [`crate::train::PendingLosses::read`], the one
/// function that fetches losses, records.
pub fn feed_path<B: AutodiffBackend + crate::peers::PeerReduce>(
    dataset: Arc<Dataset>,
    out: &Path,
    steps: u64,
    log_every: u64,
    device: &B::Device,
) -> Result<FeedPath, CheckError> {
    let log_every = log_every.max(1);
    let records = dataset.len();
    if records / network().batch_size as u64 <= steps {
        return Err(CheckError::TooFewRecords { steps, records });
    }
    let cfg = TrainConfig {
        max_steps: Some(steps),
        log_every,
        threads: 2,
        ..network()
    };
    let run = RunOptions::new(out);
    let (_, summary) = train::train::<B>(dataset, &cfg, &run, device, &Silent)?;
    let expected = (0..steps)
        .filter(|&s| s == 0 || (s + 1) % log_every == 0 || s + 1 == steps)
        .map(|s| LossRead {
            step: s,
            batches_uploaded: (s + 2).min(steps),
        })
        .collect();
    Ok(FeedPath {
        steps,
        log_every,
        reads: summary.loss_reads,
        expected,
    })
}

/// Generates `records` sample images (two classes) under `dir/images` and
/// shardifies them into `dir/shards`: data for [`feed_path`].
pub fn sample_dataset(dir: &Path, records: usize) -> Result<Arc<Dataset>, CheckError> {
    let opts = SampleOptions {
        classes: 2,
        train_per_class: records.div_ceil(2),
        val_per_class: 1,
        min_side: 40,
        max_side: 56,
        ..SampleOptions::default()
    };
    make_sample(&dir.join("images"), &opts, 2, &Silent)?;
    let input = Input::Folder {
        path: dir.join("images/train"),
        layout: Layout::ImageFolder,
    };
    let shards = dir.join("shards");
    shardify(&input, &shards, &Options::default(), &Silent)?;
    Ok(Arc::new(Dataset::open(shards)?))
}

/// Which of the dtypes barlow's device paths use the backend supports on
/// `device`.
pub fn dtypes<B: Backend>(device: &B::Device) -> Vec<(String, bool)> {
    [DType::F32, DType::F16, DType::BF16, DType::F64, DType::U8]
        .into_iter()
        .map(|d| {
            (
                format!("{d:?}").to_lowercase(),
                B::supports_dtype(device, d),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks can fail: Flex against itself agrees exactly, and against
    /// a trace whose weights moved differently they fail.
    #[test]
    fn flex_agrees_with_itself_and_a_perturbed_trace_is_caught() {
        let d = Default::default();
        let a = trace_steps::<Cpu>(&d, 2, Precision::F32);
        let b = trace_steps::<Cpu>(&d, 2, Precision::F32);
        let same = Agreement::new(&a, &b);
        assert_eq!(
            (same.loss_rel, same.grad_norm_rel, same.weight_rel),
            (0.0, 0.0, 0.0)
        );
        assert!(same.problems().is_empty());
        let mut moved = b.clone();
        moved.weights[5][0] += 1e-2;
        moved.losses[1] *= 1.001;
        let largest = (0..a.grad_norms[0].len())
            .max_by(|&i, &j| a.grad_norms[0][i].total_cmp(&a.grad_norms[0][j]))
            .unwrap();
        moved.grad_norms[0][largest] *= 1.01;
        let p = Agreement::new(&a, &moved).problems();
        assert_eq!(p.len(), 3, "{p:?}");
        let mut nan = b.clone();
        nan.losses[0] = f32::NAN;
        assert!(Agreement::new(&a, &nan).loss_rel.is_infinite());
        let shorter = trace_steps::<Cpu>(&d, 1, Precision::F32);
        assert_eq!(Agreement::new(&a, &shorter).problems().len(), 3);
    }

    /// The bf16 check passes on Flex against itself, fails on a loss off
    /// by more than its bound, and an f32 trace against a bf16 one differs
    /// by more than f32's bound but within bf16's.
    #[test]
    fn the_mixed_precision_check_passes_on_flex_and_catches_a_drift() {
        let m = mixed_precision::<Cpu>(&Default::default(), 2);
        assert!(m.bf16 && m.weights_f32);
        assert_eq!(m.loss_rel, 0.0);
        assert!(m.problems().is_empty(), "{:?}", m.problems());
        let d = Default::default();
        let f32_trace = trace_steps::<Cpu>(&d, 2, Precision::F32);
        let bf16_trace = trace_steps::<Cpu>(&d, 2, Precision::Bf16);
        let a = Agreement::new(&f32_trace, &bf16_trace);
        assert!(
            a.loss_rel > LOSS_REL && a.loss_rel < BF16_LOSS_REL,
            "{}",
            a.loss_rel
        );
        let mut off = bf16_trace.clone();
        off.losses[1] *= 1.05;
        off.weights_f32 = false;
        assert_eq!(MixedPrecision::new(&bf16_trace, &off).problems().len(), 2);
    }

    #[test]
    fn the_upload_check_passes_on_flex() {
        let u = upload::<burn::backend::Flex>(&Default::default());
        assert_eq!(u.values, 1536);
        assert!(u.problems().is_empty(), "{:?}", u.problems());
    }

    #[test]
    fn a_checkpoint_moves_between_two_flex_models_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let c = checkpoint_cross_load::<Cpu>(tmp.path(), &Default::default()).unwrap();
        assert_eq!((c.cpu_to_device, c.device_to_cpu), (0.0, 0.0));
        let off = CrossLoad {
            cpu_to_device: 1e-3,
            device_to_cpu: f64::NAN,
        };
        assert_eq!(off.problems().len(), 2);
    }
}
