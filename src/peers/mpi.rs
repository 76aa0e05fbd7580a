//! Processes over MPI (feature `mpi`): one process per launch slot of
//! `mpirun -np P` (or `srun`), each with its own in-process peers. The
//! sum over the processes is a reduce to process 0 then a broadcast, so
//! every process gets process 0's bits.

use std::sync::Mutex;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::Processes;

/// MPI, started for this process.
pub struct Mpi {
    world: World,
    rank: usize,
    size: usize,
    /// This process's rank among the job's processes on its machine.
    local_rank: usize,
    /// The outgoing copy of a reduce, reused.
    scratch: Mutex<Vec<f64>>,
    /// Kept last: dropping it finalises MPI.
    _universe: Universe,
}

struct World(SimpleCommunicator);

// SAFETY: MPI was initialised with at least `Threading::Serialized`
// (checked in `Mpi::from_env`), which allows calls from any thread, one at
// a time. barlow calls it one at a time: `Processes::sum` runs in peer 0's
// start-up check (`peers::agree`), before any peer of the process can reach
// an all-reduce, then only under the peer group's lock; `abort` only ends
// the process.
unsafe impl Send for World {}
// SAFETY: as for `Send`: no two threads call MPI at once.
unsafe impl Sync for World {}

/// Environment variables set by MPI launchers (Open MPI's mpirun, MPICH's
/// and Slurm's PMI, PMIx).
const LAUNCHED: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_RANK",
    "MPI_LOCALNRANKS",
];

impl Mpi {
    /// Starts MPI when an MPI launcher started this process, else `None`
    /// (a plain `barlow train` stays a single process).
    pub fn from_env() -> Result<Option<Mpi>, String> {
        if !LAUNCHED.iter().any(|v| std::env::var_os(v).is_some()) {
            return Ok(None);
        }
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or("MPI was already initialised in this process")?;
        if threading < mpi::Threading::Serialized {
            return Err(format!(
                "this MPI library offers threading level {threading:?}; barlow needs Serialized"
            ));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Ok(Some(Mpi {
            world: World(world),
            rank,
            size,
            local_rank,
            scratch: Mutex::new(Vec::new()),
            _universe: universe,
        }))
    }

    /// This process's rank among the job's processes on its machine: the
    /// index of its first device there.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Waits until every process of the job has called it: at the end of a
    /// run, so that no process exits (which can make the launcher end the
    /// job) while process 0 still writes its last checkpoint.
    pub fn barrier(&self) {
        self.world.0.barrier();
    }

    /// Ends every process of the job with `code` (MPI_Abort): what a
    /// process does when its training fails, so that no other waits.
    pub fn abort(&self, code: i32) -> ! {
        self.world.0.abort(code)
    }
}

impl Processes for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum(&self, values: &mut [f64]) -> Result<(), String> {
        if self.size == 1 {
            return Ok(());
        }
        let mut send = match self.scratch.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        send.clear();
        send.extend_from_slice(values);
        let root = self.world.0.process_at_rank(0);
        if self.rank == 0 {
            root.reduce_into_root(&send[..], values, SystemOperation::sum());
        } else {
            root.reduce_into(&send[..], SystemOperation::sum());
        }
        root.broadcast_into(values);
        Ok(())
    }
}
