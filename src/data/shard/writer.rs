//! Writing one shard atomically: bytes go to a hidden temporary file, which
//! is renamed to its final name only once it is complete and synced.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::manifest::ShardInfo;
use super::{ENTRY_LEN, HEADER_LEN, Header, RecordMeta, ShardError, shard_file_name};
use crate::error::IoError;

/// Builds one shard. Until [`ShardWriter::finish`] returns, only the
/// temporary file exists; dropping an unfinished writer leaves it behind for
/// the next run to delete (names of temporaries start with `.` and end in
/// `.tmp`).
pub struct ShardWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    file: BufWriter<File>,
    entries: Vec<RecordMeta>,
    pos: u64,
}

impl ShardWriter {
    /// Starts shard number `id` in `dir`.
    pub fn create(dir: &Path, id: usize) -> Result<ShardWriter, ShardError> {
        let name = shard_file_name(id);
        let final_path = dir.join(&name);
        let tmp_path = crate::fs::temporary_name(&final_path);
        let file = File::create(&tmp_path).map_err(IoError::at(&tmp_path))?;
        let mut w = ShardWriter {
            final_path,
            tmp_path,
            file: BufWriter::with_capacity(1 << 20, file),
            entries: Vec::new(),
            pos: 0,
        };
        // Placeholder header; the real one is written by `finish`.
        w.write(&[0u8; HEADER_LEN])?;
        Ok(w)
    }

    /// Bytes of record data written so far (header and index excluded).
    pub fn data_bytes(&self) -> u64 {
        self.pos - HEADER_LEN as u64
    }

    pub fn num_records(&self) -> usize {
        self.entries.len()
    }

    /// Appends one record. `bytes` must fit a u32 length.
    pub fn append(
        &mut self,
        bytes: &[u8],
        label: u32,
        width: u32,
        height: u32,
        flags: u32,
    ) -> Result<(), ShardError> {
        let len = u32::try_from(bytes.len()).map_err(|_| ShardError::RecordTooLarge {
            path: self.tmp_path.clone(),
            len: bytes.len() as u64,
        })?;
        self.entries.push(RecordMeta {
            offset: self.pos,
            len,
            label,
            width,
            height,
            crc32: crc32fast::hash(bytes),
            flags,
        });
        self.write(bytes)
    }

    /// Writes the index and header, syncs, and renames the file into place.
    pub fn finish(mut self) -> Result<ShardInfo, ShardError> {
        let index_offset = self.pos;
        let mut hasher = crc32fast::Hasher::new();
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let b = e.encode();
            hasher.update(&b);
            self.write(&b)?;
        }
        let header = Header {
            num_records: entries.len() as u64,
            index_offset,
            index_crc32: hasher.finalize(),
        };
        let total = self.pos;
        let tmp_path = self.tmp_path.clone();
        let io = |source| {
            ShardError::Io(IoError {
                path: tmp_path.clone(),
                source,
            })
        };
        let mut file = self.file.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header.encode()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        crate::fs::rename_durably(&self.tmp_path, &self.final_path)?;
        debug_assert_eq!(total, index_offset + (entries.len() * ENTRY_LEN) as u64);
        Ok(ShardInfo {
            file: self
                .final_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            num_records: entries.len() as u64,
            bytes: total,
            index_crc32: header.index_crc32,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ShardError> {
        self.file
            .write_all(bytes)
            .map_err(IoError::at(&self.tmp_path))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}
