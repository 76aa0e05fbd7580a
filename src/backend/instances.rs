//! Each compiled-in GPU backend's copy of the training and check code,
//! compiled once, in the library.
//!
//! burn's GPU backends are generic over their runtime, so nearly all the
//! code a GPU run executes is compiled in the crate that names the backend
//! type. Without this module that is every binary and test that calls
//! [`crate::with_backend!`]: the `barlow` binary and `tests/device.rs` each
//! compiled their own copy (about 55 s apiece with `vulkan`). barlow's own
//! code is built without optimisation in the dev profile, where rustc
//! shares generic instances between crates (share-generics, its default
//! below opt-level 2): a caller links to the library's copy when there is
//! one. Naming the instances here makes that copy, and the binary and the
//! device tests then build in seconds (BENCHMARKS.md, "Device backends").
//! Optimised builds do not share generics, so this module is only in
//! builds with debug assertions, the dev profile's.

use burn::tensor::backend::AutodiffBackend;

use super::check;
use crate::train;

/// The entry points of one autodiff backend `B`, as addresses: naming a
/// generic function with its type arguments is what compiles it here.
fn entry_points<B: AutodiffBackend + crate::peers::PeerReduce>() -> Vec<*const ()> {
    vec![
        train::train_on::<B> as *const (),
        check::agreement::<B> as *const (),
        check::mixed_precision::<B> as *const (),
        check::upload::<B> as *const (),
        check::checkpoint_cross_load::<B> as *const (),
        check::feed_path::<B> as *const (),
        check::dtypes::<B> as *const (),
    ]
}

/// Every compiled-in GPU backend's entry points. Nothing calls this: it
/// exists so that the library compiles them (see the module's docs).
#[doc(hidden)]
pub fn all() -> Vec<*const ()> {
    let mut all = Vec::new();
    #[cfg(feature = "vulkan")]
    all.extend(entry_points::<super::VulkanF32>());
    #[cfg(feature = "cuda")]
    all.extend(entry_points::<super::CudaF32>());
    all
}
