//! Offline preparation: everything that runs before training.
//!
//! - [`shardify`]: image files -> checksummed shards + manifest, bad files
//!   rejected with reasons;
//! - [`transcode`]: any supported format -> RGB, downsizing, JPEG encoding
//!   (uses [`crate::data::decode`] for JPEG input, never the reverse);
//! - [`datasets`]: the procedural sample set and photo crops for benchmarks;
//! - [`preview`]: a picture of source images beside their two views.

pub mod datasets;
pub mod preview;
pub mod shardify;
pub mod transcode;
