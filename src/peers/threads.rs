//! [`Processes`] played by threads of one process, for tests: what MPI does
//! for `barlow train`, without MPI. The sum adds the processes' values in
//! rank order, so every "process" gets the same bits, as over MPI.

use std::sync::{Arc, Barrier, Mutex};

use super::Processes;

/// One thread's handle; [`Threads::group`] makes one per process.
pub struct Threads {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

struct Shared {
    /// Each process's values of the current sum.
    slots: Mutex<Vec<Vec<f64>>>,
    /// Every process has written its slot; every process has read them all.
    turn: Barrier,
}

impl Threads {
    /// Handles of `size` processes, rank order.
    pub fn group(size: usize) -> Vec<Arc<dyn Processes>> {
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![Vec::new(); size]),
            turn: Barrier::new(size),
        });
        (0..size)
            .map(|rank| {
                Arc::new(Threads {
                    rank,
                    size,
                    shared: Arc::clone(&shared),
                }) as Arc<dyn Processes>
            })
            .collect()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f64>>> {
        match self.shared.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Processes for Threads {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum(&self, values: &mut [f64]) -> Result<(), String> {
        self.slots()[self.rank] = values.to_vec();
        self.shared.turn.wait();
        let outcome = {
            let slots = self.slots();
            if slots.iter().any(|s| s.len() != values.len()) {
                Err("the processes summed different lengths".to_string())
            } else {
                values.fill(0.0);
                for slot in slots.iter() {
                    for (v, x) in values.iter_mut().zip(slot) {
                        *v += x;
                    }
                }
                Ok(())
            }
        };
        // No process writes the next sum's values before all have read.
        self.shared.turn.wait();
        outcome
    }
}
