//! [`RunFolder`]: the trainer's writer of the run folder.

use std::path::{Path, PathBuf};

use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;

use super::log::RunLog;
use super::{CheckpointState, DamagedLog, KnnLog, RewindLog, RunError, StepLog, checkpoint};
use crate::chart::{self, Chart, DARK, LIGHT, Series};
use crate::data::loader::DamagedRecord;
use crate::error::IoError;
use crate::model::BarlowTwins;

/// A run folder as one run writes it: its logs, its checkpoints (every
/// epoch, every `checkpoint_every` steps, when stopped and at the end;
/// the newest `keep` kept) and, when the run ends, `backbone.bin` and
/// `loss.png`. Only process 0 of a multi-process run writes (`writes`);
/// the others keep the loss history and name where process 0 wrote.
pub struct RunFolder {
    out: PathBuf,
    writes: bool,
    log: RunLog,
    checkpoint_every: Option<u64>,
    keep: usize,
    last_checkpoint: Option<PathBuf>,
    /// `(step, loss)` of every logged step, a resumed run's earlier ones
    /// included.
    losses: Vec<(u64, f32)>,
}

/// What [`RunFolder::finish`] leaves.
pub struct Finished {
    /// The newest checkpoint.
    pub checkpoint: PathBuf,
    pub backbone: PathBuf,
    /// `(step, loss)` of every logged step.
    pub losses: Vec<(u64, f32)>,
}

impl RunFolder {
    /// Opens `out` for a run starting fresh (`resumed` is `None`: a writing
    /// process empties both logs) or from `resumed` (a writing process cuts
    /// the lines of later steps, so no step is logged twice, and reads back
    /// the loss history).
    pub fn open(
        out: &Path,
        writes: bool,
        resumed: Option<&CheckpointState>,
        checkpoint_every: Option<u64>,
        keep: usize,
    ) -> Result<RunFolder, RunError> {
        if writes {
            std::fs::create_dir_all(out).map_err(IoError::at(out))?;
        }
        let log = RunLog::new(out);
        let losses = match resumed {
            Some(state) if writes => {
                log.resume_at(state.step)?;
                log.losses()?
            }
            Some(_) => Vec::new(),
            None => {
                if writes {
                    log.start()?;
                }
                Vec::new()
            }
        };
        // A resumed run's newest checkpoint is the one it resumed from.
        let last_checkpoint = match resumed {
            Some(_) => Some(checkpoint::resolve(out)?),
            None => None,
        };
        Ok(RunFolder {
            out: out.to_path_buf(),
            writes,
            log,
            checkpoint_every,
            keep,
            last_checkpoint,
            losses,
        })
    }

    /// This run's newest checkpoint: the last it wrote, or the one it
    /// resumed from (never one an earlier run left in the folder).
    pub fn last_checkpoint(&self) -> Option<&Path> {
        self.last_checkpoint.as_deref()
    }

    /// Whether this process writes the folder.
    pub fn writes(&self) -> bool {
        self.writes
    }

    /// Logs a step.
    pub fn step(&mut self, entry: &StepLog) -> Result<(), RunError> {
        self.losses.push((entry.step, entry.loss));
        if self.writes {
            self.log.step(entry)?;
        }
        Ok(())
    }

    /// Lists the damaged records skipped, reported with step `step`.
    pub fn damaged(&self, step: u64, records: Vec<DamagedRecord>) -> Result<(), RunError> {
        if self.writes {
            for record in records {
                self.log.damaged(&DamagedLog { step, record })?;
            }
        }
        Ok(())
    }

    /// The run goes back to `entry.back_to_step` (a checkpoint's, or 0)
    /// after a non-finite loss: the logs are cut back to it, as when
    /// resuming, and the rewind is listed.
    pub fn rewind(&mut self, entry: &RewindLog) -> Result<(), RunError> {
        let step = entry.back_to_step;
        self.losses.retain(|l| l.0 < step);
        if self.writes {
            self.log.rewind_to(step)?;
            self.log.rewind(entry)?;
        }
        Ok(())
    }

    /// Logs a kNN monitor pass.
    pub fn knn(&self, entry: &KnnLog) -> Result<(), RunError> {
        if self.writes {
            self.log.knn(entry)?;
        }
        Ok(())
    }

    /// Whether a checkpoint is due after step `step` (0-based): at an
    /// epoch's end, every `checkpoint_every` steps, when the run stops
    /// early and after its last step.
    pub fn checkpoint_due(&self, step: u64, epoch_done: bool, stop: bool, last: bool) -> bool {
        let every = self
            .checkpoint_every
            .is_some_and(|n| (step + 1).is_multiple_of(n.max(1)));
        self.writes && (epoch_done || every || stop || last)
    }

    /// Writes a checkpoint and prunes the older ones.
    pub fn checkpoint<B, O>(
        &mut self,
        state: &CheckpointState,
        model: &BarlowTwins<B>,
        optim: &O,
    ) -> Result<(), RunError>
    where
        B: AutodiffBackend,
        O: Optimizer<BarlowTwins<B>, B>,
    {
        self.last_checkpoint = Some(checkpoint::save(&self.out, state, model, optim)?);
        checkpoint::prune(&self.out, self.keep)?;
        Ok(())
    }

    /// The run's end: the backbone alone and the loss chart; hands over
    /// the loss history. A run that
    /// took no step has written no checkpoint: a resumed run that was
    /// already done names its latest; a fresh one (`max_steps = 0`) saves
    /// `initial`, its starting network.
    pub fn finish<B, O>(
        &mut self,
        model: &BarlowTwins<B>,
        optim: &O,
        initial: &CheckpointState,
        resumed: bool,
    ) -> Result<Finished, RunError>
    where
        B: AutodiffBackend,
        O: Optimizer<BarlowTwins<B>, B>,
    {
        let out = self.out.as_path();
        let losses = std::mem::take(&mut self.losses);
        if !self.writes {
            return Ok(Finished {
                checkpoint: self
                    .last_checkpoint
                    .take()
                    .unwrap_or_else(|| out.join(checkpoint::CHECKPOINTS)),
                backbone: out.join("backbone.bin"),
                losses,
            });
        }
        let checkpoint = match self.last_checkpoint.take() {
            Some(c) => c,
            None if resumed => checkpoint::resolve(out)?,
            None => checkpoint::save(out, initial, model, optim)?,
        };
        let backbone = checkpoint::save_backbone(&out.join("backbone"), model)?;
        let png = out.join("loss.png");
        chart::png(&loss_chart(&losses), &png, chart::WIDTH, chart::HEIGHT).map_err(|message| {
            RunError::Format {
                path: png.clone(),
                message,
            }
        })?;
        Ok(Finished {
            checkpoint,
            backbone,
            losses,
        })
    }
}

/// The loss chart: every logged loss and its moving average.
pub fn loss_chart(losses: &[(u64, f32)]) -> Chart {
    let raw: Vec<(f64, f64)> = losses
        .iter()
        .map(|&(s, l)| (s as f64, f64::from(l)))
        .collect();
    let window = (raw.len() / 10).max(1);
    let smooth: Vec<(f64, f64)> = raw
        .windows(window)
        .map(|w| {
            (
                w[w.len() - 1].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect();
    Chart {
        title: "Barlow Twins loss".into(),
        x_label: "training step".into(),
        y_label: "loss".into(),
        series: vec![
            Series {
                name: "logged loss".into(),
                points: raw,
                color: LIGHT,
                width: 1,
            },
            Series {
                name: format!("moving average ({window} logs)"),
                points: smooth,
                color: DARK,
                width: 2,
            },
        ],
    }
}
