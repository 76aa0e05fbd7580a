//! The one I/O error shape of the library: what failed, and on which path.
//! Every module's error type wraps it (`#[error(transparent)] Io(#[from]
//! IoError)`), so a message always names the file.

use std::path::{Path, PathBuf};

/// An I/O failure on `path`.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct IoError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// A `map_err` adapter: `fs::read(p).map_err(IoError::at(p))?`.
    pub fn at(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
        move |source| IoError {
            path: path.to_path_buf(),
            source,
        }
    }
}
