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
        });
        for (name, ms) in self.stats.ms_per_image() {
            obj[format!("{}_ms_per_image", name.replace('+', "_"))] = ms.into();
        }
        obj
    }
}

/// Runs the loader over `dataset` with `cfg`, takes `warmup` batches, then
/// times `batches` more.
pub fn bench(
    dataset: Arc<Dataset>,
    cfg: &LoaderConfig,
    warmup: usize,
    batches: usize,
) -> Result<BenchReport, LoaderError> {
    let rss_anon_before = rss_anon();
    let mut loader = Loader::new(dataset, cfg.clone(), Position::default())?;
    for _ in 0..warmup {
        loader.next_batch()?;
    }
    let s0 = loader.stats();
    let t0 = Instant::now();
    let mut images = 0usize;
    for _ in 0..batches {
        images += loader.next_batch()?.len();
    }
    let seconds = t0.elapsed().as_secs_f64();
    let stats = loader.stats().since(&s0);
    Ok(BenchReport {
        mode: cfg.mode,
        threads: cfg.threads,
        batch_size: cfg.sampler.batch_size,
        image_size: cfg.augment.size,
        images,
        seconds,
        stats,
        buffer_bytes: loader.buffer_bytes(),
        rss_anon_before,
        rss_anon_after: rss_anon(),
    })
}

/// Resident anonymous memory of this process in bytes (Linux), if known.
pub fn rss_anon() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
