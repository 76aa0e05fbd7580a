//! The kNN monitor: how well the backbone's features separate the classes
//! as training goes, measured on a labelled split without training
//! anything (`docs/training.md`).

use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use super::TrainError;
use crate::data::loader::{Loader, LoaderError};
use crate::data::sampler::Position;
use crate::data::shard::Dataset;
use crate::eval::knn::{KnnConfig, KnnResult};
use crate::eval::{EvalError, FeatureConfig, features_loader_config, knn_accuracy};
use crate::model::BarlowTwins;
use crate::progress::{Progress, Silent};
use crate::run::{KnnLog, RunFolder};

/// The kNN monitor: every `every_epochs` epochs, kNN accuracy on `val`
/// with `train` as the memory bank; with `at_start`, also of the untrained
/// network before a fresh run's first step (logged as epoch 0, step 0).
#[derive(Clone)]
pub struct Monitor {
    pub train: Arc<Dataset>,
    pub val: Arc<Dataset>,
    pub every_epochs: u64,
    pub at_start: bool,
    pub knn: KnnConfig,
}

impl Monitor {
    /// kNN top-1/top-5 of `model`'s backbone with its running BatchNorm
    /// statistics, at `image_size`.
    pub fn measure<B: AutodiffBackend>(
        &self,
        model: &BarlowTwins<B>,
        image_size: u32,
        threads: usize,
        device: &B::Device,
        progress: &dyn Progress,
    ) -> Result<KnnResult, EvalError> {
        let features = Self::features(image_size, threads);
        knn_accuracy(
            &model.valid().backbone,
            Arc::clone(&self.train),
            Arc::clone(&self.val),
            &self.knn,
            &features,
            device,
            progress,
        )
    }

    /// How a pass reads its datasets.
    fn features(image_size: u32, threads: usize) -> FeatureConfig {
        FeatureConfig {
            image_size,
            batch_size: 256,
            threads,
            l2_normalise: true,
        }
    }

    /// Whether its passes fit the caches of remote datasets (refused at
    /// the run's start, not at the first epoch's end).
    fn check_caches(&self, image_size: u32, threads: usize) -> Result<(), LoaderError> {
        let features = Self::features(image_size, threads);
        for ds in [&self.train, &self.val] {
            let cfg = features_loader_config(&features, ds.len());
            Loader::check_cache(ds, &cfg, Position::default())?;
        }
        Ok(())
    }

    /// Whether a pass is due after `epochs_done` epochs.
    fn due(&self, epochs_done: u64) -> bool {
        epochs_done.is_multiple_of(self.every_epochs.max(1))
    }
}

/// The monitor as a run uses it: its passes at the start and at epochs'
/// ends, each logged in the run folder (`knn.jsonl`). The process that
/// writes the run folder measures; the others skip.
pub(super) struct Monitoring<'a, B: AutodiffBackend> {
    monitor: Option<&'a Monitor>,
    image_size: u32,
    threads: usize,
    device: &'a B::Device,
    /// Every pass of this invocation.
    pub(super) logs: Vec<KnnLog>,
}

impl<'a, B: AutodiffBackend> Monitoring<'a, B> {
    pub(super) fn new(
        monitor: Option<&'a Monitor>,
        image_size: u32,
        threads: usize,
        device: &'a B::Device,
    ) -> Result<Self, TrainError> {
        if let Some(m) = monitor {
            m.check_caches(image_size, threads)?;
        }
        Ok(Monitoring {
            monitor,
            image_size,
            threads,
            device,
            logs: Vec::new(),
        })
    }

    /// The pass before a fresh run's first step, when asked for.
    pub(super) fn at_start(
        &mut self,
        model: &BarlowTwins<B>,
        folder: &RunFolder,
    ) -> Result<(), TrainError> {
        if self.monitor.is_some_and(|m| m.at_start) {
            self.measure(model, 0, 0, folder)?;
        }
        Ok(())
    }

    /// The pass after `epochs_done` epochs (`step` steps), when due.
    pub(super) fn after_epoch(
        &mut self,
        model: &BarlowTwins<B>,
        epochs_done: u64,
        step: u64,
        folder: &RunFolder,
    ) -> Result<(), TrainError> {
        if self.monitor.is_some_and(|m| m.due(epochs_done)) {
            self.measure(model, epochs_done, step, folder)?;
        }
        Ok(())
    }

    fn measure(
        &mut self,
        model: &BarlowTwins<B>,
        epoch: u64,
        step: u64,
        folder: &RunFolder,
    ) -> Result<(), TrainError> {
        let Some(m) = self.monitor.filter(|_| folder.writes()) else {
            return Ok(());
        };
        let r = m.measure(model, self.image_size, self.threads, self.device, &Silent)?;
        let entry = KnnLog {
            epoch,
            step,
            top1: r.top1,
            top5: r.top5,
        };
        folder.knn(&entry)?;
        self.logs.push(entry);
        Ok(())
    }
}
