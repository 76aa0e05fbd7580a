//! [`Processes`] played by threads of one process, for tests: what MPI does
//! for `barlow train`, without MPI. Each "process" is a peer of an
//! in-process group ([`super::group`]), whose all-reduce adds the values in
//! rank order (every process gets the same bits, as over MPI) and fails
//! after [`WAIT`] instead of hanging when the processes part ways.

use std::sync::Arc;
use std::time::Duration;

use super::{Peer, Processes};

/// How long a process waits for the others at a sum.
const WAIT: Duration = Duration::from_secs(60);

/// One thread's handle; [`Threads::group`] makes one per process.
pub struct Threads(Peer);

impl Threads {
    /// Handles of `size` processes, rank order.
    pub fn group(size: usize) -> Vec<Arc<dyn Processes>> {
        super::group(size, WAIT)
            .into_iter()
            .map(|peer| Arc::new(Threads(peer)) as Arc<dyn Processes>)
            .collect()
    }
}

impl Processes for Threads {
    fn rank(&self) -> usize {
        self.0.rank()
    }

    fn size(&self) -> usize {
        self.0.world()
    }

    fn sum(&self, values: &mut [f64]) -> Result<(), String> {
        self.0.all_reduce(values).map_err(|e| e.to_string())
    }
}
