//! The training loop: loader -> device normalisation -> backbone +
//! projector -> Barlow Twins loss -> LARS, with the warm-up + cosine
//! schedule stepped every iteration, on burn's Flex CPU backend.
//!
//! What it guarantees today: the SPEC defaults (batch scaling of the rates,
//! lambda, LARS, schedule), the loader's determinism (same seed, same
//! batches), a JSONL log line every `log_every` steps and the time the step
//! spent waiting for data. Checkpoints and resume, the CUDA backend and the
//! kNN monitor are still to come (see the README's status).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex};
use burn::optim::{GradientsParams, Optimizer};
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::loader::{Loader, LoaderConfig, LoaderError};
use crate::model::{Arch, BarlowTwins, ResNetConfig, normalise_u8};
use crate::optim::{LarsConfig, WarmupCosine};
use crate::progress::Progress;
use crate::sampler::{Position, SamplerConfig};
use crate::shard::Dataset;

/// The CPU training backend.
pub type CpuBackend = Autodiff<Flex>;

/// Everything a run needs; defaults are SPEC's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub arch: Arch,
    /// Base width of the ResNet (64 = torchvision's).
    pub width: usize,
    /// 3x3 stride-1 stem without max-pool (small images).
    pub small_stem: bool,
    pub image_size: u32,
    pub batch_size: usize,
    pub epochs: u64,
    /// Stop after this many steps (the schedule still spans `epochs`).
    pub max_steps: Option<u64>,
    pub lambda: f32,
    pub lr_weights: f64,
    pub lr_biases: f64,
    pub weight_decay: f64,
    pub projector: Vec<usize>,
    pub seed: u64,
    pub threads: usize,
    pub log_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: Arch::Resnet50,
            width: 64,
            small_stem: false,
            image_size: 224,
            batch_size: 2048,
            epochs: 1000,
            max_steps: None,
            lambda: 0.0051,
            lr_weights: 0.2,
            lr_biases: 0.0048,
            weight_decay: 1e-6,
            projector: vec![8192, 8192, 8192],
            seed: 0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            log_every: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the loss became {0} at step {1}")]
    NonFinite(f32, u64),
}

/// One logged step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub epoch: u64,
    pub step: u64,
    pub lr_weights: f64,
    pub lr_biases: f64,
    pub loss: f32,
    pub images_per_sec: f64,
    /// Share of the step time spent waiting for the loader, since the last log.
    pub data_wait: f64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub losses: Vec<(u64, f32)>,
    pub images_per_sec: f64,
    pub data_wait_share: f64,
    pub elapsed: Duration,
}

/// Trains on `dataset`, logging to `out/log.jsonl`.
pub fn train(
    dataset: Arc<Dataset>,
    cfg: &TrainConfig,
    out: &Path,
    progress: &dyn Progress,
) -> Result<(BarlowTwins<CpuBackend>, TrainSummary), TrainError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let device = Default::default();
    let backbone = ResNetConfig {
        arch: cfg.arch,
        width: cfg.width,
        small_stem: cfg.small_stem,
    };
    let mut model = BarlowTwins::<CpuBackend>::new(&backbone, &cfg.projector, &device);
    let mut optim = LarsConfig::new()
        .with_weight_decay(cfg.weight_decay)
        .with_biases_over_weights(cfg.lr_biases / cfg.lr_weights)
        .init::<CpuBackend, BarlowTwins<CpuBackend>>();
    let loader_cfg = LoaderConfig {
        sampler: SamplerConfig {
            seed: cfg.seed,
            batch_size: cfg.batch_size,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: cfg.image_size,
            ..AugmentConfig::default()
        },
        threads: cfg.threads,
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(dataset, loader_cfg, Position::default())?;
    let per_epoch = loader.sampler().batches_per_epoch();
    let schedule = WarmupCosine::spec(
        cfg.batch_size,
        cfg.epochs,
        per_epoch,
        cfg.lr_weights,
        cfg.lr_biases,
    );
    let total = cfg
        .max_steps
        .unwrap_or(schedule.total_steps)
        .min(schedule.total_steps);
    let log_path = out.join("log.jsonl");
    let mut log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    progress.begin("train", total, 0);
    let started = Instant::now();
    let (mut window_start, mut window_wait, mut window_images) =
        (Instant::now(), Duration::ZERO, 0usize);
    let (mut total_wait, mut images) = (Duration::ZERO, 0usize);
    let mut losses = Vec::new();
    for step in 0..total {
        let wait0 = loader.stats().data_wait;
        let batch = loader.next_batch()?;
        let waited = batch.data_wait() - wait0;
        let pos = batch.position();
        let shape = batch.shape();
        let y1 = normalise_u8::<CpuBackend>(batch.view_u8(0), shape, &device);
        let y2 = normalise_u8::<CpuBackend>(batch.view_u8(1), shape, &device);
        drop(batch);
        let loss = model.loss(y1, y2, cfg.lambda);
        let value = loss.clone().into_scalar();
        if !value.is_finite() {
            return Err(TrainError::NonFinite(value, step));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let (lr_w, lr_b) = schedule.rates(step);
        model = optim.step(lr_w, model, grads);
        window_wait += waited;
        total_wait += waited;
        window_images += shape[0];
        images += shape[0];
        losses.push((step, value));
        progress.advance(1);
        if (step + 1) % cfg.log_every.max(1) == 0 || step + 1 == total {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            let entry = StepLog {
                epoch: pos.epoch,
                step,
                lr_weights: lr_w,
                lr_biases: lr_b,
                loss: value,
                images_per_sec: window_images as f64 / secs,
                data_wait: window_wait.as_secs_f64() / secs,
            };
            let line = serde_json::to_string(&entry).unwrap_or_default();
            writeln!(log, "{line}").map_err(io(&log_path))?;
            (window_start, window_wait, window_images) = (Instant::now(), Duration::ZERO, 0);
        }
    }
    progress.finish();
    let elapsed = started.elapsed();
    Ok((
        model,
        TrainSummary {
            steps: total,
            losses,
            images_per_sec: images as f64 / elapsed.as_secs_f64().max(1e-9),
            data_wait_share: total_wait.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
            elapsed,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::sample::{SampleOptions, make_sample};
    use crate::progress::Silent;
    use crate::shardify::{Input, Layout, Options, shardify};

    #[test]
    fn a_short_cpu_run_logs_finite_losses_and_data_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = SampleOptions {
            classes: 2,
            train_per_class: 12,
            val_per_class: 1,
            min_side: 32,
            max_side: 40,
            ..SampleOptions::default()
        };
        make_sample(&tmp.path().join("img"), &opts, 2, &Silent).unwrap();
        let input = Input::Folder {
            path: tmp.path().join("img/train"),
            layout: Layout::ImageFolder,
        };
        shardify(
            &input,
            &tmp.path().join("shards"),
            &Options::default(),
            &Silent,
        )
        .unwrap();
        let ds = Arc::new(Dataset::open(tmp.path().join("shards")).unwrap());
        let cfg = TrainConfig {
            arch: Arch::Resnet18,
            width: 8,
            small_stem: true,
            image_size: 16,
            batch_size: 8,
            epochs: 2,
            projector: vec![32, 32],
            threads: 2,
            log_every: 2,
            ..TrainConfig::default()
        };
        let (_, summary) = train(ds, &cfg, &tmp.path().join("run"), &Silent).unwrap();
        assert_eq!(summary.steps, 6); // 24 records / 8 = 3 steps an epoch
        assert!(summary.losses.iter().all(|(_, l)| l.is_finite()));
        assert!((0.0..=1.0).contains(&summary.data_wait_share));
        let log = std::fs::read_to_string(tmp.path().join("run/log.jsonl")).unwrap();
        let lines: Vec<StepLog> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].step, 5);
        assert_eq!(lines[2].epoch, 1);
        // The logged rates are the schedule's for batch 8, 2 epochs of 3 steps
        // (too short for warm-up), and lr_b / lr_w = 0.0048 / 0.2.
        let schedule = WarmupCosine::spec(8, 2, 3, 0.2, 0.0048);
        for l in &lines {
            let (w, b) = schedule.rates(l.step);
            assert!((l.lr_weights - w).abs() < 1e-12 && (l.lr_biases - b).abs() < 1e-12);
            assert!((l.lr_biases / l.lr_weights - 0.024).abs() < 1e-9);
        }
        assert!(lines[0].lr_weights > lines[2].lr_weights, "cosine decay");
    }
}
