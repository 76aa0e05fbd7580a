//! What the log says of each stretch of steps: images/s, the share of
//! time spent waiting for data and, with several peers, their all-reduce
//! traffic; and the progress bar.

use std::time::{Duration, Instant};

use crate::data::sampler::Position;
use crate::peers::{Peer, Traffic};
use crate::progress::Progress;
use crate::run::{PeerTraffic, StepLog};

/// The step log's measurements.
pub(super) struct Meter<'a> {
    log_every: u64,
    /// Steps of the whole run.
    total: u64,
    /// Every process loads its share of each global batch.
    processes: usize,
    window: Throughput,
    pub(super) whole: Throughput,
    /// Peer 0's handle when there are several peers.
    peer: Option<&'a Peer>,
    /// The peer's traffic at the window's start, and the steps since.
    traffic_since: Traffic,
    steps: u64,
    progress: &'a dyn Progress,
}

impl<'a> Meter<'a> {
    pub(super) fn new(
        log_every: u64,
        total: u64,
        processes: usize,
        peer: Option<&'a Peer>,
        progress: &'a dyn Progress,
    ) -> Self {
        let peer = peer.filter(|p| p.world() > 1);
        Meter {
            log_every: log_every.max(1),
            total,
            processes,
            window: Throughput::default(),
            whole: Throughput::default(),
            peer,
            traffic_since: peer.map(Peer::traffic).unwrap_or_default(),
            steps: 0,
            progress,
        }
    }

    /// A step took this process's `images` after `waited` for them.
    pub(super) fn stepped(&mut self, images: usize, waited: Duration) {
        self.window.add(images * self.processes, waited);
        self.whole.add(images * self.processes, waited);
        self.steps += 1;
        self.progress.advance(1);
    }

    /// Whether step `step` (0-based) is logged: the first, every
    /// `log_every`-th and the last.
    pub(super) fn due(&self, step: u64) -> bool {
        step == 0 || (step + 1).is_multiple_of(self.log_every) || step + 1 == self.total
    }

    /// The log line of step `step` at `pos` with its rates, `loss` and the
    /// damaged records skipped since the last line; starts a new window.
    pub(super) fn line(
        &mut self,
        step: u64,
        pos: Position,
        (lr_weights, lr_biases): (f64, f64),
        loss: f32,
        damaged_records: u64,
    ) -> StepLog {
        let (images_per_sec, data_wait) = self.window.take();
        let steps = std::mem::take(&mut self.steps);
        self.progress.message(&format!(
            "loss {loss:.2}  {images_per_sec:.1} img/s  data wait {:.1}%",
            100.0 * data_wait
        ));
        StepLog {
            epoch: pos.epoch,
            step,
            lr_weights,
            lr_biases,
            loss,
            images_per_sec,
            data_wait,
            peers: self.traffic(steps),
            damaged_records,
            network: None,
        }
    }

    /// The peer's traffic per step over the last `steps` steps.
    fn traffic(&mut self, steps: u64) -> Option<PeerTraffic> {
        let now = self.peer?.traffic();
        let spent = now.since(&self.traffic_since);
        let steps = steps.max(1);
        self.traffic_since = now;
        Some(PeerTraffic {
            collectives: spent.calls / steps,
            values: spent.values / steps,
            sent_bytes: spent.sent_bytes() / steps,
            round_trips: spent.round_trips / steps,
            seconds: spent.seconds / steps as f64,
        })
    }
}

/// Images and data-wait time over a stretch of steps.
pub(super) struct Throughput {
    since: Instant,
    images: usize,
    waited: Duration,
}

impl Default for Throughput {
    fn default() -> Self {
        Throughput {
            since: Instant::now(),
            images: 0,
            waited: Duration::ZERO,
        }
    }
}

impl Throughput {
    pub(super) fn add(&mut self, images: usize, waited: Duration) {
        self.images += images;
        self.waited += waited;
    }

    /// Images/s and the share of time spent waiting for data over `elapsed`.
    pub(super) fn rates(&self, elapsed: Duration) -> (f64, f64) {
        let secs = elapsed.as_secs_f64().max(1e-9);
        (self.images as f64 / secs, self.waited.as_secs_f64() / secs)
    }

    /// [`Throughput::rates`] since the window began; starts a new window.
    pub(super) fn take(&mut self) -> (f64, f64) {
        let r = self.rates(self.since.elapsed());
        *self = Throughput::default();
        r
    }
}
