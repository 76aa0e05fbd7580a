//! `manifest.json`: the one file that says a dataset folder is complete.
//!
//! `shardify` writes it last and atomically, so its presence means every shard
//! it lists was fully written and renamed into place before.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ShardError;
use crate::error::IoError;

/// Name of the manifest inside a dataset folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Value of the `format` field.
pub const FORMAT_NAME: &str = "barlow-shards";

/// A dataset's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Shard format version, [`super::VERSION`].
    pub version: u32,
    pub num_records: u64,
    /// Class names; record label `i` is `classes[i]`. Empty when unlabelled.
    pub classes: Vec<String>,
    pub shards: Vec<ShardInfo>,
    /// How the dataset was made.
    pub source: SourceInfo,
}

/// One shard as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name, relative to the dataset folder.
    pub file: String,
    pub num_records: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// The index checksum stored in the shard header.
    pub index_crc32: u32,
}

/// Provenance: what `shardify` read and with which options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The input path as given.
    pub input: String,
    /// `image-folder`, `flat` or `file-list`.
    pub layout: String,
    /// Files considered (kept + rejected).
    pub files_seen: u64,
    /// Kept records re-encoded from another format.
    pub transcoded: u64,
    /// Kept records downsized by `--max-side`.
    pub downsized: u64,
    /// Rejected files by reason; the paths are in `rejects.tsv`.
    pub rejected: BTreeMap<String, u64>,
    /// The options that shaped the bytes, as `shardify` saw them.
    pub options: serde_json::Value,
    /// The tool and version that wrote the dataset.
    pub tool: String,
}

impl Manifest {
    /// Reads and parses a manifest, checking its format name and version.
    pub fn read(path: &Path) -> Result<Manifest, ShardError> {
        let bytes = std::fs::read(path).map_err(IoError::at(path))?;
        Manifest::parse(&bytes, path)
    }

    /// Parses manifest `bytes` read from `path` (named in errors), checking
    /// the format name and version.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest, ShardError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|source| ShardError::ManifestParse {
                path: path.to_path_buf(),
                source,
            })?;
        if m.format != FORMAT_NAME || m.version != super::VERSION {
            return Err(ShardError::ManifestMismatch {
                path: path.to_path_buf(),
                what: format!(
                    "format {:?} version {} is not {FORMAT_NAME:?} version {}",
                    m.format,
                    m.version,
                    super::VERSION
                ),
            });
        }
        Ok(m)
    }

    /// Writes the manifest atomically (temporary file, sync, rename).
    pub fn write(&self, path: &Path) -> Result<(), ShardError> {
        let mut json =
            serde_json::to_vec_pretty(self).map_err(|source| ShardError::ManifestParse {
                path: path.to_path_buf(),
                source,
            })?;
        json.push(b'\n');
        Ok(crate::fs::write_atomically(path, &json)?)
    }
}
