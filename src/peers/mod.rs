//! Data-parallel peers in one process: W threads, each with a replica of
//! the network and an equal slice of every global batch, whose step
//! together is the single-device step on the global batch.
//!
//! Three things make it exact (`docs/training.md`, "Several devices"):
//! - every training-mode BatchNorm, and the loss's affine-free one, uses
//!   the statistics of the global batch ([`crate::model::norm`]);
//! - the cross-correlation matrix is summed over the peers before the loss;
//! - both sums are a [`Reducer`]: a differentiable all-reduce whose
//!   backward all-reduces the incoming gradient, so each peer's gradient is
//!   W times the true one along its own slice, and [`combine_gradients`]
//!   sums them and divides by W.
//!
//! The all-reduce adds the peers' values in rank order, in f64, on the
//! host: every peer gets the same bits, whatever the threads' timing.
//! Across processes ([`Processes`], MPI with the `mpi` feature) each
//! process's sum is then summed over the processes, the same way on all.
//! A peer that fails or panics aborts the group: the others' next
//! all-reduce returns its error at once, and a peer that never arrives
//! makes the others fail after the group's timeout. Nothing hangs.

mod agree;
#[cfg(feature = "mpi")]
pub mod mpi;
mod reduce;
#[cfg(test)]
pub(crate) mod threads;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use agree::{Fact, agree};
pub use reduce::{PeerReduce, Reducer, combine_gradients, reduce};

/// What one peer's all-reduces of tensors have cost so far: the sums of
/// the BatchNorms and the loss (forward and backward) and of the
/// gradients, as the trainer runs them ([`Reducer`], [`combine_gradients`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Collective calls.
    pub calls: u64,
    /// Values summed: each call's tensor length.
    pub values: u64,
    /// Times the host waited for the device to read a tensor back: one per
    /// call (the tensor to sum) and one per step (the stop vote that rides
    /// with the gradients).
    pub round_trips: u64,
    /// Seconds spent in them: reading back (on a device that queues work,
    /// waiting for it to compute the tensor first), converting, waiting
    /// for the other peers, summing, uploading the sum.
    pub seconds: f64,
}

impl Traffic {
    /// Bytes this peer puts into the sums: every value as an f64.
    pub fn sent_bytes(&self) -> u64 {
        self.values * 8
    }

    /// What was spent after `earlier` (a previous reading of the same peer).
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            calls: self.calls.saturating_sub(earlier.calls),
            values: self.values.saturating_sub(earlier.values),
            round_trips: self.round_trips.saturating_sub(earlier.round_trips),
            seconds: (self.seconds - earlier.seconds).max(0.0),
        }
    }

    fn add(&mut self, other: &Traffic) {
        self.calls += other.calls;
        self.values += other.values;
        self.round_trips += other.round_trips;
        self.seconds += other.seconds;
    }
}

/// Why a collective operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeerError {
    #[error("peer {rank} of {world} failed: {reason}")]
    Failed {
        rank: usize,
        world: usize,
        reason: String,
    },
    #[error(
        "peer {rank} waited {waited_s:.0} s at all-reduce {round} for peers that never arrived \
         (the group's timeout); a peer is stuck or died without reporting"
    )]
    Timeout {
        rank: usize,
        round: u64,
        waited_s: f64,
    },
    #[error("all-reduce {round} across processes: {message}")]
    Processes { round: u64, message: String },
    #[error(
        "this process differs from another in: {facts}; all {processes} processes must run \
         the same barlow with the same config on the same dataset, from the same checkpoint"
    )]
    Disagree {
        /// This process's rank.
        process: usize,
        processes: usize,
        /// This process's differing facts, each with its value here.
        facts: String,
    },
    #[error(
        "all-reduce {round}: peer {rank} sent {got} values where peer 0 sent {want}; \
         the replicas differ"
    )]
    Mismatch {
        rank: usize,
        round: u64,
        got: usize,
        want: usize,
    },
}

/// The processes of a multi-process run, one group of peers each: the
/// sum over them of every process's values. Called by one thread at a time
/// (peer 0 in [`agree`] at start-up, then under the group's lock), the
/// same number of times on every process.
pub trait Processes: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Replaces `values` with their sum over the processes; every process
    /// gets the same bits.
    fn sum(&self, values: &mut [f64]) -> Result<(), String>;
}

/// One peer's handle on its group: its rank and the shared rendezvous.
/// Cheap to clone (the autodiff graph keeps clones for the backward pass).
#[derive(Clone)]
pub struct Peer {
    rank: usize,
    group: Arc<Group>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer({} of {})", self.rank(), self.world())
    }
}

struct Group {
    /// Peers in this process.
    world: usize,
    timeout: Duration,
    processes: Option<Arc<dyn Processes>>,
    state: Mutex<State>,
    turn: Condvar,
    /// Each local peer's [`Traffic`], written by its own thread only.
    traffic: Vec<Mutex<Traffic>>,
}

#[derive(Default)]
struct State {
    /// All-reduces completed.
    round: u64,
    arrived: usize,
    /// Each peer's values for the current round, kept between rounds.
    slots: Vec<Vec<f64>>,
    /// The last completed round's sum: no peer can complete the next round
    /// before every peer has copied it.
    sum: Vec<f64>,
    failed: Option<PeerError>,
}

/// The handles of a new group of `world` peers, rank order. A peer waits
/// at most `timeout` for the others at any all-reduce.
pub fn group(world: usize, timeout: Duration) -> Vec<Peer> {
    group_across(world, timeout, None)
}

/// [`group`] for this process's `world` peers of a run over `processes`:
/// [`Peer::world`] counts every process's peers, and process `p`'s peer
/// `k` has the global rank `p * world + k`.
pub fn group_across(
    world: usize,
    timeout: Duration,
    processes: Option<Arc<dyn Processes>>,
) -> Vec<Peer> {
    let world = world.max(1);
    let group = Arc::new(Group {
        world,
        timeout,
        processes,
        state: Mutex::new(State {
            slots: vec![Vec::new(); world],
            ..State::default()
        }),
        turn: Condvar::new(),
        traffic: (0..world).map(|_| Mutex::default()).collect(),
    });
    (0..world)
        .map(|rank| Peer {
            rank,
            group: Arc::clone(&group),
        })
        .collect()
}

impl Peer {
    /// This peer's rank over all processes.
    pub fn rank(&self) -> usize {
        self.process().0 * self.group.world + self.rank
    }

    /// The number of peers over all processes.
    pub fn world(&self) -> usize {
        self.group.world * self.process().1
    }

    /// This peer's rank among the peers of its process.
    pub fn local_rank(&self) -> usize {
        self.rank
    }

    /// `(rank, size)` of this process among the run's processes.
    pub fn process(&self) -> (usize, usize) {
        self.group
            .processes
            .as_ref()
            .map_or((0, 1), |p| (p.rank(), p.size()))
    }

    /// Replaces `values` with their sum over every peer, added in rank
    /// order. Every peer must call it the same number of times with the
    /// same length.
    pub fn all_reduce(&self, values: &mut [f64]) -> Result<(), PeerError> {
        let g = &*self.group;
        let mut s = self.lock();
        if let Some(e) = &s.failed {
            return Err(e.clone());
        }
        let round = s.round;
        let slot = &mut s.slots[self.rank];
        slot.clear();
        slot.extend_from_slice(values);
        s.arrived += 1;
        if s.arrived == g.world {
            let n = s.slots[0].len();
            if let Some((rank, got)) = s
                .slots
                .iter()
                .enumerate()
                .find(|(_, v)| v.len() != n)
                .map(|(r, v)| (r, v.len()))
            {
                let e = PeerError::Mismatch {
                    rank,
                    round,
                    got,
                    want: n,
                };
                s.failed = Some(e.clone());
                g.turn.notify_all();
                return Err(e);
            }
            let State { slots, sum, .. } = &mut *s;
            sum.clear();
            sum.resize(n, 0.0);
            for slot in slots.iter() {
                for (a, b) in sum.iter_mut().zip(slot) {
                    *a += b;
                }
            }
            if let Some(p) = &g.processes
                && let Err(message) = p.sum(sum)
            {
                let e = PeerError::Processes { round, message };
                s.failed = Some(e.clone());
                g.turn.notify_all();
                return Err(e);
            }
            s.arrived = 0;
            s.round += 1;
            g.turn.notify_all();
        } else {
            let started = Instant::now();
            while s.round == round && s.failed.is_none() {
                let left = g.timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    let e = PeerError::Timeout {
                        rank: self.rank(),
                        round,
                        waited_s: started.elapsed().as_secs_f64(),
                    };
                    s.failed = Some(e.clone());
                    g.turn.notify_all();
                    return Err(e);
                }
                s = match g.turn.wait_timeout(s, left) {
                    Ok((s, _)) => s,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            if let Some(e) = &s.failed {
                return Err(e.clone());
            }
        }
        values.copy_from_slice(&s.sum[..values.len()]);
        Ok(())
    }

    /// Marks the group failed because of this peer: every peer's next (or
    /// current) all-reduce returns the error. The first failure is kept.
    pub fn abort(&self, reason: impl Into<String>) {
        let mut s = self.lock();
        if s.failed.is_none() {
            s.failed = Some(PeerError::Failed {
                rank: self.rank(),
                world: self.world(),
                reason: reason.into(),
            });
        }
        self.group.turn.notify_all();
    }

    /// What this peer's all-reduces of tensors have cost so far.
    pub fn traffic(&self) -> Traffic {
        match self.group.traffic[self.rank].lock() {
            Ok(t) => *t,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Adds `spent` to this peer's [`Peer::traffic`].
    pub(crate) fn count(&self, spent: Traffic) {
        match self.group.traffic[self.rank].lock() {
            Ok(mut t) => t.add(&spent),
            Err(poisoned) => poisoned.into_inner().add(&spent),
        }
    }

    /// The group's failure, if any peer has failed.
    pub fn failure(&self) -> Option<PeerError> {
        self.lock().failed.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A peer that panicked while holding the lock leaves consistent
        // state (every update is completed before unlocking).
        match self.group.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.abort("its thread panicked");
        }
    }
}

#[cfg(test)]
mod tests;
