//! Evaluation of a backbone: the backbone of a checkpoint or of a
//! torchvision-named weights file ([`load_backbone`]), features of a
//! dataset under the eval transform ([`features`]), the weighted kNN
//! classifier ([`knn`]) and the two put together ([`knn_accuracy`]), the
//! linear probe ([`linear`]) and embeddings written to files ([`embed`]).

pub mod embed;
pub mod knn;
pub mod linear;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::data::augment::AugmentConfig;
use crate::data::loader::{Loader, LoaderConfig, LoaderError, Mode, OnDamaged, PixelFormat};
use crate::data::sampler::{Order, Position, SamplerConfig};
use crate::data::shard::Dataset;
use crate::error::IoError;
use crate::model::torchvision::{InteropError, Weights};
use crate::model::{BarlowTwins, ResNet, ResNetConfig, normalise_u8};
use crate::progress::Progress;
use crate::run::checkpoint::{self, CheckpointError};

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Knn(#[from] knn::KnnError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Interop(#[from] InteropError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Shard(#[from] crate::data::shard::ShardError),
    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error("{0}")]
    Probe(String),
    #[error(
        "{train} and {val} name different classes ({train_classes} and {val_classes}): their labels cannot be compared; shardify both from trees with the same class folders"
    )]
    Classes {
        train: PathBuf,
        val: PathBuf,
        train_classes: usize,
        val_classes: usize,
    },
}

/// Refuses two datasets whose labels number different class lists (each
/// shardify numbers its own sorted class folders).
pub fn same_classes(train: &Dataset, val: &Dataset) -> Result<(), EvalError> {
    let (a, b) = (&train.manifest().classes, &val.manifest().classes);
    if a.is_empty() || b.is_empty() || a == b {
        return Ok(());
    }
    Err(EvalError::Classes {
        train: train.dir().to_path_buf(),
        val: val.dir().to_path_buf(),
        train_classes: a.len(),
        val_classes: b.len(),
    })
}

/// Where a backbone's weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A checkpoint folder, or a run folder (its latest checkpoint).
    Checkpoint(PathBuf),
    /// A safetensors file with torchvision's names (`barlow export`, or a
    /// converted torchvision checkpoint).
    Weights(PathBuf),
}

/// A backbone ready to evaluate, and what is known of its training.
pub struct Backbone<B: Backend> {
    pub net: ResNet<B>,
    pub config: ResNetConfig,
    /// The run's view size (checkpoints only).
    pub image_size: Option<u32>,
    /// The checkpoint folder and its step (checkpoints only).
    pub checkpoint: Option<(PathBuf, u64)>,
}

/// Loads the backbone of `source` onto `device`. On a backend without
/// autodiff (a `B::InnerBackend`), its BatchNorms use their running
/// statistics: eval mode.
pub fn load_backbone<B: Backend>(
    source: &Source,
    device: &B::Device,
) -> Result<Backbone<B>, EvalError> {
    match source {
        Source::Checkpoint(path) => {
            let dir = checkpoint::resolve(path)?;
            let state = checkpoint::load_state(&dir)?;
            let cfg = &state.config;
            let model = BarlowTwins::<B>::new(&cfg.backbone(), &cfg.projector, device);
            let model = checkpoint::load_model(&dir, model, device)?;
            Ok(Backbone {
                net: model.backbone,
                config: cfg.backbone(),
                image_size: Some(cfg.image_size),
                checkpoint: Some((dir, state.step)),
            })
        }
        Source::Weights(path) => {
            let w = Weights::read(path)?;
            let config = w.backbone_config()?;
            let net = w.load_backbone(config.init::<B>(device), device)?;
            Ok(Backbone {
                net,
                config,
                image_size: None,
                checkpoint: None,
            })
        }
    }
}

/// The run folder a checkpoint folder belongs to (`RUN/checkpoints/step-N`).
pub fn run_of(checkpoint_dir: &Path) -> Option<&Path> {
    let parent = checkpoint_dir.parent()?;
    (parent.file_name()? == checkpoint::CHECKPOINTS).then(|| parent.parent())?
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
    same_classes(&train, &val)?;
    let train = features(backbone, train, features_cfg, device, progress)?;
    let val = features(backbone, val, features_cfg, device, progress)?;
    Ok(knn::knn::<B>(&train, &val, knn_cfg, device)?)
}

/// Features of every record, in dataset order.
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
    /// Scale every feature vector to unit L2 norm (what kNN compares).
    pub l2_normalise: bool,
}

/// The loader [`features`] reads a dataset of `n` records with.
pub fn features_loader_config(cfg: &FeatureConfig, n: u64) -> LoaderConfig {
    LoaderConfig {
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
        // Row i is record i: an undecodable or damaged record is an error
        // naming it, never silently replaced by another.
        max_replacements: 0,
        on_damaged: OnDamaged::Stop,
        ..LoaderConfig::default()
    }
}

/// Runs `backbone` (in its current mode: pass `model.valid()` for running
/// BatchNorm statistics) over every record of `dataset` with the eval
/// transform and returns the pooled features (L2-normalised if the config
/// says so). Deterministic:
/// records are read in order and nothing is random.
pub fn features<B: Backend>(
    backbone: &ResNet<B>,
    dataset: Arc<Dataset>,
    cfg: &FeatureConfig,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Features, LoaderError> {
    let n = dataset.len();
    let loader_cfg = features_loader_config(cfg, n);
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
        let mut f = backbone.forward(x);
        if cfg.l2_normalise {
            f = l2_normalise(f);
        }
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
