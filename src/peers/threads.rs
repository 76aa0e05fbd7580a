//! [`Processes`] played by threads of one process, for tests: what MPI does
//! for `barlow train`, without MPI. The sum adds the processes' values in
//! rank order, so every "process" gets the same bits, as over MPI. A
//! process that waits longer than [`WAIT`] for the others gets an error,
//! so a test whose processes part ways fails instead of hanging.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Processes;

/// How long a process waits for the others at a sum.
const WAIT: Duration = Duration::from_secs(60);

/// One thread's handle; [`Threads::group`] makes one per process.
pub struct Threads {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    turn: Condvar,
}

struct State {
    /// Each process's values of the current sum.
    slots: Vec<Vec<f64>>,
    /// Processes at the current rendezvous, and rendezvous completed.
    arrived: usize,
    passed: u64,
}

impl Threads {
    /// Handles of `size` processes, rank order.
    pub fn group(size: usize) -> Vec<Arc<dyn Processes>> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                slots: vec![Vec::new(); size],
                arrived: 0,
                passed: 0,
            }),
            turn: Condvar::new(),
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

    fn state(&self) -> MutexGuard<'_, State> {
        match self.shared.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Waits until every process has arrived here.
    fn rendezvous(&self) -> Result<(), String> {
        let mut s = self.state();
        let round = s.passed;
        s.arrived += 1;
        if s.arrived == self.size {
            s.arrived = 0;
            s.passed += 1;
            self.shared.turn.notify_all();
            return Ok(());
        }
        let deadline = Instant::now() + WAIT;
        while s.passed == round {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "process {} waited {} s for the others",
                    self.rank,
                    WAIT.as_secs()
                ));
            }
            s = match self.shared.turn.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Ok(())
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
        self.state().slots[self.rank] = values.to_vec();
        self.rendezvous()?;
        let outcome = {
            let s = self.state();
            if s.slots.iter().any(|v| v.len() != values.len()) {
                Err("the processes summed different lengths".to_string())
            } else {
                values.fill(0.0);
                for slot in &s.slots {
                    for (v, x) in values.iter_mut().zip(slot) {
                        *v += x;
                    }
                }
                Ok(())
            }
        };
        // No process writes the next sum's values before all have read.
        self.rendezvous()?;
        outcome
    }
}
