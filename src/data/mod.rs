//! The runtime data path, one module per stage, in the order a sample
//! travels it:
//!
//! 1. [`shard`]: the on-disk format; records read straight out of memory
//!    maps, checksums verified;
//!    [`source`]: a local folder, or an object store through a bounded
//!    cache (the records' bytes come from either alike);
//! 2. [`sampler`]: which records make each batch (per-epoch order, ranks,
//!    resumable position);
//! 3. [`decode`]: JPEG bytes -> RGBx pixels in a reused buffer;
//! 4. [`augment`]: the two views (crop + resize, colour, blur, output);
//! 5. [`loader`]: worker threads writing samples into batch slots, ordered
//!    delivery and prefetch.

pub mod augment;
pub mod decode;
pub mod loader;
pub mod sampler;
pub mod shard;
pub mod source;
