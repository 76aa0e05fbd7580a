//! Zero-copy reading of shards through a memory map, or reading a record
//! into the caller's buffer (`pread`); read-ahead and cache hints for both.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Advice, Mmap};

#[cfg(feature = "remote")]
use crate::data::source::Remote;
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

/// An open, validated shard: a local file (mapped), or a remote object
/// whose header and index were fetched (its records come through
/// [`crate::data::source`]).
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    body: Body,
    header: Header,
}

#[derive(Debug)]
enum Body {
    Mapped { file: File, map: Mmap },
    Remote { index: Vec<u8>, len: u64 },
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
        let header = validate_header(&path, &map, map.len() as u64)?;
        // `validate_header` checked that the index ends at the file's end.
        validate_index(&path, &header, &map[header.index_offset as usize..])?;
        Ok(Shard {
            path,
            body: Body::Mapped { file, map },
            header,
        })
    }

    /// A remote shard of `file_len` bytes named `path`, from its first 64
    /// bytes and its index, validated as [`Shard::open`] validates a file.
    pub fn from_parts(
        path: PathBuf,
        header: &[u8],
        index: Vec<u8>,
        file_len: u64,
    ) -> Result<Shard, ShardError> {
        let h = validate_header(&path, header, file_len)?;
        if index.len() as u64 != file_len - h.index_offset {
            return Err(ShardError::IndexOutOfFile {
                path,
                num_records: h.num_records,
                index_offset: h.index_offset,
                file_len,
            });
        }
        validate_index(&path, &h, &index)?;
        Ok(Shard {
            path,
            body: Body::Remote {
                index,
                len: file_len,
            },
            header: h,
        })
    }

    /// The index bytes.
    fn index(&self) -> &[u8] {
        match &self.body {
            // `open` checked that the index lies inside the map.
            Body::Mapped { map, .. } => map.get(self.header.index_offset as usize..).unwrap_or(&[]),
            Body::Remote { index, .. } => index,
        }
    }

    /// The map, for a local shard.
    fn map(&self) -> Option<&Mmap> {
        match &self.body {
            Body::Mapped { map, .. } => Some(map),
            Body::Remote { .. } => None,
        }
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
        match &self.body {
            Body::Mapped { map, .. } => map.len() as u64,
            Body::Remote { len, .. } => *len,
        }
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
        let at = i * ENTRY_LEN;
        let entry: &[u8; ENTRY_LEN] = self
            .index()
            .get(at..at + ENTRY_LEN)
            .and_then(|e| e.try_into().ok())
            .ok_or_else(|| self.out_of_file())?;
        Ok(RecordMeta::decode(entry))
    }

    /// Record `i`: its bytes straight out of the map, no copy (a local
    /// shard; a remote one's records are read through its dataset).
    pub fn record(&self, i: usize) -> Result<Record<'_>, ShardError> {
        let meta = self.meta(i)?;
        let start = meta.offset as usize;
        let Some(map) = self.map() else {
            return Err(ShardError::NotLocal {
                path: self.path.clone(),
            });
        };
        let bytes = map
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
        let Body::Mapped { file, .. } = &self.body else {
            return Err(ShardError::NotLocal {
                path: self.path.clone(),
            });
        };
        buf.resize(meta.len as usize, 0);
        file.read_exact_at(buf, meta.offset).map_err(|source| {
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
        if let (Ok(meta), Some(map)) = (self.meta(i), self.map()) {
            let _ = map.advise_range(Advice::WillNeed, meta.offset as usize, meta.len as usize);
        }
    }

    /// Tells the kernel the map is read in no order: no read-around of the
    /// pages next to a fault. A hint, as [`Shard::will_need`].
    pub fn advise_random(&self) {
        if let Some(map) = self.map() {
            let _ = map.advise(Advice::Random);
        }
    }

    /// Drops the file's pages from the page cache, those no process holds
    /// mapped, dirty or locked: the next reads come from the disk. (A
    /// loader reading from the maps keeps the pages it has mapped.)
    pub fn evict(&self) -> Result<(), ShardError> {
        let Body::Mapped { file, .. } = &self.body else {
            return Ok(());
        };
        // SAFETY: posix_fadvise only reads its integer arguments; the file
        // descriptor is this shard's own open file.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
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
    pub(crate) fn check_crc(
        &self,
        i: usize,
        meta: &RecordMeta,
        bytes: &[u8],
    ) -> Result<(), ShardError> {
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
        let Some(map) = self.map() else {
            return Ok(());
        };
        let now = std::fs::metadata(&self.path)
            .map_err(IoError::at(&self.path))?
            .len();
        let mapped = map.len() as u64;
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
            file_len: self.file_len(),
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

/// Checks the 64-byte header at the start of `bytes` against a file of
/// `file_len` bytes: magic, checksum, version, field sizes, and an index
/// that ends at the end of the file.
fn validate_header(path: &Path, bytes: &[u8], file_len: u64) -> Result<Header, ShardError> {
    let path_buf = || path.to_path_buf();
    if bytes.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
        return Err(ShardError::TooShort {
            path: path_buf(),
            len: file_len.min(bytes.len() as u64),
        });
    }
    let h = &bytes[..HEADER_LEN];
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
    Ok(header)
}

/// Checks `index` (the bytes from `header.index_offset` to the end of the
/// file) against the header's checksum, and every entry's bounds.
fn validate_index(path: &Path, header: &Header, index: &[u8]) -> Result<(), ShardError> {
    let path_buf = || path.to_path_buf();
    let file_len = header.index_offset + index.len() as u64;
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
    Ok(())
}

/// A dataset folder: its manifest and every shard it lists, opened and
/// validated, addressed by a global record index in manifest order.
#[derive(Debug)]
pub struct Dataset {
    /// The folder, or for a remote dataset its URL.
    dir: PathBuf,
    manifest: Manifest,
    shards: Arc<Vec<Shard>>,
    /// `starts[k]` is the global index of shard k's first record; one extra
    /// entry holds the total.
    starts: Vec<u64>,
    /// Where a remote dataset's records come from.
    #[cfg(feature = "remote")]
    remote: Option<Arc<Remote>>,
}

impl Dataset {
    /// Reads `dir/manifest.json` and opens every shard it lists, checking that
    /// each shard's record count, size and index checksum match the manifest.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset, ShardError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
        let shards = manifest
            .shards
            .iter()
            .map(|info| Shard::open(dir.join(&info.file)))
            .collect::<Result<Vec<_>, _>>()?;
        Self::assemble(dir, manifest, Arc::new(shards), None)
    }

    /// The dataset of `shards` as `manifest` lists them (checking each
    /// one's record count, size and index checksum), named `dir`.
    pub(crate) fn assemble(
        dir: PathBuf,
        manifest: Manifest,
        shards: Arc<Vec<Shard>>,
        #[cfg(feature = "remote")] remote: Option<Arc<Remote>>,
        #[cfg(not(feature = "remote"))] _remote: Option<()>,
    ) -> Result<Dataset, ShardError> {
        let mut starts = Vec::with_capacity(manifest.shards.len() + 1);
        let mut total = 0u64;
        for (info, shard) in manifest.shards.iter().zip(shards.iter()) {
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
            #[cfg(feature = "remote")]
            remote,
        })
    }

    /// Where a remote dataset's records come from; `None` for a folder.
    #[cfg(feature = "remote")]
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        self.remote.as_ref()
    }

    /// Whether the records come from an object store.
    pub fn is_remote(&self) -> bool {
        #[cfg(feature = "remote")]
        return self.remote.is_some();
        #[cfg(not(feature = "remote"))]
        false
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
            Ok((shard.path().to_path_buf(), local, shard.meta(local)?.offset))
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
    /// [`Shard::read_verified_into`] reads it (a remote dataset's through
    /// its cache, fetching what is missing).
    pub fn read_verified_into(
        &self,
        index: u64,
        buf: &mut Vec<u8>,
    ) -> Result<RecordMeta, ShardError> {
        #[cfg(feature = "remote")]
        if let Some(remote) = &self.remote {
            return remote.read_record(self, index, buf);
        }
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
