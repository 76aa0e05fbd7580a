//! The on-disk shard format: what `shardify` writes and the loader maps.
//!
//! A dataset is a folder holding `manifest.json` (see [`manifest`]) and shard
//! files `shard-NNNNN.bshard`. A shard holds the encoded image bytes (JPEG) of
//! many records back to back, followed by a fixed-size index. All integers are
//! little-endian. Byte by byte:
//!
//! ```text
//! offset  size  field
//! ------  ----  ----------------------------------------------------------
//! Header (64 bytes, at offset 0)
//!      0     8  magic, the ASCII bytes "BARLOWSH"
//!      8     4  format version (u32) = 1
//!     12     4  header length in bytes (u32) = 64
//!     16     8  number of records N (u64)
//!     24     8  index offset I (u64): where the index starts
//!     32     4  index entry length in bytes (u32) = 32
//!     36     4  CRC-32 (IEEE) of the N * 32 index bytes (u32)
//!     40    20  reserved, zero
//!     60     4  CRC-32 (IEEE) of header bytes 0..60 (u32)
//! Data (from offset 64 to I)
//!     64     -  record bytes, back to back, in record order
//! Index (N entries of 32 bytes, from offset I to the end of the file)
//!   +0       8  record offset from the start of the file (u64)
//!   +8       4  record length in bytes (u32)
//!   +12      4  label (u32); 0xFFFF_FFFF = unlabelled
//!   +16      4  width in pixels (u32)
//!   +20      4  height in pixels (u32)
//!   +24      4  CRC-32 (IEEE) of the record bytes (u32)
//!   +28      4  flags (u32): bit 0 transcoded from another format,
//!               bit 1 downsized by `--max-side`; other bits zero
//! ```
//!
//! Guarantees of [`Shard::open`]: the header and index checksums match, the
//! file is exactly `I + N * 32` bytes long, and every record lies inside the
//! data region, after the previous one. Nothing read from disk is used as an
//! offset before it has been checked, so a damaged or hostile shard yields a
//! [`ShardError`] naming the file and the offending offset, never a panic or
//! an out-of-bounds read. Record checksums are verified on demand
//! ([`Shard::verify_record`]) since that touches every byte.

pub mod manifest;
mod reader;
mod writer;

pub use manifest::{Manifest, ShardInfo};
pub use reader::{Dataset, Record, Shard};
pub use writer::ShardWriter;

use crate::error::IoError;
use std::path::PathBuf;

/// The eight bytes every shard starts with.
pub const MAGIC: [u8; 8] = *b"BARLOWSH";
/// The shard format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Length of one index entry.
pub const ENTRY_LEN: usize = 32;
/// The label of a record that has none (unlabelled datasets).
pub const NO_LABEL: u32 = u32::MAX;
/// Flag bit: the record was decoded from another format and re-encoded as JPEG.
pub const FLAG_TRANSCODED: u32 = 1;
/// Flag bit: the record was downsized (`--max-side`) and re-encoded.
pub const FLAG_DOWNSIZED: u32 = 2;

/// The file name of shard number `id` inside a dataset folder.
pub fn shard_file_name(id: usize) -> String {
    format!("shard-{id:05}.bshard")
}

/// What the index says about one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// Offset of the record's first byte from the start of the shard file.
    pub offset: u64,
    /// Length of the record in bytes.
    pub len: u32,
    /// Class label, or [`NO_LABEL`].
    pub label: u32,
    pub width: u32,
    pub height: u32,
    /// CRC-32 of the record bytes.
    pub crc32: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
}

impl RecordMeta {
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..16].copy_from_slice(&self.label.to_le_bytes());
        b[16..20].copy_from_slice(&self.width.to_le_bytes());
        b[20..24].copy_from_slice(&self.height.to_le_bytes());
        b[24..28].copy_from_slice(&self.crc32.to_le_bytes());
        b[28..32].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    fn decode(b: &[u8; ENTRY_LEN]) -> Self {
        RecordMeta {
            offset: u64_at(b, 0),
            len: u32_at(b, 8),
            label: u32_at(b, 12),
            width: u32_at(b, 16),
            height: u32_at(b, 20),
            crc32: u32_at(b, 24),
            flags: u32_at(b, 28),
        }
    }
}

/// The fixed header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    num_records: u64,
    index_offset: u64,
    index_crc32: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.num_records.to_le_bytes());
        b[24..32].copy_from_slice(&self.index_offset.to_le_bytes());
        b[32..36].copy_from_slice(&(ENTRY_LEN as u32).to_le_bytes());
        b[36..40].copy_from_slice(&self.index_crc32.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Everything that can be wrong with a shard or a dataset folder. Each variant
/// names the file and, where one applies, the byte offset at fault.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: file is {len} bytes, shorter than the {HEADER_LEN}-byte shard header")]
    TooShort { path: PathBuf, len: u64 },
    #[error("{path}: bad magic at offset 0 (found {found:02x?}): not a barlow shard")]
    BadMagic { path: PathBuf, found: [u8; 8] },
    #[error(
        "{path}: shard format version {version} at offset 8 is not supported (this build reads {VERSION})"
    )]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{path}: header field at offset {offset} is {found}, expected {expected}")]
    BadHeaderField {
        path: PathBuf,
        offset: u64,
        found: u64,
        expected: u64,
    },
    #[error(
        "{path}: header checksum mismatch at offset 60 (stored {stored:#010x}, computed {computed:#010x})"
    )]
    HeaderChecksum {
        path: PathBuf,
        stored: u32,
        computed: u32,
    },
    #[error(
        "{path}: index of {num_records} records at offset {index_offset} does not end at the end of the {file_len}-byte file (truncated or damaged)"
    )]
    IndexOutOfFile {
        path: PathBuf,
        num_records: u64,
        index_offset: u64,
        file_len: u64,
    },
    #[error(
        "{path}: index checksum mismatch for the index at offset {index_offset} (stored {stored:#010x}, computed {computed:#010x})"
    )]
    IndexChecksum {
        path: PathBuf,
        index_offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "{path}: record {record} (index entry at offset {entry_offset}) claims bytes {offset}..{end}, outside the data region {data_start}..{data_end}"
    )]
    RecordOutOfBounds {
        path: PathBuf,
        record: u64,
        entry_offset: u64,
        offset: u64,
        end: u64,
        data_start: u64,
        data_end: u64,
    },
    #[error(
        "{path}: record {record} at offset {offset}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    RecordChecksum {
        path: PathBuf,
        record: u64,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "{path}: the file changed while mapped (was {mapped} bytes at open, is {now} now); a shard must not be modified or truncated while a loader reads it"
    )]
    ChangedUnderMap {
        path: PathBuf,
        mapped: u64,
        now: u64,
    },
    #[error("{path}: a record of {len} bytes exceeds the 4 GiB record limit")]
    RecordTooLarge { path: PathBuf, len: u64 },
    #[error("{path}: record {record} requested, the shard holds {num_records}")]
    NoSuchRecord {
        path: PathBuf,
        record: u64,
        num_records: u64,
    },
    #[error("{path}: cannot parse manifest: {source}")]
    ManifestParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {what}")]
    ManifestMismatch { path: PathBuf, what: String },
    #[error("{path}: a remote shard's records are read through its dataset, not mapped")]
    NotLocal { path: PathBuf },
    #[error(transparent)]
    Remote(#[from] crate::data::source::RemoteError),
}

#[cfg(test)]
mod tests;
