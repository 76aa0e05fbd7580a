//! Zero-copy reading of shards through a memory map, or reading a record
//! into the caller's buffer (`pread`); read-ahead and cache hints for both.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap};

use crate::error::IoError;

use super::manifest::{MANIFEST_FILE, Manifest};
use super::{
    ENTRY_LEN, HEADER_LEN, Header, MAGIC, RecordMeta, ShardError, VERSION, u32_at, u64_at,
};

/// One record of a shard: its bytes borrowed from the memory map, and what
/// the index says about it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub bytes: &'a [u8],
    pub meta: RecordMeta,
}

/// An open, validated shard file.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    file: File,
    map: Mmap,
    header: Header,
}

impl Shard {
    /// Maps `path` and validates its header, index checksum and the bounds of
    /// every index entry. See the module docs for what that guarantees.
    pub fn open(path: impl AsRef<Path>) -> Result<Shard, ShardError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| {
            ShardError::Io(IoError {
                path: path.clone(),
                source,
            })
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: a shard is immutable once `ShardWriter::finish` has renamed
        // it into place; nothing in barlow writes to a finished shard. A file
        // changed by another process under the map could show us different
        // bytes, but every byte is treated as untrusted and bounds-checked
        // before use, so that cannot lead to an out-of-bounds access. A file
        // *truncated* under the map is outside this contract: reading a page
        // past its new end raises SIGBUS, which no bounds check can catch
        // (the length is checked against the index at open, not after).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = validate(&path, &map)?;
        Ok(Shard {
            path,
            file,
            map,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records in the shard.
    pub fn len(&self) -> usize {
        self.header.num_records as usize
    }

    pub fn is_empty(&self) -> bool {
        self.header.num_records == 0
    }

    /// Size of the shard file in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// CRC-32 of the index, as stored in (and verified against) the header.
    pub fn index_crc32(&self) -> u32 {
        self.header.index_crc32
    }

    /// What the index says about record `i`.
    pub fn meta(&self, i: usize) -> Result<RecordMeta, ShardError> {
        if i as u64 >= self.header.num_records {
            return Err(ShardError::NoSuchRecord {
                path: self.path.clone(),
                record: i as u64,
                num_records: self.header.num_records,
            });
        }
        let at = self.header.index_offset as usize + i * ENTRY_LEN;
        // `open` checked that the index lies inside the map.
        let entry: &[u8; ENTRY_LEN] = self.map[at..at + ENTRY_LEN]
            .try_into()
            .map_err(|_| self.out_of_file())?;
        Ok(RecordMeta::decode(entry))
    }

    /// Record `i`: its bytes straight out of the map, no copy.
    pub fn record(&self, i: usize) -> Result<Record<'_>, ShardError> {
        let meta = self.meta(i)?;
        let start = meta.offset as usize;
        let bytes = self
            .map
            .get(start..start + meta.len as usize)
            .ok_or_else(|| self.record_out_of_bounds(i, &meta))?;
        Ok(Record { bytes, meta })
    }

    /// Record `i` read into `buf` (resized to fit) with `pread`, not
    /// through the map, and checked against its CRC-32 as
    /// [`Shard::verify_record`] checks it.
    pub fn read_verified_into(
        &self,
        i: usize,
        buf: &mut Vec<u8>,
    ) -> Result<RecordMeta, ShardError> {
        let meta = self.meta(i)?;
        // `open` checked every entry against the file's length.
        match meta.offset.checked_add(meta.len as u64) {
            Some(end) if end <= self.file_len() => {}
            _ => return Err(self.record_out_of_bounds(i, &meta)),
        }
        buf.resize(meta.len as usize, 0);
        self.file
            .read_exact_at(buf, meta.offset)
            .map_err(|source| {
                ShardError::Io(IoError {
                    path: self.path.clone(),
                    source,
                })
            })?;
        self.check_crc(i, &meta, buf)?;
        Ok(meta)
    }

    /// Asks the kernel to read record `i`'s pages into the page cache now,
    /// in the background. A hint: when it fails (or `i` is out of range)
    /// the record is read when needed, which costs time only.
    pub fn will_need(&self, i: usize) {
        if let Ok(meta) = self.meta(i) {
            let _ =
                self.map
                    .advise_range(Advice::WillNeed, meta.offset as usize, meta.len as usize);
        }
    }

    /// Tells the kernel the map is read in no order: no read-around of the
    /// pages next to a fault. A hint, as [`Shard::will_need`].
    pub fn advise_random(&self) {
        let _ = self.map.advise(Advice::Random);
    }

    /// Drops the file's pages from the page cache, those no process holds
    /// mapped, dirty or locked: the next reads come from the disk. (A
    /// loader reading from the maps keeps the pages it has mapped.)
    pub fn evict(&self) -> Result<(), ShardError> {
        // SAFETY: posix_fadvise only reads its integer arguments; the file
        // descriptor is this shard's own open file.
        let rc =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(ShardError::Io(IoError {
                path: self.path.clone(),
                source: std::io::Error::from_raw_os_error(rc),
            }));
        }
        Ok(())
    }

    /// Checks record `i`'s bytes against the CRC-32 in its index entry.
    pub fn verify_record(&self, i: usize) -> Result<Record<'_>, ShardError> {
        let record = self.record(i)?;
        self.check_crc(i, &record.meta, record.bytes)?;
        Ok(record)
    }

    /// Record `i`'s `bytes` against the CRC-32 its index entry `meta` holds.
    fn check_crc(&self, i: usize, meta: &RecordMeta, bytes: &[u8]) -> Result<(), ShardError> {
        let computed = crc32fast::hash(bytes);
        if computed != meta.crc32 {
            // A changed length explains the mismatch better than damage.
            self.check_unchanged()?;
            return Err(ShardError::RecordChecksum {
                path: self.path.clone(),
                record: i as u64,
                offset: meta.offset,
                stored: meta.crc32,
                computed,
            });
        }
        Ok(())
    }

    /// Compares the file's length now with the length mapped at open: the
    /// cheap test for a shard truncated or rewritten under a running loader
    /// (done on error paths; a truncated map raises SIGBUS on the next read
    /// past the new end, which no check can intercept).
    pub fn check_unchanged(&self) -> Result<(), ShardError> {
        let now = std::fs::metadata(&self.path)
            .map_err(IoError::at(&self.path))?
            .len();
        let mapped = self.map.len() as u64;
        if now != mapped {
            return Err(ShardError::ChangedUnderMap {
                path: self.path.clone(),
                mapped,
                now,
            });
        }
        Ok(())
    }

    fn out_of_file(&self) -> ShardError {
        ShardError::IndexOutOfFile {
            path: self.path.clone(),
            num_records: self.header.num_records,
            index_offset: self.header.index_offset,
            file_len: self.map.len() as u64,
        }
    }

    fn record_out_of_bounds(&self, i: usize, meta: &RecordMeta) -> ShardError {
        ShardError::RecordOutOfBounds {
            path: self.path.clone(),
            record: i as u64,
            entry_offset: self.header.index_offset + (i * ENTRY_LEN) as u64,
            offset: meta.offset,
            end: meta.offset.saturating_add(meta.len as u64),
            data_start: HEADER_LEN as u64,
            data_end: self.header.index_offset,
        }
    }
}

/// Checks everything `Shard::open` promises, touching only the header and
/// the index.
fn validate(path: &Path, map: &[u8]) -> Result<Header, ShardError> {
    let path_buf = || path.to_path_buf();
    let file_len = map.len() as u64;
    if map.len() < HEADER_LEN {
        return Err(ShardError::TooShort {
            path: path_buf(),
            len: file_len,
        });
    }
    let h = &map[..HEADER_LEN];
    if h[0..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&h[0..8]);
        return Err(ShardError::BadMagic {
            path: path_buf(),
            found,
        });
    }
    let stored = u32_at(h, 60);
    let computed = crc32fast::hash(&h[0..60]);
    if stored != computed {
        return Err(ShardError::HeaderChecksum {
            path: path_buf(),
            stored,
            computed,
        });
    }
    let version = u32_at(h, 8);
    if version != VERSION {
        return Err(ShardError::UnsupportedVersion {
            path: path_buf(),
            version,
        });
    }
    for (offset, expected) in [(12usize, HEADER_LEN), (32, ENTRY_LEN)] {
        let found = u32_at(h, offset) as u64;
        if found != expected as u64 {
            return Err(ShardError::BadHeaderField {
                path: path_buf(),
                offset: offset as u64,
                found,
                expected: expected as u64,
            });
        }
    }
    let header = Header {
        num_records: u64_at(h, 16),
        index_offset: u64_at(h, 24),
        index_crc32: u32_at(h, 36),
    };
    let index_len = header.num_records.checked_mul(ENTRY_LEN as u64);
    let index_end = index_len.and_then(|l| l.checked_add(header.index_offset));
    if header.index_offset < HEADER_LEN as u64 || index_end != Some(file_len) {
        return Err(ShardError::IndexOutOfFile {
            path: path_buf(),
            num_records: header.num_records,
            index_offset: header.index_offset,
            file_len,
        });
    }
    // Both fit in the map, so in usize.
    let index = &map[header.index_offset as usize..];
    let computed = crc32fast::hash(index);
    if computed != header.index_crc32 {
        return Err(ShardError::IndexChecksum {
            path: path_buf(),
            index_offset: header.index_offset,
            stored: header.index_crc32,
            computed,
        });
    }
    let mut prev_end = HEADER_LEN as u64;
    for (i, chunk) in index.chunks_exact(ENTRY_LEN).enumerate() {
        let entry: &[u8; ENTRY_LEN] = chunk.try_into().map_err(|_| ShardError::IndexOutOfFile {
            path: path_buf(),
            num_records: header.num_records,
            index_offset: header.index_offset,
            file_len,
        })?;
        let meta = RecordMeta::decode(entry);
        let end = meta.offset.checked_add(meta.len as u64);
        match end {
            Some(end) if meta.offset >= prev_end && end <= header.index_offset => prev_end = end,
            _ => {
                return Err(ShardError::RecordOutOfBounds {
                    path: path_buf(),
                    record: i as u64,
                    entry_offset: header.index_offset + (i * ENTRY_LEN) as u64,
                    offset: meta.offset,
                    end: end.unwrap_or(u64::MAX),
                    data_start: prev_end,
                    data_end: header.index_offset,
                });
            }
        }
    }
    Ok(header)
}

/// A dataset folder: its manifest and every shard it lists, opened and
/// validated, addressed by a global record index in manifest order.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// `starts[k]` is the global index of shard k's first record; one extra
    /// entry holds the total.
    starts: Vec<u64>,
}

impl Dataset {
    /// Reads `dir/manifest.json` and opens every shard it lists, checking that
    /// each shard's record count, size and index checksum match the manifest.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset, ShardError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut starts = Vec::with_capacity(manifest.shards.len() + 1);
        let mut total = 0u64;
        for info in &manifest.shards {
            let shard = Shard::open(dir.join(&info.file))?;
            let mismatch = |what: String| ShardError::ManifestMismatch {
                path: shard.path().to_path_buf(),
                what,
            };
            if shard.len() as u64 != info.num_records {
                return Err(mismatch(format!(
                    "shard holds {} records, the manifest says {}",
                    shard.len(),
                    info.num_records
                )));
            }
            if shard.file_len() != info.bytes {
                return Err(mismatch(format!(
                    "shard is {} bytes, the manifest says {}",
                    shard.file_len(),
                    info.bytes
                )));
            }
            if shard.index_crc32() != info.index_crc32 {
                return Err(mismatch(format!(
                    "index checksum {:#010x} differs from the manifest's {:#010x}",
                    shard.index_crc32(),
                    info.index_crc32
                )));
            }
            starts.push(total);
            total += info.num_records;
            shards.push(shard);
        }
        starts.push(total);
        if total != manifest.num_records {
            return Err(ShardError::ManifestMismatch {
                path: dir.join(MANIFEST_FILE),
                what: format!(
                    "shards hold {total} records, num_records says {}",
                    manifest.num_records
                ),
            });
        }
        Ok(Dataset {
            dir,
            manifest,
            shards,
            starts,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Bytes of all its shard files.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(Shard::file_len).sum()
    }

    /// Total number of records.
    pub fn len(&self) -> u64 {
        self.manifest.num_records
    }

    pub fn is_empty(&self) -> bool {
        self.manifest.num_records == 0
    }

    /// The shard holding global record `index`, and the record's position in it.
    pub fn locate(&self, index: u64) -> Result<(usize, usize), ShardError> {
        if index >= self.len() {
            return Err(ShardError::NoSuchRecord {
                path: self.dir.clone(),
                record: index,
                num_records: self.len(),
            });
        }
        // starts is sorted; the shard is the last one starting at or before index.
        let shard = self.starts.partition_point(|&s| s <= index) - 1;
        Ok((shard, (index - self.starts[shard]) as usize))
    }

    /// Where global record `index` lives, for messages: its shard file,
    /// the record's number in it and its byte offset there.
    pub fn describe(&self, index: u64) -> String {
        match self.locate(index).and_then(|(s, local)| {
            let shard = &self.shards[s];
            Ok((
                shard.path().to_path_buf(),
                local,
                shard.record(local)?.meta.offset,
            ))
        }) {
            Ok((path, local, offset)) => {
                format!("{}: record {local} at offset {offset}", path.display())
            }
            Err(e) => e.to_string(),
        }
    }

    /// Global record `index` after checking its bytes against its CRC-32:
    /// damage becomes an error naming the shard, record and offset.
    pub fn verified_record(&self, index: u64) -> Result<Record<'_>, ShardError> {
        let (shard, local) = self.locate(index)?;
        self.shards[shard].verify_record(local)
    }

    /// Global record `index` read into `buf`, as
    /// [`Shard::read_verified_into`] reads it.
    pub fn read_verified_into(
        &self,
        index: u64,
        buf: &mut Vec<u8>,
    ) -> Result<RecordMeta, ShardError> {
        let (shard, local) = self.locate(index)?;
        self.shards[shard].read_verified_into(local, buf)
    }

    /// [`Shard::will_need`] of global record `index`.
    pub fn will_need(&self, index: u64) {
        if let Ok((shard, local)) = self.locate(index) {
            self.shards[shard].will_need(local);
        }
    }

    /// [`Shard::advise_random`] for every shard.
    pub fn advise_random(&self) {
        self.shards.iter().for_each(Shard::advise_random);
    }

    /// [`Shard::evict`] for every shard: the dataset's pages leave the
    /// page cache.
    pub fn evict(&self) -> Result<(), ShardError> {
        self.shards.iter().try_for_each(Shard::evict)
    }

    /// Global record `index`, borrowed from its shard's map.
    pub fn record(&self, index: u64) -> Result<Record<'_>, ShardError> {
        let (shard, local) = self.locate(index)?;
        self.shards[shard].record(local)
    }
}
