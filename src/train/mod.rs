//! The training loop: loader -> device normalisation -> backbone +
//! projector -> Barlow Twins loss -> LARS, with the warm-up + cosine
//! schedule stepped every iteration, on any burn autodiff backend (Flex on
//! the CPU, CUDA on NVIDIA GPUs: see [`crate::backend`]).
//!
//! Guarantees:
//! - The reference's defaults (`docs/method.md`) (batch scaling of the rates, lambda, LARS, schedule).
//! - **Resume.** A checkpoint ([`checkpoint`]) is written at the end of
//!   every epoch, every `checkpoint_every` steps and at the end of the run;
//!   it holds the model (BatchNorm statistics included), the optimiser state
//!   and the loader position. `resume` continues from the latest one: the
//!   following steps see exactly the batches of a run that never stopped,
//!   and their losses agree with it to a relative 1e-5 (what the tests
//!   assert; the CPU backend is not promised bit-identical across thread
//!   counts). The log is cut back to the checkpoint so it never holds a
//!   step twice.
//! - Files in the run folder: `log.jsonl` (one [`StepLog`] at step 0, every
//!   `log_every` steps and at the last step: the loss history), `knn.jsonl` (one [`KnnLog`] per monitor pass), `checkpoints/`,
//!   `backbone.bin` (the backbone alone, at the end) and `loss.png`.
//! - **Several devices.** [`train_on`] with W devices runs W data-parallel
//!   peers, one thread each, each on its slice of every global batch
//!   ([`crate::peers`]): their step is the single-device step on the global
//!   batch (BatchNorm statistics, cross-correlation and gradients are
//!   global), and peer 0 logs, monitors and checkpoints. With one device
//!   it is the single-device loop.

pub mod checkpoint;
mod log;
mod peers;
mod step;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use crate::data::augment::AugmentConfig;
use crate::data::loader::{Loader, LoaderConfig, LoaderError};
use crate::data::sampler::{Position, SamplerConfig};
use crate::data::shard::Dataset;
use crate::error::IoError;
use crate::eval::knn::{KnnConfig, KnnResult};
use crate::eval::{EvalError, FeatureConfig, knn_accuracy};
use crate::model::torchvision::{InteropError, Weights};
use crate::model::{Arch, BarlowTwins, Precision, ResNetConfig, normalise_u8};
use crate::optim::{Lars, LarsConfig, WarmupCosine};
use crate::peers::{Fact, Peer, PeerError, PeerReduce, Processes};
use crate::progress::{Progress, Silent};
use burn::optim::adaptor::OptimizerAdaptor;
pub use checkpoint::{CheckpointError, CheckpointState};
pub use log::{KnnLog, StepLog};
use log::{RunLog, Throughput};
pub use step::{
    LossRead, Parallel, PendingLosses, Stepped, barlow_twins_gradients,
    barlow_twins_gradients_with, barlow_twins_step, data_parallel_step,
};

/// Everything that shapes a run; defaults are the reference's (`docs/method.md`). Loadable from TOML
/// (missing keys take these defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub arch: Arch,
    /// Base width of the ResNet (64 = torchvision's).
    pub width: usize,
    /// 3x3 stride-1 stem without max-pool (small images).
    pub small_stem: bool,
    pub image_size: u32,
    /// RandomResizedCrop area range (reference: 0.08 to 1).
    pub crop_scale: (f64, f64),
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
    /// The loss gradient is divided by this before LARS. 1 is the exact
    /// gradient of the batch's loss; the paper's code, which averaged the
    /// gradients of its 32 GPUs, moved with 1/32 of it (`docs/method.md`).
    pub grad_divisor: f64,
    /// The dtype of the convolutions and matmuls: f32, or bf16 for mixed
    /// precision (f32 weights, optimiser state, BatchNorm and loss; see
    /// [`crate::model::precision`]).
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: Arch::Resnet50,
            width: 64,
            small_stem: false,
            image_size: 224,
            crop_scale: (0.08, 1.0),
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
            grad_divisor: 1.0,
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    /// The demo's network and schedule: a narrow ResNet-18 (width 8, the
    /// ImageNet stem) at 32 px with a 256-256 projector, batch 64, small
    /// enough to train 20 epochs of the 1,280 sample images in a few minutes
    /// on two CPU cores. The augmentations and optimiser settings are the
    /// reference's.
    pub fn demo(threads: usize, epochs: u64) -> TrainConfig {
        TrainConfig {
            arch: Arch::Resnet18,
            width: 8,
            small_stem: false,
            image_size: 32,
            batch_size: 64,
            epochs,
            projector: vec![256, 256],
            threads,
            log_every: 5,
            ..TrainConfig::default()
        }
    }

    /// LARS with this config's weight decay and bias/weight rate ratio.
    pub fn optimizer<B: AutodiffBackend>(&self) -> OptimizerAdaptor<Lars, BarlowTwins<B>, B> {
        LarsConfig::new()
            .with_weight_decay(self.weight_decay)
            .with_biases_over_weights(self.lr_biases / self.lr_weights)
            .init::<B, BarlowTwins<B>>()
    }

    /// The config with the settings that do not change which batches and
    /// weights a run produces (threads, logging, where it stops) cleared:
    /// two runs with equal trajectories can continue each other.
    pub fn trajectory(&self) -> TrainConfig {
        TrainConfig {
            threads: 0,
            log_every: 0,
            max_steps: None,
            ..self.clone()
        }
    }

    /// The loader that feeds this run: the reference's augmentations at the run's
    /// size, crop scale, seed and batch.
    pub fn loader_config(&self) -> LoaderConfig {
        LoaderConfig {
            sampler: SamplerConfig {
                seed: self.seed,
                batch_size: self.batch_size,
                ..SamplerConfig::default()
            },
            augment: {
                let mut a = AugmentConfig {
                    size: self.image_size,
                    scale: self.crop_scale,
                    ..AugmentConfig::default()
                };
                // The reference's blur sigma is in pixels of a 224 px view: keep the
                // same blur relative to the view at other sizes.
                let k = self.image_size as f64 / 224.0;
                for v in &mut a.views {
                    v.blur_sigma = (v.blur_sigma.0 * k, v.blur_sigma.1 * k);
                }
                a
            },
            threads: self.threads,
            ..LoaderConfig::default()
        }
    }

    pub fn backbone(&self) -> ResNetConfig {
        ResNetConfig {
            arch: self.arch,
            width: self.width,
            small_stem: self.small_stem,
        }
    }

    /// Reads a TOML config file.
    pub fn from_toml_file(path: &Path) -> Result<TrainConfig, TrainError> {
        let text = std::fs::read_to_string(path).map_err(IoError::at(path))?;
        toml::from_str(&text).map_err(|e| TrainError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Where a run writes and how it checkpoints and monitors itself.
#[derive(Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    /// Continue from the latest checkpoint in `out`.
    pub resume: bool,
    /// Also checkpoint every this many steps (epochs always checkpoint).
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept (the newest).
    pub keep_checkpoints: usize,
    pub monitor: Option<Monitor>,
    /// When this flag is raised (by a signal handler, say), the run stops
    /// after the step in flight, writes a checkpoint of it and returns
    /// with [`TrainSummary::stopped`] set; `resume` continues from there.
    pub stop: Option<Arc<AtomicBool>>,
    /// A fresh run starts from these torchvision-named weights (see
    /// [`crate::model::torchvision`]) instead of the seeded ones: the
    /// backbone, and the projector too when the file has one of the run's
    /// widths. Ignored on resume (the checkpoint holds the weights).
    pub init_from: Option<PathBuf>,
    /// How long a data-parallel peer waits for the others at an
    /// all-reduce before the run fails: longer than the slowest kNN pass
    /// or checkpoint of peer 0, which the others wait out.
    pub peer_timeout: Duration,
    /// The processes of a multi-process run (MPI), each running
    /// [`train_on`] with its own devices; process 0 writes the run folder.
    pub processes: Option<Arc<dyn Processes>>,
    /// Testing aid: a loader worker panics on this record.
    #[cfg(test)]
    pub(crate) panic_on_record: Option<u64>,
    /// Testing aid: data-parallel peer 1 fails this way before this step.
    #[cfg(test)]
    pub(crate) fail_peer_at: Option<(u64, PeerFault)>,
}

/// How [`RunOptions::fail_peer_at`] makes a peer fail.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum PeerFault {
    Error,
    Panic,
}

impl RunOptions {
    pub fn new(out: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            out: out.into(),
            resume: false,
            checkpoint_every: None,
            keep_checkpoints: 2,
            monitor: None,
            stop: None,
            init_from: None,
            peer_timeout: Duration::from_secs(1800),
            processes: None,
            #[cfg(test)]
            panic_on_record: None,
            #[cfg(test)]
            fail_peer_at: None,
        }
    }
}

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
        let features = FeatureConfig {
            image_size,
            batch_size: 256,
            threads,
            l2_normalise: true,
        };
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

    /// Whether a pass is due after `epochs_done` epochs.
    fn due(&self, epochs_done: u64) -> bool {
        epochs_done.is_multiple_of(self.every_epochs.max(1))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Shard(#[from] crate::data::shard::ShardError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Interop(#[from] InteropError),
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{checkpoint}: this checkpoint was trained with a different config ({differs}); resume with the same settings"
    )]
    ResumeMismatch {
        checkpoint: PathBuf,
        differs: String,
    },
    #[error("the loss became {0} at step {1}")]
    NonFinite(f32, u64),
    #[error("data-parallel training: {0}")]
    Peer(#[from] PeerError),
    #[error(
        "data-parallel training needs a batch of at least one image per peer: \
         batch {batch} over {peers} peers"
    )]
    BatchTooSmall { batch: usize, peers: usize },
    #[error("a batch of {batch} does not split evenly over {processes} processes")]
    BatchSplit { batch: usize, processes: usize },
    #[error("--precision {}: this device has no {} arithmetic; use --precision f32", crate::Choice::name(*.0), crate::Choice::name(*.0))]
    PrecisionUnsupported(Precision),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Steps done in total, and the step this invocation started from.
    pub steps: u64,
    pub start_step: u64,
    /// `(step, loss)` of every logged step of the run (step 0, then every
    /// `log_every` steps and the last; resumed parts included), as
    /// `log.jsonl` holds them.
    pub losses: Vec<(u64, f32)>,
    /// Of this invocation.
    pub images_per_sec: f64,
    /// Share of the time spent getting batches (the loader, the upload).
    pub data_wait_share: f64,
    pub elapsed: Duration,
    pub knn: Vec<KnnLog>,
    pub checkpoint: PathBuf,
    pub backbone: PathBuf,
    /// The run was stopped early by [`RunOptions::stop`]; `steps` is where.
    pub stopped: bool,
    /// Every fetch of losses from the device by this invocation: one per
    /// log point and checkpoint with losses pending, never one per step.
    pub loss_reads: Vec<LossRead>,
}

/// Trains on `dataset` per `cfg`, writing into `run.out`.
pub fn train<B: AutodiffBackend + PeerReduce>(
    dataset: Arc<Dataset>,
    cfg: &TrainConfig,
    run: &RunOptions,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<(BarlowTwins<B>, TrainSummary), TrainError> {
    train_on(dataset, cfg, run, std::slice::from_ref(device), progress)
}

/// [`train`] with one data-parallel peer per device in `devices` (the same
/// device may appear more than once); peer 0, on `devices[0]`, runs the
/// loader, logs, monitors and checkpoints, and its replica is returned.
pub fn train_on<B: AutodiffBackend + PeerReduce>(
    dataset: Arc<Dataset>,
    cfg: &TrainConfig,
    run: &RunOptions,
    devices: &[B::Device],
    progress: &dyn Progress,
) -> Result<(BarlowTwins<B>, TrainSummary), TrainError> {
    let world = devices.len();
    let processes = run.processes.as_ref().map_or(1, |p| p.size());
    let dtype = cfg.precision.dtype();
    if devices.iter().any(|d| !B::supports_dtype(d, dtype)) {
        return Err(TrainError::PrecisionUnsupported(cfg.precision));
    }
    if world <= 1 && processes == 1 {
        let device = devices.first().cloned().unwrap_or_default();
        return lead(dataset, cfg, run, &device, None, progress);
    }
    if !cfg.batch_size.is_multiple_of(processes) {
        return Err(TrainError::BatchSplit {
            batch: cfg.batch_size,
            processes,
        });
    }
    if cfg.batch_size / processes < world {
        return Err(TrainError::BatchTooSmall {
            batch: cfg.batch_size,
            peers: world * processes,
        });
    }
    let mut group =
        crate::peers::group_across(world, run.peer_timeout, run.processes.clone()).into_iter();
    let Some(first) = group.next() else {
        return lead(dataset, cfg, run, &devices[0], None, progress);
    };
    // Owned threads, not scoped ones: a peer stuck on its device must not
    // keep a failed run from returning (see `peers::join`).
    let mut feeds = Vec::new();
    let mut followers = Vec::new();
    for (peer, device) in group.zip(&devices[1..]) {
        let rank = peer.rank();
        let (feed, follower) = peers::channel(peer);
        let (cfg, run, device) = (cfg.clone(), run.clone(), device.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("peer-{rank}"))
            .spawn(move || follower.run::<B>(&cfg, &run, &device));
        match spawned {
            Ok(handle) => followers.push((rank, handle)),
            Err(e) => {
                first.abort(format!("cannot start a peer thread: {e}"));
                return Err(IoError::at(Path::new("peer thread"))(e).into());
            }
        }
        feeds.push(feed);
    }
    // A panic in peer 0 drops `first` while unwinding, which aborts the
    // group; an error aborts it here. Either way the other peers stop.
    let share = Share {
        peer: &first,
        feeds,
    };
    let result = lead(dataset, cfg, run, &devices[0], Some(share), progress);
    if let Err(e) = &result {
        first.abort(e.to_string());
    }
    let grace = result.is_err().then_some(peers::GRACE);
    let followed = peers::join(followers, first.world(), grace);
    let (model, summary) = result?;
    followed?;
    Ok((model, summary))
}

/// How peer 0 shares each global batch with the other peers.
struct Share<'a> {
    peer: &'a Peer,
    feeds: Vec<peers::Feed>,
}

/// The model and optimiser a run starts from on `device`: seeded (or
/// `run.init_from`'s weights), or the latest checkpoint's with its state
/// when resuming. Every data-parallel peer builds its own.
fn replica<B: AutodiffBackend>(
    cfg: &TrainConfig,
    run: &RunOptions,
    device: &B::Device,
) -> Result<Replica<B>, TrainError> {
    let optim = cfg.optimizer::<B>();
    if !run.resume {
        let model = initial_model(cfg, run.init_from.as_deref(), device)?;
        return Ok(Replica {
            model,
            optim,
            resumed: None,
        });
    }
    let dir = checkpoint::resolve(&run.out)?;
    let state = checkpoint::load_state(&dir)?;
    if state.config.trajectory() != cfg.trajectory() {
        return Err(TrainError::ResumeMismatch {
            checkpoint: dir,
            differs: differences(&state.config, cfg)?,
        });
    }
    let model = BarlowTwins::<B>::new(&cfg.backbone(), &cfg.projector, device);
    let model = checkpoint::load_model(&dir, model, device)?;
    let optim = checkpoint::load_optim(&dir, optim, device)?;
    Ok(Replica {
        model,
        optim,
        resumed: Some(state),
    })
}

/// One peer's network and optimiser, and the checkpoint state it resumed.
struct Replica<B: AutodiffBackend> {
    model: BarlowTwins<B>,
    optim: OptimizerAdaptor<Lars, BarlowTwins<B>, B>,
    resumed: Option<CheckpointState>,
}

/// The training loop of peer 0 (the only peer on one device).
fn lead<B: AutodiffBackend + PeerReduce>(
    dataset: Arc<Dataset>,
    cfg: &TrainConfig,
    run: &RunOptions,
    device: &B::Device,
    mut share: Option<Share<'_>>,
    progress: &dyn Progress,
) -> Result<(BarlowTwins<B>, TrainSummary), TrainError> {
    let out = run.out.as_path();
    // Process 0 of a multi-process run writes the run folder; the others
    // read only the checkpoint they resume from.
    let (process, processes) = share.as_ref().map_or((0, 1), |s| s.peer.process());
    let writes = process == 0;
    let Replica {
        mut model,
        mut optim,
        resumed,
    } = replica::<B>(cfg, run, device)?;
    // Before anything is written: the processes of a run must start alike.
    if let (Some(p), Some(share)) = (run.processes.as_deref(), &share) {
        let peers = share.peer.world() / processes;
        let start = resumed.as_ref().map_or(0, |s| s.step);
        let facts = start_facts(cfg, &dataset, peers, start, &model)?;
        crate::peers::agree(p, &facts)?;
    }
    if writes {
        std::fs::create_dir_all(out).map_err(IoError::at(out))?;
    }
    let log = RunLog::new(out);
    let (start_step, start, mut losses) = match resumed {
        Some(state) if writes => {
            log.resume_at(state.step)?;
            (state.step, state.position, log.losses()?)
        }
        Some(state) => (state.step, state.position, Vec::new()),
        None => {
            if writes {
                log.start()?;
            }
            (0, Position::default(), Vec::new())
        }
    };
    let mut loader_cfg = LoaderConfig {
        #[cfg(test)]
        panic_on_record: run.panic_on_record,
        ..cfg.loader_config()
    };
    // Each process loads its share of every global batch: the sampler's
    // ranks interleave the global order, so the shares together are the
    // global batch.
    loader_cfg.sampler.rank = process;
    loader_cfg.sampler.world_size = processes;
    loader_cfg.sampler.batch_size = cfg.batch_size / processes;
    let mut loader = Loader::new(dataset, loader_cfg, start)?;
    let schedule = WarmupCosine::reference(
        cfg.batch_size,
        cfg.epochs,
        loader.sampler().batches_per_epoch(),
        cfg.lr_weights,
        cfg.lr_biases,
    );
    let total = cfg
        .max_steps
        .unwrap_or(schedule.total_steps)
        .min(schedule.total_steps)
        .max(start_step);
    let started = Instant::now();
    let mut window = Throughput::default();
    let mut whole = Throughput::default();
    let mut knn_logs = Vec::new();
    let mut monitor = |model: &BarlowTwins<B>, epoch: u64, step: u64| -> Result<(), TrainError> {
        if let Some(m) = run.monitor.as_ref().filter(|_| writes) {
            let r = m.measure(model, cfg.image_size, cfg.threads, device, &Silent)?;
            let entry = KnnLog {
                epoch,
                step,
                top1: r.top1,
                top5: r.top5,
            };
            log.knn(&entry)?;
            knn_logs.push(entry);
        }
        Ok(())
    };
    if start_step == 0 && run.monitor.as_ref().is_some_and(|m| m.at_start) {
        monitor(&model, 0, 0)?;
    }
    let mut last_checkpoint = None;
    let mut done = total;
    let mut pending = PendingLosses::<B::InnerBackend>::default();
    progress.begin("train", total, start_step);
    // Batches uploaded, counted from the run's start (step k trains on the
    // k-th): step + 2 at a read means the next batch went up first.
    let mut uploaded = start_step;
    let parallel = Parallel {
        peer: share.as_ref().map(|s| s.peer),
        batch: cfg.batch_size,
        grad_divisor: cfg.grad_divisor,
        stop: false,
        precision: cfg.precision,
    };
    let mut views = if start_step < total {
        uploaded += 1;
        let lr = schedule.rates(start_step).0;
        Some(upload(&mut loader, device, share.as_mut(), lr)?)
    } else {
        None
    };
    for step in start_step..total {
        // Two augmented views of the same images, already on the device.
        let Some(Views {
            y1,
            y2,
            pos,
            images,
            waited,
        }) = views.take()
        else {
            break;
        };
        // Network -> loss -> backward -> LARS, queued on the device.
        let rates = schedule.rates(step);
        // A raised stop flag (on any process) stops every peer after this step.
        let parallel = Parallel {
            stop: run.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)),
            ..parallel
        };
        let stepped = data_parallel_step(model, &mut optim, y1, y2, cfg.lambda, rates.0, parallel)?;
        // In one process peer 0 may also stop alone (the others stop when
        // it closes their feeds): a flag raised during the step counts.
        let stop = stepped.stop
            || (processes == 1 && run.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)));
        model = stepped.model;
        pending.push(step, stepped.loss);
        // The next batch is fetched and uploaded while this step computes
        // (unless the run stops after this step).
        if step + 1 < total && !stop {
            uploaded += 1;
            let lr = schedule.rates(step + 1).0;
            views = Some(upload(&mut loader, device, share.as_mut(), lr)?);
        }
        // Every process loaded its share of the global batch.
        window.add(images * processes, waited);
        whole.add(images * processes, waited);
        progress.advance(1);

        if step == 0 || (step + 1) % cfg.log_every.max(1) == 0 || step + 1 == total {
            let read = pending.read(uploaded)?;
            let loss = read.last().map_or(f32::NAN, |r| r.1);
            let (images_per_sec, data_wait) = window.take();
            losses.push((step, loss));
            let entry = StepLog {
                epoch: pos.epoch,
                step,
                lr_weights: rates.0,
                lr_biases: rates.1,
                loss,
                images_per_sec,
                data_wait,
            };
            progress.message(&format!(
                "loss {loss:.2}  {images_per_sec:.1} img/s  data wait {:.1}%",
                100.0 * data_wait
            ));
            if writes {
                log.step(&entry)?;
            }
        }
        let next = loader.sampler().advance(pos, 1);
        let epoch_done = next.batch == 0;
        if epoch_done && run.monitor.as_ref().is_some_and(|m| m.due(pos.epoch + 1)) {
            monitor(&model, pos.epoch + 1, step + 1)?;
        }
        let every = run
            .checkpoint_every
            .is_some_and(|n| (step + 1) % n.max(1) == 0);
        if writes && (epoch_done || every || stop || step + 1 == total) {
            // Every loss up to here is finite before its weights are saved.
            pending.read(uploaded)?;
            let state = CheckpointState {
                step: step + 1,
                position: next,
                config: cfg.clone(),
            };
            last_checkpoint = Some(checkpoint::save(out, &state, &model, &optim)?);
            checkpoint::prune(out, run.keep_checkpoints)?;
        }
        if stop {
            done = step + 1;
            break;
        }
    }
    progress.finish();
    let elapsed = started.elapsed();
    // Process 0 wrote the checkpoints; the others name where.
    let (checkpoint, backbone) = if writes {
        let checkpoint = match last_checkpoint {
            Some(c) => c,
            // No step ran: a resumed run that was already done, or a fresh
            // run of `max_steps = 0`, which saves its initial network.
            None if run.resume => checkpoint::resolve(out)?,
            None => {
                let state = CheckpointState {
                    step: 0,
                    position: start,
                    config: cfg.clone(),
                };
                checkpoint::save(out, &state, &model, &optim)?
            }
        };
        let backbone = checkpoint::save_backbone(&out.join("backbone"), &model)?;
        crate::report::loss_png(&out.join("loss.png"), &losses).map_err(|e| {
            TrainError::Config {
                path: out.join("loss.png"),
                message: e.to_string(),
            }
        })?;
        (checkpoint, backbone)
    } else {
        let dir = out.join("checkpoints");
        (last_checkpoint.unwrap_or(dir), out.join("backbone.bin"))
    };
    let (images_per_sec, data_wait_share) = whole.rates(elapsed);
    Ok((
        model,
        TrainSummary {
            steps: done,
            start_step,
            losses,
            images_per_sec,
            data_wait_share,
            elapsed,
            knn: knn_logs,
            checkpoint,
            backbone,
            stopped: done < total,
            loss_reads: pending.reads().to_vec(),
        },
    ))
}

/// A batch's two views on the device, and what fetching it cost.
struct Views<B: Backend> {
    y1: Tensor<B, 4>,
    y2: Tensor<B, 4>,
    pos: Position,
    images: usize,
    /// The time the trainer spent getting them: waiting for the loader,
    /// then uploading.
    waited: Duration,
}

/// Takes the loader's next batch and uploads its views as u8 (converted
/// and normalised on the device, [`normalise_u8`]); the batch buffer goes
/// back to the loader as soon as the bytes are handed over. With peers,
/// each other peer is sent its slice of the batch (and `lr`, the step's
/// rate) and only peer 0's slice is uploaded here.
fn upload<B: Backend>(
    loader: &mut Loader,
    device: &B::Device,
    share: Option<&mut Share<'_>>,
    lr: f64,
) -> Result<Views<B>, TrainError> {
    let waited_before = loader.stats().data_wait;
    let batch = loader.next_batch()?;
    let loader_wait = batch.data_wait() - waited_before;
    let started = Instant::now();
    let shape = batch.shape();
    let mut mine = 0..shape[0];
    if let Some(share) = share {
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
        y1: normalise_u8::<B>(&batch.view_u8(0)[bytes.clone()], local, device),
        y2: normalise_u8::<B>(&batch.view_u8(1)[bytes], local, device),
        pos: batch.position(),
        images: shape[0],
        waited: Duration::ZERO,
    };
    drop(batch);
    Ok(Views {
        waited: loader_wait + started.elapsed(),
        ..views
    })
}

/// The network a fresh run starts from: seeded from `cfg.seed`, or the
/// weights of `init_from` (a torchvision-named safetensors file: the
/// backbone, and the projector too when the file has one of `cfg`'s widths).
pub fn initial_model<B: AutodiffBackend>(
    cfg: &TrainConfig,
    init_from: Option<&Path>,
    device: &B::Device,
) -> Result<BarlowTwins<B>, TrainError> {
    let model = BarlowTwins::<B>::seeded(&cfg.backbone(), &cfg.projector, cfg.seed, device);
    let Some(path) = init_from else {
        return Ok(model);
    };
    let w = Weights::read(path)?;
    if w.projector_dims().as_ref() == Some(&cfg.projector) {
        let (backbone, projector) = w.load_model(model.backbone, model.projector, device)?;
        Ok(BarlowTwins {
            backbone,
            projector,
        })
    } else {
        Ok(BarlowTwins {
            backbone: w.load_backbone(model.backbone, device)?,
            projector: model.projector,
        })
    }
}

/// The top-level keys on which two configs differ.
fn differences(a: &TrainConfig, b: &TrainConfig) -> Result<String, TrainError> {
    let (a, b) = (trajectory_json(a)?, trajectory_json(b)?);
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Ok(String::new());
    };
    Ok(a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| {
            format!(
                "{k}: {v} there, {} here",
                b.get(k).cloned().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// `cfg`'s trajectory ([`TrainConfig::trajectory`]) as JSON.
fn trajectory_json(cfg: &TrainConfig) -> Result<serde_json::Value, TrainError> {
    serde_json::to_value(cfg.trajectory()).map_err(|e| TrainError::Config {
        path: PathBuf::from("config"),
        message: e.to_string(),
    })
}

/// What every process of a multi-process run must hold alike at its start
/// ([`crate::peers::agree`]): each setting of the trajectory, the dataset's
/// shards, the peers per process, where the run stops, the step it starts
/// from and the weights it starts with.
fn start_facts<B: AutodiffBackend>(
    cfg: &TrainConfig,
    dataset: &Dataset,
    peers: usize,
    start: u64,
    model: &BarlowTwins<B>,
) -> Result<Vec<Fact>, TrainError> {
    let config = trajectory_json(cfg)?;
    let mut facts: Vec<Fact> = match config.as_object() {
        Some(fields) => fields
            .iter()
            .map(|(k, v)| Fact::new(format!("config {k}"), v.to_string()))
            .collect(),
        None => vec![Fact::new("config", config.to_string())],
    };
    let shards = dataset
        .manifest()
        .shards
        .iter()
        .fold(crc32fast::Hasher::new(), |mut h, s| {
            h.update(s.file.as_bytes());
            h.update(&s.num_records.to_le_bytes());
            h.update(&s.bytes.to_le_bytes());
            h.update(&s.index_crc32.to_le_bytes());
            h
        });
    facts.extend([
        Fact::new(
            "dataset",
            format!(
                "{} records in {} shards, shard checksum {:08x}",
                dataset.len(),
                dataset.shards().len(),
                shards.finalize()
            ),
        ),
        Fact::new("peers per process", peers.to_string()),
        // A process that stopped early would leave the others waiting.
        Fact::new("max steps", format!("{:?}", cfg.max_steps)),
        Fact::new("starting step", start.to_string()),
        Fact::new(
            "starting weights",
            format!("checksum {:08x}", model.weights_checksum()),
        ),
    ]);
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::prep::datasets::sample::{SampleOptions, make_sample};
    use crate::prep::shardify::{Input, Layout, Options, shardify};

    /// A tiny labelled dataset: `classes` x `per_class` train images.
    fn tiny(dir: &Path, per_class: usize) -> Arc<Dataset> {
        let opts = SampleOptions {
            classes: 2,
            train_per_class: per_class,
            val_per_class: 1,
            min_side: 32,
            max_side: 40,
            ..SampleOptions::default()
        };
        make_sample(&dir.join("img"), &opts, 2, &Silent).unwrap();
        let input = Input::Folder {
            path: dir.join("img/train"),
            layout: Layout::ImageFolder,
        };
        shardify(&input, &dir.join("shards"), &Options::default(), &Silent).unwrap();
        Arc::new(Dataset::open(dir.join("shards")).unwrap())
    }

    fn small() -> TrainConfig {
        TrainConfig {
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
        }
    }

    /// `got`'s logged losses are `want`'s: same steps, within 1e-5 relative.
    fn assert_same_losses(got: &TrainSummary, want: &TrainSummary, what: &str) {
        assert_eq!(got.losses.len(), want.losses.len(), "{what}");
        for ((s, a), (t, b)) in got.losses.iter().zip(&want.losses) {
            assert_eq!(s, t, "{what}");
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "{what}, step {s}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn a_short_cpu_run_logs_checkpoints_and_saves_its_outputs() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = tiny(tmp.path(), 12);
        let cfg = small();
        let run = RunOptions::new(tmp.path().join("run"));
        let (_, summary) = train::<Cpu>(ds, &cfg, &run, &Default::default(), &Silent).unwrap();
        assert_eq!(summary.steps, 6); // 24 records / 8 = 3 steps an epoch
        assert!(summary.losses.iter().all(|(_, l)| l.is_finite()));
        assert!((0.0..=1.0).contains(&summary.data_wait_share));
        let log = std::fs::read_to_string(run.out.join("log.jsonl")).unwrap();
        let lines: Vec<StepLog> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Step 0, then every second step.
        let steps: Vec<u64> = lines.iter().map(|l| l.step).collect();
        assert_eq!(steps, vec![0, 1, 3, 5]);
        // Losses left the device at the log points (steps 0, 1, 3 and 5)
        // and before the checkpoint after step 2: five reads for six steps;
        // the checkpoint after step 5 found nothing left to read.
        let read_steps: Vec<u64> = summary.loss_reads.iter().map(|r| r.step).collect();
        assert_eq!(read_steps, vec![0, 1, 2, 3, 5]);
        // Each read came after the next batch's upload (none after the last step).
        let uploaded: Vec<u64> = summary
            .loss_reads
            .iter()
            .map(|r| r.batches_uploaded)
            .collect();
        assert_eq!(uploaded, vec![2, 3, 4, 5, 6]);
        assert_eq!(lines[3].epoch, 1);
        let logged: Vec<(u64, f32)> = lines.iter().map(|l| (l.step, l.loss)).collect();
        assert_eq!(summary.losses, logged);
        // The logged rates are the schedule's for batch 8, 2 epochs of 3 steps
        // (too short for warm-up), and lr_b / lr_w = 0.0048 / 0.2.
        let schedule = WarmupCosine::reference(8, 2, 3, 0.2, 0.0048);
        for l in &lines {
            let (w, b) = schedule.rates(l.step);
            assert!((l.lr_weights - w).abs() < 1e-12 && (l.lr_biases - b).abs() < 1e-12);
            assert!((l.lr_biases / l.lr_weights - 0.024).abs() < 1e-9);
        }
        assert!(lines[0].lr_weights > lines[3].lr_weights, "cosine decay");
        // A checkpoint per epoch (the newest two kept), the last one at the end.
        assert_eq!(checkpoint::list(&run.out).unwrap(), vec![3, 6]);
        let state = checkpoint::load_state(&summary.checkpoint).unwrap();
        assert_eq!(state.step, 6);
        assert_eq!(state.position, Position { epoch: 2, batch: 0 });
        // The checkpoint's state does not grow with the run.
        let json = std::fs::read_to_string(summary.checkpoint.join("state.json")).unwrap();
        assert!(!json.contains("losses"), "{json}");
        assert!(summary.backbone.is_file());
        assert!(image::open(run.out.join("loss.png")).is_ok());
    }

    #[test]
    fn a_loader_worker_panic_stops_training_with_an_error_naming_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = tiny(tmp.path(), 12);
        let run = RunOptions {
            panic_on_record: Some(5),
            ..RunOptions::new(tmp.path().join("run"))
        };
        match train::<Cpu>(ds, &small(), &run, &Default::default(), &Silent) {
            Err(TrainError::Loader(LoaderError::WorkerPanic { record: 5, at, .. })) => {
                assert!(at.contains(".bshard"), "{at}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("training went on past a worker panic"),
        }
    }

    #[test]
    fn data_parallel_peers_log_the_single_device_losses() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = tiny(tmp.path(), 12);
        let cfg = TrainConfig {
            max_steps: Some(6),
            log_every: 1,
            ..small()
        };
        let run = |cfg: &TrainConfig, name: &str, peers: usize| {
            let run = RunOptions::new(tmp.path().join(name));
            let devices = vec![Default::default(); peers];
            train_on::<Cpu>(ds.clone(), cfg, &run, &devices, &Silent)
                .unwrap()
                .1
        };
        let one = run(&cfg, "one", 1);
        assert_eq!(one.losses.len(), 6);
        // 8 images over 3 peers: slices of 2, 3 and 3.
        for peers in [2, 3] {
            let got = run(&cfg, &format!("peers{peers}"), peers);
            assert_eq!(got.steps, 6);
            assert_same_losses(&got, &one, &format!("{peers} peers"));
        }
        // The divisor changes the trajectory (same first loss, then not),
        // the same way on one device and on two.
        let divided = TrainConfig {
            grad_divisor: 32.0,
            ..cfg.clone()
        };
        let d = run(&divided, "divided1", 1);
        assert_same_losses(&run(&divided, "divided2", 2), &d, "divided, 2 peers");
        let gap = |k: usize| ((d.losses[k].1 - one.losses[k].1) / one.losses[k].1).abs();
        assert!(
            gap(0) <= 1e-5 && gap(5) > 1e-3,
            "{:?} vs {:?}",
            d.losses,
            one.losses
        );
    }

    #[test]
    fn processes_train_as_one_and_refuse_to_start_unlike() {
        use crate::peers::threads::Threads;
        let tmp = tempfile::tempdir().unwrap();
        let ds = tiny(tmp.path(), 12);
        let cfg = TrainConfig {
            max_steps: Some(3),
            log_every: 1,
            ..small()
        };
        let one = RunOptions::new(tmp.path().join("one"));
        let (_, one) = train::<Cpu>(ds.clone(), &cfg, &one, &Default::default(), &Silent).unwrap();
        // Two processes (threads standing in for MPI), one config each.
        let across = |name: &str, cfgs: [&TrainConfig; 2]| {
            let out = tmp.path().join(name);
            std::thread::scope(|s| {
                let handles: Vec<_> = Threads::group(2)
                    .into_iter()
                    .zip(cfgs)
                    .map(|(p, cfg)| {
                        let run = RunOptions {
                            processes: Some(p),
                            ..RunOptions::new(&out)
                        };
                        let ds = ds.clone();
                        s.spawn(move || {
                            train_on::<Cpu>(ds, cfg, &run, &[Default::default()], &Silent)
                                .map(|(_, summary)| summary)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        let alike = across("alike", [&cfg, &cfg]);
        match &alike[..] {
            [Ok(got), Ok(_)] => assert_same_losses(got, &one, "2 processes"),
            other => panic!(
                "{:?}",
                other.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
            ),
        }
        // Process 1 with another seed: both refuse before the first step,
        // each naming the seed, and nothing is written.
        let other = TrainConfig {
            seed: cfg.seed + 1,
            ..cfg.clone()
        };
        for (rank, r) in across("unlike", [&cfg, &other]).into_iter().enumerate() {
            match r {
                Err(TrainError::Peer(PeerError::Disagree { process, facts, .. })) => {
                    assert_eq!(process, rank);
                    assert!(facts.contains("config seed (here: "), "{facts}");
                    assert!(facts.contains("starting weights"), "{facts}");
                    assert!(!facts.contains("dataset"), "{facts}");
                }
                Err(e) => panic!("process {rank}: {e}"),
                Ok(_) => panic!("process {rank} trained with another seed beside it"),
            }
        }
        assert!(!tmp.path().join("unlike").exists());
    }

    #[test]
    fn a_data_parallel_run_resumes_with_another_number_of_peers() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = tiny(tmp.path(), 12);
        let cfg = TrainConfig {
            max_steps: Some(6),
            log_every: 1,
            ..small()
        };
        let dev = Default::default();
        let full = RunOptions::new(tmp.path().join("full"));
        let (_, want) = train_on::<Cpu>(ds.clone(), &cfg, &full, &[dev], &Silent).unwrap();
        let part = RunOptions {
            checkpoint_every: Some(2),
            ..RunOptions::new(tmp.path().join("part"))
        };
        let first = TrainConfig {
            max_steps: Some(4),
            ..cfg.clone()
        };
        train_on::<Cpu>(ds.clone(), &first, &part, &[dev, dev], &Silent).unwrap();
        let resumed = RunOptions {
            resume: true,
            ..part
        };
        let (_, got) = train_on::<Cpu>(ds, &cfg, &resumed, &[dev, dev, dev], &Silent).unwrap();
        assert_eq!((got.start_step, got.steps), (4, 6));
        assert_same_losses(&got, &want, "2 peers resumed on 3");
    }

    #[test]
    fn a_failing_peer_stops_the_run_with_its_error() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = tiny(tmp.path(), 12);
        let cfg = TrainConfig {
            max_steps: Some(6),
            ..small()
        };
        let dev = Default::default();
        for (fault, says) in [
            (PeerFault::Error, "failed on purpose before step 2"),
            (PeerFault::Panic, "its thread panicked"),
        ] {
            let run = RunOptions {
                fail_peer_at: Some((2, fault)),
                ..RunOptions::new(tmp.path().join(format!("{fault:?}")))
            };
            let started = Instant::now();
            match train_on::<Cpu>(ds.clone(), &cfg, &run, &[dev, dev], &Silent) {
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("peer 1 of 2 failed: ") && e.contains(says),
                        "{e}"
                    )
                }
                Ok((_, s)) => panic!("the run went on for {} steps", s.steps),
            }
            assert!(
                started.elapsed() < run.peer_timeout,
                "it waited for the timeout"
            );
        }
        let small_batch = TrainConfig {
            batch_size: 2,
            ..cfg
        };
        let run = RunOptions::new(tmp.path().join("too-many"));
        match train_on::<Cpu>(ds, &small_batch, &run, &[dev, dev, dev], &Silent) {
            Err(TrainError::BatchTooSmall { batch: 2, peers: 3 }) => {}
            other => panic!("expected BatchTooSmall, got {:?}", other.map(|r| r.1.steps)),
        }
    }

    #[test]
    fn a_resumed_run_continues_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = tiny(tmp.path(), 12);
        let cfg = TrainConfig {
            epochs: 3,
            ..small()
        };
        let dev = Default::default();
        let full = RunOptions::new(tmp.path().join("full"));
        let (_, want) = train::<Cpu>(ds.clone(), &cfg, &full, &dev, &Silent).unwrap();
        // Stop after 4 steps (checkpoints every 2: the last one is at step 4,
        // mid-epoch), then resume with a different thread count.
        let part = RunOptions {
            checkpoint_every: Some(2),
            ..RunOptions::new(tmp.path().join("part"))
        };
        let stopped = TrainConfig {
            max_steps: Some(4),
            ..cfg.clone()
        };
        train::<Cpu>(ds.clone(), &stopped, &part, &dev, &Silent).unwrap();
        let resumed = RunOptions {
            resume: true,
            ..part.clone()
        };
        let cfg3 = TrainConfig {
            threads: 3,
            ..cfg.clone()
        };
        let (_, got) = train::<Cpu>(ds.clone(), &cfg3, &resumed, &dev, &Silent).unwrap();
        assert_eq!(got.start_step, 4);
        assert_eq!(got.steps, 9);
        // Steps 0, 1, 3, 5, 7 and the last, 8: the earlier ones read back
        // from the log the stopped run wrote.
        assert_eq!(got.losses.len(), 6);
        assert_same_losses(&got, &want, "resumed");
        // The log holds each step once, as the uninterrupted run's does.
        let steps = |p: &Path| -> Vec<u64> {
            std::fs::read_to_string(p.join("log.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<StepLog>(l).unwrap().step)
                .collect()
        };
        assert_eq!(steps(&part.out), steps(&full.out));
        // A different trajectory is refused, naming what differs.
        let other = TrainConfig {
            lambda: 0.01,
            ..cfg.clone()
        };
        match train::<Cpu>(ds, &other, &resumed, &dev, &Silent) {
            Err(TrainError::ResumeMismatch { differs, .. }) => {
                assert!(differs.contains("lambda"), "{differs}")
            }
            other => panic!("expected a mismatch, got {:?}", other.map(|r| r.1.steps)),
        }
    }

    #[test]
    fn a_run_of_zero_steps_saves_its_initial_network() {
        use crate::model::torchvision::export;
        let tmp = tempfile::tempdir().unwrap();
        let ds = tiny(tmp.path(), 4);
        let cfg = TrainConfig {
            max_steps: Some(0),
            ..small()
        };
        let run = RunOptions::new(tmp.path().join("run"));
        let dev = Default::default();
        let (_, s) = train::<Cpu>(ds, &cfg, &run, &dev, &Silent).unwrap();
        assert_eq!(s.steps, 0);
        assert_eq!(checkpoint::list(&run.out).unwrap(), vec![0]);
        let saved = checkpoint::load_model(
            &s.checkpoint,
            BarlowTwins::<Cpu>::new(&cfg.backbone(), &cfg.projector, &dev),
            &dev,
        )
        .unwrap();
        let seeded = initial_model::<Cpu>(&cfg, None, &dev).unwrap();
        let bytes = |m: &BarlowTwins<Cpu>| export(&m.backbone, &cfg.backbone(), None).unwrap();
        assert_eq!(bytes(&saved), bytes(&seeded));
    }

    #[test]
    fn a_run_initialised_from_a_file_starts_from_its_weights() {
        use crate::model::torchvision::export;
        let tmp = tempfile::tempdir().unwrap();
        let dev = Default::default();
        let cfg = small();
        let other = TrainConfig { seed: 9, ..small() };
        let source = initial_model::<Cpu>(&other, None, &dev).unwrap();
        let bytes = |m: &BarlowTwins<Cpu>| {
            export(&m.backbone, &cfg.backbone(), Some(&m.projector)).unwrap()
        };
        let file = tmp.path().join("w.safetensors");
        std::fs::write(&file, bytes(&source)).unwrap();
        let seeded = initial_model::<Cpu>(&cfg, None, &dev).unwrap();
        let init = initial_model::<Cpu>(&cfg, Some(&file), &dev).unwrap();
        assert_ne!(bytes(&seeded), bytes(&source));
        assert_eq!(bytes(&init), bytes(&source));
        // Parameters stay trainable.
        assert!(init.backbone.conv1.weight.val().is_require_grad());
        // A backbone-only file keeps the seeded projector.
        std::fs::write(
            &file,
            export(&source.backbone, &cfg.backbone(), None).unwrap(),
        )
        .unwrap();
        let init = initial_model::<Cpu>(&cfg, Some(&file), &dev).unwrap();
        let projector = |m: &BarlowTwins<Cpu>| -> Vec<f32> {
            m.projector.linears[0]
                .weight
                .val()
                .into_data()
                .to_vec()
                .unwrap()
        };
        assert_eq!(projector(&init), projector(&seeded));
        // So does a file whose projector has other widths.
        let narrow = TrainConfig {
            projector: vec![16, 16],
            ..other.clone()
        };
        let source = initial_model::<Cpu>(&narrow, None, &dev).unwrap();
        let file16 = tmp.path().join("p16.safetensors");
        let with16 = export(&source.backbone, &cfg.backbone(), Some(&source.projector)).unwrap();
        std::fs::write(&file16, with16).unwrap();
        let init = initial_model::<Cpu>(&cfg, Some(&file16), &dev).unwrap();
        assert_eq!(projector(&init), projector(&seeded));
        let backbone = |m: &BarlowTwins<Cpu>| export(&m.backbone, &cfg.backbone(), None).unwrap();
        assert_eq!(backbone(&init), backbone(&source));
        // A file for another network is refused, naming the keys.
        let wide = TrainConfig {
            width: 16,
            ..small()
        };
        match initial_model::<Cpu>(&wide, Some(&file), &dev) {
            Err(TrainError::Interop(e)) => assert!(e.to_string().contains("conv1.weight"), "{e}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a width-8 file initialised a width-16 network"),
        }
    }

    #[test]
    fn blur_sigma_is_the_reference_at_224_and_scales_with_the_view() {
        let at = |size: u32| {
            let cfg = TrainConfig {
                image_size: size,
                ..TrainConfig::default()
            };
            cfg.loader_config().augment.views.map(|v| v.blur_sigma)
        };
        let spec = crate::data::augment::AugmentConfig::default()
            .views
            .map(|v| v.blur_sigma);
        assert_eq!(at(224), spec);
        for (scaled, s) in at(32).iter().zip(&spec) {
            assert!((scaled.0 - s.0 * 32.0 / 224.0).abs() < 1e-12);
            assert!((scaled.1 - s.1 * 32.0 / 224.0).abs() < 1e-12);
        }
    }

    #[test]
    fn configs_load_from_toml_with_defaults_for_missing_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("run.toml");
        std::fs::write(
            &p,
            "arch = \"resnet18\"\nwidth = 16\nprojector = [512, 512]\n",
        )
        .unwrap();
        let cfg = TrainConfig::from_toml_file(&p).unwrap();
        assert_eq!(cfg.arch, Arch::Resnet18);
        assert_eq!(cfg.width, 16);
        assert_eq!(cfg.projector, vec![512, 512]);
        assert_eq!(cfg.batch_size, TrainConfig::default().batch_size);
        std::fs::write(&p, "widht = 16\n").unwrap();
        let e = TrainConfig::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("widht") && e.contains("run.toml"), "{e}");
    }
}
