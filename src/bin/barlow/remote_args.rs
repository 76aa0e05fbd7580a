//! The flags every command takes for datasets in object stores, and
//! opening a dataset at a folder or a URL with them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use barlow::data::shard::Dataset;
use barlow::data::source::{self, Location, RemoteOptions};

/// Datasets in object stores: `--data s3://bucket/prefix` (or gs://,
/// az://, https://) is read through a local cache.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Datasets in object stores")]
pub struct RemoteArgs {
    /// Cache folder for datasets in object stores; each dataset gets a
    /// folder inside [default: $XDG_CACHE_HOME/barlow, or ~/.cache/barlow].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Bytes a remote dataset's cache may hold (K, M, G suffixes), at least
    /// what the sampler's window needs (a smaller limit is refused with
    /// the smallest that works) [default: the dataset's size, or four
    /// fifths of the free disk if less].
    #[arg(long, value_name = "BYTES", value_parser = barlow::parse_size)]
    pub cache_limit: Option<u64>,
    /// Seconds a failing request to the store is retried (with backoff)
    /// before the run stops with an error naming the object.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub net_deadline: f64,
    /// Bytes of fetches kept in flight ahead of the loader's workers.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = barlow::parse_size)]
    pub fetch_horizon: u64,
}

static OPTIONS: OnceLock<RemoteOptions> = OnceLock::new();

impl RemoteArgs {
    /// Makes these the options every later [`open`] uses.
    pub fn install(&self) {
        let mut opts = RemoteOptions {
            cache_limit: self.cache_limit,
            deadline: source::deadline_secs(self.net_deadline),
            horizon: self.fetch_horizon,
            ..RemoteOptions::default()
        };
        if let Some(dir) = &self.cache_dir {
            opts.cache_dir = dir.clone();
        }
        let _ = OPTIONS.set(opts);
    }
}

/// Opens the dataset at `path`: a folder, or a URL read through the cache
/// (pieces of `piece_records` records: the sampler's block).
pub fn open_with(path: &Path, piece_records: usize) -> Result<Arc<Dataset>, String> {
    let location = Location::from_path(path).map_err(|e| e.to_string())?;
    let mut opts = OPTIONS.get().cloned().unwrap_or_default();
    opts.piece_records = piece_records;
    source::open(&location, &opts)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// [`open_with`] the default piece of 256 records.
pub fn open(path: &Path) -> Result<Arc<Dataset>, String> {
    open_with(path, barlow::data::sampler::SamplerConfig::default().block)
}

/// One line on how a remote dataset is read (nothing for a folder).
pub fn describe(ds: &Dataset) -> Option<String> {
    #[cfg(feature = "remote")]
    if let Some(r) = ds.remote() {
        return Some(format!(
            "remote dataset {}: cache {} (limit {:.1} MiB), fetching up to {:.0} MiB ahead",
            ds.dir().display(),
            r.cache_dir().display(),
            r.cache_limit() as f64 / (1 << 20) as f64,
            r.horizon() as f64 / (1 << 20) as f64,
        ));
    }
    let _ = ds;
    None
}
