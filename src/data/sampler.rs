//! Which records make up each batch, for every epoch and rank.
//!
//! Guarantees:
//! - The order of epoch `e` is a function of `(seed, e)` alone.
//! - With `world_size` ranks, every rank gets the same number of records
//!   (`num_records / world_size`, the rest left out of that epoch) and so the
//!   same number of batches: no rank ever waits on an uneven last batch.
//!   Ranks take interleaved slices of one global order, so together they see
//!   each kept record exactly once per epoch.
//! - A [`Position`] (epoch, batch) is all it takes to resume mid-epoch.
//!
//! Two orders: [`Order::Random`], a full permutation (best statistics; needs
//! the dataset in page cache or on fast random-access storage), and
//! [`Order::Blocked`], which shuffles blocks of consecutive records and then
//! records within a window of blocks, so that reads stay within a few shard
//! regions at a time (for datasets larger than RAM on disks that prefer
//! sequential reads).

use serde::{Deserialize, Serialize};

use crate::rng::{self, stream};

/// Where a run is: the next batch to deliver.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Position {
    pub epoch: u64,
    pub batch: u64,
}

/// The sampling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// A uniform random permutation of all records per epoch.
    #[default]
    Random,
    /// Shuffled blocks of consecutive records, then shuffled within windows
    /// of blocks: locality for datasets larger than RAM.
    Blocked,
    /// Records in dataset order, every epoch alike (evaluation passes).
    Sequential,
}

impl crate::Choice for Order {
    const NAMES: &'static [(Self, &'static str)] = &[
        (Order::Random, "random"),
        (Order::Blocked, "blocked"),
        (Order::Sequential, "sequential"),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerConfig {
    pub seed: u64,
    pub batch_size: usize,
    pub rank: usize,
    pub world_size: usize,
    /// Drop the last, incomplete batch of each epoch (default). Without it
    /// the last batch is smaller, on every rank alike.
    pub drop_last: bool,
    pub order: Order,
    /// `Blocked` only: records per block.
    pub block: usize,
    /// `Blocked` only: blocks per shuffle window.
    pub window: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            seed: 0,
            batch_size: 256,
            rank: 0,
            world_size: 1,
            drop_last: true,
            order: Order::Random,
            block: 256,
            window: 32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    #[error("batch size must be at least 1")]
    ZeroBatch,
    #[error("rank {rank} is not below world size {world_size}")]
    BadRank { rank: usize, world_size: usize },
    #[error(
        "{num_records} records over {world_size} ranks leave fewer than one batch of {batch_size} per rank"
    )]
    TooFewRecords {
        num_records: u64,
        world_size: usize,
        batch_size: usize,
    },
}

/// The batches of one rank, epoch after epoch.
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplerConfig,
    num_records: u64,
    per_rank: u64,
}

/// Stream tags, so that no two uses of the seed share a stream.
const TAG_ORDER: u64 = 0x006f_7264_6572;

impl Sampler {
    pub fn new(num_records: u64, cfg: SamplerConfig) -> Result<Sampler, SamplerError> {
        if cfg.batch_size == 0 {
            return Err(SamplerError::ZeroBatch);
        }
        if cfg.world_size == 0 || cfg.rank >= cfg.world_size {
            return Err(SamplerError::BadRank {
                rank: cfg.rank,
                world_size: cfg.world_size,
            });
        }
        let per_rank = num_records / cfg.world_size as u64;
        let enough = if cfg.drop_last {
            per_rank >= cfg.batch_size as u64
        } else {
            per_rank > 0
        };
        if !enough {
            return Err(SamplerError::TooFewRecords {
                num_records,
                world_size: cfg.world_size,
                batch_size: cfg.batch_size,
            });
        }
        Ok(Sampler {
            cfg,
            num_records,
            per_rank,
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    pub fn num_records(&self) -> u64 {
        self.num_records
    }

    /// Batches per epoch, the same on every rank.
    pub fn batches_per_epoch(&self) -> u64 {
        let b = self.cfg.batch_size as u64;
        if self.cfg.drop_last {
            self.per_rank / b
        } else {
            self.per_rank.div_ceil(b)
        }
    }

    /// The position `n` batches after `pos`.
    pub fn advance(&self, pos: Position, n: u64) -> Position {
        let per = self.batches_per_epoch();
        let flat = pos.epoch * per + pos.batch + n;
        Position {
            epoch: flat / per,
            batch: flat % per,
        }
    }

    /// This rank's records for `epoch`, in order; batch `b` is
    /// `[b * batch_size, (b + 1) * batch_size)` of it.
    pub fn epoch_order(&self, epoch: u64) -> Vec<u64> {
        let global = self.global_order(epoch);
        let world = self.cfg.world_size;
        global
            .into_iter()
            .skip(self.cfg.rank)
            .step_by(world)
            .take(self.per_rank as usize)
            .collect()
    }

    /// The records of batch `pos.batch`, taken from an `epoch_order` result.
    pub fn batch_of<'a>(&self, order: &'a [u64], batch: u64) -> &'a [u64] {
        let b = self.cfg.batch_size;
        let start = (batch as usize * b).min(order.len());
        let end = (start + b).min(order.len());
        &order[start..end]
    }

    fn global_order(&self, epoch: u64) -> Vec<u64> {
        let mut rng = stream(&[TAG_ORDER, self.cfg.seed, epoch]);
        let n = self.num_records;
        match self.cfg.order {
            Order::Random => {
                let mut v: Vec<u64> = (0..n).collect();
                rng::shuffle(&mut rng, &mut v);
                v
            }
            Order::Sequential => (0..n).collect(),
            Order::Blocked => {
                let block = self.cfg.block.max(1) as u64;
                let mut blocks: Vec<u64> = (0..n.div_ceil(block)).collect();
                rng::shuffle(&mut rng, &mut blocks);
                let mut v: Vec<u64> = blocks
                    .iter()
                    .flat_map(|&b| b * block..((b + 1) * block).min(n))
                    .collect();
                let window = (self.cfg.window.max(1) as u64 * block) as usize;
                for chunk in v.chunks_mut(window) {
                    rng::shuffle(&mut rng, chunk);
                }
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn cfg(batch: usize, rank: usize, world: usize) -> SamplerConfig {
        SamplerConfig {
            seed: 42,
            batch_size: batch,
            rank,
            world_size: world,
            ..SamplerConfig::default()
        }
    }

    #[test]
    fn each_epoch_is_a_permutation_that_depends_on_seed_and_epoch() {
        let s = Sampler::new(1000, cfg(10, 0, 1)).unwrap();
        let e0 = s.epoch_order(0);
        let mut sorted = e0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(e0, s.epoch_order(0));
        assert_ne!(e0, s.epoch_order(1));
        let other = Sampler::new(
            1000,
            SamplerConfig {
                seed: 43,
                ..cfg(10, 0, 1)
            },
        )
        .unwrap();
        assert_ne!(e0, other.epoch_order(0));
        // Not the identity or nearly so.
        let fixed = e0
            .iter()
            .enumerate()
            .filter(|(i, v)| *i as u64 == **v)
            .count();
        assert!(fixed < 10, "{fixed} fixed points");
    }

    #[test]
    fn ranks_get_equal_disjoint_slices_covering_the_kept_records() {
        for (n, world, batch) in [(1003u64, 4usize, 16usize), (100, 3, 7), (64, 8, 8)] {
            let samplers: Vec<_> = (0..world)
                .map(|r| Sampler::new(n, cfg(batch, r, world)).unwrap())
                .collect();
            let per = n / world as u64;
            let mut seen = HashSet::new();
            for s in &samplers {
                assert_eq!(s.batches_per_epoch(), per / batch as u64);
                let o = s.epoch_order(3);
                assert_eq!(o.len() as u64, per);
                for r in o {
                    assert!(seen.insert(r), "record {r} on two ranks");
                }
            }
            assert_eq!(seen.len() as u64, per * world as u64);
        }
    }

    #[test]
    fn drop_last_off_keeps_a_short_last_batch_on_every_rank() {
        let s = Sampler::new(
            50,
            SamplerConfig {
                drop_last: false,
                ..cfg(8, 1, 2)
            },
        )
        .unwrap();
        assert_eq!(s.batches_per_epoch(), 4); // 25 records: 8, 8, 8, 1
        let o = s.epoch_order(0);
        assert_eq!(s.batch_of(&o, 3).len(), 1);
        assert_eq!(s.batch_of(&o, 0).len(), 8);
    }

    #[test]
    fn positions_advance_across_epochs_and_resume_exactly() {
        let s = Sampler::new(100, cfg(10, 0, 1)).unwrap();
        assert_eq!(
            s.advance(Position { epoch: 0, batch: 8 }, 3),
            Position { epoch: 1, batch: 1 }
        );
        // The batches after a saved position are those an uninterrupted walk sees.
        let walk: Vec<Vec<u64>> = (0..25u64)
            .map(|k| {
                let p = s.advance(Position::default(), k);
                s.batch_of(&s.epoch_order(p.epoch), p.batch).to_vec()
            })
            .collect();
        let saved = s.advance(Position::default(), 13);
        let json = serde_json::to_string(&saved).unwrap();
        let restored: Position = serde_json::from_str(&json).unwrap();
        let fresh = Sampler::new(100, cfg(10, 0, 1)).unwrap();
        for k in 0..12u64 {
            let p = fresh.advance(restored, k);
            assert_eq!(
                fresh.batch_of(&fresh.epoch_order(p.epoch), p.batch),
                &walk[13 + k as usize][..]
            );
        }
    }

    #[test]
    fn blocked_order_is_a_permutation_with_locality() {
        let c = SamplerConfig {
            order: Order::Blocked,
            block: 50,
            window: 4,
            ..cfg(10, 0, 1)
        };
        let s = Sampler::new(10_000, c).unwrap();
        let o = s.epoch_order(0);
        let mut sorted = o.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10_000).collect::<Vec<_>>());
        // Each window of 200 consecutive positions touches at most 4 blocks.
        for w in o.chunks(200) {
            let blocks: HashSet<u64> = w.iter().map(|r| r / 50).collect();
            assert!(blocks.len() <= 4, "{} blocks", blocks.len());
        }
        assert_ne!(o, s.epoch_order(1));
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert_eq!(
            Sampler::new(10, cfg(0, 0, 1)).unwrap_err(),
            SamplerError::ZeroBatch
        );
        assert!(matches!(
            Sampler::new(10, cfg(2, 2, 2)),
            Err(SamplerError::BadRank { .. })
        ));
        assert!(matches!(
            Sampler::new(10, cfg(8, 0, 2)),
            Err(SamplerError::TooFewRecords { .. })
        ));
    }
}
