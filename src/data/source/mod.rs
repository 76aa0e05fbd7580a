//! Where a dataset's bytes come from: a local folder (the shards' memory
//! maps, [`crate::data::shard`]) or a prefix in an object store
//! (`s3://`, `gs://`, `az://`, `https://`) read through a bounded local
//! cache. Either way the loader asks a [`Dataset`] for a record's bytes
//! and gets the same bytes.
//!
//! A remote dataset is fetched in *pieces*: runs of consecutive records
//! (the sampler's block, 256 by default) inside one shard, each one ranged
//! request, written to the cache under a temporary name, checked against
//! the index's checksums and renamed into place. The loader's planner
//! (`data::loader::plan`) walks the sampler's order ahead of the workers,
//! fetches what they will need within a byte horizon, and evicts the
//! cached piece needed furthest ahead when the cache is full.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "remote")]
mod cache;
#[cfg(feature = "remote")]
mod remote;
#[cfg(feature = "remote")]
mod store;

#[cfg(feature = "remote")]
pub use remote::{NetStats, Pins, Remote, STALLED};

/// A remote dataset's URL (a build without the `remote` feature never
/// makes one).
#[cfg(feature = "remote")]
pub type Url = url::Url;
#[cfg(not(feature = "remote"))]
pub type Url = String;

use crate::data::shard::{Dataset, ShardError};

/// A dataset's location as a user gives it: a folder, or a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote(Url),
}

impl Location {
    /// `s3://`, `gs://`, `az://`, `http(s)://` and the like are remote;
    /// anything else is a local path.
    pub fn parse(text: &str) -> Result<Location, RemoteError> {
        match text.split_once("://") {
            Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Self::parse_url(text)
            }
            _ => Ok(Location::Local(PathBuf::from(text))),
        }
    }

    #[cfg(feature = "remote")]
    fn parse_url(text: &str) -> Result<Location, RemoteError> {
        let url = url::Url::parse(text).map_err(|e| RemoteError::Url {
            url: text.to_string(),
            reason: e.to_string(),
        })?;
        match url.scheme() {
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "http" | "https" => {
                Ok(Location::Remote(url))
            }
            other => Err(RemoteError::Url {
                url: text.to_string(),
                reason: format!(
                    "unknown scheme {other:?} (s3://, gs://, az://, http:// and https:// are read)"
                ),
            }),
        }
    }

    #[cfg(not(feature = "remote"))]
    fn parse_url(text: &str) -> Result<Location, RemoteError> {
        Err(no_remote(text))
    }

    /// A location from a command-line path (a URL survives as a path).
    pub fn from_path(path: &Path) -> Result<Location, RemoteError> {
        Self::parse(&path.to_string_lossy())
    }

    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Remote(u) => write!(f, "{}", u.as_str().trim_end_matches('/')),
        }
    }
}

/// How a remote dataset is read: the cache and the network policy.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The cache folder; each dataset gets a folder of its own inside.
    pub cache_dir: PathBuf,
    /// Bytes the cached pieces may take; `None`: the dataset's size, or
    /// four fifths of the free disk space if that is less.
    pub cache_limit: Option<u64>,
    /// How long a request is retried before the run stops.
    pub deadline: Duration,
    /// Bytes of fetches in flight ahead of the workers.
    pub horizon: u64,
    /// Records per piece (the sampler's block).
    pub piece_records: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            cache_dir: default_cache_dir(),
            cache_limit: None,
            deadline: Duration::from_secs(300),
            horizon: 256 << 20,
            piece_records: 256,
        }
    }
}

/// A `--net-deadline` in seconds as a duration (negative: none; too
/// large for a duration: for ever).
pub fn deadline_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// `$XDG_CACHE_HOME/barlow`, else `~/.cache/barlow`, else a folder under
/// the system's temporary folder.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("barlow")
}

/// Opens the dataset at `location`: a local folder directly, a remote
/// prefix through the cache `opts` describe.
pub fn open(location: &Location, opts: &RemoteOptions) -> Result<Dataset, ShardError> {
    match location {
        Location::Local(dir) => {
            let _ = opts;
            Dataset::open(dir)
        }
        #[cfg(feature = "remote")]
        Location::Remote(_) => remote::open(location, opts),
        #[cfg(not(feature = "remote"))]
        Location::Remote(url) => Err(no_remote(url).into()),
    }
}

/// Copies the dataset folder `dir` to the remote prefix `location`: every
/// shard the manifest lists and `rejects.tsv` if present, then the
/// manifest last, so that a reader never sees a manifest whose shards are
/// missing. Returns the objects and bytes sent.
pub fn upload(
    dir: &Path,
    location: &Location,
    opts: &RemoteOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<(usize, u64), ShardError> {
    #[cfg(feature = "remote")]
    return remote::upload(dir, location, opts, progress);
    #[cfg(not(feature = "remote"))]
    {
        let _ = (dir, opts, progress);
        Err(no_remote(&location.to_string()).into())
    }
}

#[cfg(not(feature = "remote"))]
fn no_remote(url: &str) -> RemoteError {
    RemoteError::Url {
        url: url.to_string(),
        reason: "this build of barlow has no object-store support (the `remote` feature)".into(),
    }
}

/// Everything that can go wrong reading a remote dataset; each names the
/// object (or cache file) at fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("{url}: {reason}")]
    Url { url: String, reason: String },
    #[error("{object}: not found (404)")]
    NotFound { object: String },
    #[error("{object}: access denied (403/401): {detail}")]
    Forbidden { object: String, detail: String },
    #[error(
        "{object}: the object changed while this run read it ({detail}); \
         a dataset must not be rewritten under a run"
    )]
    Changed { object: String, detail: String },
    #[error("{object}: the bytes asked for lie past its end (416 Range Not Satisfiable)")]
    PastEnd { object: String },
    #[error(
        "{object}: the store did not answer for {waited:.0?} ({attempts} attempts; last: {last}); \
         gave up after --net-deadline"
    )]
    Deadline {
        object: String,
        waited: Duration,
        attempts: u32,
        last: String,
    },
    #[error("{object}: the store refused the request: {detail}")]
    Refused { object: String, detail: String },
    #[error("{path}: {detail}")]
    Local { path: PathBuf, detail: String },
    #[error("the loader stopped while waiting for the network")]
    Stopped,
    #[error(
        "--cache-limit {limit} bytes is below the {needed} bytes this run needs cached at once \
         ({why}); give --cache-limit {needed} or more"
    )]
    CacheTooSmall {
        limit: u64,
        needed: u64,
        why: String,
    },
}

#[cfg(all(test, feature = "remote"))]
mod tests;
