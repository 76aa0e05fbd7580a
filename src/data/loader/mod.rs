//! The streaming two-view loader: shards -> sampler -> decode -> augment ->
//! batch -> prefetch, on worker threads.
//!
//! Guarantees:
//! - **Determinism.** Batch contents depend on the dataset, the config and
//!   the start [`Position`] only: not on the thread count or on timing.
//!   Resuming from a saved position yields the batches an uninterrupted run
//!   would have produced from there.
//! - **Order.** Batches are delivered in sampler order.
//! - **Bounded memory.** `prefetch + 1` batch buffers, plus one decoder and
//!   one augmenter per worker, all allocated up front and reused; nothing
//!   grows with the dataset but the epoch order (8 bytes a record).
//! - **Prefetch.** While the caller holds batch k, the workers fill batches
//!   k+1 .. k+prefetch. Time the caller spends blocked in
//!   [`Loader::next_batch`] is the data wait (starvation) time.
//! - **Failures.** A record that fails to decode is replaced by another
//!   record chosen from `(seed, epoch, record, attempt)` and counted. So is
//!   a damaged record (its checksum fails) under [`OnDamaged::Skip`], the
//!   default, which also reports it ([`Loader::take_damaged`]) and stops
//!   past [`MaxDamaged`]; under [`OnDamaged::Stop`] it is an error. Damage
//!   to a shard's header or index, too many damaged records and worker
//!   panics become a [`LoaderError`] at the consumer; the loader never
//!   hangs on them.
//! - **Shutdown.** Dropping the loader stops and joins every worker promptly.
//!
//! Work is handed out lock-free: a shared atomic counter numbers the samples
//! of the stream; a worker claims the next number, waits (only when the
//! pipeline is full) for its batch's buffer to be free, writes the sample
//! straight into its slot and bumps the batch's completion counter. The
//! worker completing a batch announces it on a channel.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};

mod batch;
mod bench;
mod damage;
#[cfg(feature = "remote")]
mod plan;
mod stats;
mod worker;

pub use batch::PixelFormat;
use batch::{BatchBuffers, Slot};
pub use bench::{Bench, BenchReport, bench};
use damage::Damage;
pub use damage::{DamagedRecord, MaxDamaged, OnDamaged};
use stats::AtomicStats;
pub use stats::LoaderStats;

use crate::data::augment::AugmentConfig;
use crate::data::sampler::{Position, Sampler, SamplerConfig, SamplerError};
use crate::data::shard::{Dataset, ShardError};

/// How much of the pipeline runs (for benchmarks; training uses `Full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Read and decode only.
    Decode,
    /// Decode and render both views, without writing them into the batch.
    Augment,
    /// Everything: batches of two views.
    #[default]
    Full,
    /// Evaluation batches: one view per image, the deterministic eval
    /// transform (Resize + CenterCrop, no augmentation) in view 0.
    Eval,
    /// Batches of one augmented view per image: view 0 exactly as `Full`
    /// draws it (the linear probe's training views).
    OneView,
}

impl Mode {
    /// Views written per image.
    pub fn views(self) -> usize {
        match self {
            Mode::Eval | Mode::OneView => 1,
            Mode::Decode | Mode::Augment | Mode::Full => 2,
        }
    }
}

impl crate::Choice for Mode {
    const NAMES: &'static [(Self, &'static str)] = &[
        (Mode::Decode, "decode"),
        (Mode::Augment, "augment"),
        (Mode::Full, "full"),
        (Mode::Eval, "eval"),
        (Mode::OneView, "one-view"),
    ];
}

/// How workers get a record's bytes. Every path gives the same bytes and
/// the same batches; they differ in what the kernel does when the dataset
/// does not fit in memory (`docs/loader.md`, "Datasets larger than
/// memory"): with the data 3x the memory limit, [`ReadPath::Pread`] kept
/// 94% of its in-memory speed in random order, the bare map 19%; in memory
/// the map is about 1% faster. [`ReadPath::Auto`], the default, picks
/// between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPath {
    /// [`ReadPath::Map`] when the dataset takes at most half the memory
    /// this process may use ([`memory_budget`]), else [`ReadPath::Pread`].
    #[default]
    Auto,
    /// Straight out of the shards' memory maps, no hints: the page cache
    /// and the kernel's read-around decide.
    Map,
    /// The maps, marked for random access (no read-around), with each
    /// upcoming record's pages requested ahead (`madvise` WILLNEED) in the
    /// sampler's order.
    MapAdvised,
    /// `pread` into each worker's reused buffer, with the same read-ahead.
    Pread,
    /// A remote dataset's records, out of its cache, fetched ahead in the
    /// sampler's order (`docs/remote.md`): what a remote dataset is read
    /// with, whatever else was asked; for a local one it is `Pread`.
    Remote,
}

impl ReadPath {
    /// The path to read `dataset` with: this one, or for
    /// [`ReadPath::Auto`] the one its size against [`memory_budget`] calls
    /// for (the map where the budget is unknown).
    pub fn resolve(self, dataset: &Dataset) -> ReadPath {
        self.resolve_within(dataset, memory_budget())
    }

    /// [`ReadPath::resolve`] against `budget`.
    fn resolve_within(self, dataset: &Dataset, budget: Option<u64>) -> ReadPath {
        if dataset.is_remote() {
            return ReadPath::Remote;
        }
        match self {
            ReadPath::Remote => ReadPath::Pread,
            ReadPath::Auto => match budget {
                Some(budget) if 2 * dataset.bytes() > budget => ReadPath::Pread,
                _ => ReadPath::Map,
            },
            path => path,
        }
    }

    /// Whether workers request records' pages ahead of reading them.
    fn reads_ahead(self) -> bool {
        matches!(self, ReadPath::MapAdvised | ReadPath::Pread)
    }
}

/// The memory this process may use (Linux): the machine's, or the lowest
/// memory limit of its cgroup and the cgroup's ancestors where that is
/// lower (cgroup v1 or v2; in a container whose `/proc/self/cgroup` names
/// a host path, the container's root limit).
pub fn memory_budget() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let mut budget = total_kb * 1024;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (root, file) = if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else {
            continue;
        };
        // The cgroup, each ancestor and the root: the lowest limit holds.
        let mut dir = std::path::PathBuf::from(format!("{root}{path}"));
        loop {
            if let Some(limit) = std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
            {
                budget = budget.min(limit);
            }
            if dir.as_os_str().len() <= root.len() || !dir.pop() {
                break;
            }
        }
    }
    Some(budget)
}

impl crate::Choice for ReadPath {
    const NAMES: &'static [(Self, &'static str)] = &[
        (ReadPath::Auto, "auto"),
        (ReadPath::Map, "map"),
        (ReadPath::MapAdvised, "map-advised"),
        (ReadPath::Pread, "pread"),
        (ReadPath::Remote, "remote"),
    ];
}

/// Everything that shapes the stream.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub sampler: SamplerConfig,
    pub augment: AugmentConfig,
    /// Worker threads.
    pub threads: usize,
    /// Batches filled ahead of the one the caller holds (2 = double
    /// buffering with one spare).
    pub prefetch: usize,
    pub format: PixelFormat,
    pub mode: Mode,
    /// Records declaring more pixels are treated as undecodable.
    pub max_pixels: u64,
    /// Replacement attempts for a record that fails to decode.
    pub max_replacements: u32,
    /// How workers read records.
    pub read: ReadPath,
    /// With read-ahead ([`ReadPath::MapAdvised`], [`ReadPath::Pread`]): a
    /// worker starting sample n asks for the pages of sample n + this (at
    /// most as many records as fill an eighth of [`memory_budget`]).
    pub read_ahead: u64,
    /// What a record whose checksum fails does to the stream.
    pub on_damaged: OnDamaged,
    /// Distinct damaged records tolerated under [`OnDamaged::Skip`].
    pub max_damaged: MaxDamaged,
    /// Testing aid: a worker panics when it meets this record.
    #[cfg(test)]
    pub(crate) panic_on_record: Option<u64>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            sampler: SamplerConfig::default(),
            augment: AugmentConfig::default(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch: 2,
            format: PixelFormat::U8,
            mode: Mode::Full,
            max_pixels: crate::data::decode::DEFAULT_MAX_PIXELS,
            max_replacements: 16,
            read: ReadPath::default(),
            read_ahead: 256,
            on_damaged: OnDamaged::default(),
            max_damaged: MaxDamaged::default(),
            #[cfg(test)]
            panic_on_record: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LoaderError {
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error("{0}")]
    Shard(Arc<ShardError>),
    /// `at` names the shard file, the record in it and its offset.
    #[error(
        "{at} (dataset record {record}) and {attempts} replacements all failed to decode (last error: {last})"
    )]
    Undecodable {
        record: u64,
        at: String,
        attempts: u32,
        last: String,
    },
    #[error("a loader worker panicked on {at} (dataset record {record}): {message}")]
    WorkerPanic {
        record: u64,
        at: String,
        message: String,
    },
    #[error("{at} (dataset record {record}): augmentation failed: {message}")]
    Augment {
        record: u64,
        at: String,
        message: String,
    },
    #[error(
        "{damaged} damaged records (their checksums fail) of {records}, more than \
         --max-damaged allows ({limit}); the latest: {last}. The shards are failing or \
         were copied badly: check them with `shardify --check`"
    )]
    TooManyDamaged {
        damaged: u64,
        limit: u64,
        records: u64,
        last: String,
    },
    #[error("the loader's workers stopped")]
    Stopped,
}

enum Event {
    Ready(u64),
    Failed(LoaderError),
}

struct Shared {
    dataset: Arc<Dataset>,
    sampler: Sampler,
    cfg: LoaderConfig,
    start: Position,
    slots: Vec<Slot>,
    next_sample: AtomicU64,
    stop: AtomicBool,
    /// Workers sleep here when the pipeline is full.
    freed: (Mutex<()>, Condvar),
    orders: Mutex<VecDeque<(u64, Arc<Vec<u64>>)>>,
    stats: AtomicStats,
    damage: Damage,
    /// A remote dataset: the pins this loader's planner holds.
    #[cfg(feature = "remote")]
    pins: Option<crate::data::source::Pins>,
    /// Samples the planner has passed (their pieces pinned).
    #[cfg(feature = "remote")]
    planned: AtomicU64,
}

/// The loader. See the module docs.
pub struct Loader {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    events: Receiver<Event>,
    ready: BTreeSet<u64>,
    next: u64,
    data_wait: Duration,
    failed: Option<LoaderError>,
    /// Damaged records of delivered batches, not yet taken.
    damaged: Vec<DamagedRecord>,
}

impl Loader {
    /// Starts the workers; the first batch delivered is the one at `start`.
    pub fn new(
        dataset: Arc<Dataset>,
        cfg: LoaderConfig,
        start: Position,
    ) -> Result<Loader, LoaderError> {
        let sampler = Sampler::new(dataset.len(), cfg.sampler.clone())?;
        let depth = cfg.prefetch + 1;
        let views = cfg.mode.views();
        let batch = cfg.sampler.batch_size;
        let slots = (0..depth as u64)
            .map(|k| Slot {
                assigned: AtomicU64::new(k),
                done: AtomicUsize::new(0),
                bufs: BatchBuffers::new(batch, cfg.augment.size, cfg.format, views),
                len: AtomicUsize::new(0),
                damaged: Mutex::new(Vec::new()),
            })
            .collect();
        let threads = cfg.threads.max(1);
        let mut cfg = cfg;
        let budget = memory_budget();
        cfg.read = cfg.read.resolve_within(&dataset, budget);
        // Pages read ahead must not evict one another before they are
        // used: at most an eighth of the memory ahead.
        if let (true, Some(budget)) = (cfg.read.reads_ahead(), budget) {
            let record = dataset.bytes() / dataset.len().max(1);
            cfg.read_ahead = cfg.read_ahead.min(budget / 8 / record.max(1)).max(1);
        }
        if cfg.read == ReadPath::MapAdvised {
            dataset.advise_random();
        }
        #[cfg(feature = "remote")]
        let pins = dataset
            .remote()
            .map(|r| crate::data::source::Pins::new(Arc::clone(r)));
        let shared = Arc::new(Shared {
            dataset,
            sampler,
            cfg,
            start,
            slots,
            next_sample: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            freed: (Mutex::new(()), Condvar::new()),
            orders: Mutex::new(VecDeque::new()),
            stats: AtomicStats::default(),
            damage: Damage::default(),
            #[cfg(feature = "remote")]
            pins,
            #[cfg(feature = "remote")]
            planned: AtomicU64::new(0),
        });
        #[cfg(feature = "remote")]
        if let Some(pins) = &shared.pins {
            let (ds, cfg) = (&shared.dataset, &shared.cfg);
            plan::check_cache(ds, pins.remote(), cfg, &shared.sampler, start)?;
        }
        let (tx, events) = unbounded();
        let workers = (0..threads)
            .map(|_| {
                let shared = Arc::clone(&shared);
                let tx = tx.clone();
                std::thread::spawn(move || worker::run(&shared, &tx))
            })
            .collect::<Vec<_>>();
        #[cfg(feature = "remote")]
        let workers = {
            let mut workers = workers;
            if shared.pins.is_some() {
                let shared = Arc::clone(&shared);
                workers.push(std::thread::spawn(move || {
                    if let Some(pins) = &shared.pins {
                        plan::run(&shared, pins);
                    }
                }));
            }
            workers
        };
        Ok(Loader {
            shared,
            workers,
            events,
            ready: BTreeSet::new(),
            next: 0,
            data_wait: Duration::ZERO,
            failed: None,
            damaged: Vec::new(),
        })
    }

    /// Whether a loader of `cfg` from `start` over `dataset` can run in
    /// the dataset's cache (a remote dataset: the error says what limit
    /// it needs; always for a local one), without starting it: for
    /// loaders started later in a run, such as the kNN monitor's.
    pub fn check_cache(
        dataset: &Dataset,
        cfg: &LoaderConfig,
        start: Position,
    ) -> Result<(), LoaderError> {
        #[cfg(feature = "remote")]
        if let Some(remote) = dataset.remote() {
            let sampler = Sampler::new(dataset.len(), cfg.sampler.clone())?;
            plan::check_cache(dataset, remote, cfg, &sampler, start)?;
        }
        let _ = (dataset, cfg, start);
        Ok(())
    }

    pub fn sampler(&self) -> &Sampler {
        &self.shared.sampler
    }

    /// Position of the next batch `next_batch` returns: save it to resume.
    pub fn position(&self) -> Position {
        self.shared.sampler.advance(self.shared.start, self.next)
    }

    /// The next batch, waiting for it if the workers are behind.
    pub fn next_batch(&mut self) -> Result<Batch<'_>, LoaderError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let t = Instant::now();
        while !self.ready.remove(&self.next) {
            match self.events.recv() {
                Ok(Event::Ready(k)) => {
                    self.ready.insert(k);
                }
                Ok(Event::Failed(e)) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
                Err(_) => {
                    self.failed = Some(LoaderError::Stopped);
                    return Err(LoaderError::Stopped);
                }
            }
        }
        self.data_wait += t.elapsed();
        let k = self.next;
        self.next += 1;
        // The damaged records this batch's samples skipped: reported with
        // the batch, whatever the workers met further ahead.
        let slot = &self.shared.slots[(k % self.shared.slots.len() as u64) as usize];
        let mut damaged = match slot.damaged.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        self.damaged.append(&mut damaged);
        drop(damaged);
        Ok(Batch { loader: self, k })
    }

    /// What the remote source did so far (`None` for a local dataset).
    #[cfg(feature = "remote")]
    pub fn net_stats(&self) -> Option<crate::data::source::NetStats> {
        self.shared.dataset.remote().map(|r| r.stats())
    }

    /// Counters so far.
    pub fn stats(&self) -> LoaderStats {
        self.shared.stats.snapshot(self.data_wait, self.next)
    }

    /// How the workers read records ([`ReadPath::Auto`] resolved).
    pub fn read_path(&self) -> ReadPath {
        self.shared.cfg.read
    }

    /// The damaged records skipped in the batches delivered since the last
    /// call, each time met (a damaged record is met again every epoch).
    pub fn take_damaged(&mut self) -> Vec<DamagedRecord> {
        std::mem::take(&mut self.damaged)
    }

    /// Bytes of batch buffers held.
    pub fn buffer_bytes(&self) -> usize {
        self.shared.slots.iter().map(|s| s.bufs.bytes()).sum()
    }

    fn release(&mut self, k: u64) {
        let depth = self.shared.slots.len() as u64;
        let slot = &self.shared.slots[(k % depth) as usize];
        slot.done.store(0, Ordering::Relaxed);
        slot.assigned.store(k + depth, Ordering::Release);
        let _guard = self.shared.freed.0.lock();
        self.shared.freed.1.notify_all();
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.freed.0.lock();
            self.shared.freed.1.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A delivered batch, borrowed from the loader until dropped.
pub struct Batch<'a> {
    loader: &'a mut Loader,
    k: u64,
}

impl Batch<'_> {
    fn slot(&self) -> &Slot {
        let slots = &self.loader.shared.slots;
        &slots[(self.k % slots.len() as u64) as usize]
    }

    /// Where this batch is in the run.
    pub fn position(&self) -> Position {
        self.loader
            .shared
            .sampler
            .advance(self.loader.shared.start, self.k)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.slot().len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The loader's cumulative data-wait time, including the wait for this batch.
    pub fn data_wait(&self) -> Duration {
        self.loader.data_wait
    }

    /// Side of the square views.
    pub fn image_size(&self) -> u32 {
        self.loader.shared.cfg.augment.size
    }

    /// Shape of each view: `[N, 3, size, size]`.
    pub fn shape(&self) -> [usize; 4] {
        let s = self.image_size() as usize;
        [self.len(), 3, s, s]
    }

    fn sample_len(&self) -> usize {
        let s = self.image_size() as usize;
        3 * s * s
    }

    /// View `v` (0 or 1) as u8 NCHW, when the format is `U8` (in `Eval`
    /// mode view 1 is empty).
    pub fn view_u8(&self, v: usize) -> &[u8] {
        // SAFETY: every sample of this batch is done (completion counter
        // read with Acquire in `next_batch`'s event), and workers do not
        // touch the slot again until `release` reassigns it after this
        // borrow ends.
        let all = unsafe { self.slot().bufs.views_u8[v.min(1)].all() };
        &all[..(self.len() * self.sample_len()).min(all.len())]
    }

    /// View `v` (0 or 1) as normalised f32 NCHW, when the format is `F32`.
    pub fn view_f32(&self, v: usize) -> &[f32] {
        // SAFETY: as in `view_u8`.
        let all = unsafe { self.slot().bufs.views_f32[v.min(1)].all() };
        &all[..(self.len() * self.sample_len()).min(all.len())]
    }

    /// Labels of the samples (`shard::NO_LABEL` for unlabelled data).
    pub fn labels(&self) -> &[u32] {
        // SAFETY: as in `view_u8`.
        let all = unsafe { self.slot().bufs.labels.all() };
        &all[..self.len()]
    }

    /// Dataset indices of the records actually used (after replacements).
    pub fn records(&self) -> &[u64] {
        // SAFETY: as in `view_u8`.
        let all = unsafe { self.slot().bufs.records.all() };
        &all[..self.len()]
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let k = self.k;
        self.loader.release(k);
    }
}

#[cfg(test)]
mod tests;
