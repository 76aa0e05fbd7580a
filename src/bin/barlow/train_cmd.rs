//! `barlow train`: flags -> config -> library calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use barlow::backend::{BackendChoice, BackendKind};
use barlow::data::loader::{MaxDamaged, OnDamaged, ReadPath, memory_budget};
use barlow::data::shard::Dataset;
use barlow::eval::knn::KnnConfig;
use barlow::model::{Arch, Precision, parse_projector};
use barlow::peers::Processes;
use barlow::progress::Bar;
use barlow::train::{self, Monitor, OnNonFinite, RunOptions, TrainConfig, checkpoint};

/// Where the network runs.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// cpu (Flex, everywhere), cuda (NVIDIA GPU; needs the `cuda` feature)
    /// or vulkan (AMD, Intel or NVIDIA GPU; needs the `vulkan` feature).
    #[arg(long, value_parser = crate::choice::<BackendKind>(), default_value = "cpu")]
    pub backend: BackendKind,
    /// Device index: CUDA's numbering, or for Vulkan the usable adapters
    /// (discrete GPUs first, then integrated, then virtual).
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// Let --backend vulkan use a software adapter (Mesa's lavapipe): for
    /// tests, it is far slower than the CPU backend. The environment
    /// variable BARLOW_ALLOW_SOFTWARE_DEVICE=1 does the same.
    #[arg(long)]
    pub allow_software: bool,
}

impl BackendArgs {
    pub fn choice(&self) -> Result<BackendChoice, String> {
        let c = BackendChoice {
            kind: self.backend,
            device: self.device,
            allow_software: barlow::backend::software_allowed(self.allow_software),
        };
        c.check().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

/// `barlow train`'s flags. Model and optimisation flags left out take the
/// value of `--config` if given, else the reference's defaults; with `--resume` they
/// take the checkpoint's values (and may not change the run's trajectory).
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Dataset (made by shardify): a folder, or an object-store prefix
    /// (s3://bucket/prefix, gs://, az://, https://) read through --cache-dir.
    #[arg(long)]
    data: PathBuf,
    /// Run folder: log.jsonl, knn.jsonl, checkpoints/, backbone.bin, loss.png.
    #[arg(long)]
    out: PathBuf,
    /// TOML file with any of the config keys (arch, width, small_stem,
    /// image_size, crop_scale = [min, max], batch_size, epochs, max_steps, lambda, lr_weights,
    /// lr_biases, weight_decay, projector = [8192, 8192, 8192], seed,
    /// threads, log_every, grad_divisor, precision).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue from the latest checkpoint in --out; where there is none
    /// yet (a job killed before its first checkpoint, or never started),
    /// start from step 0. Safe on every launch of a job that may be
    /// preempted: relaunch it with the same command line. A config (file or
    /// flags) that differs from the checkpoint's is refused.
    #[arg(long)]
    resume: bool,
    /// [default: resnet50]
    #[arg(long, value_parser = crate::choice::<Arch>())]
    arch: Option<Arch>,
    /// Base width of the ResNet (64 = torchvision's) [default: 64].
    #[arg(long)]
    width: Option<usize>,
    /// 3x3 stride-1 stem without max-pool, for small images.
    #[arg(long)]
    small_stem: bool,
    /// [default: 224]
    #[arg(long)]
    image_size: Option<u32>,
    /// Smallest RandomResizedCrop area fraction [default: 0.08].
    #[arg(long)]
    crop_scale_min: Option<f64>,
    /// [default: 2048]
    #[arg(long)]
    batch_size: Option<usize>,
    /// [default: 1000]
    #[arg(long)]
    epochs: Option<u64>,
    /// Stop after this many steps (the schedule still spans --epochs).
    #[arg(long)]
    max_steps: Option<u64>,
    /// [default: 0.0051]
    #[arg(long)]
    lambda: Option<f32>,
    /// Peak rate of the weights, times batch/256 [default: 0.2].
    #[arg(long)]
    lr_weights: Option<f64>,
    /// Peak rate of biases and BN parameters, times batch/256 [default: 0.0048].
    #[arg(long)]
    lr_biases: Option<f64>,
    /// [default: 1e-6]
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Projector widths, the reference's notation [default: 8192-8192-8192].
    #[arg(long)]
    projector: Option<String>,
    /// [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// The sampling order [default: random, the reference's]. `blocked`
    /// reads runs of --block consecutive records, shuffled within windows
    /// of --window blocks: what a dataset in an object store with a cache
    /// smaller than itself needs (docs/remote.md).
    #[arg(long, value_parser = crate::choice::<barlow::data::sampler::Order>())]
    order: Option<barlow::data::sampler::Order>,
    /// With --order blocked: records per block, and per fetched piece of a
    /// remote dataset [default: 256].
    #[arg(long)]
    block: Option<usize>,
    /// With --order blocked: blocks per shuffle window [default: 32].
    #[arg(long)]
    window: Option<usize>,
    /// Loader threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Threads of the CPU backend's kernels (Flex's rayon pool) [default:
    /// all cores]. On a CPU run the loader's --threads and these share the
    /// cores.
    #[arg(long)]
    compute_threads: Option<usize>,
    /// Log a line every N steps [default: 10].
    #[arg(long)]
    log_every: Option<u64>,
    /// Divide the loss gradient by D before LARS [default: 1, the exact
    /// gradient]. 32 reproduces the paper's run, whose 32 GPUs averaged
    /// their gradients (its rates and weight decay were tuned at that
    /// scale); see docs/method.md.
    #[arg(long)]
    grad_divisor: Option<f64>,
    /// The dtype of the convolutions and matmuls: f32, or bf16 for mixed
    /// precision (the weights, optimiser state and loss stay f32, and
    /// BatchNorm computes in f32) [default: f32]. bf16 is for GPUs: the CPU
    /// backend computes it through f32, a few percent slower.
    #[arg(long, value_parser = crate::choice::<Precision>())]
    precision: Option<Precision>,
    /// Data-parallel peers, one thread each, each on an equal slice of
    /// every batch (--batch-size stays the global batch). Their step is
    /// the single-device step: BatchNorm statistics, the cross-correlation
    /// and the gradients are global. On the CPU all peers share the cores.
    #[arg(long, default_value_t = 1)]
    peers: usize,
    /// The peers' devices on a GPU backend, comma-separated [default:
    /// 0,1,..,peers-1].
    #[arg(long, value_delimiter = ',')]
    device_ids: Option<Vec<usize>>,
    /// Seconds a peer waits for the others at an all-reduce before the run
    /// fails (peer 0's kNN passes and checkpoints are waited out).
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    peer_timeout_s: u64,
    /// Also checkpoint every N steps (every epoch always checkpoints).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Checkpoints kept, the newest.
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    #[command(flatten)]
    damaged: DamageArgs,
    /// A loss that is not finite (NaN, infinite): stop, naming the step,
    /// or rewind: go back to the newest checkpoint, skip the batches from
    /// there through the bad step and --rewind-skip more, and go on (one
    /// device in one process). Rewinding needs frequent checkpoints:
    /// --checkpoint-every.
    #[arg(long, value_parser = crate::choice::<OnNonFinite>(), default_value = "stop")]
    on_nonfinite: OnNonFinite,
    /// How the loader reads records: auto (the memory maps when the
    /// dataset takes at most half the memory, else pread with read-ahead),
    /// map, map-advised or pread.
    #[arg(long, value_parser = crate::choice::<ReadPath>(), default_value = "auto")]
    read: ReadPath,
    /// Batches skipped after the bad step when rewinding.
    #[arg(long, default_value_t = 100)]
    rewind_skip: u64,
    /// Rewinds allowed in one launch before the run stops.
    #[arg(long, default_value_t = 3)]
    max_rewinds: u32,
    /// Start from these weights instead of random ones: a safetensors file
    /// with torchvision's ResNet names (`barlow export`, or a converted
    /// torchvision checkpoint). The projector is loaded too when the file
    /// has one of the run's widths (`export --with-projector`).
    /// Ignored when --resume finds a checkpoint (it holds the weights).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Validation dataset: run the kNN monitor (memory bank = --data).
    #[arg(long)]
    val: Option<PathBuf>,
    /// Run the kNN monitor every N epochs.
    #[arg(long, default_value_t = 1)]
    knn_every: u64,
    /// Neighbours of the kNN monitor.
    #[arg(long, default_value_t = 20)]
    knn_k: usize,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    pub remote: crate::remote_args::RemoteArgs,
}

impl TrainArgs {
    /// Defaults < config file (or, resuming without one, the checkpoint's
    /// config) < flags.
    fn config(&self) -> Result<TrainConfig, String> {
        let mut c = match (&self.config, self.resumes_from()?) {
            (Some(p), _) => TrainConfig::from_toml_file(p).map_err(|e| e.to_string())?,
            (None, Some(dir)) => {
                checkpoint::load_state(&dir)
                    .map_err(|e| e.to_string())?
                    .config
            }
            (None, None) => TrainConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(
            arch,
            width,
            image_size,
            batch_size,
            epochs,
            lambda,
            lr_weights,
            lr_biases,
            weight_decay,
            seed,
            order,
            block,
            window,
            threads,
            log_every,
            grad_divisor,
            precision
        );
        if !(c.grad_divisor.is_finite() && c.grad_divisor > 0.0) {
            return Err(format!(
                "--grad-divisor {} is not a positive number",
                c.grad_divisor
            ));
        }
        if let Some(m) = self.crop_scale_min {
            if !(m > 0.0 && m <= 1.0) {
                return Err(format!("--crop-scale-min {m} is not in (0, 1]"));
            }
            c.crop_scale.0 = m;
        }
        if self.small_stem {
            c.small_stem = true;
        }
        if self.max_steps.is_some() {
            c.max_steps = self.max_steps;
        }
        if let Some(p) = &self.projector {
            c.projector = parse_projector(p).map_err(|e| format!("--projector: {e}"))?;
        }
        if c.threads == 0 {
            c.threads = crate::default_threads(None);
        }
        Ok(c)
    }
}

/// What a record whose checksum fails does (`train`, `bench-loader`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DamageArgs {
    /// A record whose checksum fails: skip it (replaced by another record
    /// chosen from the seed, counted, and listed in RUN/damaged.jsonl) or
    /// stop with an error naming its shard, record and offset. Damage to
    /// a shard's header or index always stops.
    #[arg(long, value_parser = crate::choice::<OnDamaged>(), default_value = "skip")]
    pub on_damaged: OnDamaged,
    /// With --on-damaged skip, stop once more distinct records than this
    /// are damaged: a count (10) or a fraction of the dataset (0.001 or
    /// 0.1%).
    #[arg(long, value_parser = MaxDamaged::parse, default_value = "0.1%")]
    pub max_damaged: MaxDamaged,
}

impl TrainArgs {
    /// The checkpoint `--resume` continues from: none without `--resume`,
    /// or when --out has none yet.
    fn resumes_from(&self) -> Result<Option<PathBuf>, String> {
        if !self.resume {
            return Ok(None);
        }
        match checkpoint::resolve(&self.out) {
            Ok(dir) => Ok(Some(dir)),
            Err(checkpoint::CheckpointError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

pub use crate::remote_args::open;

/// `ds` if it has class labels: the kNN monitor needs them, and a flat
/// (unlabelled) dataset is refused here rather than after the first epoch.
fn labelled(ds: Arc<Dataset>, path: &Path) -> Result<Arc<Dataset>, String> {
    if ds.manifest().classes.is_empty() {
        return Err(format!(
            "{}: this dataset has no class labels (shardified from a flat folder or an unlabelled list); the kNN monitor (--val) needs labelled train and val sets",
            path.display()
        ));
    }
    Ok(ds)
}

/// Trains; `Ok(true)` when a signal stopped the run (after its final
/// checkpoint).
pub fn run_train(a: TrainArgs) -> Result<bool, String> {
    #[cfg(feature = "mpi")]
    if let Some(mpi) = barlow::peers::mpi::Mpi::from_env()? {
        return in_mpi_job(a, Arc::new(mpi));
    }
    train_here(a, None)
}

/// [`train_here`] as one process of an MPI job. A process that fails or
/// panics ends the whole job (MPI_Abort, exit status 1), so that no other
/// process waits for it.
#[cfg(feature = "mpi")]
fn in_mpi_job(a: TrainArgs, mpi: Arc<barlow::peers::mpi::Mpi>) -> Result<bool, String> {
    let (rank, size) = (mpi.rank(), mpi.size());
    let job = Job {
        processes: Arc::clone(&mpi) as Arc<dyn Processes>,
        local_rank: mpi.local_rank(),
    };
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train_here(a, Some(job))));
    if size > 1 {
        match &result {
            Ok(Ok(_)) => mpi.barrier(),
            Ok(Err(e)) => {
                eprintln!("barlow: process {rank} of {size}: {e}");
                mpi.abort(1)
            }
            Err(_) => {
                eprintln!("barlow: process {rank} of {size} panicked (see above)");
                mpi.abort(1)
            }
        }
    }
    match result {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// This process's place in a multi-process job.
struct Job {
    processes: Arc<dyn Processes>,
    /// Its rank among the job's processes on this machine.
    local_rank: usize,
}

/// Trains in this process; `Ok(true)` when a signal stopped the run
/// (after its final checkpoint).
fn train_here(a: TrainArgs, job: Option<Job>) -> Result<bool, String> {
    let cfg = a.config()?;
    let processes = job.as_ref().map(|j| Arc::clone(&j.processes));
    // Each process of a machine takes the next `--peers` devices.
    let device_offset = job.as_ref().map_or(0, |j| j.local_rank * a.peers.max(1));
    if let Some(n) = a.compute_threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| format!("--compute-threads {n}: {e}"))?;
    }
    let choice = a.backend.choice()?;
    let ds = crate::remote_args::open_with(&a.data, cfg.block)?;
    if let Some(line) = crate::remote_args::describe(&ds) {
        println!("{line}");
    }
    let monitor = match &a.val {
        Some(v) => Some(Monitor {
            train: labelled(ds.clone(), &a.data)?,
            val: labelled(open(v)?, v)?,
            every_epochs: a.knn_every,
            at_start: false,
            knn: KnnConfig {
                k: a.knn_k,
                ..KnnConfig::default()
            },
        }),
        None => None,
    };
    // SIGINT (Ctrl-C) and SIGTERM (what a cluster sends a preempted job)
    // stop the run after the step in flight, with a checkpoint of it; a
    // second one exits at once (status 130), for a run stuck in a long kNN
    // pass or a hung loader. The shutdown action must be registered first.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let failed =
            |e: std::io::Error| format!("cannot install the handler of signal {signal}: {e}");
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .map_err(failed)?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(failed)?;
    }
    let run = RunOptions {
        resume: a.resume,
        checkpoint_every: a.checkpoint_every,
        keep_checkpoints: a.keep_checkpoints,
        monitor,
        stop: Some(stop),
        init_from: a.init_from.clone(),
        peer_timeout: std::time::Duration::from_secs(a.peer_timeout_s),
        on_damaged: a.damaged.on_damaged,
        max_damaged: a.damaged.max_damaged,
        on_nonfinite: a.on_nonfinite,
        read: a.read,
        rewind_skip: a.rewind_skip,
        max_rewinds: a.max_rewinds,
        processes,
        ..RunOptions::new(&a.out)
    };
    // Process 0 of an MPI job reports; the others stay quiet unless they fail.
    let (process, processes) = run
        .processes
        .as_ref()
        .map_or((0, 1), |p| (p.rank(), p.size()));
    let quiet = process > 0;
    let say = |line: String| {
        if !quiet {
            println!("{line}");
        }
    };
    say(format!(
        "training {:?} width {} on {} ({} images) with {}{}, {} loader threads; run folder {}",
        cfg.arch,
        cfg.width,
        a.data.display(),
        ds.len(),
        choice.describe(),
        match (a.peers * processes, processes) {
            (0 | 1, _) => String::new(),
            (n, 1) => format!(" x {n} data-parallel peers"),
            (n, p) => format!(" x {n} data-parallel peers in {p} processes"),
        },
        cfg.threads,
        a.out.display()
    ));
    // The loader's read path, chosen by the dataset's size (docs/loader.md).
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    say(format!(
        "loader reads records with {}: dataset {:.0} MiB, memory {}",
        barlow::Choice::name(a.read.resolve(&ds)),
        mib(ds.bytes()),
        memory_budget().map_or("unknown".into(), |b| format!("{:.0} MiB", mib(b)))
    ));
    if a.resume && a.resumes_from()?.is_none() {
        say(format!(
            "no checkpoint in {} yet: starting from step 0 (anything a killed attempt logged is discarded)",
            a.out.display()
        ));
    }
    let progress: Box<dyn barlow::progress::Progress> = if quiet {
        Box::new(barlow::progress::Silent)
    } else {
        Box::new(Bar::new())
    };
    let result = barlow::with_backend!(choice, |B, device| {
        let ids = a.device_ids.as_deref();
        match barlow::backend::peer_devices(choice.kind, &device, a.peers, ids, device_offset) {
            Ok(devices) => train::train_on::<B>(ds, &cfg, &run, &devices, progress.as_ref())
                .map(|(_, s)| s)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let s = result?;
    if quiet {
        return Ok(s.stopped);
    }
    let first = s.losses.first().map_or(f32::NAN, |l| l.1);
    let last = s.losses.last().map_or(f32::NAN, |l| l.1);
    println!(
        "{} steps ({} this time) in {:.1}s: {:.1} images/s, data wait {:.1}% of the time; loss {first:.1} -> {last:.1}",
        s.steps,
        s.steps - s.start_step,
        s.elapsed.as_secs_f64(),
        s.images_per_sec,
        100.0 * s.data_wait_share
    );
    for step in &s.rewinds {
        println!(
            "  rewound after a non-finite loss at step {step}: {}",
            a.out.join("rewinds.jsonl").display()
        );
    }
    let damaged = s.damaged_records;
    if damaged > 0 {
        println!(
            "  {damaged} damaged records skipped (their checksums fail): {}",
            a.out.join("damaged.jsonl").display()
        );
    }
    for k in &s.knn {
        println!(
            "  kNN after epoch {}: top-1 {:.1}%, top-5 {:.1}%",
            k.epoch, k.top1, k.top5
        );
    }
    println!(
        "checkpoint {}; backbone {}; loss curve {}",
        s.checkpoint.display(),
        s.backbone.display(),
        a.out.join("loss.png").display()
    );
    println!(
        "{}",
        serde_json::json!({
            "steps": s.steps,
            "train_images_per_sec": s.images_per_sec,
            "data_wait_share": s.data_wait_share,
            "first_loss": first,
            "last_loss": last,
            "knn_top1": s.knn.last().map(|k| k.top1),
            "checkpoint": s.checkpoint,
            "stopped": s.stopped,
        })
    );
    if s.stopped {
        eprintln!(
            "barlow: stopped by a signal after step {}; checkpoint written; continue with --resume",
            s.steps
        );
    }
    Ok(s.stopped)
}
