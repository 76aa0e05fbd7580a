//! The data-parallel peers other than peer 0: each receives its slice of
//! every global batch from peer 0's loader and takes the same step on its
//! own replica ([`super::data_parallel_step`]).

use std::ops::Range;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::replica::{Replica, replica};
use super::{Parallel, RunOptions, TrainConfig, TrainError, data_parallel_step};
use crate::data::loader::Batch;
use crate::model::normalise_u8;
use crate::peers::{Peer, PeerError, PeerReduce};

/// How long a failed run waits for its other peers to stop before it
/// returns without them (a peer stuck on its device never stops).
pub(super) const GRACE: Duration = Duration::from_secs(60);

/// Waits for the other peers' threads; the first that failed or panicked
/// is the error. With `grace` (the run has failed) threads still running
/// after it are left behind.
pub(super) fn join(
    followers: Vec<(usize, JoinHandle<Result<(), TrainError>>)>,
    world: usize,
    grace: Option<Duration>,
) -> Result<(), TrainError> {
    let deadline = grace.map(|g| Instant::now() + g);
    let mut first_error = Ok(());
    for (rank, handle) in followers {
        if let Some(deadline) = deadline {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !handle.is_finished() {
                continue;
            }
        }
        let outcome = match handle.join() {
            Ok(r) => r,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(TrainError::Peer(PeerError::Failed {
                    rank,
                    world,
                    reason: format!("its thread panicked: {message}"),
                }))
            }
        };
        if first_error.is_ok() {
            first_error = outcome;
        }
    }
    first_error
}

/// One peer's slice of a global batch: both views' u8 bytes, NCHW.
struct Slice {
    y1: Vec<u8>,
    y2: Vec<u8>,
    shape: [usize; 4],
    /// The step's learning rate of the weights.
    lr: f64,
}

/// Peer 0's end of the link to another peer.
pub(super) struct Feed {
    rank: usize,
    slices: Sender<Slice>,
    /// Slices the peer has uploaded, back for reuse: after the first steps
    /// no buffer is allocated.
    spare: Receiver<Slice>,
}

/// The other peer's end.
pub(super) struct Follower {
    peer: Peer,
    slices: Receiver<Slice>,
    spare: Sender<Slice>,
}

/// The link between peer 0 and `peer`. Two slices in flight: the peer
/// can hold the next batch while it computes this one.
pub(super) fn channel(peer: Peer) -> (Feed, Follower) {
    let (tx, rx) = crossbeam_channel::bounded(2);
    let (spare_tx, spare_rx) = crossbeam_channel::bounded(3);
    let feed = Feed {
        rank: peer.rank(),
        slices: tx,
        spare: spare_rx,
    };
    let follower = Follower {
        peer,
        slices: rx,
        spare: spare_tx,
    };
    (feed, follower)
}

impl Feed {
    /// Sends images `rows` of `batch` with the step's rate `lr`. A peer
    /// that has stopped is an error: the group's failure (its own report),
    /// as `lead` (peer 0's handle) knows it.
    pub(super) fn send(
        &self,
        batch: &Batch<'_>,
        rows: Range<usize>,
        lr: f64,
        lead: &Peer,
    ) -> Result<(), TrainError> {
        let shape = batch.shape();
        let per_image = shape[1] * shape[2] * shape[3];
        let bytes = rows.start * per_image..rows.end * per_image;
        let mut slice = match self.spare.try_recv() {
            Ok(s) => s,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Slice {
                y1: Vec::with_capacity(bytes.len()),
                y2: Vec::with_capacity(bytes.len()),
                shape,
                lr,
            },
        };
        for (buf, view) in [(&mut slice.y1, 0), (&mut slice.y2, 1)] {
            buf.clear();
            buf.extend_from_slice(&batch.view_u8(view)[bytes.clone()]);
        }
        slice.shape = [rows.len(), shape[1], shape[2], shape[3]];
        slice.lr = lr;
        self.slices.send(slice).map_err(|_| {
            TrainError::Peer(lead.failure().unwrap_or(PeerError::Failed {
                rank: self.rank,
                world: lead.world(),
                reason: "it stopped without reporting an error".into(),
            }))
        })
    }
}

impl Follower {
    /// Builds this peer's replica on `device` and steps it on every slice
    /// until peer 0 closes the link. An error aborts the group (so every
    /// peer stops) and is returned.
    pub(super) fn run<B: AutodiffBackend + PeerReduce>(
        self,
        cfg: &TrainConfig,
        run: &RunOptions,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let result = self.steps::<B>(cfg, run, device);
        if let Err(e) = &result {
            self.peer.abort(e.to_string());
        }
        result
    }

    fn steps<B: AutodiffBackend + PeerReduce>(
        &self,
        cfg: &TrainConfig,
        run: &RunOptions,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let Replica {
            mut model,
            mut optim,
            ..
        } = replica::<B>(cfg, run, device)?;
        let parallel = Parallel {
            peer: Some(&self.peer),
            batch: cfg.batch_size,
            grad_divisor: cfg.grad_divisor,
            stop: false,
            precision: cfg.precision,
        };
        for (step, slice) in (0u64..).zip(self.slices.iter()) {
            injected_failure(run, self.peer.local_rank(), step)?;
            let y1 = normalise_u8::<B>(&slice.y1, slice.shape, device);
            let y2 = normalise_u8::<B>(&slice.y2, slice.shape, device);
            model = data_parallel_step(model, &mut optim, y1, y2, cfg.lambda, slice.lr, parallel)?
                .model;
            // Peer 0 may have finished: then the buffer is simply dropped.
            let _ = self.spare.try_send(slice);
        }
        Ok(())
    }
}

/// Testing aid: peer 1 fails or panics before step `step` when the run
/// asks for it.
fn injected_failure(run: &RunOptions, rank: usize, step: u64) -> Result<(), TrainError> {
    #[cfg(test)]
    match run.fail_peer_at {
        Some((at, super::PeerFault::Error)) if rank == 1 && at == step => {
            return Err(TrainError::Config {
                path: run.out.clone(),
                message: format!("peer 1 failed on purpose before step {step}"),
            });
        }
        Some((at, super::PeerFault::Panic)) if rank == 1 && at == step => {
            panic!("peer 1 panicked on purpose before step {step}")
        }
        _ => {}
    }
    #[cfg(not(test))]
    let _ = (run, rank, step);
    Ok(())
}
