//! The optimiser of the reference (`docs/method.md`): LARS with two parameter groups, and the warm-up +
//! cosine learning-rate schedule, stepped every iteration.

pub mod lars;
pub mod schedule;

pub use lars::{Lars, LarsConfig, LarsState};
pub use schedule::WarmupCosine;
