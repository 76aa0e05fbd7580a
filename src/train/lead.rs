//! The training loop of peer 0 (the only peer on one device): take the
//! views, step, hand the step's result to the run's parts (the log, the
//! kNN monitor, the checkpoints, stopping), and go on with the next views,
//! uploaded while the step computes. A non-finite loss under
//! `--on-nonfinite rewind` sends the loop back to its last checkpoint
//! ([`super::rewind`]).

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::backend::AutodiffBackend;

use super::batches::{Batches, Share};
use super::meter::Meter;
use super::monitor::Monitoring;
use super::replica::{Replica, replica, start_facts};
use super::rewind::OnNonFinite;
use super::stopping::Stopping;
use super::{Parallel, PendingLosses, RunOptions, TrainError, TrainSummary, data_parallel_step};
use crate::data::loader::DamagedRecord;
use crate::data::sampler::Position;
use crate::data::shard::Dataset;
use crate::model::BarlowTwins;
use crate::optim::{Lars, WarmupCosine};
use crate::peers::{Peer, PeerReduce};
use crate::progress::Progress;
use crate::run::{CheckpointState, Finished, RunFolder, TrainConfig};

pub(super) type Optim<B> = OptimizerAdaptor<Lars, BarlowTwins<B>, B>;

/// A peer's network and its optimiser, as the loop carries them.
pub(super) type Trainee<B> = (BarlowTwins<B>, Optim<B>);

/// Trains peer 0's replica on `dataset` from the run's start (fresh or
/// resumed) to its end or its stop, sharing each batch through `share`.
pub(super) fn lead<B: AutodiffBackend + PeerReduce>(
    dataset: Arc<Dataset>,
    cfg: &TrainConfig,
    run: &RunOptions,
    device: &B::Device,
    share: Option<Share<'_>>,
    progress: &dyn Progress,
) -> Result<(BarlowTwins<B>, TrainSummary), TrainError> {
    let peer = share.as_ref().map(|s| s.peer);
    let (process, processes) = peer.map_or((0, 1), Peer::process);
    let Replica {
        model,
        optim,
        resumed,
    } = replica::<B>(cfg, run, device)?;
    let (start_step, start) = resumed
        .as_ref()
        .map_or((0, Position::default()), |s| (s.step, s.position));
    // Before anything is written: the processes of a run must start alike.
    if let (Some(p), Some(peer)) = (run.processes.as_deref(), peer) {
        let peers = peer.world() / processes;
        crate::peers::agree(p, &start_facts(cfg, &dataset, peers, start_step, &model)?)?;
    }
    // Process 0 of a multi-process run writes the run folder; the others
    // read only the checkpoint they resume from.
    let folder = RunFolder::open(
        &run.out,
        process == 0,
        resumed.as_ref(),
        run.checkpoint_every,
        run.keep_checkpoints,
    )?;
    let at = (process, processes);
    let batches = Batches::<B>::new(dataset, cfg, run, at, (start_step, start), device, share)?;
    let schedule = batches.schedule(cfg);
    let total = cfg
        .max_steps
        .unwrap_or(schedule.total_steps)
        .min(schedule.total_steps)
        .max(start_step);
    let started = Instant::now();
    let mut lp = Loop {
        cfg,
        run,
        peer,
        origin: (start_step, start),
        schedule,
        batches,
        parts: Parts {
            meter: Meter::new(cfg.log_every, total, processes, peer, progress),
            monitor: Monitoring::new(run.monitor.as_ref(), cfg.image_size, cfg.threads, device)?,
            stopping: Stopping::new(run.stop.clone(), processes),
            pending: PendingLosses::default(),
            damaged: Vec::new(),
            damaged_records: 0,
            rewinds: Vec::new(),
            folder,
        },
    };
    if start_step == 0 {
        lp.parts.monitor.at_start(&model, &lp.parts.folder)?;
    }
    progress.begin("train", total, start_step);
    let (model, optim, done) = lp.run((model, optim), start_step..total, device)?;
    progress.finish();
    let elapsed = started.elapsed();
    let initial = CheckpointState {
        step: 0,
        position: start,
        config: cfg.clone(),
    };
    let parts = &mut lp.parts;
    let finished = parts
        .folder
        .finish(&model, &optim, &initial, resumed.is_some())?;
    let summary = lp.parts.summary(start_step..total, done, elapsed, finished);
    Ok((model, summary))
}

/// The loop's state: its config, where its batches come from, its
/// schedule and the parts each step's result goes to.
pub(super) struct Loop<'a, B: AutodiffBackend> {
    pub(super) cfg: &'a TrainConfig,
    pub(super) run: &'a RunOptions,
    pub(super) peer: Option<&'a Peer>,
    /// The step and batch position the current stretch of steps began at:
    /// the run's start, or where the last rewind went on from.
    pub(super) origin: (u64, Position),
    pub(super) schedule: WarmupCosine,
    pub(super) batches: Batches<'a, B>,
    pub(super) parts: Parts<'a, B>,
}

/// What the loop hands each step's result to.
pub(super) struct Parts<'a, B: AutodiffBackend> {
    /// Images/s, data wait, the peers' traffic: the log lines' figures.
    pub(super) meter: Meter<'a>,
    pub(super) monitor: Monitoring<'a, B>,
    pub(super) stopping: Stopping,
    /// Losses on the device until a log line or a checkpoint reads them.
    pub(super) pending: PendingLosses<B::InnerBackend>,
    /// Damaged records the loader skipped in the batches of the steps
    /// since the last log line, and in all so far.
    pub(super) damaged: Vec<DamagedRecord>,
    pub(super) damaged_records: u64,
    /// The steps whose loss was not finite and sent the run back.
    pub(super) rewinds: Vec<u64>,
    /// The logs and the checkpoints.
    pub(super) folder: RunFolder,
}

impl<B: AutodiffBackend + PeerReduce> Loop<'_, B> {
    /// [`Loop::steps`], going back to the newest checkpoint whenever a
    /// loss is not finite under `--on-nonfinite rewind`.
    fn run(
        &mut self,
        mut trainee: Trainee<B>,
        steps: Range<u64>,
        device: &B::Device,
    ) -> Result<(BarlowTwins<B>, Optim<B>, u64), TrainError> {
        let mut from = steps.start;
        loop {
            match self.steps(trainee, from..steps.end) {
                Err(TrainError::NonFinite(loss, step))
                    if self.run.on_nonfinite == OnNonFinite::Rewind =>
                {
                    (trainee, from) = self.rewind(device, loss, step)?;
                }
                ended => return ended,
            }
        }
    }

    /// The steps `steps` of the run (`steps.end` is its last) of the
    /// replica `(model, optim)`: returns it and the number of steps done
    /// when the loop ended (early when stopped).
    fn steps(
        &mut self,
        (mut model, mut optim): Trainee<B>,
        steps: Range<u64>,
    ) -> Result<(BarlowTwins<B>, Optim<B>, u64), TrainError> {
        let (cfg, total) = (self.cfg, steps.end);
        let mut next_views = match steps.start < total {
            true => Some(self.batches.upload(self.schedule.rates(steps.start).0)?),
            false => None,
        };
        for step in steps {
            // Two augmented views of the same images, already on the device.
            let Some(views) = next_views.take() else {
                break;
            };
            // Network -> loss -> backward -> LARS, queued on the device;
            // every peer votes on stopping after it.
            let rates = self.schedule.rates(step);
            let parallel = Parallel {
                peer: self.peer,
                batch: cfg.batch_size,
                grad_divisor: cfg.grad_divisor,
                stop: self.parts.stopping.asked(),
                precision: cfg.precision,
            };
            let stepped = data_parallel_step(
                model, &mut optim, views.y1, views.y2, cfg.lambda, rates.0, parallel,
            )?;
            model = stepped.model;
            let loss = super::rewind::poisoned(self.run, views.pos, stepped.loss);
            self.parts.pending.push(step, loss);
            let stop = self.parts.stopping.after(stepped.stop);
            // The next batch is fetched and uploaded while this step computes.
            if step + 1 < total && !stop {
                next_views = Some(self.batches.upload(self.schedule.rates(step + 1).0)?);
            }
            // The step's result, to the run's parts.
            self.parts.meter.stepped(views.images, views.waited);
            self.parts.damaged.extend(views.damaged);
            if self.parts.meter.due(step) {
                self.log_line(step, views.pos, rates)?;
            }
            let next = self.batches.after(views.pos);
            let epoch_done = next.batch == 0;
            if epoch_done {
                let (epochs, parts) = (views.pos.epoch + 1, &mut self.parts);
                parts
                    .monitor
                    .after_epoch(&model, epochs, step + 1, &parts.folder)?;
            }
            let last = step + 1 == total;
            if self
                .parts
                .folder
                .checkpoint_due(step, epoch_done, stop, last)
            {
                self.checkpoint(step + 1, next, &model, &optim)?;
            }
            if stop {
                return Ok((model, optim, step + 1));
            }
        }
        Ok((model, optim, total))
    }

    /// The log line of step `step` (at `pos`, with the step's `rates`),
    /// and the damaged records skipped since the previous one.
    fn log_line(&mut self, step: u64, pos: Position, rates: (f64, f64)) -> Result<(), TrainError> {
        let parts = &mut self.parts;
        let read = parts.pending.read(self.batches.uploaded)?;
        let loss = read.last().map_or(f32::NAN, |r| r.1);
        let damaged = std::mem::take(&mut parts.damaged);
        parts.damaged_records += damaged.len() as u64;
        let mut line = parts
            .meter
            .line(step, pos, rates, loss, damaged.len() as u64);
        line.network = self.batches.network();
        parts.folder.step(&line)?;
        parts.folder.damaged(step, damaged)?;
        Ok(())
    }

    /// A checkpoint of `step` steps done, the next batch at `next`.
    fn checkpoint(
        &mut self,
        step: u64,
        next: Position,
        model: &BarlowTwins<B>,
        optim: &Optim<B>,
    ) -> Result<(), TrainError> {
        // Every loss up to here is finite before its weights are saved.
        self.parts.pending.read(self.batches.uploaded)?;
        let state = CheckpointState {
            step,
            position: next,
            config: self.cfg.clone(),
        };
        Ok(self.parts.folder.checkpoint(&state, model, optim)?)
    }
}

impl<B: AutodiffBackend> Parts<'_, B> {
    /// What the run of `steps` did, `done` of them in `elapsed`.
    fn summary(
        self,
        steps: Range<u64>,
        done: u64,
        elapsed: Duration,
        finished: Finished,
    ) -> TrainSummary {
        let (images_per_sec, data_wait_share) = self.meter.whole.rates(elapsed);
        TrainSummary {
            steps: done,
            start_step: steps.start,
            losses: finished.losses,
            images_per_sec,
            data_wait_share,
            elapsed,
            knn: self.monitor.logs,
            checkpoint: finished.checkpoint,
            backbone: finished.backbone,
            stopped: done < steps.end,
            loss_reads: self.pending.reads().to_vec(),
            damaged_records: self.damaged_records,
            rewinds: self.rewinds,
        }
    }
}
