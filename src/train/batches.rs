//! The batches a run steps on: the loader's next batch, peer 0's slice
//! uploaded to its device as u8 (converted and normalised there,
//! [`normalise_u8`]), the other peers' slices sent to them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::peers::Feed;
use super::{RunOptions, TrainError};
use crate::data::loader::{DamagedRecord, Loader, LoaderConfig};
use crate::data::sampler::Position;
use crate::data::shard::Dataset;
use crate::model::normalise_u8;
use crate::optim::WarmupCosine;
use crate::peers::Peer;
use crate::run::NetLog;
use crate::run::TrainConfig;

/// How peer 0 shares each global batch with the other peers.
pub(super) struct Share<'a> {
    pub(super) peer: &'a Peer,
    pub(super) feeds: Vec<Feed>,
}

/// A batch's two views on the device, and what fetching it cost.
pub(super) struct Views<B: Backend> {
    pub(super) y1: Tensor<B, 4>,
    pub(super) y2: Tensor<B, 4>,
    pub(super) pos: Position,
    /// Images in this process's share of the global batch.
    pub(super) images: usize,
    /// The time the trainer spent getting them: waiting for the loader,
    /// then uploading.
    pub(super) waited: Duration,
    /// The damaged records the loader skipped in this batch.
    pub(super) damaged: Vec<DamagedRecord>,
}

/// This process's loader and where its batches go.
pub(super) struct Batches<'a, B: Backend> {
    loader: Loader,
    dataset: Arc<Dataset>,
    loader_cfg: LoaderConfig,
    device: &'a B::Device,
    share: Option<Share<'a>>,
    /// Batches uploaded, counted from the run's start (step k trains on the
    /// k-th): step + 2 at a loss read means the next batch went up first.
    pub(super) uploaded: u64,
    /// The network counters at the previous log line.
    net_mark: NetLog,
}

impl<'a, B: Backend> Batches<'a, B> {
    /// The loader of process `process` of `processes` from `position` (the
    /// `step`-th batch of the run). Each process loads its share of every
    /// global batch: the sampler's ranks interleave the global order, so
    /// the shares together are the global batch.
    pub(super) fn new(
        dataset: Arc<Dataset>,
        cfg: &TrainConfig,
        run: &RunOptions,
        (process, processes): (usize, usize),
        (step, position): (u64, Position),
        device: &'a B::Device,
        share: Option<Share<'a>>,
    ) -> Result<Self, TrainError> {
        let mut loader_cfg = LoaderConfig {
            on_damaged: run.on_damaged,
            max_damaged: run.max_damaged,
            read: run.read,
            #[cfg(test)]
            panic_on_record: run.panic_on_record,
            ..cfg.loader_config()
        };
        loader_cfg.sampler.rank = process;
        loader_cfg.sampler.world_size = processes;
        loader_cfg.sampler.batch_size = cfg.batch_size / processes;
        Ok(Batches {
            loader: Loader::new(Arc::clone(&dataset), loader_cfg.clone(), position)?,
            dataset,
            loader_cfg,
            device,
            share,
            uploaded: step,
            net_mark: NetLog::default(),
        })
    }

    /// The reference's schedule over this run's epochs.
    pub(super) fn schedule(&self, cfg: &TrainConfig) -> WarmupCosine {
        WarmupCosine::reference(
            cfg.batch_size,
            cfg.epochs,
            self.loader.sampler().batches_per_epoch(),
            cfg.lr_weights,
            cfg.lr_biases,
        )
    }

    /// Starts the loader again at `position`, the `step`-th batch of the
    /// run.
    pub(super) fn restart(&mut self, step: u64, position: Position) -> Result<(), TrainError> {
        let cfg = self.loader_cfg.clone();
        self.loader = Loader::new(Arc::clone(&self.dataset), cfg, position)?;
        self.uploaded = step;
        self.net_mark.wait_s = 0.0;
        Ok(())
    }

    /// A remote dataset's network activity since the previous call (`None`
    /// for a local dataset).
    pub(super) fn network(&mut self) -> Option<NetLog> {
        #[cfg(feature = "remote")]
        if let Some(n) = self.loader.net_stats() {
            let now = NetLog {
                wait_s: self.loader.stats().network_wait.as_secs_f64(),
                bytes: n.bytes,
                requests: n.requests,
                retries: n.retries,
            };
            let was = std::mem::replace(&mut self.net_mark, now);
            return Some(NetLog {
                wait_s: (now.wait_s - was.wait_s).max(0.0),
                bytes: now.bytes.saturating_sub(was.bytes),
                requests: now.requests.saturating_sub(was.requests),
                retries: now.retries.saturating_sub(was.retries),
            });
        }
        None
    }

    /// How many batches precede `pos` in this loader's stream.
    pub(super) fn index(&self, pos: Position) -> u64 {
        pos.epoch * self.loader.sampler().batches_per_epoch() + pos.batch
    }

    /// The position `n` batches after `pos`.
    pub(super) fn after_n(&self, pos: Position, n: u64) -> Position {
        self.loader.sampler().advance(pos, n)
    }

    /// The position after the batch at `pos`.
    pub(super) fn after(&self, pos: Position) -> Position {
        self.loader.sampler().advance(pos, 1)
    }

    /// Takes the loader's next batch and uploads its views; the batch
    /// buffer goes back to the loader as soon as the bytes are handed
    /// over. With peers, each other peer is sent its slice of the batch
    /// (and `lr`, the step's rate) and only peer 0's slice is uploaded
    /// here.
    pub(super) fn upload(&mut self, lr: f64) -> Result<Views<B>, TrainError> {
        let waited_before = self.loader.stats().data_wait;
        let batch = self.loader.next_batch()?;
        let loader_wait = batch.data_wait() - waited_before;
        let started = Instant::now();
        let shape = batch.shape();
        let mut mine = 0..shape[0];
        if let Some(share) = &self.share {
            let world = share.feeds.len() + 1;
            let rows = |p: usize| p * shape[0] / world..(p + 1) * shape[0] / world;
            for (p, feed) in (1..world).zip(&share.feeds) {
                feed.send(&batch, rows(p), lr, share.peer)?;
            }
            mine = rows(0);
        }
        let per_image = shape[1] * shape[2] * shape[3];
        let bytes = mine.start * per_image..mine.end * per_image;
        let local = [mine.len(), shape[1], shape[2], shape[3]];
        let views = Views {
            y1: normalise_u8::<B>(&batch.view_u8(0)[bytes.clone()], local, self.device),
            y2: normalise_u8::<B>(&batch.view_u8(1)[bytes], local, self.device),
            pos: batch.position(),
            images: shape[0],
            waited: Duration::ZERO,
            damaged: Vec::new(),
        };
        drop(batch);
        self.uploaded += 1;
        Ok(Views {
            waited: loader_wait + started.elapsed(),
            damaged: self.loader.take_damaged(),
            ..views
        })
    }
}
