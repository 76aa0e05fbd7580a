//! barlow: Barlow Twins self-supervised pretraining with a streaming data
//! loader.
//!
//! The modules follow the data's path: [`shardify`] turns image files into
//! [`shard`]s; then [`sampler`] -> [`decode`] -> [`augment`] -> [`batch`] ->
//! [`loader`] (workers, ordered delivery, prefetch) feed [`train`], which
//! runs [`model`] and [`loss`] and steps [`optim`] on a [`backend`] (CPU or
//! CUDA); [`eval`] measures the features (kNN). [`datasets`] makes sample
//! data so that every step runs without a download.

pub mod augment;
pub mod backend;
pub mod batch;
pub mod codec;
pub mod datasets;
pub mod decode;
pub mod eval;
pub mod loader;
pub mod loss;
pub mod model;
pub mod optim;
pub mod preview;
pub mod progress;
pub mod rng;
pub mod sampler;
pub mod shard;
pub mod shardify;
pub mod train;
