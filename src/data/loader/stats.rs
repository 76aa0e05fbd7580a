//! The loader's counters: images, decode failures, and the thread time
//! spent in each stage, summed over workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::data::augment::StageTimes;

/// Counters, summed over workers; times are thread time (add across threads).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoaderStats {
    /// Source images processed (each yields two views).
    pub images: u64,
    /// Records that failed to decode and were replaced.
    pub decode_failures: u64,
    /// Damaged records (checksum failures) skipped and replaced.
    pub damaged_records: u64,
    pub read: Duration,
    pub decode: Duration,
    pub stages: StageTimes,
    /// Worker time spent waiting for a remote dataset's pieces to arrive.
    pub network_wait: Duration,
    /// Time the consumer spent waiting in `next_batch`.
    pub data_wait: Duration,
    pub batches: u64,
}

impl LoaderStats {
    /// The counters accumulated between `earlier` and `self`.
    pub fn since(&self, earlier: &LoaderStats) -> LoaderStats {
        LoaderStats {
            images: self.images - earlier.images,
            decode_failures: self.decode_failures - earlier.decode_failures,
            damaged_records: self.damaged_records - earlier.damaged_records,
            read: self.read.saturating_sub(earlier.read),
            decode: self.decode.saturating_sub(earlier.decode),
            stages: StageTimes {
                crop_resize: self
                    .stages
                    .crop_resize
                    .saturating_sub(earlier.stages.crop_resize),
                colour: self.stages.colour.saturating_sub(earlier.stages.colour),
                blur: self.stages.blur.saturating_sub(earlier.stages.blur),
                write: self.stages.write.saturating_sub(earlier.stages.write),
            },
            network_wait: self.network_wait.saturating_sub(earlier.network_wait),
            data_wait: self.data_wait.saturating_sub(earlier.data_wait),
            batches: self.batches - earlier.batches,
        }
    }

    /// Thread time per stage, in pipeline order: read, decode,
    /// crop+resize, colour, blur, write.
    pub fn stage_times(&self) -> [(&'static str, Duration); 6] {
        [
            ("read", self.read),
            ("decode", self.decode),
            ("crop+resize", self.stages.crop_resize),
            ("colour", self.stages.colour),
            ("blur", self.stages.blur),
            ("write", self.stages.write),
        ]
    }

    /// Milliseconds of thread time per source image in each stage.
    pub fn ms_per_image(&self) -> [(&'static str, f64); 6] {
        let n = self.images.max(1) as f64;
        self.stage_times()
            .map(|(name, t)| (name, 1e3 * t.as_secs_f64() / n))
    }
}

#[derive(Default)]
pub(crate) struct AtomicStats {
    pub(crate) images: AtomicU64,
    pub(crate) decode_failures: AtomicU64,
    pub(crate) damaged_records: AtomicU64,
    pub(crate) read_ns: AtomicU64,
    pub(crate) decode_ns: AtomicU64,
    pub(crate) crop_ns: AtomicU64,
    pub(crate) colour_ns: AtomicU64,
    pub(crate) blur_ns: AtomicU64,
    pub(crate) write_ns: AtomicU64,
    pub(crate) network_wait_ns: AtomicU64,
}

pub(crate) fn add(a: &AtomicU64, d: Duration) {
    a.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}

impl AtomicStats {
    /// The counters now, with the consumer's wait time and batch count.
    pub(crate) fn snapshot(&self, data_wait: Duration, batches: u64) -> LoaderStats {
        let s = self;
        let d = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
        LoaderStats {
            images: s.images.load(Ordering::Relaxed),
            decode_failures: s.decode_failures.load(Ordering::Relaxed),
            damaged_records: s.damaged_records.load(Ordering::Relaxed),
            read: d(&s.read_ns),
            decode: d(&s.decode_ns),
            stages: StageTimes {
                crop_resize: d(&s.crop_ns),
                colour: d(&s.colour_ns),
                blur: d(&s.blur_ns),
                write: d(&s.write_ns),
            },
            network_wait: d(&s.network_wait_ns),
            data_wait,
            batches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_and_per_image_times() {
        let ms = Duration::from_millis;
        let a = LoaderStats {
            images: 10,
            decode: ms(20),
            ..LoaderStats::default()
        };
        let b = LoaderStats {
            images: 30,
            decode: ms(60),
            stages: StageTimes {
                blur: ms(10),
                ..StageTimes::default()
            },
            batches: 2,
            ..LoaderStats::default()
        };
        let d = b.since(&a);
        assert_eq!((d.images, d.decode, d.batches), (20, ms(40), 2));
        let per = d.ms_per_image();
        assert_eq!(per[1], ("decode", 2.0));
        assert_eq!(per[4], ("blur", 0.5));
    }
}
