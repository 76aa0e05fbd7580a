//! What a run writes as it goes: `log.jsonl` (one [`StepLog`] every
//! `log_every` steps) and `knn.jsonl` (one [`KnnLog`] per monitor pass),
//! and reading them back.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RunError;
use crate::error::IoError;

/// One logged step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub epoch: u64,
    pub step: u64,
    pub lr_weights: f64,
    pub lr_biases: f64,
    pub loss: f32,
    pub images_per_sec: f64,
    /// Share of the time since the last log spent getting batches: waiting
    /// for the loader, then uploading (and normalising) the views.
    pub data_wait: f64,
    /// With several data-parallel peers: what their all-reduces cost per
    /// step, over the steps since the previous line. Absent on one device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<PeerTraffic>,
    /// Damaged records the loader skipped since the previous line (each
    /// listed in `damaged.jsonl`). Absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub damaged_records: u64,
    /// A remote dataset: what the network did since the previous line.
    /// Absent for a local dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetLog>,
}

/// A remote dataset's network activity over a stretch of steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NetLog {
    /// Loader worker time spent waiting for pieces to arrive, in seconds
    /// (summed over workers; the trainer waits only if the batch was late,
    /// which `data_wait` counts).
    pub wait_s: f64,
    /// Bytes received, requests sent and requests retried.
    pub bytes: u64,
    pub requests: u64,
    pub retries: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One rewind past a non-finite loss, as `rewinds.jsonl` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RewindLog {
    /// The step whose loss was not finite, and that loss (`NaN`, `inf`).
    pub step: u64,
    pub loss: String,
    /// The run's how-many-th rewind in this invocation, from 1.
    pub rewind: u32,
    /// The step of the checkpoint the run went back to (0: its start).
    pub back_to_step: u64,
    /// Batches skipped: those of the steps from `back_to_step` through
    /// `step`, and the window after them.
    pub skipped_batches: u64,
    /// Where the loader went on from.
    pub resumes_at: crate::data::sampler::Position,
}

/// One damaged record skipped, as `damaged.jsonl` lists it: the log line's
/// step it was reported with, the dataset record, its shard, its number in
/// the shard and its offset there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DamagedLog {
    pub step: u64,
    #[serde(flatten)]
    pub record: crate::data::loader::DamagedRecord,
}

/// The all-reduce traffic of one data-parallel peer per training step
/// (every peer's counts are the same; peer 0's are logged). See
/// [`crate::peers::Traffic`] for what each field counts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct PeerTraffic {
    /// Collective calls: the BatchNorms' and the loss's sums, forward and
    /// backward, and the one of the gradients.
    pub collectives: u64,
    /// Values summed (each an f64 on the host).
    pub values: u64,
    /// Bytes this peer sent into the sums: `values * 8`.
    pub sent_bytes: u64,
    /// Times the host waited for the device: a tensor read back to sum
    /// it, and the stop vote read back after the gradients' sum.
    pub round_trips: u64,
    /// Seconds from asking for each tensor to having its sum uploaded:
    /// reading back, waiting for the other peers, summing, uploading. On a
    /// device that queues work (a GPU) the read-back also waits for the
    /// device to compute the tensor.
    pub seconds: f64,
}

/// One kNN monitor pass (after `epoch` epochs, i.e. `step` steps).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KnnLog {
    pub epoch: u64,
    pub step: u64,
    pub top1: f64,
    pub top5: f64,
}

/// The run's JSONL logs.
pub(crate) struct RunLog {
    steps: PathBuf,
    knn: PathBuf,
    damaged: PathBuf,
    rewinds: PathBuf,
}

impl RunLog {
    pub(crate) fn new(out: &Path) -> RunLog {
        RunLog {
            steps: out.join("log.jsonl"),
            knn: out.join("knn.jsonl"),
            damaged: out.join("damaged.jsonl"),
            rewinds: out.join("rewinds.jsonl"),
        }
    }

    /// A fresh run: the logs emptied.
    pub(crate) fn start(&self) -> Result<(), RunError> {
        for p in [&self.steps, &self.knn, &self.damaged, &self.rewinds] {
            std::fs::write(p, b"").map_err(IoError::at(p))?;
        }
        Ok(())
    }

    /// A run resumed at `step`: lines of later steps are cut, so no step is
    /// logged twice (a kNN pass at `step` itself was written with the
    /// checkpoint and is kept).
    pub(crate) fn resume_at(&self, step: u64) -> Result<(), RunError> {
        // A rewind back to before `step` is in the checkpoint's past (its
        // position holds the skip); one back to `step` or later will happen
        // again.
        cut_log_by(&self.rewinds, "back_to_step", step)?;
        self.rewind_to(step)
    }

    /// A run sent back to `step` by a non-finite loss: [`RunLog::resume_at`]
    /// but for the list of rewinds, which keeps every one.
    pub(crate) fn rewind_to(&self, step: u64) -> Result<(), RunError> {
        cut_log(&self.steps, step)?;
        cut_log(&self.damaged, step)?;
        cut_log(&self.knn, step + 1)
    }

    /// `(step, loss)` of every step logged so far.
    pub(crate) fn losses(&self) -> Result<Vec<(u64, f32)>, RunError> {
        let text = match std::fs::read_to_string(&self.steps) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(IoError::at(&self.steps)(e).into()),
        };
        text.lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str::<StepLog>(line)
                    .map(|l| (l.step, l.loss))
                    .map_err(|e| RunError::Format {
                        path: self.steps.clone(),
                        message: format!("line {}: {e}", i + 1),
                    })
            })
            .collect()
    }

    pub(crate) fn step(&self, entry: &StepLog) -> Result<(), RunError> {
        append(&self.steps, entry)
    }

    pub(crate) fn knn(&self, entry: &KnnLog) -> Result<(), RunError> {
        append(&self.knn, entry)
    }

    pub(crate) fn damaged(&self, entry: &DamagedLog) -> Result<(), RunError> {
        append(&self.damaged, entry)
    }

    pub(crate) fn rewind(&self, entry: &RewindLog) -> Result<(), RunError> {
        append(&self.rewinds, entry)
    }
}

/// Keeps the lines of a JSONL log whose `step` is below `step`.
fn cut_log(path: &Path, step: u64) -> Result<(), RunError> {
    cut_log_by(path, "step", step)
}

/// Keeps the lines of a JSONL log whose `field` is below `below`.
fn cut_log_by(path: &Path, field: &str, below: u64) -> Result<(), RunError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IoError::at(path)(e).into()),
    };
    let value = |line: &str| -> Result<u64, String> {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        v.get(field)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("no `{field}`"))
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = String::new();
    for (i, line) in lines.iter().enumerate() {
        match value(line) {
            Ok(v) if v < below => {
                kept.push_str(line);
                kept.push('\n');
            }
            Ok(_) => {}
            // A kill during an append can leave the last line cut short.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(RunError::Format {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", i + 1),
                });
            }
        }
    }
    Ok(crate::fs::write_atomically(path, kept.as_bytes())?)
}

fn append(path: &Path, value: &impl Serialize) -> Result<(), RunError> {
    let line = serde_json::to_string(value).map_err(|e| RunError::Format {
        path: path.to_path_buf(),
        message: format!("cannot serialise a log line: {e}"),
    })?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(IoError::at(path))?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(IoError::at(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutting_keeps_earlier_steps_drops_a_torn_last_line_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        std::fs::write(&p, "{\"step\":0}\n{\"step\":5}\n{\"step\":9}\n{\"ste").unwrap();
        cut_log(&p, 6).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"step\":0}\n{\"step\":5}\n"
        );
        std::fs::write(&p, "{\"step\":0}\ngarbage\n{\"step\":5}\n").unwrap();
        let err = cut_log(&p, 6).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
