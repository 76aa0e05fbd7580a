//! The linear probe, the paper's protocol: a linear classifier trained on
//! the features of a frozen backbone in eval mode (running BatchNorm
//! statistics), and its top-1/top-5 accuracy on a validation set.
//!
//! - The classifier's weights start at N(0, 0.01), its bias at 0 (drawn on
//!   the host from the seed: the same seed gives the same start anywhere).
//! - SGD with momentum 0.9 (no dampening, no Nesterov), weight decay 1e-6
//!   on every parameter, batch 256, learning rate 0.3 annealed per epoch
//!   by a cosine to 0 (PyTorch's `CosineAnnealingLR(T_max = epochs)`).
//! - Training views: RandomResizedCrop (area 0.08-1) + horizontal flip,
//!   drawn anew every epoch from the seed; validation views: the eval
//!   transform (the centred square of 0.875 x the shorter side, resized
//!   bilinear to `size`).
//! - With `cached_features`, the training set is seen through the eval
//!   transform too and its features are computed once: no augmentation,
//!   much faster (the way to probe on a CPU).
//!
//! Accuracy is measured after every epoch; a label is in the top k when
//! fewer than k classes score higher or tie with it from a lower index. A
//! non-finite loss stops the probe with an error.

use std::sync::Arc;

use burn::module::{AutodiffModule, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig, decay::WeightDecayConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::{EvalError, FeatureConfig, Features, features};
use crate::data::augment::{AugmentConfig, ViewConfig};
use crate::data::loader::{Loader, LoaderConfig, Mode, PixelFormat};
use crate::data::sampler::{Order, Position, SamplerConfig};
use crate::data::shard::{Dataset, NO_LABEL};
use crate::model::{ResNet, normalise_u8};
use crate::progress::{Progress, Silent};

/// The probe's settings; defaults are the paper's but the view size.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub epochs: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Side of the views fed to the backbone.
    pub image_size: u32,
    /// RandomResizedCrop area range of the training views.
    pub crop_scale: (f64, f64),
    /// Train on eval-transform features computed once (no augmentation).
    pub cached_features: bool,
    pub seed: u64,
    pub threads: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            epochs: 100,
            batch_size: 256,
            lr: 0.3,
            momentum: 0.9,
            weight_decay: 1e-6,
            image_size: 224,
            crop_scale: (0.08, 1.0),
            cached_features: false,
            seed: 0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// One epoch of the probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEpoch {
    /// 1-based: the epochs done.
    pub epoch: u64,
    pub lr: f64,
    /// Mean cross-entropy of the epoch's batches.
    pub train_loss: f64,
    /// Validation accuracy in percent.
    pub top1: f64,
    pub top5: f64,
}

/// A line of a run's `linear.jsonl`: an epoch of a probe of the run's
/// checkpoint at `step` (none for weights from elsewhere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeLog {
    pub step: Option<u64>,
    #[serde(flatten)]
    pub epoch: ProbeEpoch,
}

impl ProbeLog {
    /// The entry as one JSONL line, newline included.
    pub fn line(&self) -> Result<String, EvalError> {
        let mut line = serde_json::to_string(self).map_err(|e| EvalError::Probe(e.to_string()))?;
        line.push('\n');
        Ok(line)
    }
}

/// What a probe did.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub epochs: Vec<ProbeEpoch>,
    pub classes: usize,
    pub train_images: usize,
    pub val_images: usize,
}

/// Stream tag of the classifier's initial weights and of the cached
/// features' order.
const TAG_PROBE: u64 = 0x7072_6f62;

/// Trains a linear classifier on `backbone`'s features of `train` and
/// measures it on `val` after every epoch (`on_epoch` sees each epoch as it
/// ends: log it there). `backbone` lives on the backend without autodiff,
/// so it is frozen and in eval mode; the classifier trains on `B`.
pub fn linear_probe<B: AutodiffBackend>(
    backbone: &ResNet<B::InnerBackend>,
    train: Arc<Dataset>,
    val: Arc<Dataset>,
    cfg: &ProbeConfig,
    device: &B::Device,
    progress: &dyn Progress,
    on_epoch: &mut dyn FnMut(&ProbeEpoch) -> Result<(), EvalError>,
) -> Result<ProbeResult, EvalError> {
    super::same_classes(&train, &val)?;
    let feature_cfg = FeatureConfig {
        image_size: cfg.image_size,
        batch_size: 256,
        threads: cfg.threads,
        l2_normalise: false,
    };
    let val_f = features(backbone, Arc::clone(&val), &feature_cfg, device, &Silent)?;
    let mut source = if cfg.cached_features {
        Views::Cached(features(
            backbone,
            Arc::clone(&train),
            &feature_cfg,
            device,
            &Silent,
        )?)
    } else {
        Views::Augmented(Box::new(Loader::new(
            Arc::clone(&train),
            train_loader_config(cfg),
            Position::default(),
        )?))
    };
    // Labels, numbered densely in sorted order.
    let mut train_labels = Vec::with_capacity(train.len() as usize);
    for shard in train.shards() {
        for i in 0..shard.len() {
            train_labels.push(shard.meta(i)?.label);
        }
    }
    for (set, labels) in [("training", &train_labels), ("validation", &val_f.labels)] {
        if let Some(i) = labels.iter().position(|&l| l == NO_LABEL) {
            return Err(EvalError::Probe(format!(
                "the {set} set has unlabelled records (record {i}): a linear probe needs a label for every image"
            )));
        }
    }
    let mut classes: Vec<u32> = train_labels.iter().chain(&val_f.labels).copied().collect();
    classes.sort_unstable();
    classes.dedup();
    let class = |l: u32| classes.binary_search(&l).unwrap_or(0) as i64;
    let dim = backbone_dim(backbone, device);
    let mut head = init_head::<B>(dim, classes.len(), cfg.seed, device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: cfg.momentum,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay as f32)))
        .init::<B, Linear<B>>();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let val_x = val_f.tensor::<B::InnerBackend>(device);
    let val_y: Vec<i64> = val_f.labels.iter().map(|&l| class(l)).collect();
    let mut epochs = Vec::new();
    progress.begin("linear probe", cfg.epochs, 0);
    for epoch in 0..cfg.epochs {
        let lr =
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / cfg.epochs as f64).cos());
        let mut total = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        let mut batches = 0usize;
        let mut step = |head: Linear<B>, x: Tensor<B, 2>, y: Vec<i64>| -> Linear<B> {
            let n = y.len();
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [n]), device);
            let loss = loss_fn.forward(head.forward(x), y);
            total = total.clone() + loss.clone().inner().reshape([1]);
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            optim.step(lr, head, grads)
        };
        match &mut source {
            Views::Cached(f) => {
                let mut order: Vec<usize> = (0..f.len()).collect();
                let mut rng = crate::rng::stream(&[TAG_PROBE, cfg.seed, epoch]);
                crate::rng::shuffle(&mut rng, &mut order);
                for chunk in order.chunks(cfg.batch_size.max(1)) {
                    let (x, y) = gather(f, chunk, &class);
                    let x =
                        Tensor::<B, 2>::from_data(TensorData::new(x, [chunk.len(), f.dim]), device);
                    head = step(head, x, y);
                }
            }
            Views::Augmented(loader) => {
                for _ in 0..loader.sampler().batches_per_epoch() {
                    let batch = loader.next_batch()?;
                    let x =
                        normalise_u8::<B::InnerBackend>(batch.view_u8(0), batch.shape(), device);
                    let y = batch.labels().iter().map(|&l| class(l)).collect();
                    drop(batch);
                    let f = Tensor::<B, 2>::from_inner(backbone.forward(x));
                    head = step(head, f, y);
                }
            }
        }
        let train_loss =
            total.into_data().iter::<f64>().next().unwrap_or(f64::NAN) / batches.max(1) as f64;
        if !train_loss.is_finite() {
            return Err(EvalError::Probe(format!(
                "the classifier's loss became {train_loss} in epoch {}: lower --lr",
                epoch + 1
            )));
        }
        let logits = head.valid().forward(val_x.clone());
        let (top1, top5) = top_k(
            &logits.into_data().iter::<f32>().collect::<Vec<_>>(),
            &val_y,
        );
        let e = ProbeEpoch {
            epoch: epoch + 1,
            lr,
            train_loss,
            top1,
            top5,
        };
        progress.advance(1);
        progress.message(&format!(
            "loss {train_loss:.3}  top-1 {top1:.1}%  top-5 {top5:.1}%"
        ));
        on_epoch(&e)?;
        epochs.push(e);
    }
    progress.finish();
    Ok(ProbeResult {
        epochs,
        classes: classes.len(),
        train_images: train.len() as usize,
        val_images: val_f.len(),
    })
}

/// Where the training features come from.
enum Views {
    /// Computed once through the eval transform.
    Cached(Features),
    /// Computed every epoch from RandomResizedCrop + flip views.
    Augmented(Box<Loader>),
}

/// The backbone's feature size, from a forward of one small image.
fn backbone_dim<B: Backend>(backbone: &ResNet<B>, device: &B::Device) -> usize {
    backbone
        .forward(Tensor::zeros([1, 3, 32, 32], device))
        .dims()[1]
}

/// The classifier, N(0, 0.01) weights and zero bias, drawn from `seed`.
fn init_head<B: Backend>(dim: usize, classes: usize, seed: u64, device: &B::Device) -> Linear<B> {
    let mut head = LinearConfig::new(dim, classes).init(device);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ TAG_PROBE);
    let w =
        TensorData::random::<f32, _, _>([dim, classes], Distribution::Normal(0.0, 0.01), &mut rng);
    head.weight = Param::from_tensor(Tensor::from_data(w, device).require_grad());
    head.bias = Some(Param::from_tensor(
        Tensor::<B, 1>::zeros([classes], device).require_grad(),
    ));
    head
}

/// The training loader: one view per image, RandomResizedCrop + flip,
/// nothing else.
fn train_loader_config(cfg: &ProbeConfig) -> LoaderConfig {
    let view = ViewConfig {
        flip_p: 0.5,
        jitter_p: 0.0,
        grayscale_p: 0.0,
        blur_p: 0.0,
        solarize_p: 0.0,
        ..ViewConfig::reference_view1()
    };
    LoaderConfig {
        sampler: SamplerConfig {
            seed: cfg.seed,
            batch_size: cfg.batch_size.max(1),
            drop_last: false,
            order: Order::Random,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: cfg.image_size,
            scale: cfg.crop_scale,
            views: [view.clone(), view],
            ..AugmentConfig::default()
        },
        threads: cfg.threads,
        format: PixelFormat::U8,
        mode: Mode::OneView,
        ..LoaderConfig::default()
    }
}

/// The rows `rows` of `f` and their dense labels.
fn gather(f: &Features, rows: &[usize], class: &dyn Fn(u32) -> i64) -> (Vec<f32>, Vec<i64>) {
    let mut x = Vec::with_capacity(rows.len() * f.dim);
    let mut y = Vec::with_capacity(rows.len());
    for &r in rows {
        x.extend_from_slice(&f.values[r * f.dim..(r + 1) * f.dim]);
        y.push(class(f.labels[r]));
    }
    (x, y)
}

/// Top-1 and top-5 accuracy in percent of row-major `logits` (one row per
/// label). A label's rank is the number of classes scoring higher, or
/// equal with a lower index (ties go to the lower class, never to the
/// label); it is in the top k when its rank is below k. A non-finite score
/// is a miss.
pub fn top_k(logits: &[f32], labels: &[i64]) -> (f64, f64) {
    if labels.is_empty() {
        return (0.0, 0.0);
    }
    let classes = logits.len() / labels.len();
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &y) in logits.chunks_exact(classes.max(1)).zip(labels) {
        let y = y as usize;
        let score = row[y];
        if !score.is_finite() {
            continue;
        }
        let rank = row
            .iter()
            .enumerate()
            .filter(|&(c, &s)| s > score || (s == score && c < y) || s.is_nan())
            .count();
        top1 += usize::from(rank < 1);
        top5 += usize::from(rank < 5);
    }
    let pct = |n: usize| 100.0 * n as f64 / labels.len() as f64;
    (pct(top1), pct(top5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_counts_the_classes_scoring_higher() {
        // Three rows of six classes: the label ranks 1st, 3rd and 6th.
        let logits = [
            5.0, 1.0, 0.0, 0.0, 0.0, 0.0, //
            3.0, 2.0, 1.0, 0.0, 0.0, 0.0, //
            1.0, 2.0, 3.0, 4.0, 5.0, 0.5,
        ];
        let (t1, t5) = top_k(&logits, &[0, 2, 5]);
        assert!((t1 - 100.0 / 3.0).abs() < 1e-9, "{t1}");
        // Ties go to the lower class; a NaN score is a miss.
        assert_eq!(top_k(&[1.0, 1.0, 1.0], &[0]), (100.0, 100.0));
        assert_eq!(top_k(&[1.0, 1.0, 1.0], &[2]).0, 0.0);
        assert_eq!(top_k(&[f32::NAN, 0.0], &[0]), (0.0, 0.0));
        assert!((t5 - 200.0 / 3.0).abs() < 1e-9, "{t5}");
    }
}
