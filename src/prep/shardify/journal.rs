//! The record of an unfinished run, so that a rerun resumes instead of
//! starting over or duplicating records.
//!
//! `.shardify-journal.json` is written (atomically) before the first shard and
//! again after every shard is renamed into place. It names the shards that
//! are complete and the input position where the next shard starts. Since a
//! shard's bytes depend only on the inputs from that position on, a resumed
//! run writes exactly what an uninterrupted one would have. The journal is
//! removed once the manifest is written.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ShardifyError;
use crate::data::shard::ShardInfo;
use crate::error::IoError;

pub const JOURNAL_FILE: &str = ".shardify-journal.json";

/// One rejected input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedFile {
    pub path: String,
    pub reason: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// Hash of the input list and of every option that shapes the bytes.
    pub fingerprint: String,
    /// Shards complete and renamed into place, in order.
    pub shards: Vec<ShardInfo>,
    /// Index (in input order) of the first input not yet in a complete shard.
    pub next_input: usize,
    pub transcoded: u64,
    pub downsized: u64,
    /// Rejected inputs before `next_input`.
    pub rejected: Vec<RejectedFile>,
}

impl Journal {
    pub fn read(path: &Path) -> Result<Journal, ShardifyError> {
        let bytes = std::fs::read(path).map_err(IoError::at(path))?;
        Journal::parse(&bytes, path)
    }

    /// Parses journal `bytes` read from `path` (named in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Journal, ShardifyError> {
        serde_json::from_slice(bytes).map_err(|e| {
            ShardifyError::Refused(format!(
                "{} is damaged ({e}); rerun with --overwrite to start over",
                path.display()
            ))
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), ShardifyError> {
        let json = serde_json::to_vec(self).map_err(|e| ShardifyError::Input(e.to_string()))?;
        crate::fs::write_atomically(path, &json)?;
        Ok(())
    }
}

/// FNV-1a, 64 bits: a stable hash (std's hasher may change between releases).
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator, so that ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}
