//! Evaluation of a backbone: features of a dataset under the eval transform
//! ([`features`]), the weighted kNN classifier ([`knn`]), and the two put
//! together ([`knn_accuracy`]).

pub mod knn;

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::data::augment::AugmentConfig;
use crate::data::loader::{Loader, LoaderConfig, LoaderError, Mode, PixelFormat};
use crate::data::sampler::{Order, Position, SamplerConfig};
use crate::data::shard::Dataset;
use crate::model::{ResNet, normalise_u8};
use crate::progress::Progress;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Knn(#[from] knn::KnnError),
}

/// The kNN top-1/top-5 of `backbone` (in its current mode: pass the
/// `valid()` model for running BatchNorm statistics) on `val`, with `train`
/// as the memory bank, both under the eval transform.
pub fn knn_accuracy<B: Backend>(
    backbone: &ResNet<B>,
    train: Arc<Dataset>,
    val: Arc<Dataset>,
    knn_cfg: &knn::KnnConfig,
    features_cfg: &FeatureConfig,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<knn::KnnResult, EvalError> {
    let train = features(backbone, train, features_cfg, device, progress)?;
    let val = features(backbone, val, features_cfg, device, progress)?;
    Ok(knn::knn::<B>(&train, &val, knn_cfg, device)?)
}

/// L2-normalised features of every record, in dataset order.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub dim: usize,
    /// `labels.len() x dim` values, row-major.
    pub values: Vec<f32>,
    pub labels: Vec<u32>,
}

impl Features {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The features as a `[len, dim]` tensor.
    pub fn tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(self.values.clone(), [self.len(), self.dim]),
            device,
        )
    }
}

/// How features are extracted.
#[derive(Debug, Clone)]
pub struct FeatureConfig {
    /// Side of the centre crop fed to the network.
    pub image_size: u32,
    pub batch_size: usize,
    pub threads: usize,
}

/// Runs `backbone` (in its current mode: pass `model.valid()` for running
/// BatchNorm statistics) over every record of `dataset` with the eval
/// transform and returns the L2-normalised pooled features. Deterministic:
/// records are read in order and nothing is random.
pub fn features<B: Backend>(
    backbone: &ResNet<B>,
    dataset: Arc<Dataset>,
    cfg: &FeatureConfig,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Features, LoaderError> {
    let n = dataset.len();
    let loader_cfg = LoaderConfig {
        sampler: SamplerConfig {
            batch_size: cfg.batch_size.clamp(1, n.max(1) as usize),
            drop_last: false,
            order: Order::Sequential,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: cfg.image_size,
            ..AugmentConfig::default()
        },
        threads: cfg.threads,
        format: PixelFormat::U8,
        mode: Mode::Eval,
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(dataset, loader_cfg, Position::default())?;
    let batches = loader.sampler().batches_per_epoch();
    let mut values = Vec::new();
    let mut labels = Vec::with_capacity(n as usize);
    let mut dim = 0;
    progress.begin("features", n, 0);
    for _ in 0..batches {
        let batch = loader.next_batch()?;
        let x = normalise_u8::<B>(batch.view_u8(0), batch.shape(), device);
        labels.extend_from_slice(batch.labels());
        let len = batch.len();
        drop(batch);
        let f = l2_normalise(backbone.forward(x));
        dim = f.dims()[1];
        let data = f.into_data().convert::<f32>();
        values.extend(data.iter::<f32>());
        progress.advance(len as u64);
    }
    progress.finish();
    Ok(Features {
        dim,
        values,
        labels,
    })
}

/// Rows scaled to unit L2 norm (zero rows stay zero).
pub fn l2_normalise<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}
