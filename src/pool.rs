//! The worker pool of the offline tools (shardify, `--check`, the sample
//! and photo-crop generators): scoped threads compute `work(i)` for every
//! index of a range, and the calling thread takes the results in index
//! order.
//!
//! Guarantees: results reach `take` in index order whatever the thread
//! count, so anything built from them is deterministic; at most a window of
//! `8 x threads` results waits to be taken, so memory stays bounded however
//! slow one item is; an error from `take` stops the pool (items already
//! started finish, no new ones start); a panic in `work` is re-raised on the
//! calling thread when its index comes up. (The training loader has its own
//! long-lived workers: see [`crate::data::loader`].)

use std::collections::HashMap;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// Runs `work` over `range` on `threads` workers and hands each result to
/// `take` in index order. Returns the first error of `take`.
pub fn map_ordered<T: Send, E>(
    threads: usize,
    range: Range<usize>,
    work: impl Fn(usize) -> T + Sync,
    mut take: impl FnMut(usize, T) -> Result<(), E>,
) -> Result<(), E> {
    let threads = threads.max(1);
    let window = threads * 8;
    let work = &work;
    std::thread::scope(|s| {
        let (job_tx, job_rx) = crossbeam_channel::bounded::<usize>(window);
        let (res_tx, res_rx) = crossbeam_channel::unbounded();
        for _ in 0..threads {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            s.spawn(move || {
                for i in job_rx {
                    let out = catch_unwind(AssertUnwindSafe(|| work(i)));
                    if res_tx.send((i, out)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);
        let mut pending = HashMap::new();
        let mut next_send = range.start;
        for next in range.clone() {
            while next_send < range.end && next_send < next + window {
                // Cannot fail: `job_rx` lives until this closure returns.
                let _ = job_tx.send(next_send);
                next_send += 1;
            }
            let out = loop {
                if let Some(o) = pending.remove(&next) {
                    break o;
                }
                match res_rx.recv() {
                    Ok((i, o)) => {
                        pending.insert(i, o);
                    }
                    // Workers catch panics and outlive the job queue, so every
                    // job sent yields a result before the senders go away.
                    Err(_) => unreachable!("pool workers exited with jobs pending"),
                }
            };
            match out {
                Ok(v) => take(next, v)?,
                Err(panic) => resume_unwind(panic),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_order_whatever_the_thread_count() {
        for threads in [1, 2, 5] {
            let mut seen = Vec::new();
            map_ordered(
                threads,
                3..200,
                |i| {
                    // Uneven work so that results finish out of order.
                    std::thread::sleep(std::time::Duration::from_micros((i % 7) as u64 * 50));
                    i * i
                },
                |i, v| {
                    seen.push((i, v));
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
            let want: Vec<_> = (3..200).map(|i| (i, i * i)).collect();
            assert_eq!(seen, want, "threads {threads}");
        }
    }

    #[test]
    fn an_error_from_take_stops_the_pool() {
        let started = std::sync::atomic::AtomicUsize::new(0);
        let r = map_ordered(
            2,
            0..10_000,
            |i| {
                started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i
            },
            |i, _| if i == 5 { Err(i) } else { Ok(()) },
        );
        assert_eq!(r, Err(5));
        assert!(
            started.into_inner() < 100,
            "the pool went on after the error"
        );
    }

    #[test]
    #[should_panic(expected = "item 7")]
    fn a_panic_in_work_reaches_the_caller() {
        let _ = map_ordered(
            2,
            0..20,
            |i| {
                if i == 7 {
                    panic!("item 7");
                }
            },
            |_, ()| Ok::<(), ()>(()),
        );
    }
}
