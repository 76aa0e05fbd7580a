//! Stopping early: a flag raised (by a signal handler, say) stops the run
//! after the step in flight, which is then checkpointed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The run's stop flag, as every peer of every process agrees on it.
pub(super) struct Stopping {
    flag: Option<Arc<AtomicBool>>,
    processes: usize,
}

impl Stopping {
    pub(super) fn new(flag: Option<Arc<AtomicBool>>, processes: usize) -> Stopping {
        Stopping { flag, processes }
    }

    /// Whether this process asks to stop: its vote in the next step, where
    /// a vote on any process stops every peer after that step.
    pub(super) fn asked(&self) -> bool {
        self.flag
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Whether the run stops after the step just taken, `voted` being the
    /// step's collective answer. In one process peer 0 may also stop alone
    /// (the other peers stop when it closes their feeds), so a flag raised
    /// during the step counts too; across processes only the vote does.
    pub(super) fn after(&self, voted: bool) -> bool {
        voted || (self.processes == 1 && self.asked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_raised_during_a_step_stops_one_process_but_only_a_vote_stops_several() {
        let flag = Arc::new(AtomicBool::new(false));
        let one = Stopping::new(Some(Arc::clone(&flag)), 1);
        let many = Stopping::new(Some(Arc::clone(&flag)), 2);
        assert!(!one.asked() && !one.after(false) && !many.after(false));
        flag.store(true, Ordering::Relaxed);
        assert!(one.asked() && many.asked());
        assert!(one.after(false), "one process stops on the flag alone");
        assert!(!many.after(false), "processes stop together, on the vote");
        assert!(many.after(true));
        assert!(!Stopping::new(None, 1).after(false));
    }
}
