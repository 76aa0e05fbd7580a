//! Batch buffers that several workers fill at once, each sample in its own
//! slot, without locks or per-sample allocation.
//!
//! A [`SharedBuf`] is allocated once and never resized. Writers get disjoint
//! regions of it; the reader sees it only when every writer is done (the
//! loader's per-batch completion counter, with release/acquire ordering,
//! says when). That protocol is what makes the `unsafe` here sound; it is
//! enforced by the loader ([`super`]), the only user.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Element type of the views in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PixelFormat {
    /// u8 in [0, 255], a quarter of f32's bytes, to be normalised on the
    /// device.
    #[default]
    U8,
    /// f32, normalised with the ImageNet mean and std.
    F32,
}

impl crate::Choice for PixelFormat {
    const NAMES: &'static [(Self, &'static str)] =
        &[(PixelFormat::U8, "u8"), (PixelFormat::F32, "f32")];
}

/// A fixed-size buffer shared by the workers filling it.
pub(crate) struct SharedBuf<T> {
    ptr: NonNull<[T]>,
}

// SAFETY: the buffer is plain data owned by this value; concurrent access is
// limited to disjoint regions (writers) or happens after all writers are
// done (reader), per the protocol in the module docs.
unsafe impl<T: Send> Send for SharedBuf<T> {}
// SAFETY: as above: `&SharedBuf` only hands out regions under that protocol.
unsafe impl<T: Send + Sync> Sync for SharedBuf<T> {}

impl<T: Copy + Default> SharedBuf<T> {
    pub(crate) fn new(len: usize) -> SharedBuf<T> {
        let boxed: Box<[T]> = vec![T::default(); len].into_boxed_slice();
        SharedBuf {
            // Box::into_raw never returns null.
            ptr: NonNull::from(Box::leak(boxed)),
        }
    }
}

impl<T> SharedBuf<T> {
    pub(crate) fn len(&self) -> usize {
        self.ptr.len()
    }

    /// Elements `start..start + len` for writing.
    ///
    /// # Safety
    /// No other reference to any element of that range may exist while the
    /// returned slice lives (each sample slot is claimed by exactly one
    /// worker), and the range must be in bounds.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn region_mut(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start.checked_add(len).is_some_and(|end| end <= self.len()));
        // SAFETY: in bounds (checked above); exclusive per the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<T>().add(start), len) }
    }

    /// The whole buffer for reading.
    ///
    /// # Safety
    /// No writer may hold a region while the returned slice lives.
    pub(crate) unsafe fn all(&self) -> &[T] {
        // SAFETY: the pointer is valid for `len` elements; no writer per the
        // caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<T>(), self.len()) }
    }
}

impl<T> Drop for SharedBuf<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `Box::leak` in `new` and is dropped once.
        drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
    }
}

/// The buffers of one batch: two views (NCHW each), labels, record indices.
pub(crate) struct BatchBuffers {
    pub(crate) views_u8: [SharedBuf<u8>; 2],
    pub(crate) views_f32: [SharedBuf<f32>; 2],
    pub(crate) labels: SharedBuf<u32>,
    pub(crate) records: SharedBuf<u64>,
}

impl BatchBuffers {
    /// Buffers for `batch` samples of `3 x size x size` pixels in `format`
    /// and `views` (1 or 2) views; the other format's buffers and an unused
    /// second view stay empty.
    pub(crate) fn new(batch: usize, size: u32, format: PixelFormat, views: usize) -> BatchBuffers {
        let n = batch * 3 * (size as usize) * (size as usize);
        let (nu, nf) = match format {
            PixelFormat::U8 => (n, 0),
            PixelFormat::F32 => (0, n),
        };
        let second = |len: usize| if views > 1 { len } else { 0 };
        BatchBuffers {
            views_u8: [SharedBuf::new(nu), SharedBuf::new(second(nu))],
            views_f32: [SharedBuf::new(nf), SharedBuf::new(second(nf))],
            labels: SharedBuf::new(batch),
            records: SharedBuf::new(batch),
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        let u8s = self.views_u8[0].len() + self.views_u8[1].len();
        let f32s = self.views_f32[0].len() + self.views_f32[1].len();
        u8s + 4 * f32s + 12 * self.labels.len()
    }
}

/// One batch's place in the pipeline: which stream batch it holds, how
/// many of its samples are written, and its buffers.
pub(crate) struct Slot {
    /// The stream batch number this slot holds or is being filled with.
    pub(crate) assigned: AtomicU64,
    pub(crate) done: AtomicUsize,
    pub(crate) bufs: BatchBuffers,
    /// Samples in this batch (short last batch when `drop_last` is off).
    pub(crate) len: AtomicUsize,
    /// The damaged records skipped while filling this batch.
    pub(crate) damaged: std::sync::Mutex<Vec<super::DamagedRecord>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_regions_written_from_threads_are_all_seen() {
        let buf = SharedBuf::<u32>::new(64 * 100);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let buf = &buf;
                s.spawn(move || {
                    for j in (t..64).step_by(4) {
                        // SAFETY: sample j is written by thread j % 4 only.
                        let r = unsafe { buf.region_mut(j * 100, 100) };
                        r.fill(j as u32);
                    }
                });
            }
        });
        // SAFETY: all writers have joined.
        let all = unsafe { buf.all() };
        for j in 0..64 {
            assert!(all[j * 100..(j + 1) * 100].iter().all(|&v| v == j as u32));
        }
    }

    #[test]
    #[should_panic]
    fn out_of_bounds_regions_are_refused() {
        let buf = SharedBuf::<u8>::new(10);
        // SAFETY: no other reference exists; the call must panic on bounds.
        let _ = unsafe { buf.region_mut(8, 3) };
    }
}
