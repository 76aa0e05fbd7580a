//! Training: loader -> device normalisation -> backbone + projector ->
//! Barlow Twins loss -> LARS, with the warm-up + cosine schedule stepped
//! every iteration, on any burn autodiff backend (Flex on the CPU, CUDA on
//! NVIDIA GPUs: see [`crate::backend`]).
//!
//! Where each part lives:
//! - `step`: one step, as the paper's loop writes it ([`barlow_twins_step`]);
//! - `lead`: the loop around it (peer 0's), which hands each step's result
//!   to the run's parts: `meter` (the log lines' figures), `monitor` (kNN),
//!   `stopping`, and the run folder ([`crate::run::RunFolder`]: logs,
//!   checkpoints, `loss.png`);
//! - `batches`: the loader's batches uploaded (and shared with the other
//!   peers); `replica`: the network a peer starts from; `peers`: the other
//!   data-parallel peers' loop.
//!
//! Guarantees:
//! - The reference's defaults (`docs/method.md`): batch scaling of the
//!   rates, lambda, LARS, schedule.
//! - **Resume.** A checkpoint ([`checkpoint`]) is written at the end of
//!   every epoch, every `checkpoint_every` steps and at the end of the run;
//!   it holds the model (BatchNorm statistics included), the optimiser state
//!   and the loader position. `resume` continues from the latest one: the
//!   following steps see exactly the batches of a run that never stopped,
//!   and their losses agree with it to a relative 1e-5 (what the tests
//!   assert; the CPU backend is not promised bit-identical across thread
//!   counts). The log is cut back to the checkpoint so it never holds a
//!   step twice.
//! - Files in the run folder: see [`crate::run`].
//! - **Several devices.** [`train_on`] with W devices runs W data-parallel
//!   peers, one thread each, each on its slice of every global batch
//!   ([`crate::peers`]): their step is the single-device step on the global
//!   batch (BatchNorm statistics, cross-correlation and gradients are
//!   global), and peer 0 logs, monitors and checkpoints. With one device
//!   it is the single-device loop. Each log line then also says what the
//!   peers' all-reduces cost per step ([`crate::run::PeerTraffic`]).

mod batches;
mod lead;
mod meter;
mod monitor;
mod peers;
mod replica;
mod rewind;
mod step;
mod stopping;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use burn::tensor::backend::AutodiffBackend;

use crate::data::loader::{LoaderError, MaxDamaged, OnDamaged, ReadPath};
use crate::data::shard::Dataset;
use crate::error::IoError;
use crate::eval::EvalError;
use crate::model::torchvision::InteropError;
use crate::model::{BarlowTwins, Precision};
use crate::peers::{PeerError, PeerReduce, Processes};
use crate::progress::Progress;
use batches::Share;
use lead::lead;

pub use crate::run::{
    CheckpointError, CheckpointState, KnnLog, RunError, StepLog, TrainConfig, checkpoint,
};
pub use monitor::Monitor;
pub use replica::initial_model;
pub use rewind::OnNonFinite;
pub use step::{
    LossRead, Parallel, PendingLosses, Stepped, barlow_twins_gradients,
    barlow_twins_gradients_with, barlow_twins_step, data_parallel_step,
};

/// Where a run writes and how it checkpoints and monitors itself.
#[derive(Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    /// Continue from the latest checkpoint in `out`; with none there yet,
    /// start from step 0 as a fresh run (whatever an earlier attempt logged
    /// is discarded).
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
    /// What a damaged record (its checksum fails) does to the run: skipped
    /// (replaced, counted, listed in `damaged.jsonl`) up to `max_damaged`
    /// distinct records, or an error.
    pub on_damaged: OnDamaged,
    pub max_damaged: MaxDamaged,
    /// How the loader reads records (`docs/loader.md`).
    pub read: ReadPath,
    /// What a non-finite loss does: stop naming the step, or rewind to the
    /// newest checkpoint and skip the batches from there through the bad
    /// step and `rewind_skip` more, at most `max_rewinds` times (one
    /// device in one process only).
    pub on_nonfinite: OnNonFinite,
    pub rewind_skip: u64,
    pub max_rewinds: u32,
    /// Testing aid: the losses of the batches at these positions are made
    /// NaN.
    #[cfg(test)]
    pub(crate) poison_batches: Vec<crate::data::sampler::Position>,
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
            on_damaged: OnDamaged::default(),
            max_damaged: MaxDamaged::default(),
            read: ReadPath::default(),
            on_nonfinite: OnNonFinite::default(),
            rewind_skip: 100,
            max_rewinds: 3,
            #[cfg(test)]
            poison_batches: Vec::new(),
            #[cfg(test)]
            panic_on_record: None,
            #[cfg(test)]
            fail_peer_at: None,
        }
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
    Run(RunError),
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
    #[error(
        "the loss became {loss} at step {step} after {rewinds} rewinds (--max-rewinds): \
         the run diverges; lower the learning rate or check the data"
    )]
    TooManyRewinds { loss: f32, step: u64, rewinds: u32 },
    #[error(
        "--on-nonfinite rewind runs on one device in one process; with {peers} peers use \
         --on-nonfinite stop and --resume"
    )]
    RewindNeedsOneDevice { peers: usize },
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

/// A run folder's error as the trainer reports it: its I/O and checkpoint
/// errors as [`TrainError::Io`] and [`TrainError::Checkpoint`], whichever
/// part of the trainer met them.
impl From<RunError> for TrainError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Io(e) => TrainError::Io(e),
            RunError::Checkpoint(e) => TrainError::Checkpoint(e),
            e @ RunError::Format { .. } => TrainError::Run(e),
        }
    }
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
    /// Damaged records the loader skipped in this invocation, each time
    /// met (`damaged.jsonl` lists them).
    pub damaged_records: u64,
    /// The steps whose loss was not finite and sent the run back to its
    /// newest checkpoint, in order (`rewinds.jsonl`).
    pub rewinds: Vec<u64>,
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
    if run.on_nonfinite == OnNonFinite::Rewind && world * processes > 1 {
        return Err(TrainError::RewindNeedsOneDevice {
            peers: world * processes,
        });
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

#[cfg(test)]
mod tests;
