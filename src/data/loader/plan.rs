//! The fetch planner of a loader over a remote dataset: one thread that
//! walks the sampler's order from the loader's start, ahead of the
//! workers, pins the piece each sample will read and starts its fetch,
//! with at most the remote's horizon of bytes in flight. When the cache
//! is full, the piece needed furthest ahead in the known order goes first.
//!
//! A worker reads sample `s` only once the planner has passed it
//! (`planned > s`), so the piece is pinned, and unpins it after the read.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{LoaderConfig, LoaderError, Shared};
use crate::data::sampler::{Order, Position, Sampler};
use crate::data::shard::Dataset;
use crate::data::source::{Pins, Remote, RemoteError};

/// Samples the planner runs ahead of the workers' claims: the horizon's
/// worth of records, and at least two batches.
fn ahead(dataset: &Dataset, remote: &Remote, cfg: &LoaderConfig) -> u64 {
    let record = (dataset.bytes() / dataset.len().max(1)).max(1);
    let batch = cfg.sampler.batch_size as u64;
    (remote.horizon() / record).max(2 * batch)
}

/// Samples whose pieces must be cached together for the order to run
/// without fetching a piece twice within it: the planner's reach, the
/// pipeline (batches being filled), and for the blocked order its window
/// of blocks. The random order's window is the whole epoch.
fn span(dataset: &Dataset, remote: &Remote, cfg: &LoaderConfig) -> u64 {
    let batch = cfg.sampler.batch_size as u64;
    let pipeline = (cfg.prefetch as u64 + 1) * batch + cfg.threads as u64;
    let window = match cfg.sampler.order {
        Order::Random => u64::MAX / 4,
        Order::Blocked => (cfg.sampler.window * cfg.sampler.block) as u64,
        Order::Sequential => 0,
    };
    ahead(dataset, remote, cfg) + pipeline + window
}

/// The most bytes of pieces any `span` consecutive samples of the start
/// epoch touch: the smallest cache a loader of `cfg` over the remote
/// `dataset` runs in without thrashing. Refused with that figure when the
/// cache limit is below it.
pub(super) fn check_cache(
    dataset: &Dataset,
    remote: &Remote,
    cfg: &LoaderConfig,
    sampler: &Sampler,
    start: Position,
) -> Result<(), LoaderError> {
    let order = sampler.epoch_order(start.epoch);
    let span = (span(dataset, remote, cfg) as usize).min(order.len());
    let mut count: HashMap<usize, u32> = HashMap::new();
    let (mut bytes, mut most) = (0u64, 0u64);
    for (i, &r) in order.iter().enumerate() {
        let p = remote.piece_of(r);
        let n = count.entry(p).or_insert(0);
        if *n == 0 {
            bytes += remote.piece_len(p);
        }
        *n += 1;
        if i >= span {
            let q = remote.piece_of(order[i - span]);
            if let Some(n) = count.get_mut(&q) {
                *n -= 1;
                if *n == 0 {
                    bytes -= remote.piece_len(q);
                }
            }
        }
        most = most.max(bytes);
    }
    let limit = remote.cache_limit();
    if limit < most {
        let why = match cfg.sampler.order {
            Order::Random => "the random order reads the whole dataset in any stretch; \
                              --order blocked needs only its window"
                .to_string(),
            order => format!(
                "the pieces {span} consecutive samples of the {} order read",
                crate::Choice::name(order)
            ),
        };
        return Err(LoaderError::Shard(Arc::new(
            RemoteError::CacheTooSmall {
                limit,
                needed: most,
                why,
            }
            .into(),
        )));
    }
    Ok(())
}

/// The planner thread's loop; returns when the loader stops.
pub(super) fn run(shared: &Shared, pins: &Pins) {
    let remote = pins.remote();
    let ahead = ahead(&shared.dataset, remote, &shared.cfg);
    let scan = span(&shared.dataset, remote, &shared.cfg).min(1 << 16);
    let mut orders = None;
    // The pieces of samples [s, s + scan), and where each is next used.
    let mut window: VecDeque<Option<usize>> = VecDeque::new();
    let mut uses: HashMap<usize, VecDeque<u64>> = HashMap::new();
    let mut s = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        while (window.len() as u64) < scan {
            let at = s + window.len() as u64;
            let p = super::worker::record_at(shared, &mut orders, at).map(|r| remote.piece_of(r));
            if let Some(p) = p {
                uses.entry(p).or_default().push_back(at);
            }
            window.push_back(p);
        }
        if s >= shared.next_sample.load(Ordering::Relaxed) + ahead {
            pins.wait_change(Duration::from_millis(20));
            continue;
        }
        if let Some(Some(p)) = window.front().copied() {
            pins.pin(p);
            let rank = |q: usize| {
                uses.get(&q)
                    .and_then(|u| u.front())
                    .map_or(u64::MAX, |&at| at)
            };
            let since = std::time::Instant::now();
            loop {
                // A worker waits on this sample, for a while now.
                let stalled = s < shared.next_sample.load(Ordering::Relaxed)
                    && since.elapsed() >= crate::data::source::STALLED;
                match remote.request(p, Some(remote.horizon()), stalled, &rank) {
                    Ok(true) => break,
                    // The failure is kept in the cache for the workers.
                    Err(_) => return,
                    Ok(false) if shared.stop.load(Ordering::Relaxed) => return,
                    Ok(false) => pins.wait_change(Duration::from_millis(20)),
                }
            }
            if let Some(u) = uses.get_mut(&p) {
                u.pop_front();
                if u.is_empty() {
                    uses.remove(&p);
                }
            }
        }
        window.pop_front();
        s += 1;
        shared.planned.store(s, Ordering::Release);
        pins.notify();
    }
}
