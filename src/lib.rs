//! barlow: Barlow Twins self-supervised pretraining with a streaming data
//! loader.
//!
//! The modules follow the data's path:
//!
//! - [`prep`] (offline): [`prep::shardify`] turns image files into shards;
//!   [`prep::transcode`] re-encodes what is not a JPEG; [`prep::datasets`]
//!   makes sample data so that every step runs without a download;
//!   [`prep::preview`] draws views for a person to look at.
//! - [`data`] (at training time, in order): [`data::shard`] ->
//!   [`data::sampler`] -> [`data::decode`] -> [`data::augment`] ->
//!   [`data::loader`] (batch slots, workers, prefetch).
//! - The method: [`model`] (ResNet + projector), [`loss`] (the Barlow Twins
//!   objective), [`optim`] (LARS and its schedule), [`train`] (the loop),
//!   [`peers`] (several devices), [`eval`] (kNN, the linear probe), on a
//!   [`backend`] (CPU or a GPU).
//! - What a run leaves: [`run`] (the run folder: config, logs,
//!   checkpoints), read by [`eval`] and drawn by [`report`].
//! - Small shared pieces: [`chart`] (line charts), [`fs`] (atomic writes), [`pool`] (the worker
//!   pool of the offline tools), [`rng`] (named random streams),
//!   [`progress`] (reporting without printing), [`error`] (the I/O error
//!   shape every module uses).
//!
//! The method and every deviation from the reference are described in
//! `docs/method.md`.

pub mod data;
pub mod prep;

pub mod backend;
pub mod eval;
pub mod loss;
pub mod model;
pub mod optim;
pub mod peers;
pub mod report;
pub mod run;
pub mod train;

pub mod chart;
pub mod error;
pub mod fs;
pub mod pool;
pub mod progress;
pub mod rng;

/// A setting with a fixed set of names: what a command line or a config
/// file may say for it. The binaries build their argument parsers from
/// [`Choice::NAMES`]; the library derives no command-line traits itself.
pub trait Choice: Copy + PartialEq + 'static {
    /// Every value and its name, in the order help texts list them.
    const NAMES: &'static [(Self, &'static str)];

    /// The value's name.
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(v, _)| *v == self)
            .map_or("?", |(_, n)| n)
    }

    /// The value called `name`, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(v, _)| *v)
    }
}

/// A size in bytes from the command line: a number, or with a K, M or G
/// suffix (powers of 1024): `256M`, `20G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown size suffix {c:?}; use K, M or G")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?} is not a usable size")),
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_and_without_suffix() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("lots").is_err());
    }
}
