//! A loader worker: claims the next sample number, waits for its batch's
//! slot, reads the record, decodes it, renders both views straight into
//! the slot and bumps the batch's completion counter.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::stats::add;
use super::{
    DamagedRecord, Event, LoaderError, Mode, OnDamaged, PixelFormat, ReadPath, Shared, Slot,
};
use crate::data::augment::{Augmenter, StageTimes, eval_view, sample_view};
use crate::data::decode::Decoder;
use crate::data::shard::ShardError;
use crate::rng::{below, stream};

/// Stream tag for decode-failure replacements.
const TAG_REPLACE: u64 = 0x7265_706c;

/// A worker's reusable state.
struct WorkerState {
    decoder: Decoder,
    aug: Augmenter,
    order: Option<(u64, Arc<Vec<u64>>)>,
    /// The order of the epoch read ahead into.
    ahead_order: Option<(u64, Arc<Vec<u64>>)>,
    /// A record's bytes under [`ReadPath::Pread`].
    bytes: Vec<u8>,
    reported: StageTimes,
}

pub(super) fn run(shared: &Shared, tx: &Sender<Event>) {
    let cfg = &shared.cfg;
    let batch = cfg.sampler.batch_size as u64;
    let depth = shared.slots.len() as u64;
    let mut st = WorkerState {
        decoder: Decoder::new(cfg.max_pixels),
        aug: Augmenter::new(cfg.augment.size),
        order: None,
        ahead_order: None,
        bytes: Vec::new(),
        reported: StageTimes::default(),
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let s = shared.next_sample.fetch_add(1, Ordering::Relaxed);
        let (k, j) = (s / batch, (s % batch) as usize);
        let slot = &shared.slots[(k % depth) as usize];
        if !wait_for_slot(shared, slot, k) {
            return;
        }
        if cfg.read.reads_ahead() {
            read_ahead(shared, &mut st.ahead_order, s + cfg.read_ahead);
        }
        let pos = shared.sampler.advance(shared.start, k);
        let order = epoch_order(shared, &mut st.order, pos.epoch);
        let records = shared.sampler.batch_of(&order, pos.batch);
        if j == 0 {
            slot.len.store(records.len(), Ordering::Relaxed);
        }
        if let Some(&record) = records.get(j) {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                sample(shared, &mut st, slot, (s, pos.epoch), record, j)
            }));
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(p) => Some(LoaderError::WorkerPanic {
                    record,
                    at: shared.dataset.describe(record),
                    message: p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into()),
                }),
            };
            if let Some(e) = failure {
                let _ = tx.send(Event::Failed(e));
                shared.stop.store(true, Ordering::SeqCst);
                return;
            }
        }
        if slot.done.fetch_add(1, Ordering::AcqRel) + 1 == batch as usize
            && tx.send(Event::Ready(k)).is_err()
        {
            return;
        }
    }
}

/// Asks for the pages of the record that sample `s` of the stream will
/// read (the sampler's order is known ahead).
fn read_ahead(shared: &Shared, cache: &mut Option<(u64, Arc<Vec<u64>>)>, s: u64) {
    if let Some(record) = record_at(shared, cache, s) {
        shared.dataset.will_need(record);
    }
}

/// The record sample `s` of the stream reads (`None` past a short last
/// batch's end), with an epoch-order cache.
pub(super) fn record_at(
    shared: &Shared,
    cache: &mut Option<(u64, Arc<Vec<u64>>)>,
    s: u64,
) -> Option<u64> {
    let batch = shared.cfg.sampler.batch_size as u64;
    let pos = shared.sampler.advance(shared.start, s / batch);
    let order = epoch_order(shared, cache, pos.epoch);
    shared
        .sampler
        .batch_of(&order, pos.batch)
        .get((s % batch) as usize)
        .copied()
}

/// Waits until `slot` is assigned to stream batch `k`; false when stopping.
fn wait_for_slot(shared: &Shared, slot: &Slot, k: u64) -> bool {
    loop {
        if slot.assigned.load(Ordering::Acquire) == k {
            return true;
        }
        if shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        let guard = shared.freed.0.lock();
        if let Ok(g) = guard
            && slot.assigned.load(Ordering::Acquire) != k
            && !shared.stop.load(Ordering::Relaxed)
        {
            let _ = shared.freed.1.wait_timeout(g, Duration::from_millis(20));
        }
    }
}

/// This rank's order for `epoch`, computed once and shared by the workers.
pub(super) fn epoch_order(
    shared: &Shared,
    cache: &mut Option<(u64, Arc<Vec<u64>>)>,
    epoch: u64,
) -> Arc<Vec<u64>> {
    if let Some((e, o)) = cache
        && *e == epoch
    {
        return Arc::clone(o);
    }
    let order = {
        let mut orders = match shared.orders.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((_, o)) = orders.iter().find(|(e, _)| *e == epoch) {
            Arc::clone(o)
        } else {
            let o = Arc::new(shared.sampler.epoch_order(epoch));
            orders.push_back((epoch, Arc::clone(&o)));
            while orders.len() > 3 {
                orders.pop_front();
            }
            o
        }
    };
    *cache = Some((epoch, Arc::clone(&order)));
    order
}

/// Produces sample `j` of a batch (sample `s` of the stream, in `epoch`)
/// from `record` (or its replacement).
fn sample(
    shared: &Shared,
    st: &mut WorkerState,
    slot: &Slot,
    (s, epoch): (u64, u64),
    record: u64,
    j: usize,
) -> Result<(), LoaderError> {
    let cfg = &shared.cfg;
    #[cfg(test)]
    if cfg.panic_on_record == Some(record) {
        panic!("test hook: record {record}");
    }
    let stats = &shared.stats;
    let mut used = record;
    let mut attempt = 0u32;
    // The record that stands in for `record` after one more failure
    // (`last`), or the error once `max_replacements` have failed too.
    let replace = |attempt: &mut u32, last: String| -> Result<u64, LoaderError> {
        *attempt += 1;
        if *attempt > cfg.max_replacements {
            return Err(LoaderError::Undecodable {
                record,
                at: shared.dataset.describe(record),
                attempts: cfg.max_replacements,
                last,
            });
        }
        let tag = [
            TAG_REPLACE,
            cfg.sampler.seed,
            epoch,
            record,
            *attempt as u64,
        ];
        Ok(below(&mut stream(&tag), shared.dataset.len()))
    };
    let decoded = loop {
        let t0 = Instant::now();
        let read = match cfg.read {
            ReadPath::Pread => shared
                .dataset
                .read_verified_into(used, &mut st.bytes)
                .map(|meta| (&st.bytes[..], meta)),
            ReadPath::Auto | ReadPath::Map | ReadPath::MapAdvised => shared
                .dataset
                .verified_record(used)
                .map(|r| (r.bytes, r.meta)),
            ReadPath::Remote => read_remote(shared, s, used, attempt == 0, &mut st.bytes)
                .map(|meta| (&st.bytes[..], meta)),
        };
        let (bytes, meta) = match read {
            Ok(rec) => rec,
            Err(
                ref e @ ShardError::RecordChecksum {
                    ref path,
                    record: shard_record,
                    offset,
                    ..
                },
            ) if cfg.on_damaged == OnDamaged::Skip => {
                stats.damaged_records.fetch_add(1, Ordering::Relaxed);
                let met = DamagedRecord {
                    record: used,
                    shard: path.clone(),
                    shard_record,
                    offset,
                };
                let damaged = shared.damage.note(&met);
                match slot.damaged.lock() {
                    Ok(mut d) => d.push(met),
                    Err(p) => p.into_inner().push(met),
                }
                let limit = cfg.max_damaged.limit(shared.dataset.len());
                if damaged > limit {
                    return Err(LoaderError::TooManyDamaged {
                        damaged,
                        limit,
                        records: shared.dataset.len(),
                        last: e.to_string(),
                    });
                }
                used = replace(&mut attempt, e.to_string())?;
                continue;
            }
            Err(e) => return Err(LoaderError::Shard(Arc::new(e))),
        };
        let t1 = Instant::now();
        add(&stats.read_ns, t1 - t0);
        // Decode into the worker's buffer; on failure pick a replacement.
        let ok = st
            .decoder
            .decode(bytes)
            .map(|d| (d.width, d.height))
            .map_err(|e| e.to_string());
        add(&stats.decode_ns, t1.elapsed());
        match ok {
            Ok(_) => break (used, meta.label),
            Err(last) => {
                stats.decode_failures.fetch_add(1, Ordering::Relaxed);
                used = replace(&mut attempt, last)?;
            }
        }
    };
    let (used, label) = decoded;
    // SAFETY: sample j of this batch was claimed by this worker alone (the
    // atomic sample counter hands out each number once), so the regions
    // below are written by nobody else, and nobody reads them before the
    // batch's completion counter says every sample is done.
    unsafe {
        slot.bufs.labels.region_mut(j, 1)[0] = label;
        slot.bufs.records.region_mut(j, 1)[0] = used;
    }
    if cfg.mode != Mode::Decode {
        // The decoder's buffer still holds `used`'s pixels: re-borrow it.
        let img = st.decoder.last();
        let n = 3 * (cfg.augment.size as usize).pow(2);
        for v in 0..cfg.mode.views() {
            let p = if cfg.mode == Mode::Eval {
                eval_view(&cfg.augment, img.width, img.height)
            } else {
                sample_view(
                    &cfg.augment,
                    cfg.sampler.seed,
                    epoch,
                    record,
                    v,
                    img.width,
                    img.height,
                )
            };
            st.aug.render(&img, &p).map_err(|e| LoaderError::Augment {
                record,
                at: shared.dataset.describe(used),
                message: e.to_string(),
            })?;
            if matches!(cfg.mode, Mode::Full | Mode::Eval | Mode::OneView) {
                // SAFETY: as above: this sample's region of view v.
                match cfg.format {
                    PixelFormat::U8 => st
                        .aug
                        .write_u8(unsafe { slot.bufs.views_u8[v].region_mut(j * n, n) }),
                    PixelFormat::F32 => st
                        .aug
                        .write_f32(unsafe { slot.bufs.views_f32[v].region_mut(j * n, n) }),
                }
            }
        }
        let t = st.aug.times;
        let r = st.reported;
        add(&stats.crop_ns, t.crop_resize - r.crop_resize);
        add(&stats.colour_ns, t.colour - r.colour);
        add(&stats.blur_ns, t.blur - r.blur);
        add(&stats.write_ns, t.write - r.write);
        st.reported = t;
    }
    stats.images.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Record `record` (sample `s`'s own when `planned`, else a replacement)
/// read out of the remote dataset's cache into `buf`. A planned sample
/// waits for the planner to pass it, so that its piece is pinned; a
/// replacement pins its piece itself. The time spent waiting for the
/// network is counted.
#[cfg(feature = "remote")]
fn read_remote(
    shared: &Shared,
    s: u64,
    record: u64,
    planned: bool,
    buf: &mut Vec<u8>,
) -> Result<crate::data::shard::RecordMeta, ShardError> {
    use crate::data::source::RemoteError;
    let Some(pins) = &shared.pins else {
        return shared.dataset.read_verified_into(record, buf);
    };
    let remote = pins.remote();
    let stop = || shared.stop.load(Ordering::Relaxed);
    let (shard, local) = shared.dataset.locate(record)?;
    let meta = shared.dataset.shards()[shard].meta(local)?;
    let p = remote.piece_of(record);
    let t = Instant::now();
    if planned {
        while shared.planned.load(Ordering::Acquire) <= s {
            if let Some(e) = remote.failure() {
                return Err(e.into());
            }
            if stop() {
                return Err(RemoteError::Stopped.into());
            }
            pins.wait_change(Duration::from_millis(20));
        }
    } else {
        pins.pin(p);
    }
    let planner = t.elapsed();
    let read = remote.read_into(p, shard, local, &meta, buf, &stop);
    pins.unpin(p);
    let waited = planner + *read.as_ref().unwrap_or(&Duration::ZERO);
    add(&shared.stats.network_wait_ns, waited);
    read.map(|_| meta)
}

#[cfg(not(feature = "remote"))]
fn read_remote(
    shared: &Shared,
    _s: u64,
    record: u64,
    _planned: bool,
    buf: &mut Vec<u8>,
) -> Result<crate::data::shard::RecordMeta, ShardError> {
    shared.dataset.read_verified_into(record, buf)
}
