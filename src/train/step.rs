//! One Barlow Twins step, as the paper's loop writes it: two augmented
//! views -> backbone -> projector -> loss (each view's embeddings
//! batch-normalised, their cross-correlation pushed towards the identity)
//! -> backward -> LARS. `docs/method.md` gives the maths.
//!
//! The step only queues work on the device: its loss comes back as a
//! device tensor, which the loop reads with others at its log points
//! ([`PendingLosses`]), so the host never waits for a step to finish and
//! can prepare the next batch meanwhile.

use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::TrainError;
use crate::loss::barlow_twins_loss_with;
use crate::model::{BarlowTwins, Norm, Precision};
use crate::peers::{Peer, PeerError, PeerReduce, combine_gradients};

/// Runs one step on the views `y1` and `y2` (normalised, `[N, 3, H, W]`)
/// and returns the updated model and the step's loss, still on the device
/// (`[1]`, detached). `lr_weights` is the weights' rate; the optimiser
/// scales the biases' rate from it.
pub fn barlow_twins_step<B, O>(
    model: BarlowTwins<B>,
    optim: &mut O,
    y1: Tensor<B, 4>,
    y2: Tensor<B, 4>,
    lambda: f32,
    lr_weights: f64,
) -> (BarlowTwins<B>, Tensor<B::InnerBackend, 1>)
where
    B: AutodiffBackend,
    O: Optimizer<BarlowTwins<B>, B>,
{
    let (grads, value) = barlow_twins_gradients(&model, y1, y2, lambda);
    (optim.step(lr_weights, model, grads), value)
}

/// The step's first half: views -> backbone -> projector -> loss ->
/// backward. Returns the parameters' gradients and the loss (`[1]`,
/// detached, on the device).
pub fn barlow_twins_gradients<B: AutodiffBackend>(
    model: &BarlowTwins<B>,
    y1: Tensor<B, 4>,
    y2: Tensor<B, 4>,
    lambda: f32,
) -> (GradientsParams, Tensor<B::InnerBackend, 1>) {
    barlow_twins_gradients_with(model, y1, y2, lambda, Norm::Local, Precision::F32)
}

/// [`barlow_twins_gradients`] with every training-mode BatchNorm's
/// statistics, and the loss's, from `norm`, and the convolutions and
/// matmuls in `precision` (the gradients are f32 either way).
pub fn barlow_twins_gradients_with<B: AutodiffBackend>(
    model: &BarlowTwins<B>,
    y1: Tensor<B, 4>,
    y2: Tensor<B, 4>,
    lambda: f32,
    norm: Norm<'_, B>,
    precision: Precision,
) -> (GradientsParams, Tensor<B::InnerBackend, 1>) {
    let embed = |y| {
        let h = model.backbone.forward_with(y, norm, precision);
        model.projector.forward_with(h, norm, precision)
    };
    let (z1, z2) = (embed(y1), embed(y2));
    let loss = barlow_twins_loss_with(z1, z2, lambda, norm);
    let value = loss.clone().inner().reshape([1]);
    (GradientsParams::from_grads(loss.backward(), model), value)
}

/// How a step is shared between data-parallel peers, and its precision.
#[derive(Debug, Clone, Copy)]
pub struct Parallel<'a> {
    /// The dtype of the convolutions and matmuls.
    pub precision: Precision,
    /// This replica's handle on its group; `None` for a single device.
    pub peer: Option<&'a Peer>,
    /// The global batch size: the sum of every peer's slice.
    pub batch: usize,
    /// The gradient is divided by this before LARS (`--grad-divisor`).
    pub grad_divisor: f64,
    /// This peer asks the run to stop after this step.
    pub stop: bool,
}

/// One step of one data-parallel peer on its slices `y1` and `y2` of the
/// global batch: the BatchNorms and the loss use the global batch's
/// statistics, the gradients are summed over the peers, so every replica
/// takes the single-device step on the global batch and returns the
/// global loss, and whether any peer asked to stop after it (every peer
/// gets the same answer). With no peer and a divisor of 1 it is
/// [`barlow_twins_step`].
pub fn data_parallel_step<B, O>(
    model: BarlowTwins<B>,
    optim: &mut O,
    y1: Tensor<B, 4>,
    y2: Tensor<B, 4>,
    lambda: f32,
    lr_weights: f64,
    parallel: Parallel<'_>,
) -> Result<Stepped<B>, PeerError>
where
    B: AutodiffBackend + PeerReduce,
    O: Optimizer<BarlowTwins<B>, B>,
{
    let norm = match parallel.peer {
        Some(peer) if peer.world() > 1 => Norm::Global {
            reducer: peer,
            batch: parallel.batch,
        },
        _ => Norm::Local,
    };
    let (grads, value) =
        barlow_twins_gradients_with(&model, y1, y2, lambda, norm, parallel.precision);
    let vote = f64::from(u8::from(parallel.stop));
    let (grads, votes) =
        combine_gradients(&model, grads, parallel.peer, parallel.grad_divisor, vote)?;
    Ok(Stepped {
        model: optim.step(lr_weights, model, grads),
        loss: value,
        stop: votes > 0.0,
    })
}

/// What [`data_parallel_step`] returns.
pub struct Stepped<B: AutodiffBackend> {
    /// The updated replica.
    pub model: BarlowTwins<B>,
    /// The global batch's loss, on the device (`[1]`, detached).
    pub loss: Tensor<B::InnerBackend, 1>,
    /// Some peer asked the run to stop after this step.
    pub stop: bool,
}

/// Step losses left on the device until [`PendingLosses::read`] fetches
/// them all in one transfer: the only place the training loop reads a
/// loss, so the host syncs with the device at log points and checkpoints,
/// not every step.
pub struct PendingLosses<B: Backend> {
    steps: Vec<u64>,
    values: Vec<Tensor<B, 1>>,
    reads: Vec<LossRead>,
}

/// One fetch of losses from the device, as [`PendingLosses`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LossRead {
    /// The newest step whose loss it fetched.
    pub step: u64,
    /// Batches uploaded to the device when it ran, counted from the run's
    /// first step (a resumed run counts the steps before it): `step + 2`
    /// when the next batch's upload was issued before this read.
    pub batches_uploaded: u64,
}

impl<B: Backend> Default for PendingLosses<B> {
    fn default() -> Self {
        PendingLosses {
            steps: Vec::new(),
            values: Vec::new(),
            reads: Vec::new(),
        }
    }
}

impl<B: Backend> PendingLosses<B> {
    /// Keeps `step`'s loss (a `[1]` tensor) for the next read.
    pub fn push(&mut self, step: u64, loss: Tensor<B, 1>) {
        self.steps.push(step);
        self.values.push(loss);
    }

    /// `(step, loss)` of every loss kept since the last read, fetched in one
    /// transfer (none if nothing is pending); the first non-finite one, in
    /// step order, is an error naming its step. `batches_uploaded` is the
    /// caller's count, kept with the read ([`PendingLosses::reads`]).
    pub fn read(&mut self, batches_uploaded: u64) -> Result<Vec<(u64, f32)>, TrainError> {
        let Some(&step) = self.steps.last() else {
            return Ok(Vec::new());
        };
        self.reads.push(LossRead {
            step,
            batches_uploaded,
        });
        let all = Tensor::cat(std::mem::take(&mut self.values), 0);
        let values: Vec<f32> = all.into_data().convert::<f32>().iter::<f32>().collect();
        let read: Vec<(u64, f32)> = std::mem::take(&mut self.steps)
            .into_iter()
            .zip(values)
            .collect();
        match read.iter().find(|(_, l)| !l.is_finite()) {
            Some(&(step, loss)) => Err(TrainError::NonFinite(loss, step)),
            None => Ok(read),
        }
    }

    /// Drops the losses kept since the last read, unread.
    pub fn discard(&mut self) {
        self.steps.clear();
        self.values.clear();
    }

    /// Every fetch [`PendingLosses::read`] has made, oldest first.
    pub fn reads(&self) -> &[LossRead] {
        &self.reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn pending_losses_come_back_in_one_read_and_the_first_bad_step_is_named() {
        let d = Default::default();
        let mut p = PendingLosses::<Flex>::default();
        assert!(p.read(0).unwrap().is_empty());
        assert!(p.reads().is_empty(), "an empty read transfers nothing");
        for (s, v) in [(3u64, 1.5f32), (4, 2.5), (5, 0.5)] {
            p.push(s, Tensor::from_floats([v], &d));
        }
        assert_eq!(p.read(7).unwrap(), vec![(3, 1.5), (4, 2.5), (5, 0.5)]);
        let first = LossRead {
            step: 5,
            batches_uploaded: 7,
        };
        assert_eq!(p.reads(), [first]);
        for (s, v) in [(6u64, 1.0f32), (7, f32::NAN), (8, f32::INFINITY)] {
            p.push(s, Tensor::from_floats([v], &d));
        }
        match p.read(9) {
            Err(TrainError::NonFinite(v, 7)) => assert!(v.is_nan()),
            other => panic!("expected NaN at step 7, got {other:?}"),
        }
    }
}
