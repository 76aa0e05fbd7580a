//! The loader benchmark behind `barlow bench-loader`: images/s of one mode
//! over a number of batches after a warm-up, where the thread time goes,
//! and the memory held. Measures only; the binary prints.

use std::sync::Arc;
use std::time::Instant;

use super::{Loader, LoaderConfig, LoaderError, LoaderStats, Mode};
use crate::Choice;
use crate::data::sampler::Position;
use crate::data::shard::Dataset;

/// What one timed run of the loader measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub mode: Mode,
    /// How the workers read records ([`super::ReadPath::Auto`] resolved).
    pub read: super::ReadPath,
    pub threads: usize,
    pub batch_size: usize,
    pub image_size: u32,
    /// Source images delivered in the timed batches.
    pub images: usize,
    pub seconds: f64,
    /// Counters of the timed batches alone.
    pub stats: LoaderStats,
    /// Bytes of batch buffers the loader held.
    pub buffer_bytes: usize,
    /// Resident anonymous memory of the process before the loader started
    /// and after the timed batches (Linux; `None` elsewhere).
    pub rss_anon_before: Option<u64>,
    pub rss_anon_after: Option<u64>,
    /// Major page faults of the process and bytes it read from storage
    /// over the timed batches (Linux; `None` elsewhere).
    pub major_faults: Option<u64>,
    pub read_bytes: Option<u64>,
    /// With [`Bench::checksum`]: the CRC-32 of every batch delivered,
    /// warm-up included (views, labels, records): equal for equal batches.
    pub batches_crc32: Option<u32>,
    /// A remote dataset: what the network and the cache did over the whole
    /// run, warm-up included.
    #[cfg(feature = "remote")]
    pub net: Option<crate::data::source::NetStats>,
}

/// What [`bench`] runs.
#[derive(Debug, Clone, Copy)]
pub struct Bench {
    /// Batches taken before timing starts.
    pub warmup: usize,
    /// Batches timed.
    pub batches: usize,
    /// Checksum every batch ([`BenchReport::batches_crc32`]).
    pub checksum: bool,
}

impl BenchReport {
    /// Source images per second (each yields two views).
    pub fn images_per_sec(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-12)
    }

    /// The report as one JSON object (`images_per_sec`, `mode`, `threads`,
    /// ..., and `<stage>_ms_per_image` for each stage).
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::json!({
            "images_per_sec": self.images_per_sec(),
            "mode": self.mode.name(),
            "read": self.read.name(),
            "threads": self.threads,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "images": self.images,
            "seconds": self.seconds,
            "data_wait_sec": self.stats.data_wait.as_secs_f64(),
            "decode_failures": self.stats.decode_failures,
            "damaged_records": self.stats.damaged_records,
            "buffer_bytes": self.buffer_bytes,
            "rss_anon_bytes": self.rss_anon_after,
            "major_faults": self.major_faults,
            "read_bytes": self.read_bytes,
            "batches_crc32": self.batches_crc32,
            "network_wait_sec": self.stats.network_wait.as_secs_f64(),
        });
        #[cfg(feature = "remote")]
        if let Some(net) = &self.net {
            obj["net"] = serde_json::json!(net);
        }
        for (name, ms) in self.stats.ms_per_image() {
            obj[format!("{}_ms_per_image", name.replace('+', "_"))] = ms.into();
        }
        obj
    }
}

/// Runs the loader over `dataset` with `cfg`, takes `run.warmup` batches,
/// then times `run.batches` more.
pub fn bench(
    dataset: Arc<Dataset>,
    cfg: &LoaderConfig,
    run: Bench,
) -> Result<BenchReport, LoaderError> {
    let rss_anon_before = rss_anon();
    let mut loader = Loader::new(dataset, cfg.clone(), Position::default())?;
    let mut crc = run.checksum.then(crc32fast::Hasher::new);
    let mut take = |loader: &mut Loader| -> Result<usize, LoaderError> {
        let b = loader.next_batch()?;
        if let Some(h) = crc.as_mut() {
            for v in 0..cfg.mode.views() {
                match cfg.format {
                    super::PixelFormat::U8 => h.update(b.view_u8(v)),
                    super::PixelFormat::F32 => b
                        .view_f32(v)
                        .iter()
                        .for_each(|x| h.update(&x.to_le_bytes())),
                }
            }
            b.labels().iter().for_each(|l| h.update(&l.to_le_bytes()));
            b.records().iter().for_each(|r| h.update(&r.to_le_bytes()));
        }
        Ok(b.len())
    };
    for _ in 0..run.warmup {
        take(&mut loader)?;
    }
    let s0 = loader.stats();
    let (faults0, read0) = (major_faults(), read_bytes());
    let t0 = Instant::now();
    let mut images = 0usize;
    for _ in 0..run.batches {
        images += take(&mut loader)?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let stats = loader.stats().since(&s0);
    let since = |now: Option<u64>, then: Option<u64>| Some(now?.saturating_sub(then?));
    let major_faults = since(major_faults(), faults0);
    let read_bytes = since(read_bytes(), read0);
    Ok(BenchReport {
        mode: cfg.mode,
        read: loader.read_path(),
        threads: cfg.threads,
        batch_size: cfg.sampler.batch_size,
        image_size: cfg.augment.size,
        images,
        seconds,
        stats,
        buffer_bytes: loader.buffer_bytes(),
        rss_anon_before,
        rss_anon_after: rss_anon(),
        major_faults,
        read_bytes,
        batches_crc32: crc.map(crc32fast::Hasher::finalize),
        #[cfg(feature = "remote")]
        net: loader.net_stats(),
    })
}

/// Major page faults of this process so far (Linux), if known.
pub fn major_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    // majflt is field 12 of the whole line, the 10th after the name.
    rest.split_whitespace().nth(9)?.parse().ok()
}

/// Bytes this process caused to be read from storage so far (Linux), if
/// known.
pub fn read_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let line = io.lines().find(|l| l.starts_with("read_bytes:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident anonymous memory of this process in bytes (Linux), if known.
pub fn rss_anon() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
