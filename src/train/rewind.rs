//! Rewinding past a non-finite loss (`--on-nonfinite rewind`): back to the
//! newest checkpoint (or the run's start), the batches from there through
//! the bad step and a window after it skipped, at most `max_rewinds` times
//! an invocation, each rewind logged in `rewinds.jsonl`. Deterministic: a
//! rerun meets the same bad step and rewinds the same way.

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::lead::{Loop, Trainee};
use super::replica::initial_model;
use super::{RunOptions, TrainError};
use crate::data::sampler::Position;
use crate::model::BarlowTwins;
use crate::peers::PeerReduce;
use crate::run::{RewindLog, checkpoint};

/// What a non-finite loss does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnNonFinite {
    /// Stop, naming the step.
    #[default]
    Stop,
    /// Go back to the newest checkpoint and skip the batches that led to
    /// the bad step.
    Rewind,
}

impl crate::Choice for OnNonFinite {
    const NAMES: &'static [(Self, &'static str)] =
        &[(OnNonFinite::Stop, "stop"), (OnNonFinite::Rewind, "rewind")];
}

impl<B: AutodiffBackend + PeerReduce> Loop<'_, B> {
    /// The loss was `loss` at step `bad`: reloads this run's newest
    /// checkpoint (or its starting network), moves the loader past the
    /// batch of step `bad` and `run.rewind_skip` more, cuts the logs back
    /// and returns the replica and the step to go on from. The steps from
    /// the checkpoint on take the batches after the skipped ones.
    pub(super) fn rewind(
        &mut self,
        device: &B::Device,
        loss: f32,
        bad: u64,
    ) -> Result<(Trainee<B>, u64), TrainError> {
        let (cfg, run) = (self.cfg, self.run);
        if self.parts.rewinds.len() >= run.max_rewinds as usize {
            return Err(TrainError::TooManyRewinds {
                loss,
                step: bad,
                rewinds: run.max_rewinds,
            });
        }
        self.parts.rewinds.push(bad);
        // Back to this run's newest checkpoint, or its start.
        let (replica, step, position) = match self.parts.folder.last_checkpoint() {
            Some(dir) => {
                let state = checkpoint::load_state(dir)?;
                let model = BarlowTwins::<B>::new(&cfg.backbone(), &cfg.projector, device);
                let model = checkpoint::load_model(dir, model, device)?;
                let optim = checkpoint::load_optim(dir, cfg.optimizer::<B>(), device)?;
                ((model, optim), state.step, state.position)
            }
            None => {
                let model = initial_model(cfg, run.init_from.as_deref(), device)?;
                ((model, cfg.optimizer::<B>()), 0, Position::default())
            }
        };
        // The bad step's batch, counted from where this stretch of steps
        // began (the run's start or the last rewind), then the window.
        let (from_step, from) = self.origin;
        let bad_batch = self.batches.after_n(from, bad.saturating_sub(from_step));
        let resumes_at = self.batches.after_n(bad_batch, 1 + run.rewind_skip);
        let skipped = self
            .batches
            .index(resumes_at)
            .saturating_sub(self.batches.index(position));
        self.origin = (step, resumes_at);
        self.batches.restart(step, resumes_at)?;
        self.parts.pending.discard();
        self.parts.damaged.clear();
        self.parts.monitor.logs.retain(|k| k.step <= step);
        let entry = RewindLog {
            step: bad,
            loss: loss.to_string(),
            rewind: self.parts.rewinds.len() as u32,
            back_to_step: step,
            skipped_batches: skipped,
            resumes_at,
        };
        self.parts.folder.rewind(&entry)?;
        Ok((replica, step))
    }
}

/// Testing aid: the loss of a batch in `run.poison_batches` made NaN; else
/// `loss` as it is.
pub(super) fn poisoned<B: Backend>(
    run: &RunOptions,
    pos: Position,
    loss: Tensor<B, 1>,
) -> Tensor<B, 1> {
    #[cfg(test)]
    if run.poison_batches.contains(&pos) {
        return loss.mul_scalar(f32::NAN);
    }
    #[cfg(not(test))]
    let _ = (run, pos);
    loss
}
