//! The run folder: what a training run writes and what evaluation, the
//! report and a resumed run read back.
//!
//! - `log.jsonl`: one [`StepLog`] at step 0, every `log_every` steps and at
//!   the last step (the loss history); `knn.jsonl`: one [`KnnLog`] per kNN
//!   monitor pass; `damaged.jsonl`: one [`DamagedLog`] per damaged record
//!   the loader skipped; `rewinds.jsonl`: one [`RewindLog`] per rewind past
//!   a non-finite loss.
//! - `checkpoints/step-<n>/`: everything a run needs to continue exactly
//!   ([`checkpoint`]), its [`TrainConfig`] included.
//! - `backbone.bin` (the backbone alone, at the end) and `loss.png`.
//!
//! [`RunFolder`] is the trainer's writer of all of them. Nothing here
//! trains: the trainer ([`crate::train`]), evaluation ([`crate::eval`]) and
//! the report ([`crate::report`]) all build on this module.

pub mod checkpoint;
mod config;
mod folder;
mod log;

use std::path::PathBuf;

pub use checkpoint::{CheckpointError, CheckpointState};
pub use config::{TrainConfig, differences, trajectory_json};
pub use folder::{Finished, RunFolder, loss_chart};
pub use log::{DamagedLog, KnnLog, NetLog, PeerTraffic, RewindLog, StepLog};

use crate::error::IoError;

/// Why the run folder cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A config file, a log line or the loss chart that cannot be read or
    /// written: the file and why.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}
